//! `request_signature`: signs each request for the upstream with an
//! HMAC-SHA256 computed **off the worker** — the reference for filters
//! whose work leaves the worker thread.
//!
//! ```yaml
//! filters:
//!   - name: request_signature
//!     config:
//!       key: "a shared secret of 16 bytes or more"
//!       header: x-signature          # default
//!       headers: [ x-tenant, date ]  # fields signed too; default none
//! ```
//!
//! The upstream gets `header: <hex HMAC-SHA256>` over this text (UTF-8 key
//! bytes; every line ends with `\n`):
//!
//! ```text
//! METHOD
//! AUTHORITY            host[:port] as the client sent it (empty if none)
//! PATH?QUERY           as received
//! name:value           one line per `headers` entry, in config order: the
//!                      values of that field joined by `,` (empty if absent)
//! ```
//!
//! A field of that name sent by the client is replaced, so a client cannot
//! bring its own signature. `key` must be at least 16 bytes; `header` and
//! `headers` are field names (not `host`, nor a framing field); `header`
//! cannot sign itself.
//!
//! # How it works (the off-worker pattern)
//!
//! 1. The request hook copies what it needs of the head (method, URI and
//!    authority: reference-counted clones), hands a job holding those and
//!    the stream's [`StreamHandle`] to the [extension pool](crate::pool),
//!    and returns `StopIteration`: the stream waits at this filter, its
//!    worker serves other streams meanwhile.
//! 2. On a pool thread the job moves the request fields out of the stopped
//!    stream (`take_request_headers`: an ownership transfer, no copy),
//!    computes the HMAC, adds the field, moves the fields back
//!    (`put_request_headers`) and `resume`s the chain. Each call is posted
//!    to the stream's worker and applied there between hooks.
//! 3. If the client left (or the stream timed out) meanwhile, the stream
//!    is gone: every handle call answers [`Error::StreamGone`] at once, the
//!    job ends, nothing goes upstream. Any other refusal is answered `500`.
//!
//! [`RequestSignatureFactory::outcomes`] counts the three endings. A
//! stream made without a handle (by hand, in a test or a bench) is signed
//! on the spot instead.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hmac::{Hmac, KeyInit, Mac};
use http::uri::Authority;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use nuncio_filter::{
    ConfigError, Error, Filter, FilterFactory, FilterKind, Hook, LocalReply, RequestHead, Status, StreamCx,
    StreamHandle, parse_config,
};
use serde::Deserialize;
use sha2::Sha256;

use crate::pool;
use crate::template::Name;

/// The shortest key accepted.
const MIN_KEY_LEN: usize = 16;

/// The `request_signature` filter kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestSignatureKind;

impl FilterKind for RequestSignatureKind {
    fn name(&self) -> &'static str {
        "request_signature"
    }

    fn configure(&self, config: serde_json::Value) -> Result<Arc<dyn FilterFactory>, ConfigError> {
        let factory: Arc<dyn FilterFactory> = RequestSignatureFactory::from_config(config)?;
        Ok(factory)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a map with `key`, and optionally `header` and `headers`")]
struct Config {
    key: String,
    #[serde(default = "default_header")]
    header: Name,
    #[serde(default)]
    headers: Vec<Name>,
}

fn default_header() -> Name {
    Name(HeaderName::from_static("x-signature"))
}

/// What signs: the keyed HMAC state (cloned per request, so the key is
/// processed once), the field to write, the fields to sign.
struct Signer {
    mac: Hmac<Sha256>,
    header: HeaderName,
    signed: Box<[HeaderName]>,
}

impl Signer {
    /// The signature of a request, as a field value (64 hex digits).
    fn sign(&self, method: &Method, authority: Option<&Authority>, uri: &Uri, headers: &HeaderMap) -> HeaderValue {
        let mut mac = self.mac.clone();
        mac.update(method.as_str().as_bytes());
        mac.update(b"\n");
        mac.update(authority.map_or("", Authority::as_str).as_bytes());
        mac.update(b"\n");
        mac.update(uri.path_and_query().map_or("/", |pq| pq.as_str()).as_bytes());
        mac.update(b"\n");
        for name in &self.signed {
            mac.update(name.as_str().as_bytes());
            mac.update(b":");
            for (i, value) in headers.get_all(name).iter().enumerate() {
                if i > 0 {
                    mac.update(b",");
                }
                mac.update(value.as_bytes());
            }
            mac.update(b"\n");
        }
        let digest = mac.finalize().into_bytes();
        let mut hex = [0u8; 64];
        for (pair, byte) in hex.chunks_exact_mut(2).zip(digest.iter()) {
            const DIGITS: &[u8; 16] = b"0123456789abcdef";
            pair[0] = DIGITS[usize::from(byte >> 4)];
            pair[1] = DIGITS[usize::from(byte & 0xf)];
        }
        HeaderValue::from_bytes(&hex).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

/// How the streams a [`RequestSignatureFactory`] filtered ended, so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Outcomes {
    /// Signed and resumed.
    pub signed: u64,
    /// The stream was gone (client left, timeout) before the job finished:
    /// its handle calls answered `StreamGone`.
    pub gone: u64,
    /// Answered with an error (the pool unavailable, a call refused).
    pub failed: u64,
}

#[derive(Default)]
struct Counters {
    signed: AtomicU64,
    gone: AtomicU64,
    failed: AtomicU64,
}

/// What the factory's filters share (read only but for the counters).
struct Shared {
    signer: Signer,
    counters: Counters,
}

/// The `request_signature` factory, typed: [`RequestSignatureKind`] makes
/// the same from a config block; this one also tells its
/// [`outcomes`](RequestSignatureFactory::outcomes).
pub struct RequestSignatureFactory {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RequestSignatureFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestSignatureFactory")
            .field("header", &self.shared.signer.header)
            .field("signed", &self.shared.signer.signed)
            .finish_non_exhaustive()
    }
}

impl RequestSignatureFactory {
    /// Reads a `request_signature` config block (errors name the field).
    pub fn from_config(config: serde_json::Value) -> Result<Arc<RequestSignatureFactory>, ConfigError> {
        let config: Config = parse_config(config)?;
        if config.key.len() < MIN_KEY_LEN {
            return Err(ConfigError::at(
                "key",
                format!(
                    "too short: {} bytes, at least {MIN_KEY_LEN} are needed (32 random bytes are best)",
                    config.key.len()
                ),
            ));
        }
        let header = config.header.0;
        if header == header::HOST {
            return Err(ConfigError::at("header", "`host` cannot carry the signature"));
        }
        let mut signed = Vec::with_capacity(config.headers.len());
        for (i, Name(name)) in config.headers.into_iter().enumerate() {
            if name == header {
                return Err(ConfigError::at(
                    format!("headers[{i}]"),
                    format!("`{name}` carries the signature: it cannot be signed"),
                ));
            }
            signed.push(name);
        }
        let mac = Hmac::<Sha256>::new_from_slice(config.key.as_bytes())
            .map_err(|_| ConfigError::at("key", "not usable as an HMAC key"))?;
        let signer = Signer { mac, header, signed: signed.into() };
        Ok(Arc::new(RequestSignatureFactory { shared: Arc::new(Shared { signer, counters: Counters::default() }) }))
    }

    /// How the streams of this factory's filters ended so far.
    pub fn outcomes(&self) -> Outcomes {
        let c = &self.shared.counters;
        Outcomes {
            signed: c.signed.load(Ordering::Relaxed),
            gone: c.gone.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
        }
    }
}

impl FilterFactory for RequestSignatureFactory {
    /// Request hooks only: the response passes unfiltered.
    fn acts_on_response(&self) -> bool {
        false
    }

    fn name(&self) -> &str {
        "request_signature"
    }

    fn create(&self) -> Box<dyn Filter> {
        Box::new(RequestSignature { shared: self.shared.clone() })
    }
}

/// One stream's filter.
struct RequestSignature {
    shared: Arc<Shared>,
}

impl Filter for RequestSignature {
    fn request_headers<'a>(&'a mut self, cx: &'a mut StreamCx, head: &'a mut RequestHead, _eos: bool) -> Hook<'a> {
        let shared = &self.shared;
        let Some(handle) = cx.handle() else {
            let value = shared.signer.sign(&head.method, head.authority.as_ref(), &head.uri, &head.headers);
            head.headers.insert(&shared.signer.header, value);
            shared.counters.signed.fetch_add(1, Ordering::Relaxed);
            return Status::Continue.into();
        };
        let target = Target { method: head.method.clone(), authority: head.authority.clone(), uri: head.uri.clone() };
        match pool::spawn(sign_off_worker(handle, target, shared.clone())) {
            Ok(()) => Status::StopIteration.into(),
            Err(unavailable) => {
                shared.counters.failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %unavailable, "request_signature: cannot sign");
                Status::LocalReply(failure(StatusCode::SERVICE_UNAVAILABLE)).into()
            }
        }
    }
}

/// What the job signs besides the fields.
struct Target {
    method: Method,
    authority: Option<Authority>,
    uri: Uri,
}

/// The job, on a pool thread.
async fn sign_off_worker(handle: StreamHandle, target: Target, shared: Arc<Shared>) {
    let signer = &shared.signer;
    let outcome = async {
        // The fields leave the stopped stream (moved, not copied)...
        let mut headers = handle.take_request_headers().await?;
        let value = signer.sign(&target.method, target.authority.as_ref(), &target.uri, &headers);
        headers.insert(&signer.header, value);
        // ...come back signed, and the chain goes on.
        handle.put_request_headers(headers).await?;
        handle.resume().await
    }
    .await;
    let counters = &shared.counters;
    match outcome {
        Ok(()) => counters.signed.fetch_add(1, Ordering::Relaxed),
        // The client left or the stream timed out: nothing to do.
        Err(Error::StreamGone) => counters.gone.fetch_add(1, Ordering::Relaxed),
        Err(error) => {
            tracing::warn!(%error, "request_signature: the stream refused the signature");
            // Gone by now is fine too: there is no one left to answer.
            let _ = handle.local_reply(failure(StatusCode::INTERNAL_SERVER_ERROR)).await;
            counters.failed.fetch_add(1, Ordering::Relaxed)
        }
    };
}

fn failure(status: StatusCode) -> LocalReply {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    LocalReply { status, headers, body: "nuncio: request_signature could not sign the request\n".into() }
}

#[cfg(test)]
mod tests {
    use nuncio_filter::Context;
    use serde_json::json;

    use super::*;

    #[test]
    fn hmac_sha256_matches_rfc_4231() {
        // RFC 4231 test case 2 ("what do ya want for nothing?", key "Jefe"),
        // through the same code path minus the canonical text.
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    fn head() -> RequestHead {
        let mut headers = HeaderMap::new();
        headers.append("x-tenant", HeaderValue::from_static("acme"));
        headers.append("x-tenant", HeaderValue::from_static("beta"));
        headers.insert("x-signature", HeaderValue::from_static("forged"));
        RequestHead {
            method: Method::PUT,
            uri: "/orders/7?dry=1".parse().unwrap(),
            version: http::Version::HTTP_11,
            headers,
            authority: Some("shop.example:8080".parse().unwrap()),
        }
    }

    #[test]
    fn signs_the_canonical_text_in_place_without_a_handle() {
        let key = "0123456789abcdef0123456789abcdef";
        let factory =
            RequestSignatureFactory::from_config(json!({ "key": key, "headers": ["X-Tenant", "date"] })).unwrap();
        let mut filter = factory.create();
        let mut cx = StreamCx::new(Context::background(), "127.0.0.1:1".parse().unwrap());
        let mut head = head();
        assert!(matches!(filter.request_headers(&mut cx, &mut head, true), Hook::Done(Status::Continue)));
        let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
        mac.update(b"PUT\nshop.example:8080\n/orders/7?dry=1\nx-tenant:acme,beta\ndate:\n");
        let expected: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        let got: Vec<_> = head.headers.get_all("x-signature").iter().collect();
        assert_eq!(got, [expected.as_str()], "the client's own value is replaced");
        assert_eq!(factory.outcomes(), Outcomes { signed: 1, gone: 0, failed: 0 });
    }

    #[test]
    fn config_errors_name_the_field() {
        let e = |v| RequestSignatureFactory::from_config(v).expect_err("an error");
        let error = e(json!({ "key": "short" }));
        assert_eq!(error.path, "key");
        assert!(error.message.contains("too short: 5 bytes"), "{error}");
        let error = e(json!({ "key": "0123456789abcdef", "header": "bad name" }));
        assert_eq!(error.path, "header");
        let error = e(json!({ "key": "0123456789abcdef", "header": "Host" }));
        assert_eq!(error.path, "header");
        let error = e(json!({ "key": "0123456789abcdef", "headers": ["date", "X-Signature"] }));
        assert_eq!(error.path, "headers[1]");
        let error = e(json!({ "key": "0123456789abcdef", "headers": ["date", "transfer-encoding"] }));
        assert_eq!(error.path, "headers[1]");
        let error = e(json!({ "secret": "0123456789abcdef" }));
        assert!(error.message.contains("unknown field `secret`"), "{error}");
    }
}
