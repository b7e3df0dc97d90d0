//! `buffer`: holds the request body until it is complete, so the upstream
//! gets it whole, at once; a body over `max_bytes` gets `413`.
//!
//! ```yaml
//! filters:
//!   - name: buffer
//!     config: { max_bytes: 65536 }
//! ```
//!
//! * `max_bytes`: the largest body let through, 1 to 1048576 (1 MiB: the
//!   most the proxy keeps for a buffering filter).
//!
//! A request whose `content-length` is over `max_bytes` is answered `413
//! Payload Too Large` from its head, before anything goes upstream. A body
//! of unknown length (chunked, HTTP/2) is held with `StopAndBuffer` and
//! measured when it is complete (the proxy hands a buffering filter its
//! first piece, then the whole body): over `max_bytes`, `413`, and the
//! upstream request, which had started with the head, is abandoned. (The
//! proxy's own 1 MiB limit stops a larger body before it ends.)
//!
//! Synchronous hooks, no allocation: the proxy keeps the body.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use nuncio_filter::{
    ConfigError, Filter, FilterFactory, FilterKind, Hook, LocalReply, RequestHead, Status, StreamCx, parse_config,
};
use serde::Deserialize;

/// The most the proxy buffers for a filter (its `StopAndBuffer` limit).
const PROXY_BUFFER_LIMIT: u64 = 1024 * 1024;

/// The `buffer` filter kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct BufferKind;

impl FilterKind for BufferKind {
    fn name(&self) -> &'static str {
        "buffer"
    }

    fn configure(&self, config: serde_json::Value) -> Result<Arc<dyn FilterFactory>, ConfigError> {
        let config: Config = parse_config(config)?;
        if config.max_bytes == 0 || config.max_bytes > PROXY_BUFFER_LIMIT {
            return Err(ConfigError::at(
                "max_bytes",
                format!("must be 1 to {PROXY_BUFFER_LIMIT} (the most the proxy buffers for a filter)"),
            ));
        }
        Ok(Arc::new(BufferFactory { max_bytes: config.max_bytes }))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a map with `max_bytes`")]
struct Config {
    max_bytes: u64,
}

#[derive(Debug)]
struct BufferFactory {
    max_bytes: u64,
}

impl FilterFactory for BufferFactory {
    /// Request hooks only: the response passes unfiltered.
    fn acts_on_response(&self) -> bool {
        false
    }

    fn name(&self) -> &str {
        "buffer"
    }

    fn create(&self) -> Box<dyn Filter> {
        Box::new(Buffer { max_bytes: self.max_bytes })
    }
}

/// One stream's filter.
struct Buffer {
    max_bytes: u64,
}

impl Buffer {
    fn too_large(&self, len: u64) -> bool {
        len > self.max_bytes
    }
}

impl Filter for Buffer {
    fn request_headers<'a>(&'a mut self, _cx: &'a mut StreamCx, head: &'a mut RequestHead, _eos: bool) -> Hook<'a> {
        let declared = head.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        match declared {
            Some(len) if self.too_large(len) => Status::LocalReply(too_large()).into(),
            _ => Status::Continue.into(),
        }
    }

    fn request_body<'a>(&'a mut self, _cx: &'a mut StreamCx, body: &'a mut Bytes, end_of_stream: bool) -> Hook<'a> {
        if self.too_large(body.len() as u64) {
            Status::LocalReply(too_large()).into()
        } else if end_of_stream {
            // The whole body: let it go on, in one piece.
            Status::Continue.into()
        } else {
            Status::StopAndBuffer.into()
        }
    }
}

fn too_large() -> LocalReply {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    LocalReply {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        headers,
        body: "nuncio: request body larger than the buffer filter's max_bytes\n".into(),
    }
}

#[cfg(test)]
mod tests {
    use nuncio_filter::Context;
    use serde_json::json;

    use super::*;

    fn status(hook: Hook<'_>) -> Status {
        match hook {
            Hook::Done(status) => status,
            Hook::Pending(_) => panic!("synchronous"),
        }
    }

    #[test]
    fn buffers_until_the_end_and_refuses_too_much() {
        let mut f = BufferKind.configure(json!({ "max_bytes": 10 })).unwrap().create();
        let mut cx = StreamCx::new(Context::background(), "127.0.0.1:1".parse().unwrap());
        let mut head = RequestHead {
            method: http::Method::POST,
            uri: "/".parse().unwrap(),
            version: http::Version::HTTP_11,
            headers: HeaderMap::new(),
            authority: None,
        };
        assert!(matches!(status(f.request_headers(&mut cx, &mut head, false)), Status::Continue));
        assert!(matches!(status(f.request_body(&mut cx, &mut Bytes::from("12345"), false)), Status::StopAndBuffer));
        assert!(matches!(status(f.request_body(&mut cx, &mut Bytes::from("1234567890"), true)), Status::Continue));
        let Status::LocalReply(reply) = status(f.request_body(&mut cx, &mut Bytes::from("12345678901"), true)) else {
            panic!("413")
        };
        assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
        head.headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("11"));
        assert!(matches!(status(f.request_headers(&mut cx, &mut head, false)), Status::LocalReply(_)));
    }

    #[test]
    fn config_errors_name_the_field() {
        let e = BufferKind.configure(json!({ "max_bytes": 0 })).err().unwrap();
        assert_eq!(e.path, "max_bytes");
        let e = BufferKind.configure(json!({ "max_bytes": 2_000_000 })).err().unwrap();
        assert!(e.message.contains("must be 1 to 1048576"), "{e}");
        let e = BufferKind.configure(json!({ "max_bytes": "64k" })).err().unwrap();
        assert_eq!(e.path, "max_bytes");
        let e = BufferKind.configure(json!({ "max": 1 })).err().unwrap();
        assert!(e.message.contains("unknown field `max`"), "{e}");
    }
}
