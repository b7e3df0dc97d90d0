//! HTTP/1.1 to an upstream, on nuncio's own codec: pooled connections
//! (owned by one worker), one request at a time on each.

use std::io::IoSlice;

use bytes::{Bytes, BytesMut};
use nuncio_http1::{BodyDecoder, BodyEvent, BodyFraming, Limits, ResponseDecoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{BodyError, RequestBody, RequestSource, TryError, UpstreamRequest, UpstreamResponse};
use crate::cluster::{ActiveRequest, ConnectionGuard};
use crate::downstream::ReadError;
use crate::message::{BodyFrame, BodySize, ResponseHead};

/// A connection to an upstream, with its read buffer (reused across the
/// requests it carries).
pub(crate) struct Http1Connection {
    pub(crate) stream: TcpStream,
    pub(crate) read_buf: BytesMut,
    /// Whether it carried a request before: a reused connection the
    /// upstream closed meanwhile fails without the request being processed.
    pub(crate) reused: bool,
    /// Counts it open (stats, `max_connections`) while it lives.
    _guard: ConnectionGuard,
    /// Where it is connected (read once: no syscall per reuse).
    peer: Option<std::net::SocketAddr>,
}

impl Http1Connection {
    pub(crate) fn new(stream: TcpStream, guard: ConnectionGuard) -> Http1Connection {
        let peer = stream.peer_addr().ok();
        Http1Connection { stream, read_buf: BytesMut::with_capacity(16 * 1024), reused: false, _guard: guard, peer }
    }

    /// The address it is connected to.
    pub(crate) fn peer(&self) -> Option<std::net::SocketAddr> {
        self.peer
    }

    /// Whether an idle pooled connection can carry another request: the
    /// peer has not closed it and sent nothing unasked.
    pub(crate) fn is_reusable(&self) -> bool {
        if !self.read_buf.is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    /// Reads more bytes into the buffer; `Ok(0)` means the upstream closed.
    pub(crate) async fn read_more(&mut self) -> std::io::Result<usize> {
        if self.read_buf.capacity() - self.read_buf.len() < 4096 {
            self.read_buf.reserve(16 * 1024);
        }
        self.stream.read_buf(&mut self.read_buf).await
    }
}

/// Writes every slice, in as few `writev` calls as the kernel allows.
pub(crate) async fn write_all_vectored(stream: &mut TcpStream, parts: &[&[u8]]) -> std::io::Result<()> {
    // The slices live on the stack for the usual few parts (a head, a
    // body chunk, its framing); only a long list of buffered chunks
    // allocates.
    const ON_STACK: usize = 8;
    let mut stack = [IoSlice::new(&[]); ON_STACK];
    let mut heap;
    let mut slices: &mut [IoSlice<'_>] = if parts.len() <= ON_STACK {
        for (slice, part) in stack.iter_mut().zip(parts) {
            *slice = IoSlice::new(part);
        }
        &mut stack[..parts.len()]
    } else {
        heap = parts.iter().map(|p| IoSlice::new(p)).collect::<Vec<_>>();
        &mut heap
    };
    // Drops leading empty slices, then what each write took.
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        let written = stream.write_vectored(slices).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut slices, written);
    }
    Ok(())
}

/// Sends one request on an HTTP/1.1 connection of `active`'s endpoint and
/// reads the response head. The request body is sent in full before the
/// response is read (an upstream answering early, before the body ends, is
/// read after); a client that leaves while the head is awaited cancels the
/// try.
pub(crate) async fn send(
    active: &ActiveRequest<'_>,
    request: &UpstreamRequest<'_>,
    body: &mut RequestBody,
    source: &mut impl RequestSource,
) -> Result<UpstreamResponse, TryError> {
    let mut upstream = active.connection().await.map_err(TryError::Connect)?;
    let reused = upstream.reused;
    upstream.reused = true;
    let reset = |_| TryError::Reset { reused };
    let framing = match (&*body, request.body) {
        // What was read is what goes: filters may have changed its length.
        (RequestBody::Buffered(chunks), _) => BodyFraming::Length(chunks.iter().map(|c| c.len() as u64).sum()),
        (_, BodySize::Empty) => BodyFraming::None,
        (_, BodySize::Exact(n)) => BodyFraming::Length(n),
        (_, BodySize::Unknown) => BodyFraming::Chunked,
    };
    let mut head = BytesMut::with_capacity(512);
    match &request.deadline {
        // The request has the field already (a gRPC client's own
        // `grpc-timeout`): nuncio's value replaces it, as on HTTP/2, rather
        // than going out beside it.
        Some((name, value)) if request.headers.contains_key(name) => {
            let mut headers = request.headers.clone();
            headers.insert(name.clone(), value.clone());
            nuncio_http1::encode_request_head(&request.method, &request.target, &headers, framing, &mut head);
        }
        deadline => {
            nuncio_http1::encode_request_head(&request.method, &request.target, request.headers, framing, &mut head);
            if let Some((name, value)) = deadline {
                // One more field before the head's closing CRLF, without
                // copying the client's fields into a new map.
                head.truncate(head.len() - 2);
                head.extend_from_slice(name.as_str().as_bytes());
                head.extend_from_slice(b": ");
                head.extend_from_slice(value.as_bytes());
                head.extend_from_slice(b"\r\n\r\n");
            }
        }
    }
    match body {
        RequestBody::Empty => write_all_vectored(&mut upstream.stream, &[&head]).await.map_err(reset)?,
        RequestBody::Buffered(chunks) => {
            let mut parts: Vec<&[u8]> = Vec::with_capacity(chunks.len() + 1);
            parts.push(&head);
            parts.extend(chunks.iter().map(|c| &c[..]));
            write_all_vectored(&mut upstream.stream, &parts).await.map_err(reset)?;
        }
        RequestBody::Streaming { started } => {
            *started = true;
            write_all_vectored(&mut upstream.stream, &[&head]).await.map_err(reset)?;
            let chunked = framing == BodyFraming::Chunked;
            let mut trailers = None;
            while let Some(frame) = source.read_body().await.map_err(TryError::Downstream)? {
                match frame {
                    BodyFrame::Data(data) if chunked => {
                        let size = nuncio_http1::ChunkSizeLine::new(data.len() as u64).expect("a chunk is never empty");
                        write_all_vectored(&mut upstream.stream, &[size.as_bytes(), &data, nuncio_http1::CRLF])
                            .await
                            .map_err(reset)?;
                    }
                    BodyFrame::Data(data) => write_all_vectored(&mut upstream.stream, &[&data]).await.map_err(reset)?,
                    BodyFrame::Trailers(t) => trailers = Some(t),
                }
            }
            if chunked {
                let mut last = BytesMut::new();
                nuncio_http1::encode_last_chunk(trailers.as_ref(), &mut last);
                write_all_vectored(&mut upstream.stream, &[&last]).await.map_err(reset)?;
            }
        }
    }
    let mut decoder = ResponseDecoder::new(Limits::default());
    loop {
        match decoder.decode(&mut upstream.read_buf, &request.method) {
            Ok(Some(response)) if response.is_interim() && !response.tunnel => continue,
            Ok(Some(response)) => {
                let size = match response.framing {
                    BodyFraming::None => BodySize::Empty,
                    BodyFraming::Length(n) => BodySize::Exact(n),
                    BodyFraming::Chunked | BodyFraming::UntilClose => BodySize::Unknown,
                };
                let head = ResponseHead { status: response.status, headers: response.headers, body: size };
                let peer = upstream.peer();
                let body = ResponseBody {
                    decoder: BodyDecoder::new(response.framing, Limits::default()),
                    keep_alive: response.keep_alive,
                    conn: upstream,
                };
                return Ok(UpstreamResponse {
                    head,
                    body: super::ResponseBody::Http1(body),
                    tunnel: response.tunnel,
                    peer,
                });
            }
            Ok(None) => {}
            Err(e) => return Err(TryError::BadResponse(e.to_string())),
        }
        // A client that leaves meanwhile takes its upstream request with it.
        let read = tokio::select! {
            read = upstream.read_more() => read,
            () = source.closed() => return Err(TryError::Downstream(ReadError::Closed)),
        };
        match read {
            Ok(0) | Err(_) => return Err(TryError::Reset { reused }),
            Ok(_) => {}
        }
    }
}

/// A response body still arriving on an HTTP/1.1 connection.
pub(crate) struct ResponseBody {
    conn: Http1Connection,
    decoder: BodyDecoder,
    /// The upstream allows another request on the connection.
    keep_alive: bool,
}

impl ResponseBody {
    /// A frame already buffered, without waiting: `None` when more bytes
    /// must be read first.
    pub(crate) fn ready_frame(&mut self) -> Option<Result<Option<BodyFrame>, BodyError>> {
        match self.decoder.decode(&mut self.conn.read_buf) {
            Ok(Some(event)) => Some(Ok(frame(event))),
            Ok(None) => None,
            Err(e) => Some(Err(BodyError(e.to_string()))),
        }
    }

    pub(crate) async fn next_frame(&mut self) -> Result<Option<BodyFrame>, BodyError> {
        loop {
            if let Some(frame) = self.ready_frame() {
                return frame;
            }
            match self.conn.read_more().await {
                Ok(0) => {
                    return match self.decoder.decode_eof(&mut self.conn.read_buf) {
                        Ok(Some(event)) => Ok(frame(event)),
                        Ok(None) => Err(BodyError("upstream closed before the body ended".into())),
                        Err(e) => Err(BodyError(e.to_string())),
                    };
                }
                Ok(_) => {}
                Err(e) => return Err(BodyError(e.to_string())),
            }
        }
    }

    /// The connection back to the pool, if the exchange ended cleanly.
    pub(crate) fn release(self, active: &ActiveRequest<'_>) {
        if self.keep_alive && self.decoder.is_done() {
            active.release(self.conn);
        }
    }

    /// The connection and what the upstream sent past its head, for a
    /// protocol switch.
    pub(crate) fn into_tunnel(self) -> (Http1Connection, Bytes) {
        let mut conn = self.conn;
        let early = conn.read_buf.split().freeze();
        (conn, early)
    }
}

fn frame(event: BodyEvent) -> Option<BodyFrame> {
    match event {
        BodyEvent::Data(data) => Some(BodyFrame::Data(data)),
        BodyEvent::Trailers(trailers) => Some(BodyFrame::Trailers(trailers)),
        BodyEvent::End => None,
    }
}
