//! nuncio's configuration: the model of listeners, routes and clusters,
//! parsed from one YAML file and validated in full.
//!
//! [`Config::from_yaml`] (or [`Config::load`]) turns the text into a
//! [`Config`] in which everything has been checked: addresses parsed,
//! endpoint names resolved, durations converted, every cluster a route names
//! present, defaults filled in. When something is wrong it returns
//! [`ConfigErrors`]: every problem at once, each as
//! `FILE:LINE:COL: PATH: MESSAGE`, e.g.
//! `nuncio.yaml:14:18: listeners[0].routes[2].timeout: invalid duration "5x" (use 250ms, 5s, 1m or 1h)`.
//! A listener's HTTP `filters` are named by filters that live outside this
//! crate: [`Config::from_yaml_with`] and [`Config::load_with`] check each
//! name and `config` block against a [`FilterCatalog`] (the plain
//! [`Config::from_yaml`] and [`Config::load`] know no filter, so any
//! `filters` entry is an error there).
//! [`Config::builtin_default`] and [`Config::single_upstream`] build the
//! configurations nuncio runs with no file. The model is `Serialize`, in the
//! file's own vocabulary, for the admin `/config_dump`. The vocabulary is
//! documented field by field in `docs/config.md`.
//!
//! # Threading
//!
//! Parsing is pure: no globals, no I/O except reading the file in
//! [`Config::load`], resolving endpoint names (a blocking
//! `getaddrinfo`, through `std`'s `ToSocketAddrs`), and reading the TLS
//! certificate, key and CA files a `tls` block names (checked by
//! `nuncio-tls`: readable, PEM, key matching, not expired; the bytes read
//! are what serves). Any thread may call it;
//! in nuncio it runs on the main thread, which validates a new config in full
//! before swapping it in, so a bad reload never reaches the workers. A
//! [`Config`] is plain data (`Send + Sync`), immutable once built.
//!
//! # How it is parsed
//!
//! Two passes over the text. `saphyr-parser`'s event stream, which carries
//! positions, is walked once to index every field path
//! (`listeners[0].routes[2].timeout`) to its line and column; it also
//! reports YAML syntax errors. Then `yaml_serde` (the maintained
//! continuation of `serde_yaml`), wrapped in `serde_path_to_error`,
//! deserializes the text into structs that mirror the file, with
//! `deny_unknown_fields` and no `flatten` (which would spoil positions).
//! Those structs keep every scalar as text and every field optional, so serde
//! only stops on structure (an unknown field, a list where a mapping belongs);
//! every value, required field and cross-reference is then checked by the
//! validator, which collects all problems and locates each through the index.
//! The one exception is a filter's `config` block, whose shape only the
//! filter knows: it is read whole into a `serde_json::Value` (scalars typed
//! as YAML 1.2 types them) and handed to the catalog, whose error path
//! within the block is located through the same index.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use nuncio_config::{Config, RouteAction, Target};
//!
//! let yaml = "
//! listeners:
//!   - name: public
//!     address: 127.0.0.1:8080
//!     routes:
//!       - match: { prefix: / }
//!         cluster: app
//!         timeout: 5s
//! clusters:
//!   - name: app
//!     endpoints: [ 127.0.0.1:3000 ]
//! ";
//! let config = Config::from_yaml(yaml, "nuncio.yaml").unwrap();
//! let RouteAction::Forward(forward) = &config.listeners[0].routes[0].action else { panic!() };
//! assert_eq!(forward.target, Target::Cluster("app".into()));
//! assert_eq!(forward.timeout, Some(Duration::from_secs(5)));
//! assert_eq!(config.clusters[0].connect_timeout, Duration::from_secs(1)); // a default
//!
//! let errors = Config::from_yaml(&yaml.replace("5s", "5x"), "nuncio.yaml").unwrap_err();
//! assert_eq!(
//!     errors.to_string(),
//!     "nuncio.yaml:8:18: listeners[0].routes[0].timeout: \
//!      invalid duration \"5x\" (use 250ms, 5s, 1m or 1h); 0 means no timeout",
//! );
//! ```
#![forbid(unsafe_code)]

mod catalog;
mod duration;
mod error;
mod index;
mod model;
mod raw;
mod validate;

use std::net::SocketAddr;
use std::path::Path;

pub use catalog::{FilterCatalog, FilterCheckError, FilterClusterRef};
/// Parses a duration as the config writes it (`250ms`, `5s`, `1m`, `1h`, `0`),
/// for filter configs that must read durations the same way.
pub use duration::parse as parse_duration;
pub use error::{ConfigError, ConfigErrors};
pub use model::{
    AccessLog, Admin, AllUnhealthy, Backoff, Cluster, Config, DEFAULT_TIME_LEFT_HEADER, DirectResponse, Endpoint,
    FilterSpec, Forward, HashOn, HeaderMatch, HeaderRule, HealthCheck, HostMatch, LbPolicy, Listener, ListenerProtocol,
    LogPath, Mirror, OutlierDetection, Overload, PathMatch, PathRegex, QueryMatch, Redirect, RedirectPath, RetryBudget,
    RetryOn, RetryPolicy, Route, RouteAction, RouteMatch, Target, Thresholds, Tracing, UpstreamProtocol,
    WeightedCluster,
};
pub use model::{ClusterTls, ListenerTls, TlsCa, TlsCertificate, TlsMinVersion};

use catalog::NoFilters;
use index::{Index, Pos};
use validate::{
    Ctx, DEFAULT_ADMIN, DEFAULT_CONNECT_TIMEOUT, DEFAULT_DNS_REFRESH, DEFAULT_DRAIN_TIMEOUT, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_REQUEST_HEADERS, DEFAULT_MAX_REQUEST_HEADERS_BYTES,
    DEFAULT_REQUEST_BODY_MIN_RATE, DEFAULT_REQUEST_BODY_TIMEOUT, DEFAULT_REQUEST_HEADERS_TIMEOUT,
    DEFAULT_ROUTE_TIMEOUT, DEFAULT_STREAM_IDLE_TIMEOUT, default_workers, resolve_endpoint,
};

/// The body of the built-in default's answer.
const BUILTIN_PAGE: &str = "\
nuncio is running.

This is the built-in default configuration: every request gets this page.

  Proxy to one service:  nuncio --upstream http://HOST:PORT [--listen ADDR]
  Use a config file:     nuncio -c FILE     (check it first: nuncio validate -c FILE)
  Config reference:      docs/config.md
  Admin interface:       http://127.0.0.1:9901/
";

impl Config {
    /// Parses and validates a configuration. `file` is only used in error
    /// messages. Resolves endpoint names (blocking); see the crate docs on
    /// threading.
    ///
    /// Knows no filter: a listener with `filters` is an error here (use
    /// [`Config::from_yaml_with`]).
    pub fn from_yaml(text: &str, file: &str) -> Result<Config, ConfigErrors> {
        Config::from_yaml_with(text, file, &NoFilters)
    }

    /// [`Config::from_yaml`], checking each listener's `filters` (names and
    /// config blocks) against `catalog`.
    pub fn from_yaml_with(text: &str, file: &str, catalog: &dyn FilterCatalog) -> Result<Config, ConfigErrors> {
        let error = |pos: Pos, path: String, message: String| {
            ConfigErrors::one(ConfigError { file: file.to_owned(), line: pos.line, column: pos.column, path, message })
        };
        let index = Index::build(text).map_err(|e| error(e.pos, e.path, format!("invalid YAML: {}", e.message)))?;
        if !index.has_root() {
            return Err(error(
                Pos::START,
                String::new(),
                "the file is empty: a config needs at least `listeners` (see docs/config.md)".to_owned(),
            ));
        }
        let raw: raw::Config =
            serde_path_to_error::deserialize(yaml_serde::Deserializer::from_str(text)).map_err(|e| {
                let (pos, path, message) = serde_error(&e, &index);
                error(pos, path, message)
            })?;
        let mut ctx = Ctx::new(file, &index, catalog);
        let config = validate::config(&raw, &mut ctx);
        ctx.finish(config)
    }

    /// Reads and validates the file at `path` (errors name it as given).
    ///
    /// Knows no filter, like [`Config::from_yaml`] (use [`Config::load_with`]).
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        Config::load_with(path, &NoFilters)
    }

    /// [`Config::load`], checking each listener's `filters` against
    /// `catalog`.
    pub fn load_with(path: &Path, catalog: &dyn FilterCatalog) -> Result<Config, ConfigErrors> {
        let file = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Config::from_yaml_with(&text, &file, catalog),
            Err(e) => Err(ConfigErrors::one(ConfigError {
                file,
                line: 0,
                column: 0,
                path: String::new(),
                message: format!("cannot read the config file: {e}"),
            })),
        }
    }

    /// What nuncio serves when started with no arguments: one listener,
    /// `default` on 127.0.0.1:8080, answering every request with a 200 text
    /// page saying nuncio is running and how to configure it; admin on
    /// 127.0.0.1:9901.
    pub fn builtin_default() -> Config {
        let route = Route {
            matcher: RouteMatch::default(),
            action: RouteAction::DirectResponse(DirectResponse { status: 200, body: Some(BUILTIN_PAGE.to_owned()) }),
        };
        Config {
            admin: Admin { address: DEFAULT_ADMIN, allow_remote: false },
            workers: default_workers(),
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            tracing: None,
            listeners: vec![default_listener(SocketAddr::from(([127, 0, 0, 1], 8080)), route)],
            clusters: Vec::new(),
            overload: Overload::default(),
        }
    }

    /// What `nuncio --upstream URL [--listen ADDR]` serves: one listener,
    /// `default` on `listen`, with one catch-all route to one cluster,
    /// `upstream`, whose endpoint is the URL's host and port (80 if none).
    ///
    /// Like nginx's `proxy_pass`, the route sets the upstream `Host` to the
    /// URL's `host[:port]` as written (`host_rewrite`). Only `http://` URLs
    /// without credentials, path (other than `/`), query or fragment are
    /// accepted. Errors name the file `--upstream` (or `--listen`), line 1,
    /// and the column in the argument. Resolves the host (blocking).
    pub fn single_upstream(url: &str, listen: SocketAddr) -> Result<Config, ConfigErrors> {
        let error = |column: usize, message: String| {
            ConfigErrors::one(ConfigError {
                file: "--upstream".to_owned(),
                line: 1,
                column,
                path: "upstream".to_owned(),
                message,
            })
        };
        let usage = "use http://HOST:PORT";
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(error(1, format!("invalid upstream URL {url:?}: missing http:// ({usage})")));
        };
        if !scheme.eq_ignore_ascii_case("http") {
            let why =
                if scheme.eq_ignore_ascii_case("https") { "https is not supported yet" } else { "unsupported scheme" };
            return Err(error(1, format!("invalid upstream URL {url:?}: {why} ({usage})")));
        }
        let start = scheme.len() + 3; // chars before the authority (the scheme is ASCII)
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if !(tail.is_empty() || tail == "/") {
            return Err(error(
                start + authority.chars().count() + 1,
                format!("invalid upstream URL {url:?}: a path, query or fragment is not supported ({usage})"),
            ));
        }
        if authority.contains('@') {
            return Err(error(start + 1, format!("invalid upstream URL {url:?}: credentials are not supported")));
        }
        if authority.is_empty() {
            return Err(error(start + 1, format!("invalid upstream URL {url:?}: missing host ({usage})")));
        }
        let has_port = match authority.rfind(']') {
            Some(i) => authority[i..].contains(':'),
            None => authority.contains(':'),
        };
        let endpoint_text = if has_port { authority.to_owned() } else { format!("{authority}:80") };
        let endpoint = resolve_endpoint(&endpoint_text)
            .map_err(|message| error(start + 1, format!("invalid upstream URL {url:?}: {message}")))?;
        if listen == DEFAULT_ADMIN {
            return Err(ConfigErrors::one(ConfigError {
                file: "--listen".to_owned(),
                line: 1,
                column: 1,
                path: "listen".to_owned(),
                message: format!("address {listen} is already used by the admin interface"),
            }));
        }
        let route = Route {
            matcher: RouteMatch::default(),
            action: RouteAction::Forward(Forward {
                target: Target::Cluster("upstream".to_owned()),
                timeout: Some(DEFAULT_ROUTE_TIMEOUT),
                retries: None,
                prefix_rewrite: None,
                host_rewrite: Some(authority.to_owned()),
                mirrors: Vec::new(),
            }),
        };
        Ok(Config {
            admin: Admin { address: DEFAULT_ADMIN, allow_remote: false },
            workers: default_workers(),
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            tracing: None,
            listeners: vec![default_listener(listen, route)],
            overload: Overload::default(),
            clusters: vec![Cluster {
                name: "upstream".to_owned(),
                endpoints: vec![endpoint],
                lb: LbPolicy::RoundRobin,
                hash_on: None,
                connect_timeout: DEFAULT_CONNECT_TIMEOUT,
                protocol: UpstreamProtocol::Http1,
                idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
                dns_refresh: Some(DEFAULT_DNS_REFRESH),
                max_connections: None,
                max_pending_requests: None,
                max_requests: None,
                max_retries: None,
                retry_budget: None,
                health_check: None,
                when_all_unhealthy: AllUnhealthy::Fail,
                outlier_detection: None,
                tls: None,
            }],
        })
    }

    /// The cluster called `name`.
    pub fn cluster(&self, name: &str) -> Option<&Cluster> {
        self.clusters.iter().find(|c| c.name == name)
    }

    /// The listener called `name`.
    pub fn listener(&self, name: &str) -> Option<&Listener> {
        self.listeners.iter().find(|l| l.name == name)
    }

    /// The effective configuration as YAML, defaults filled in (what
    /// `/config_dump` shows); [`Config::from_yaml`] reads it back to an equal
    /// `Config` ([`Config::from_yaml_with`], with the catalog it was loaded
    /// with, when a listener has filters).
    pub fn to_yaml(&self) -> String {
        // Cannot fail: the model has only strings, numbers, lists and
        // string-keyed mappings.
        yaml_serde::to_string(self).expect("the config model always serializes")
    }
}

/// A listener with every limit at its default.
fn default_listener(address: SocketAddr, route: Route) -> Listener {
    Listener {
        name: "default".to_owned(),
        address,
        protocol: ListenerProtocol::Auto,
        max_connections: DEFAULT_MAX_CONNECTIONS,
        max_request_headers_bytes: DEFAULT_MAX_REQUEST_HEADERS_BYTES,
        max_request_headers: DEFAULT_MAX_REQUEST_HEADERS,
        request_headers_timeout: Some(DEFAULT_REQUEST_HEADERS_TIMEOUT),
        idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
        stream_idle_timeout: Some(DEFAULT_STREAM_IDLE_TIMEOUT),
        request_body_timeout: Some(DEFAULT_REQUEST_BODY_TIMEOUT),
        request_body_min_rate: DEFAULT_REQUEST_BODY_MIN_RATE,
        time_left_header: Some(DEFAULT_TIME_LEFT_HEADER.to_owned()),
        access_log: None,
        filters: Vec::new(),
        tls: None,
        routes: vec![route],
    }
}

/// Position, path and bare message of a serde (structure) error.
fn serde_error(e: &serde_path_to_error::Error<yaml_serde::Error>, index: &Index) -> (Pos, String, String) {
    let mut path = String::new();
    for segment in e.path() {
        match segment {
            serde_path_to_error::Segment::Seq { index } => path.push_str(&format!("[{index}]")),
            serde_path_to_error::Segment::Map { key } => path = index::join(&path, key),
            serde_path_to_error::Segment::Enum { variant } => path = index::join(&path, variant),
            _ => path = index::join(&path, "?"),
        }
    }
    let inner = e.inner();
    let pos = match inner.location() {
        Some(l) if l.line() > 0 => Pos { line: l.line(), column: l.column() },
        _ => index.value(&path),
    };
    // yaml_serde writes `PATH: MESSAGE at line L column C`; keep MESSAGE.
    let mut message = inner.to_string();
    if let Some(l) = inner.location() {
        let suffix = format!(" at line {} column {}", l.line(), l.column());
        if let Some(stripped) = message.strip_suffix(&suffix) {
            message = stripped.to_owned();
        }
    }
    if let Some((head, rest)) = message.split_once(": ")
        && !head.is_empty()
        && !head.contains(' ')
    {
        message = rest.to_owned();
    }
    if message.starts_with("invalid type: unit value") {
        message = message.replacen("unit value", "null", 1);
    }
    // serde reports a key given twice at its mapping: point at the second one.
    if let Some(field) = message.strip_prefix("duplicate field `").and_then(|m| m.strip_suffix('`')) {
        let field_path = index::join(&path, field);
        if let Some(second) = index.duplicate_key(&field_path) {
            return (second, field_path, "given twice in the same mapping".to_owned());
        }
    }
    (pos, path, message)
}
