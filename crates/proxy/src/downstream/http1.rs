//! A client's HTTP/1.1 connection: read heads with their timeouts, hand
//! each request to [`crate::stream`], answer in order, keep alive or close.
//!
//! Pipelined requests need nothing special: the next head is decoded from
//! the bytes already buffered only once the current response is written.

use std::net::SocketAddr;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Version, header};
use nuncio_context::Context;
use nuncio_http1::{BodyDecoder, BodyEvent, BodyFraming, Limits, Request, RequestDecoder};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::{Codec, Downstream, ReadError, WriteError};
use crate::bounded::within;
use crate::message::{BodyFrame, BodySize, RequestHead, ResponseHead, bodiless};
use crate::read_buffers;
use crate::upstream::http1::write_all_vectored;
use crate::worker::Worker;

/// Most bytes read ahead of the current request while watching for the
/// client to close ([`Connection::closed`]).
const READ_AHEAD: usize = 64 * 1024;

/// The client side of an HTTP/1.1 connection: its socket and the buffers
/// reused by every request on it.
pub(crate) struct Connection {
    pub(crate) stream: TcpStream,
    pub(crate) read_buf: BytesMut,
    write_buf: BytesMut,
    peer: SocketAddr,
    /// Done when the listener drains: answer what is in flight with
    /// `Connection: close`, and close an idle connection at once.
    draining: Context,
}

impl Connection {
    pub(crate) fn new(stream: TcpStream, peer: SocketAddr, draining: Context) -> Connection {
        Connection { stream, read_buf: read_buffers::take(), write_buf: BytesMut::new(), peer, draining }
    }

    /// The socket with the bytes read so far put back in front, for
    /// another protocol's codec.
    pub(crate) fn into_io(self) -> super::http2::Rewind {
        super::http2::Rewind::new(self.read_buf.freeze(), self.stream)
    }

    pub(crate) async fn read_more(&mut self) -> Result<(), ReadError> {
        if self.read_buf.capacity() == 0 {
            self.read_buf = read_buffers::take();
        } else if self.read_buf.capacity() - self.read_buf.len() < 2048 {
            self.read_buf.reserve(read_buffers::SIZE);
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

    /// Writes what `write_buf` holds followed by `parts`, then clears the
    /// buffer.
    async fn flush_with(&mut self, parts: &[&[u8]]) -> Result<(), WriteError> {
        let mut all: [&[u8]; 4] = [&[]; 4];
        let count = parts.len() + 1;
        assert!(count <= all.len(), "flush_with takes at most {} parts", all.len() - 1);
        all[0] = &self.write_buf;
        all[1..count].copy_from_slice(parts);
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
        let _ = self.flush_with(&[body.as_bytes()]).await;
    }
}

/// Serves one client connection until it closes, errs, idles out or asks
/// to close.
pub(crate) async fn serve(worker: Rc<Worker>, listener: Rc<str>, mut conn: Connection, ctx: Context) {
    loop {
        // Between requests only the idle timeout applies; a client that
        // goes quiet is dropped without a word. An idle keep-alive
        // connection holds no buffer (as in nginx): the read buffer goes
        // back to the worker's pool (`read_buffers`) and is taken again once
        // the next request is readable.
        if conn.read_buf.is_empty() {
            let Ok(Some(idle_timeout)) =
                worker.local.with(|l| l.snapshot.listeners.get(&*listener).map(|l| l.config.idle_timeout))
            else {
                return;
            };
            read_buffers::give_back(std::mem::take(&mut conn.read_buf));
            conn.write_buf = BytesMut::new();
            if conn.draining.is_done() {
                return;
            }
            let draining = conn.draining.clone();
            let next = async {
                conn.stream.readable().await.map_err(|_| ReadError::Closed)?;
                conn.read_more().await
            };
            // A drain closes an idle connection at once.
            let read = tokio::select! {
                read = within(idle_timeout, next) => read,
                _ = draining.done() => None,
            };
            if read.is_none_or(|r| r.is_err()) {
                return;
            }
        }
        // The snapshot this request is served with (the newest once its
        // first bytes are here), whatever reloads happen while it is in
        // flight.
        let Ok(local) = worker.local.get() else { return };
        let Some(listener_snapshot) = local.snapshot.listeners.get(&*listener) else { return };
        let settings = &listener_snapshot.config;
        let mut limits = Limits::default();
        limits.max_head_bytes = settings.max_request_headers_bytes;
        limits.max_headers = settings.max_request_headers;
        let mut decoder = RequestDecoder::new(limits);
        // Once a head has started it must complete in time (slowloris).
        let request = match within(settings.request_headers_timeout, conn.read_head(&mut decoder)).await {
            None => {
                return conn.reject(StatusCode::REQUEST_TIMEOUT, "nuncio: request headers not received in time").await;
            }
            Some(Err(ReadError::Closed | ReadError::Replied(_))) => return,
            Some(Err(ReadError::Invalid(e))) => {
                return conn.reject(e.status(), &format!("nuncio: bad request: {e}")).await;
            }
            Some(Ok(request)) => request,
        };
        let (head, exchange) = Exchange::new(&mut conn, request);
        let mut downstream = Downstream::new(Codec::Http1(exchange));
        // Boxed: the stream's future is large and exists only while a request
        // is in flight, so an idle connection's task stays small.
        Box::pin(crate::stream::serve(&worker, &local, listener_snapshot, &mut downstream, head, &ctx)).await;
        let Codec::Http1(exchange) = downstream.codec else { unreachable!("built as HTTP/1.1 above") };
        if !exchange.reusable() {
            return;
        }
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

/// The client side of one HTTP/1.1 request: its body, read from the
/// connection, and its response, written to it.
pub(crate) struct Exchange<'c> {
    conn: &'c mut Connection,
    method: Method,
    version: Version,
    /// The client allows another request on the connection.
    keep_alive: bool,
    body: RequestBody,
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
}

impl<'c> Exchange<'c> {
    fn new(conn: &'c mut Connection, request: Request) -> (RequestHead, Exchange<'c>) {
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
            framing: None,
            status: None,
            close: false,
            ended: false,
            aborted: false,
        };
        let head = RequestHead {
            method: request.method,
            uri: request.uri,
            version: request.version,
            headers: request.headers,
            authority: request.authority,
            body: size,
            upgrade: request.upgrade,
        };
        (head, exchange)
    }

    pub(crate) fn peer(&self) -> SocketAddr {
        self.conn.peer
    }

    /// Whether the connection may carry the next request: the response
    /// ended cleanly, the request body was read to its end and neither
    /// side asked to close.
    fn reusable(&self) -> bool {
        self.ended && !self.close && !self.aborted && matches!(self.body, RequestBody::Done)
    }

    pub(crate) async fn read_body(&mut self) -> Result<Option<BodyFrame>, ReadError> {
        let decoder = match &mut self.body {
            RequestBody::Done => return Ok(None),
            RequestBody::Broken => return Err(ReadError::Closed),
            RequestBody::Reading(decoder) => decoder,
        };
        if self.continue_pending {
            self.continue_pending = false;
            self.conn.write_buf.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
            if self.conn.flush_with(&[]).await.is_err() {
                self.body = RequestBody::Broken;
                return Err(ReadError::Closed);
            }
        }
        loop {
            match decoder.decode(&mut self.conn.read_buf) {
                Ok(Some(BodyEvent::Data(data))) => return Ok(Some(BodyFrame::Data(data))),
                Ok(Some(BodyEvent::Trailers(trailers))) => return Ok(Some(BodyFrame::Trailers(trailers))),
                Ok(Some(BodyEvent::End)) => {
                    self.body = RequestBody::Done;
                    return Ok(None);
                }
                Ok(None) => {
                    if let Err(e) = self.conn.read_more().await {
                        self.body = RequestBody::Broken;
                        return Err(e);
                    }
                }
                Err(e) => {
                    self.body = RequestBody::Broken;
                    return Err(ReadError::Invalid(e));
                }
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
            || self.conn.draining.is_done()
            || self.aborted
            || framing == BodyFraming::UntilClose
            || !matches!(self.body, RequestBody::Done);
        let mut headers = head.headers;
        if self.close {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        } else if !http11 {
            headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        }
        nuncio_http1::encode_response_head(head.status, self.version, &headers, framing, &mut self.conn.write_buf);
        self.framing = Some(framing);
        self.status = Some(head.status);
    }

    pub(crate) async fn send_data(&mut self, data: Bytes) -> Result<(), WriteError> {
        match self.framing {
            Some(BodyFraming::Chunked) => {
                let size = nuncio_http1::ChunkSizeLine::new(data.len() as u64).expect("a chunk is never empty");
                self.conn.flush_with(&[size.as_bytes(), &data, nuncio_http1::CRLF]).await
            }
            Some(BodyFraming::None) | None => Ok(()),
            Some(_) => self.conn.flush_with(&[&data]).await,
        }
    }

    pub(crate) async fn send_trailers(&mut self, trailers: HeaderMap) -> Result<(), WriteError> {
        if self.framing == Some(BodyFraming::Chunked) && !self.ended {
            nuncio_http1::encode_last_chunk(Some(&trailers), &mut self.conn.write_buf);
            self.conn.flush_with(&[]).await?;
            self.ended = true;
        }
        Ok(())
    }

    pub(crate) async fn finish(&mut self) -> Result<(), WriteError> {
        if self.ended {
            return Ok(());
        }
        if self.framing == Some(BodyFraming::Chunked) {
            self.conn.flush_with(&[nuncio_http1::LAST_CHUNK]).await?;
        } else {
            self.flush().await?;
        }
        self.ended = true;
        Ok(())
    }

    pub(crate) async fn flush(&mut self) -> Result<(), WriteError> {
        if self.conn.write_buf.is_empty() { Ok(()) } else { self.conn.flush_with(&[]).await }
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
        upstream: &mut TcpStream,
        early: Bytes,
    ) {
        self.aborted = true;
        nuncio_http1::encode_response_head(status, self.version, headers, BodyFraming::None, &mut self.conn.write_buf);
        if self.conn.flush_with(&[&early]).await.is_err() {
            return;
        }
        // Bytes the client sent past its request head are already read.
        let early_down = self.conn.read_buf.split().freeze();
        if write_all_vectored(upstream, &[&early_down]).await.is_err() {
            return;
        }
        let _ = tokio::io::copy_bidirectional(&mut self.conn.stream, upstream).await;
    }
}
