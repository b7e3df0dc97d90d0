//! The crate's error type.

/// Why an exporter could not be set up. (A failed export is not an error
/// to anyone on the request path: it is counted and logged by the
/// exporter's thread.)
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The collector's address is not one nuncio can send to.
    #[error("invalid OTLP endpoint {endpoint:?}: {reason} (use http://HOST:PORT[/PATH], e.g. http://127.0.0.1:4318)")]
    Endpoint {
        /// The endpoint as written.
        endpoint: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The exporter's thread could not be started.
    #[error("cannot start the span exporter thread: {0}")]
    Thread(#[from] std::io::Error),
}
