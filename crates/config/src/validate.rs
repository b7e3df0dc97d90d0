//! From the file's shape ([`raw`]) to the validated model, collecting every
//! problem with its position.

use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use nuncio_accesslog::Format;

use crate::catalog::{FilterCatalog, FilterCheckError};
use crate::error::{ConfigError, ConfigErrors};
use crate::index::{Index, Pos, join, parent};
use crate::model::*;
use crate::{duration, raw};

/// Default admin address.
pub(crate) const DEFAULT_ADMIN: SocketAddr =
    SocketAddr::V4(std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 9901));
pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
pub(crate) const DEFAULT_MAX_REQUEST_HEADERS_BYTES: usize = 60 * 1024;
pub(crate) const DEFAULT_MAX_REQUEST_HEADERS: usize = 100;
pub(crate) const DEFAULT_REQUEST_HEADERS_TIMEOUT: Duration = Duration::from_secs(10);
pub(crate) const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
pub(crate) const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
pub(crate) const DEFAULT_REQUEST_BODY_TIMEOUT: Duration = Duration::from_secs(20);
pub(crate) const DEFAULT_REQUEST_BODY_MIN_RATE: u64 = 500;
pub(crate) const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
pub(crate) const DEFAULT_RETRY_ATTEMPTS: u32 = 1;
pub(crate) const DEFAULT_RETRY_ON: [RetryOn; 2] = [RetryOn::ConnectFailure, RetryOn::RefusedStream];
/// Envoy's `retry_back_off` defaults.
pub(crate) const DEFAULT_BACKOFF: Backoff =
    Backoff { base: Duration::from_millis(25), max: Duration::from_millis(250) };
pub(crate) const DEFAULT_HC_INTERVAL: Duration = Duration::from_secs(5);
pub(crate) const DEFAULT_HC_TIMEOUT: Duration = Duration::from_secs(1);
pub(crate) const DEFAULT_HC_UNHEALTHY: u32 = 3;
pub(crate) const DEFAULT_HC_HEALTHY: u32 = 2;
pub(crate) const DEFAULT_REDIRECT_STATUS: u16 = 301;
pub(crate) const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(15);
pub(crate) const DEFAULT_DNS_REFRESH: Duration = Duration::from_secs(30);
/// The `service.name` of nuncio's spans unless `tracing.service_name` says
/// otherwise.
pub(crate) const DEFAULT_SERVICE_NAME: &str = "nuncio";
pub(crate) const DEFAULT_ENDPOINT_WEIGHT: u32 = 1;
/// Enough to express any useful ratio, small enough that a weighted
/// schedule (or a hash ring with entries per unit of weight) stays small.
pub(crate) const MAX_ENDPOINT_WEIGHT: u32 = 128;
pub(crate) const DEFAULT_HC_EXPECTED_STATUSES: (u16, u16) = (200, 299);
pub(crate) const DEFAULT_OD_CONSECUTIVE: u32 = 5;
pub(crate) const DEFAULT_OD_BASE_EJECTION_TIME: Duration = Duration::from_secs(30);
pub(crate) const DEFAULT_OD_MAX_EJECTION_TIME: Duration = Duration::from_secs(300);
pub(crate) const DEFAULT_OD_MAX_EJECTION_PERCENT: u32 = 10;

/// Workers when `workers` is not given: the cores this process may use.
pub(crate) fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The error collector: knows the file and where each path is (and the
/// filters a listener may name).
pub(crate) struct Ctx<'a> {
    file: &'a str,
    index: &'a Index,
    catalog: &'a dyn FilterCatalog,
    errors: Vec<ConfigError>,
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(file: &'a str, index: &'a Index, catalog: &'a dyn FilterCatalog) -> Self {
        Ctx { file, index, catalog, errors: Vec::new() }
    }

    /// `Ok(value)` if nothing was reported, else every error in file order.
    pub(crate) fn finish<T>(mut self, value: T) -> Result<T, ConfigErrors> {
        if self.errors.is_empty() {
            return Ok(value);
        }
        self.errors.sort_by_key(|e| (e.line, e.column));
        Err(ConfigErrors(self.errors))
    }

    fn at(&mut self, pos: Pos, path: &str, message: String) {
        self.errors.push(ConfigError {
            file: self.file.to_owned(),
            line: pos.line,
            column: pos.column,
            path: path.to_owned(),
            message,
        });
    }

    /// An error about the second occurrence of the key of `path` in one
    /// mapping (falls back to the first).
    fn duplicate_key_error(&mut self, path: &str, message: impl Into<String>) {
        let pos = self.index.duplicate_key(path).unwrap_or_else(|| self.index.key(path));
        self.at(pos, path, message.into());
    }

    /// An error about the value at `path`.
    fn error(&mut self, path: &str, message: impl Into<String>) {
        let pos = self.index.value(path);
        self.at(pos, path, message.into());
    }

    /// An error about the presence of the field `path` (points at its key).
    fn key_error(&mut self, path: &str, message: impl Into<String>) {
        let pos = self.index.key(path);
        self.at(pos, path, message.into());
    }

    /// `parent.field` is required and absent (points at `parent`).
    fn missing(&mut self, parent: &str, field: &str, hint: &str) {
        let pos = self.index.value(parent);
        self.at(pos, &join(parent, field), format!("missing ({hint})"));
    }

    /// `path (line N)`, to point from one error to another place.
    fn place(&self, path: &str) -> String {
        match self.index.line(path) {
            Some(line) => format!("{path}, line {line}"),
            None => path.to_owned(),
        }
    }

    // ---- scalars ----

    /// A required, non-empty string without whitespace (names).
    fn name(&mut self, parent: &str, field: &str, value: &raw::Text, hint: &str) -> String {
        let path = join(parent, field);
        match value {
            None => {
                self.missing(parent, field, hint);
                String::new()
            }
            Some(v) if v.is_empty() => {
                self.error(&path, "must not be empty");
                String::new()
            }
            Some(v) if v.chars().any(|c| c.is_whitespace() || c.is_control()) => {
                self.error(&path, format!("invalid name {v:?}: no spaces or control characters"));
                v.clone()
            }
            Some(v) => v.clone(),
        }
    }

    /// A whole number in `min..=max`, or `default` when absent.
    fn number(&mut self, path: &str, value: &raw::Text, default: u64, min: u64, max: u64) -> u64 {
        let Some(text) = value else { return default };
        match parse_number(text) {
            None => {
                self.error(path, format!("invalid number {text:?} (use a whole number such as {default})"));
                default
            }
            Some(n) if n < min => {
                self.error(path, format!("must be at least {min}"));
                default
            }
            Some(n) if n > max => {
                self.error(path, format!("must be at most {max}"));
                default
            }
            Some(n) => n,
        }
    }

    fn count(&mut self, path: &str, value: &raw::Text, default: usize) -> usize {
        let n = self.number(path, value, default as u64, 1, u32::MAX.into());
        usize::try_from(n).unwrap_or(default)
    }

    /// A timeout where `0` means none; `default` when absent.
    fn timeout(&mut self, path: &str, value: &raw::Text, default: Option<Duration>) -> Option<Duration> {
        self.zero_is_none(path, value, default, "0 means no timeout")
    }

    /// A duration where `0` means `None` (`zero` says what that does, for
    /// the error message); `default` when absent.
    fn zero_is_none(
        &mut self,
        path: &str,
        value: &raw::Text,
        default: Option<Duration>,
        zero: &str,
    ) -> Option<Duration> {
        let Some(text) = value else { return default };
        match duration::parse(text) {
            Ok(Duration::ZERO) => None,
            Ok(d) => Some(d),
            Err(message) => {
                self.error(path, format!("{message}; {zero}"));
                default
            }
        }
    }

    /// Any duration, `0` included; `default` when absent.
    fn duration(&mut self, path: &str, value: &raw::Text, default: Duration) -> Duration {
        let Some(text) = value else { return default };
        duration::parse(text).unwrap_or_else(|message| {
            self.error(path, message);
            default
        })
    }

    /// `true` or `false`; `None` (reported) when it is neither.
    fn boolean(&mut self, path: &str, text: &str) -> Option<bool> {
        let value = parse_bool(text);
        if value.is_none() {
            self.error(path, format!("invalid value {text:?} (use true or false)"));
        }
        value
    }

    /// A duration that must be above zero; `default` when absent.
    fn positive_duration(&mut self, path: &str, value: &raw::Text, default: Duration) -> Duration {
        let Some(text) = value else { return default };
        match duration::parse(text) {
            Ok(Duration::ZERO) => {
                self.error(path, "must be greater than 0");
                default
            }
            Ok(d) => d,
            Err(message) => {
                self.error(path, message);
                default
            }
        }
    }

    /// One of a few words; `default` when absent.
    fn choice<T: Copy>(&mut self, path: &str, value: &raw::Text, default: T, options: &[(&str, T)]) -> T {
        let Some(text) = value else { return default };
        if let Some((_, v)) = options.iter().find(|(name, _)| name == text) {
            return *v;
        }
        let field = path.rsplit('.').next().unwrap_or(path);
        let names: Vec<&str> = options.iter().map(|(name, _)| *name).collect();
        self.error(path, format!("invalid {field} {text:?} (use {})", or_list(&names)));
        default
    }

    /// An `IP:PORT` to listen on.
    fn listen_address(&mut self, path: &str, text: &str) -> Option<SocketAddr> {
        match text.parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.error(path, format!("invalid address {text:?} (use IP:PORT, e.g. 127.0.0.1:8080 or [::]:8080)"));
                None
            }
        }
    }

    /// A path (`/...`, no query).
    fn url_path(&mut self, path: &str, text: &str) -> String {
        if let Err(message) = check_url_path(text) {
            self.error(path, message);
        }
        text.to_owned()
    }

    /// A host with an optional port, as sent in `Host`.
    fn authority(&mut self, path: &str, text: &str) -> String {
        if let Err(message) = check_authority(text) {
            self.error(path, message);
        }
        text.to_owned()
    }

    fn status(&mut self, path: &str, text: &str, min: u16) -> u16 {
        match parse_number(text).and_then(|n| u16::try_from(n).ok()) {
            Some(n) if (min..=599).contains(&n) => n,
            _ => {
                self.error(path, format!("invalid status {text:?} (use a number from {min} to 599)"));
                200
            }
        }
    }
}

fn parse_number(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn parse_bool(text: &str) -> Option<bool> {
    if text.eq_ignore_ascii_case("true") {
        Some(true)
    } else if text.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// `a`, `a or b`, `a, b or c`.
fn or_list(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

fn check_url_path(text: &str) -> Result<(), String> {
    if !text.starts_with('/') {
        return Err(format!("invalid path {text:?}: must start with /"));
    }
    if text.contains(['?', '#']) {
        return Err(format!("invalid path {text:?}: no query or fragment (matching uses the path only)"));
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("invalid path {text:?}: no spaces or control characters"));
    }
    Ok(())
}

/// A DNS name (letters, digits, `-`, `_`, `.`).
fn is_hostname(text: &str) -> bool {
    !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !text.starts_with('.')
        && !text.contains("..")
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn check_authority(text: &str) -> Result<(), String> {
    let bad = || Err(format!("invalid host {text:?} (use a host name or IP, with an optional :PORT)"));
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else { return bad() };
        if v6.parse::<Ipv6Addr>().is_err() {
            return bad();
        }
        match after {
            "" => return Ok(()),
            _ => match after.strip_prefix(':') {
                Some(port) => ("x", Some(port)),
                None => return bad(),
            },
        }
    } else {
        match text.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (text, None),
        }
    };
    if !is_hostname(host) {
        return bad();
    }
    if let Some(port) = port
        && parse_number(port).is_none_or(|p| p == 0 || p > u16::MAX.into())
    {
        return bad();
    }
    Ok(())
}

/// The `host` of a route match.
fn parse_host_match(text: &str) -> Result<Option<HostMatch>, String> {
    let lower = text.to_ascii_lowercase();
    if lower == "*" {
        return Ok(None);
    }
    if let Some(suffix) = lower.strip_prefix("*.") {
        if !is_hostname(suffix) {
            return Err(format!("invalid host {text:?} (use a name such as api.example.com or *.example.com)"));
        }
        return Ok(Some(HostMatch::Wildcard(suffix.to_owned())));
    }
    if lower.contains('*') {
        return Err(format!("invalid host {text:?}: a wildcard must be the whole first label, as in *.example.com"));
    }
    if let Some(v6) = lower.strip_prefix('[').and_then(|r| r.strip_suffix(']'))
        && v6.parse::<Ipv6Addr>().is_ok()
    {
        return Ok(Some(HostMatch::Exact(lower)));
    }
    if lower.contains(':') {
        return Err(format!("invalid host {text:?}: leave the port out (the request's port is ignored when matching)"));
    }
    if !is_hostname(&lower) {
        return Err(format!("invalid host {text:?} (use a name such as api.example.com or *.example.com)"));
    }
    Ok(Some(HostMatch::Exact(lower)))
}

/// An HTTP header name (RFC 9110 token).
fn is_token(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn parse_retry_on(text: &str) -> Option<RetryOn> {
    Some(match text {
        "connect-failure" => RetryOn::ConnectFailure,
        "refused-stream" => RetryOn::RefusedStream,
        "reset" => RetryOn::Reset,
        "5xx" => RetryOn::Status5xx,
        "gateway-error" => RetryOn::GatewayError,
        _ => {
            let code = u16::try_from(parse_number(text)?).ok()?;
            if !(100..=599).contains(&code) {
                return None;
            }
            RetryOn::Status(code)
        }
    })
}

/// Parses and resolves one `host:port` endpoint (blocking name lookup).
pub(crate) fn resolve_endpoint(text: &str) -> Result<Endpoint, String> {
    if text.contains("://") {
        return Err(format!("invalid endpoint {text:?}: write HOST:PORT, without a scheme"));
    }
    if text.contains('/') {
        return Err(format!("invalid endpoint {text:?}: write HOST:PORT, without a path"));
    }
    let resolved = if let Ok(addr) = text.parse::<SocketAddr>() {
        if addr.port() == 0 {
            return Err(format!("invalid endpoint {text:?}: port 0"));
        }
        vec![addr]
    } else {
        let Some((host, port)) = text.rsplit_once(':') else {
            return Err(format!("invalid endpoint {text:?}: missing port (use HOST:PORT, e.g. localhost:8080)"));
        };
        if host.contains(':') {
            return Err(format!("invalid endpoint {text:?}: put an IPv6 address in brackets, as in [::1]:8080"));
        }
        let port = match parse_number(port).and_then(|p| u16::try_from(p).ok()) {
            Some(p) if p != 0 => p,
            _ => return Err(format!("invalid endpoint {text:?}: port must be a number from 1 to 65535")),
        };
        if !is_hostname(host) {
            return Err(format!("invalid endpoint {text:?}: invalid host name {host:?}"));
        }
        let addrs = (host, port).to_socket_addrs().map_err(|e| format!("cannot resolve {host:?}: {e}"))?;
        let mut resolved: Vec<SocketAddr> = Vec::new();
        for addr in addrs {
            if !resolved.contains(&addr) {
                resolved.push(addr);
            }
        }
        if resolved.is_empty() {
            return Err(format!("cannot resolve {host:?}: no addresses"));
        }
        resolved
    };
    Ok(Endpoint { address: text.to_owned(), resolved, weight: DEFAULT_ENDPOINT_WEIGHT })
}

// ---- the tree ----

/// Validates a whole configuration.
pub(crate) fn config(raw: &raw::Config, ctx: &mut Ctx<'_>) -> Config {
    let admin = raw.admin.as_ref().map_or(Admin { address: DEFAULT_ADMIN, allow_remote: false }, |a| admin(ctx, a));
    let workers = match &raw.workers {
        Some(_) => ctx.count("workers", &raw.workers, default_workers()),
        None => default_workers(),
    };
    let drain_timeout = ctx.duration("drain_timeout", &raw.drain_timeout, DEFAULT_DRAIN_TIMEOUT);
    let tracing = raw.tracing.as_ref().and_then(|t| tracing(ctx, t));

    let clusters: Vec<Cluster> =
        raw.clusters.iter().flatten().enumerate().map(|(i, c)| cluster(ctx, &format!("clusters[{i}]"), c)).collect();
    let mut cluster_names: HashMap<&str, usize> = HashMap::new();
    for (i, c) in clusters.iter().enumerate() {
        if c.name.is_empty() {
            continue;
        }
        if let Some(first) = cluster_names.get(c.name.as_str()) {
            let place = ctx.place(&format!("clusters[{first}]"));
            ctx.error(&format!("clusters[{i}].name"), format!("duplicate cluster name {:?} (also {place})", c.name));
        } else {
            cluster_names.insert(&c.name, i);
        }
    }
    let mut known: Vec<&str> = Vec::new();
    for c in &clusters {
        if !c.name.is_empty() && !known.contains(&c.name.as_str()) {
            known.push(&c.name);
        }
    }

    let mut listeners = Vec::new();
    match &raw.listeners {
        None => ctx.missing("", "listeners", "a config needs at least one listener"),
        Some(list) if list.is_empty() => ctx.error("listeners", "needs at least one listener"),
        Some(list) => {
            for (i, l) in list.iter().enumerate() {
                listeners.push(listener(ctx, &format!("listeners[{i}]"), l, &known));
            }
        }
    }

    // Names and addresses must not clash.
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut addresses: HashMap<SocketAddr, String> = HashMap::new();
    if admin.address.port() != 0 {
        addresses.insert(admin.address, "admin.address".to_owned());
    }
    for (i, l) in listeners.iter().enumerate() {
        if !l.name.is_empty() {
            if let Some(first) = names.get(l.name.as_str()) {
                let place = ctx.place(&format!("listeners[{first}]"));
                ctx.error(
                    &format!("listeners[{i}].name"),
                    format!("duplicate listener name {:?} (also {place})", l.name),
                );
            } else {
                names.insert(&l.name, i);
            }
        }
        if l.address.port() == 0 {
            continue;
        }
        let path = format!("listeners[{i}].address");
        if let Some(first) = addresses.get(&l.address) {
            let place = ctx.place(first);
            ctx.error(&path, format!("address {} is already used by {place}", l.address));
        } else {
            addresses.insert(l.address, path);
        }
    }

    let overload = raw.overload.as_ref().map_or_else(Overload::default, |o| overload(ctx, o));
    Config { admin, workers, drain_timeout, tracing, listeners, clusters, overload }
}

/// `tracing:`; `None` when its endpoint is missing or unusable (reported).
fn tracing(ctx: &mut Ctx<'_>, raw: &raw::Tracing) -> Option<Tracing> {
    let endpoint = match &raw.otlp_endpoint {
        None => {
            ctx.missing("tracing", "otlp_endpoint", "the OTLP/HTTP collector spans go to, e.g. http://127.0.0.1:4318");
            None
        }
        Some(text) => match nuncio_trace::Endpoint::parse(text) {
            Ok(endpoint) => Some(endpoint),
            Err(e) => {
                ctx.error("tracing.otlp_endpoint", e.to_string());
                None
            }
        },
    };
    let sampling_per_million = match &raw.sampling {
        None => 1_000_000,
        Some(text) => match text.trim().parse::<f64>() {
            Ok(ratio) if (0.0..=1.0).contains(&ratio) => (ratio * 1e6).round() as u32,
            _ => {
                ctx.error(
                    "tracing.sampling",
                    format!("invalid sampling {text:?} (use a number from 0.0 to 1.0: the share of requests traced)"),
                );
                1_000_000
            }
        },
    };
    let service_name = match &raw.service_name {
        None => DEFAULT_SERVICE_NAME.to_owned(),
        Some(_) => ctx.name("tracing", "service_name", &raw.service_name, "the service.name of the spans"),
    };
    let queue_size = ctx.count("tracing.queue_size", &raw.queue_size, nuncio_trace::DEFAULT_QUEUE_SIZE);
    Some(Tracing { otlp_endpoint: endpoint?, sampling_per_million, service_name, queue_size })
}

fn admin(ctx: &mut Ctx<'_>, raw: &raw::Admin) -> Admin {
    let address = raw.address.as_ref().map(|text| ctx.listen_address("admin.address", text));
    let allow_remote = raw.allow_remote.as_ref().map(|text| ctx.boolean("admin.allow_remote", text));
    // Admin has no authentication and can change what nuncio serves, so
    // only loopback unless exposing it was asked for. (An unreadable
    // address or allow_remote is reported already; no second error.)
    if let Some(Some(address)) = address
        && matches!(allow_remote, None | Some(Some(false)))
        && !address.ip().to_canonical().is_loopback()
    {
        ctx.error(
            "admin.address",
            format!(
                "{address} is not a loopback address; admin can change nuncio's state, \
                 so set admin.allow_remote: true to expose it"
            ),
        );
    }
    Admin { address: address.flatten().unwrap_or(DEFAULT_ADMIN), allow_remote: allow_remote.flatten().unwrap_or(false) }
}

fn listener(ctx: &mut Ctx<'_>, p: &str, raw: &raw::Listener, clusters: &[&str]) -> Listener {
    let name = ctx.name(p, "name", &raw.name, "every listener needs a unique name");
    let address = match &raw.address {
        None => {
            ctx.missing(p, "address", "the IP:PORT to listen on, e.g. 127.0.0.1:8080");
            None
        }
        Some(text) => ctx.listen_address(&join(p, "address"), text),
    };
    let protocol = ctx.choice(
        &join(p, "protocol"),
        &raw.protocol,
        ListenerProtocol::Auto,
        &[("auto", ListenerProtocol::Auto), ("http1", ListenerProtocol::Http1), ("http2", ListenerProtocol::Http2)],
    );
    let max_connections = ctx.count(&join(p, "max_connections"), &raw.max_connections, DEFAULT_MAX_CONNECTIONS);
    let max_request_headers_bytes = ctx.count(
        &join(p, "max_request_headers_bytes"),
        &raw.max_request_headers_bytes,
        DEFAULT_MAX_REQUEST_HEADERS_BYTES,
    );
    let max_request_headers =
        ctx.count(&join(p, "max_request_headers"), &raw.max_request_headers, DEFAULT_MAX_REQUEST_HEADERS);
    let request_headers_timeout = ctx.timeout(
        &join(p, "request_headers_timeout"),
        &raw.request_headers_timeout,
        Some(DEFAULT_REQUEST_HEADERS_TIMEOUT),
    );
    let idle_timeout = ctx.timeout(&join(p, "idle_timeout"), &raw.idle_timeout, Some(DEFAULT_IDLE_TIMEOUT));
    let stream_idle_timeout =
        ctx.timeout(&join(p, "stream_idle_timeout"), &raw.stream_idle_timeout, Some(DEFAULT_STREAM_IDLE_TIMEOUT));
    let request_body_timeout =
        ctx.timeout(&join(p, "request_body_timeout"), &raw.request_body_timeout, Some(DEFAULT_REQUEST_BODY_TIMEOUT));
    let request_body_min_rate = ctx.number(
        &join(p, "request_body_min_rate"),
        &raw.request_body_min_rate,
        DEFAULT_REQUEST_BODY_MIN_RATE,
        0,
        u64::MAX,
    );
    let time_left_header = time_left_header(ctx, &join(p, "time_left_header"), &raw.time_left_header);
    let access_log = raw.access_log.as_ref().map(|a| access_log(ctx, &join(p, "access_log"), a));
    let filters = raw.filters.as_ref().map_or_else(Vec::new, |list| filters(ctx, &join(p, "filters"), list, clusters));
    let tls = raw
        .tls
        .as_ref()
        .and_then(|t| listener_tls(ctx, &join(p, "tls"), t, raw.protocol.is_some().then_some(protocol)));
    let mut routes = Vec::new();
    match &raw.routes {
        None => ctx.missing(p, "routes", "a listener needs at least one route"),
        Some(list) if list.is_empty() => ctx.error(&join(p, "routes"), "needs at least one route"),
        Some(list) => {
            for (j, r) in list.iter().enumerate() {
                if let Some(r) = route(ctx, &format!("{p}.routes[{j}]"), r, clusters) {
                    routes.push(r);
                }
            }
        }
    }
    Listener {
        name,
        address: address.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0))),
        protocol,
        max_connections,
        max_request_headers_bytes,
        max_request_headers,
        request_headers_timeout,
        idle_timeout,
        stream_idle_timeout,
        request_body_timeout,
        request_body_min_rate,
        time_left_header,
        access_log,
        filters,
        tls,
        routes,
    }
}

/// Fields a listener's `time_left_header` may not name: those that frame
/// the message or belong to one hop (nuncio sets or strips them), and those
/// it sets on every forwarded request.
const PROXY_FIELDS: &[&str] = &[
    "connection",
    "content-length",
    "expect",
    "host",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-request-id",
];

/// A listener's `time_left_header`: a field name (lower-cased), `none`
/// (any case) for `None`, the default when absent.
fn time_left_header(ctx: &mut Ctx<'_>, p: &str, raw: &raw::Text) -> Option<String> {
    let Some(text) = raw else { return Some(DEFAULT_TIME_LEFT_HEADER.to_owned()) };
    if text.eq_ignore_ascii_case("none") {
        return None;
    }
    let name = text.to_ascii_lowercase();
    let problem = if text.is_empty() {
        "empty (write `none` to send no time-left field)".to_owned()
    } else if !is_token(text) {
        format!("invalid header name {text:?} (a token: letters, digits and !#$%&'*+-.^_`|~), or none")
    } else if name == "grpc-timeout" {
        "gRPC requests get `grpc-timeout` anyway; name the field for the other requests (or none)".to_owned()
    } else if PROXY_FIELDS.contains(&name.as_str()) {
        format!("`{name}` is set or removed by nuncio itself (framing, hop-by-hop and forwarding fields)")
    } else {
        return Some(name);
    };
    ctx.error(p, problem);
    Some(DEFAULT_TIME_LEFT_HEADER.to_owned())
}

/// A listener's `filters`, each name and config block checked by the
/// catalog, and the clusters a block names checked against `clusters`.
/// Every filter named is kept, in order, even when reported.
fn filters(ctx: &mut Ctx<'_>, p: &str, list: &[raw::Filter], clusters: &[&str]) -> Vec<FilterSpec> {
    let mut out = Vec::new();
    for (j, raw) in list.iter().enumerate() {
        let fp = format!("{p}[{j}]");
        let cp = join(&fp, "config");
        let config = raw.config.as_ref().map_or(serde_json::Value::Null, |c| c.0.clone());
        duplicate_keys(ctx, &cp, &config);
        let names = ctx.catalog.names();
        let hint = if names.is_empty() {
            "the filter to run".to_owned()
        } else {
            format!("the filter to run, one of: {}", names.join(", "))
        };
        let name = ctx.name(&fp, "name", &raw.name, &hint);
        // An empty or malformed name is reported already.
        if !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            match ctx.catalog.check_with_clusters(&name, &config) {
                Ok(named) => {
                    for cluster in named.iter().filter(|c| !clusters.contains(&c.name.as_str())) {
                        let message = unknown_cluster_message(&cluster.name, clusters);
                        filter_config_error(ctx, &cp, &cluster.path, message);
                    }
                }
                Err(FilterCheckError::UnknownName) => {
                    let known = known_filters(ctx.catalog);
                    ctx.error(&join(&fp, "name"), format!("unknown filter {name:?}; known: {known}"));
                }
                Err(FilterCheckError::Config { path, message }) => filter_config_error(ctx, &cp, &path, message),
            }
        }
        out.push(FilterSpec { name, config });
    }
    out
}

/// `a, b, c` in the catalog's order, or `(none)`.
fn known_filters(catalog: &dyn FilterCatalog) -> String {
    let names = catalog.names();
    if names.is_empty() { "(none)".to_owned() } else { names.join(", ") }
}

/// A catalog's complaint about the block at `cp`, at `path` within it:
/// located at the deepest node of that path present in the file, else at
/// the `config` key, else at the filter. (An unknown field, which serde
/// names in the path, is located at its key, as elsewhere.)
fn filter_config_error(ctx: &mut Ctx<'_>, cp: &str, path: &str, message: String) {
    let full = match path {
        "" => cp.to_owned(),
        _ if path.starts_with('[') => format!("{cp}{path}"),
        _ => format!("{cp}.{path}"),
    };
    if message.starts_with("unknown field")
        && let Some(pos) = ctx.index.get_key(&full)
    {
        ctx.at(pos, &full, message);
        return;
    }
    let mut q = full.as_str();
    let pos = loop {
        if q.len() <= cp.len() || !q.starts_with(cp) {
            break ctx.index.key(cp);
        }
        if let Some(pos) = ctx.index.get(q) {
            break pos;
        }
        q = parent(q);
    };
    ctx.at(pos, &full, message);
}

/// Keys given twice in a mapping of a config block (serde kept the last).
fn duplicate_keys(ctx: &mut Ctx<'_>, path: &str, value: &serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                let kp = join(path, key);
                if ctx.index.duplicate_key(&kp).is_some() {
                    ctx.duplicate_key_error(&kp, "given twice in the same mapping");
                }
                duplicate_keys(ctx, &kp, value);
            }
        }
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                duplicate_keys(ctx, &format!("{path}[{i}]"), item);
            }
        }
        _ => {}
    }
}

fn access_log(ctx: &mut Ctx<'_>, p: &str, raw: &raw::AccessLog) -> AccessLog {
    let path = raw.path.as_ref().map_or(LogPath::Stdout, |text| log_path(ctx, &join(p, "path"), text));
    let format = match (&raw.format, &raw.json_format) {
        (None, None) => Format::default_text(),
        (Some(text), json) => {
            if json.is_some() {
                ctx.key_error(&join(p, "json_format"), "use either `format` (a text line) or `json_format`, not both");
            }
            Format::text(text).unwrap_or_else(|e| {
                ctx.error(&join(p, "format"), e.to_string());
                Format::default_text()
            })
        }
        (None, Some(fields)) => json_format(ctx, &join(p, "json_format"), fields),
    };
    AccessLog { path, format }
}

fn log_path(ctx: &mut Ctx<'_>, path: &str, text: &str) -> LogPath {
    match text {
        "stdout" => return LogPath::Stdout,
        "stderr" => return LogPath::Stderr,
        "" => ctx.error(path, "must not be empty (use stdout, stderr or a file path)"),
        // Almost surely meant the stream; a file of that name is `./Stdout`.
        _ if text.eq_ignore_ascii_case("stdout") || text.eq_ignore_ascii_case("stderr") => ctx.error(
            path,
            format!("{text:?}: write {} in lowercase, or ./{text} for a file of that name", text.to_ascii_lowercase()),
        ),
        _ if text.ends_with('/') => ctx.error(path, format!("{text:?} names a directory: give a file path")),
        _ if text.chars().any(char::is_control) => {
            ctx.error(path, format!("invalid path {text:?}: no control characters"));
        }
        _ => return LogPath::File(PathBuf::from(text)),
    }
    LogPath::Stdout
}

/// A `json_format` mapping. Each field is checked alone first, so that a bad
/// template is reported at its own key, every one of them.
fn json_format(ctx: &mut Ctx<'_>, p: &str, raw: &raw::Fields) -> Format {
    if raw.0.is_empty() {
        ctx.error(p, "needs at least one field (or use `format` for a text line)");
    }
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    let mut ok = !raw.0.is_empty();
    for (key, value) in &raw.0 {
        let kp = join(p, key);
        if seen.contains(&key.as_str()) {
            ctx.duplicate_key_error(&kp, "given twice in the same mapping");
            ok = false;
            continue;
        }
        seen.push(key);
        let Some(value) = value else {
            ctx.error(&kp, "missing format string (e.g. \"%RESPONSE_CODE%\")");
            ok = false;
            continue;
        };
        let field = (key.clone(), value.clone());
        if let Err(e) = Format::json(std::slice::from_ref(&field)) {
            // The message names the key already in its own words; the path
            // says it here.
            let message = e.to_string();
            let prefix = format!("key `{key}`: ");
            ctx.error(&kp, message.strip_prefix(&prefix).unwrap_or(&message));
            ok = false;
        }
        fields.push(field);
    }
    if !ok {
        return Format::default_text();
    }
    Format::json(&fields).unwrap_or_else(|e| {
        ctx.error(p, e.to_string());
        Format::default_text()
    })
}

fn route(ctx: &mut Ctx<'_>, p: &str, raw: &raw::Route, clusters: &[&str]) -> Option<Route> {
    let matcher = match &raw.matcher {
        None => {
            ctx.missing(p, "match", "use `match: {}` or `match: { prefix: / }` to match every request");
            RouteMatch::default()
        }
        Some(m) => route_match(ctx, &join(p, "match"), m),
    };

    // Exactly one action; check every one given, keep the first.
    let given: Vec<&str> = [
        ("cluster", raw.cluster.is_some()),
        ("weighted_clusters", raw.weighted_clusters.is_some()),
        ("direct_response", raw.direct_response.is_some()),
        ("redirect", raw.redirect.is_some()),
    ]
    .into_iter()
    .filter_map(|(key, present)| present.then_some(key))
    .collect();
    match given.as_slice() {
        [] => ctx.error(p, "no action: give one of cluster, weighted_clusters, direct_response or redirect"),
        [first, rest @ ..] => {
            for extra in rest {
                ctx.key_error(
                    &join(p, extra),
                    format!("a route has exactly one action, and this one already has `{first}`"),
                );
            }
        }
    }
    let mut actions = Vec::new();
    if let Some(name) = &raw.cluster {
        let path = join(p, "cluster");
        cluster_ref(ctx, &path, name, clusters);
        actions.push(Target::Cluster(name.clone()).into());
    }
    if let Some(list) = &raw.weighted_clusters {
        actions.push(weighted(ctx, &join(p, "weighted_clusters"), list, clusters).into());
    }
    if let Some(d) = &raw.direct_response {
        actions.push(RouteAction::DirectResponse(direct_response(ctx, &join(p, "direct_response"), d)));
    }
    if let Some(r) = &raw.redirect {
        actions.push(RouteAction::Redirect(redirect(ctx, &join(p, "redirect"), r, &matcher)));
    }
    let mut action = actions.into_iter().next()?;

    if let RouteAction::Forward(forward) = &mut action {
        forward.timeout = ctx.timeout(&join(p, "timeout"), &raw.timeout, Some(DEFAULT_ROUTE_TIMEOUT));
        forward.retries = raw.retries.as_ref().map(|r| retries(ctx, &join(p, "retries"), r));
        if let Some(text) = &raw.prefix_rewrite {
            let path = join(p, "prefix_rewrite");
            forward.prefix_rewrite = Some(ctx.url_path(&path, text));
            needs_path_match(ctx, &path, &matcher);
        }
        forward.host_rewrite = raw.host_rewrite.as_ref().map(|h| ctx.authority(&join(p, "host_rewrite"), h));
        for (i, m) in raw.mirror.iter().flatten().enumerate() {
            let mirror = mirror(ctx, &format!("{p}.mirror[{i}]"), m, clusters, forward.timeout);
            if forward.mirrors.iter().any(|other| other.cluster == mirror.cluster) {
                ctx.error(
                    &format!("{p}.mirror[{i}].cluster"),
                    format!("cluster {:?} is mirrored twice", mirror.cluster),
                );
            }
            forward.mirrors.push(mirror);
        }
    } else {
        let kind = given[0];
        let forward_only = [
            ("timeout", raw.timeout.is_some()),
            ("retries", raw.retries.is_some()),
            ("prefix_rewrite", raw.prefix_rewrite.is_some()),
            ("host_rewrite", raw.host_rewrite.is_some()),
            ("mirror", raw.mirror.is_some()),
        ];
        for (key, present) in forward_only {
            if !present {
                continue;
            }
            let mut message = format!("only applies to routes that forward to a cluster, not to `{kind}`");
            if kind == "redirect" && key == "prefix_rewrite" {
                message.push_str(" (put it inside `redirect`)");
            }
            ctx.key_error(&join(p, key), message);
        }
    }
    Some(Route { matcher, action })
}

impl From<Target> for RouteAction {
    fn from(target: Target) -> Self {
        RouteAction::Forward(Forward {
            target,
            timeout: Some(DEFAULT_ROUTE_TIMEOUT),
            retries: None,
            prefix_rewrite: None,
            host_rewrite: None,
            mirrors: Vec::new(),
        })
    }
}

fn needs_path_match(ctx: &mut Ctx<'_>, path: &str, matcher: &RouteMatch) {
    if matches!(matcher.path, PathMatch::Any | PathMatch::Regex(_)) {
        ctx.key_error(path, "needs a `prefix` or `path` in the route's match (it replaces the matched part)");
    }
}

fn mirror(ctx: &mut Ctx<'_>, p: &str, raw: &raw::Mirror, clusters: &[&str], route_timeout: Option<Duration>) -> Mirror {
    let cluster = ctx.name(p, "cluster", &raw.cluster, "the cluster that gets the copies");
    if !cluster.is_empty() {
        cluster_ref(ctx, &join(p, "cluster"), &cluster, clusters);
    }
    let per_million = match &raw.percent {
        None => 1_000_000,
        Some(text) => match text.trim().parse::<f64>() {
            Ok(percent) if (0.0..=100.0).contains(&percent) => (percent * 10_000.0).round() as u32,
            _ => {
                ctx.error(&join(p, "percent"), format!("invalid percent {text:?} (use a number from 0 to 100)"));
                1_000_000
            }
        },
    };
    let timeout = ctx.timeout(&join(p, "timeout"), &raw.timeout, route_timeout);
    Mirror { cluster, per_million, timeout }
}

fn cluster_ref(ctx: &mut Ctx<'_>, path: &str, name: &str, clusters: &[&str]) {
    if clusters.contains(&name) {
        return;
    }
    ctx.error(path, unknown_cluster_message(name, clusters));
}

/// `unknown cluster "x" (defined: a, b)`: the same words wherever a
/// cluster is named (routes, filter config blocks).
fn unknown_cluster_message(name: &str, clusters: &[&str]) -> String {
    let known = if clusters.is_empty() {
        "no clusters are defined".to_owned()
    } else {
        format!("defined: {}", clusters.join(", "))
    };
    format!("unknown cluster {name:?} ({known})")
}

fn route_match(ctx: &mut Ctx<'_>, p: &str, raw: &raw::Match) -> RouteMatch {
    let host = match &raw.host {
        None => None,
        Some(text) => parse_host_match(text).unwrap_or_else(|message| {
            ctx.error(&join(p, "host"), message);
            None
        }),
    };
    let given: Vec<&str> = [("path", &raw.path), ("prefix", &raw.prefix), ("regex", &raw.regex)]
        .into_iter()
        .filter_map(|(key, value)| value.is_some().then_some(key))
        .collect();
    for extra in given.iter().skip(1) {
        ctx.key_error(
            &join(p, extra),
            format!("use one of `path` (exact), `prefix` or `regex`, not `{}` too", given[0]),
        );
    }
    let path = match (&raw.path, &raw.prefix, &raw.regex) {
        (Some(exact), _, _) => PathMatch::Exact(ctx.url_path(&join(p, "path"), exact)),
        (None, Some(prefix), _) => PathMatch::Prefix(ctx.url_path(&join(p, "prefix"), prefix)),
        (None, None, Some(source)) => match PathRegex::new(source) {
            Ok(regex) => PathMatch::Regex(regex),
            Err(why) => {
                ctx.error(&join(p, "regex"), format!("invalid regular expression {source:?}: {why}"));
                PathMatch::Any
            }
        },
        (None, None, None) => PathMatch::Any,
    };
    let mut headers = Vec::new();
    for (i, h) in raw.headers.iter().flatten().enumerate() {
        let hp = format!("{p}.headers[{i}]");
        let name = match &h.name {
            None => {
                ctx.missing(&hp, "name", "the header name to look at");
                String::new()
            }
            Some(name) if !is_token(name) => {
                ctx.error(&join(&hp, "name"), format!("invalid header name {name:?}"));
                name.clone()
            }
            Some(name) => name.clone(),
        };
        let rule = value_rule(ctx, &hp, h);
        headers.push(HeaderMatch { name: name.to_ascii_lowercase(), rule });
    }
    let mut methods: Vec<String> = Vec::new();
    if let Some(list) = &raw.methods {
        if list.is_empty() {
            ctx.error(&join(p, "methods"), "needs at least one method (or leave `methods` out for any)");
        }
        for (i, method) in list.iter().enumerate() {
            let mp = format!("{p}.methods[{i}]");
            if !is_token(method) {
                ctx.error(&mp, format!("invalid method {method:?} (a token, such as GET or POST)"));
            } else if methods.contains(method) {
                ctx.error(&mp, format!("{method:?} is listed twice"));
            } else {
                methods.push(method.clone());
            }
        }
    }
    let mut query = Vec::new();
    for (i, q) in raw.query.iter().flatten().enumerate() {
        let qp = format!("{p}.query[{i}]");
        let name = match &q.name {
            None => {
                ctx.missing(&qp, "name", "the query parameter's name");
                String::new()
            }
            Some(name) if name.is_empty() || name.contains(['&', '=', '#', ' ']) => {
                ctx.error(&join(&qp, "name"), format!("invalid query parameter name {name:?}"));
                name.clone()
            }
            Some(name) => name.clone(),
        };
        query.push(QueryMatch { name, rule: value_rule(ctx, &qp, q) });
    }
    RouteMatch { host, path, headers, methods, query }
}

/// `exact: VALUE` or `present: true|false` of a header or query condition.
fn value_rule(ctx: &mut Ctx<'_>, hp: &str, h: &raw::Header) -> HeaderRule {
    match (&h.exact, &h.present) {
        (Some(value), present) => {
            if present.is_some() {
                ctx.key_error(&join(hp, "present"), "use either `exact` or `present`, not both");
            }
            HeaderRule::Exact(value.clone())
        }
        (None, Some(text)) => match parse_bool(text) {
            Some(true) => HeaderRule::Present,
            Some(false) => HeaderRule::Absent,
            None => {
                ctx.error(&join(hp, "present"), format!("invalid value {text:?} (use true or false)"));
                HeaderRule::Present
            }
        },
        (None, None) => {
            ctx.error(hp, "give `exact: VALUE`, or `present: true` (or false, for absent)");
            HeaderRule::Present
        }
    }
}

fn weighted(ctx: &mut Ctx<'_>, p: &str, list: &[raw::WeightedCluster], clusters: &[&str]) -> Target {
    if list.is_empty() {
        ctx.error(p, "needs at least one cluster");
    }
    let mut out: Vec<WeightedCluster> = Vec::new();
    let mut total: u64 = 0;
    for (i, w) in list.iter().enumerate() {
        let wp = format!("{p}[{i}]");
        let name = ctx.name(&wp, "cluster", &w.cluster, "the cluster's name");
        if !name.is_empty() {
            cluster_ref(ctx, &join(&wp, "cluster"), &name, clusters);
            if out.iter().any(|o| o.cluster == name) {
                ctx.error(&join(&wp, "cluster"), format!("cluster {name:?} is listed twice"));
            }
        }
        let weight = match &w.weight {
            None => {
                ctx.missing(&wp, "weight", "a number above 0");
                1
            }
            Some(text) => match parse_number(text).and_then(|n| u32::try_from(n).ok()) {
                Some(0) => {
                    ctx.error(&join(&wp, "weight"), "must be greater than 0");
                    1
                }
                Some(n) => n,
                None => {
                    ctx.error(&join(&wp, "weight"), format!("invalid weight {text:?} (use a whole number above 0)"));
                    1
                }
            },
        };
        total += u64::from(weight);
        out.push(WeightedCluster { cluster: name, weight });
    }
    if total > u64::from(u32::MAX) {
        ctx.error(p, format!("weights add up to {total}, more than {}", u32::MAX));
    }
    Target::Weighted(out)
}

fn direct_response(ctx: &mut Ctx<'_>, p: &str, raw: &raw::DirectResponse) -> DirectResponse {
    let status = match &raw.status {
        None => {
            ctx.missing(p, "status", "the status code to answer with, e.g. 200");
            200
        }
        Some(text) => ctx.status(&join(p, "status"), text, 200),
    };
    DirectResponse { status, body: raw.body.clone() }
}

fn redirect(ctx: &mut Ctx<'_>, p: &str, raw: &raw::Redirect, matcher: &RouteMatch) -> Redirect {
    let path = match (&raw.path, &raw.prefix_rewrite) {
        (None, None) => RedirectPath::Keep,
        (Some(path), prefix) => {
            if prefix.is_some() {
                ctx.key_error(&join(p, "prefix_rewrite"), "use either `path` or `prefix_rewrite`, not both");
            }
            RedirectPath::Replace(ctx.url_path(&join(p, "path"), path))
        }
        (None, Some(prefix)) => {
            let pp = join(p, "prefix_rewrite");
            needs_path_match(ctx, &pp, matcher);
            RedirectPath::PrefixRewrite(ctx.url_path(&pp, prefix))
        }
    };
    let host = raw.host.as_ref().map(|h| ctx.authority(&join(p, "host"), h));
    // `None`: absent; `Some(None)`: unreadable (reported).
    let https = raw.https.as_ref().map(|text| ctx.boolean(&join(p, "https"), text));
    if path == RedirectPath::Keep && host.is_none() {
        let same = "would redirect to the same URL";
        match https {
            None => ctx.error(p, format!("{same}: give `path`, `prefix_rewrite`, `host` or `https: true`")),
            Some(Some(false)) => ctx.error(&join(p, "https"), format!("{same}: `https: false` changes nothing")),
            Some(_) => {}
        }
    }
    let https = https.flatten().unwrap_or(false);
    let status = ctx.choice(
        &join(p, "status"),
        &raw.status,
        DEFAULT_REDIRECT_STATUS,
        &[("301", 301), ("302", 302), ("303", 303), ("307", 307), ("308", 308)],
    );
    Redirect { path, host, https, status }
}

fn retries(ctx: &mut Ctx<'_>, p: &str, raw: &raw::Retries) -> RetryPolicy {
    let attempts = ctx.number(&join(p, "attempts"), &raw.attempts, DEFAULT_RETRY_ATTEMPTS.into(), 0, u32::MAX.into());
    let mut on = Vec::new();
    match &raw.on {
        None => on.extend(DEFAULT_RETRY_ON),
        Some(list) if list.is_empty() => {
            ctx.error(&join(p, "on"), "needs at least one condition (or leave `on` out for the default)");
        }
        Some(list) => {
            for (i, text) in list.iter().enumerate() {
                let ip = format!("{p}.on[{i}]");
                match parse_retry_on(text) {
                    Some(cond) if on.contains(&cond) => ctx.error(&ip, format!("{text:?} is listed twice")),
                    Some(cond) => on.push(cond),
                    None => ctx.error(
                        &ip,
                        format!(
                            "invalid retry condition {text:?} (use connect-failure, refused-stream, reset, \
                             5xx, gateway-error or a status code from 100 to 599)"
                        ),
                    ),
                }
            }
        }
    }
    let per_try_timeout = ctx.timeout(&join(p, "per_try_timeout"), &raw.per_try_timeout, None);
    let backoff = match &raw.backoff {
        None => DEFAULT_BACKOFF,
        Some(b) => {
            let bp = join(p, "backoff");
            let base = match ctx.timeout(&join(&bp, "base"), &b.base, Some(DEFAULT_BACKOFF.base)) {
                Some(base) => base,
                None => {
                    ctx.error(&join(&bp, "base"), "must be more than 0");
                    DEFAULT_BACKOFF.base
                }
            };
            let max = ctx.timeout(&join(&bp, "max"), &b.max, Some(base * 10)).unwrap_or(base * 10);
            if max < base {
                ctx.error(&join(&bp, "max"), format!("must be at least base ({})", duration::format(base)));
            }
            Backoff { base, max: max.max(base) }
        }
    };
    let hedge_on_per_try_timeout = match &raw.hedge_on_per_try_timeout {
        None => false,
        Some(text) => match parse_bool(text) {
            Some(hedge) => hedge,
            None => {
                let message = format!("invalid value {text:?} (use true or false)");
                ctx.error(&join(p, "hedge_on_per_try_timeout"), message);
                false
            }
        },
    };
    if hedge_on_per_try_timeout && per_try_timeout.is_none() {
        let message = "needs a per_try_timeout (a try past it is when the next one starts)";
        ctx.key_error(&join(p, "hedge_on_per_try_timeout"), message);
    }
    RetryPolicy {
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        on,
        per_try_timeout,
        backoff,
        hedge_on_per_try_timeout,
    }
}

fn cluster(ctx: &mut Ctx<'_>, p: &str, raw: &raw::Cluster) -> Cluster {
    let name = ctx.name(p, "name", &raw.name, "every cluster needs a unique name");
    let mut endpoints: Vec<Endpoint> = Vec::new();
    match &raw.endpoints {
        None => ctx.missing(p, "endpoints", "a list of HOST:PORT"),
        Some(list) if list.is_empty() => ctx.error(&join(p, "endpoints"), "needs at least one endpoint"),
        Some(list) => {
            for (i, item) in list.iter().enumerate() {
                let ep = format!("{p}.endpoints[{i}]");
                if let Some(endpoint) = endpoint(ctx, &ep, item, &endpoints) {
                    endpoints.push(endpoint);
                }
            }
        }
    }
    const LB: [(&str, LbPolicy); 4] = [
        ("round_robin", LbPolicy::RoundRobin),
        ("least_request", LbPolicy::LeastRequest),
        ("random", LbPolicy::Random),
        ("ring_hash", LbPolicy::RingHash),
    ];
    let lb = ctx.choice(&join(p, "lb"), &raw.lb, LbPolicy::RoundRobin, &LB);
    let lb_name = raw.lb.as_deref().unwrap_or("round_robin");
    // An `lb` that is not a policy is reported already: say nothing of how
    // hash_on fits it.
    let lb_known = LB.iter().any(|(name, _)| *name == lb_name);
    let hash_on = match (&raw.hash_on, lb) {
        (None, LbPolicy::RingHash) => {
            ctx.error(&join(p, "lb"), "ring_hash needs hash_on (a header or source_ip)");
            None
        }
        (None, _) => None,
        (Some(h), LbPolicy::RingHash) => hash_on(ctx, &join(p, "hash_on"), h),
        (Some(_), _) => {
            if lb_known {
                ctx.key_error(
                    &join(p, "hash_on"),
                    format!("only applies to lb: ring_hash (this cluster's lb is {lb_name})"),
                );
            }
            None
        }
    };
    let connect_timeout =
        ctx.positive_duration(&join(p, "connect_timeout"), &raw.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
    let protocol = ctx.choice(
        &join(p, "protocol"),
        &raw.protocol,
        UpstreamProtocol::Http1,
        &[("http1", UpstreamProtocol::Http1), ("http2", UpstreamProtocol::Http2)],
    );
    let idle_timeout = ctx.timeout(&join(p, "idle_timeout"), &raw.idle_timeout, Some(DEFAULT_IDLE_TIMEOUT));
    let dns_refresh = ctx.zero_is_none(
        &join(p, "dns_refresh"),
        &raw.dns_refresh,
        Some(DEFAULT_DNS_REFRESH),
        "0 means never re-resolve",
    );
    // Circuit breakers: absent means no limit.
    let limit = |ctx: &mut Ctx<'_>, field: &str, value: &raw::Text| {
        value.as_ref().map(|_| ctx.count(&join(p, field), value, 1))
    };
    let max_connections = limit(ctx, "max_connections", &raw.max_connections);
    let max_pending_requests = limit(ctx, "max_pending_requests", &raw.max_pending_requests);
    let max_requests = limit(ctx, "max_requests", &raw.max_requests);
    let max_retries = limit(ctx, "max_retries", &raw.max_retries);
    let retry_budget = raw.retry_budget.as_ref().map(|b| {
        let bp = join(p, "retry_budget");
        let percent = ctx.number(&join(&bp, "percent"), &b.percent, 20, 1, 100);
        let min = ctx.number(&join(&bp, "min_retry_concurrency"), &b.min_retry_concurrency, 3, 0, u32::MAX.into());
        RetryBudget {
            percent: u32::try_from(percent).unwrap_or(20),
            min_retry_concurrency: u32::try_from(min).unwrap_or(u32::MAX),
        }
    });
    let health_check = raw.health_check.as_ref().map(|h| health_check(ctx, &join(p, "health_check"), h));
    let when_all_unhealthy = ctx.choice(
        &join(p, "when_all_unhealthy"),
        &raw.when_all_unhealthy,
        AllUnhealthy::Fail,
        &[("fail", AllUnhealthy::Fail), ("use_all", AllUnhealthy::UseAll)],
    );
    let outlier_detection =
        raw.outlier_detection.as_ref().map(|o| outlier_detection(ctx, &join(p, "outlier_detection"), o));
    let tls =
        raw.tls.as_ref().and_then(|t| cluster_tls(ctx, &join(p, "tls"), t, raw.protocol.is_some().then_some(protocol)));
    Cluster {
        name,
        endpoints,
        lb,
        hash_on,
        connect_timeout,
        protocol,
        idle_timeout,
        dns_refresh,
        max_connections,
        max_pending_requests,
        max_requests,
        max_retries,
        retry_budget,
        health_check,
        when_all_unhealthy,
        outlier_detection,
        tls,
    }
}

/// One item of `endpoints`: `HOST:PORT`, or `{ address: HOST:PORT, weight: N }`.
/// `None` (reported) when it is unusable or repeats one of `earlier`.
fn endpoint(ctx: &mut Ctx<'_>, ep: &str, raw: &raw::ScalarOr<raw::Endpoint>, earlier: &[Endpoint]) -> Option<Endpoint> {
    let (address, address_path, weight) = match raw {
        raw::ScalarOr::Scalar(text) => (text, ep.to_owned(), DEFAULT_ENDPOINT_WEIGHT),
        raw::ScalarOr::Map(m) => {
            let weight = ctx.number(
                &join(ep, "weight"),
                &m.weight,
                DEFAULT_ENDPOINT_WEIGHT.into(),
                1,
                MAX_ENDPOINT_WEIGHT.into(),
            );
            let Some(address) = &m.address else {
                ctx.missing(ep, "address", "HOST:PORT");
                return None;
            };
            (address, join(ep, "address"), u32::try_from(weight).unwrap_or(DEFAULT_ENDPOINT_WEIGHT))
        }
    };
    if earlier.iter().any(|e| &e.address == address) {
        ctx.error(&address_path, format!("endpoint {address:?} is listed twice"));
        return None;
    }
    match resolve_endpoint(address) {
        Ok(endpoint) => Some(Endpoint { weight, ..endpoint }),
        Err(message) => {
            ctx.error(&address_path, message);
            None
        }
    }
}

fn hash_on(ctx: &mut Ctx<'_>, p: &str, raw: &raw::ScalarOr<raw::HashOn>) -> Option<HashOn> {
    match raw {
        raw::ScalarOr::Scalar(text) if text == "source_ip" => Some(HashOn::SourceIp),
        raw::ScalarOr::Scalar(text) => {
            ctx.error(p, format!("invalid hash_on {text:?} (use source_ip, or {{ header: NAME }})"));
            None
        }
        raw::ScalarOr::Map(m) => match &m.header {
            None => {
                ctx.missing(p, "header", "the request header whose value is hashed, e.g. x-user-id");
                None
            }
            Some(name) if !is_token(name) => {
                ctx.error(&join(p, "header"), format!("invalid header name {name:?}"));
                None
            }
            Some(name) => Some(HashOn::Header(name.to_ascii_lowercase())),
        },
    }
}

fn health_check(ctx: &mut Ctx<'_>, p: &str, raw: &raw::HealthCheck) -> HealthCheck {
    let path = match &raw.path {
        None => {
            ctx.missing(p, "path", "the path to request, e.g. /health");
            String::new()
        }
        Some(text) => ctx.url_path(&join(p, "path"), text),
    };
    let host = raw.host.as_ref().map(|h| ctx.authority(&join(p, "host"), h));
    let interval = ctx.positive_duration(&join(p, "interval"), &raw.interval, DEFAULT_HC_INTERVAL);
    let timeout = ctx.positive_duration(&join(p, "timeout"), &raw.timeout, DEFAULT_HC_TIMEOUT);
    let threshold = |ctx: &mut Ctx<'_>, field: &str, value: &raw::Text, default: u32| {
        let n = ctx.number(&join(p, field), value, default.into(), 1, u32::MAX.into());
        u32::try_from(n).unwrap_or(default)
    };
    let unhealthy_threshold = threshold(ctx, "unhealthy_threshold", &raw.unhealthy_threshold, DEFAULT_HC_UNHEALTHY);
    let healthy_threshold = threshold(ctx, "healthy_threshold", &raw.healthy_threshold, DEFAULT_HC_HEALTHY);
    let sp = join(p, "expected_statuses");
    let expected_statuses = match &raw.expected_statuses {
        None => vec![DEFAULT_HC_EXPECTED_STATUSES],
        Some(list) if list.is_empty() => {
            ctx.error(&sp, "needs at least one status (or leave it out for 200-299)");
            vec![DEFAULT_HC_EXPECTED_STATUSES]
        }
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(i, text)| {
                let range = parse_status_range(text);
                if let Err(message) = &range {
                    ctx.error(&format!("{sp}[{i}]"), message.clone());
                }
                range.ok()
            })
            .collect(),
    };
    HealthCheck { path, host, interval, timeout, unhealthy_threshold, healthy_threshold, expected_statuses }
}

/// `204` → `(204, 204)`; `200-299` → `(200, 299)`; codes 100–599.
fn parse_status_range(text: &str) -> Result<(u16, u16), String> {
    let code = |t: &str| parse_number(t.trim()).and_then(|n| u16::try_from(n).ok()).filter(|n| (100..=599).contains(n));
    let parsed = match text.split_once('-') {
        None => code(text).map(|c| (c, c)),
        Some((first, last)) => code(first).zip(code(last)),
    };
    match parsed {
        None => Err(format!("invalid status {text:?} (use a code from 100 to 599, or a range such as 200-299)")),
        Some((first, last)) if first > last => {
            Err(format!("invalid status range {text:?}: {first} is above {last} (write the lower code first)"))
        }
        Some(range) => Ok(range),
    }
}

fn outlier_detection(ctx: &mut Ctx<'_>, p: &str, raw: &raw::OutlierDetection) -> OutlierDetection {
    // `0` turns a detector off.
    let detector = |ctx: &mut Ctx<'_>, field: &str, value: &raw::Text| {
        let n = ctx.number(&join(p, field), value, DEFAULT_OD_CONSECUTIVE.into(), 0, u32::MAX.into());
        u32::try_from(n).ok().filter(|&n| n > 0)
    };
    let consecutive_5xx = detector(ctx, "consecutive_5xx", &raw.consecutive_5xx);
    let consecutive_connect_failures = detector(ctx, "consecutive_connect_failures", &raw.consecutive_connect_failures);
    let base_ejection_time =
        ctx.positive_duration(&join(p, "base_ejection_time"), &raw.base_ejection_time, DEFAULT_OD_BASE_EJECTION_TIME);
    let max_path = join(p, "max_ejection_time");
    let max_ejection_time = match &raw.max_ejection_time {
        // Like Envoy: the cap never undercuts a longer base.
        None => DEFAULT_OD_MAX_EJECTION_TIME.max(base_ejection_time),
        Some(text) => {
            let max = ctx.positive_duration(&max_path, &raw.max_ejection_time, DEFAULT_OD_MAX_EJECTION_TIME);
            let readable = duration::parse(text).is_ok_and(|d| !d.is_zero());
            if readable && max < base_ejection_time {
                ctx.error(
                    &max_path,
                    format!("must be at least base_ejection_time ({})", duration::format(base_ejection_time)),
                );
            }
            max.max(base_ejection_time)
        }
    };
    let percent = ctx.number(
        &join(p, "max_ejection_percent"),
        &raw.max_ejection_percent,
        DEFAULT_OD_MAX_EJECTION_PERCENT.into(),
        0,
        100,
    );
    OutlierDetection {
        consecutive_5xx,
        consecutive_connect_failures,
        base_ejection_time,
        max_ejection_time,
        max_ejection_percent: u32::try_from(percent).unwrap_or(DEFAULT_OD_MAX_EJECTION_PERCENT),
    }
}

fn overload(ctx: &mut Ctx<'_>, raw: &raw::Overload) -> Overload {
    let mut thresholds = |field: &str, raw: &Option<raw::Thresholds>, sizes: bool| {
        let Some(raw) = raw else { return Thresholds::default() };
        let p = format!("overload.{field}");
        let mut value = |key: &str, text: &raw::Text| {
            let text = text.as_ref()?;
            let parsed = if sizes { parse_size(text) } else { parse_number(text) };
            match parsed {
                Some(n) if n > 0 => Some(n),
                _ => {
                    let hint = if sizes { "a size such as 512MiB or 2GiB" } else { "a whole number above 0" };
                    ctx.error(&format!("{p}.{key}"), format!("invalid value {text:?} (use {hint})"));
                    None
                }
            }
        };
        let (shed, refuse) = (value("shed", &raw.shed), value("refuse", &raw.refuse));
        if let (Some(shed), Some(refuse)) = (shed, refuse)
            && refuse < shed
        {
            ctx.error(&format!("{p}.refuse"), "must be at least `shed` (refusing connections comes after shedding)");
        }
        Thresholds { shed, refuse }
    };
    let downstream_connections = thresholds("downstream_connections", &raw.downstream_connections, false);
    let memory = thresholds("memory", &raw.memory, true);
    Overload { downstream_connections, memory }
}

/// A size in bytes: a whole number, optionally with `KiB`, `MiB`, `GiB`
/// (powers of 1024) or `KB`, `MB`, `GB` (powers of 1000).
fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let scale: u64 = match unit.trim() {
        "" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    number.parse::<u64>().ok()?.checked_mul(scale)
}

// ---- TLS (issue 13) ----

/// The default time allowed for a client's TLS handshake.
pub(crate) const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A listener's `tls`; `None` when something in it is unusable (reported).
/// `protocol`: the listener's, when written (it sets the default ALPN).
fn listener_tls(
    ctx: &mut Ctx<'_>,
    p: &str,
    raw: &raw::ListenerTls,
    protocol: Option<ListenerProtocol>,
) -> Option<ListenerTls> {
    let now = nuncio_tls::now();
    let mut certificates = Vec::new();
    let mut usable = true;
    match &raw.certificates {
        None => {
            ctx.missing(p, "certificates", "a list of { cert_chain: FILE, private_key: FILE }");
            usable = false;
        }
        Some(list) if list.is_empty() => {
            ctx.error(&join(p, "certificates"), "needs at least one certificate");
            usable = false;
        }
        Some(list) => {
            for (i, pair) in list.iter().enumerate() {
                match certificate(ctx, &format!("{p}.certificates[{i}]"), pair, now) {
                    Some(c) => certificates.push(c),
                    None => usable = false,
                }
            }
        }
    }
    let (h2, h1) = match protocol {
        Some(ListenerProtocol::Http1) => (false, true),
        Some(ListenerProtocol::Http2) => (true, false),
        Some(ListenerProtocol::Auto) | None => (true, true),
    };
    let alpn = alpn(ctx, &join(p, "alpn"), raw.alpn.as_deref(), h2, h1, "protocol");
    let min_version = ctx.choice(
        &join(p, "min_version"),
        &raw.min_version,
        TlsMinVersion::Tls12,
        &[("1.2", TlsMinVersion::Tls12), ("1.3", TlsMinVersion::Tls13)],
    );
    let client_ca = match &raw.client_ca {
        None => None,
        Some(path) => {
            let ca = ca_file(ctx, &join(p, "client_ca"), path);
            usable &= ca.is_some();
            ca
        }
    };
    let handshake_timeout =
        ctx.positive_duration(&join(p, "handshake_timeout"), &raw.handshake_timeout, DEFAULT_TLS_HANDSHAKE_TIMEOUT);
    usable.then_some(ListenerTls { certificates, alpn, min_version, client_ca, handshake_timeout })
}

/// A cluster's `tls`; `None` when something in it is unusable (reported).
fn cluster_tls(
    ctx: &mut Ctx<'_>,
    p: &str,
    raw: &raw::ClusterTls,
    protocol: Option<UpstreamProtocol>,
) -> Option<ClusterTls> {
    let mut usable = true;
    let sni = raw.sni.as_ref().map(|text| {
        let ip = text.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>().is_ok();
        if !ip && !is_hostname(text) {
            ctx.error(&join(p, "sni"), format!("invalid sni {text:?} (use a DNS name such as api.internal)"));
        }
        text.to_ascii_lowercase()
    });
    let ca = match &raw.ca {
        None => None,
        Some(path) => {
            let ca = ca_file(ctx, &join(p, "ca"), path);
            usable &= ca.is_some();
            ca
        }
    };
    let verify = raw.verify.as_ref().and_then(|text| ctx.boolean(&join(p, "verify"), text)).unwrap_or(true);
    if !verify && ca.is_some() {
        ctx.key_error(&join(p, "ca"), "has no use with `verify: false` (nothing is verified)");
    }
    let client_certificate = match &raw.client_certificate {
        None => None,
        Some(pair) => {
            let c = certificate(ctx, &join(p, "client_certificate"), pair, nuncio_tls::now());
            usable &= c.is_some();
            c
        }
    };
    let (h2, h1) = match protocol {
        Some(UpstreamProtocol::Http2) => (true, false),
        Some(UpstreamProtocol::Http1) | None => (false, true),
    };
    let protocol_written = protocol.is_some();
    let alpn = match (&raw.alpn, protocol_written) {
        // Without `protocol`, an ALPN list may offer both: the endpoint picks.
        (Some(list), false) => alpn(ctx, &join(p, "alpn"), Some(list), true, true, "protocol"),
        (list, _) => alpn(ctx, &join(p, "alpn"), list.as_deref(), h2, h1, "protocol"),
    };
    usable.then_some(ClusterTls { sni, ca, verify, client_certificate, alpn })
}

/// An ALPN list of `h2` and `http/1.1` (the ones allowed by `h2`, `h1`);
/// absent: the allowed ones, h2 first.
fn alpn(ctx: &mut Ctx<'_>, p: &str, raw: Option<&[String]>, h2: bool, h1: bool, other: &str) -> Vec<String> {
    let default = || {
        let mut ids = Vec::new();
        if h2 {
            ids.push("h2".to_owned());
        }
        if h1 {
            ids.push("http/1.1".to_owned());
        }
        ids
    };
    let Some(list) = raw else { return default() };
    if list.is_empty() {
        ctx.error(p, "needs at least one protocol (h2, http/1.1), or leave it out");
        return default();
    }
    let mut out: Vec<String> = Vec::new();
    for (i, id) in list.iter().enumerate() {
        let ip = format!("{p}[{i}]");
        let allowed = match id.as_str() {
            "h2" => h2,
            "http/1.1" => h1,
            _ => {
                ctx.error(&ip, format!("unknown ALPN protocol {id:?} (use h2 or http/1.1)"));
                continue;
            }
        };
        if out.contains(id) {
            ctx.error(&ip, format!("{id:?} is listed twice"));
        } else if !allowed {
            let written = if id == "h2" { "http1" } else { "http2" };
            ctx.error(&ip, format!("{id} contradicts `{other}: {written}` (leave one of them out)"));
        } else {
            out.push(id.clone());
        }
    }
    if out.is_empty() { default() } else { out }
}

/// A `{ cert_chain, private_key }` pair, read and checked.
fn certificate(ctx: &mut Ctx<'_>, p: &str, raw: &raw::CertificatePair, now: i64) -> Option<TlsCertificate> {
    let chain = raw.cert_chain.as_ref();
    let key = raw.private_key.as_ref();
    if chain.is_none() {
        ctx.missing(p, "cert_chain", "the PEM certificate chain file, leaf first");
    }
    if key.is_none() {
        ctx.missing(p, "private_key", "the PEM private key file");
    }
    let (chain, key) = (PathBuf::from(chain?), PathBuf::from(key?));
    match nuncio_tls::Certificate::load(&chain, &key, now) {
        Ok(loaded) => Some(TlsCertificate { cert_chain: chain, private_key: key, loaded }),
        Err((which, e)) => {
            let field = match which {
                nuncio_tls::Which::Chain => "cert_chain",
                nuncio_tls::Which::Key => "private_key",
            };
            ctx.error(&join(p, field), e.to_string());
            None
        }
    }
}

/// A CA file, read and checked.
fn ca_file(ctx: &mut Ctx<'_>, p: &str, path: &str) -> Option<TlsCa> {
    let path = PathBuf::from(path);
    match nuncio_tls::CaBundle::load(&path) {
        Ok(loaded) => Some(TlsCa { path, loaded }),
        Err(e) => {
            ctx.error(p, e.to_string());
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities() {
        for ok in ["example.com", "example.com:8080", "[::1]", "[::1]:80", "10.0.0.1:9"] {
            assert!(check_authority(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "x:0", "x:99999", "[zz]", "http://x", "a/b", "x:"] {
            assert!(check_authority(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn host_matches() {
        assert_eq!(parse_host_match("API.Example.com"), Ok(Some(HostMatch::Exact("api.example.com".into()))));
        assert_eq!(parse_host_match("*.example.com"), Ok(Some(HostMatch::Wildcard("example.com".into()))));
        assert_eq!(parse_host_match("*"), Ok(None));
        assert!(parse_host_match("api.example.com:80").is_err());
        assert!(parse_host_match("a.*.com").is_err());
    }

    #[test]
    fn retry_conditions() {
        assert_eq!(parse_retry_on("503"), Some(RetryOn::Status(503)));
        assert_eq!(parse_retry_on("5xx"), Some(RetryOn::Status5xx));
        assert_eq!(parse_retry_on("99"), None);
        assert_eq!(parse_retry_on("600"), None);
    }
}
