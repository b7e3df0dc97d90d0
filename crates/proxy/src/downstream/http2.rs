//! A client's HTTP/2 connection (h2c with prior knowledge, or `h2` agreed
//! by ALPN over TLS), on the `h2` crate: the connection task accepts streams and runs
//! each as a local task on this worker, through the same
//! [`crate::stream`] as HTTP/1.1.
//!
//! Flow control is end to end: request body capacity is given back to the
//! client only as the body is taken (by an upstream write), and response
//! data is sent only as the client grants capacity, so a slow reader slows
//! the upstream read rather than filling memory.

use std::cell::Cell;
use std::future::poll_fn;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context as TaskContext, Poll, Waker};

use bytes::{Buf, Bytes};
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use http::uri::Authority;
use http::{HeaderMap, Method, Request, header};
use nuncio_context::{Context, Done};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{Codec, Downstream, WriteError};
use crate::bounded::within;
use crate::io::Io;
use crate::message::{BodyFrame, BodySize, HeadFields, RequestBodyError, RequestHead, ResponseHead, bodiless};
use crate::worker::Worker;

/// Streams a client may have open at once (nginx's default).
const MAX_CONCURRENT_STREAMS: u32 = 128;
/// Streams a client may reset before nuncio took them (`h2`'s bound on
/// the rapid-reset attack, CVE-2023-44487), and streams nuncio may have to
/// reset because of what the client sent (MadeYouReset, CVE-2025-8671):
/// past either, the connection ends with GOAWAY.
const MAX_PENDING_ACCEPT_RESETS: usize = 50;
const MAX_LOCAL_ERROR_RESETS: usize = 100;
/// Streams the client reset before their response ended ("premature"
/// resets): once a connection has had this many streams, it is closed
/// (GOAWAY `ENHANCE_YOUR_CALM`) while more than half of them were reset so
/// (Envoy's premature-reset rule). Each such stream may have reached the
/// upstream; the bound is on how many.
const PREMATURE_RESET_MIN_STREAMS: u64 = 100;
/// HPACK lets a few bytes on the wire stand for a large header list (an
/// entry referenced again and again), which nuncio would forward in full
/// to HTTP/1.1 upstreams. A connection whose decoded header bytes pass this
/// many (1 MiB)...
const HPACK_MIN_DECODED: u64 = 1 << 20;
/// ...and this many times the bytes it sent is closed. Ordinary clients
/// compress well (a cookie sent once, referenced after), but not 500-fold
/// over a whole connection.
const HPACK_MAX_RATIO: u64 = 500;
/// Per-stream receive window: large enough that one stream's upload is not
/// throttled by round trips on a fast link.
const STREAM_WINDOW: u32 = 1024 * 1024;
const CONNECTION_WINDOW: u32 = 4 * 1024 * 1024;

/// Serves one HTTP/2 connection until the client closes it or it idles
/// out.
pub(crate) async fn serve(
    worker: Rc<Worker>,
    listener: Rc<str>,
    io: Rewind,
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
    let mut builder = h2::server::Builder::new();
    builder
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_header_list_size(u32::try_from(settings.max_request_headers_bytes).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESETS)
        .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS));
    let wire = io.bytes_read();
    // The preface and SETTINGS exchange is bounded like a request head.
    let handshake = within(settings.request_headers_timeout, builder.handshake::<_, Bytes>(io)).await;
    let Some(Ok(mut conn)) = handshake else { return };
    let streams = Rc::new(OpenStreams::default());
    let abuse = Rc::new(Abuse::default());
    let mut idle = std::pin::pin!(IdleTimer::new(settings.idle_timeout));
    let mut goaway_sent = false;
    // `drained`: one waiter on the drain for the connection's life, not
    // one per stream; polled only until it fires (then `goaway_sent`).
    loop {
        // Idle (no stream open) for `idle_timeout`, or the listener drains:
        // say goodbye (GOAWAY), then let the codec finish the streams in
        // flight and the exchange.
        let event = poll_fn(|cx| {
            if let Poll::Ready(accepted) = conn.poll_accept(cx) {
                return Poll::Ready(Some(accepted));
            }
            if goaway_sent {
                return Poll::Pending;
            }
            if Pin::new(&mut drained).poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            if streams.count.get() > 0 {
                // The last stream to end wakes this task to start the timer.
                idle.as_mut().busy();
                streams.wait(cx.waker());
                return Poll::Pending;
            }
            idle.as_mut().poll_idle(cx).map(|()| None)
        })
        .await;
        let Some(accepted) = event else {
            conn.graceful_shutdown();
            goaway_sent = true;
            continue;
        };
        // A new stream ends the idle spell, even one that ends before the
        // connection is next polled.
        idle.as_mut().busy();
        let (request, respond) = match accepted {
            Some(Ok(stream)) => stream,
            // The client closed, or broke the protocol (the codec has sent
            // GOAWAY with the reason).
            Some(Err(e)) => {
                tracing::debug!(%peer, error = %e, "HTTP/2 connection error");
                return;
            }
            None => return,
        };
        if let Some(why) = abuse.admit(&request, wire.get()) {
            // Streams in flight go on; the client gets no new one.
            crate::warn_limited::warn_limited!("h2-abuse", %peer, why, "closing an HTTP/2 connection (GOAWAY)");
            conn.abrupt_shutdown(Reason::ENHANCE_YOUR_CALM);
            goaway_sent = true;
        }
        streams.count.set(streams.count.get() + 1);
        let guard = OpenStream { streams: streams.clone(), abuse: abuse.clone() };
        let (worker, listener, tls) = (worker.clone(), listener.clone(), tls.clone());
        let (stream_ctx, cancel) = ctx.with_cancel();
        // Log lines say which request the stream serves (see
        // `stream::serve`). The task's future is a box: tokio moves a
        // spawned future by value several times (into its task cell, and
        // its whole stage again as the task ends). The stream's own future
        // (~6 KB) is boxed in place once it starts; what starts it (the
        // request, the respond handle, the stream's context: ~500 bytes)
        // is boxed here, so that those moves copy a pointer (the copies
        // were 5,300 instructions a request for the whole future, ~550
        // for the ~500 bytes).
        tokio::task::spawn_local(Box::pin(nuncio_trace::InRequest::new(None, async move {
            if crate::box_in_place!(serve_stream(&worker, &listener, request, respond, peer, tls, &stream_ctx)).await {
                guard.abuse.premature.set(guard.abuse.premature.get() + 1);
            }
            drop(cancel);
            drop(guard);
        })));
    }
}

/// What a connection's client did that a well-behaved one does not (see
/// [`PREMATURE_RESET_MIN_STREAMS`] and [`HPACK_MIN_DECODED`]).
#[derive(Default)]
struct Abuse {
    streams: Cell<u64>,
    /// Streams the client reset before their response ended.
    premature: Cell<u64>,
    /// Header bytes decoded from the client (HPACK's accounting: name,
    /// value and 32 bytes per field).
    decoded: Cell<u64>,
}

impl Abuse {
    /// Counts a new stream; why the connection must end, if it must.
    fn admit(&self, request: &Request<RecvStream>, wire: u64) -> Option<&'static str> {
        self.streams.set(self.streams.get() + 1);
        let fields: u64 =
            request.headers().iter().map(|(name, value)| (name.as_str().len() + value.len()) as u64 + 32).sum();
        // The pseudo-fields' lengths, read in place (formatting the URI
        // to measure it was an allocation a stream).
        let uri = request.uri();
        let uri_len = uri.scheme_str().map_or(0, |s| s.len() + "://".len())
            + uri.authority().map_or(0, |a| a.as_str().len())
            + uri.path_and_query().map_or(0, |p| p.as_str().len());
        let pseudo = (request.method().as_str().len() + uri_len) as u64 + 4 * 32;
        self.decoded.set(self.decoded.get() + fields + pseudo);
        let (streams, premature, decoded) = (self.streams.get(), self.premature.get(), self.decoded.get());
        if streams >= PREMATURE_RESET_MIN_STREAMS && premature * 2 > streams {
            return Some("most of its streams were reset before their response ended");
        }
        if decoded > HPACK_MIN_DECODED && decoded > HPACK_MAX_RATIO * wire.max(1) {
            return Some("its header compression expands far more than an ordinary client's");
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
    request: Request<RecvStream>,
    respond: SendResponse<Bytes>,
    peer: SocketAddr,
    tls: Option<Rc<nuncio_tls::SessionInfo>>,
    ctx: &Context,
) -> bool {
    // Each stream is served with the snapshot current when it began.
    let Ok(local) = worker.local.get() else { return false };
    let Some(listener_snapshot) = local.snapshot.listeners.get(listener) else { return false };
    let (parts, body) = request.into_parts();
    let authority = parts
        .uri
        .authority()
        .cloned()
        .or_else(|| parts.headers.get(header::HOST).and_then(|h| Authority::try_from(h.as_bytes()).ok()));
    let size = if body.is_end_stream() { BodySize::Empty } else { BodySize::from_content_length(&parts.headers) };
    let head = RequestHead {
        method: parts.method,
        uri: parts.uri,
        version: parts.version,
        headers: parts.headers.into(),
        authority,
        body: size,
        upgrade: false,
        expect_continue: false,
    };
    let expect_continue = size != BodySize::Empty
        && head.headers.get(&header::EXPECT).is_some_and(|v| v.eq_ignore_ascii_case(b"100-continue"));
    let mut head = RequestHead { expect_continue, ..head };
    let exchange = Exchange {
        method: head.method.clone(),
        body,
        body_done: size == BodySize::Empty,
        peeked: None,
        continue_pending: expect_continue,
        respond,
        send: None,
        status: None,
        ended: false,
        peer,
        tls,
    };
    let mut downstream = Downstream::new(Codec::Http2(exchange), super::BodyClock::new(&listener_snapshot.config));
    crate::stream::serve(worker, &local, listener_snapshot, &mut downstream, &mut head, ctx).await;
    let Codec::Http2(exchange) = &mut downstream.codec else { return false };
    exchange.reset_by_client()
}

/// The client side of one HTTP/2 stream.
pub(crate) struct Exchange {
    method: Method,
    body: RecvStream,
    body_done: bool,
    /// What `body_ready` read, not yet taken by `read_body`.
    peeked: Option<Result<Option<BodyFrame>, RequestBodyError>>,
    /// `expect: 100-continue` not yet answered: answered (with an
    /// informational `100`) when the body is first read, so a request
    /// refused before that never gets it.
    continue_pending: bool,
    respond: SendResponse<Bytes>,
    /// The response body's stream, once the head went out.
    send: Option<SendStream<Bytes>>,
    status: Option<http::StatusCode>,
    /// END_STREAM sent.
    ended: bool,
    peer: SocketAddr,
    /// The connection's TLS session, if it has one.
    tls: Option<Rc<nuncio_tls::SessionInfo>>,
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
            let mut interim = http::Response::new(());
            *interim.status_mut() = http::StatusCode::CONTINUE;
            let _ = self.respond.send_informational(interim);
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
            None => self.body_done || self.body.is_end_stream(),
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

    /// Cancel-safe: `data` and `trailers` are, and the state changes only
    /// once one of them answered.
    async fn next_frame(&mut self) -> Result<Option<BodyFrame>, RequestBodyError> {
        if self.body_done {
            return Ok(None);
        }
        loop {
            match self.body.data().await {
                Some(Ok(data)) => {
                    // The window reopens as the body is taken: the client
                    // sends no faster than the upstream accepts.
                    let _ = self.body.flow_control().release_capacity(data.len());
                    if !data.is_empty() {
                        return Ok(Some(BodyFrame::Data(data)));
                    }
                }
                Some(Err(_)) => {
                    self.body_done = true;
                    return Err(RequestBodyError::Gone);
                }
                None => {
                    // Done only once the trailers are in: a read cancelled
                    // while they are awaited (the filters wait for a handle
                    // call beside it) asks again.
                    let trailers = self.body.trailers().await;
                    self.body_done = true;
                    return match trailers {
                        Ok(Some(trailers)) => Ok(Some(BodyFrame::Trailers(trailers))),
                        Ok(None) => Ok(None),
                        Err(_) => Err(RequestBodyError::Gone),
                    };
                }
            }
        }
    }

    /// Resolves when the client resets the stream (or the connection goes).
    pub(crate) async fn closed(&mut self) {
        match &mut self.send {
            Some(send) => {
                let _ = poll_fn(|cx| send.poll_reset(cx)).await;
            }
            None => {
                let _ = poll_fn(|cx| self.respond.poll_reset(cx)).await;
            }
        }
    }

    pub(crate) fn response_started(&self) -> bool {
        self.send.is_some()
    }

    /// Whether the client reset the stream (before its response ended).
    fn reset_by_client(&mut self) -> bool {
        let waker = Waker::noop();
        let mut cx = TaskContext::from_waker(waker);
        let reset = match &mut self.send {
            Some(send) => send.poll_reset(&mut cx),
            None => self.respond.poll_reset(&mut cx),
        };
        !self.ended && matches!(reset, Poll::Ready(Ok(_)))
    }

    /// Whether the client has reset the stream already (checked without
    /// waiting): then nothing is forwarded for it.
    pub(crate) fn gone_now(&mut self) -> bool {
        let waker = Waker::noop();
        let mut cx = TaskContext::from_waker(waker);
        let reset = match &mut self.send {
            Some(send) => send.poll_reset(&mut cx),
            None => self.respond.poll_reset(&mut cx),
        };
        reset.is_ready()
    }

    pub(crate) fn status(&self) -> Option<http::StatusCode> {
        self.status
    }

    pub(crate) fn send_head(&mut self, head: ResponseHead) -> Result<(), WriteError> {
        let no_body = bodiless(&self.method, head.status);
        let mut headers = head.headers;
        // HTTP/2 has no connection-specific fields (RFC 9113 §8.2.2).
        headers.remove_hop_by_hop();
        // `content-length` must match the DATA sent (the codec checks), except
        // on HEAD where it describes the representation.
        if self.method != Method::HEAD {
            headers.remove(&header::CONTENT_LENGTH);
            if let BodySize::Exact(n) = head.body
                && !no_body
            {
                headers.insert(header::CONTENT_LENGTH, n.into());
            }
        }
        // Values that do not share the buffer they were read into (HPACK
        // keeps them: see `own_values`).
        let headers = match headers {
            HeadFields::Received(fields) => fields.to_owned_map(),
            HeadFields::Map(mut map) => {
                crate::message::own_values(&mut map);
                map
            }
        };
        let end = no_body || matches!(head.body, BodySize::Empty | BodySize::Exact(0));
        let mut response = http::Response::new(());
        *response.status_mut() = head.status;
        *response.headers_mut() = headers;
        let send = self.respond.send_response(response, end).map_err(|_| WriteError)?;
        self.send = Some(send);
        self.status = Some(head.status);
        self.ended = end;
        Ok(())
    }

    pub(crate) async fn send_data(&mut self, data: Bytes) -> Result<(), WriteError> {
        let Some(send) = self.send.as_mut().filter(|_| !self.ended) else { return Ok(()) };
        crate::io::send_all(send, data, false).await.map_err(|_| WriteError)
    }

    pub(crate) async fn send_last(&mut self, data: Bytes) -> Result<(), WriteError> {
        let Some(send) = self.send.as_mut().filter(|_| !self.ended) else { return Ok(()) };
        self.ended = true;
        crate::io::send_all(send, data, true).await.map_err(|_| WriteError)
    }

    pub(crate) fn send_trailers(&mut self, trailers: HeaderMap) -> Result<(), WriteError> {
        let Some(send) = self.send.as_mut().filter(|_| !self.ended) else { return Ok(()) };
        self.ended = true;
        send.send_trailers(trailers).map_err(|_| WriteError)
    }

    pub(crate) fn finish(&mut self) -> Result<(), WriteError> {
        let Some(send) = self.send.as_mut().filter(|_| !self.ended) else { return Ok(()) };
        self.ended = true;
        send.send_data(Bytes::new(), true).map_err(|_| WriteError)
    }

    pub(crate) fn abort(&mut self) {
        match &mut self.send {
            Some(send) => send.send_reset(Reason::INTERNAL_ERROR),
            None => self.respond.send_reset(Reason::INTERNAL_ERROR),
        }
        self.ended = true;
    }
}

/// A socket with bytes already read from it put back in front (the
/// preface read while choosing the protocol).
pub(crate) struct Rewind {
    prefix: Bytes,
    inner: Io,
    /// Bytes read from the socket so far (the preface included).
    read: Rc<Cell<u64>>,
}

impl Rewind {
    pub(crate) fn new(prefix: Bytes, inner: Io) -> Rewind {
        let read = Rc::new(Cell::new(prefix.len() as u64));
        Rewind { prefix, inner, read }
    }

    /// The count of bytes read from the socket, as it goes on.
    fn bytes_read(&self) -> Rc<Cell<u64>> {
        self.read.clone()
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
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = &self.read;
        read.set(read.get() + (buf.filled().len() - before) as u64);
        polled
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
