//! The built-in filters through the real proxy: each made from its config
//! block by its `FilterKind` (as the config loader will), installed on a
//! listener, and exercised with real sockets against a raw upstream that
//! records what it receives.

use std::sync::Arc;
use std::time::Duration;

use nuncio_filter::{FilterFactory, FilterKind};
use nuncio_filters::buffer::BufferKind;
use nuncio_filters::headers::HeadersKind;
use nuncio_filters::local_ratelimit::LocalRateLimitKind;
use nuncio_filters::pool;
use nuncio_filters::request_signature::RequestSignatureFactory;
use nuncio_proxy::{FilterKinds, Options};
use nuncio_test_support::{Admin, Proxy, RawClient, TIMEOUT, Upstream, wait_until};
use serde_json::json;
use sha2::{Digest, Sha256};

/// nuncio from a whole config, loaded as the `nuncio` command loads one
/// (the built-in filter kinds), each `{name}` replaced by its address.
fn with_builtin_kinds(yaml: &str, addresses: &[(&str, std::net::SocketAddr)]) -> Proxy {
    let mut options = Options::default();
    options.filter_kinds = FilterKinds::new(nuncio_filters::builtin());
    Proxy::start_with(yaml, addresses, options)
}

fn configure(kind: &dyn FilterKind, config: serde_json::Value) -> Arc<dyn FilterFactory> {
    kind.configure(config).unwrap_or_else(|e| panic!("{} config: {}: {e}", kind.name(), e.path))
}

// -------------------------------------------------------------- headers --

#[test]
fn headers_rewrites_the_request_and_the_response() {
    let upstream = Upstream::plain("app");
    let headers = configure(
        &HeadersKind,
        json!({
            "request": {
                "set": [
                    { "name": "x-client-ip", "value": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%" },
                    { "name": "x-user-copy", "value": "user=%REQ(x-user)%" },
                ],
                "add": [ { "name": "x-tag", "value": "edge" } ],
                "remove": [ "x-debug" ],
            },
            "response": {
                "set": [ { "name": "x-served-for", "value": "%REQ(x-user)% via %REQ(:method)% %REQ(:path)%" } ],
                "add": [ { "name": "x-client", "value": "%DOWNSTREAM_REMOTE_ADDRESS%" } ],
                "remove": [ "server" ],
            },
        }),
    );
    let proxy = Proxy::with_filters(&upstream, 1, vec![headers]);
    let mut client = RawClient::connect(proxy.addr());
    let local = client.stream.local_addr().unwrap();
    client.send("GET /cart?id=7 HTTP/1.1\r\nHost: shop\r\nX-User: ada\r\nX-Debug: 1\r\nX-Tag: app\r\n\r\n");
    let reply = client.response();
    assert_eq!(reply.status, 200, "{}", reply.text());

    let seen = upstream.last_request();
    assert_eq!(seen.header("x-client-ip"), "127.0.0.1");
    assert_eq!(seen.header("x-user-copy"), "user=ada");
    assert_eq!(seen.all("x-tag"), ["app", "edge"]);
    assert_eq!(seen.header("x-debug"), "", "removed");

    assert_eq!(reply.header("x-served-for"), "ada via GET /cart?id=7");
    assert_eq!(reply.header("x-client"), local.to_string(), "the client's ip:port");
    assert_eq!(reply.header("server"), "", "removed");
    assert_eq!(reply.text(), "hello from app\n");
}

// ------------------------------------------------------ local_ratelimit --

#[test]
fn past_the_bucket_requests_get_429_with_retry_after() {
    let upstream = Upstream::plain("app");
    // A long interval: no fill can come during the test.
    let limit = configure(&LocalRateLimitKind, json!({ "tokens": 3, "interval": "1m" }));
    let proxy = Proxy::with_filters(&upstream, 1, vec![limit]);
    for _ in 0..3 {
        assert_eq!(proxy.get("/").status, 200);
    }
    let reply = proxy.get("/");
    assert_eq!(reply.status, 429, "{}", reply.text());
    let retry: u64 = reply.header("retry-after").parse().expect("retry-after in seconds");
    assert!((1..=60).contains(&retry), "retry-after: {retry}");
    assert_eq!(reply.text(), "nuncio: local rate limit exceeded\n");
    assert_eq!(upstream.requests().len(), 3, "the limited request never went upstream");
    proxy.wait_for_stats(&[RATE_LIMITED.replace("{listener}", "main") + ": 1"]);
}

/// The `local_ratelimit` counter of listener `{listener}`.
const RATE_LIMITED: &str =
    "nuncio_filter_local_ratelimit_rate_limited_total{filter=\"local_ratelimit\",listener=\"{listener}\"}";

#[test]
fn refusals_are_counted_across_a_reload() {
    let upstream = Upstream::plain("app");
    let yaml = "
admin: { address: 127.0.0.1:0 }
workers: 1
listeners:
  - name: main
    address: 127.0.0.1:0
    filters:
      - name: local_ratelimit
        config: { tokens: 2, interval: 1m }
    routes: [ { match: {}, cluster: app } ]
clusters:
  - name: app
    endpoints: [ '{app}' ]
";
    let mut proxy = with_builtin_kinds(yaml, &[("app", upstream.addr)]);
    let statuses = |proxy: &Proxy, n| (0..n).map(|_| proxy.get("/").status).collect::<Vec<u16>>();
    assert_eq!(statuses(&proxy, 3), [200, 200, 429]);
    let series = RATE_LIMITED.replace("{listener}", "main");
    proxy.wait_for_stats(&[format!("{series}: 1")]);

    // The same config again: a new version, whose filter starts with a
    // full bucket and whose stats are declared anew.
    assert_eq!(proxy.reload(yaml, &[("app", upstream.addr)]).version, 2);
    assert_eq!(statuses(&proxy, 4), [200, 200, 429, 429]);
    proxy.wait_for_stats(&[format!("{series}: 3")]);
}

#[test]
fn after_the_interval_requests_pass_again() {
    let upstream = Upstream::plain("app");
    let limit = configure(&LocalRateLimitKind, json!({ "tokens": 2, "fill": 1, "interval": "200ms" }));
    let proxy = Proxy::with_filters(&upstream, 1, vec![limit]);
    // Empty the bucket (fills may come meanwhile on a slow machine: go on
    // until one request is refused).
    let mut refused = None;
    for _ in 0..100 {
        let reply = proxy.get("/");
        if reply.status == 429 {
            refused = Some(reply);
            break;
        }
        assert_eq!(reply.status, 200);
    }
    let refused = refused.expect("the bucket ran dry");
    assert_eq!(refused.header("retry-after"), "1", "200ms, rounded up to a second");
    // A fill comes within the interval: requests pass again.
    wait_until("a request passing after a fill", || proxy.get("/").status == 200);
}

// --------------------------------------------------------------- buffer --

#[test]
fn the_upstream_gets_the_whole_body_at_once() {
    let upstream = Upstream::plain("app");
    let buffer = configure(&BufferKind, json!({ "max_bytes": 65536 }));
    let proxy = Proxy::with_filters(&upstream, 1, vec![buffer]);
    let mut client = RawClient::connect(proxy.addr());
    client.send("POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
    let pieces = ["first piece, ", "second piece, ", "and the last one"];
    for piece in pieces {
        client.send(format!("{:x}\r\n{piece}\r\n", piece.len()));
        // The subject: each piece arrives on its own (there is no event to
        // wait for; the buffer filter must not pass one on by itself).
        std::thread::sleep(Duration::from_millis(20));
    }
    client.send("0\r\n\r\n");
    let reply = client.response();
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = upstream.last_request();
    let whole = pieces.concat();
    assert_eq!(seen.body, whole.as_bytes());
    assert!(seen.chunks.len() <= 1, "the body went upstream in one piece, not {:?}", seen.chunks);
}

#[test]
fn a_body_over_max_bytes_gets_413() {
    let upstream = Upstream::plain("app");
    let buffer = configure(&BufferKind, json!({ "max_bytes": 100 }));
    let proxy = Proxy::with_filters(&upstream, 1, vec![buffer]);

    // Declared too long: refused from the head, nothing goes upstream.
    let body = "x".repeat(101);
    let reply = proxy.exchange(format!("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 101\r\n\r\n{body}"));
    assert_eq!(reply.status, 413, "{}", reply.text());
    assert_eq!(upstream.requests().len(), 0);

    // Chunked, each piece under the limit, the whole over it.
    let piece = "y".repeat(60);
    let reply = proxy.exchange(format!(
        "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3c\r\n{piece}\r\n3c\r\n{piece}\r\n0\r\n\r\n"
    ));
    assert_eq!(reply.status, 413, "{}", reply.text());
    assert_eq!(upstream.requests().iter().filter(|r| !r.body.is_empty()).count(), 0, "no body went upstream");

    // Exactly the limit passes.
    let body = "z".repeat(100);
    let reply = proxy.exchange(format!("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{body}"));
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(upstream.last_request().body, body.as_bytes());
}

// ---------------------------------------------------- request_signature --

const KEY: &str = "a test key, 32 bytes long......";

/// HMAC-SHA256 (RFC 2104) written out here, independently of the filter's
/// `hmac` crate, in hex.
fn hmac_sha256_hex(key: &[u8], message: &[u8]) -> String {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|k| k ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::digest([pad(0x36).as_slice(), message].concat());
    let outer = Sha256::digest([pad(0x5c).as_slice(), inner.as_slice()].concat());
    outer.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn the_independent_hmac_matches_rfc_4231() {
    assert_eq!(
        hmac_sha256_hex(b"Jefe", b"what do ya want for nothing?"),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}

#[test]
fn requests_are_signed_off_the_worker() {
    let upstream = Upstream::plain("app");
    let factory = RequestSignatureFactory::from_config(json!({ "key": KEY, "headers": ["x-tenant"] })).unwrap();
    let proxy = Proxy::with_filters(&upstream, 2, vec![factory.clone()]);
    for i in 0..20 {
        let request = format!(
            "GET /orders?id={i} HTTP/1.1\r\nHost: shop.example:8080\r\nX-Tenant: acme\r\nX-Signature: forged\r\n\r\n"
        );
        let reply = proxy.exchange(request);
        assert_eq!(reply.status, 200, "{}", reply.text());
        let seen = upstream.last_request();
        let text = format!("GET\nshop.example:8080\n/orders?id={i}\nx-tenant:acme\n");
        assert_eq!(seen.all("x-signature"), [hmac_sha256_hex(KEY.as_bytes(), text.as_bytes())]);
        assert_eq!(seen.header("x-tenant"), "acme", "the fields came back whole");
    }
    // A request with a body: the stream waits at the filter, then the body
    // follows the signed head.
    let reply = proxy.exchange("POST /pay HTTP/1.1\r\nHost: shop\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = upstream.last_request();
    assert_eq!(seen.body, b"hello");
    assert_eq!(seen.header("x-signature"), hmac_sha256_hex(KEY.as_bytes(), b"POST\nshop\n/pay\nx-tenant:\n"));
    let outcomes = factory.outcomes();
    assert_eq!((outcomes.signed, outcomes.gone, outcomes.failed), (21, 0, 0));
}

#[test]
fn a_client_that_leaves_finds_its_stream_gone() {
    let upstream = Upstream::plain("app");
    let factory = RequestSignatureFactory::from_config(json!({ "key": KEY })).unwrap();
    let proxy = Proxy::with_filters(&upstream, 2, vec![factory.clone()]);

    // Hold every pool thread, so the signing jobs wait behind the holders.
    let (started_tx, started) = std::sync::mpsc::channel();
    let mut release = Vec::new();
    for _ in 0..pool::threads() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let started_tx = started_tx.clone();
        pool::spawn(async move {
            started_tx.send(()).unwrap();
            // Blocks this pool thread until the test lets go.
            let _ = rx.recv();
        })
        .unwrap();
        release.push(tx);
    }
    for _ in 0..pool::threads() {
        started.recv_timeout(TIMEOUT).expect("every pool thread held");
    }

    // Clients that leave while their stream waits for the pool.
    for _ in 0..10 {
        let mut client = RawClient::connect(proxy.addr());
        client.send("GET / HTTP/1.1\r\nHost: t\r\n\r\n");
        drop(client);
    }
    wait_until("10 streams ended", || proxy.stats().contains("nuncio_downstream_rq_total: 10\n"));
    assert_eq!(factory.outcomes().gone, 0, "no job has run yet");

    // Now the jobs run: every handle call answers StreamGone.
    drop(release);
    wait_until("10 jobs told StreamGone", || factory.outcomes().gone == 10);
    let outcomes = factory.outcomes();
    assert_eq!((outcomes.signed, outcomes.failed), (0, 0));
    assert_eq!(upstream.requests().len(), 0, "nothing went upstream for clients that left");

    // The proxy and the pool serve on.
    let reply = proxy.get("/");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(upstream.last_request().header("x-signature"), hmac_sha256_hex(KEY.as_bytes(), b"GET\ntest\n/\n"));
}
