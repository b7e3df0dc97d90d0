//! A filter's HTTP calls to clusters (`StreamCx::http_client`) through the
//! real proxy, against real upstreams: the request as sent, the response
//! read whole, and each way a call fails.
//!
//! The test filter calls the cluster named in the client's `x-call`
//! field with the client's method, path and body (and the timeout in
//! `x-call-timeout-ms`, if given), and answers the client itself with what
//! came back: `200` and `status=S body=B` for a response, `502` and the
//! error's `Debug` for a failure.

use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use nuncio_filter::{CallOptions, Filter, FilterFactory, Hook, RequestHead, Status, StreamCx};
use nuncio_proxy::Options;
use nuncio_test_support::{Proxy, Reply, Upstream};

/// Calls `x-call`'s cluster; body limit `max_response_bytes`.
struct Caller {
    max_response_bytes: usize,
}

impl Filter for Caller {
    fn request_headers<'a>(&'a mut self, cx: &'a mut StreamCx, head: &'a mut RequestHead, _eos: bool) -> Hook<'a> {
        let client = cx.http_client().expect("the proxy gives every stream a client");
        let cluster = head.headers.get("x-call").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let body = head.headers.get("x-call-body").map_or(Bytes::new(), |v| Bytes::copy_from_slice(v.as_bytes()));
        let mut request = http::Request::new(body);
        *request.method_mut() = head.method.clone();
        *request.uri_mut() = head.uri.clone();
        let timeout = head.headers.get("x-call-timeout-ms").and_then(|v| v.to_str().ok()?.parse().ok());
        let options = CallOptions {
            max_response_bytes: self.max_response_bytes,
            timeout: timeout.map(std::time::Duration::from_millis),
        };
        let call = client.call(&cluster, request, cx.context(), options);
        Hook::pending(async move {
            match call.await {
                Ok(response) => {
                    let text =
                        format!("status={} body={}", response.status(), String::from_utf8_lossy(response.body()));
                    Status::local_reply(StatusCode::OK, text)
                }
                Err(error) => Status::local_reply(StatusCode::BAD_GATEWAY, format!("{error:?}")),
            }
        })
    }
}

struct CallerFactory {
    max_response_bytes: usize,
}

impl FilterFactory for CallerFactory {
    fn name(&self) -> &str {
        "caller"
    }

    fn create(&self) -> Box<dyn Filter> {
        Box::new(Caller { max_response_bytes: self.max_response_bytes })
    }
}

/// nuncio whose listener `main` runs the caller; cluster `service` is
/// `service` (speaking `protocol`).
fn start(service: std::net::SocketAddr, protocol: &str, max_response_bytes: usize) -> Proxy {
    start_with(service, protocol, max_response_bytes, "")
}

/// [`start`] with `listener_fields` (YAML lines at the listener's
/// indentation).
fn start_with(
    service: std::net::SocketAddr,
    protocol: &str,
    max_response_bytes: usize,
    listener_fields: &str,
) -> Proxy {
    let mut options = Options::default();
    let caller: Arc<dyn FilterFactory> = Arc::new(CallerFactory { max_response_bytes });
    options.filters.insert("main".to_owned(), vec![caller].into());
    let yaml = format!(
        "
workers: 1
listeners:
  - name: main
    address: 127.0.0.1:0
{listener_fields}    routes: [ {{ match: {{}}, direct_response: {{ status: 204 }} }} ]
clusters:
  - name: service
    endpoints: [ '{{service}}' ]
    protocol: {protocol}
"
    );
    Proxy::start_with(&yaml, &[("service", service)], options)
}

fn call(proxy: &Proxy, request: &str) -> Reply {
    proxy.exchange(request)
}

#[test]
fn a_call_sends_method_path_and_body_and_reads_the_whole_answer() {
    for (protocol, upstream) in [("http1", Upstream::echo("service")), ("http2", Upstream::echo_h2("service"))] {
        let proxy = start(upstream.addr, protocol, 1024);
        let reply =
            call(&proxy, "PUT /items/7?x=1 HTTP/1.1\r\nHost: shop\r\nX-Call: service\r\nX-Call-Body: hello\r\n\r\n");
        assert_eq!(reply.text(), "status=200 OK body=hello", "{protocol}");
        let seen = upstream.last_request();
        assert_eq!((seen.method.as_str(), seen.target.as_str()), ("PUT", "/items/7?x=1"), "{protocol}");
        assert_eq!(seen.body, b"hello", "{protocol}");
        // No `Host` given: the cluster's name.
        let host = seen.authority.clone().unwrap_or_else(|| seen.header("host").to_owned());
        assert_eq!(host, "service", "{protocol}");
        assert!(seen.header("x-nuncio-expected-timeout-ms").is_empty(), "no deadline, no time left: {protocol}");
    }
}

#[test]
fn a_call_tells_the_time_left_in_its_listeners_field() {
    let request = "GET / HTTP/1.1\r\nHost: t\r\nX-Call: service\r\nX-Call-Timeout-Ms: 5000\r\n\r\n";
    for (protocol, upstream) in [("http1", Upstream::echo("service")), ("http2", Upstream::echo_h2("service"))] {
        for (fields, name) in [
            ("", Some("x-nuncio-expected-timeout-ms")),
            ("    time_left_header: X-Budget-Ms\n", Some("x-budget-ms")),
            ("    time_left_header: none\n", None),
        ] {
            let proxy = start_with(upstream.addr, protocol, 1024, fields);
            assert_eq!(call(&proxy, request).status, 200, "{protocol} {fields}");
            let seen = upstream.last_request();
            for other in ["x-nuncio-expected-timeout-ms", "x-budget-ms"].into_iter().filter(|n| Some(*n) != name) {
                assert_eq!(seen.header(other), "", "{protocol} {fields}: not {other}");
            }
            if let Some(name) = name {
                let left: u64 = seen.header(name).parse().unwrap_or_else(|_| panic!("{protocol} {fields}: {name}"));
                assert!((1..=5000).contains(&left), "{protocol} {fields}: within the call's 5s: {left}");
            }
        }
    }
}

#[test]
fn a_cluster_the_config_lacks_fails_the_call_clearly() {
    let upstream = Upstream::echo("service");
    let proxy = start(upstream.addr, "http1", 1024);
    let reply = call(&proxy, "GET / HTTP/1.1\r\nHost: t\r\nX-Call: nowhere\r\n\r\n");
    assert_eq!(reply.status, 502);
    assert_eq!(reply.text(), "UnknownCluster { cluster: \"nowhere\" }");
    assert!(upstream.requests().is_empty());
}

#[test]
fn an_answer_over_the_limit_fails_the_call() {
    // Declared too long, and chunked past the limit.
    let sized = Upstream::fixed("sized", b"HTTP/1.1 200 OK\r\ncontent-length: 20\r\n\r\n01234567890123456789");
    let chunked = Upstream::fixed(
        "chunked",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n8\r\n01234567\r\n8\r\n01234567\r\n0\r\n\r\n",
    );
    for upstream in [sized, chunked] {
        let proxy = start(upstream.addr, "http1", 10);
        let reply = call(&proxy, "GET / HTTP/1.1\r\nHost: t\r\nX-Call: service\r\n\r\n");
        assert_eq!(reply.status, 502);
        assert_eq!(reply.text(), "ResponseTooLarge { cluster: \"service\", limit: 10 }");
    }
}
