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
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use nuncio_config::ListenerProtocol;
use nuncio_context::Context;
use tokio::net::TcpStream;

use crate::filter_manager::{Chain, Outcome};
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
    /// The listener's filters, when it has any: every response head passes
    /// their response hooks on its way out.
    pub(crate) filters: Option<Box<Chain>>,
    /// A response hook answered instead: what the caller still sends of the
    /// original response is dropped.
    replaced: bool,
    /// Request body frames that came out of the filters, not yet taken.
    filtered: VecDeque<BodyFrame>,
    /// The filtered request body ended.
    filtered_end: bool,
}

/// The protocol of a [`Downstream`].
pub(crate) enum Codec<'c> {
    Http1(http1::Exchange<'c>),
    Http2(http2::Exchange),
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
        if self.filters.is_none() {
            return self.read_body_raw().await;
        }
        // Through the request body hooks: a frame in may give none out (a
        // filter buffering) or several (a buffer released at the end).
        loop {
            if let Some(frame) = self.filtered.pop_front() {
                return Ok(Some(frame));
            }
            if self.filtered_end {
                return Ok(None);
            }
            let frame = self.read_body_raw().await?;
            self.filtered_end = frame.is_none() || matches!(frame, Some(BodyFrame::Trailers(_)));
            let Some(chain) = &mut self.filters else { return Ok(frame) };
            match chain.request_body(frame, &mut self.filtered).await {
                Outcome::Continue => {}
                Outcome::Reply(reply) => return Err(ReadError::Replied(reply)),
                Outcome::Gone => return Err(ReadError::Closed),
            }
        }
    }

    async fn read_body_raw(&mut self) -> Result<Option<BodyFrame>, ReadError> {
        let frame = match &mut self.codec {
            Codec::Http1(e) => e.read_body().await,
            Codec::Http2(e) => e.read_body().await,
        };
        if let Ok(Some(BodyFrame::Data(data))) = &frame {
            self.bytes_received += data.len() as u64;
        }
        frame
    }

    /// Resolves when the client leaves: closes or resets the connection
    /// (HTTP/1.1, where a half-close counts as leaving, as in nginx) or
    /// resets the stream (HTTP/2). Cancel-safe.
    pub(crate) async fn closed(&mut self) {
        match &mut self.codec {
            Codec::Http1(e) => e.closed().await,
            Codec::Http2(e) => e.closed().await,
        }
    }

    /// The response status, once a head was sent.
    pub(crate) fn status(&self) -> Option<StatusCode> {
        match &self.codec {
            Codec::Http1(e) => e.status(),
            Codec::Http2(e) => e.status(),
        }
    }

    /// Whether a response head went out (or is queued): after that, a
    /// failure can only abort the stream.
    pub(crate) fn response_started(&self) -> bool {
        match &self.codec {
            Codec::Http1(e) => e.response_started(),
            Codec::Http2(e) => e.response_started(),
        }
    }

    /// Starts the response. The HTTP/1.1 codec buffers the head so that it
    /// leaves with the first body bytes (one write for a small response).
    pub(crate) async fn send_head(&mut self, mut head: ResponseHead) -> Result<(), WriteError> {
        if let Some(chain) = &mut self.filters {
            chain.drain_forwarded();
            let mut view =
                nuncio_filter::ResponseHead { status: head.status, headers: std::mem::take(&mut head.headers) };
            let end = head.body == BodySize::Empty;
            match chain.response_headers(&mut view, end).await {
                Outcome::Continue => {
                    head.status = view.status;
                    head.headers = view.headers;
                }
                Outcome::Gone => return Err(WriteError),
                Outcome::Reply(reply) => {
                    // The filter's answer goes out as is (its own hooks do
                    // not run again); the original response is dropped.
                    self.replaced = true;
                    return self.send_raw_reply(reply).await;
                }
            }
        }
        self.send_head_raw(head).await
    }

    async fn send_head_raw(&mut self, head: ResponseHead) -> Result<(), WriteError> {
        match &mut self.codec {
            Codec::Http1(e) => {
                e.send_head(head);
                Ok(())
            }
            Codec::Http2(e) => e.send_head(head),
        }
    }

    /// Sends a piece of the response body, waiting for the client to take
    /// it (TCP or HTTP/2 flow control): the upstream is read no faster.
    pub(crate) async fn send_data(&mut self, data: Bytes) -> Result<(), WriteError> {
        if self.replaced {
            return Ok(());
        }
        self.send_data_raw(data).await
    }

    async fn send_data_raw(&mut self, data: Bytes) -> Result<(), WriteError> {
        let mut data = data;
        // A filter's own local reply (sent raw) does not pass the hooks.
        if !self.replaced
            && let Some(chain) = &mut self.filters
            && let Outcome::Reply(_) = chain.response_body(&mut data, false).await
        {
            // The head is out: a filter refusing the body can only cut it.
            self.abort();
            return Err(WriteError);
        }
        self.bytes_sent += data.len() as u64;
        match &mut self.codec {
            Codec::Http1(e) => e.send_data(data).await,
            Codec::Http2(e) => e.send_data(data).await,
        }
    }

    /// Ends the response with trailer fields (dropped if the response is
    /// not chunked HTTP/1.1 or HTTP/2: nothing else can carry them).
    pub(crate) async fn send_trailers(&mut self, mut trailers: HeaderMap) -> Result<(), WriteError> {
        if self.replaced {
            return Ok(());
        }
        if let Some(chain) = &mut self.filters
            && let Outcome::Reply(_) = chain.response_trailers(&mut trailers).await
        {
            self.abort();
            return Err(WriteError);
        }
        match &mut self.codec {
            Codec::Http1(e) => e.send_trailers(trailers).await,
            Codec::Http2(e) => e.send_trailers(trailers),
        }
    }

    /// Ends the response (no-op if trailers ended it).
    pub(crate) async fn finish(&mut self) -> Result<(), WriteError> {
        if self.replaced {
            return Ok(());
        }
        self.finish_raw().await
    }

    async fn finish_raw(&mut self) -> Result<(), WriteError> {
        match &mut self.codec {
            Codec::Http1(e) => e.finish().await,
            Codec::Http2(e) => e.finish(),
        }
    }

    /// Sends what is buffered (a response head waiting for body bytes).
    pub(crate) async fn flush(&mut self) -> Result<(), WriteError> {
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
        self.send_head_raw(ResponseHead { status, headers, body: size }).await?;
        if !body.is_empty() {
            self.send_data_raw(body).await?;
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

/// Runs `fut` under an optional timeout: `None` when it ran out.
pub(crate) async fn within<F: Future>(limit: Option<Duration>, fut: F) -> Option<F::Output> {
    match limit {
        Some(limit) => tokio::time::timeout(limit, fut).await.ok(),
        None => Some(fut.await),
    }
}
