//! HTTP/1.1 to an upstream, on nuncio's own codec: one exchange at a time
//! on a pooled connection (owned by one worker), full duplex (see the
//! [parent](super) docs).

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method};
use nuncio_http1::{BodyDecoder, BodyEvent, BodyFraming, Limits, ResponseDecoder};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::io::Io;

use super::{RequestBody, TryError, UpstreamHead, UpstreamRequest};
use crate::cluster::ConnectionGuard;
use crate::io::write_all_vectored;
use crate::message::{BodyFrame, BodySize, HeadFields, ResponseHead};

/// A connection to an upstream, with its read buffer while it carries a
/// request.
pub(crate) struct Http1Connection {
    pub(crate) stream: Io,
    /// Taken from the worker's pool (`read_buffers::take_upstream`) on the
    /// first read of an exchange and given back when the connection goes
    /// idle with nothing unread: an idle pooled connection holds no buffer
    /// (each kept its own 16 KiB), unless a response body still points
    /// into it (see `read_buffers::give_back_upstream`).
    read_buf: BytesMut,
    /// Whether it carried a request before: a reused connection the
    /// upstream closed meanwhile fails without the request being processed.
    reused: bool,
    /// Counts it open (stats, `max_connections`) while it lives.
    _guard: Option<ConnectionGuard>,
    /// Where it is connected (read once: no syscall per reuse).
    peer: Option<std::net::SocketAddr>,
}

impl Http1Connection {
    pub(crate) fn new(stream: Io, guard: ConnectionGuard) -> Http1Connection {
        Http1Connection::with_guard(stream, Some(guard))
    }

    /// A connection no stats count (the pool's own tests).
    #[cfg(test)]
    pub(crate) fn unaccounted(stream: TcpStream) -> Http1Connection {
        Http1Connection::with_guard(Io::Plain(stream), None)
    }

    fn with_guard(stream: Io, guard: Option<ConnectionGuard>) -> Http1Connection {
        let peer = stream.tcp().peer_addr().ok();
        Http1Connection { stream, read_buf: BytesMut::new(), reused: false, _guard: guard, peer }
    }

    /// The address it is connected to.
    pub(crate) fn peer(&self) -> Option<std::net::SocketAddr> {
        self.peer
    }

    /// Whether an idle pooled connection can carry another request: the
    /// peer has not closed it and sent nothing unasked.
    pub(crate) fn is_reusable(&mut self) -> bool {
        if !self.read_buf.is_empty() {
            return false;
        }
        match &mut self.stream {
            Io::Plain(tcp) => {
                // The last read of the previous response was short, which
                // cleared the socket's readiness ([`read_some`]): while the
                // event loop has seen nothing since, nothing arrived, and no
                // probe (a `recv` per request) is needed. A FIN that the
                // loop has not polled yet is the same race as one arriving
                // just after the probe: the try fails on a reused
                // connection and is retried.
                // `try_io` reads the readiness and, when there is none, says
                // so without calling the closure: no waker is registered (a
                // `poll_read_ready` with a no-op waker took the readiness
                // lock and swapped the task's waker out, ~150 instructions).
                if tcp.try_io(tokio::io::Interest::READABLE, || Ok(())).is_err() {
                    return true;
                }
                let mut probe = [0u8; 1];
                matches!(tcp.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            }
            // TLS: what arrived meanwhile may be records that carry no
            // data (a TLS 1.3 session ticket): a read that would wait after
            // processing them means nothing was said. Data, a close_notify
            // or an error mean the connection is done.
            Io::Tls(tls) => {
                let mut probe = [0u8; 1];
                let mut buf = tokio::io::ReadBuf::new(&mut probe);
                let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
                tokio::io::AsyncRead::poll_read(std::pin::Pin::new(&mut **tls), &mut cx, &mut buf).is_pending()
            }
        }
    }
}

/// One request and its response on a connection.
pub(crate) struct Exchange {
    conn: Http1Connection,
    /// Whether the connection carried a request before this one.
    reused: bool,
    method: Method,
    response: Response,
    out: Outgoing,
    /// The upstream closed (or reset) its side: no more bytes will come.
    eof: bool,
    /// ... and it was a reset (or another read error), not a clean close: a
    /// body that ends with the connection is cut, not complete.
    reset: bool,
}

/// Where the response stands.
enum Response {
    /// Its head is awaited.
    Head(ResponseDecoder),
    /// Its head was taken; the body comes.
    Body { decoder: BodyDecoder, keep_alive: bool },
}

/// The request body on its way out.
struct Outgoing {
    /// Bytes to write, framing included; the first partly written.
    queue: VecDeque<Bytes>,
    /// How much of `queue`'s first buffer went out.
    offset: usize,
    state: Sending,
    chunked: bool,
    /// The request's trailers, for the last chunk (boxed: seldom there, and
    /// the exchange moves as a value).
    trailers: Option<Box<HeaderMap>>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Sending {
    /// The request said `Expect: 100-continue`: nothing goes until the
    /// upstream answers `100` or this instant passes.
    AwaitingContinue(tokio::time::Instant),
    /// More may come from the source.
    Streaming,
    /// The whole body is queued (or there was none).
    Ended,
    /// The upstream stopped taking it (a write failed): nothing more goes.
    Refused,
}

impl Outgoing {
    fn done() -> Outgoing {
        Outgoing { queue: VecDeque::new(), offset: 0, state: Sending::Ended, chunked: false, trailers: None }
    }

    fn has_pending(&self) -> bool {
        !self.queue.is_empty() && self.state != Sending::Refused
    }

    /// Every byte of the body went out.
    fn complete(&self) -> bool {
        self.state == Sending::Ended && self.queue.is_empty()
    }

    fn advance(&mut self, mut written: usize) {
        while written > 0 {
            let Some(front) = self.queue.front() else { return };
            let left = front.len() - self.offset;
            if written < left {
                self.offset += written;
                return;
            }
            written -= left;
            self.offset = 0;
            self.queue.pop_front();
        }
    }
}

impl Exchange {
    /// Sends the request head (and a buffered body, in the same write) on
    /// `conn`; a streamed body follows as the source gives it.
    pub(crate) async fn start(
        mut conn: Http1Connection,
        request: &UpstreamRequest<'_>,
        body: &mut RequestBody,
    ) -> Result<Exchange, TryError> {
        let reused = conn.reused;
        conn.reused = true;
        let reset = |_| TryError::Reset { reused };
        let framing = match (&*body, request.body) {
            // An empty body on a method that has none says nothing of it.
            (RequestBody::Buffered(chunks), _)
                if chunks.iter().all(|c| c.is_empty()) && !has_body_semantics(&request.method) =>
            {
                BodyFraming::None
            }
            // What was read is what goes: filters may have changed its length.
            (RequestBody::Buffered(chunks), _) => BodyFraming::Length(chunks.iter().map(|c| c.len() as u64).sum()),
            (_, BodySize::Empty) => BodyFraming::None,
            (_, BodySize::Exact(n)) => BodyFraming::Length(n),
            (_, BodySize::Unknown) => BodyFraming::Chunked,
        };
        let head = encode_head(request, framing);
        let mut out = Outgoing::done();
        match body {
            RequestBody::Empty => write_all_vectored(&mut conn.stream, &[&head]).await.map_err(reset)?,
            RequestBody::Buffered(chunks) => {
                let mut parts: Vec<&[u8]> = Vec::with_capacity(chunks.len() + 1);
                parts.push(&head);
                parts.extend(chunks.iter().map(|c| &c[..]));
                write_all_vectored(&mut conn.stream, &parts).await.map_err(reset)?;
            }
            RequestBody::Streaming { started } => {
                *started = true;
                write_all_vectored(&mut conn.stream, &[&head]).await.map_err(reset)?;
                out.state = if request.expect_continue {
                    Sending::AwaitingContinue(tokio::time::Instant::now() + super::CONTINUE_WAIT)
                } else {
                    Sending::Streaming
                };
                out.chunked = framing == BodyFraming::Chunked;
            }
        }
        Ok(Exchange {
            conn,
            reused,
            method: request.method.clone(),
            response: Response::Head(ResponseDecoder::new(Limits::default())),
            out,
            eof: false,
            reset: false,
        })
    }

    pub(crate) fn take_head(&mut self) -> Result<Option<UpstreamHead>, TryError> {
        let Response::Head(decoder) = &mut self.response else { return Ok(None) };
        loop {
            let buf = &mut self.conn.read_buf;
            // Kept as received even when filters or the access log will
            // want a map: hop-by-hop removal on the received fields and one
            // conversion then cost less than decoding into a map (measured:
            // 1,300 instructions a request with one filter).
            let decoded = decoder.decode_raw(buf, &self.method).map(|r| r.map(|r| r.map_headers(HeadFields::Received)));
            match decoded {
                Ok(Some(response)) if response.is_interim() && !response.tunnel => {
                    // `100 Continue`: the upstream asks for the body.
                    if response.status == http::StatusCode::CONTINUE
                        && let Sending::AwaitingContinue(_) = self.out.state
                    {
                        self.out.state = Sending::Streaming;
                    }
                    continue;
                }
                Ok(Some(response)) => {
                    let size = match response.framing {
                        BodyFraming::None => BodySize::Empty,
                        BodyFraming::Length(n) => BodySize::Exact(n),
                        BodyFraming::Chunked | BodyFraming::UntilClose => BodySize::Unknown,
                    };
                    let head = ResponseHead { status: response.status, headers: response.headers, body: size };
                    self.response = Response::Body {
                        decoder: BodyDecoder::new(response.framing, Limits::default()),
                        keep_alive: response.keep_alive,
                    };
                    return Ok(Some(UpstreamHead { head, tunnel: response.tunnel, peer: self.conn.peer }));
                }
                Ok(None) if self.eof => return Err(TryError::Reset { reused: self.reused }),
                Ok(None) => return Ok(None),
                Err(e) => return Err(TryError::BadResponse(e.to_string())),
            }
        }
    }

    pub(crate) fn ready_frame(&mut self) -> Option<Result<Option<BodyFrame>, TryError>> {
        let Response::Body { decoder, .. } = &mut self.response else { return None };
        let event = match decoder.decode(&mut self.conn.read_buf) {
            Ok(Some(event)) => event,
            Ok(None) if self.reset => return Some(Err(TryError::BadResponse("upstream connection reset".into()))),
            Ok(None) if self.eof => match decoder.decode_eof(&mut self.conn.read_buf) {
                Ok(Some(event)) => event,
                Ok(None) => return Some(Err(TryError::BadResponse("upstream closed before the body ended".into()))),
                Err(e) => return Some(Err(TryError::BadResponse(e.to_string()))),
            },
            Ok(None) => return None,
            Err(e) => return Some(Err(TryError::BadResponse(e.to_string()))),
        };
        Some(Ok(match event {
            BodyEvent::Data(data) => Some(BodyFrame::Data(data)),
            BodyEvent::Trailers(trailers) => Some(BodyFrame::Trailers(trailers)),
            BodyEvent::End => None,
        }))
    }

    pub(crate) fn wants_body(&self) -> bool {
        self.out.state == Sending::Streaming && self.out.queue.is_empty()
    }

    pub(crate) fn push_body(&mut self, frame: Option<BodyFrame>) {
        let out = &mut self.out;
        if out.state != Sending::Streaming {
            return;
        }
        match frame {
            Some(BodyFrame::Data(data)) if data.is_empty() => {}
            Some(BodyFrame::Data(data)) if out.chunked => {
                let size = nuncio_http1::ChunkSizeLine::new(data.len() as u64).expect("a chunk is never empty");
                out.queue.push_back(Bytes::copy_from_slice(size.as_bytes()));
                out.queue.push_back(data);
                out.queue.push_back(Bytes::from_static(nuncio_http1::CRLF));
            }
            Some(BodyFrame::Data(data)) => out.queue.push_back(data),
            Some(BodyFrame::Trailers(trailers)) => out.trailers = Some(Box::new(trailers)),
            None => {
                if out.chunked {
                    let mut last = BytesMut::new();
                    nuncio_http1::encode_last_chunk(out.trailers.as_deref(), &mut last);
                    out.queue.push_back(last.freeze());
                }
                out.state = Sending::Ended;
            }
        }
    }

    /// Reads response bytes or writes queued request bytes, whichever the
    /// socket allows first. Cancel-safe. A failed write means the upstream
    /// stopped taking the body (its answer may still come); a failed read
    /// is the end of what the upstream sends.
    pub(crate) async fn io(&mut self) {
        let Exchange { conn, out, eof, reset, .. } = self;
        if *eof && !out.has_pending() && !matches!(out.state, Sending::AwaitingContinue(_)) {
            // Nothing can happen any more: the caller sees the end in
            // `take_head` or `ready_frame`.
            return std::future::pending().await;
        }
        let awaiting = match out.state {
            Sending::AwaitingContinue(until) => Some(until),
            _ => None,
        };
        let stream = match &mut conn.stream {
            Io::Plain(stream) => stream,
            Io::Tls(tls) => {
                let timed_out = tokio::select! {
                    biased;
                    () = tls_io(tls, &mut conn.read_buf, out, eof, reset) => false,
                    () = super::sleep_until_some(awaiting), if awaiting.is_some() => true,
                };
                if timed_out {
                    // No `100` in time: the body goes anyway.
                    out.state = Sending::Streaming;
                }
                return;
            }
        };
        let (mut reader, writer) = stream.split();
        tokio::select! {
            biased;
            read = read_some(&mut reader, &mut conn.read_buf), if !*eof => match read {
                Ok(0) => *eof = true,
                Ok(_) => {}
                Err(_) => (*eof, *reset) = (true, true),
            },
            written = write_some(writer.as_ref(), out), if out.has_pending() => match written {
                Ok(n) => out.advance(n),
                Err(e) => {
                    tracing::debug!(error = %e, "upstream stopped taking the request body");
                    out.state = Sending::Refused;
                    out.queue.clear();
                }
            },
            // No `100` in time: the body goes anyway.
            () = super::sleep_until_some(awaiting), if awaiting.is_some() => {
                out.state = Sending::Streaming;
            }
        }
    }

    /// See [`super::Exchange::read_now`]. One poll of the same read as
    /// [`Exchange::io`]'s, with a waker that does nothing: a read that would
    /// wait is dropped (it is cancel-safe), and the next `io` registers the
    /// task's own waker before the task sleeps.
    pub(crate) fn read_now(&mut self) -> bool {
        if self.eof {
            return false;
        }
        let Io::Plain(stream) = &mut self.conn.stream else { return false };
        let (mut reader, _) = stream.split();
        let read = std::pin::pin!(read_some(&mut reader, &mut self.conn.read_buf));
        match read.poll(&mut std::task::Context::from_waker(std::task::Waker::noop())) {
            std::task::Poll::Pending => false,
            std::task::Poll::Ready(Ok(0)) => {
                self.eof = true;
                true
            }
            std::task::Poll::Ready(Ok(_)) => true,
            std::task::Poll::Ready(Err(_)) => {
                (self.eof, self.reset) = (true, true);
                true
            }
        }
    }

    /// After the response: the connection back to the pool if the exchange
    /// ended cleanly (the whole body sent, the whole response read, the
    /// upstream keeping it alive).
    pub(crate) fn into_reusable(self) -> Option<Http1Connection> {
        let Response::Body { decoder, keep_alive } = &self.response else { return None };
        if !(*keep_alive && decoder.is_done() && self.out.complete() && !self.eof) {
            return None;
        }
        let mut conn = self.conn;
        if conn.read_buf.is_empty() {
            conn.read_buf =
                crate::read_buffers::give_back_upstream(std::mem::take(&mut conn.read_buf)).unwrap_or_default();
        }
        Some(conn)
    }

    /// The connection and what the upstream sent past its head, for a
    /// protocol switch.
    pub(crate) fn into_tunnel(self) -> (Http1Connection, Bytes) {
        let mut conn = self.conn;
        let early = conn.read_buf.split().freeze();
        (conn, early)
    }
}

/// [`Exchange::io`] on TLS: one poll reads (decrypting) or writes
/// (encrypting, then driving rustls's buffered records out), whichever the
/// socket allows first, from this one task (no split halves, no lock).
/// Cancel-safe like the plain path: bytes read land in `buf`, bytes the TLS
/// stream took are counted written (it sends them on the next poll).
async fn tls_io(
    tls: &mut tokio_rustls::TlsStream<TcpStream>,
    buf: &mut BytesMut,
    out: &mut Outgoing,
    eof: &mut bool,
    reset: &mut bool,
) {
    use std::task::Poll;
    use tokio::io::{AsyncRead, AsyncWrite};
    const MAX_SLICES: usize = 8;
    std::future::poll_fn(|cx| {
        if !*eof {
            // TLS needs initialized room (no `unsafe` here): zeroed once a
            // read, cheap beside decrypting what fills it.
            let filled = buf.len();
            buf.resize(filled + 16 * 1024, 0);
            let mut read = tokio::io::ReadBuf::new(&mut buf[filled..]);
            let polled = std::pin::Pin::new(&mut *tls).poll_read(cx, &mut read);
            let n = read.filled().len();
            buf.truncate(filled + n);
            match polled {
                Poll::Ready(Ok(())) if n == 0 => {
                    *eof = true;
                    return Poll::Ready(());
                }
                Poll::Ready(Ok(())) => return Poll::Ready(()),
                Poll::Ready(Err(_)) => {
                    (*eof, *reset) = (true, true);
                    return Poll::Ready(());
                }
                Poll::Pending => {}
            }
        }
        if out.has_pending() {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let mut count = 0;
            for (i, part) in out.queue.iter().take(MAX_SLICES).enumerate() {
                slices[i] = IoSlice::new(if i == 0 { &part[out.offset..] } else { part });
                count = i + 1;
            }
            match std::pin::Pin::new(&mut *tls).poll_write_vectored(cx, &slices[..count]) {
                Poll::Ready(Ok(n)) if n > 0 => {
                    out.advance(n);
                    return Poll::Ready(());
                }
                Poll::Ready(Ok(_)) | Poll::Ready(Err(_)) => {
                    tracing::debug!("upstream stopped taking the request body");
                    out.state = Sending::Refused;
                    out.queue.clear();
                    return Poll::Ready(());
                }
                Poll::Pending => {}
            }
        } else if out.state != Sending::Refused && crate::io::tls_wants_write(tls) {
            // Records the TLS stream took but could not send yet.
            if let Poll::Ready(Err(_)) = std::pin::Pin::new(&mut *tls).poll_flush(cx) {
                out.state = Sending::Refused;
                return Poll::Ready(());
            }
        }
        Poll::Pending
    })
    .await;
}

/// The request head, with the time left in its field.
fn encode_head(request: &UpstreamRequest<'_>, framing: BodyFraming) -> BytesMut {
    let mut head = BytesMut::with_capacity(512);
    match &request.deadline {
        // The request has the field already (a gRPC client's own
        // `grpc-timeout`): nuncio's value replaces it, as on HTTP/2, rather
        // than going out beside it.
        Some(left) if request.headers.contains(&left.name) => {
            let mut headers = request.headers.clone();
            headers.insert(left.name.clone(), left.value());
            encode_fields(request, &headers, framing, &mut head);
        }
        deadline => {
            encode_fields(request, request.headers, framing, &mut head);
            if let Some(left) = deadline {
                append_field(&mut head, left.name.as_str().as_bytes(), left.text(&mut [0; 24]));
            }
        }
    }
    if let Some(parent) = &request.traceparent {
        append_field(&mut head, nuncio_trace::TRACEPARENT.as_bytes(), &parent.encode());
    }
    head
}

fn encode_fields(request: &UpstreamRequest<'_>, fields: &HeadFields, framing: BodyFraming, head: &mut BytesMut) {
    let (method, target) = (&request.method, &request.target);
    match fields {
        HeadFields::Received(fields) => nuncio_http1::encode_raw_request_head(method, target, fields, framing, head),
        HeadFields::Map(map) => nuncio_http1::encode_request_head(method, target, map, framing, head),
    }
}

/// One more field before the head's closing CRLF, without copying the
/// client's fields into a new map.
fn append_field(head: &mut BytesMut, name: &[u8], value: &[u8]) {
    head.truncate(head.len() - 2);
    head.extend_from_slice(name);
    head.extend_from_slice(b": ");
    head.extend_from_slice(value);
    head.extend_from_slice(b"\r\n\r\n");
}

/// Reads what the socket has into `buf`; `Ok(0)` when the peer closed.
/// Cancel-safe. Through `AsyncRead` on purpose: a read shorter than the
/// room offered clears the socket's readiness (epoll is edge-triggered, so
/// the socket is drained), which spares the `recv` that would only say
/// `EAGAIN` — here, and in [`Http1Connection::is_reusable`] before the next
/// request on the connection.
async fn read_some(stream: &mut tokio::net::tcp::ReadHalf<'_>, buf: &mut BytesMut) -> std::io::Result<usize> {
    if buf.capacity() == 0 {
        *buf = crate::read_buffers::take_upstream();
    } else if buf.capacity() - buf.len() < crate::read_buffers::UPSTREAM_MIN_ROOM {
        buf.reserve(crate::read_buffers::UPSTREAM_SIZE);
    }
    stream.read_buf(buf).await
}

/// Writes as much of `out`'s queue as the socket takes in one `writev`.
/// Cancel-safe: waiting for readiness changes nothing, and what was written
/// is returned (the caller advances the queue).
async fn write_some(stream: &TcpStream, out: &Outgoing) -> std::io::Result<usize> {
    const MAX_SLICES: usize = 8;
    std::future::poll_fn(|cx| {
        loop {
            std::task::ready!(stream.poll_write_ready(cx))?;
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let mut count = 0;
            for (i, buf) in out.queue.iter().take(MAX_SLICES).enumerate() {
                slices[i] = IoSlice::new(if i == 0 { &buf[out.offset..] } else { buf });
                count = i + 1;
            }
            match stream.try_write_vectored(&slices[..count]) {
                Ok(0) => return std::task::Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                written => return std::task::Poll::Ready(written),
            }
        }
    })
    .await
}

/// Whether a request with `method` carries a body by its meaning (so an
/// empty one is still said: `Content-Length: 0`).
pub(crate) fn has_body_semantics(method: &Method) -> bool {
    matches!(*method, Method::POST | Method::PUT | Method::PATCH)
}
