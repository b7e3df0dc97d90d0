//! The one error of this crate: what is wrong, with the file it is wrong in
//! and what to do about it.

use std::path::PathBuf;

/// A certificate, key or CA file that cannot be used, or a TLS setting
/// rustls refused. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not PEM, or has no block of the kind needed.
    #[error("{}: {what}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is missing or malformed, and what was expected.
        what: String,
    },
    /// The private key does not belong to the certificate.
    #[error("{} does not match the certificate in {} (use the key the certificate was issued for)", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate chain file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The certificate's validity ended.
    #[error("{}: the certificate expired on {date} ({days} days ago); renew it", path.display())]
    Expired {
        /// The certificate chain file.
        path: PathBuf,
        /// Its `notAfter` (`YYYY-MM-DD`).
        date: String,
        /// Days since.
        days: i64,
    },
    /// The certificate's validity has not started.
    #[error("{}: the certificate is not valid before {date}", path.display())]
    NotYetValid {
        /// The certificate chain file.
        path: PathBuf,
        /// Its `notBefore` (`YYYY-MM-DD`).
        date: String,
    },
    /// The file has certificates rustls cannot use (as CAs, or as a chain).
    #[error("{}: {what}", path.display())]
    Unusable {
        /// The file.
        path: PathBuf,
        /// rustls's complaint.
        what: String,
    },
    /// The settings make no TLS config (no protocol version in common
    /// with the provider, no CA to verify with...).
    #[error("{0}")]
    Settings(String),
}
