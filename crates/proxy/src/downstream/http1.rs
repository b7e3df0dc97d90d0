//! A client's HTTP/1.1 connection: read heads with their timeouts, hand
//! each request to [`crate::stream`], answer in order, keep alive or close.
//!
//! Pipelined requests need nothing special: the next head is decoded from
//! the bytes already buffered only once the current response is written.
//!
//! A response that went out while the client was still sending its body
//! (an upstream that answered early) ends the connection with a lingering
//! close, as nginx does: closing at once would make the kernel answer the
//! client's next bytes with a reset that can destroy the response before
//! the client reads it (RFC 9112 §9.6).

use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::Poll;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Version, header};
use nuncio_context::{Context, Done};
use nuncio_http1::{BodyDecoder, BodyEvent, BodyFraming, Limits, Request, RequestDecoder};
use nuncio_trace::InRequest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::{Codec, Downstream, WriteError};
use crate::bounded::within;
use crate::io::{Io, write_all_vectored};
use crate::message::{BodyFrame, BodySize, HeadFields, RequestBodyError, RequestHead, ResponseHead, bodiless};
use crate::read_buffers;
use crate::worker::Worker;

/// Most bytes read ahead of the current request while watching for the
/// client to close ([`Connection::closed`]).
const READ_AHEAD: usize = 64 * 1024;

/// A lingering close ends after this long in all (nginx's `lingering_time`)...
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(30);
/// ...or once the client sent nothing for this long (`lingering_timeout`).
const LINGER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The client side of an HTTP/1.1 connection: its socket and the buffers
/// reused by every request on it.
pub(crate) struct Connection {
    pub(crate) stream: Io,
    pub(crate) read_buf: BytesMut,
    write_buf: BytesMut,
    pub(super) peer: SocketAddr,
    /// The TLS session, on a TLS listener.
    pub(crate) tls: Option<Rc<nuncio_tls::SessionInfo>>,
    /// Done when the listener drains: answer what is in flight with
    /// `Connection: close`, and close an idle connection at once. One
    /// waiter for the connection's life, registered at its first idle wait.
    drained: Done,
}

impl Connection {
    pub(crate) fn new(
        stream: Io,
        peer: SocketAddr,
        tls: Option<Rc<nuncio_tls::SessionInfo>>,
        drained: Done,
    ) -> Connection {
        Connection { stream, read_buf: read_buffers::take(), write_buf: BytesMut::new(), peer, tls, drained }
    }

    /// The socket with the bytes read so far put back in front, for
    /// another protocol's codec, and the wait for the listener's drain.
    pub(crate) fn into_parts(self) -> (super::http2::Rewind, Done) {
        (super::http2::Rewind::new(self.read_buf.freeze(), self.stream), self.drained)
    }

    pub(crate) async fn read_more(&mut self) -> Result<(), RequestBodyError> {
        read_more(&mut self.stream, &mut self.read_buf).await
    }

    /// The next request head; its fields a map when `as_map` (filters will
    /// want one), else as received ([`HeadFields`]).
    async fn read_head(
        &mut self,
        decoder: &mut RequestDecoder,
        as_map: bool,
    ) -> Result<Request<HeadFields>, RequestBodyError> {
        loop {
            let buf = &mut self.read_buf;
            let request = if as_map {
                decoder.decode(buf).map(|r| r.map(|r| r.map_headers(HeadFields::Map)))
            } else {
                decoder.decode_raw(buf).map(|r| r.map(|r| r.map_headers(HeadFields::Received)))
            };
            if let Some(request) = request.map_err(RequestBodyError::Invalid)? {
                return Ok(request);
            }
            self.read_more().await?;
        }
    }

    /// Resolves when the client closes or resets the connection. Bytes the
    /// client pipelines meanwhile are read ahead and kept for the next
    /// request, up to `READ_AHEAD` bytes; past that it stops watching and
    /// never resolves.
    async fn closed(&mut self) {
        while self.read_buf.len() < READ_AHEAD {
            if self.read_more().await.is_err() {
                return;
            }
        }
        std::future::pending::<()>().await;
    }

    /// Writes what `write_buf` holds, then `held` (a piece of body kept to
    /// go with the next write, or nothing), then `parts`, and clears the
    /// buffer.
    async fn flush_with(&mut self, held: &[u8], parts: &[&[u8]]) -> Result<(), WriteError> {
        let mut all: [&[u8]; 6] = [&[]; 6];
        let count = parts.len() + 2;
        assert!(count <= all.len(), "flush_with takes at most {} parts", all.len() - 2);
        all[0] = &self.write_buf;
        all[1] = held;
        all[2..count].copy_from_slice(parts);
        let written = write_all_vectored(&mut self.stream, &all[..count]).await;
        // Cleared, not split off: the buffer's memory serves the next write.
        self.write_buf.clear();
        written.map_err(|_| WriteError)
    }

    /// A response to a request that could not be read, then close.
    async fn reject(&mut self, status: StatusCode, message: &str) {
        let body = format!("{message}\n");
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        let framing = BodyFraming::Length(body.len() as u64);
        nuncio_http1::encode_response_head(status, Version::HTTP_11, &headers, framing, &mut self.write_buf);
        let _ = self.flush_with(&[], &[body.as_bytes()]).await;
    }

    /// Closes after a response the client may still be sending a body
    /// for: our side first, then what the client sends is read and
    /// dropped until it closes too, goes quiet, or time is up.
    async fn linger(&mut self) {
        let _ = self.stream.shutdown().await;
        let until = Instant::now() + LINGER_TIME;
        let mut buf = std::mem::take(&mut self.read_buf);
        buf.clear();
        loop {
            if buf.capacity() < read_buffers::SIZE {
                buf.reserve(read_buffers::SIZE);
            }
            let quiet = (Instant::now() + LINGER_TIMEOUT).min(until);
            match tokio::time::timeout_at(quiet, self.stream.read_buf(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => buf.clear(),
                _ => break,
            }
        }
        read_buffers::give_back(buf);
    }
}

/// Reads what the client sent next into `buf` (a pooled buffer if it has
/// none).
async fn read_more(stream: &mut Io, buf: &mut BytesMut) -> Result<(), RequestBodyError> {
    if buf.capacity() == 0 {
        *buf = read_buffers::take();
    } else if buf.capacity() - buf.len() < 2048 {
        buf.reserve(read_buffers::SIZE);
    }
    match stream.read_buf(buf).await {
        Ok(0) | Err(_) => Err(RequestBodyError::Gone),
        Ok(_) => Ok(()),
    }
}

/// [`read_more`] if the socket has bytes now; `Pending` if not (a spurious
/// readiness, or a TLS record not complete yet).
fn read_now(stream: &mut Io, buf: &mut BytesMut) -> Poll<Result<(), RequestBodyError>> {
    let read = std::pin::pin!(read_more(stream, buf));
    read.poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
}

/// Serves one client connection until it closes, errs, idles out or asks
/// to close.
///
/// The connection's task is what an idle keep-alive connection costs, so
/// it holds only the connection and the wait for its next bytes; all of a
/// request's work ([`serve_request`]) is one boxed future that exists only
/// while a request is in flight. Not an `async fn`: that would keep room
/// for each argument twice.
#[expect(clippy::manual_async_fn, reason = "an `async fn` keeps room for each argument twice")]
pub(crate) fn serve<'a>(
    worker: &'a Rc<Worker>,
    listener: &'a Rc<str>,
    conn: &'a mut Connection,
    ctx: &'a Context,
) -> impl Future<Output = ()> + 'a {
    async move {
        // The listener closing for good (see `super::serve`): one waiter
        // for the connection's life.
        let mut closed = ctx.done();
        loop {
            // Between requests only the idle timeout applies; a client that
            // goes quiet is dropped without a word. An idle keep-alive
            // connection holds no buffer (as in nginx): the read buffer goes
            // back to the worker's pool (`read_buffers`) and is taken again
            // once the next request is readable.
            if conn.read_buf.is_empty() && !wait_for_request(worker, listener, conn).await {
                // The listener's closing for good drains it first.
                if closed.is_done() {
                    super::count_drain_close(worker);
                }
                return;
            }
            // The request's future alone is boxed, in place: wrapping it
            // first would move its kilobytes once per wrapper. The log lines
            // of the request say its ids (see `stream::serve`): kept by
            // `InRequest` for the request only, so that an idle connection
            // holds no room for them.
            let request = crate::box_in_place!(serve_request(worker, listener, conn, ctx));
            match super::until_closed(worker, &mut closed, InRequest::new(None, request)).await {
                Some(After::Next) => {}
                None | Some(After::Close) => return,
                // Boxed: rare, and its future is as large as the rest.
                Some(After::Linger) => {
                    Box::pin(super::until_closed(worker, &mut closed, conn.linger())).await;
                    return;
                }
            }
        }
    }
}

/// Waits, holding no buffer, until the client sends the next request's
/// first bytes (`true`), or closes, idles out or the listener drains.
///
/// A plain function that reads the listener's idle timeout and arms its
/// timer, then a hand-written future ([`NextRequest`]): what lives through
/// the wait is the connection's address and the timer, nothing more.
fn wait_for_request<'a>(worker: &Worker, listener: &str, conn: &'a mut Connection) -> NextRequest<'a> {
    let idle_timeout: Option<Option<std::time::Duration>> =
        worker.local.with(|l| l.snapshot.listeners.get(listener).map(|l| l.config.idle_timeout)).ok().flatten();
    read_buffers::give_back(std::mem::take(&mut conn.read_buf));
    conn.write_buf = BytesMut::new();
    NextRequest {
        // A listener gone from the config (a reload removed it): close.
        listening: idle_timeout.is_some(),
        // A timer entry of its own, inline, not one kept per worker
        // (`crate::timers`): kept entries are boxed, and an idle
        // connection would hold one more allocation (+0.2 KiB a connection,
        // `bench/idle_memory.py`) to save a trip through the timer wheel
        // per request.
        timer: idle_timeout.flatten().and_then(nuncio_runtime::clock::after).map(tokio::time::sleep_until),
        conn,
    }
}

pin_project_lite::pin_project! {
    /// See [`wait_for_request`]. An idle keep-alive connection's task holds
    /// this (112 bytes, most of it the timer); the `select!` of a read
    /// readiness, a `timeout` and the drain it replaces held 184.
    #[must_use = "futures do nothing unless awaited"]
    struct NextRequest<'a> {
        conn: &'a mut Connection,
        #[pin]
        timer: Option<tokio::time::Sleep>,
        listening: bool,
    }
}

impl Future for NextRequest<'_> {
    type Output = bool;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<bool> {
        let this = self.project();
        let Connection { stream, read_buf, drained, .. } = &mut **this.conn;
        // A drain closes an idle connection at once.
        if !*this.listening || std::pin::Pin::new(drained).poll(cx).is_ready() {
            return Poll::Ready(false);
        }
        // The read itself is not waited on (its future would live through
        // the wait): readiness is, then one read is tried; a spurious
        // readiness (or a TLS record not complete yet) waits again.
        loop {
            match stream.poll_readable(cx) {
                Poll::Ready(Err(_)) => return Poll::Ready(false),
                Poll::Ready(Ok(())) => {
                    if let Poll::Ready(read) = read_now(stream, read_buf) {
                        return Poll::Ready(read.is_ok());
                    }
                }
                Poll::Pending => break,
            }
        }
        match this.timer.as_pin_mut().map(|timer| timer.poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(false),
            _ => Poll::Pending,
        }
    }
}

/// What the connection does after a request.
enum After {
    /// Carries the next request.
    Next,
    Close,
    /// Closes while the client may still be sending a body (see the module
    /// docs).
    Linger,
}

/// One request on the connection, its first bytes already read: its head
/// (under the listener's head timeout), then the stream.
async fn serve_request(worker: &Rc<Worker>, listener: &Rc<str>, conn: &mut Connection, ctx: &Context) -> After {
    // The snapshot this request is served with (the newest once its
    // first bytes are here), whatever reloads happen while it is in
    // flight.
    let Ok(local) = worker.local.get() else { return After::Close };
    let Some(listener_snapshot) = local.snapshot.listeners.get(&**listener) else { return After::Close };
    let settings = &listener_snapshot.config;
    let mut limits = Limits::default();
    limits.max_head_bytes = settings.max_request_headers_bytes;
    limits.max_headers = settings.max_request_headers;
    let mut decoder = RequestDecoder::new(limits);
    // Filters see the head as a `HeaderMap`: decoded into one at once
    // rather than kept as received and converted (when some filter acts on
    // the request).
    let as_map = local.filters(listener_snapshot).is_some_and(|filters| filters.directions.request);
    // Once a head has started it must complete in time (slowloris).
    let request = match within(settings.request_headers_timeout, conn.read_head(&mut decoder, as_map)).await {
        None => {
            conn.reject(StatusCode::REQUEST_TIMEOUT, "nuncio: request headers not received in time").await;
            return After::Close;
        }
        Some(Err(RequestBodyError::Gone | RequestBodyError::Answered | RequestBodyError::TimedOut)) => {
            return After::Close;
        }
        Some(Err(RequestBodyError::Invalid(e))) => {
            conn.reject(e.status(), &format!("nuncio: bad request: {e}")).await;
            return After::Close;
        }
        Some(Ok(request)) => request,
    };
    let body_clock = super::BodyClock::new(settings);
    let (mut head, exchange) = Exchange::new(conn, request);
    let mut downstream = Downstream::new(Codec::Http1(exchange), body_clock);
    crate::stream::serve(worker, &local, listener_snapshot, &mut downstream, &mut head, ctx).await;
    let Codec::Http1(exchange) = downstream.codec else { unreachable!("built as HTTP/1.1 above") };
    if exchange.reusable() {
        After::Next
    } else if exchange.must_linger() {
        After::Linger
    } else {
        After::Close
    }
}

/// Where the request body stands.
enum RequestBody {
    /// Read to its end (or there was none): the connection can carry the
    /// next request.
    Done,
    Reading(BodyDecoder),
    /// The client left or sent a body the codec refused.
    Broken,
}

/// What [`Exchange::body_ready`] read ahead for [`Exchange::read_body`].
type Peeked = Result<Option<BodyFrame>, RequestBodyError>;

/// The client side of one HTTP/1.1 request: its body, read from the
/// connection, and its response, written to it.
pub(crate) struct Exchange<'c> {
    conn: &'c mut Connection,
    method: Method,
    version: Version,
    /// The client allows another request on the connection.
    keep_alive: bool,
    body: RequestBody,
    /// What `body_ready` decoded, not yet taken by `read_body`.
    peeked: Option<Peeked>,
    /// `Expect: 100-continue` not yet answered: answered when the body is
    /// first read, so a request refused before that never sends it.
    continue_pending: bool,
    /// The response's framing and status, once its head is written.
    framing: Option<BodyFraming>,
    status: Option<StatusCode>,
    /// The connection closes after this response (decided with the head).
    close: bool,
    /// The response ended (last chunk, or the whole body) as it should.
    ended: bool,
    aborted: bool,
    /// A piece of the response body that goes out with the next write
    /// ([`Exchange::hold_data`]).
    held: Option<Bytes>,
}

/// The most response bytes a connection's write buffer gathers before it
/// writes (chunks that came together, [`Exchange::hold_data`]): about one
/// read's worth of the upstream (`read_buffers::UPSTREAM_SIZE`). Copying
/// them costs less than a write and a TCP segment each.
const COALESCE_LIMIT: usize = 16 * 1024;

impl<'c> Exchange<'c> {
    fn new(conn: &'c mut Connection, request: Request<HeadFields>) -> (RequestHead, Exchange<'c>) {
        let (body, size) = match request.framing {
            BodyFraming::None => (RequestBody::Done, BodySize::Empty),
            BodyFraming::Length(0) => (RequestBody::Done, BodySize::Exact(0)),
            BodyFraming::Length(n) => {
                (RequestBody::Reading(BodyDecoder::new(request.framing, Limits::default())), BodySize::Exact(n))
            }
            framing => (RequestBody::Reading(BodyDecoder::new(framing, Limits::default())), BodySize::Unknown),
        };
        let exchange = Exchange {
            conn,
            method: request.method.clone(),
            version: request.version,
            keep_alive: request.keep_alive,
            continue_pending: request.expect_continue && matches!(body, RequestBody::Reading(_)),
            body,
            peeked: None,
            framing: None,
            status: None,
            close: false,
            ended: false,
            aborted: false,
            held: None,
        };
        let head = RequestHead {
            method: request.method,
            uri: request.uri,
            version: request.version,
            headers: request.headers,
            authority: request.authority,
            body: size,
            upgrade: request.upgrade,
            expect_continue: request.expect_continue && size != BodySize::Empty,
        };
        (head, exchange)
    }

    pub(crate) fn peer(&self) -> SocketAddr {
        self.conn.peer
    }

    pub(crate) fn tls(&self) -> Option<&nuncio_tls::SessionInfo> {
        self.conn.tls.as_deref()
    }

    /// Whether the connection may carry the next request: the response
    /// ended cleanly, the request body was read to its end and neither
    /// side asked to close.
    fn reusable(&self) -> bool {
        self.ended && !self.close && !self.aborted && matches!(self.body, RequestBody::Done)
    }

    /// Whether the connection closes after this response with the client
    /// possibly still sending its body (see the module docs).
    fn must_linger(&self) -> bool {
        self.ended && !self.aborted && matches!(self.body, RequestBody::Reading(_))
    }

    pub(crate) async fn read_body(&mut self) -> Result<Option<BodyFrame>, RequestBodyError> {
        if let Some(peeked) = self.peeked.take() {
            return peeked;
        }
        if !matches!(self.body, RequestBody::Reading(_)) {
            return self.next_frame().await;
        }
        if self.continue_pending {
            self.continue_pending = false;
            self.conn.write_buf.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
            if self.write(&[]).await.is_err() {
                self.body = RequestBody::Broken;
                return Err(RequestBodyError::Gone);
            }
        }
        self.next_frame().await
    }

    /// Whether the request body is known to have ended with the piece
    /// `read_body` returned last (no trailers), without reading more: what
    /// is already buffered past that piece is decoded, and kept for the
    /// next `read_body`.
    pub(crate) fn body_ended(&mut self) -> bool {
        if self.peeked.is_none() {
            self.peeked = self.decode_buffered();
        }
        matches!(self.peeked, Some(Ok(None)))
    }

    /// What `body_ready` read, as the start of the body.
    pub(crate) fn peeked_start(&self) -> Option<super::BodyStart> {
        match &self.peeked {
            Some(Ok(None)) => Some(super::BodyStart::Empty),
            Some(Err(RequestBodyError::Invalid(_))) => Some(super::BodyStart::Invalid),
            _ => None,
        }
    }

    /// Cancel-safe: decodes the next frame for `read_body` (reading more
    /// if it must). Returns at once while `100 Continue` is owed: that is
    /// `read_body`'s to send, and the client sends nothing before it.
    pub(crate) async fn body_ready(&mut self) {
        if self.peeked.is_none() && !self.continue_pending {
            let frame = self.next_frame().await;
            self.peeked = Some(frame);
        }
    }

    /// The next frame: decoded from what is buffered, reading more as
    /// needed. Cancel-safe: a read appends to the buffer or does nothing.
    async fn next_frame(&mut self) -> Result<Option<BodyFrame>, RequestBodyError> {
        loop {
            if let Some(frame) = self.decode_buffered() {
                return frame;
            }
            if let Err(e) = self.conn.read_more().await {
                self.body = RequestBody::Broken;
                return Err(e);
            }
        }
    }

    /// The next body frame from what is already buffered, or `None` when
    /// more must be read first.
    fn decode_buffered(&mut self) -> Option<Result<Option<BodyFrame>, RequestBodyError>> {
        let decoder = match &mut self.body {
            RequestBody::Done => return Some(Ok(None)),
            RequestBody::Broken => return Some(Err(RequestBodyError::Gone)),
            RequestBody::Reading(decoder) => decoder,
        };
        match decoder.decode(&mut self.conn.read_buf) {
            Ok(Some(BodyEvent::Data(data))) => Some(Ok(Some(BodyFrame::Data(data)))),
            Ok(Some(BodyEvent::Trailers(trailers))) => Some(Ok(Some(BodyFrame::Trailers(trailers)))),
            Ok(Some(BodyEvent::End)) => {
                self.body = RequestBody::Done;
                Some(Ok(None))
            }
            Ok(None) => None,
            Err(e) => {
                self.body = RequestBody::Broken;
                Some(Err(RequestBodyError::Invalid(e)))
            }
        }
    }

    pub(crate) async fn closed(&mut self) {
        self.conn.closed().await;
    }

    pub(crate) fn response_started(&self) -> bool {
        self.framing.is_some()
    }

    pub(crate) fn status(&self) -> Option<StatusCode> {
        self.status
    }

    /// Encodes the head into the write buffer; it leaves with the first
    /// body bytes or at [`Exchange::flush`].
    pub(crate) fn send_head(&mut self, head: ResponseHead) {
        let http11 = self.version == Version::HTTP_11;
        let framing = if bodiless(&self.method, head.status) {
            BodyFraming::None
        } else {
            match head.body {
                BodySize::Empty => BodyFraming::Length(0),
                BodySize::Exact(n) => BodyFraming::Length(n),
                BodySize::Unknown if http11 => BodyFraming::Chunked,
                // HTTP/1.0 clients know no chunked encoding.
                BodySize::Unknown => BodyFraming::UntilClose,
            }
        };
        // A request body left unread would be taken for the next request.
        self.close = !self.keep_alive
            || self.conn.drained.is_done()
            || self.aborted
            || framing == BodyFraming::UntilClose
            || !matches!(self.body, RequestBody::Done);
        // The stream removed the hop-by-hop fields the upstream sent.
        let connection = if self.close {
            Some("close")
        } else if !http11 {
            Some("keep-alive")
        } else {
            None
        };
        let out = &mut self.conn.write_buf;
        match head.headers {
            HeadFields::Received(mut fields) => {
                if let Some(connection) = connection {
                    fields.append(header::CONNECTION, HeaderValue::from_static(connection));
                }
                nuncio_http1::encode_raw_response_head(head.status, self.version, &fields, framing, out);
            }
            HeadFields::Map(mut headers) => {
                if let Some(connection) = connection {
                    headers.insert(header::CONNECTION, HeaderValue::from_static(connection));
                }
                nuncio_http1::encode_response_head(head.status, self.version, &headers, framing, out);
                nuncio_http1::field_maps::give_back(headers);
            }
        }
        self.framing = Some(framing);
        self.status = Some(head.status);
    }

    pub(crate) async fn send_data(&mut self, data: Bytes) -> Result<(), WriteError> {
        match self.framing {
            Some(BodyFraming::Chunked) => {
                let size = nuncio_http1::ChunkSizeLine::new(data.len() as u64).expect("a chunk is never empty");
                self.write(&[size.as_bytes(), &data, nuncio_http1::CRLF]).await
            }
            Some(BodyFraming::None) | None => Ok(()),
            Some(_) => self.write(&[&data]).await,
        }
    }

    /// Keeps a piece of the response body to go out with the next write:
    /// the caller has what follows it already (see `Stream::response`), so
    /// they leave in one `writev`, one TCP segment to the client where each
    /// piece made its own. A body with a length keeps one piece as it is (a
    /// second is written at once, with the first): its pieces are whole
    /// reads. A chunked body, whose chunks come several to a read, has its
    /// chunks copied behind the head, up to [`COALESCE_LIMIT`] bytes.
    pub(crate) async fn hold_data(&mut self, data: Bytes) -> Result<(), WriteError> {
        match self.framing {
            Some(BodyFraming::Length(_) | BodyFraming::UntilClose) if self.held.is_none() => {
                self.held = Some(data);
                Ok(())
            }
            Some(BodyFraming::Chunked) if self.conn.write_buf.len() + data.len() <= COALESCE_LIMIT => {
                let size = nuncio_http1::ChunkSizeLine::new(data.len() as u64).expect("a chunk is never empty");
                let out = &mut self.conn.write_buf;
                out.extend_from_slice(size.as_bytes());
                out.extend_from_slice(&data);
                out.extend_from_slice(nuncio_http1::CRLF);
                Ok(())
            }
            _ => self.send_data(data).await,
        }
    }

    /// Writes the write buffer (a head, or a `100 Continue`), a held piece
    /// of body, then `parts`.
    async fn write(&mut self, parts: &[&[u8]]) -> Result<(), WriteError> {
        let held = self.held.take().unwrap_or_default();
        self.conn.flush_with(&held, parts).await
    }

    pub(crate) async fn send_last(&mut self, data: Bytes) -> Result<(), WriteError> {
        match self.framing {
            Some(BodyFraming::Chunked) if !self.ended && !data.is_empty() => {
                let size = nuncio_http1::ChunkSizeLine::new(data.len() as u64).expect("a chunk is never empty");
                let last = [size.as_bytes(), &data, nuncio_http1::CRLF, nuncio_http1::LAST_CHUNK];
                self.write(&last).await?;
                self.ended = true;
                Ok(())
            }
            _ => {
                if !data.is_empty() {
                    self.send_data(data).await?;
                }
                self.finish().await
            }
        }
    }

    pub(crate) async fn send_trailers(&mut self, trailers: HeaderMap) -> Result<(), WriteError> {
        if self.framing == Some(BodyFraming::Chunked) && !self.ended {
            nuncio_http1::encode_last_chunk(Some(&trailers), &mut self.conn.write_buf);
            self.write(&[]).await?;
            self.ended = true;
        }
        Ok(())
    }

    pub(crate) async fn finish(&mut self) -> Result<(), WriteError> {
        if self.ended {
            return Ok(());
        }
        if self.framing == Some(BodyFraming::Chunked) {
            self.write(&[nuncio_http1::LAST_CHUNK]).await?;
        } else {
            self.flush().await?;
        }
        self.ended = true;
        Ok(())
    }

    pub(crate) async fn flush(&mut self) -> Result<(), WriteError> {
        if self.conn.write_buf.is_empty() && self.held.is_none() { Ok(()) } else { self.write(&[]).await }
    }

    pub(crate) fn abort(&mut self) {
        self.aborted = true;
    }

    /// Switches protocols (`101`, e.g. WebSocket): writes the head, then
    /// relays bytes both ways between the client and `upstream` until
    /// either side closes. `early` is what the upstream sent past its head.
    /// The connection carries nothing else afterwards.
    pub(crate) async fn tunnel(
        &mut self,
        status: StatusCode,
        headers: &HeaderMap,
        upstream: &mut Io,
        early: Bytes,
        idle: Option<std::time::Duration>,
    ) -> Tunnelled {
        self.aborted = true;
        self.status = Some(status);
        self.framing = Some(BodyFraming::None);
        let mut moved = Tunnelled { up: 0, down: early.len() as u64 };
        nuncio_http1::encode_response_head(status, self.version, headers, BodyFraming::None, &mut self.conn.write_buf);
        if self.conn.flush_with(&[], &[&early]).await.is_err() {
            return moved;
        }
        // Bytes the client sent past its request head are already read.
        let early_up = self.conn.read_buf.split().freeze();
        moved.up = early_up.len() as u64;
        if write_all_vectored(upstream, &[&early_up]).await.is_err() {
            return moved;
        }
        let (up, down) = relay(&mut self.conn.stream, upstream, idle).await;
        moved.up += up;
        moved.down += down;
        moved
    }
}

/// What a tunnel carried: bytes from the client to the upstream, and back.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Tunnelled {
    pub(crate) up: u64,
    pub(crate) down: u64,
}

/// Copies bytes both ways between `client` and `upstream` until both
/// directions ended (a side's end is passed on as a half-close), either
/// side fails, or nothing moved for `idle` (the stream's idle timeout, as
/// for any stream). Returns the bytes moved up and down.
async fn relay(client: &mut Io, upstream: &mut Io, idle: Option<std::time::Duration>) -> (u64, u64) {
    // Either side may be TLS: halves of one task's streams (the split's
    // lock is never contended, and a tunnel is not the request path).
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut upstream_read, mut upstream_write) = tokio::io::split(upstream);
    let last = std::cell::Cell::new(Instant::now());
    let up = std::cell::Cell::new(0u64);
    let down = std::cell::Cell::new(0u64);
    let both = async {
        let a = one_way(&mut client_read, &mut upstream_write, &up, &last);
        let b = one_way(&mut upstream_read, &mut client_write, &down, &last);
        tokio::pin!(a, b);
        let (mut a_done, mut b_done) = (false, false);
        while !(a_done && b_done) {
            tokio::select! {
                clean = &mut a, if !a_done => { a_done = true; if !clean { return; } }
                clean = &mut b, if !b_done => { b_done = true; if !clean { return; } }
            }
        }
    };
    let quiet = async {
        let Some(idle) = idle else { return std::future::pending().await };
        loop {
            let until = last.get() + idle;
            if Instant::now() >= until {
                return;
            }
            tokio::time::sleep_until(until).await;
        }
    };
    tokio::select! {
        () = both => {}
        () = quiet => tracing::debug!("tunnel idle: closed"),
    }
    (up.get(), down.get())
}

/// One direction of a tunnel: what `from` sends goes to `to`, counted in
/// `count`, `last` set at each move; `from`'s end is passed on as a
/// half-close. `true` when it ended cleanly.
async fn one_way(
    from: &mut (impl tokio::io::AsyncRead + Unpin),
    to: &mut (impl tokio::io::AsyncWrite + Unpin),
    count: &std::cell::Cell<u64>,
    last: &std::cell::Cell<Instant>,
) -> bool {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) => {
                let _ = to.shutdown().await;
                return true;
            }
            Ok(n) => {
                if to.write_all(&buf[..n]).await.is_err() {
                    return false;
                }
                count.set(count.get() + n as u64);
                last.set(Instant::now());
            }
            Err(_) => return false,
        }
    }
}
