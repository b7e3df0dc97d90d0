//! The client side: a connection's protocol, and the client side of each
//! stream on it.
//!
//! [`serve`] looks at the first bytes of a connection (listener `protocol:
//! auto`): the HTTP/2 connection preface means h2c with prior knowledge,
//! anything else HTTP/1.1. Either way each request becomes a
//! [`Downstream`] — the one interface [`crate::stream`] reads the request
//! body from and writes the response to — so the stream layer never knows
//! which protocol the client speaks.

mod http1;
mod http2;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use nuncio_config::ListenerProtocol;
use nuncio_context::Context;
use tokio::net::TcpStream;

use crate::bounded::within;
use crate::filter_manager::{Chain, Direction, Outcome, Piece};
use crate::message::{BodyFrame, BodySize, ResponseHead};
use crate::worker::Worker;
use nuncio_filter::LocalReply;

/// What starts every HTTP/2 connection (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Why reading the request body stopped.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The client closed or reset the connection (or the stream).
    Closed,
    /// The client sent a body the codec refuses.
    Invalid(nuncio_http1::Error),
    /// A filter answered while the body passed it (or the body overflowed
    /// a buffering filter): send this instead.
    Replied(LocalReply),
}

/// The client is gone: a response write failed.
#[derive(Debug)]
pub(crate) struct WriteError;

/// Serves one accepted client connection until it closes: picks the
/// protocol, then hands over to that protocol's connection loop.
pub(crate) async fn serve(
    worker: Rc<Worker>,
    listener: Rc<str>,
    socket: TcpStream,
    peer: SocketAddr,
    ctx: Context,
    draining: Context,
) {
    // The listener closing for good (a drain out of time) ends the
    // connection wherever it is.
    let (closed, local) = (ctx.clone(), worker.local.clone());
    tokio::select! {
        // First: once closed, not a byte more (the stream would otherwise
        // see its context cancelled and answer).
        biased;
        _ = closed.done() => {
            if let Ok(local) = local.get() {
                local.stats.inc(local.snapshot.stats.downstream_cx_drain_close);
            }
        }
        () = serve_protocol(worker, listener, socket, peer, ctx, draining) => {}
    }
}

async fn serve_protocol(
    worker: Rc<Worker>,
    listener: Rc<str>,
    socket: TcpStream,
    peer: SocketAddr,
    ctx: Context,
    draining: Context,
) {
    let Some((protocol, idle)) = worker
        .local
        .with(|l| l.snapshot.listeners.get(&*listener).map(|l| (l.config.protocol, l.config.idle_timeout)))
        .ok()
        .flatten()
    else {
        return;
    };
    let mut conn = http1::Connection::new(socket, peer, draining.clone());
    match protocol {
        ListenerProtocol::Http1 => http1::serve(worker, listener, conn, ctx).await,
        ListenerProtocol::Http2 => Box::pin(http2::serve(worker, listener, conn.into_io(), peer, ctx, draining)).await,
        ListenerProtocol::Auto => {
            // Read until the bytes stop looking like the preface (one read
            // for any HTTP/1.1 request) or the whole preface is there.
            while conn.read_buf.len() < PREFACE.len() && PREFACE.starts_with(&conn.read_buf) {
                if within(idle, conn.read_more()).await.is_none_or(|r| r.is_err()) {
                    return;
                }
            }
            if conn.read_buf.starts_with(PREFACE) {
                Box::pin(http2::serve(worker, listener, conn.into_io(), peer, ctx, draining)).await;
            } else {
                http1::serve(worker, listener, conn, ctx).await;
            }
        }
    }
}

/// The client side of one stream: where the request body comes from and
/// the response goes to, with the bytes counted both ways.
pub(crate) struct Downstream<'c> {
    pub(crate) codec: Codec<'c>,
    /// Request body bytes read.
    pub(crate) bytes_received: u64,
    /// Response body bytes sent.
    pub(crate) bytes_sent: u64,
    /// The listener's filters, when it has any: the request body passes
    /// their body hooks as it is read, and the response their response
    /// hooks on its way out.
    pub(crate) filters: Option<Box<Chain>>,
    /// A filter answered instead of the response: what the caller still
    /// sends of the original is dropped.
    replaced: bool,
    /// Request body pieces that came out of the filters, not yet taken.
    filtered: VecDeque<Piece>,
    /// The filtered request body ended.
    filtered_end: bool,
}

/// The protocol of a [`Downstream`].
pub(crate) enum Codec<'c> {
    Http1(http1::Exchange<'c>),
    Http2(http2::Exchange),
}

/// What interrupted a wait for the upstream ([`Downstream::interrupted`]).
pub(crate) enum Interrupt {
    /// The client left.
    ClientGone,
    /// A handle call for the stream's filters is queued: apply it with
    /// [`Downstream::apply_filter_calls`].
    FilterCalls,
}

/// What the request body read waited for.
enum Next {
    Frame(Result<Option<BodyFrame>, ReadError>),
    FilterCalls,
}

impl<'c> Downstream<'c> {
    fn new(codec: Codec<'c>) -> Downstream<'c> {
        Downstream {
            codec,
            bytes_received: 0,
            bytes_sent: 0,
            filters: None,
            replaced: false,
            filtered: VecDeque::new(),
            filtered_end: false,
        }
    }

    /// The client's address.
    pub(crate) fn peer(&self) -> SocketAddr {
        match &self.codec {
            Codec::Http1(e) => e.peer(),
            Codec::Http2(e) => e.peer(),
        }
    }

    /// The next piece of the request body; `None` once it ended. Trailers,
    /// if any, come last.
    pub(crate) async fn read_body(&mut self) -> Result<Option<BodyFrame>, ReadError> {
        let Some(chain) = self.filters.as_deref_mut() else {
            return read_raw(&mut self.codec, &mut self.bytes_received).await;
        };
        // Through the request body hooks: a piece in may give none out (a
        // filter holding it) or several (what a filter held, released).
        loop {
            match self.filtered.pop_front() {
                Some(Piece::Data(data)) => return Ok(Some(BodyFrame::Data(data))),
                Some(Piece::End(trailers)) => {
                    self.filtered_end = true;
                    return Ok(trailers.map(BodyFrame::Trailers));
                }
                None if self.filtered_end => return Ok(None),
                None => {}
            }
            // While a filter holds body, a handle call may release it: wait
            // for either (both reads are cancel-safe once the body started).
            let next = if chain.holding(Direction::Request) {
                tokio::select! {
                    frame = read_raw(&mut self.codec, &mut self.bytes_received) => Next::Frame(frame),
                    () = chain.calls_ready() => Next::FilterCalls,
                }
            } else {
                Next::Frame(read_raw(&mut self.codec, &mut self.bytes_received).await)
            };
            let closed = std::pin::pin!(codec_closed(&mut self.codec));
            let outcome = match next {
                Next::FilterCalls => {
                    Box::pin(chain.apply_body_calls(Direction::Request, &mut self.filtered, closed)).await
                }
                Next::Frame(frame) => {
                    let piece = match frame? {
                        Some(BodyFrame::Data(data)) => Piece::Data(data),
                        Some(BodyFrame::Trailers(trailers)) => Piece::End(Some(trailers)),
                        None => Piece::End(None),
                    };
                    chain.body(Direction::Request, piece, &mut self.filtered, closed).await
                }
            };
            match outcome {
                Outcome::Continue => {}
                Outcome::Reply(reply) => return Err(ReadError::Replied(reply)),
                Outcome::Gone => return Err(ReadError::Closed),
            }
        }
    }

    /// Resolves when the client leaves: closes or resets the connection
    /// (HTTP/1.1, where a half-close counts as leaving, as in nginx) or
    /// resets the stream (HTTP/2). Cancel-safe.
    pub(crate) async fn closed(&mut self) {
        codec_closed(&mut self.codec).await;
    }

    /// While waiting for the upstream: resolves when the client leaves, or
    /// when a call on the stream's handle is queued (filters only).
    /// Cancel-safe.
    pub(crate) async fn interrupted(&mut self) -> Interrupt {
        let Some(chain) = self.filters.as_deref() else {
            codec_closed(&mut self.codec).await;
            return Interrupt::ClientGone;
        };
        tokio::select! {
            () = codec_closed(&mut self.codec) => Interrupt::ClientGone,
            () = chain.calls_ready() => Interrupt::FilterCalls,
        }
    }

    /// Applies the queued handle calls to the response (a resume may
    /// release held body to the client).
    pub(crate) async fn apply_filter_calls(&mut self) -> Result<(), WriteError> {
        let Some(chain) = self.filters.as_deref_mut() else { return Ok(()) };
        let mut out = VecDeque::new();
        let outcome = {
            let closed = std::pin::pin!(codec_closed(&mut self.codec));
            Box::pin(chain.apply_body_calls(Direction::Response, &mut out, closed)).await
        };
        self.flow(outcome, out).await
    }

    /// The response status, once a head was sent.
    pub(crate) fn status(&self) -> Option<StatusCode> {
        match &self.codec {
            Codec::Http1(e) => e.status(),
            Codec::Http2(e) => e.status(),
        }
    }

    /// Whether a response is under way (its head sent, queued, or held
    /// back by the filters): after that, a failure can only abort the
    /// stream.
    pub(crate) fn response_started(&self) -> bool {
        if self.filters.as_ref().is_some_and(|chain| chain.held_head.is_some()) {
            return true;
        }
        match &self.codec {
            Codec::Http1(e) => e.response_started(),
            Codec::Http2(e) => e.response_started(),
        }
    }

    /// A filter answered instead of the response being sent: the rest of
    /// it is not wanted.
    pub(crate) fn response_replaced(&self) -> bool {
        self.replaced
    }

    /// Starts the response. The head goes out with the first body bytes
    /// (the HTTP/1.1 codec buffers it: one write for a small response);
    /// with filters it is held back until body comes out of them.
    pub(crate) async fn send_head(&mut self, mut head: ResponseHead) -> Result<(), WriteError> {
        let Some(chain) = self.filters.as_deref_mut() else { return self.write_head(head).await };
        let mut view = nuncio_filter::ResponseHead { status: head.status, headers: std::mem::take(&mut head.headers) };
        let end = head.body == BodySize::Empty;
        let outcome = {
            let closed = std::pin::pin!(codec_closed(&mut self.codec));
            Box::pin(chain.response_headers(&mut view, end, closed)).await
        };
        match outcome {
            Outcome::Continue => {
                head.status = view.status;
                head.headers = view.headers;
                chain.held_head = Some(head);
                Ok(())
            }
            Outcome::Gone => Err(WriteError),
            Outcome::Reply(reply) => {
                // The filter's answer goes out as is (its own hooks do not
                // run again); the original response is dropped.
                self.replaced = true;
                self.send_raw_reply(reply).await
            }
        }
    }

    /// Sends a piece of the response body, waiting for the client to take
    /// it (TCP or HTTP/2 flow control): the upstream is read no faster.
    pub(crate) async fn send_data(&mut self, data: Bytes) -> Result<(), WriteError> {
        self.send_piece(Piece::Data(data)).await
    }

    /// Ends the response with trailer fields (dropped if the response is
    /// not chunked HTTP/1.1 or HTTP/2: nothing else can carry them).
    pub(crate) async fn send_trailers(&mut self, trailers: HeaderMap) -> Result<(), WriteError> {
        self.send_piece(Piece::End(Some(trailers))).await
    }

    /// Ends the response (no-op if trailers ended it).
    pub(crate) async fn finish(&mut self) -> Result<(), WriteError> {
        self.send_piece(Piece::End(None)).await
    }

    /// A piece of the response through the response body hooks, then out.
    async fn send_piece(&mut self, piece: Piece) -> Result<(), WriteError> {
        if self.replaced {
            return Ok(());
        }
        let Some(chain) = self.filters.as_deref_mut() else { return self.write_piece(piece).await };
        let mut out = VecDeque::new();
        let outcome = {
            let closed = std::pin::pin!(codec_closed(&mut self.codec));
            chain.body(Direction::Response, piece, &mut out, closed).await
        };
        self.flow(outcome, out).await
    }

    /// Acts on what the response body hooks decided.
    async fn flow(&mut self, outcome: Outcome, out: VecDeque<Piece>) -> Result<(), WriteError> {
        match outcome {
            Outcome::Continue => self.write_pieces(out).await,
            Outcome::Gone => Err(WriteError),
            Outcome::Reply(reply) => {
                let held = self.filters.as_deref_mut().and_then(|chain| chain.held_head.take());
                if held.is_none() && self.response_started() {
                    // The head is out: a filter refusing the body can only
                    // cut the response.
                    self.abort();
                    return Err(WriteError);
                }
                self.replaced = true;
                self.send_raw_reply(reply).await
            }
        }
    }

    /// Writes what came out of the filters (or the piece itself, without
    /// filters); a held-back head goes first.
    async fn write_pieces(&mut self, mut out: VecDeque<Piece>) -> Result<(), WriteError> {
        while let Some(piece) = out.pop_front() {
            if self.filters.as_ref().is_some_and(|chain| chain.held_head.is_some()) {
                // The whole body is here when its end is: the exact length.
                let whole = matches!(piece, Piece::End(None)) || matches!(out.back(), Some(Piece::End(None)));
                let length = whole.then(|| {
                    std::iter::once(&piece)
                        .chain(out.iter())
                        .map(|p| if let Piece::Data(d) = p { d.len() as u64 } else { 0 })
                        .sum::<u64>()
                });
                self.release_head(length).await?;
            }
            self.write_piece(piece).await?;
        }
        Ok(())
    }

    async fn write_piece(&mut self, piece: Piece) -> Result<(), WriteError> {
        match piece {
            Piece::Data(data) => self.write_data(data).await,
            Piece::End(Some(trailers)) => self.write_trailers(trailers).await,
            Piece::End(None) => self.finish_raw().await,
        }
    }

    /// Writes the held-back head: with `length` when the whole body is
    /// known, else with the `content-length` the hooks left (none: chunked).
    async fn release_head(&mut self, length: Option<u64>) -> Result<(), WriteError> {
        let Some(mut head) = self.filters.as_deref_mut().and_then(|chain| chain.held_head.take()) else {
            return Ok(());
        };
        head.body = match (head.body, length) {
            (BodySize::Empty, _) => BodySize::Empty,
            (_, Some(n)) => BodySize::Exact(n),
            (BodySize::Exact(_), None) => BodySize::from_content_length(&head.headers),
            (BodySize::Unknown, None) => BodySize::Unknown,
        };
        self.write_head(head).await
    }

    async fn write_head(&mut self, head: ResponseHead) -> Result<(), WriteError> {
        if let Some(chain) = &mut self.filters {
            chain.response_started = true;
        }
        match &mut self.codec {
            Codec::Http1(e) => {
                e.send_head(head);
                Ok(())
            }
            Codec::Http2(e) => e.send_head(head),
        }
    }

    async fn write_data(&mut self, data: Bytes) -> Result<(), WriteError> {
        self.bytes_sent += data.len() as u64;
        match &mut self.codec {
            Codec::Http1(e) => e.send_data(data).await,
            Codec::Http2(e) => e.send_data(data).await,
        }
    }

    async fn write_trailers(&mut self, trailers: HeaderMap) -> Result<(), WriteError> {
        match &mut self.codec {
            Codec::Http1(e) => e.send_trailers(trailers).await,
            Codec::Http2(e) => e.send_trailers(trailers),
        }
    }

    async fn finish_raw(&mut self) -> Result<(), WriteError> {
        match &mut self.codec {
            Codec::Http1(e) => e.finish().await,
            Codec::Http2(e) => e.finish(),
        }
    }

    /// Sends what is buffered (a response head waiting for body bytes). A
    /// head the filters hold back goes now unless a filter holds response
    /// body (it may still replace the response).
    pub(crate) async fn flush(&mut self) -> Result<(), WriteError> {
        if let Some(chain) = self.filters.as_deref()
            && chain.held_head.is_some()
            && !chain.holding(Direction::Response)
        {
            self.release_head(None).await?;
        }
        match &mut self.codec {
            Codec::Http1(e) => e.flush().await,
            Codec::Http2(_) => Ok(()),
        }
    }

    /// The response cannot complete (the upstream failed mid-body): the
    /// client must see it fail rather than end short. HTTP/1.1 closes the
    /// connection; HTTP/2 resets the stream.
    pub(crate) fn abort(&mut self) {
        match &mut self.codec {
            Codec::Http1(e) => e.abort(),
            Codec::Http2(e) => e.abort(),
        }
    }

    /// A filter's local reply, past the response hooks.
    async fn send_raw_reply(&mut self, reply: LocalReply) -> Result<(), WriteError> {
        let LocalReply { status, mut headers, body } = reply;
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        let size = if body.is_empty() { BodySize::Empty } else { BodySize::Exact(body.len() as u64) };
        self.write_head(ResponseHead { status, headers, body: size }).await?;
        if !body.is_empty() {
            self.write_data(body).await?;
        }
        self.finish_raw().await
    }

    /// A filter's local reply from the request path: through the response
    /// hooks of the filters before it, like any response.
    pub(crate) async fn reply(&mut self, reply: LocalReply) {
        let LocalReply { status, headers, body } = reply;
        self.respond(status, headers, body).await;
    }

    /// A whole response nuncio makes itself.
    pub(crate) async fn respond(&mut self, status: StatusCode, mut headers: HeaderMap, body: Bytes) {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        let size = if body.is_empty() { BodySize::Empty } else { BodySize::Exact(body.len() as u64) };
        if self.send_head(ResponseHead { status, headers, body: size }).await.is_err() {
            return;
        }
        if !body.is_empty() && self.send_data(body).await.is_err() {
            return;
        }
        let _ = self.finish().await;
    }

    /// Answers with a short plain-text body saying why nuncio answered
    /// itself. Ignored if a response already started (then all that can be
    /// done is [`Downstream::abort`]).
    pub(crate) async fn local_reply(&mut self, status: StatusCode, message: &str) {
        if self.response_started() {
            self.abort();
            return;
        }
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        self.respond(status, headers, Bytes::from(format!("{message}\n"))).await;
    }

    /// Gives up on the client connection after this stream whatever the
    /// protocol would allow (a request the codec could not frame).
    pub(crate) fn close_connection(&mut self) {
        match &mut self.codec {
            Codec::Http1(e) => e.abort(),
            Codec::Http2(_) => {}
        }
    }
}

/// The next piece of the request body as the client sent it, counted.
async fn read_raw(codec: &mut Codec<'_>, received: &mut u64) -> Result<Option<BodyFrame>, ReadError> {
    let frame = match codec {
        Codec::Http1(e) => e.read_body().await,
        Codec::Http2(e) => e.read_body().await,
    };
    if let Ok(Some(BodyFrame::Data(data))) = &frame {
        *received += data.len() as u64;
    }
    frame
}

/// [`Downstream::closed`], on the codec alone (so the filters can wait on
/// it while the rest of the stream is borrowed).
async fn codec_closed(codec: &mut Codec<'_>) {
    match codec {
        Codec::Http1(e) => e.closed().await,
        Codec::Http2(e) => e.closed().await,
    }
}
