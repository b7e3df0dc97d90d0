//! A client's HTTP/2 connection (h2c with prior knowledge; ALPN comes with
//! TLS), on the `h2` crate: the connection task accepts streams and runs
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
use std::task::{Context as TaskContext, Poll};

use bytes::{Buf, Bytes};
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use http::uri::Authority;
use http::{HeaderMap, Method, Request, header};
use nuncio_context::Context;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::{Codec, Downstream, WriteError};
use crate::bounded::within;
use crate::message::{BodyFrame, BodySize, RequestBodyError, RequestHead, ResponseHead, bodiless};
use crate::worker::Worker;

/// Streams a client may have open at once (nginx's default).
const MAX_CONCURRENT_STREAMS: u32 = 128;
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
    ctx: Context,
    draining: Context,
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
        .max_header_list_size(u32::try_from(settings.max_request_headers_bytes).unwrap_or(u32::MAX));
    // The preface and SETTINGS exchange is bounded like a request head.
    let handshake = within(settings.request_headers_timeout, builder.handshake::<_, Bytes>(io)).await;
    let Some(Ok(mut conn)) = handshake else { return };
    let open = Rc::new(Cell::new(0usize));
    let idle = Rc::new(Notify::new());
    let mut goaway_sent = false;
    loop {
        // Idle (no stream open) for `idle_timeout`, or the listener drains:
        // say goodbye (GOAWAY), then let the codec finish the streams in
        // flight and the exchange.
        let accepted = if goaway_sent {
            conn.accept().await
        } else if open.get() == 0 {
            tokio::select! {
                accepted = within(settings.idle_timeout, conn.accept()) => match accepted {
                    Some(accepted) => accepted,
                    None => {
                        conn.graceful_shutdown();
                        goaway_sent = true;
                        continue;
                    }
                },
                _ = draining.done() => {
                    conn.graceful_shutdown();
                    goaway_sent = true;
                    continue;
                }
            }
        } else {
            tokio::select! {
                accepted = conn.accept() => accepted,
                () = idle.notified() => continue,
                _ = draining.done(), if !goaway_sent => {
                    conn.graceful_shutdown();
                    goaway_sent = true;
                    continue;
                }
            }
        };
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
        open.set(open.get() + 1);
        let guard = OpenStream { open: open.clone(), idle: idle.clone() };
        let (worker, listener) = (worker.clone(), listener.clone());
        let (stream_ctx, cancel) = ctx.with_cancel();
        tokio::task::spawn_local(async move {
            serve_stream(&worker, &listener, request, respond, peer, &stream_ctx).await;
            drop(cancel);
            drop(guard);
        });
    }
}

/// Counts an open stream; the last one to end wakes the idle timer.
struct OpenStream {
    open: Rc<Cell<usize>>,
    idle: Rc<Notify>,
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.open.set(self.open.get() - 1);
        if self.open.get() == 0 {
            self.idle.notify_one();
        }
    }
}

async fn serve_stream(
    worker: &Worker,
    listener: &str,
    request: Request<RecvStream>,
    respond: SendResponse<Bytes>,
    peer: SocketAddr,
    ctx: &Context,
) {
    // Each stream is served with the snapshot current when it began.
    let Ok(local) = worker.local.get() else { return };
    let Some(listener_snapshot) = local.snapshot.listeners.get(listener) else { return };
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
        headers: parts.headers,
        authority,
        body: size,
        upgrade: false,
    };
    let exchange = Exchange {
        method: head.method.clone(),
        body,
        body_done: size == BodySize::Empty,
        peeked: None,
        respond,
        send: None,
        status: None,
        ended: false,
        peer,
    };
    let mut downstream = Downstream::new(Codec::Http2(exchange));
    crate::stream::serve(worker, &local, listener_snapshot, &mut downstream, head, ctx).await;
}

/// The client side of one HTTP/2 stream.
pub(crate) struct Exchange {
    method: Method,
    body: RecvStream,
    body_done: bool,
    /// What `body_ready` read, not yet taken by `read_body`.
    peeked: Option<Result<Option<BodyFrame>, RequestBodyError>>,
    respond: SendResponse<Bytes>,
    /// The response body's stream, once the head went out.
    send: Option<SendStream<Bytes>>,
    status: Option<http::StatusCode>,
    /// END_STREAM sent.
    ended: bool,
    peer: SocketAddr,
}

impl Exchange {
    pub(crate) fn peer(&self) -> SocketAddr {
        self.peer
    }

    pub(crate) async fn read_body(&mut self) -> Result<Option<BodyFrame>, RequestBodyError> {
        match self.peeked.take() {
            Some(peeked) => peeked,
            None => self.next_frame().await,
        }
    }

    /// Cancel-safe: reads the next frame for `read_body`.
    pub(crate) async fn body_ready(&mut self) {
        if self.peeked.is_none() {
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

    pub(crate) fn status(&self) -> Option<http::StatusCode> {
        self.status
    }

    pub(crate) fn send_head(&mut self, head: ResponseHead) -> Result<(), WriteError> {
        let no_body = bodiless(&self.method, head.status);
        let mut headers = head.headers;
        // HTTP/2 has no connection-specific fields (RFC 9113 §8.2.2).
        nuncio_http1::remove_hop_by_hop(&mut headers);
        // `content-length` must match the DATA sent (the codec checks), except
        // on HEAD where it describes the representation.
        if self.method != Method::HEAD {
            headers.remove(header::CONTENT_LENGTH);
            if let BodySize::Exact(n) = head.body
                && !no_body
            {
                headers.insert(header::CONTENT_LENGTH, n.into());
            }
        }
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
        crate::io::send_all(send, data).await.map_err(|_| WriteError)
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
    inner: TcpStream,
}

impl Rewind {
    pub(crate) fn new(prefix: Bytes, inner: TcpStream) -> Rewind {
        Rewind { prefix, inner }
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
