//! Fixtures for running the built-in filters through the real proxy (the
//! patterns of `crates/proxy/tests/support`, trimmed to what these tests
//! use): nuncio started from YAML with filter factories for its listener
//! (or from a whole config naming built-in filters), a raw HTTP/1.1
//! upstream that records what it receives (chunk by chunk), an
//! authorization service (HTTP/1.1 or h2c) answering as a test scripts it,
//! and a raw client.
//!
//! Every server binds 127.0.0.1 only; every wait is bounded by [`TIMEOUT`].

#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName, HeaderValue};
use nuncio_config::Config;
use nuncio_proxy::{FilterFactory, FilterKinds, Options, RunningServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The longest any single wait may take. Generous: a loaded 2-core
/// machine must keep it.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The runtime the upstreams run on.
pub fn rt() -> &'static tokio::runtime::Runtime {
    static RT: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("test runtime")
    });
    &RT
}

/// nuncio with `workers` workers and one listener, `main`, routing
/// everything to `upstream` through `filters`.
pub struct Proxy {
    pub server: RunningServer,
}

impl Proxy {
    pub fn start(upstream: &Upstream, workers: usize, filters: Vec<Arc<dyn FilterFactory>>) -> Proxy {
        let mut options = Options::default();
        options.filters.insert("main".to_owned(), filters.into());
        let yaml = format!(
            "
admin: {{ address: 127.0.0.1:0 }}
workers: {workers}
listeners:
  - name: main
    address: 127.0.0.1:0
    routes:
      - match: {{}}
        cluster: app
clusters:
  - name: app
    endpoints: [ '{}' ]
",
            upstream.addr
        );
        let config = Config::from_yaml(&yaml, "test.yaml").unwrap_or_else(|e| panic!("bad test config:\n{e}"));
        Proxy { server: RunningServer::start_with(config, options).expect("nuncio starts") }
    }

    /// nuncio from a whole config, loaded as the `nuncio` command loads
    /// one (the built-in filter kinds), each `{name}` replaced by the
    /// address given for it. The config names its listener `main`.
    pub fn from_yaml(yaml: &str, addresses: &[(&str, SocketAddr)]) -> Proxy {
        let yaml = with_addresses(yaml, addresses);
        let config = load(&yaml).unwrap_or_else(|e| panic!("bad test config:\n{e}\n{yaml}"));
        let mut options = Options::default();
        options.filter_kinds = builtin_kinds();
        Proxy { server: RunningServer::start_with(config, options).expect("nuncio starts") }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.listener("main").expect("listener main")
    }

    /// The admin `/stats` text.
    pub fn stats(&self) -> String {
        exchange(self.server.addresses().admin, "GET /stats HTTP/1.1\r\nHost: admin\r\n\r\n").text()
    }

    /// Waits (at most [`TIMEOUT`]) until `/stats` has every line of
    /// `expected` (`series: value`); fails listing the missing ones.
    /// Workers count as a stream ends, which a client may see after its
    /// response.
    pub fn wait_for_stats(&self, expected: &[String]) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let text = self.stats();
            let missing: Vec<&String> = expected.iter().filter(|line| !text.lines().any(|l| l == *line)).collect();
            if missing.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "after {TIMEOUT:?}, /stats lacks {missing:#?}\n/stats:\n{text}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `request` on a new connection and reads the response.
    pub fn exchange(&self, request: impl AsRef<[u8]>) -> Reply {
        exchange(self.addr(), request)
    }

    /// `GET path` with `Host: test`, on a new connection.
    pub fn get(&self, path: &str) -> Reply {
        self.exchange(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n"))
    }
}

/// The filter kinds the `nuncio` command knows.
pub fn builtin_kinds() -> FilterKinds {
    FilterKinds::new(nuncio_filters::builtin())
}

/// `yaml` checked as the `nuncio` command checks a file named
/// `nuncio.yaml`; the errors as it prints them.
pub fn load(yaml: &str) -> Result<Config, String> {
    Config::from_yaml_with(yaml, "nuncio.yaml", &builtin_kinds()).map_err(|e| e.to_string())
}

/// `yaml` with each `{name}` replaced by its address.
pub fn with_addresses(yaml: &str, addresses: &[(&str, SocketAddr)]) -> String {
    let mut yaml = yaml.to_owned();
    for (name, address) in addresses {
        yaml = yaml.replace(&format!("{{{name}}}"), &address.to_string());
    }
    yaml
}

/// An address nothing listens on (bound, then closed).
pub fn dead_address() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().unwrap()
}

// ------------------------------------------------------------- upstream --

/// A request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// The sizes of the body's chunks when it came chunked (the final
    /// empty chunk not counted); empty otherwise.
    pub chunks: Vec<usize>,
}

impl Seen {
    /// The first value of `name`, or "" when absent.
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", |v| v.to_str().expect("ASCII header"))
    }

    /// Every value of `name`.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.headers.get_all(name).iter().map(|v| v.to_str().unwrap().to_owned()).collect()
    }
}

/// A raw HTTP/1.1 upstream on `127.0.0.1:0`: records every request (keep-
/// alive), answers `200` with `server: app/1.0` and the body
/// `hello from app`. Stops accepting when dropped.
pub struct Upstream {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Seen>>>,
    accept: tokio::task::AbortHandle,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Upstream {
    pub fn start() -> Upstream {
        let listener = rt().block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind upstream");
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        let accept = rt().spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let mut conn = RawConn { stream, buf: Vec::new() };
                let seen = seen.clone();
                tokio::spawn(async move {
                    while let Some(request) = conn.read_request().await {
                        seen.lock().unwrap().push(request);
                        let body = "hello from app\n";
                        let head = format!(
                            "HTTP/1.1 200 OK\r\nserver: app/1.0\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if conn.stream.write_all(head.as_bytes()).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Upstream { addr, requests, accept: accept.abort_handle() }
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Seen> {
        self.requests.lock().unwrap().clone()
    }

    /// The last request received.
    pub fn last_request(&self) -> Seen {
        self.requests().pop().expect("the upstream received a request")
    }
}

// ------------------------------------------------ authorization service --

/// What the authorization service answers a check.
#[derive(Debug, Clone)]
pub enum Answer {
    /// This status, these fields, this body.
    Respond { status: u16, headers: Vec<(String, String)>, body: String },
    /// No answer: waits until the proxy gives up on the call (closes the
    /// connection, or resets the HTTP/2 stream), and counts it abandoned.
    Hold,
}

impl Answer {
    /// `status` with no field and no body.
    pub fn status(status: u16) -> Answer {
        Answer::Respond { status, headers: Vec::new(), body: String::new() }
    }

    /// The same with one more field.
    pub fn with(self, name: &str, value: &str) -> Answer {
        match self {
            Answer::Respond { status, mut headers, body } => {
                headers.push((name.to_owned(), value.to_owned()));
                Answer::Respond { status, headers, body }
            }
            Answer::Hold => Answer::Hold,
        }
    }

    /// The same with this body.
    pub fn body(self, text: &str) -> Answer {
        match self {
            Answer::Respond { status, headers, .. } => Answer::Respond { status, headers, body: text.to_owned() },
            Answer::Hold => Answer::Hold,
        }
    }
}

type Script = Arc<dyn Fn(&Seen) -> Answer + Send + Sync>;

/// An authorization service on `127.0.0.1:0`: records every check it
/// receives and answers as `script` says. Stops accepting when dropped.
pub struct Authz {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Seen>>>,
    abandoned: Arc<AtomicUsize>,
    accept: tokio::task::AbortHandle,
}

impl Drop for Authz {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Authz {
    /// Speaking HTTP/1.1 (keep-alive).
    pub fn start(script: impl Fn(&Seen) -> Answer + Send + Sync + 'static) -> Authz {
        Authz::serve(Arc::new(script), |conn, state| async move {
            let mut conn = RawConn { stream: conn, buf: Vec::new() };
            while let Some(request) = conn.read_request().await {
                state.requests.lock().unwrap().push(request.clone());
                match (state.script)(&request) {
                    Answer::Respond { status, headers, body } => {
                        let mut head = format!("HTTP/1.1 {status} Scripted\r\ncontent-length: {}\r\n", body.len());
                        for (name, value) in headers {
                            head.push_str(&format!("{name}: {value}\r\n"));
                        }
                        head.push_str("\r\n");
                        if conn.stream.write_all(format!("{head}{body}").as_bytes()).await.is_err() {
                            break;
                        }
                    }
                    Answer::Hold => {
                        while conn.fill().await.is_some() {}
                        state.abandoned.fetch_add(1, Ordering::SeqCst);
                        break;
                    }
                }
            }
        })
    }

    /// Speaking HTTP/2 with prior knowledge (h2c), as a `protocol: http2`
    /// cluster expects.
    pub fn start_h2(script: impl Fn(&Seen) -> Answer + Send + Sync + 'static) -> Authz {
        Authz::serve(Arc::new(script), |conn, state| async move {
            let Ok(mut connection) = h2::server::handshake(conn).await else { return };
            while let Some(Ok((request, mut respond))) = connection.accept().await {
                let mut headers = request.headers().clone();
                if let Some(authority) = request.uri().authority() {
                    headers.insert(http::header::HOST, HeaderValue::from_str(authority.as_str()).unwrap());
                }
                let target = request.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
                let seen = Seen {
                    method: request.method().to_string(),
                    target,
                    headers,
                    body: Vec::new(),
                    chunks: Vec::new(),
                };
                state.requests.lock().unwrap().push(seen.clone());
                match (state.script)(&seen) {
                    Answer::Respond { status, headers, body } => {
                        let mut response = http::Response::builder().status(status);
                        for (name, value) in headers {
                            response = response.header(name, value);
                        }
                        let response = response.body(()).unwrap();
                        let Ok(mut send) = respond.send_response(response, body.is_empty()) else { continue };
                        if !body.is_empty() {
                            let _ = send.send_data(bytes::Bytes::from(body), true);
                        }
                    }
                    Answer::Hold => {
                        let state = state.clone();
                        tokio::spawn(async move {
                            let _ = std::future::poll_fn(|cx| respond.poll_reset(cx)).await;
                            state.abandoned.fetch_add(1, Ordering::SeqCst);
                        });
                    }
                }
            }
        })
    }

    fn serve<F, Fut>(script: Script, on_connection: F) -> Authz
    where
        F: Fn(tokio::net::TcpStream, Arc<AuthzState>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = rt().block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind authz");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(AuthzState { script, requests: Arc::default(), abandoned: Arc::default() });
        let (requests, abandoned) = (state.requests.clone(), state.abandoned.clone());
        let accept = rt().spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                tokio::spawn(on_connection(stream, state.clone()));
            }
        });
        Authz { addr, requests, abandoned, accept: accept.abort_handle() }
    }

    /// Every check received so far, in order.
    pub fn requests(&self) -> Vec<Seen> {
        self.requests.lock().unwrap().clone()
    }

    /// The last check received.
    pub fn last_request(&self) -> Seen {
        self.requests().pop().expect("the authorization service received a check")
    }

    /// Checks held ([`Answer::Hold`]) that the proxy gave up on.
    pub fn abandoned(&self) -> usize {
        self.abandoned.load(Ordering::SeqCst)
    }
}

pub struct AuthzState {
    script: Script,
    requests: Arc<Mutex<Vec<Seen>>>,
    abandoned: Arc<AtomicUsize>,
}

struct RawConn {
    stream: tokio::net::TcpStream,
    buf: Vec<u8>,
}

impl RawConn {
    /// Reads one request (head, and a Content-Length or chunked body);
    /// `None` when the peer closed first.
    async fn read_request(&mut self) -> Option<Seen> {
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
        let mut chunks = Vec::new();
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
                if size == 0 {
                    // No trailers expected: the final CRLF.
                    while self.buf.len() < 2 {
                        self.fill().await?;
                    }
                    self.buf.drain(..2);
                    break body;
                }
                while self.buf.len() < size + 2 {
                    self.fill().await?;
                }
                body.extend(self.buf.drain(..size));
                self.buf.drain(..2);
                chunks.push(size);
            }
        } else {
            let length = content_length(&headers).unwrap_or(0);
            while self.buf.len() < length {
                self.fill().await?;
            }
            self.buf.drain(..length).collect()
        };
        Some(Seen { method, target, headers, body, chunks })
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
}

// --------------------------------------------------------------- client --

/// A response as the client received it.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    /// The first value of `name`, or "" when absent.
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", |v| v.to_str().expect("ASCII header"))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `bytes` on a new connection and reads one response.
pub fn exchange(addr: SocketAddr, bytes: impl AsRef<[u8]>) -> Reply {
    let mut client = RawClient::connect(addr);
    client.send(bytes);
    client.response()
}

/// A client on a plain socket: sends exactly the bytes given.
pub struct RawClient {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl RawClient {
    pub fn connect(addr: SocketAddr) -> RawClient {
        let stream = TcpStream::connect(addr).expect("connect to nuncio");
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        RawClient { stream, buf: Vec::new() }
    }

    pub fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.stream.write_all(bytes.as_ref()).expect("nuncio takes the bytes");
    }

    /// Reads one response (Content-Length framed, or to the end).
    pub fn response(&mut self) -> Reply {
        let head_len = loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                break end + 4;
            }
            assert!(self.fill(), "connection closed before a response head: {:?}", String::from_utf8_lossy(&self.buf));
        };
        let head: Vec<u8> = self.buf.drain(..head_len).collect();
        let (start, headers) = parse_head(&head);
        let status: u16 = start.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status code");
        assert!(!is_chunked(&headers), "these tests expect sized responses");
        let body = match content_length(&headers) {
            Some(length) => {
                while self.buf.len() < length {
                    assert!(self.fill(), "connection closed in the middle of a body");
                }
                self.buf.drain(..length).collect()
            }
            None => {
                while self.fill() {}
                std::mem::take(&mut self.buf)
            }
        };
        Reply { status, headers, body }
    }

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

/// Waits until `condition` holds, at most [`TIMEOUT`].
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !condition() {
        assert!(Instant::now() < deadline, "waited {TIMEOUT:?} for {what}");
        std::thread::sleep(Duration::from_millis(10));
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
