//! HTTP/2 to an upstream (h2c with prior knowledge), on the `h2` crate: a
//! connection per endpoint per worker carries the streams of that worker
//! to the endpoint; its driver runs as a local task on the worker.
//!
//! Several connections are opened when one is full (the peer's
//! `max_concurrent_streams`).
//!
//! A connection the upstream closed (or sent GOAWAY on) is replaced on the
//! next request; a stream the upstream refused (`REFUSED_STREAM`) or that
//! a GOAWAY left unprocessed is a try the retry policy can repeat.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use bytes::Bytes;
use h2::client::SendRequest;
use h2::{Reason, RecvStream, SendStream};
use http::uri::{Authority, Scheme};
use http::{Uri, Version, header};

use super::{BodyError, RequestBody, RequestSource, TryError, UpstreamRequest, UpstreamResponse};
use crate::cluster::{ActiveRequest, ConnectError, ConnectionGuard};
use crate::downstream::ReadError;
use crate::flow_control::send_all;
use crate::message::{BodyFrame, BodySize, ResponseHead};

const STREAM_WINDOW: u32 = 1024 * 1024;
const CONNECTION_WINDOW: u32 = 4 * 1024 * 1024;
/// How long a response may still arrive after the upstream stopped taking
/// the request body.
const EARLY_RESPONSE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Sends one request on the endpoint's HTTP/2 connection and awaits the
/// response head. Dropping the try (timeout, client gone) resets the
/// upstream stream with `CANCEL`.
pub(crate) async fn send(
    active: &ActiveRequest<'_>,
    request: &UpstreamRequest<'_>,
    body: &mut RequestBody,
    source: &mut impl RequestSource,
) -> Result<UpstreamResponse, TryError> {
    let (mut sender, slot, reused) = sender(active).await?;
    let peer = slot.peer();
    let mut headers = request.headers.clone();
    if let Some((name, value)) = &request.deadline {
        headers.insert(name.clone(), value.clone());
    }
    // The length is the body's as sent now (filters may have changed it).
    match (&*body, request.body) {
        (RequestBody::Buffered(chunks), _) => {
            let length: usize = chunks.iter().map(Bytes::len).sum();
            headers.insert(header::CONTENT_LENGTH, length.into());
        }
        (_, BodySize::Unknown) => {
            headers.remove(header::CONTENT_LENGTH);
        }
        _ => {}
    }
    // `:authority` replaces `Host` (RFC 9113 §8.3.1).
    let authority = headers
        .remove(header::HOST)
        .and_then(|h| Authority::try_from(h.as_bytes()).ok())
        .or_else(|| Authority::try_from(active.endpoint().name.as_str()).ok());
    let mut uri = Uri::builder().scheme(Scheme::HTTP);
    if let Some(authority) = authority {
        uri = uri.authority(authority);
    }
    let path = request.target.path_and_query().map_or("/", |pq| pq.as_str());
    let uri = uri.path_and_query(path).build().map_err(|e| TryError::BadResponse(format!("request target: {e}")))?;
    let mut upstream_request = http::Request::new(());
    *upstream_request.method_mut() = request.method.clone();
    *upstream_request.uri_mut() = uri;
    *upstream_request.version_mut() = Version::HTTP_2;
    *upstream_request.headers_mut() = headers;

    let fail = |e: h2::Error| try_error(&e, reused);
    let empty = match body {
        RequestBody::Empty => true,
        RequestBody::Buffered(chunks) => chunks.iter().all(Bytes::is_empty),
        RequestBody::Streaming { .. } => false,
    };
    let (response, mut stream) = sender.send_request(upstream_request, empty).map_err(fail)?;
    let sent = send_body(&mut stream, body, empty, source).await;
    // An upstream may answer before taking the whole body and then reset
    // the request side (RFC 9113 §8.1): a response, if one came, wins over
    // the failed send.
    let response = match sent {
        Ok(()) => tokio::select! {
            // A client that leaves meanwhile takes its upstream stream with it.
            response = response => response.map_err(fail)?,
            () = source.closed() => return Err(TryError::Downstream(ReadError::Closed)),
        },
        Err(SendError::Downstream(e)) => return Err(TryError::Downstream(e)),
        Err(SendError::Upstream(e)) => match tokio::time::timeout(EARLY_RESPONSE_WAIT, response).await {
            Ok(Ok(response)) => response,
            _ => return Err(fail(e)),
        },
    };
    let (parts, body) = response.into_parts();
    let size = if body.is_end_stream() { BodySize::Empty } else { BodySize::from_content_length(&parts.headers) };
    let head = ResponseHead { status: parts.status, headers: parts.headers, body: size };
    Ok(UpstreamResponse {
        head,
        body: super::ResponseBody::Http2(ResponseBody { body, done: false, _slot: slot }),
        tunnel: false,
        peer,
    })
}

/// Why the request body could not be sent.
enum SendError {
    Downstream(ReadError),
    Upstream(h2::Error),
}

/// Sends the request body (the head went with `end_of_stream = empty`).
async fn send_body(
    stream: &mut SendStream<Bytes>,
    body: &mut RequestBody,
    empty: bool,
    source: &mut impl RequestSource,
) -> Result<(), SendError> {
    match body {
        RequestBody::Empty => {}
        RequestBody::Buffered(chunks) => {
            if !empty {
                for chunk in chunks.iter() {
                    send_all(stream, chunk.clone()).await.map_err(SendError::Upstream)?;
                }
                stream.send_data(Bytes::new(), true).map_err(SendError::Upstream)?;
            }
        }
        RequestBody::Streaming { started } => {
            *started = true;
            loop {
                match source.read_body().await.map_err(SendError::Downstream)? {
                    Some(BodyFrame::Data(data)) => send_all(stream, data).await.map_err(SendError::Upstream)?,
                    Some(BodyFrame::Trailers(trailers)) => {
                        return stream.send_trailers(trailers).map_err(SendError::Upstream);
                    }
                    None => return stream.send_data(Bytes::new(), true).map_err(SendError::Upstream),
                }
            }
        }
    }
    Ok(())
}

/// This worker's HTTP/2 connections to one endpoint. A stream goes on the
/// first connection with room under the peer's `max_concurrent_streams`;
/// when every one is full, another connection is opened (rather than
/// queueing the stream behind the others).
#[derive(Default)]
pub(crate) struct Pool {
    connections: RefCell<Vec<Rc<Connection>>>,
}

struct Connection {
    sender: SendRequest<Bytes>,
    /// Counts it open (stats, `max_connections`) while it lives.
    _guard: ConnectionGuard,
    peer: Option<std::net::SocketAddr>,
    /// Streams of ours open on it.
    streams: Cell<usize>,
    /// Its driver task ended (closed, GOAWAY, error).
    closed: Cell<bool>,
}

/// Counts one stream on a connection until dropped (with the response
/// body, or with the try that failed).
pub(crate) struct StreamSlot(Rc<Connection>);

impl StreamSlot {
    fn peer(&self) -> Option<std::net::SocketAddr> {
        self.0.peer
    }

    fn new(connection: &Rc<Connection>) -> StreamSlot {
        connection.streams.set(connection.streams.get() + 1);
        StreamSlot(connection.clone())
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.streams.set(self.0.streams.get() - 1);
    }
}

impl Pool {
    /// A connection with room for one more stream, if there is one.
    fn with_room(&self) -> Option<Rc<Connection>> {
        let mut connections = self.connections.borrow_mut();
        connections.retain(|c| !c.closed.get());
        connections.iter().find(|c| c.streams.get() < c.sender.current_max_send_streams()).cloned()
    }
}

/// A sender ready for a new stream, the slot that counts the stream, and
/// whether the connection carried streams before.
async fn sender(active: &ActiveRequest<'_>) -> Result<(SendRequest<Bytes>, StreamSlot, bool), TryError> {
    let endpoint = active.endpoint();
    while let Some(connection) = endpoint.h2.with_room() {
        let slot = StreamSlot::new(&connection);
        match connection.sender.clone().ready().await {
            Ok(ready) => return Ok((ready, slot, true)),
            Err(e) => {
                tracing::debug!(endpoint = %endpoint.name, error = %e, "HTTP/2 upstream connection closed");
                connection.closed.set(true);
            }
        }
    }
    let (stream, guard) = active.connect().await.map_err(TryError::Connect)?;
    let peer = stream.peer_addr().ok();
    let handshake = h2::client::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .handshake::<_, Bytes>(stream)
        .await;
    let (sender, driver) =
        handshake.map_err(|e| TryError::Connect(ConnectError::Failed(std::io::Error::other(e.to_string()))))?;
    let connection =
        Rc::new(Connection { sender, _guard: guard, peer, streams: Cell::new(0), closed: Cell::new(false) });
    endpoint.h2.connections.borrow_mut().push(connection.clone());
    let name = endpoint.name.clone();
    let watched = Rc::downgrade(&connection);
    tokio::task::spawn_local(async move {
        if let Err(e) = driver.await {
            tracing::debug!(endpoint = %name, error = %e, "HTTP/2 upstream connection ended");
        }
        if let Some(connection) = watched.upgrade() {
            connection.closed.set(true);
        }
    });
    let slot = StreamSlot::new(&connection);
    let ready = connection.sender.clone().ready().await.map_err(|e| try_error(&e, false))?;
    Ok((ready, slot, false))
}

fn try_error(e: &h2::Error, reused: bool) -> TryError {
    if e.reason() == Some(Reason::REFUSED_STREAM) {
        TryError::Refused
    } else if e.is_go_away() && e.is_remote() {
        // Streams past the GOAWAY's last id were not processed: like a
        // pooled HTTP/1.1 connection closed under us.
        TryError::Reset { reused: true }
    } else {
        TryError::Reset { reused }
    }
}

/// A response body arriving on an upstream HTTP/2 stream.
pub(crate) struct ResponseBody {
    body: RecvStream,
    done: bool,
    /// The stream counts against its connection until the body is done.
    _slot: StreamSlot,
}

impl ResponseBody {
    pub(crate) async fn next_frame(&mut self) -> Result<Option<BodyFrame>, BodyError> {
        if self.done {
            return Ok(None);
        }
        loop {
            match self.body.data().await {
                Some(Ok(data)) => {
                    // Window back to the upstream as the client takes it.
                    let _ = self.body.flow_control().release_capacity(data.len());
                    if !data.is_empty() {
                        return Ok(Some(BodyFrame::Data(data)));
                    }
                }
                Some(Err(e)) => return Err(BodyError(e.to_string())),
                None => {
                    // Done only once the trailers are in: the relay may drop
                    // this read for a filter's handle call, and ask again.
                    let trailers = self.body.trailers().await;
                    self.done = true;
                    return match trailers {
                        Ok(trailers) => Ok(trailers.map(BodyFrame::Trailers)),
                        Err(e) => Err(BodyError(e.to_string())),
                    };
                }
            }
        }
    }
}
