use std::net::SocketAddr;

use thiserror::Error;

/// What can stop the proxy from starting or running.
#[derive(Debug, Error)]
pub enum Error {
    /// A listener or the admin address could not be bound.
    #[error("cannot listen on {address} ({what}): {source}; is another process using it?")]
    Bind {
        /// The address from the config.
        address: SocketAddr,
        /// Which listener (or "admin").
        what: String,
        /// What the OS said.
        source: std::io::Error,
    },

    /// A dispatcher or slot operation failed while starting or stopping.
    #[error("runtime: {0}")]
    Runtime(#[from] nuncio_runtime::Error),

    /// The config's stats could not be declared (a name clash).
    #[error("stats: {0}")]
    Stats(#[from] nuncio_stats::Error),

    /// An access log could not be opened.
    #[error("listener `{listener}`: cannot open access log {target}: {source}")]
    AccessLog {
        /// The listener whose `access_log` names it.
        listener: String,
        /// Where it should go.
        target: String,
        /// What the OS said.
        source: std::io::Error,
    },

    /// A listener's settings cannot be served (a config made in code,
    /// without validation).
    #[error("listener `{listener}`: {message}")]
    Listener {
        /// The listener.
        listener: String,
        /// What is wrong.
        message: String,
    },

    /// A cluster's settings cannot be served (its TLS config: no system
    /// roots, an endpoint name TLS cannot verify).
    #[error("cluster `{cluster}`: {message}")]
    Cluster {
        /// The cluster.
        cluster: String,
        /// What is wrong.
        message: String,
    },

    /// A configured filter could not be made (a config checked without the
    /// kinds the server runs with).
    #[error("listener `{listener}`: {message}")]
    Filter {
        /// The listener whose `filters` names it.
        listener: String,
        /// What went wrong.
        message: String,
    },

    /// The tracing exporter could not be started.
    #[error("tracing: {0}")]
    Tracing(#[from] nuncio_trace::Error),

    /// The main thread ended before the server was up.
    #[error("the main thread stopped while the server was starting")]
    StartAborted,

    /// The server stopped before the operation completed.
    #[error("the server stopped")]
    Stopped,

    /// A new config is invalid (the running one keeps serving): every
    /// error, with file, line and field.
    #[error("{0}")]
    Invalid(nuncio_config::ConfigErrors),

    /// A reload from the config file was asked for, but nuncio was started
    /// without one.
    #[error("nuncio was started without a config file (-c FILE); POST /config a YAML body instead")]
    NoConfigFile,

    /// The config file could not be read.
    #[error("cannot read the config file: {0}")]
    ReadConfig(String),

    /// The server is draining: it takes no new config.
    #[error("the server is draining; it takes no new config")]
    Draining,
}
