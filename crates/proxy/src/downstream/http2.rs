//! A client's HTTP/2 connection (h2c with prior knowledge, or `h2` agreed
//! by ALPN over TLS), on nuncio's own HTTP/2 codec ([`nuncio_http2`]): the
//! connection task reads the socket into the codec, writes what the codec
//! queued, and runs each stream the client opens as a local task on this
//! worker, through the same [`crate::stream`] as HTTP/1.1. A stream's task
//! reaches the codec through the connection's `RefCell`, never across an
//! `.await` (one task runs at a time on a worker, and each borrow ends
//! before the task yields).
//!
//! Flow control is end to end: request body window is given back to the
//! client only as the body is taken (by an upstream write), and response
//! data is queued only as the client grants window and takes the bytes
//! already queued, so a slow reader slows the upstream read rather than
//! filling memory.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context as TaskContext, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use http::uri::Authority;
use http::{HeaderMap, Method, header};
use nuncio_context::{Context, Done};
use nuncio_http2::{BodyItem, Connection, Reason, Request};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{Codec, Downstream, WriteError};
use crate::io::Io;
use crate::message::{BodyFrame, BodySize, HeadFields, RequestBodyError, RequestHead, ResponseHead, bodiless};
use crate::read_buffers;
use crate::worker::Worker;

/// Streams the client reset before their response ended ("premature"
/// resets): once a connection has had this many streams, it is closed
/// (GOAWAY `ENHANCE_YOUR_CALM`) while more than half of them were reset so
/// (Envoy's premature-reset rule). Each such stream may have reached the
/// upstream; the bound is on how many.
const PREMATURE_RESET_MIN_STREAMS: u64 = 100;
/// Room a read buffer must have left to take a read without growing first.
const READ_MIN_ROOM: usize = 2048;

/// A connection's codec, shared by its task and its streams' tasks.
type Shared = Rc<RefCell<Connection>>;

/// What the connection task waits for.
enum Event {
    /// A client opened a stream.
    Stream(Request),
    /// The listener drains, or the connection was idle too long: say
    /// goodbye.
    GoAway,
    /// The connection is over.
    Done,
}

/// Serves one HTTP/2 connection until the client closes it or it idles
/// out.
pub(crate) async fn serve(
    worker: Rc<Worker>,
    listener: Rc<str>,
    mut io: Rewind,
    peer: SocketAddr,
    tls: Option<Rc<nuncio_tls::SessionInfo>>,
    ctx: Context,
    mut drained: Done,
) {
    let Some(settings) =
        worker.local.with(|l| l.snapshot.listeners.get(&*listener).map(|l| l.config.clone())).ok().flatten()
    else {
        return;
    };
    // The codec's defaults are nuncio's (their reasons are on
    // `nuncio_http2::Config`); the head size is the listener's.
    let config = nuncio_http2::Config {
        max_header_list_size: u32::try_from(settings.max_request_headers_bytes).unwrap_or(u32::MAX),
        ..nuncio_http2::Config::default()
    };
    let conn: Shared = Rc::new(RefCell::new(Connection::new(config)));
    // However this task ends (the listener closing for good drops it
    // wherever it is), the streams still running see their stream reset.
    let _close = CloseOnDrop(conn.clone());
    let mut read_buf = BytesMut::new();
    // The preface and SETTINGS exchange is bounded like a request head.
    let mut handshake = std::pin::pin!(settings.request_headers_timeout.map(tokio::time::sleep));
    let streams = Rc::new(OpenStreams::default());
    let abuse = Rc::new(Abuse::default());
    let mut idle = std::pin::pin!(IdleTimer::new(settings.idle_timeout));
    let mut goaway_sent = false;
    loop {
        let event = poll_fn(|cx| {
            if let Poll::Ready(event) = drive(&conn, &mut io, &mut read_buf, peer, cx) {
                return Poll::Ready(event);
            }
            if !conn.borrow().is_established()
                && let Some(timer) = handshake.as_mut().as_pin_mut()
                && timer.poll(cx).is_ready()
            {
                return Poll::Ready(Event::Done);
            }
            if goaway_sent {
                return Poll::Pending;
            }
            // `drained`: one waiter on the drain for the connection's life,
            // not one per stream; polled only until it fires.
            if Pin::new(&mut drained).poll(cx).is_ready() {
                return Poll::Ready(Event::GoAway);
            }
            if streams.count.get() > 0 {
                // The last stream to end wakes this task to start the timer.
                idle.as_mut().busy();
                streams.wait(cx.waker());
                return Poll::Pending;
            }
            idle.as_mut().poll_idle(cx).map(|()| Event::GoAway)
        })
        .await;
        let request = match event {
            Event::Stream(request) => request,
            // Idle (no stream open) for `idle_timeout`, or the listener
            // drains: say goodbye (GOAWAY); the streams in flight finish.
            Event::GoAway => {
                conn.borrow_mut().go_away(Reason::NO_ERROR);
                goaway_sent = true;
                continue;
            }
            Event::Done => break,
        };
        // A new stream ends the idle spell, even one that ends before the
        // connection is next polled.
        idle.as_mut().busy();
        if let Some(why) = abuse.admit() {
            // Streams in flight go on; the client gets no new one.
            crate::warn_limited::warn_limited!("h2-abuse", %peer, why, "closing an HTTP/2 connection (GOAWAY)");
            conn.borrow_mut().go_away(Reason::ENHANCE_YOUR_CALM);
            goaway_sent = true;
        }
        streams.count.set(streams.count.get() + 1);
        let guard = OpenStream { streams: streams.clone(), abuse: abuse.clone() };
        let (worker, listener, tls, conn) = (worker.clone(), listener.clone(), tls.clone(), conn.clone());
        // The connection's context, as an HTTP/1.1 request gets it: what
        // the stream derives from it (its forwarding, its tries, its
        // filters' own context) is cancelled by its own guard as the
        // stream ends, and all of it with the connection. A context of
        // the stream's own between them was ~500 instructions a stream
        // (made, then cancelled) and cancelled nothing more.
        let stream_ctx = ctx.clone();
        // Log lines say which request the stream serves (see
        // `stream::serve`). The task's future is a box: tokio moves a
        // spawned future by value several times (into its task cell, and
        // its whole stage again as the task ends). The stream's own future
        // (~6 KB) is boxed in place once it starts; what starts it (the
        // request, the stream's context: ~500 bytes) is boxed here, so
        // that those moves copy a pointer.
        tokio::task::spawn_local(Box::pin(nuncio_trace::InRequest::new(None, async move {
            if crate::box_in_place!(serve_stream(&worker, &listener, conn, request, peer, tls, &stream_ctx)).await {
                guard.abuse.premature.set(guard.abuse.premature.get() + 1);
            }
            drop(guard);
        })));
    }
    // What is left to say (a GOAWAY) goes out if the client takes it at
    // once; the connection does not wait for it.
    let leftover = std::mem::take(conn.borrow_mut().output());
    if !leftover.is_empty() {
        let _ = crate::bounded::within(Some(std::time::Duration::from_secs(1)), async {
            crate::io::write_all_vectored(&mut io.inner, &[&leftover]).await
        })
        .await;
    }
}

/// Closes the codec (every stream reset) when the connection task ends.
struct CloseOnDrop(Shared);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        if let Ok(mut conn) = self.0.try_borrow_mut() {
            conn.close();
        }
    }
}

/// One turn of the connection's I/O: writes what the codec queued, reads
/// what the client sent into it, until a stream opens, the connection is
/// over, or the socket would block (the task's waker is then with the
/// socket and the codec).
fn drive(
    conn: &Shared,
    io: &mut Rewind,
    read_buf: &mut BytesMut,
    peer: SocketAddr,
    cx: &mut TaskContext<'_>,
) -> Poll<Event> {
    let mut c = conn.borrow_mut();
    loop {
        if let Some(request) = c.accept() {
            return Poll::Ready(Event::Stream(request));
        }
        let mut flushed = true;
        while !c.output().is_empty() {
            match Pin::new(&mut *io).poll_write(cx, c.output()) {
                Poll::Ready(Ok(n)) if n > 0 => {
                    c.output().advance(n);
                    c.written();
                }
                Poll::Ready(_) => {
                    c.close();
                    return Poll::Ready(Event::Done);
                }
                Poll::Pending => {
                    flushed = false;
                    break;
                }
            }
        }
        if flushed && Pin::new(&mut *io).poll_flush(cx).is_ready() && c.is_done() {
            return Poll::Ready(Event::Done);
        }
        if !c.wants_read() {
            break;
        }
        if read_buf.capacity() == 0 {
            // Between requests the connection holds no read buffer (as an
            // idle HTTP/1.1 one): one is taken from the worker's pool once
            // the client has sent something.
            match io.poll_readable(cx) {
                Poll::Ready(Ok(())) => *read_buf = read_buffers::take(),
                Poll::Ready(Err(_)) => {
                    c.close();
                    return Poll::Ready(Event::Done);
                }
                Poll::Pending => break,
            }
        } else if read_buf.capacity() - read_buf.len() < READ_MIN_ROOM {
            read_buf.reserve(read_buffers::SIZE);
        }
        match tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, read_buf) {
            Poll::Ready(Ok(n)) if n > 0 => {
                if let Err(e) = c.recv(read_buf) {
                    // The codec queued GOAWAY with the reason: it goes out
                    // on the next turn, then the connection ends.
                    match e {
                        nuncio_http2::Error::Connection { reason: Reason::ENHANCE_YOUR_CALM, why } => {
                            crate::warn_limited::warn_limited!("h2-abuse", %peer, why, "closing an HTTP/2 connection (GOAWAY)");
                        }
                        e => tracing::debug!(%peer, error = %e, "HTTP/2 connection error"),
                    }
                }
                if read_buf.is_empty() {
                    // No partial frame: the buffer goes back to the pool.
                    read_buffers::give_back(std::mem::take(read_buf));
                }
            }
            Poll::Ready(_) => {
                // The client closed, or the socket failed.
                c.close();
                return Poll::Ready(Event::Done);
            }
            Poll::Pending => break,
        }
    }
    c.set_io_waker(cx.waker());
    Poll::Pending
}

/// What a connection's client did that a well-behaved one does not, and
/// the codec cannot see (see [`PREMATURE_RESET_MIN_STREAMS`]; the codec
/// bounds the rest itself).
#[derive(Default)]
struct Abuse {
    streams: Cell<u64>,
    /// Streams the client reset before their response ended.
    premature: Cell<u64>,
}

impl Abuse {
    /// Counts a new stream; why the connection must end, if it must.
    fn admit(&self) -> Option<&'static str> {
        self.streams.set(self.streams.get() + 1);
        let (streams, premature) = (self.streams.get(), self.premature.get());
        if streams >= PREMATURE_RESET_MIN_STREAMS && premature * 2 > streams {
            return Some("most of its streams were reset before their response ended");
        }
        None
    }
}

pin_project_lite::pin_project! {
    /// A connection's idle timer: one timer entry for the connection's
    /// life, moved later as each idle spell begins. tokio files a later
    /// deadline lazily, without a trip through its timer wheel, where a
    /// timer made for each wait was a wheel insert and removal a request
    /// (a client sending one stream at a time is idle between every two).
    struct IdleTimer {
        #[pin]
        timer: Option<tokio::time::Sleep>,
        limit: Option<std::time::Duration>,
        // The timer counts the current idle spell.
        armed: bool,
    }
}

impl IdleTimer {
    /// A timer for spells of `limit` (`None`: the connection never idles
    /// out).
    fn new(limit: Option<std::time::Duration>) -> IdleTimer {
        IdleTimer { timer: limit.map(tokio::time::sleep), limit, armed: false }
    }

    /// The connection has a stream: the next idle spell counts afresh.
    fn busy(self: Pin<&mut Self>) {
        *self.project().armed = false;
    }

    /// Polled while the connection is idle: ready once the spell has
    /// lasted the limit.
    fn poll_idle(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        let this = self.project();
        let (Some(mut timer), Some(limit)) = (this.timer.as_pin_mut(), *this.limit) else {
            return Poll::Pending;
        };
        if !*this.armed {
            // A limit too large to represent never ends a spell.
            if let Some(deadline) = nuncio_runtime::clock::after(limit) {
                timer.as_mut().reset(deadline);
            }
            *this.armed = true;
        }
        timer.poll(cx)
    }
}

/// The connection's open streams, and the connection task's waker while
/// any is open.
#[derive(Default)]
struct OpenStreams {
    count: Cell<usize>,
    waker: Cell<Option<Waker>>,
}

impl OpenStreams {
    /// Wakes `waker` when the last open stream ends (its clone kept only
    /// when it is not the one already kept).
    fn wait(&self, waker: &Waker) {
        let kept = match self.waker.take() {
            Some(kept) if kept.will_wake(waker) => kept,
            _ => waker.clone(),
        };
        self.waker.set(Some(kept));
    }
}

/// Counts an open stream; the last one to end wakes the connection task
/// (its idle timer starts).
struct OpenStream {
    streams: Rc<OpenStreams>,
    abuse: Rc<Abuse>,
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        let streams = &self.streams;
        streams.count.set(streams.count.get() - 1);
        if streams.count.get() == 0
            && let Some(waker) = streams.waker.take()
        {
            waker.wake();
        }
    }
}

/// Serves one stream; `true` when the client reset it before its response
/// ended.
async fn serve_stream(
    worker: &Worker,
    listener: &str,
    conn: Shared,
    request: Request,
    peer: SocketAddr,
    tls: Option<Rc<nuncio_tls::SessionInfo>>,
    ctx: &Context,
) -> bool {
    // Made first: a stream given up early is released as it drops.
    let mut exchange = Exchange {
        conn,
        id: request.stream,
        method: request.method.clone(),
        body_done: request.end_stream,
        peeked: None,
        continue_pending: false,
        started: false,
        status: None,
        ended: false,
        peer,
        tls,
    };
    // Each stream is served with the snapshot current when it began.
    let Ok(local) = worker.local.get() else { return false };
    let Some(listener_snapshot) = local.snapshot.listeners.get(listener) else { return false };
    let Request { method, uri, fields, content_length, end_stream, .. } = request;
    // Relayed as decoded, like an HTTP/1.1 head: no map is made unless a
    // filter or an HTTP/2 upstream asks for one.
    let mut headers = nuncio_http1::RawFields::from_ranges(fields.bytes().clone(), fields.ranges());
    join_cookies(&mut headers);
    let authority = uri.authority().cloned().or_else(|| headers.get("host").and_then(|h| Authority::try_from(h).ok()));
    let size = match (end_stream, content_length) {
        (true, _) => BodySize::Empty,
        (false, Some(n)) => BodySize::Exact(n),
        (false, None) => BodySize::Unknown,
    };
    let expect_continue =
        size != BodySize::Empty && headers.get("expect").is_some_and(|v| v.eq_ignore_ascii_case(b"100-continue"));
    let mut head = RequestHead {
        method,
        uri,
        version: http::Version::HTTP_2,
        headers: HeadFields::Received(headers),
        authority,
        body: size,
        upgrade: false,
        expect_continue,
    };
    exchange.continue_pending = expect_continue;
    let mut downstream = Downstream::new(Codec::Http2(exchange), super::BodyClock::new(&listener_snapshot.config));
    crate::stream::serve(worker, &local, listener_snapshot, &mut downstream, &mut head, ctx).await;
    let Codec::Http2(exchange) = &mut downstream.codec else { return false };
    exchange.reset_by_client()
}

/// HTTP/2 clients may send each cookie as a field of its own (RFC 9113
/// §8.2.3, for better compression); HTTP/1.1 allows one `cookie` field, so
/// they are joined with "; " before the request goes on.
fn join_cookies(headers: &mut nuncio_http1::RawFields) {
    if headers.get_all("cookie").nth(1).is_none() {
        return;
    }
    let mut joined = Vec::new();
    for (i, cookie) in headers.get_all("cookie").enumerate() {
        if i > 0 {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(cookie);
    }
    // Joined from valid values with "; ": valid too.
    if let Ok(value) = http::HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, value);
    }
}

/// The client side of one HTTP/2 stream: its id on the connection's codec.
/// Dropping it releases the stream (reset if its response did not end).
pub(crate) struct Exchange {
    conn: Shared,
    id: u32,
    method: Method,
    body_done: bool,
    /// What `body_ready` read, not yet taken by `read_body`.
    peeked: Option<Result<Option<BodyFrame>, RequestBodyError>>,
    /// `expect: 100-continue` not yet answered: answered (with an
    /// informational `100`) when the body is first read, so a request
    /// refused before that never gets it.
    continue_pending: bool,
    /// The response head went out.
    started: bool,
    status: Option<http::StatusCode>,
    /// END_STREAM sent.
    ended: bool,
    peer: SocketAddr,
    /// The connection's TLS session, if it has one.
    tls: Option<Rc<nuncio_tls::SessionInfo>>,
}

impl Drop for Exchange {
    fn drop(&mut self) {
        // No borrow is held across an `.await`, so none is held here.
        if let Ok(mut conn) = self.conn.try_borrow_mut() {
            conn.release(self.id);
        }
    }
}

impl Exchange {
    pub(crate) fn peer(&self) -> SocketAddr {
        self.peer
    }

    pub(crate) fn tls(&self) -> Option<&nuncio_tls::SessionInfo> {
        self.tls.as_deref()
    }

    pub(crate) async fn read_body(&mut self) -> Result<Option<BodyFrame>, RequestBodyError> {
        if std::mem::take(&mut self.continue_pending) {
            let _ = self.conn.borrow_mut().send_informational(self.id, 100);
        }
        match self.peeked.take() {
            Some(peeked) => peeked,
            None => self.next_frame().await,
        }
    }

    /// Whether the request body is known to have ended with the piece
    /// `read_body` returned last (`END_STREAM` came with it, no trailers).
    pub(crate) fn body_ended(&self) -> bool {
        match &self.peeked {
            Some(peeked) => matches!(peeked, Ok(None)),
            None => self.body_done || self.conn.borrow().body_ended(self.id),
        }
    }

    /// What `body_ready` read, as the start of the body.
    pub(crate) fn peeked_start(&self) -> Option<super::BodyStart> {
        match &self.peeked {
            Some(Ok(None)) => Some(super::BodyStart::Empty),
            Some(Err(RequestBodyError::Invalid(_))) => Some(super::BodyStart::Invalid),
            _ => None,
        }
    }

    /// Cancel-safe: reads the next frame for `read_body`. Returns at once
    /// while `100` is owed: that is `read_body`'s to send.
    pub(crate) async fn body_ready(&mut self) {
        if self.peeked.is_none() && !self.continue_pending {
            let frame = self.next_frame().await;
            self.peeked = Some(frame);
        }
    }

    /// Cancel-safe: the codec hands a piece over only as the poll returns
    /// it.
    async fn next_frame(&mut self) -> Result<Option<BodyFrame>, RequestBodyError> {
        if self.body_done {
            return Ok(None);
        }
        let (conn, id) = (&self.conn, self.id);
        let item = poll_fn(|cx| conn.borrow_mut().poll_body(id, cx)).await;
        match item {
            Some(Ok(BodyItem::Data(data))) => Ok(Some(BodyFrame::Data(data))),
            Some(Ok(BodyItem::Trailers(trailers))) => {
                self.body_done = true;
                Ok(Some(BodyFrame::Trailers(trailers)))
            }
            Some(Err(_)) => {
                self.body_done = true;
                Err(RequestBodyError::Gone)
            }
            None => {
                self.body_done = true;
                Ok(None)
            }
        }
    }

    /// Resolves when the client resets the stream (or the connection goes).
    pub(crate) async fn closed(&mut self) {
        let (conn, id) = (&self.conn, self.id);
        poll_fn(|cx| conn.borrow_mut().poll_reset(id, cx)).await;
    }

    pub(crate) fn response_started(&self) -> bool {
        self.started
    }

    /// Whether the client reset the stream (before its response ended).
    fn reset_by_client(&mut self) -> bool {
        !self.ended && self.conn.borrow().reset_by_peer(self.id)
    }

    /// Whether the stream is reset already (checked without waiting): then
    /// nothing is forwarded for it.
    pub(crate) fn gone_now(&mut self) -> bool {
        self.conn.borrow().is_reset(self.id)
    }

    pub(crate) fn status(&self) -> Option<http::StatusCode> {
        self.status
    }

    pub(crate) fn send_head(&mut self, head: ResponseHead) -> Result<(), WriteError> {
        let no_body = bodiless(&self.method, head.status);
        let mut headers = head.headers;
        // HTTP/2 has no connection-specific fields (RFC 9113 §8.2.2).
        headers.remove_hop_by_hop();
        // `content-length` must match the DATA sent, except on HEAD where it
        // describes the representation.
        if self.method != Method::HEAD {
            let length = match head.body {
                BodySize::Exact(n) if !no_body => Some(n),
                _ => None,
            };
            // Mostly the upstream's own field says it already: kept as is
            // (a new value is an allocation).
            let mut lengths = headers.get_all(&header::CONTENT_LENGTH);
            let said = lengths
                .next()
                .filter(|v| v.iter().all(u8::is_ascii_digit))
                .and_then(|v| std::str::from_utf8(v).ok()?.parse::<u64>().ok());
            let kept = said.is_some() && said == length && lengths.next().is_none();
            drop(lengths);
            if !kept {
                headers.remove(&header::CONTENT_LENGTH);
                if let Some(n) = length {
                    headers.insert(header::CONTENT_LENGTH, n.into());
                }
            }
        }
        let end = no_body || matches!(head.body, BodySize::Empty | BodySize::Exact(0));
        let status = head.status.as_u16();
        let mut conn = self.conn.borrow_mut();
        let sent = match &headers {
            HeadFields::Received(fields) => conn.send_response(self.id, status, fields.iter(), end),
            HeadFields::Map(map) => conn.send_response(self.id, status, fields_of(map), end),
        };
        sent.map_err(|_| WriteError)?;
        self.started = true;
        self.status = Some(head.status);
        self.ended = end;
        Ok(())
    }

    pub(crate) async fn send_data(&mut self, data: Bytes) -> Result<(), WriteError> {
        if !self.started || self.ended {
            return Ok(());
        }
        self.send(data, false).await
    }

    pub(crate) async fn send_last(&mut self, data: Bytes) -> Result<(), WriteError> {
        if !self.started || self.ended {
            return Ok(());
        }
        self.ended = true;
        self.send(data, true).await
    }

    /// Queues `data` as the client's window and the output allow.
    async fn send(&mut self, mut data: Bytes, end: bool) -> Result<(), WriteError> {
        let (conn, id) = (&self.conn, self.id);
        poll_fn(|cx| conn.borrow_mut().poll_send_data(id, &mut data, end, cx)).await.map_err(|_| WriteError)
    }

    pub(crate) fn send_trailers(&mut self, trailers: &HeaderMap) -> Result<(), WriteError> {
        if !self.started || self.ended {
            return Ok(());
        }
        self.ended = true;
        self.conn.borrow_mut().send_trailers(self.id, fields_of(trailers)).map_err(|_| WriteError)
    }

    pub(crate) fn finish(&mut self) -> Result<(), WriteError> {
        if !self.started || self.ended {
            return Ok(());
        }
        self.ended = true;
        let mut cx = TaskContext::from_waker(Waker::noop());
        // An empty last frame needs neither window nor room: ready at once.
        match self.conn.borrow_mut().poll_send_data(self.id, &mut Bytes::new(), true, &mut cx) {
            Poll::Ready(Ok(())) => Ok(()),
            _ => Err(WriteError),
        }
    }

    pub(crate) fn abort(&mut self) {
        self.conn.borrow_mut().reset(self.id, Reason::INTERNAL_ERROR);
        self.ended = true;
    }
}

/// A map's fields as the codec takes them.
fn fields_of(map: &HeaderMap) -> impl Iterator<Item = (&[u8], &[u8])> {
    map.iter().map(|(name, value)| (name.as_str().as_bytes(), value.as_bytes()))
}

/// A socket with bytes already read from it put back in front (the
/// preface read while choosing the protocol).
pub(crate) struct Rewind {
    prefix: Bytes,
    pub(super) inner: Io,
}

impl Rewind {
    pub(crate) fn new(prefix: Bytes, inner: Io) -> Rewind {
        Rewind { prefix, inner }
    }
}

impl Rewind {
    /// Ready when a read would not wait (see [`Io::poll_readable`]).
    fn poll_readable(&self, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            return Poll::Ready(Ok(()));
        }
        self.inner.poll_readable(cx)
    }
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            if self.prefix.is_empty() {
                // An empty `Bytes` still holds its allocation: the 8 KiB
                // read buffer the preface was read into, for the
                // connection's life.
                self.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
