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

    /// A configured filter could not be made (a config checked without the
    /// kinds the server runs with).
    #[error("listener `{listener}`: {message}")]
    Filter {
        /// The listener whose `filters` names it.
        listener: String,
        /// What went wrong.
        message: String,
    },

    /// The main thread ended before the server was up.
    #[error("the main thread stopped while the server was starting")]
    StartAborted,
}
