//! `ext_authz`: asks an HTTP authorization service (a cluster of the
//! config) about every request before it goes upstream — Envoy's HTTP
//! `ext_authz`, and the reference for filters that await I/O **on the
//! worker**.
//!
//! ```yaml
//! filters:
//!   - name: ext_authz
//!     config:
//!       cluster: authz                  # required: a cluster of this config
//!       path_prefix: /authz             # default "" (the path as is)
//!       timeout: 200ms                  # default 200ms
//!       headers_to_send: [ authorization, cookie ]   # default [ authorization ]
//!       headers_to_copy: [ x-user ]     # default none
//!       failure_mode_allow: false       # default false
//!       status_on_error: 403            # default 403
//! ```
//!
//! # The check
//!
//! For each request (at its head; the body is not sent) the filter sends
//! the cluster a request with the **same method**, the path
//! `path_prefix` + the original path and query, no body, and these
//! fields: `host` (the original authority), and every value of each field
//! named in `headers_to_send` that the request has. The call is bounded by
//! `timeout` and by the stream's own deadline, whichever is sooner; the
//! time left travels in the listener's `time_left_header`
//! (`x-nuncio-expected-timeout-ms` by default). A client that
//! leaves while the check is pending takes the call with it (its
//! connection is closed, or its HTTP/2 stream reset).
//!
//! # The answer
//!
//! * **2xx** — allowed: the request goes on, with each field named in
//!   `headers_to_copy` that the answer has set to the answer's values
//!   (replacing the client's).
//! * **any other status** — denied: the client gets the service's status,
//!   body and fields (less hop-by-hop and framing fields). A `302` with a
//!   `location` to a login page works as such.
//! * **no answer** (service down, no healthy endpoint, breaker open,
//!   timeout, an invalid or over-64-KiB answer) — with
//!   `failure_mode_allow: false` the client gets `status_on_error` and a
//!   line saying what failed; with `true` the request goes on, carrying
//!   `x-nuncio-ext-authz-failure-mode-allowed: true` (Envoy's
//!   `x-envoy-auth-failure-mode-allowed`) so the upstream can tell an
//!   unchecked request. The filter removes that field from every incoming
//!   request, so a client cannot claim it.
//!
//! # Counted
//!
//! Every request checked counts in one of
//! `nuncio_filter_ext_authz_allowed_total`, `_denied_total`,
//! `_failed_open_total` (no decision, let through) and
//! `_failed_closed_total` (no decision, refused), each with labels
//! `listener` and `filter` (`ext_authz`). The calls themselves count in the
//! service's cluster stats (`nuncio_upstream_*{cluster="authz"}`).
//!
//! # Checked at load
//!
//! `cluster` must name a cluster of the config (at its line and field);
//! `path_prefix` is empty or a path (`/...`, no query); field names are
//! tokens and not framing or hop-by-hop fields; `timeout` > 0;
//! `status_on_error` 200–599.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use nuncio_filter::{
    CallOptions, ClusterRef, ConfigError, CounterSet, CounterSpec, Filter, FilterCounter, FilterFactory, FilterKind,
    Hook, LocalReply, RequestHead, Status, StreamCx, parse_config,
};
use serde::Deserialize;

use crate::duration;
use crate::template::Name;

/// The longest answer read from the service: a decision and, for a
/// denial, a short page.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// The field an unchecked request carries upstream when
/// `failure_mode_allow` let it through.
pub const FAILURE_MODE_ALLOWED: HeaderName = HeaderName::from_static("x-nuncio-ext-authz-failure-mode-allowed");

/// The `ext_authz` filter kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExtAuthzKind;

impl FilterKind for ExtAuthzKind {
    fn name(&self) -> &'static str {
        "ext_authz"
    }

    fn configure(&self, config: serde_json::Value) -> Result<Arc<dyn FilterFactory>, ConfigError> {
        let config: Config = parse_config(config)?;
        if config.cluster.is_empty() || config.cluster.chars().any(char::is_whitespace) {
            return Err(ConfigError::at("cluster", "must be a cluster's name"));
        }
        let path_prefix =
            path_prefix(&config.path_prefix).map_err(|message| ConfigError::at("path_prefix", message))?;
        let status_on_error = StatusCode::from_u16(config.status_on_error)
            .ok()
            .filter(|s| (200..=599).contains(&s.as_u16()))
            .ok_or_else(|| ConfigError::at("status_on_error", "must be a status from 200 to 599"))?;
        let mut counters = CounterSet::new();
        let counted = Counted {
            allowed: counters.declare("allowed_total", "Requests the authorization service allowed (2xx).")?,
            denied: counters
                .declare("denied_total", "Requests the authorization service denied (any other status).")?,
            failed_open: counters.declare(
                "failed_open_total",
                "Requests the service gave no decision on, let through (failure_mode_allow).",
            )?,
            failed_closed: counters.declare(
                "failed_closed_total",
                "Requests the service gave no decision on, refused with status_on_error.",
            )?,
        };
        let settings = Settings {
            cluster: config.cluster,
            path_prefix,
            timeout: config.timeout,
            headers_to_send: config.headers_to_send.into_iter().map(|n| n.0).collect(),
            headers_to_copy: config.headers_to_copy.into_iter().map(|n| n.0).collect(),
            failure_mode_allow: config.failure_mode_allow,
            status_on_error,
            counted,
        };
        Ok(Arc::new(ExtAuthzFactory { settings: Arc::new(settings), counters }))
    }
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a map with `cluster`, and optionally `path_prefix`, `timeout`, `headers_to_send`, \
                 `headers_to_copy`, `failure_mode_allow`, `status_on_error`"
)]
struct Config {
    cluster: String,
    #[serde(default)]
    path_prefix: String,
    #[serde(default = "default_timeout", deserialize_with = "duration::positive")]
    timeout: Duration,
    #[serde(default = "default_headers_to_send")]
    headers_to_send: Vec<Name>,
    #[serde(default)]
    headers_to_copy: Vec<Name>,
    #[serde(default)]
    failure_mode_allow: bool,
    #[serde(default = "default_status_on_error")]
    status_on_error: u16,
}

/// Envoy's default for an HTTP authorization service.
fn default_timeout() -> Duration {
    Duration::from_millis(200)
}

/// The credentials a service needs to decide (Envoy sends `authorization`
/// by default too; method, path and host always go).
fn default_headers_to_send() -> Vec<Name> {
    vec![Name(header::AUTHORIZATION)]
}

fn default_status_on_error() -> u16 {
    403
}

/// `""`, or a path without query or fragment (`/authz`); a trailing `/` is
/// dropped, since the original path brings its own.
fn path_prefix(text: &str) -> Result<String, String> {
    if text.is_empty() {
        return Ok(String::new());
    }
    let valid = text.starts_with('/')
        && !text.contains(['?', '#'])
        && text.parse::<PathAndQuery>().is_ok_and(|p| p.as_str() == text);
    if !valid {
        return Err(format!("{text:?} is not a path (it must start with `/`, without `?` or `#`)"));
    }
    Ok(text.trim_end_matches('/').to_owned())
}

/// A configured filter, read by its streams (each worker has its copy:
/// [`FilterFactory::for_worker`]).
#[derive(Debug, Clone)]
struct Settings {
    cluster: String,
    path_prefix: String,
    timeout: Duration,
    headers_to_send: Box<[HeaderName]>,
    headers_to_copy: Box<[HeaderName]>,
    failure_mode_allow: bool,
    status_on_error: StatusCode,
    counted: Counted,
}

/// The filter's counters (`nuncio_filter_ext_authz_*_total`): every
/// request checked counts in exactly one.
#[derive(Debug, Clone, Copy)]
struct Counted {
    allowed: FilterCounter,
    denied: FilterCounter,
    failed_open: FilterCounter,
    failed_closed: FilterCounter,
}

#[derive(Debug)]
struct ExtAuthzFactory {
    settings: Arc<Settings>,
    counters: CounterSet,
}

impl FilterFactory for ExtAuthzFactory {
    /// Request hooks only: the response passes unfiltered.
    fn acts_on_response(&self) -> bool {
        false
    }

    fn name(&self) -> &str {
        "ext_authz"
    }

    fn for_worker(&self) -> Option<Arc<dyn FilterFactory>> {
        let settings = Arc::new((*self.settings).clone());
        Some(Arc::new(ExtAuthzFactory { settings, counters: self.counters.clone() }))
    }

    fn create(&self) -> Box<dyn Filter> {
        Box::new(ExtAuthz { settings: self.settings.clone() })
    }

    fn clusters(&self) -> Vec<ClusterRef> {
        vec![ClusterRef::at("cluster", self.settings.cluster.clone())]
    }

    fn counters(&self) -> &[CounterSpec] {
        self.counters.specs()
    }
}

/// One stream's filter.
struct ExtAuthz {
    settings: Arc<Settings>,
}

impl Filter for ExtAuthz {
    fn request_headers<'a>(&'a mut self, cx: &'a mut StreamCx, head: &'a mut RequestHead, _eos: bool) -> Hook<'a> {
        let settings = &*self.settings;
        head.headers.remove(&FAILURE_MODE_ALLOWED);
        let Some(client) = cx.http_client() else {
            return settings.failed(cx, head, &"this stream has no HTTP client (it was not made by the proxy)").into();
        };
        let check = match settings.check_request(head) {
            Ok(check) => check,
            Err(e) => return settings.failed(cx, head, &format!("cannot make the check request: {e}")).into(),
        };
        let options = CallOptions { timeout: Some(settings.timeout), max_response_bytes: MAX_RESPONSE_BYTES };
        let call = client.call(&settings.cluster, check, cx.context(), options);
        Hook::pending(async move {
            match call.await {
                Ok(answer) if answer.status().is_success() => {
                    cx.inc(settings.counted.allowed);
                    settings.copy_headers(answer.headers(), &mut head.headers);
                    Status::Continue
                }
                Ok(answer) => {
                    cx.inc(settings.counted.denied);
                    Status::LocalReply(denied(answer))
                }
                Err(error) => settings.failed(cx, head, &error),
            }
        })
    }
}

impl Settings {
    /// The request the service is asked.
    fn check_request(&self, head: &RequestHead) -> Result<http::Request<Bytes>, http::Error> {
        let path = head.uri.path_and_query().map_or("/", PathAndQuery::as_str);
        let mut check = http::Request::builder().method(head.method.clone()).uri(format!("{}{path}", self.path_prefix));
        let host = match &head.authority {
            Some(authority) => HeaderValue::from_str(authority.as_str()).ok(),
            None => head.headers.get(header::HOST).cloned(),
        };
        if let Some(host) = host {
            check = check.header(header::HOST, host);
        }
        for name in &self.headers_to_send {
            for value in head.headers.get_all(name) {
                check = check.header(name, value);
            }
        }
        check.body(Bytes::new())
    }

    /// An allowing answer's `headers_to_copy` onto the upstream request.
    fn copy_headers(&self, answer: &HeaderMap, request: &mut HeaderMap) {
        for name in &self.headers_to_copy {
            let mut values = answer.get_all(name).iter();
            let Some(first) = values.next() else { continue };
            request.insert(name.clone(), first.clone());
            for value in values {
                request.append(name.clone(), value.clone());
            }
        }
    }

    /// No decision: let the request through (marked) or refuse it, as
    /// configured; counted either way.
    fn failed(&self, cx: &StreamCx, head: &mut RequestHead, reason: &dyn std::fmt::Display) -> Status {
        if self.failure_mode_allow {
            cx.inc(self.counted.failed_open);
            tracing::debug!(cluster = %self.cluster, %reason, "ext_authz: no decision, request allowed (failure_mode_allow)");
            head.headers.insert(FAILURE_MODE_ALLOWED, HeaderValue::from_static("true"));
            return Status::Continue;
        }
        cx.inc(self.counted.failed_closed);
        tracing::debug!(cluster = %self.cluster, %reason, "ext_authz: no decision, request refused");
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        let body = format!("nuncio: ext_authz: no decision: {reason}\n");
        Status::LocalReply(LocalReply { status: self.status_on_error, headers, body: body.into() })
    }
}

/// A denial, passed to the client as the service gave it (the HTTP client
/// already dropped hop-by-hop fields; the reply sets its own length).
fn denied(answer: http::Response<Bytes>) -> LocalReply {
    let (parts, body) = answer.into_parts();
    let mut headers = parts.headers;
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::TRANSFER_ENCODING);
    LocalReply { status: parts.status, headers, body }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn error(config: serde_json::Value) -> ConfigError {
        ExtAuthzKind.configure(config).err().expect("refused")
    }

    #[test]
    fn defaults_follow_envoy() {
        let factory = ExtAuthzKind.configure(json!({ "cluster": "authz" })).unwrap();
        assert_eq!(factory.clusters(), [ClusterRef::at("cluster", "authz")]);
        let config: Config = parse_config(json!({ "cluster": "authz" })).unwrap();
        assert_eq!(config.timeout, Duration::from_millis(200));
        assert_eq!(config.status_on_error, 403);
        assert!(!config.failure_mode_allow);
        assert_eq!(config.headers_to_send.iter().map(|n| n.0.as_str()).collect::<Vec<_>>(), ["authorization"]);
        assert!(config.headers_to_copy.is_empty());
        assert_eq!(config.path_prefix, "");
    }

    #[test]
    fn every_outcome_has_a_counter() {
        let factory = ExtAuthzKind.configure(json!({ "cluster": "authz" })).unwrap();
        let names: Vec<&str> = factory.counters().iter().map(CounterSpec::name).collect();
        assert_eq!(names, ["allowed_total", "denied_total", "failed_open_total", "failed_closed_total"]);
    }

    #[test]
    fn bad_blocks_name_their_field() {
        assert_eq!(error(json!({})).message, "missing field `cluster`");
        assert_eq!(error(json!({ "cluster": "" })).path, "cluster");
        assert_eq!(error(json!({ "cluster": "a", "path_prefix": "authz" })).path, "path_prefix");
        assert_eq!(error(json!({ "cluster": "a", "path_prefix": "/a?b" })).path, "path_prefix");
        assert_eq!(error(json!({ "cluster": "a", "timeout": "0s" })).path, "timeout");
        assert_eq!(error(json!({ "cluster": "a", "status_on_error": 101 })).path, "status_on_error");
        assert_eq!(
            error(json!({ "cluster": "a", "headers_to_copy": ["ok", "content-length"] })).path,
            "headers_to_copy[1]"
        );
        assert_eq!(error(json!({ "cluster": "a", "headers_to_send": ["bad name"] })).path, "headers_to_send[0]");
        assert!(error(json!({ "cluster": "a", "timout": "1s" })).message.contains("unknown field `timout`"));
    }

    #[test]
    fn the_prefix_keeps_the_original_path_whole() {
        assert_eq!(path_prefix("/authz/").unwrap(), "/authz");
        assert_eq!(path_prefix("/").unwrap(), "");
        assert_eq!(path_prefix("").unwrap(), "");
    }
}
