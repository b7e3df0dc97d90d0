//! A client's HTTP/1.1 connection: read heads with their timeouts, hand
//! each request to [`crate::stream`], answer in order, keep alive or close.
//!
//! Pipelined requests need nothing special: the next head is decoded from
//! the bytes already buffered only once the current response is written.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, StatusCode, Version, header};
use nuncio_context::Context;
use nuncio_http1::{BodyDecoder, BodyEvent, BodyFraming, Limits, Request, RequestDecoder};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::upstream::write_all_vectored;
use crate::worker::Worker;

/// Most bytes read ahead of the current request while watching for the
/// client to close ([`Downstream::closed`]).
const READ_AHEAD: usize = 64 * 1024;

/// The client side of a connection: its socket and reused buffers.
pub(crate) struct Downstream {
    pub(crate) stream: TcpStream,
    pub(crate) read_buf: BytesMut,
    pub(crate) write_buf: BytesMut,
    pub(crate) peer: SocketAddr,
}

/// Why reading from the client stopped.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The client closed (or reset) the connection.
    Closed,
    /// The client sent something the codec refuses.
    Invalid(nuncio_http1::Error),
}

impl Downstream {
    pub(crate) fn new(stream: TcpStream, peer: SocketAddr) -> Downstream {
        Downstream {
            stream,
            read_buf: BytesMut::with_capacity(8 * 1024),
            write_buf: BytesMut::with_capacity(8 * 1024),
            peer,
        }
    }

    async fn read_more(&mut self) -> Result<(), ReadError> {
        if self.read_buf.capacity() - self.read_buf.len() < 2048 {
            self.read_buf.reserve(8 * 1024);
        }
        match self.stream.read_buf(&mut self.read_buf).await {
            Ok(0) | Err(_) => Err(ReadError::Closed),
            Ok(_) => Ok(()),
        }
    }

    async fn read_head(&mut self, decoder: &mut RequestDecoder) -> Result<Request, ReadError> {
        loop {
            if let Some(request) = decoder.decode(&mut self.read_buf).map_err(ReadError::Invalid)? {
                return Ok(request);
            }
            self.read_more().await?;
        }
    }

    /// Resolves when the client closes or resets the connection, for a
    /// stream waiting on its upstream (so that the upstream request is
    /// cancelled rather than left running for nobody). Bytes the client
    /// pipelines meanwhile are read ahead and kept for the next request, up
    /// to `READ_AHEAD` bytes; past that it stops watching and never resolves.
    pub(crate) async fn closed(&mut self) {
        while self.read_buf.len() < READ_AHEAD {
            if self.read_more().await.is_err() {
                return;
            }
        }
        std::future::pending::<()>().await;
    }

    /// The next body event of the current request.
    pub(crate) async fn body_event(&mut self, decoder: &mut BodyDecoder) -> Result<BodyEvent, ReadError> {
        loop {
            if let Some(event) = decoder.decode(&mut self.read_buf).map_err(ReadError::Invalid)? {
                return Ok(event);
            }
            self.read_more().await?;
        }
    }

    /// Writes the head in `write_buf` followed by `body`, then clears the
    /// buffer.
    pub(crate) async fn flush_with(&mut self, body: &[&[u8]]) -> std::io::Result<()> {
        let head = self.write_buf.split().freeze();
        let mut parts: Vec<&[u8]> = Vec::with_capacity(body.len() + 1);
        parts.push(&head);
        parts.extend_from_slice(body);
        write_all_vectored(&mut self.stream, &parts).await
    }

    /// Answers with a response nuncio makes itself: a short plain-text body
    /// saying why.
    pub(crate) async fn local_reply(&mut self, status: StatusCode, version: Version, message: &str, close: bool) {
        let body = Bytes::from(format!("{message}\n"));
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        if close {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        nuncio_http1::encode_response_head(
            status,
            version,
            &headers,
            BodyFraming::Length(body.len() as u64),
            &mut self.write_buf,
        );
        let _ = self.flush_with(&[&body]).await;
    }
}

/// Serves one client connection until it closes, errs, idles out or asks
/// to close.
pub(crate) async fn serve(worker: Rc<Worker>, listener: Rc<str>, socket: TcpStream, peer: SocketAddr, ctx: Context) {
    let mut conn = Downstream::new(socket, peer);
    loop {
        // The snapshot this request is served with, whatever reloads happen
        // while it is in flight.
        let Ok(snapshot) = worker.snapshot.get() else { return };
        let Some(listener_snapshot) = snapshot.listeners.get(&*listener) else { return };
        let settings = &listener_snapshot.config;
        let mut limits = Limits::default();
        limits.max_head_bytes = settings.max_request_headers_bytes;
        limits.max_headers = settings.max_request_headers;
        let mut decoder = RequestDecoder::new(limits);

        // Between requests only the idle timeout applies; a client that
        // goes quiet is dropped without a word.
        if conn.read_buf.is_empty() && within(settings.idle_timeout, conn.read_more()).await.is_none_or(|r| r.is_err())
        {
            return;
        }
        // Once a head has started it must complete in time (slowloris).
        let request = match within(settings.request_headers_timeout, conn.read_head(&mut decoder)).await {
            None => {
                let message = "nuncio: request headers not received in time";
                return conn.local_reply(StatusCode::REQUEST_TIMEOUT, Version::HTTP_11, message, true).await;
            }
            Some(Err(ReadError::Closed)) => return,
            Some(Err(ReadError::Invalid(e))) => {
                let message = format!("nuncio: bad request: {e}");
                return conn.local_reply(e.status(), Version::HTTP_11, &message, true).await;
            }
            Some(Ok(request)) => request,
        };
        if !crate::stream::serve(&worker, &snapshot, listener_snapshot, &mut conn, request, &ctx).await {
            return;
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
