//! The validated configuration model.
//!
//! Everything here has been checked: addresses parsed, endpoint names
//! resolved, durations converted, every cluster a route names exists, and
//! defaults filled in. `Serialize` writes the same vocabulary the file uses
//! (so a dump can be read back), with every default spelled out.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use nuncio_accesslog::Format;
use serde::{Serialize, Serializer};

use crate::duration;

/// A whole, validated configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Config {
    /// The admin HTTP server.
    pub admin: Admin,
    /// Number of worker threads (at least 1).
    pub workers: usize,
    /// On shutdown, how long open downstream connections may finish the
    /// requests in flight before they are closed; default 15s; zero closes
    /// them at once.
    #[serde(serialize_with = "duration::serialize")]
    pub drain_timeout: Duration,
    /// Distributed tracing; `None` (the default): off, and the request path
    /// pays nothing for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracing: Option<Tracing>,
    /// The listeners, in file order (at least one).
    pub listeners: Vec<Listener>,
    /// The upstream clusters, in file order (names unique).
    pub clusters: Vec<Cluster>,
    /// When nuncio sheds load and refuses connections (Envoy's overload
    /// manager, simplified); default: never.
    pub overload: Overload,
}

/// Overload protection: past a resource's `shed` threshold nuncio stops
/// keep-alive and answers new requests `503` with `Connection: close`;
/// past its `refuse` threshold it also closes new connections as they are
/// accepted. Each threshold is off unless set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Overload {
    /// Open downstream connections, all listeners and workers together.
    pub downstream_connections: Thresholds,
    /// The process's resident memory in bytes (every buffer nuncio holds
    /// ends up there), sampled four times a second.
    pub memory: Thresholds,
}

/// A resource's two overload thresholds (see [`Overload`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Thresholds {
    /// From this level on, shed load; `None`: never.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shed: Option<u64>,
    /// From this level on, refuse new connections too; `None`: never.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refuse: Option<u64>,
}

/// The admin HTTP server (stats, `/config_dump`, reload).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Admin {
    /// Where it listens; default `127.0.0.1:9901`. A loopback address unless
    /// `allow_remote` is set.
    pub address: SocketAddr,
    /// Whether `address` may be other than loopback; default `false`. Admin
    /// can change nuncio's state and has no authentication, so exposing it
    /// must be asked for explicitly.
    pub allow_remote: bool,
}

/// Distributed tracing (`tracing:`): W3C trace context read from requests
/// and sent on to upstreams, `x-request-id` made for requests without one,
/// and spans exported over OTLP/HTTP. Changes apply on reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracing {
    /// The OpenTelemetry collector spans are posted to (OTLP/HTTP,
    /// protobuf): `http://HOST:PORT[/PATH]`, path `/v1/traces` when absent.
    pub otlp_endpoint: nuncio_trace::Endpoint,
    /// The share of requests recorded among those whose sender did not
    /// decide (a `traceparent` with its sampled flag decides, either way),
    /// in millionths (`sampling: 0.1` is 100,000); default all.
    pub sampling_per_million: u32,
    /// The `service.name` of the spans; default `nuncio`.
    pub service_name: String,
    /// Spans queued for the exporter before new ones are dropped (and
    /// counted); default 2048.
    pub queue_size: usize,
}

impl Serialize for Tracing {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct TracingOut<'a> {
            otlp_endpoint: String,
            sampling: f64,
            service_name: &'a str,
            queue_size: usize,
        }
        TracingOut {
            otlp_endpoint: self.otlp_endpoint.to_string(),
            sampling: f64::from(self.sampling_per_million) / 1e6,
            service_name: &self.service_name,
            queue_size: self.queue_size,
        }
        .serialize(s)
    }
}

/// A socket accepting downstream connections, with its routes and limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listener {
    /// Unique name (stats and logs).
    pub name: String,
    /// Where it listens (an IP and port; port 0 picks a free one).
    pub address: SocketAddr,
    /// Which HTTP versions it speaks; default [`ListenerProtocol::Auto`].
    pub protocol: ListenerProtocol,
    /// Most open downstream connections; default 10000.
    pub max_connections: usize,
    /// Largest request head (request line and headers) in bytes; default 61440.
    pub max_request_headers_bytes: usize,
    /// Most request header fields; default 100.
    pub max_request_headers: usize,
    /// Time allowed to receive a whole request head (slowloris guard);
    /// default 10s; `None` (written `0`) for no limit.
    #[serde(serialize_with = "duration::serialize_opt")]
    pub request_headers_timeout: Option<Duration>,
    /// How long an idle downstream connection is kept; default 60s; `None`
    /// (written `0`) for no limit.
    #[serde(serialize_with = "duration::serialize_opt")]
    pub idle_timeout: Option<Duration>,
    /// How long a stream may make no progress (no body byte read from the
    /// client or the upstream, none written to either) before it is ended:
    /// `408` if its response has not started, else a reset (Envoy's
    /// `stream_idle_timeout`); default 5m; `None` (written `0`) for none.
    #[serde(serialize_with = "duration::serialize_opt")]
    pub stream_idle_timeout: Option<Duration>,
    /// Time allowed to receive a request body, extended by one second for
    /// every `request_body_min_rate` bytes received (Apache's
    /// `RequestReadTimeout body=20,MinRate=500`): a client trickling a body
    /// is cut off (`408`) while a large upload at a decent rate is not;
    /// default 20s; `None` (written `0`) for no limit.
    #[serde(serialize_with = "duration::serialize_opt")]
    pub request_body_timeout: Option<Duration>,
    /// See `request_body_timeout`; bytes per second, default 500; `0`: no
    /// extension (the whole body within `request_body_timeout`).
    pub request_body_min_rate: u64,
    /// The request field that tells the upstream how long it has left
    /// (the time to the try's deadline, in whole milliseconds, at least 1),
    /// on forwarded requests and filters' HTTP calls that are not gRPC
    /// (gRPC requests always get `grpc-timeout`, as in Envoy): a valid
    /// field name, lower-cased; default [`DEFAULT_TIME_LEFT_HEADER`];
    /// `None` (written `none`) to send none. The client's own value of that
    /// field is never forwarded.
    #[serde(serialize_with = "serialize_none_if_none")]
    pub time_left_header: Option<String>,
    /// Where and how each finished request is logged; `None` (the default)
    /// for no access log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_log: Option<AccessLog>,
    /// The HTTP filters every request on this listener passes through, in
    /// file order (request path first to last, response path last to
    /// first; the router is the implicit last one); default none. Each name
    /// and config block was checked against the [`FilterCatalog`] the config
    /// was loaded with.
    ///
    /// [`FilterCatalog`]: crate::FilterCatalog
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<FilterSpec>,
    /// TLS termination; `None` (the default) for plain TCP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<ListenerTls>,
    /// The routes, tried in order; the first that matches wins (at least one).
    pub routes: Vec<Route>,
}

// ---- TLS (issue 13) ----

/// A listener's TLS: the certificates it serves (read and checked when the
/// config was validated), ALPN, the lowest version, client certificates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListenerTls {
    /// At least one. Chosen by the client's SNI among the names each is
    /// for (its DNS SANs, else its CN): an exact name first, then a
    /// wildcard; the first is served to clients whose name matches none
    /// (or that send none).
    pub certificates: Vec<TlsCertificate>,
    /// ALPN protocol ids offered, in preference order: `h2` and/or
    /// `http/1.1`; default `[h2, http/1.1]` (`[http/1.1]` for `protocol:
    /// http1`, `[h2]` for `protocol: http2`). The one agreed on picks the
    /// connection's HTTP version; without one, the listener's `protocol`
    /// decides as on plain TCP.
    pub alpn: Vec<String>,
    /// The lowest TLS version accepted: [`TlsMinVersion::Tls12`] (`"1.2"`,
    /// the default) or [`TlsMinVersion::Tls13`] (`"1.3"`).
    pub min_version: TlsMinVersion,
    /// When set, clients must present a certificate issued by one of these
    /// CAs (mTLS); a client without one is refused in the handshake.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<TlsCa>,
    /// Time allowed for a client's handshake, from the connection's
    /// accept; default 10s; never 0. A client that stalls in it is cut off
    /// (like a slowloris in a request head).
    #[serde(serialize_with = "duration::serialize")]
    pub handshake_timeout: Duration,
}

/// The lowest TLS version a listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsMinVersion {
    /// TLS 1.2 (`"1.2"`): TLS 1.2 and 1.3.
    #[default]
    Tls12,
    /// TLS 1.3 only (`"1.3"`).
    Tls13,
}

impl Serialize for TlsMinVersion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match self {
            TlsMinVersion::Tls12 => "1.2",
            TlsMinVersion::Tls13 => "1.3",
        })
    }
}

/// A certificate chain and its key, as named in the file and as read then
/// (what serves is what was checked: the files are not read again until
/// the next reload). Compared by the files' contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TlsCertificate {
    /// The PEM chain, leaf first (relative paths are relative to nuncio's
    /// working directory).
    pub cert_chain: PathBuf,
    /// The PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub private_key: PathBuf,
    /// The two files, read and checked.
    #[serde(skip)]
    pub loaded: nuncio_tls::Certificate,
}

/// A PEM file of CA certificates, as named and as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsCa {
    /// The file.
    pub path: PathBuf,
    /// Its certificates, read and checked.
    pub loaded: nuncio_tls::CaBundle,
}

impl Serialize for TlsCa {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.path.to_string_lossy())
    }
}

/// A cluster's TLS to its endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterTls {
    /// The name sent in SNI and verified against the endpoint's
    /// certificate; `None` (the default): each endpoint's host as written
    /// (an IP address is verified against IP SANs and sends no SNI).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// The CAs endpoints' certificates are verified with; `None` (the
    /// default): the system's roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<TlsCa>,
    /// Whether endpoints' certificates are verified (chain, validity,
    /// name); default true. `false` must be written out, and is logged as a
    /// warning whenever the proxy builds the cluster (at start, and on each
    /// reload that changes it).
    pub verify: bool,
    /// Presented to endpoints that ask for one (mTLS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<TlsCertificate>,
    /// ALPN protocol ids offered, in preference order; default from the
    /// cluster's `protocol` (`[http/1.1]`, or `[h2]` for `http2`). With
    /// both, the endpoint picks, per connection: HTTP/2 when it says `h2`,
    /// HTTP/1.1 otherwise.
    pub alpn: Vec<String>,
}

/// The field a listener tells upstreams the time left in, unless its
/// config says otherwise (Envoy's `x-envoy-expected-rq-timeout-ms`).
pub const DEFAULT_TIME_LEFT_HEADER: &str = "x-nuncio-expected-timeout-ms";

/// `None` (a field turned off) is written `none`.
fn serialize_none_if_none<S: Serializer>(name: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(name.as_deref().unwrap_or("none"))
}

/// One filter of a listener's chain: which filter, and its config block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FilterSpec {
    /// The filter's name, as the catalog knows it (e.g. `headers`).
    pub name: String,
    /// The `config` block, read from YAML into the JSON data model:
    /// mappings become objects (keys sorted), sequences arrays, and scalars
    /// are typed as YAML 1.2 types them (`5` a number, `"5"` a string,
    /// `true` a boolean, `~` null). [`serde_json::Value::Null`] when the
    /// block is absent (written back only when not null).
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub config: serde_json::Value,
}

/// A listener's access log: one line (or JSON object) per finished request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLog {
    /// Where lines go; default [`LogPath::Stdout`].
    pub path: LogPath,
    /// What a line holds: `format` (text) or `json_format` in the file;
    /// default [`Format::default_text`].
    pub format: Format,
}

impl Serialize for AccessLog {
    /// As in the file: `path`, then `format` for a text format or
    /// `json_format` for a JSON one.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Out<'a> {
            path: &'a LogPath,
            #[serde(skip_serializing_if = "Option::is_none")]
            format: Option<&'a Format>,
            #[serde(skip_serializing_if = "Option::is_none")]
            json_format: Option<&'a Format>,
        }
        // `Format` does not say which kind it is, but it serializes as the
        // file writes it: a string for text, a mapping for JSON.
        let json = matches!(yaml_serde::to_value(&self.format), Ok(yaml_serde::Value::Mapping(_)));
        let (format, json_format) = if json { (None, Some(&self.format)) } else { (Some(&self.format), None) };
        Out { path: &self.path, format, json_format }.serialize(s)
    }
}

/// Where an access log is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogPath {
    /// Standard output (`stdout`).
    Stdout,
    /// Standard error (`stderr`).
    Stderr,
    /// This file, appended to (created if missing). Any `path` other than
    /// `stdout` and `stderr`; a relative path is relative to nuncio's
    /// working directory. (A file called `stdout` is written `./stdout`.)
    File(PathBuf),
}

impl Serialize for LogPath {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            LogPath::Stdout => s.serialize_str("stdout"),
            LogPath::Stderr => s.serialize_str("stderr"),
            // The config's paths come from YAML text, so they are UTF-8.
            LogPath::File(path) => s.serialize_str(&path.to_string_lossy()),
        }
    }
}

/// The HTTP versions a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerProtocol {
    /// HTTP/1.1, and HTTP/2 with prior knowledge (h2c), told apart by the
    /// connection preface.
    #[default]
    Auto,
    /// HTTP/1.1 (and 1.0) only.
    Http1,
    /// HTTP/2 with prior knowledge only.
    Http2,
}

/// One route: when it applies, and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// When the route applies (`match` in the file).
    pub matcher: RouteMatch,
    /// What to do with a matching request.
    pub action: RouteAction,
}

/// Conditions a request must meet, all of them, for a route to apply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouteMatch {
    /// The request host (`Host` or `:authority`), if constrained.
    pub host: Option<HostMatch>,
    /// The request path (without query).
    pub path: PathMatch,
    /// Headers that must be present, absent or equal to a value.
    pub headers: Vec<HeaderMatch>,
    /// The request method must be one of these (case-sensitive tokens, as
    /// sent: `GET`); empty for any.
    pub methods: Vec<String>,
    /// Query parameters that must be present, absent or equal to a value
    /// (compared as sent, without percent-decoding; with a parameter given
    /// several times, any one of them).
    pub query: Vec<QueryMatch>,
}

/// How a route matches the request host. Matching is case-insensitive and
/// ignores a port in the request's host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// Exactly this host (stored lowercase).
    Exact(String),
    /// `*.example.com`: any host ending in `.example.com`, with at least one
    /// character before it (not `example.com` itself). Holds the part after
    /// `*.`, lowercase.
    Wildcard(String),
}

impl HostMatch {
    /// Whether a request's host (a `Host` header or `:authority` value,
    /// possibly with a port) matches.
    ///
    /// ```
    /// use nuncio_config::HostMatch;
    /// let m = HostMatch::Wildcard("example.com".into());
    /// assert!(m.matches("API.example.com:8080"));
    /// assert!(!m.matches("example.com"));
    /// ```
    pub fn matches(&self, host: &str) -> bool {
        let host = strip_port(host);
        match self {
            HostMatch::Exact(h) => host.eq_ignore_ascii_case(h),
            HostMatch::Wildcard(suffix) => {
                host.len() > suffix.len() + 1
                    && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
        }
    }
}

/// `host:port` → `host`; `[v6]:port` → `[v6]`.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(i) => &host[..=i],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

impl fmt::Display for HostMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostMatch::Exact(h) => f.write_str(h),
            HostMatch::Wildcard(suffix) => write!(f, "*.{suffix}"),
        }
    }
}

/// How a route matches the request path (the part before any `?`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PathMatch {
    /// Every path (the match has neither `path` nor `prefix`).
    #[default]
    Any,
    /// Exactly this path (case-sensitive).
    Exact(String),
    /// Any path starting with this string (case-sensitive, plain string
    /// prefix: `/api` also matches `/apix`).
    Prefix(String),
    /// Any path the regular expression matches whole (`regex`; Rust's
    /// `regex` syntax, anchored at both ends as Envoy's `safe_regex` is).
    Regex(PathRegex),
}

/// A route's path regular expression, compiled once when the config is
/// read. Two are equal when their source text is.
#[derive(Clone)]
pub struct PathRegex {
    source: String,
    regex: regex::Regex,
}

impl PathRegex {
    /// Compiles `source` to match whole paths; the error says what is wrong
    /// with it.
    pub fn new(source: &str) -> Result<PathRegex, String> {
        let regex = regex::Regex::new(&format!("^(?:{source})$")).map_err(|e| match e {
            regex::Error::Syntax(message) => message,
            other => other.to_string(),
        })?;
        Ok(PathRegex { source: source.to_owned(), regex })
    }

    /// The expression as written in the config.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether `path` (no query) matches whole.
    pub fn is_match(&self, path: &str) -> bool {
        self.regex.is_match(path)
    }
}

impl PartialEq for PathRegex {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for PathRegex {}

impl fmt::Debug for PathRegex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PathRegex({:?})", self.source)
    }
}

impl PathMatch {
    /// Whether a request path matches (a query, if any, is ignored).
    ///
    /// ```
    /// use nuncio_config::PathMatch;
    /// assert!(PathMatch::Prefix("/static/".into()).matches("/static/app.js?v=2"));
    /// assert!(!PathMatch::Exact("/healthz".into()).matches("/healthz/x"));
    /// ```
    pub fn matches(&self, path: &str) -> bool {
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        match self {
            PathMatch::Any => true,
            PathMatch::Exact(p) => path == p,
            PathMatch::Prefix(p) => path.starts_with(p.as_str()),
            PathMatch::Regex(r) => r.is_match(path),
        }
    }
}

/// A condition on one request header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderMatch {
    /// Header name, lowercase (names compare case-insensitively).
    pub name: String,
    /// What the header must be.
    pub rule: HeaderRule,
}

/// A condition on one query parameter of the request (`match.query`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryMatch {
    /// The parameter's name, as sent (case-sensitive, not decoded).
    pub name: String,
    /// What the parameter must be.
    pub rule: HeaderRule,
}

/// What a [`HeaderMatch`] (or a [`QueryMatch`]) requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderRule {
    /// Present with exactly this value (case-sensitive; with several fields
    /// of that name, any one of them).
    Exact(String),
    /// Present, any value (`present: true`).
    Present,
    /// Absent (`present: false`).
    Absent,
}

/// What a route does: exactly one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteAction {
    /// Proxy to a cluster (`cluster` or `weighted_clusters`).
    Forward(Forward),
    /// Answer directly (`direct_response`).
    DirectResponse(DirectResponse),
    /// Answer with a redirect (`redirect`).
    Redirect(Redirect),
}

/// Proxying to upstream, with the settings that only apply to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// Where to send the request.
    pub target: Target,
    /// Whole-request deadline, retries included; default 15s; `None`
    /// (written `0`) for none.
    pub timeout: Option<Duration>,
    /// Retry policy; `None` for no retries.
    pub retries: Option<RetryPolicy>,
    /// Replaces the matched `prefix` (or the whole matched `path`) before
    /// forwarding.
    pub prefix_rewrite: Option<String>,
    /// Replaces the `Host`/`:authority` sent upstream.
    pub host_rewrite: Option<String>,
    /// Copies of the request sent to other clusters, answers dropped
    /// (`mirror`); empty for none.
    pub mirrors: Vec<Mirror>,
}

/// A copy of each (sampled) request sent to another cluster, fire and
/// forget: its answer is read and dropped, and it never slows or fails the
/// request it copies (Envoy's `request_mirror_policies`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    /// The cluster that gets the copies.
    pub cluster: String,
    /// The share of requests copied, in millionths (`percent: 10` is
    /// 100,000); default all.
    pub per_million: u32,
    /// How long a copy may take; default the route's `timeout`. `None`
    /// for no limit.
    pub timeout: Option<Duration>,
}

/// Where a forwarding route sends requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One cluster, by name.
    Cluster(String),
    /// Several clusters, each picked with probability weight / total weight.
    Weighted(Vec<WeightedCluster>),
}

/// One cluster of a weighted split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WeightedCluster {
    /// Cluster name (it exists).
    pub cluster: String,
    /// Relative weight, at least 1 (the sum fits a `u32`).
    pub weight: u32,
}

/// When and how often to retry a forwarded request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetryPolicy {
    /// Retries after the first try (so `2` means up to 3 tries); default 1.
    pub attempts: u32,
    /// Conditions that allow a retry; default `[connect-failure, refused-stream]`.
    pub on: Vec<RetryOn>,
    /// Deadline of each try; `None` (written `0`, the default) for none.
    #[serde(serialize_with = "duration::serialize_opt")]
    pub per_try_timeout: Option<Duration>,
    /// How long to wait before each retry.
    pub backoff: Backoff,
    /// A try past its `per_try_timeout` stays open and the next one starts
    /// beside it; the first answer to keep wins and the others are
    /// cancelled (Envoy's `hedge_on_per_try_timeout`). Only for requests
    /// whose body is empty or read whole. Default false.
    pub hedge_on_per_try_timeout: bool,
}

/// Retry back-off (Envoy's `retry_back_off`): before retry `n` (1, 2,
/// ...) a random wait between 0 and `min(max, base × 2^(n-1))` (full
/// jitter). A wait that would pass the request's deadline is not taken:
/// the request fails with what the last try got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Backoff {
    /// Default 25ms; never 0.
    #[serde(serialize_with = "duration::serialize")]
    pub base: Duration,
    /// Default 10 × `base`; at least `base`.
    #[serde(serialize_with = "duration::serialize")]
    pub max: Duration,
}

/// A cluster's retry budget (Envoy's `retry_budget`): retries in flight at
/// most `percent` of the requests in flight, but never fewer than
/// `min_retry_concurrency` allowed. A retry beyond it is not made.
///
/// Kept per worker, as every count on nuncio's request path is: each
/// worker allows `percent` of its own requests in flight, and
/// `min_retry_concurrency` is shared out between the workers (rounded up),
/// so no request writes a count other workers read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RetryBudget {
    /// 1 to 100; default 20.
    pub percent: u32,
    /// Default 3.
    pub min_retry_concurrency: u32,
}

/// A condition under which a request may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetryOn {
    /// `connect-failure`: the upstream connection could not be made (or
    /// timed out connecting).
    ConnectFailure,
    /// `refused-stream`: the upstream refused the HTTP/2 stream
    /// (`REFUSED_STREAM`), so it was not processed.
    RefusedStream,
    /// `reset`: the upstream reset or closed the connection/stream before a
    /// response head arrived.
    Reset,
    /// `5xx`: any 5xx response (and `connect-failure` and `reset`, as Envoy
    /// does).
    Status5xx,
    /// `gateway-error`: 502, 503 or 504 (and `connect-failure` and `reset`).
    GatewayError,
    /// A specific status code (100–599).
    Status(u16),
}

impl RetryOn {
    /// The name used in the file (`connect-failure`, `503`, ...).
    pub fn name(&self) -> String {
        match self {
            RetryOn::ConnectFailure => "connect-failure".into(),
            RetryOn::RefusedStream => "refused-stream".into(),
            RetryOn::Reset => "reset".into(),
            RetryOn::Status5xx => "5xx".into(),
            RetryOn::GatewayError => "gateway-error".into(),
            RetryOn::Status(s) => s.to_string(),
        }
    }
}

impl Serialize for RetryOn {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            RetryOn::Status(code) => s.serialize_u16(*code),
            other => s.serialize_str(&other.name()),
        }
    }
}

/// A response made by the proxy itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DirectResponse {
    /// Status code, 200–599.
    pub status: u16,
    /// Body, if any (sent as is).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// A redirect made by the proxy itself (the `Location` is the request URL
/// with the changes below).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// How the path changes.
    pub path: RedirectPath,
    /// New host (and port), if it changes.
    pub host: Option<String>,
    /// `https: true`: the new URL is `https://` (the request's host without
    /// its port, unless `host` is given). For a plain-HTTP listener that
    /// sends clients to the TLS one.
    pub https: bool,
    /// 301 (default), 302, 303, 307 or 308.
    pub status: u16,
}

/// How a [`Redirect`] changes the path (the query is kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedirectPath {
    /// Unchanged.
    Keep,
    /// Replaced by this path (`path`).
    Replace(String),
    /// The matched `prefix` (or whole matched `path`) replaced by this
    /// (`prefix_rewrite`).
    PrefixRewrite(String),
}

/// A named group of upstream endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cluster {
    /// Unique name, used by routes.
    pub name: String,
    /// The endpoints (at least one), in file order.
    pub endpoints: Vec<Endpoint>,
    /// How an endpoint is picked; default [`LbPolicy::RoundRobin`].
    pub lb: LbPolicy,
    /// What [`LbPolicy::RingHash`] hashes; `Some` exactly when `lb` is
    /// `RingHash`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash_on: Option<HashOn>,
    /// Time allowed to connect to an endpoint; default 1s; never 0.
    #[serde(serialize_with = "duration::serialize")]
    pub connect_timeout: Duration,
    /// HTTP version spoken upstream; default [`UpstreamProtocol::Http1`].
    pub protocol: UpstreamProtocol,
    /// How long an idle pooled upstream connection is kept; default 60s;
    /// `None` (written `0`) for no limit.
    #[serde(serialize_with = "duration::serialize_opt")]
    pub idle_timeout: Option<Duration>,
    /// How often endpoint names are resolved again while the config runs;
    /// default 30s; `None` (written `0`) for never (only at load).
    #[serde(serialize_with = "duration::serialize_opt")]
    pub dns_refresh: Option<Duration>,
    // Circuit breakers. `None` is the default: no limit. (Envoy's default of
    // 1024 each turns a load spike into 503s nobody configured.)
    /// Most open connections to the cluster (all workers together); `None`
    /// (the default) for no limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// Most requests waiting for a connection to the cluster; `None` (the
    /// default) for no limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_pending_requests: Option<usize>,
    /// Most requests in flight to the cluster; `None` (the default) for no
    /// limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_requests: Option<usize>,
    /// Most retries in flight to the cluster; `None` (the default) for no
    /// limit. Not used when the cluster has a `retry_budget`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<usize>,
    /// Retries in flight as a share of requests in flight; `None` (the
    /// default) for none (then `max_retries` applies).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_budget: Option<RetryBudget>,
    /// Active health checking; `None` (the default) for none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// What happens when no endpoint is healthy and not ejected; default
    /// [`AllUnhealthy::Fail`].
    pub when_all_unhealthy: AllUnhealthy,
    /// Passive health checking (ejecting endpoints that fail requests);
    /// `None` (the default) for none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    /// TLS to the endpoints; `None` (the default) for plain TCP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClusterTls>,
}

/// One upstream endpoint: the `host:port` text, what it resolved to when
/// the configuration was loaded, and its weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// As written (`localhost:9003`, `127.0.0.1:9001`, `[::1]:80`).
    pub address: String,
    /// The addresses it resolved to (at least one, no duplicates, in
    /// resolver order).
    pub resolved: Vec<SocketAddr>,
    /// Relative share of the cluster's requests, 1 to 128; default 1.
    pub weight: u32,
}

impl Serialize for Endpoint {
    /// As written: the `host:port` text alone when the weight is the default
    /// 1, else `{ address, weight }`; either reads back as a config.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Out<'a> {
            address: &'a str,
            weight: u32,
        }
        if self.weight == 1 {
            s.serialize_str(&self.address)
        } else {
            Out { address: &self.address, weight: self.weight }.serialize(s)
        }
    }
}

/// Load-balancing policy of a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LbPolicy {
    /// Each endpoint in turn.
    #[default]
    RoundRobin,
    /// The endpoint with the fewest requests in flight (power of two choices).
    LeastRequest,
    /// An endpoint picked at random.
    Random,
    /// Consistent hashing on [`Cluster::hash_on`]: requests with the same
    /// key go to the same endpoint while it is available, and adding or
    /// removing an endpoint moves only about its share of the keys.
    RingHash,
}

/// The key [`LbPolicy::RingHash`] hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    /// The value of this request header (name lowercase, a valid header
    /// name). `{ header: NAME }` in the file.
    Header(String),
    /// The client's IP address (the downstream connection's peer).
    /// `source_ip` in the file.
    SourceIp,
}

impl Serialize for HashOn {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Out<'a> {
            header: &'a str,
        }
        match self {
            HashOn::Header(name) => Out { header: name }.serialize(s),
            HashOn::SourceIp => s.serialize_str("source_ip"),
        }
    }
}

/// What a cluster does when every endpoint is unhealthy (active health
/// check) or ejected (outlier detection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AllUnhealthy {
    /// Answer 503 at once, without trying an endpoint.
    #[default]
    Fail,
    /// Ignore health and ejections and balance over every endpoint (Envoy's
    /// panic mode): better some requests succeed than none.
    UseAll,
}

/// The HTTP version spoken to a cluster's endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    /// HTTP/1.1.
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge (h2c).
    Http2,
}

/// Active health checking of a cluster's endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthCheck {
    /// Path requested with `GET`.
    pub path: String,
    /// `Host` sent with each check (a host and optional port); `None` (the
    /// default) sends the endpoint's address as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Time between checks of one endpoint; default 5s; never 0.
    #[serde(serialize_with = "duration::serialize")]
    pub interval: Duration,
    /// Time allowed for one check; default 1s; never 0.
    #[serde(serialize_with = "duration::serialize")]
    pub timeout: Duration,
    /// Failed checks in a row before an endpoint is marked unhealthy; default 3.
    pub unhealthy_threshold: u32,
    /// Passed checks in a row before it is healthy again; default 2.
    pub healthy_threshold: u32,
    /// Statuses that count as a pass, as inclusive ranges `(first, last)`
    /// within 100–599 (a single code is `(code, code)`); at least one;
    /// default `[(200, 299)]`.
    #[serde(serialize_with = "serialize_status_ranges")]
    pub expected_statuses: Vec<(u16, u16)>,
}

impl HealthCheck {
    /// Whether a check answered with `status` passes.
    pub fn is_expected(&self, status: u16) -> bool {
        self.expected_statuses.iter().any(|&(first, last)| (first..=last).contains(&status))
    }
}

/// `200-299` for a range, `204` (a number) for a single code, as the file
/// writes them.
fn serialize_status_ranges<S: Serializer>(ranges: &[(u16, u16)], s: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    #[serde(untagged)]
    enum Out {
        Code(u16),
        Range(String),
    }
    s.collect_seq(
        ranges.iter().map(
            |&(first, last)| {
                if first == last { Out::Code(first) } else { Out::Range(format!("{first}-{last}")) }
            },
        ),
    )
}

/// Passive health checking: endpoints that fail requests in a row are
/// ejected (taken out of load balancing) for a while.
///
/// An endpoint ejected for the n-th time stays out for
/// `base_ejection_time × n`, at most `max_ejection_time`. At most
/// `max_ejection_percent` of the cluster's endpoints are ejected at once,
/// but one endpoint can always be, whatever the percentage (as in recent
/// Envoy), so small clusters are protected too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutlierDetection {
    /// 5xx responses from an endpoint in a row that eject it; default 5;
    /// `None` (written `0`) turns this detector off.
    #[serde(serialize_with = "serialize_zero_if_none")]
    pub consecutive_5xx: Option<u32>,
    /// Failed connection attempts to an endpoint in a row that eject it;
    /// default 5; `None` (written `0`) turns this detector off.
    #[serde(serialize_with = "serialize_zero_if_none")]
    pub consecutive_connect_failures: Option<u32>,
    /// Ejection time of a first ejection; default 30s; never 0.
    #[serde(serialize_with = "duration::serialize")]
    pub base_ejection_time: Duration,
    /// Longest ejection; default 300s, or `base_ejection_time` if that is
    /// longer; never below `base_ejection_time`.
    #[serde(serialize_with = "duration::serialize")]
    pub max_ejection_time: Duration,
    /// Most of the cluster's endpoints ejected at once, in percent (0–100);
    /// default 10.
    pub max_ejection_percent: u32,
}

/// `None` (a detector turned off) is written `0`.
fn serialize_zero_if_none<S: Serializer>(n: &Option<u32>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u32(n.unwrap_or(0))
}

// ---- Serialize for routes: the file's shape (`match` + one action key). ----

#[derive(Serialize)]
struct MatchOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prefix: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    regex: Option<&'a str>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    headers: &'a [HeaderMatch],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    methods: &'a [String],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    query: &'a [QueryMatch],
}

#[derive(Serialize)]
struct MirrorOut<'a> {
    cluster: &'a str,
    percent: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout: Option<String>,
}

#[derive(Serialize)]
struct RedirectOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prefix_rewrite: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    https: bool,
    status: u16,
}

#[derive(Serialize)]
struct RouteOut<'a> {
    #[serde(rename = "match")]
    matcher: MatchOut<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    weighted_clusters: Option<&'a [WeightedCluster]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    direct_response: Option<&'a DirectResponse>,
    #[serde(skip_serializing_if = "Option::is_none")]
    redirect: Option<RedirectOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retries: Option<&'a RetryPolicy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prefix_rewrite: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    host_rewrite: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    mirror: Vec<MirrorOut<'a>>,
}

impl Serialize for Route {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let m = &self.matcher;
        let (path, prefix, regex) = match &m.path {
            PathMatch::Any => (None, None, None),
            PathMatch::Exact(p) => (Some(p.as_str()), None, None),
            PathMatch::Prefix(p) => (None, Some(p.as_str()), None),
            PathMatch::Regex(r) => (None, None, Some(r.as_str())),
        };
        let mut out = RouteOut {
            matcher: MatchOut {
                host: m.host.as_ref().map(ToString::to_string),
                path,
                prefix,
                regex,
                headers: &m.headers,
                methods: &m.methods,
                query: &m.query,
            },
            cluster: None,
            weighted_clusters: None,
            direct_response: None,
            redirect: None,
            timeout: None,
            retries: None,
            prefix_rewrite: None,
            host_rewrite: None,
            mirror: Vec::new(),
        };
        match &self.action {
            RouteAction::Forward(f) => {
                match &f.target {
                    Target::Cluster(c) => out.cluster = Some(c),
                    Target::Weighted(w) => out.weighted_clusters = Some(w),
                }
                out.timeout = Some(duration::format(f.timeout.unwrap_or(Duration::ZERO)));
                out.retries = f.retries.as_ref();
                out.prefix_rewrite = f.prefix_rewrite.as_deref();
                out.host_rewrite = f.host_rewrite.as_deref();
                out.mirror = f
                    .mirrors
                    .iter()
                    .map(|m| MirrorOut {
                        cluster: &m.cluster,
                        percent: f64::from(m.per_million) / 10_000.0,
                        timeout: Some(duration::format(m.timeout.unwrap_or(Duration::ZERO))),
                    })
                    .collect();
            }
            RouteAction::DirectResponse(d) => out.direct_response = Some(d),
            RouteAction::Redirect(r) => {
                let (path, prefix_rewrite) = match &r.path {
                    RedirectPath::Keep => (None, None),
                    RedirectPath::Replace(p) => (Some(p.as_str()), None),
                    RedirectPath::PrefixRewrite(p) => (None, Some(p.as_str())),
                };
                out.redirect = Some(RedirectOut {
                    path,
                    prefix_rewrite,
                    host: r.host.as_deref(),
                    https: r.https,
                    status: r.status,
                });
            }
        }
        out.serialize(s)
    }
}

#[derive(Serialize)]
struct HeaderOut<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    exact: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    present: Option<bool>,
}

impl HeaderRule {
    fn out<'a>(&'a self, name: &'a str) -> HeaderOut<'a> {
        let (exact, present) = match self {
            HeaderRule::Exact(v) => (Some(v.as_str()), None),
            HeaderRule::Present => (None, Some(true)),
            HeaderRule::Absent => (None, Some(false)),
        };
        HeaderOut { name, exact, present }
    }
}

impl Serialize for HeaderMatch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.rule.out(&self.name).serialize(s)
    }
}

impl Serialize for QueryMatch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.rule.out(&self.name).serialize(s)
    }
}
