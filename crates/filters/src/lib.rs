//! nuncio's built-in HTTP filters, written against `nuncio-filter` alone.
//!
//! # The concept
//!
//! Each filter is a [`FilterKind`]: a name the config's `filters:` list
//! uses, and `configure`, which reads the filter's `config:` block (with
//! [`parse_config`](nuncio_filter::parse_config), `deny_unknown_fields`,
//! so every error names its field: `request.set[1].value`, `interval`)
//! and checks everything that can be checked at load — field names and
//! values, templates, durations, limits — so that nothing on the request
//! path can fail on a bad config. [`builtin`] lists them:
//!
//! | name | what it does | config |
//! |---|---|---|
//! | [`headers`] | sets, adds and removes request and response fields; values may use `%DOWNSTREAM_REMOTE_ADDRESS%`, `%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%`, `%REQ(name)%` | `{ request: { set: [ {name, value} ], add: [...], remove: [name] }, response: { set, add, remove } }` |
//! | [`local_ratelimit`] | a token bucket per worker; empty → `429` with `retry-after` | `{ tokens: N, fill: N (default tokens), interval: 1s }` |
//! | [`buffer`] | holds the request body until it is complete, so the upstream gets it at once; over the limit → `413` | `{ max_bytes: N }` (≤ 1 MiB) |
//! | [`request_signature`] | adds an HMAC-SHA256 of method, authority, path and chosen fields, computed on the [extension pool](pool): the off-worker reference | `{ key: "...", header: x-signature, headers: [names] }` |
//! | [`ext_authz`] | asks an HTTP authorization service (a cluster) about each request: 2xx → on (copying chosen fields), else its answer to the client; no answer → `status_on_error`, or on when `failure_mode_allow`: the async-on-the-worker reference | `{ cluster: NAME, path_prefix: /authz, timeout: 200ms, headers_to_send: [names], headers_to_copy: [names], failure_mode_allow: false, status_on_error: 403 }` |
//!
//! # The threading rule
//!
//! A factory is made once per config on the main thread and shared by
//! every worker (`Send + Sync`, read only); each stream gets its own
//! filter instance on its worker. What a filter keeps across streams is
//! per worker and lock-free: `local_ratelimit`'s buckets live in a
//! thread-local table (so its limit applies per worker: × `workers` per
//! instance). The synchronous hooks (`headers`, `local_ratelimit`,
//! `buffer`) return [`Hook::Done`](nuncio_filter::Hook): no allocation
//! beyond the fields they write. Work that is slow leaves the worker:
//! `request_signature` stops the stream, hands its
//! [`StreamHandle`](nuncio_filter::StreamHandle) to the [extension
//! pool](pool), and the pool thread moves the request fields out, signs,
//! moves them back and resumes the stream — or finds it gone
//! (`StreamGone`) and stops. Waiting on I/O stays on the worker:
//! `ext_authz`'s hook is a future awaiting an HTTP call to a cluster
//! through the stream's [`HttpClient`](nuncio_filter::HttpClient), dropped
//! (and the call with it) if the client leaves.
//!
//! # Example
//!
//! ```
//! use std::collections::HashMap;
//!
//! use nuncio_filters::builtin;
//! use serde_json::json;
//!
//! let kinds: HashMap<&str, _> = builtin().into_iter().map(|k| (k.name(), k)).collect();
//! // What `filters: [ { name: headers, config: {...} } ]` turns into.
//! let headers = kinds["headers"]
//!     .configure(json!({
//!         "request": { "set": [ { "name": "x-client-ip", "value": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%" } ] },
//!         "response": { "remove": ["server"] },
//!     }))
//!     .unwrap();
//! assert_eq!(headers.name(), "headers");
//!
//! // A bad block names the field.
//! let error = kinds["local_ratelimit"].configure(json!({ "tokens": 10, "interval": "1.5s" })).err().unwrap();
//! assert_eq!(error.path, "interval");
//! ```
//!
//! An embedding program passes the factories per listener:
//! `nuncio_proxy::Options { filters: {"main": [headers, ...].into()} }`.

use std::sync::Arc;

use nuncio_filter::FilterKind;

pub mod buffer;
mod duration;
pub mod ext_authz;
pub mod headers;
pub mod local_ratelimit;
pub mod pool;
pub mod request_signature;
mod template;

/// Every built-in filter kind, for the config to name: `headers`,
/// `local_ratelimit`, `buffer`, `request_signature`, `ext_authz`.
pub fn builtin() -> Vec<Arc<dyn FilterKind>> {
    vec![
        Arc::new(headers::HeadersKind),
        Arc::new(local_ratelimit::LocalRateLimitKind),
        Arc::new(buffer::BufferKind),
        Arc::new(request_signature::RequestSignatureKind),
        Arc::new(ext_authz::ExtAuthzKind),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_names_are_unique_and_as_documented() {
        let names: Vec<&str> = builtin().iter().map(|k| k.name()).collect();
        assert_eq!(names, ["headers", "local_ratelimit", "buffer", "request_signature", "ext_authz"]);
    }

    #[test]
    fn an_absent_config_block_says_what_is_expected() {
        // The config hands `null` for a filter without `config:`.
        for kind in builtin() {
            let error = kind.configure(serde_json::Value::Null).err().expect("a config is required");
            assert_eq!(error.path, "", "{}", kind.name());
            assert!(error.message.contains("expected a map with `"), "{}: {error}", kind.name());
        }
    }
}
