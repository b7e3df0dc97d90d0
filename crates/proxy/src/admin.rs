//! The admin listener, served by main. Separate from the data plane on
//! purpose: it keeps answering (and says "not ready") while workers start,
//! and reads only what main owns or what workers publish (their stats
//! stores, summed here).
//!
//! - `GET /`: the live page to a browser (`Accept: text/html`; `live`),
//!   the list of endpoints to anyone else.
//! - `GET /stats/live.json`: what the live page polls.
//! - `GET /ready`: 200 once every worker serves, 503 before.
//! - `GET /config_dump`: the effective config as YAML (`?format=json`).
//! - `GET /clusters`: every endpoint: addresses, weight, health, ejection,
//!   requests in flight (`?format=json`).
//! - `GET /stats`: `name{labels}: value` a line (`?filter=REGEX`).
//! - `GET /stats/prometheus`: Prometheus text exposition.
//! - `GET /certs`: every certificate the running config uses (listeners'
//!   certificates and client CAs, clusters' CAs and client certificates):
//!   file, subject, SANs, expiry and days left (`?format=json`).
//! - `POST /logging?level=LEVEL`: changes the log level.
//! - `POST /config/reload`: reads the config file again and applies it;
//!   `POST /config`: applies the YAML body. Both answer once every worker
//!   serves the new version (200), or with every error (400; the running
//!   config keeps serving).
//! - `POST /drain`: stops accepting, lets open connections finish within
//!   `drain_timeout`, then stops nuncio (`/ready` says "draining").

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;

use bytes::BytesMut;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Version, header};
use nuncio_http1::{BodyFraming, Limits, RequestDecoder};
use nuncio_runtime::Slot;
use nuncio_stats::Summary;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

use crate::error::Error;
use crate::io::write_all_vectored;
use crate::reload::{ConfigManager, Reloaded};
use crate::snapshot::Local;

/// What admin handlers read, all on main.
pub(crate) struct AdminState {
    pub(crate) local: Slot<Local>,
    /// Reloads, drains, endpoint state.
    pub(crate) manager: Rc<ConfigManager>,
    /// Every stats store, summed on read.
    pub(crate) stats: Rc<crate::stats_book::StatsBook>,
    /// True once every worker serves its listeners.
    pub(crate) ready: Cell<bool>,
    /// The process's overload levels (`/ready` says `overloaded`).
    pub(crate) overload: Arc<crate::overload::Overload>,
    /// Changes the log level (`POST /logging?level=`), if the program can.
    pub(crate) set_log_level: Option<crate::options::LogLevelHook>,
    /// When the server started (the live page's uptime).
    pub(crate) started: std::time::Instant,
}

impl AdminState {
    /// Whether nuncio sheds load (or refuses connections) now.
    fn overloaded(&self) -> bool {
        self.local
            .get()
            .is_ok_and(|local| self.overload.level(&local.snapshot.config.overload) != crate::overload::Level::Normal)
    }

    pub(crate) fn summary(&self) -> Summary {
        self.stats.read()
    }
}

/// Accepts admin connections on main.
pub(crate) async fn serve(listener: TcpListener, state: Rc<AdminState>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        tokio::task::spawn_local(connection(stream, state.clone()));
    }
}

/// An admin answer.
struct Reply {
    status: StatusCode,
    content_type: &'static str,
    body: String,
}

impl Reply {
    fn text(status: StatusCode, body: impl Into<String>) -> Reply {
        Reply { status, content_type: "text/plain; charset=utf-8", body: body.into() }
    }
}

/// One request per connection: admin traffic is rare, simplicity wins.
async fn connection(mut stream: TcpStream, state: Rc<AdminState>) {
    let mut buf = BytesMut::with_capacity(4096);
    let mut decoder = RequestDecoder::new(Limits::default());
    let request = loop {
        match decoder.decode(&mut buf) {
            Ok(Some(request)) => break request,
            Ok(None) => {}
            Err(e) => return respond(&mut stream, Reply::text(e.status(), format!("bad request: {e}\n"))).await,
        }
        match tokio::time::timeout(std::time::Duration::from_secs(10), stream.read_buf(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return,
        }
    };
    let (method, path, query) = (&request.method, request.uri.path(), request.uri.query().unwrap_or(""));
    let reply = match path {
        "/config" | "/config/reload" | "/drain" if method != Method::POST => {
            Reply::text(StatusCode::METHOD_NOT_ALLOWED, format!("use POST {path}\n"))
        }
        "/config/reload" => reloaded(state.manager.reload_file().await),
        "/config" => match read_body(&mut stream, &mut buf, request.framing).await {
            Ok(body) => match std::str::from_utf8(&body) {
                Ok(text) => reloaded(state.manager.reload_text(text).await),
                Err(_) => Reply::text(StatusCode::BAD_REQUEST, "the config must be UTF-8 YAML\n"),
            },
            Err(reply) => reply,
        },
        "/drain" => {
            state.manager.shut_down();
            Reply::text(StatusCode::ACCEPTED, "draining: nuncio stops once open connections finish\n")
        }
        _ => route(&state, method, path, query, accepts_html(&request.headers)),
    };
    respond(&mut stream, reply).await;
}

/// Largest config `POST /config` takes.
const MAX_CONFIG_BYTES: u64 = 16 * 1024 * 1024;

/// A request body with a `Content-Length` (all admin needs), whatever of
/// it is already in `buf` first.
async fn read_body(stream: &mut TcpStream, buf: &mut BytesMut, framing: BodyFraming) -> Result<BytesMut, Reply> {
    let length = match framing {
        BodyFraming::Length(n) if n <= MAX_CONFIG_BYTES => n as usize,
        BodyFraming::Length(_) => {
            return Err(Reply::text(StatusCode::PAYLOAD_TOO_LARGE, "a config is at most 16 MiB\n"));
        }
        _ => return Err(Reply::text(StatusCode::LENGTH_REQUIRED, "send the config with a Content-Length\n")),
    };
    while buf.len() < length {
        match tokio::time::timeout(std::time::Duration::from_secs(10), stream.read_buf(buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return Err(Reply::text(StatusCode::REQUEST_TIMEOUT, "the config body did not arrive\n")),
        }
    }
    Ok(buf.split_to(length))
}

/// The answer to a reload: 200 with the version every worker serves, or
/// 400 with every error (the running config keeps serving).
fn reloaded(result: Result<Reloaded, Error>) -> Reply {
    match result {
        Ok(r) => Reply::text(
            StatusCode::OK,
            format!(
                "config version {} serving on every worker ({:.3} ms)\n",
                r.version,
                r.duration.as_secs_f64() * 1e3
            ),
        ),
        Err(e @ (Error::Invalid(_) | Error::NoConfigFile | Error::Draining)) => {
            Reply::text(StatusCode::BAD_REQUEST, format!("config refused, the running one keeps serving:\n{e}\n"))
        }
        Err(e) => Reply::text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("config refused, the running one keeps serving:\n{e}\n"),
        ),
    }
}

const ENDPOINTS: &str = "admin endpoints: GET / (the live page, in a browser), /ready, /config_dump[?format=json], /clusters[?format=json], /certs[?format=json], /stats[?filter=REGEX], /stats/prometheus, /stats/live.json; POST /logging?level=LEVEL, /config/reload, /config (YAML body), /drain\n";

/// Whether the client takes HTML (a browser): `text/html` in its `Accept`.
fn accepts_html(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|range| range.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("text/html")))
}

fn route(state: &AdminState, method: &Method, path: &str, query: &str, html: bool) -> Reply {
    if path == "/logging" {
        return logging(state, method, query);
    }
    let known = matches!(
        path,
        "/" | "/ready" | "/config_dump" | "/clusters" | "/stats" | "/stats/prometheus" | "/stats/live.json" | "/certs"
    );
    if known && method != Method::GET {
        return Reply::text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
    }
    let json = param(query, "format") == Some("json");
    match path {
        "/" if html => Reply {
            status: StatusCode::OK,
            content_type: "text/html; charset=utf-8",
            body: crate::live::PAGE.to_owned(),
        },
        "/" => Reply::text(StatusCode::OK, ENDPOINTS),
        "/stats/live.json" => {
            Reply { status: StatusCode::OK, content_type: "application/json", body: crate::live::json(state) }
        }
        "/ready" if state.manager.is_draining() => Reply::text(StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
        "/ready" if state.overloaded() => Reply::text(StatusCode::SERVICE_UNAVAILABLE, "overloaded\n"),
        "/ready" if state.ready.get() => Reply::text(StatusCode::OK, "ready\n"),
        "/ready" => Reply::text(StatusCode::SERVICE_UNAVAILABLE, "starting\n"),
        "/config_dump" => config_dump(state, json),
        "/clusters" => clusters(state, json),
        "/certs" => certs(state, json),
        "/stats" => {
            let filter = match param(query, "filter").map(|f| regex::Regex::new(&percent_decode(f))) {
                None => None,
                Some(Ok(re)) => Some(re),
                Some(Err(e)) => return Reply::text(StatusCode::BAD_REQUEST, format!("bad filter: {e}\n")),
            };
            Reply::text(StatusCode::OK, state.summary().text(filter.as_ref()))
        }
        "/stats/prometheus" => Reply {
            status: StatusCode::OK,
            content_type: nuncio_stats::PROMETHEUS_CONTENT_TYPE,
            body: state.summary().prometheus(),
        },
        _ => Reply::text(StatusCode::NOT_FOUND, ENDPOINTS),
    }
}

/// `POST /logging?level=debug`: changes state, so POST only (a link
/// followed by a crawler or a browser prefetch must not do it).
fn logging(state: &AdminState, method: &Method, query: &str) -> Reply {
    if method != Method::POST {
        return Reply::text(StatusCode::METHOD_NOT_ALLOWED, "use POST /logging?level=LEVEL\n");
    }
    let Some(level) = param(query, "level") else {
        return Reply::text(StatusCode::BAD_REQUEST, "say which: POST /logging?level=trace|debug|info|warn|error\n");
    };
    match &state.set_log_level {
        None => Reply::text(StatusCode::NOT_IMPLEMENTED, "this program cannot change its log level\n"),
        Some(set) => match set(level) {
            Ok(()) => {
                tracing::info!(level, "log level changed through admin");
                Reply::text(StatusCode::OK, format!("log level: {level}\n"))
            }
            Err(e) => Reply::text(StatusCode::BAD_REQUEST, format!("{e}\n")),
        },
    }
}

fn config_dump(state: &AdminState, json: bool) -> Reply {
    let local = match state.local.get() {
        Ok(local) => local,
        Err(e) => return Reply::text(StatusCode::SERVICE_UNAVAILABLE, format!("no config: {e}\n")),
    };
    let snapshot = &local.snapshot;
    // What each worker serves (its `config_version` gauge), and the last
    // reload every worker confirmed.
    let summary = state.summary();
    let workers: std::collections::BTreeMap<String, i64> =
        summary.worker_gauges("nuncio_config_version").into_iter().filter(|(worker, _)| worker != "main").collect();
    let applied = state.manager.applied();
    if json {
        let dump = serde_json::json!({
            "version": snapshot.version,
            "workers": workers,
            "last_reload": applied.map(|(version, took)| serde_json::json!({
                "version": version,
                "duration_ms": took.as_secs_f64() * 1e3,
            })),
            "config": &*snapshot.config,
        });
        return Reply { status: StatusCode::OK, content_type: "application/json", body: format!("{dump:#}\n") };
    }
    // The versions are comments, so the dump still reads back as a config.
    let mut dump = format!("# config version {}\n", snapshot.version);
    let each: Vec<String> = workers.iter().map(|(w, v)| format!("{w}={v}")).collect();
    dump.push_str(&format!("# workers serving: {}\n", each.join(" ")));
    if let Some((version, took)) = applied {
        dump.push_str(&format!(
            "# last reload: version {version} on every worker in {:.3} ms\n",
            took.as_secs_f64() * 1e3
        ));
    }
    dump.push_str(&snapshot.config.to_yaml());
    Reply { status: StatusCode::OK, content_type: "application/yaml", body: dump }
}

fn clusters(state: &AdminState, json: bool) -> Reply {
    let Ok(local) = state.local.get() else { return Reply::text(StatusCode::SERVICE_UNAVAILABLE, "no config\n") };
    let summary = state.summary();
    let mut rows = Vec::new();
    for cluster in &local.snapshot.config.clusters {
        let status = state.manager.hosts.endpoints(&cluster.name);
        for (i, endpoint) in cluster.endpoints.iter().enumerate() {
            let labels = [("cluster", cluster.name.as_str()), ("endpoint", endpoint.address.as_str())];
            let active = summary.gauge("nuncio_upstream_endpoint_rq_active", &labels).unwrap_or(0);
            let s = status.get(i);
            let addresses: Vec<String> =
                s.map(|s| s.addresses.iter().map(ToString::to_string).collect()).unwrap_or_default();
            rows.push(serde_json::json!({
                "cluster": cluster.name,
                "endpoint": endpoint.address,
                "addresses": addresses,
                "weight": endpoint.weight,
                "healthy": s.is_none_or(|s| s.healthy),
                "ejected": s.is_some_and(|s| s.ejected),
                "active_requests": active,
            }));
        }
    }
    if json {
        let body = format!("{:#}\n", serde_json::Value::Array(rows));
        return Reply { status: StatusCode::OK, content_type: "application/json", body };
    }
    // Envoy's style: `cluster::endpoint::field::value`, one a line.
    let mut body = String::new();
    for row in &rows {
        let (cluster, endpoint) = (row["cluster"].as_str().unwrap_or(""), row["endpoint"].as_str().unwrap_or(""));
        for field in ["addresses", "weight", "healthy", "ejected", "active_requests"] {
            let value = match &row[field] {
                serde_json::Value::Array(items) => {
                    items.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>().join(",")
                }
                other => other.to_string(),
            };
            body.push_str(&format!("{cluster}::{endpoint}::{field}::{value}\n"));
        }
    }
    Reply::text(StatusCode::OK, body)
}

/// `/certs`: every certificate in use, one row each: where it is used
/// (`listener` or `cluster` and its name), its role (`server`,
/// `client_ca`, `ca`, `client`), its file, subject, SANs, expiry and days
/// until then. Text: Envoy-like `field: value` blocks.
fn certs(state: &AdminState, json: bool) -> Reply {
    let Ok(local) = state.local.get() else { return Reply::text(StatusCode::SERVICE_UNAVAILABLE, "no config\n") };
    let now = nuncio_tls::now();
    let mut rows = Vec::new();
    let mut row = |kind: &str, name: &str, role: &str, path: &std::path::Path, info: &nuncio_tls::CertInfo| {
        rows.push(serde_json::json!({
            kind: name,
            "role": role,
            "file": path.display().to_string(),
            "subject": info.subject,
            "issuer": info.issuer,
            "sans": info.sans,
            "not_after": nuncio_tls::date(info.not_after),
            "days_until_expiry": info.days_left(now),
        }));
    };
    for listener in &local.snapshot.config.listeners {
        let Some(tls) = &listener.tls else { continue };
        for c in &tls.certificates {
            row("listener", &listener.name, "server", &c.cert_chain, &c.loaded.info);
        }
        if let Some(ca) = &tls.client_ca {
            for info in &ca.loaded.infos {
                row("listener", &listener.name, "client_ca", &ca.path, info);
            }
        }
    }
    for cluster in &local.snapshot.config.clusters {
        let Some(tls) = &cluster.tls else { continue };
        if let Some(ca) = &tls.ca {
            for info in &ca.loaded.infos {
                row("cluster", &cluster.name, "ca", &ca.path, info);
            }
        }
        if let Some(c) = &tls.client_certificate {
            row("cluster", &cluster.name, "client", &c.cert_chain, &c.loaded.info);
        }
    }
    if json {
        let body = format!("{:#}\n", serde_json::Value::Array(rows));
        return Reply { status: StatusCode::OK, content_type: "application/json", body };
    }
    let mut body = String::new();
    for row in &rows {
        let (kind, name) = match (row.get("listener"), row.get("cluster")) {
            (Some(l), _) => ("listener", l.as_str().unwrap_or("")),
            (_, c) => ("cluster", c.and_then(|c| c.as_str()).unwrap_or("")),
        };
        body.push_str(&format!("{kind}: {name}\n"));
        for field in ["role", "file", "subject", "issuer", "sans", "not_after", "days_until_expiry"] {
            let value = match &row[field] {
                serde_json::Value::Array(items) => {
                    items.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>().join(",")
                }
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            body.push_str(&format!("  {field}: {value}\n"));
        }
    }
    if rows.is_empty() {
        body.push_str("no TLS certificates in use\n");
    }
    Reply::text(StatusCode::OK, body)
}

/// The value of `name` in a query string (first occurrence, still encoded).
fn param<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| pair.split_once('=').filter(|(k, _)| *k == name).map(|(_, v)| v))
}

/// `%XX` escapes and `+` decoded, for the `filter` regex.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&text[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 3;
                    continue;
                }
                Err(_) => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn respond(stream: &mut TcpStream, reply: Reply) {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(reply.content_type));
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    let mut head = BytesMut::new();
    nuncio_http1::encode_response_head(
        reply.status,
        Version::HTTP_11,
        &headers,
        BodyFraming::Length(reply.body.len() as u64),
        &mut head,
    );
    let _ = write_all_vectored(stream, &[&head, reply.body.as_bytes()]).await;
}
