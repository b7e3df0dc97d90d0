//! Clients: hyper on a keep-alive connection for ordinary requests, a
//! plain socket for byte-exact ones.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use crate::http::{chunk_size, content_length, find, is_chunked, parse_head};
use crate::{TIMEOUT, rt};

/// A response as a client received it.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The header fields.
    pub headers: HeaderMap,
    /// The whole body.
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

/// Sends `GET path` to `addr` on a connection of its own from another
/// thread (a request left in flight); join for the reply.
pub fn get_in_background(addr: SocketAddr, path: &str) -> std::thread::JoinHandle<Reply> {
    let path = path.to_owned();
    std::thread::spawn(move || get(addr, &path))
}

/// Sends `bytes` on a new raw connection and reads one response.
pub fn exchange(addr: SocketAddr, bytes: impl AsRef<[u8]>) -> Reply {
    let mut client = RawClient::connect(addr);
    client.send(bytes);
    client.response()
}

/// A hyper HTTP/1.1 client on one keep-alive connection.
pub struct Client {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Client {
    /// Connects to `addr`.
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
    /// whole response (at most [`TIMEOUT`]).
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

/// A client on a plain socket (`TCP_NODELAY`: each send is its own
/// segment): sends exactly the bytes given, parses responses itself.
/// Every read waits at most [`TIMEOUT`].
pub struct RawClient {
    /// The socket, for what the methods do not cover.
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl RawClient {
    /// Connects to `addr`.
    pub fn connect(addr: SocketAddr) -> RawClient {
        let stream = TcpStream::connect(addr).expect("connect to nuncio");
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        RawClient { stream, buf: Vec::new() }
    }

    /// Writes `bytes`.
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
