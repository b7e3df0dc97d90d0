//! Making filters: a [`FilterKind`] turns a listener's `config:` block into
//! a [`FilterFactory`] at load (on main, where errors can still stop a bad
//! config); the factory makes one [`Filter`] per stream on its worker.

use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::counters::CounterSpec;
use crate::filter::Filter;

/// Makes one filter instance per stream, on the stream's worker.
pub trait FilterFactory: Send + Sync + 'static {
    /// The filter's name (for logs and errors).
    fn name(&self) -> &str;
    /// A new instance for a new stream.
    fn create(&self) -> Box<dyn Filter>;

    /// The clusters this filter calls through
    /// [`HttpClient`](crate::HttpClient), each with the field of its config
    /// block that names it. The config refuses a block naming a cluster it
    /// does not define, at that field's line. Default: none.
    fn clusters(&self) -> Vec<ClusterRef> {
        Vec::new()
    }

    /// The counters this filter declared when configured (a
    /// [`CounterSet`](crate::CounterSet)'s
    /// [`specs`](crate::CounterSet::specs)); a
    /// [`FilterCounter`](crate::FilterCounter) is an index into this list.
    /// The proxy declares them among its stats for each listener that runs
    /// the filter, and [`StreamCx::inc`](crate::StreamCx::inc) counts into
    /// them. Default: none.
    fn counters(&self) -> &[CounterSpec] {
        &[]
    }

    /// A copy of this factory for one worker, made on that worker when it
    /// takes a new config; its streams are then created from the copy.
    ///
    /// Why: a factory is built once, on main, and `create` typically
    /// clones an `Arc` of the loaded config into each filter. That clone
    /// writes the `Arc`'s count, one cache line that every worker writes
    /// on every stream, and the cost per request then grows with the
    /// number of workers. A copy whose `Arc`s are the worker's own keeps
    /// those writes on the worker's core. Copy what `create` clones; what
    /// it only reads may stay shared.
    ///
    /// Default: `None`, and every worker creates from this one factory
    /// (right for a factory whose `create` clones nothing shared, or
    /// whose filters share state on purpose).
    fn for_worker(&self) -> Option<Arc<dyn FilterFactory>> {
        None
    }

    /// Whether this filter's hooks act on the request (its head, body or
    /// trailers), as Envoy tells encoder filters from decoder filters.
    ///
    /// Why: when no filter of a listener's chain acts on the request, the
    /// request passes as it would without filters: its head is not made a
    /// `HeaderMap` for hooks that would not run, and its body goes to the
    /// upstream as it comes; the response hooks run for every filter.
    /// Handle calls that act on the request then find it forwarded
    /// ([`Error::HeadersAlreadySent`](crate::Error) for its fields) or not
    /// stopped (its body).
    ///
    /// Default: `true`. Return `false` only for a filter whose request
    /// hooks are the defaults (they continue).
    fn acts_on_request(&self) -> bool {
        true
    }

    /// Whether this filter's hooks act on the response (its head, body or
    /// trailers), as Envoy tells decoder filters from encoder filters.
    ///
    /// Why: when no filter of a listener's chain acts on the response, the
    /// response passes as it would without filters: its head as received
    /// (no `HeaderMap` made for hooks that would not run), nothing held
    /// back, no hook per body piece. Handle calls that act on the response
    /// then find it sent ([`Error::HeadersAlreadySent`](crate::Error)
    /// for its fields) or not stopped (its body).
    ///
    /// Default: `true`. Return `false` only for a filter whose response
    /// hooks are the defaults (they continue) and that makes no handle call
    /// on the response; `on_complete` is called either way.
    fn acts_on_response(&self) -> bool {
        true
    }
}

/// A cluster a filter's config names ([`FilterFactory::clusters`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterRef {
    /// The field naming it, as a dotted path within the config block
    /// (`cluster`, `services[1].cluster`), for the error's line and field.
    pub path: String,
    /// The cluster's name.
    pub name: String,
}

impl ClusterRef {
    /// Cluster `name`, named at `path` within the block.
    pub fn at(path: impl Into<String>, name: impl Into<String>) -> ClusterRef {
        ClusterRef { path: path.into(), name: name.into() }
    }
}

/// A kind of filter the config can name (`filters: [ { name: KIND, config: {...} } ]`).
pub trait FilterKind: Send + Sync + 'static {
    /// The name the config uses.
    fn name(&self) -> &'static str;

    /// Checks the `config:` block and makes the factory. The block arrives
    /// as a JSON value (YAML read into the JSON data model); parse it with
    /// [`parse_config`] so that an error names the field, which nuncio
    /// turns into `FILE:LINE:COL: listeners[i].filters[j].config.FIELD`.
    fn configure(&self, config: serde_json::Value) -> Result<Arc<dyn FilterFactory>, ConfigError>;
}

/// A filter's config block is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ConfigError {
    /// Where in the block, as a dotted path (`limits.burst`, `headers[2].name`);
    /// empty for the block itself.
    pub path: String,
    /// What is wrong, for an operator.
    pub message: String,
}

impl ConfigError {
    /// An error at `path` within the block.
    pub fn at(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError { path: path.into(), message: message.into() }
    }
}

/// Reads a config block into `T` with serde (use `#[serde(deny_unknown_fields)]`
/// so that a misspelled field is an error); the error names the field.
pub fn parse_config<T: DeserializeOwned>(config: serde_json::Value) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(config).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        ConfigError { path, message: e.into_inner().to_string() }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Limits {
        #[allow(dead_code)]
        burst: u32,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Config {
        #[allow(dead_code)]
        limits: Limits,
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse_config::<Config>(serde_json::json!({ "limits": { "burst": "lots" } })).unwrap_err();
        assert_eq!(e.path, "limits.burst");
        assert!(e.message.contains("invalid type"), "{e}");
        let e = parse_config::<Config>(serde_json::json!({ "limitz": {} })).unwrap_err();
        assert!(e.message.contains("unknown field `limitz`"), "{e}");
    }
}
