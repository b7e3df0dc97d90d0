//! Fixtures shared by the proxy's integration tests: start nuncio from a
//! YAML string, start in-process upstreams on `127.0.0.1:0`, and talk to
//! nuncio with a hyper client (ordinary requests) or a raw socket
//! (byte-exact cases).
//!
//! Every server binds 127.0.0.1 only; every wait is bounded by [`TIMEOUT`].
//! Upstreams and the hyper client run on one shared tokio runtime; the
//! tests themselves are plain synchronous functions.

// Each test file uses a part of this module.
#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::future::Future;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use nuncio_config::Config;
use nuncio_proxy::RunningServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The longest any single wait in a test may take (a read, a response, an
/// upstream seeing a request). Generous: a loaded 2-core machine must keep it.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The runtime upstream servers and the hyper client run on.
pub fn rt() -> &'static tokio::runtime::Runtime {
    static RT: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("test runtime")
    });
    &RT
}

// ---------------------------------------------------------------- nuncio --

/// A running nuncio, stopped when dropped.
pub struct Proxy {
    server: RunningServer,
}

impl Proxy {
    /// Starts nuncio from `yaml`, each `{name}` replaced by the address given
    /// for it. Unless the YAML says otherwise, admin listens on
    /// `127.0.0.1:0` and there are 2 workers. Tests name their listener
    /// `main`.
    pub fn start(yaml: &str, addresses: &[(&str, SocketAddr)]) -> Proxy {
        let config = test_config(yaml, addresses);
        Proxy { server: RunningServer::start(config).expect("nuncio starts") }
    }

    /// nuncio with one catch-all route to `upstream`.
    pub fn to(upstream: &Upstream) -> Proxy {
        Proxy::start(
            "
listeners:
  - name: main
    address: 127.0.0.1:0
    routes:
      - match: {}
        cluster: app
clusters:
  - name: app
    endpoints: [ '{app}' ]
",
            &[("app", upstream.addr)],
        )
    }

    /// The address of listener `main`.
    pub fn addr(&self) -> SocketAddr {
        self.server.listener("main").expect("the test config names its listener `main`")
    }

    /// The admin address.
    pub fn admin(&self) -> SocketAddr {
        self.server.addresses().admin
    }

    /// What `SIGUSR1` does to the binary.
    pub fn reopen_access_logs(&self) {
        self.server.reopen_access_logs();
    }

    /// Replaces the config with `yaml` (placeholders and defaults as in
    /// [`Proxy::start`]); returns once every worker serves it.
    pub fn reload(&mut self, yaml: &str, addresses: &[(&str, SocketAddr)]) -> nuncio_proxy::Reloaded {
        let config = test_config(yaml, addresses);
        self.server.reload(config).expect("the reload is applied")
    }

    /// The running server.
    pub fn server(&self) -> &RunningServer {
        &self.server
    }

    /// The running server, to stop or wait for.
    pub fn into_server(self) -> RunningServer {
        self.server
    }
}

/// `yaml` with each `{name}` replaced by its address, admin on
/// `127.0.0.1:0` and 2 workers unless it says otherwise, parsed.
pub fn test_config(yaml: &str, addresses: &[(&str, SocketAddr)]) -> Config {
    let mut yaml = yaml.to_owned();
    for (name, address) in addresses {
        yaml = yaml.replace(&format!("{{{name}}}"), &address.to_string());
    }
    if !yaml.contains("admin:") {
        yaml.insert_str(0, "admin: { address: 127.0.0.1:0 }\n");
    }
    if !yaml.contains("workers:") {
        yaml.insert_str(0, "workers: 2\n");
    }
    Config::from_yaml(&yaml, "test.yaml").unwrap_or_else(|e| panic!("bad test config:\n{e}\n{yaml}"))
}

// ------------------------------------------------------------- upstreams --

/// A request as an upstream received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// The request-target as received (`/path?query`).
    pub target: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// Which of the upstream's connections carried it (0, 1, ...).
    pub connection: usize,
    /// The protocol it came in.
    pub version: http::Version,
    /// The URI's authority (HTTP/2's `:authority`), when it had one.
    pub authority: Option<String>,
}

impl Seen {
    /// The value of header `name`, or "" when absent.
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", |v| v.to_str().expect("ASCII header"))
    }
}

#[derive(Default)]
struct UpstreamState {
    name: String,
    connections: AtomicUsize,
    requests: Mutex<Vec<Seen>>,
    /// Every echo response waits this long (`Upstream::slow`).
    delay: Duration,
}

impl UpstreamState {
    /// Records a request; returns its number on this upstream (0, 1, ...).
    fn record(&self, seen: Seen) -> usize {
        let mut requests = self.requests.lock().unwrap();
        requests.push(seen);
        requests.len() - 1
    }
}

/// An in-process upstream server on `127.0.0.1:0`; stops accepting when
/// dropped.
pub struct Upstream {
    pub addr: SocketAddr,
    state: Arc<UpstreamState>,
    accept: tokio::task::AbortHandle,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Upstream {
    /// A hyper HTTP/1.1 server that records every request and answers `200`
    /// with `x-upstream: NAME`, `x-path: TARGET` and the request body echoed
    /// (or `hello from NAME` when there is none). A request header
    /// `x-delay-ms: N` makes it wait N ms before answering.
    pub fn echo(name: &str) -> Upstream {
        Upstream::echo_with(name, Duration::ZERO)
    }

    /// [`Upstream::echo`] that waits `delay` before every answer.
    pub fn slow(name: &str, delay: Duration) -> Upstream {
        Upstream::echo_with(name, delay)
    }

    fn echo_with(name: &str, delay: Duration) -> Upstream {
        let state = Arc::new(UpstreamState { name: name.to_owned(), delay, ..UpstreamState::default() });
        Upstream::serve(state, |state, stream, connection| async move {
            let service = hyper::service::service_fn(move |request| echo(state.clone(), connection, request));
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        })
    }

    /// [`Upstream::echo`] speaking HTTP/2 with prior knowledge (h2c), as a
    /// `protocol: http2` cluster expects.
    pub fn echo_h2(name: &str) -> Upstream {
        let state = Arc::new(UpstreamState { name: name.to_owned(), ..UpstreamState::default() });
        Upstream::serve(state, |state, stream, connection| async move {
            let service = hyper::service::service_fn(move |request| echo(state.clone(), connection, request));
            let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        })
    }

    /// A raw TCP upstream: `handler` gets each accepted connection and
    /// scripts it byte by byte ([`RawConn::read_request`] records requests).
    pub fn raw<F, Fut>(name: &str, handler: F) -> Upstream
    where
        F: Fn(RawConn) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let state = Arc::new(UpstreamState { name: name.to_owned(), ..UpstreamState::default() });
        let handler = Arc::new(handler);
        Upstream::serve(state, move |state, stream, connection| {
            let handler = handler.clone();
            async move { handler(RawConn { stream, buf: Vec::new(), state, connection }).await }
        })
    }

    /// Answers every request with exactly `response`, then closes the
    /// connection.
    pub fn fixed(name: &str, response: &'static [u8]) -> Upstream {
        Upstream::raw(name, move |mut conn| async move {
            if conn.read_request().await.is_some() {
                conn.write(response).await;
            }
        })
    }

    fn serve<F, Fut>(state: Arc<UpstreamState>, on_connection: F) -> Upstream
    where
        F: Fn(Arc<UpstreamState>, tokio::net::TcpStream, usize) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = rt().block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind upstream");
        let addr = listener.local_addr().unwrap();
        let accept_state = state.clone();
        let accept = rt().spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let connection = accept_state.connections.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(on_connection(accept_state.clone(), stream, connection));
            }
        });
        Upstream { addr, state, accept: accept.abort_handle() }
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Seen> {
        self.state.requests.lock().unwrap().clone()
    }

    /// The last request received.
    pub fn last_request(&self) -> Seen {
        self.requests().pop().expect("the upstream received a request")
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Waits until `n` requests have arrived (at most [`TIMEOUT`]).
    pub fn wait_for_requests(&self, n: usize) {
        let deadline = Instant::now() + TIMEOUT;
        while self.requests().len() < n {
            assert!(
                Instant::now() < deadline,
                "upstream {} saw {} requests, expected {n}",
                self.state.name,
                self.requests().len()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

async fn echo(
    state: Arc<UpstreamState>,
    connection: usize,
    request: hyper::Request<Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str()).to_owned();
    let delay = parts
        .headers
        .get("x-delay-ms")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .map_or(state.delay, Duration::from_millis);
    state.record(Seen {
        method: parts.method.to_string(),
        target: target.clone(),
        headers: parts.headers,
        body: body.to_vec(),
        connection,
        version: parts.version,
        authority: parts.uri.authority().map(ToString::to_string),
    });
    tokio::time::sleep(delay).await;
    let body = if body.is_empty() { Bytes::from(format!("hello from {}\n", state.name)) } else { body };
    let response = hyper::Response::builder()
        .header("x-upstream", state.name.as_str())
        .header("x-path", target)
        .body(Full::new(body))
        .expect("valid response");
    Ok(response)
}

/// One connection of a [`Upstream::raw`] server.
pub struct RawConn {
    pub stream: tokio::net::TcpStream,
    buf: Vec<u8>,
    state: Arc<UpstreamState>,
    connection: usize,
}

impl RawConn {
    /// Reads one request (head, and a Content-Length or chunked body),
    /// records it, and returns its number on this upstream (0, 1, ...);
    /// `None` when the peer closed first.
    pub async fn read_request(&mut self) -> Option<usize> {
        let head_len = loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                break end + 4;
            }
            self.fill().await?;
        };
        let head: Vec<u8> = self.buf.drain(..head_len).collect();
        let (start, headers) = parse_head(&head);
        let mut parts = start.split(' ');
        let (method, target) = (parts.next().unwrap_or("").to_owned(), parts.next().unwrap_or("").to_owned());
        let body = if is_chunked(&headers) {
            let mut body = Vec::new();
            loop {
                let line = loop {
                    if let Some(end) = find(&self.buf, b"\r\n") {
                        break self.buf.drain(..end + 2).collect::<Vec<u8>>();
                    }
                    self.fill().await?;
                };
                let size = chunk_size(&line);
                while self.buf.len() < size + 2 {
                    self.fill().await?;
                }
                body.extend(self.buf.drain(..size));
                self.buf.drain(..2);
                if size == 0 {
                    break body;
                }
            }
        } else {
            let length = content_length(&headers).unwrap_or(0);
            while self.buf.len() < length {
                self.fill().await?;
            }
            self.buf.drain(..length).collect()
        };
        Some(self.state.record(Seen {
            method,
            target,
            headers,
            body,
            connection: self.connection,
            version: http::Version::HTTP_11,
            authority: None,
        }))
    }

    async fn fill(&mut self) -> Option<()> {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk).await {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Some(())
            }
        }
    }

    /// Writes `bytes` (errors ignored: the proxy may have gone).
    pub async fn write(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
    }

    /// Bytes received after the last request, then whatever arrives until
    /// `n` bytes are there (tunnels).
    pub async fn read_exact_bytes(&mut self, n: usize) -> Option<Vec<u8>> {
        while self.buf.len() < n {
            self.fill().await?;
        }
        Some(self.buf.drain(..n).collect())
    }
}

/// An address nothing listens on: connecting is refused.
pub fn dead_address() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// A listening socket that never accepts and whose backlog is full, so a
/// new connection attempt hangs (the kernel drops its SYN): how a connect
/// timeout looks on loopback.
pub struct Blackhole {
    pub addr: SocketAddr,
    _listener: socket2::Socket,
    _queued: Vec<TcpStream>,
}

impl Blackhole {
    pub fn new() -> Blackhole {
        use socket2::{Domain, Socket, Type};
        let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        listener.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into()).unwrap();
        listener.listen(0).unwrap();
        let addr = listener.local_addr().unwrap().as_socket().unwrap();
        // Fill the accept queue until a connect no longer completes.
        let mut queued = Vec::new();
        for _ in 0..16 {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
                Ok(stream) => queued.push(stream),
                Err(_) => return Blackhole { addr, _listener: listener, _queued: queued },
            }
        }
        panic!("could not fill the backlog of {addr}");
    }
}

// --------------------------------------------------------------- clients --

/// A response as a client received it.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// The head as received (raw client only; empty from hyper).
    pub head: String,
    /// The trailer section of a chunked body (raw client only).
    pub trailers: HeaderMap,
}

impl Reply {
    /// The value of header `name`, or "" when absent.
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", |v| v.to_str().expect("ASCII header"))
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `GET path` with hyper on a new connection.
pub fn get(addr: SocketAddr, path: &str) -> Reply {
    Client::connect(addr).get(path)
}

/// A hyper HTTP/1.1 client on one keep-alive connection.
pub struct Client {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        rt().block_on(async {
            let stream = tokio::net::TcpStream::connect(addr).await.expect("connect to nuncio");
            let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
            tokio::spawn(connection);
            Client { sender }
        })
    }

    /// `GET path`.
    pub fn get(&mut self, path: &str) -> Reply {
        self.send(http::Request::get(path).body(Full::default()).unwrap())
    }

    /// Sends `request` (with `Host: test` unless it has one) and reads the
    /// whole response.
    pub fn send(&mut self, mut request: http::Request<Full<Bytes>>) -> Reply {
        if !request.headers().contains_key(http::header::HOST) {
            request.headers_mut().insert(http::header::HOST, HeaderValue::from_static("test"));
        }
        rt().block_on(async {
            let exchange = async {
                self.sender.ready().await.expect("connection usable");
                let response = self.sender.send_request(request).await.expect("a response");
                let (parts, body) = response.into_parts();
                let body = body.collect().await.expect("a whole body").to_bytes().to_vec();
                Reply {
                    status: parts.status.as_u16(),
                    headers: parts.headers,
                    body,
                    head: String::new(),
                    trailers: HeaderMap::new(),
                }
            };
            tokio::time::timeout(TIMEOUT, exchange).await.expect("response in time")
        })
    }
}

/// Sends `bytes` on a new raw connection and reads one response.
pub fn exchange(addr: SocketAddr, bytes: impl AsRef<[u8]>) -> Reply {
    let mut client = RawClient::connect(addr);
    client.send(bytes);
    client.response()
}

/// A client on a plain socket: sends exactly the bytes given, parses
/// responses itself (independently of nuncio's codec).
pub struct RawClient {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl RawClient {
    pub fn connect(addr: SocketAddr) -> RawClient {
        let stream = TcpStream::connect(addr).expect("connect to nuncio");
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        RawClient { stream, buf: Vec::new() }
    }

    pub fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.stream.write_all(bytes.as_ref()).expect("nuncio takes the bytes");
    }

    /// Reads one response (a 1xx included), body framed by its head.
    pub fn response(&mut self) -> Reply {
        self.read_response(false)
    }

    /// Reads one response to a HEAD request (never a body).
    pub fn head_response(&mut self) -> Reply {
        self.read_response(true)
    }

    /// Reads one response, or `None` if the connection closes before any
    /// byte of one arrives.
    pub fn try_response(&mut self) -> Option<Reply> {
        if self.buf.is_empty() && !self.fill() {
            return None;
        }
        Some(self.read_response(false))
    }

    fn read_response(&mut self, to_head: bool) -> Reply {
        let head_len = loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                break end + 4;
            }
            assert!(
                self.fill(),
                "connection closed before a response head; got {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        };
        let head: Vec<u8> = self.buf.drain(..head_len).collect();
        let (start, headers) = parse_head(&head);
        let status: u16 = start.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status code");
        let mut trailers = HeaderMap::new();
        let body = if to_head || (100..200).contains(&status) || status == 204 || status == 304 {
            Vec::new()
        } else if is_chunked(&headers) {
            self.chunked_body(&mut trailers)
        } else if let Some(length) = content_length(&headers) {
            while self.buf.len() < length {
                assert!(self.fill(), "connection closed in the middle of a body");
            }
            self.buf.drain(..length).collect()
        } else {
            while self.fill() {}
            std::mem::take(&mut self.buf)
        };
        Reply { status, headers, body, head: String::from_utf8_lossy(&head).into_owned(), trailers }
    }

    fn chunked_body(&mut self, trailers: &mut HeaderMap) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let line = loop {
                if let Some(end) = find(&self.buf, b"\r\n") {
                    break self.buf.drain(..end + 2).collect::<Vec<u8>>();
                }
                assert!(self.fill(), "connection closed in a chunked body");
            };
            let size = chunk_size(&line);
            if size == 0 {
                // The trailer section ends with an empty line.
                let end = loop {
                    if self.buf.starts_with(b"\r\n") {
                        break 2;
                    }
                    if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                        break end + 4;
                    }
                    assert!(self.fill(), "connection closed in trailers");
                };
                let section: Vec<u8> = self.buf.drain(..end).collect();
                *trailers = parse_head(&[b"trailers\r\n", &section[..]].concat()).1;
                return body;
            }
            while self.buf.len() < size + 2 {
                assert!(self.fill(), "connection closed in a chunk");
            }
            body.extend(self.buf.drain(..size));
            let crlf: Vec<u8> = self.buf.drain(..2).collect();
            assert_eq!(crlf, b"\r\n", "chunk data not followed by CRLF");
        }
    }

    /// Reads exactly `n` bytes (tunnels).
    pub fn read_exact_bytes(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(self.fill(), "connection closed early");
        }
        self.buf.drain(..n).collect()
    }

    /// Whether nuncio closed the connection (end of stream or reset), given
    /// `wait` for it to do so. Bytes arriving instead are a test failure.
    pub fn is_closed_within(&mut self, wait: Duration) -> bool {
        assert!(self.buf.is_empty(), "unread bytes: {:?}", String::from_utf8_lossy(&self.buf));
        self.stream.set_read_timeout(Some(wait)).unwrap();
        let mut byte = [0u8; 1];
        let closed = match self.stream.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => panic!("unexpected bytes after the response"),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
            Err(_) => true,
        };
        self.stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        closed
    }

    /// Whether nuncio closed the connection (waits up to [`TIMEOUT`]).
    pub fn is_closed(&mut self) -> bool {
        self.is_closed_within(TIMEOUT)
    }

    /// Reads more bytes; false at end of stream (or reset).
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("no bytes from nuncio in {TIMEOUT:?}")
            }
            Err(_) => false,
        }
    }
}

// ----------------------------------------------------------- HTTP helpers --

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The start line and the fields of a head (ending in CRLF CRLF).
fn parse_head(head: &[u8]) -> (String, HeaderMap) {
    let text = std::str::from_utf8(head).expect("an ASCII head");
    let mut lines = text.split("\r\n");
    let start = lines.next().unwrap_or("").to_owned();
    let mut headers = HeaderMap::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').unwrap_or_else(|| panic!("bad field line {line:?}"));
        let name = HeaderName::from_bytes(name.as_bytes()).unwrap_or_else(|_| panic!("bad field name {name:?}"));
        headers.append(name, HeaderValue::from_str(value.trim()).expect("a valid field value"));
    }
    (start, headers)
}

fn is_chunked(headers: &HeaderMap) -> bool {
    headers.get_all(http::header::TRANSFER_ENCODING).iter().any(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"))
}

fn content_length(headers: &HeaderMap) -> Option<usize> {
    headers.get(http::header::CONTENT_LENGTH).map(|v| v.to_str().unwrap().parse().expect("a numeric content-length"))
}

fn chunk_size(line: &[u8]) -> usize {
    let text = std::str::from_utf8(line).unwrap().trim_end();
    let digits = text.split(';').next().unwrap_or("");
    usize::from_str_radix(digits, 16).unwrap_or_else(|_| panic!("bad chunk size line {text:?}"))
}

// ---- clusters and stats tests ----

/// How a [`Upstream::controlled`] server answers; the test changes it while
/// the server runs. Clones share the settings.
#[derive(Clone)]
pub struct Control {
    status: Arc<std::sync::atomic::AtomicU16>,
    health: Arc<std::sync::atomic::AtomicU16>,
    open: Arc<std::sync::atomic::AtomicBool>,
}

impl Default for Control {
    fn default() -> Control {
        Control::new()
    }
}

impl Control {
    /// Requests and health checks answered `200`; held requests held.
    pub fn new() -> Control {
        Control { status: Arc::new(200.into()), health: Arc::new(200.into()), open: Arc::new(false.into()) }
    }

    /// The status every request gets from now on.
    pub fn set_status(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    /// The status every health check (`GET /health`) gets from now on.
    pub fn set_health(&self, status: u16) {
        self.health.store(status, Ordering::SeqCst);
    }

    /// Lets held requests (and any later one) be answered.
    pub fn release(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Upstream {
    /// A hyper HTTP/1.1 upstream steered by `control`:
    /// - `GET /health` (an active health check) gets `control`'s health
    ///   status, and is not recorded in [`Upstream::requests`];
    /// - any other request is recorded; one whose path starts with `/held`
    ///   then waits until [`Control::release`] (at most [`TIMEOUT`]);
    /// - the answer has `control`'s status, `x-upstream: NAME` and the body
    ///   `hello from NAME`.
    pub fn controlled(name: &str, control: &Control) -> Upstream {
        let state = Arc::new(UpstreamState { name: name.to_owned(), ..UpstreamState::default() });
        let control = control.clone();
        Upstream::serve(state, move |state, stream, connection| {
            let control = control.clone();
            async move {
                let service = hyper::service::service_fn(move |request| {
                    controlled(state.clone(), control.clone(), connection, request)
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            }
        })
    }
}

async fn controlled(
    state: Arc<UpstreamState>,
    control: Control,
    connection: usize,
    request: hyper::Request<Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str()).to_owned();
    let status = if parts.uri.path() == "/health" {
        control.health.load(Ordering::SeqCst)
    } else {
        let held = parts.uri.path().starts_with("/held");
        state.record(Seen {
            method: parts.method.to_string(),
            target,
            headers: parts.headers,
            body: body.to_vec(),
            connection,
            version: parts.version,
            authority: parts.uri.authority().map(ToString::to_string),
        });
        let deadline = Instant::now() + TIMEOUT;
        while held && !control.open.load(Ordering::SeqCst) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        control.status.load(Ordering::SeqCst)
    };
    let response = hyper::Response::builder()
        .status(status)
        .header("x-upstream", state.name.as_str())
        .body(Full::new(Bytes::from(format!("hello from {}\n", state.name))))
        .expect("valid response");
    Ok(response)
}

/// Waits until `condition` holds, at most [`TIMEOUT`]; `what` names it in
/// the failure.
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !condition() {
        assert!(Instant::now() < deadline, "waited {TIMEOUT:?} for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `GET path` on `proxy`'s admin listener.
pub fn admin_get(proxy: &Proxy, path: &str) -> Reply {
    exchange(proxy.admin(), format!("GET {path} HTTP/1.1\r\nHost: admin\r\n\r\n"))
}

/// The value on the `/stats` line of `series` (`name` or `name{labels}`,
/// exactly as written there), `None` when there is no such line.
pub fn stat(proxy: &Proxy, series: &str) -> Option<String> {
    let reply = admin_get(proxy, "/stats");
    assert_eq!(reply.status, 200, "{}", reply.text());
    let prefix = format!("{series}: ");
    reply.text().lines().find_map(|line| line.strip_prefix(&prefix).map(str::to_owned))
}

/// Waits (at most [`TIMEOUT`]) until `/stats` has every line of `expected`
/// (`series: value`), and fails listing the missing ones if it never does.
/// Workers count a request just after its response is written, so a
/// client can see the response before the count.
pub fn wait_for_stats(proxy: &Proxy, expected: &[&str]) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let text = admin_get(proxy, "/stats").text();
        let missing: Vec<&&str> = expected.iter().filter(|line| !text.lines().any(|l| l == **line)).collect();
        if missing.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "after {TIMEOUT:?}, /stats lacks {missing:#?}\n/stats:\n{text}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `field` of endpoint `endpoint` in cluster `cluster`, read from
/// `/clusters` (text: `cluster::endpoint::field::value` lines).
pub fn endpoint_field(proxy: &Proxy, cluster: &str, endpoint: SocketAddr, field: &str) -> String {
    let reply = admin_get(proxy, "/clusters");
    assert_eq!(reply.status, 200, "{}", reply.text());
    let prefix = format!("{cluster}::{endpoint}::{field}::");
    let text = reply.text();
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix).map(str::to_owned))
        .unwrap_or_else(|| panic!("no {prefix} line in /clusters:\n{text}"))
}

/// Waits (at most [`TIMEOUT`]) until `/clusters` shows `value` for `field`
/// of `endpoint`.
pub fn wait_for_endpoint(proxy: &Proxy, cluster: &str, endpoint: SocketAddr, field: &str, value: &str) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let now = endpoint_field(proxy, cluster, endpoint, field);
        if now == value {
            return;
        }
        assert!(Instant::now() < deadline, "after {TIMEOUT:?}, {cluster}::{endpoint}::{field} is {now}, not {value}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends `GET path` to `addr` on a connection of its own from another
/// thread (a request left in flight); join for the reply.
pub fn get_in_background(addr: SocketAddr, path: &str) -> std::thread::JoinHandle<Reply> {
    let path = path.to_owned();
    std::thread::spawn(move || get(addr, &path))
}
