//! What the embedding program gives nuncio beyond its config: hooks for
//! name resolution and the log level, filters of its own, the filter kinds
//! the config may name, and the config file to reload from.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::filter_catalog::FilterChainFactory;
use crate::filter_catalog::FilterKinds;

/// Resolves an endpoint name (`host:port`) to its addresses.
pub type Resolver = Arc<dyn Fn(&str) -> std::io::Result<Vec<SocketAddr>> + Send + Sync>;

/// Sets the log level from a name (`debug`, `info`, ...).
pub type LogLevelHook = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// What the embedding program provides beyond the config.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct Options {
    /// Resolves endpoint names for `dns_refresh` (default: the system
    /// resolver). Tests give their own to change what a name resolves to.
    pub resolver: Option<Resolver>,
    /// Changes the log level for admin `POST /logging?level=` (default:
    /// none, and the endpoint says so).
    pub set_log_level: Option<LogLevelHook>,
    /// Filters by listener name, in order, ahead of those the config names
    /// (the router is the implicit last).
    pub filters: HashMap<String, FilterChainFactory>,
    /// The filter kinds the config's `filters:` lists may name (give the
    /// same set to `Config::load_with`).
    pub filter_kinds: FilterKinds,
    /// The file the config came from: `SIGHUP` and admin `POST
    /// /config/reload` read it again (default: none; those say so).
    pub config_path: Option<PathBuf>,
    /// Reload when the config file changes (polled every
    /// [`WATCH_INTERVAL`](crate::WATCH_INTERVAL), applied once it stayed the same for one more
    /// poll, and only if its text changed). Default: off.
    pub watch_config: bool,
}
