//! Upstream servers on `127.0.0.1:0`, run on [`rt`]: hyper's HTTP/1.1 and
//! h2c servers (echo, slow, steered by a [`Control`]), raw ones scripted
//! byte by byte, and a scripted service (an authorization server, say).
//! Each records every request it receives, so that a test waits for a
//! request to arrive instead of sleeping.

use std::convert::Infallible;
use std::future::Future;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::http::{chunk_size, content_length, find, is_chunked, parse_head};
use crate::{TIMEOUT, rt};

/// A request as an upstream received it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The method.
    pub method: String,
    /// The request-target as received (`/path?query`).
    pub target: String,
    /// The header fields (HTTP/2's `:authority` as `host` for a scripted
    /// service).
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Vec<u8>,
    /// The sizes of the body's chunks when it came chunked to a raw
    /// upstream (the last, empty one not counted); empty otherwise.
    pub chunks: Vec<usize>,
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

    /// Every value of header `name`.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.headers.get_all(name).iter().map(|v| v.to_str().expect("ASCII header").to_owned()).collect()
    }
}

#[derive(Default)]
struct UpstreamState {
    name: String,
    connections: AtomicUsize,
    requests: Mutex<Vec<Seen>>,
    /// Told whenever a request is recorded.
    arrived: Condvar,
    /// Every echo response waits this long (`Upstream::slow`).
    delay: Duration,
    /// Requests held by a scripted service that the proxy gave up on.
    abandoned: AtomicUsize,
}

impl UpstreamState {
    /// Records a request; returns its number on this upstream (0, 1, ...).
    fn record(&self, seen: Seen) -> usize {
        let mut requests = self.requests.lock().unwrap();
        requests.push(seen);
        self.arrived.notify_all();
        requests.len() - 1
    }
}

/// An in-process upstream server on `127.0.0.1:0`; stops accepting when
/// dropped (connections already open live on).
pub struct Upstream {
    /// Where it listens.
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
    /// (or `hello from NAME\n` when there is none). A request header
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

    /// A raw keep-alive HTTP/1.1 upstream that records each request as it
    /// came on the wire (chunk sizes too) and answers `200` with
    /// `server: NAME/1.0` and the body `hello from NAME\n`.
    pub fn plain(name: &str) -> Upstream {
        let body = format!("hello from {name}\n");
        let response: Arc<[u8]> =
            format!("HTTP/1.1 200 OK\r\nserver: {name}/1.0\r\ncontent-length: {}\r\n\r\n{body}", body.len())
                .into_bytes()
                .into();
        Upstream::raw(name, move |mut conn| {
            let response = response.clone();
            async move {
                while conn.read_request().await.is_some() {
                    if conn.stream.write_all(&response).await.is_err() {
                        break;
                    }
                }
            }
        })
    }

    /// A hyper HTTP/1.1 upstream steered by `control`:
    /// - `GET /health` (an active health check) gets `control`'s health
    ///   status, and is not recorded in [`Upstream::requests`];
    /// - any other request is recorded; one whose path starts with `/held`
    ///   then waits until [`Control::release`] (at most [`TIMEOUT`]);
    /// - the answer has `control`'s status, `x-upstream: NAME` and the body
    ///   `hello from NAME\n`.
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

    /// A service speaking HTTP/1.1 (keep-alive) that records every request
    /// and answers as `script` says ([`Answer`]).
    pub fn scripted(name: &str, script: impl Fn(&Seen) -> Answer + Send + Sync + 'static) -> Upstream {
        let script: Script = Arc::new(script);
        Upstream::raw(name, move |mut conn| {
            let script = script.clone();
            async move {
                while let Some(request) = conn.read_seen().await {
                    conn.state.record(request.clone());
                    match script(&request) {
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
                            conn.state.abandoned.fetch_add(1, Ordering::SeqCst);
                            break;
                        }
                    }
                }
            }
        })
    }

    /// [`Upstream::scripted`] speaking HTTP/2 with prior knowledge (h2c),
    /// as a `protocol: http2` cluster expects. The request's `:authority`
    /// is recorded as its `host` field.
    pub fn scripted_h2(name: &str, script: impl Fn(&Seen) -> Answer + Send + Sync + 'static) -> Upstream {
        let script: Script = Arc::new(script);
        Upstream::raw(name, move |conn| {
            let script = script.clone();
            async move {
                let RawConn { stream, state, connection, .. } = conn;
                let Ok(mut server) = h2::server::handshake(stream).await else { return };
                while let Some(Ok((request, mut respond))) = server.accept().await {
                    let mut headers = request.headers().clone();
                    if let Some(authority) = request.uri().authority() {
                        headers.insert(http::header::HOST, HeaderValue::from_str(authority.as_str()).unwrap());
                    }
                    let seen = Seen {
                        method: request.method().to_string(),
                        target: request.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned(),
                        headers,
                        body: Vec::new(),
                        chunks: Vec::new(),
                        connection,
                        version: http::Version::HTTP_2,
                        authority: request.uri().authority().map(ToString::to_string),
                    };
                    state.record(seen.clone());
                    match script(&seen) {
                        Answer::Respond { status, headers, body } => {
                            let mut response = http::Response::builder().status(status);
                            for (name, value) in headers {
                                response = response.header(name, value);
                            }
                            let response = response.body(()).unwrap();
                            let Ok(mut send) = respond.send_response(response, body.is_empty()) else { continue };
                            if !body.is_empty() {
                                let _ = send.send_data(Bytes::from(body), true);
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
                    // Out of file descriptors, say: try again shortly.
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

    /// The targets of every request received so far, in order.
    pub fn targets(&self) -> Vec<String> {
        self.state.requests.lock().unwrap().iter().map(|r| r.target.clone()).collect()
    }

    /// The last request received.
    pub fn last_request(&self) -> Seen {
        self.requests().pop().expect("the upstream received a request")
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Requests a scripted service held ([`Answer::Hold`]) that the proxy
    /// then gave up on (closed the connection, or reset the stream).
    pub fn abandoned(&self) -> usize {
        self.state.abandoned.load(Ordering::SeqCst)
    }

    /// Waits until `n` requests have arrived (told as each one is
    /// recorded; at most [`TIMEOUT`]).
    pub fn wait_for_requests(&self, n: usize) {
        let requests = self.state.requests.lock().unwrap();
        let (requests, _) = self.state.arrived.wait_timeout_while(requests, TIMEOUT, |r| r.len() < n).unwrap();
        assert!(requests.len() >= n, "upstream {} saw {} requests, expected {n}", self.state.name, requests.len());
    }
}

/// The request a hyper server was handed, body and all, as [`Seen`].
async fn seen(connection: usize, request: hyper::Request<Incoming>) -> Seen {
    let (parts, body) = request.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    Seen {
        method: parts.method.to_string(),
        target: parts.uri.path_and_query().map_or("/", |pq| pq.as_str()).to_owned(),
        headers: parts.headers,
        body: body.to_vec(),
        chunks: Vec::new(),
        connection,
        version: parts.version,
        authority: parts.uri.authority().map(ToString::to_string),
    }
}

async fn echo(
    state: Arc<UpstreamState>,
    connection: usize,
    request: hyper::Request<Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let seen = seen(connection, request).await;
    let delay = seen
        .headers
        .get("x-delay-ms")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .map_or(state.delay, Duration::from_millis);
    let (target, body) = (seen.target.clone(), Bytes::from(seen.body.clone()));
    state.record(seen);
    // The delay is what the test asked for (a slow upstream), not a wait.
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
    /// The socket, for what the methods do not cover.
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
        let seen = self.read_seen().await?;
        Some(self.state.record(seen))
    }

    async fn read_seen(&mut self) -> Option<Seen> {
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
                // The data and its CRLF (no trailers after the last chunk).
                while self.buf.len() < size + 2 {
                    self.fill().await?;
                }
                body.extend(self.buf.drain(..size));
                self.buf.drain(..2);
                if size == 0 {
                    break body;
                }
                chunks.push(size);
            }
        } else {
            let length = content_length(&headers).unwrap_or(0);
            while self.buf.len() < length {
                self.fill().await?;
            }
            self.buf.drain(..length).collect()
        };
        Some(Seen {
            method,
            target,
            headers,
            body,
            chunks,
            connection: self.connection,
            version: http::Version::HTTP_11,
            authority: None,
        })
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

    /// Half-closes the connection (sends FIN; reading goes on) and returns
    /// once the peer's end has received the FIN (read from Linux's
    /// `/proc/net/tcp`; at most [`TIMEOUT`]): from then on, a pooled
    /// connection in nuncio reads as closed.
    pub async fn close_write(&mut self) {
        let _ = self.stream.shutdown().await;
        let (ours, theirs) = (self.stream.local_addr().unwrap(), self.stream.peer_addr().unwrap());
        let deadline = Instant::now() + TIMEOUT;
        // Their end is ESTABLISHED (or FIN_WAIT if they closed too) until
        // our FIN is in.
        while matches!(tcp_state(theirs, ours).as_deref(), Some("01" | "04" | "05")) {
            assert!(Instant::now() < deadline, "{theirs} never received the FIN from {ours}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// The state (hex, as `/proc/net/tcp` writes it: `01` ESTABLISHED, `08`
/// CLOSE_WAIT, ...) of the IPv4 TCP socket bound to `local` and connected
/// to `remote`; `None` when there is none.
fn tcp_state(local: SocketAddr, remote: SocketAddr) -> Option<String> {
    let hex = |address: SocketAddr| match address {
        SocketAddr::V4(v4) => format!("{:08X}:{:04X}", u32::from_ne_bytes(v4.ip().octets()), v4.port()),
        SocketAddr::V6(_) => panic!("IPv4 only: {address}"),
    };
    let (local, remote) = (hex(local), hex(remote));
    let table = std::fs::read_to_string("/proc/net/tcp").expect("Linux's /proc/net/tcp");
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&local.as_str()) && fields.get(2) == Some(&remote.as_str()))
            .then(|| fields.get(3).map(|s| (*s).to_owned()))
            .flatten()
    })
}

/// What a scripted service answers a request.
#[derive(Debug, Clone)]
pub enum Answer {
    /// This status, these fields, this body.
    Respond {
        /// The status code.
        status: u16,
        /// Header fields, in order.
        headers: Vec<(String, String)>,
        /// The body.
        body: String,
    },
    /// No answer: waits until the proxy gives up on the request (closes the
    /// connection, or resets the HTTP/2 stream), and counts it
    /// [abandoned](Upstream::abandoned).
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

/// How a [`Upstream::controlled`] server answers; the test changes it while
/// the server runs. Clones share the settings.
#[derive(Clone)]
pub struct Control {
    status: Arc<AtomicU16>,
    health: Arc<AtomicU16>,
    open: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Default for Control {
    fn default() -> Control {
        Control::new()
    }
}

impl Control {
    /// Requests and health checks answered `200`; held requests held.
    pub fn new() -> Control {
        Control {
            status: Arc::new(200.into()),
            health: Arc::new(200.into()),
            open: Arc::new(tokio::sync::watch::Sender::new(false)),
        }
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
        self.open.send_replace(true);
    }
}

async fn controlled(
    state: Arc<UpstreamState>,
    control: Control,
    connection: usize,
    request: hyper::Request<Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let seen = seen(connection, request).await;
    let path = seen.target.split('?').next().unwrap_or("");
    let status = if path == "/health" {
        control.health.load(Ordering::SeqCst)
    } else {
        let held = path.starts_with("/held");
        state.record(seen);
        if held {
            let mut open = control.open.subscribe();
            let _ = tokio::time::timeout(TIMEOUT, open.wait_for(|open| *open)).await;
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

/// An address nothing listens on (bound, then closed): connecting is
/// refused.
pub fn dead_address() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// A listening socket that never accepts and whose backlog is full, so a
/// new connection attempt hangs (the kernel drops its SYN): how a connect
/// timeout looks on loopback.
pub struct Blackhole {
    /// Where it listens.
    pub addr: SocketAddr,
    _listener: socket2::Socket,
    _queued: Vec<TcpStream>,
}

impl Blackhole {
    /// Binds it and fills its backlog.
    #[allow(clippy::new_without_default, reason = "it binds a socket: not a default value")]
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
