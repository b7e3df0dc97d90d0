//! HTTP/2 to an upstream (h2c with prior knowledge, or `h2` over TLS), on
//! the `h2` crate: a
//! connection per endpoint per worker carries the streams of that worker
//! to the endpoint (more when one is full: the pool opens them); its
//! driver runs as a local task on the worker.
//!
//! A connection the upstream closed (or sent GOAWAY on) is replaced on the
//! next request; a stream the upstream refused (`REFUSED_STREAM`) or that
//! a GOAWAY left unprocessed is a try the retry policy can repeat.
//! Dropping an exchange (timeout, client gone) resets its stream with
//! `CANCEL`.

use std::cell::Cell;
use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;

use bytes::Bytes;
use h2::client::{ResponseFuture, SendRequest};
use h2::{Reason, RecvStream, SendStream};
use http::uri::{Authority, Scheme};
use http::{HeaderMap, HeaderValue, Uri, Version, header};

use super::{RequestBody, TryError, UpstreamHead, UpstreamRequest};
use crate::cluster::{ConnectError, ConnectionGuard};
use crate::io::Io;
use crate::message::{BodyFrame, BodySize, ResponseHead};

const STREAM_WINDOW: u32 = 1024 * 1024;
const CONNECTION_WINDOW: u32 = 4 * 1024 * 1024;

/// One HTTP/2 connection to an endpoint.
pub(crate) struct H2Connection {
    sender: SendRequest<Bytes>,
    /// Counts it open (stats, `max_connections`) while it lives.
    _guard: ConnectionGuard,
    peer: Option<std::net::SocketAddr>,
    /// Streams of ours open on it.
    streams: Cell<usize>,
    /// Its driver task ended (closed, GOAWAY, error).
    closed: Cell<bool>,
    /// A response came on it, so the peer's SETTINGS (which precede any
    /// frame of a response) are known, `max_concurrent_streams` included.
    /// Until then it takes one stream: a burst must not pile streams on a
    /// new connection beyond a limit it has not heard yet, where they would
    /// wait for others to end.
    settled: Cell<bool>,
}

impl H2Connection {
    /// The HTTP/2 handshake on a new connection to `endpoint`; its driver
    /// runs as a local task until the connection ends.
    pub(crate) async fn handshake(
        stream: Io,
        guard: ConnectionGuard,
        endpoint: &str,
    ) -> Result<Rc<H2Connection>, TryError> {
        let peer = stream.tcp().peer_addr().ok();
        let handshake = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .handshake::<_, Bytes>(stream)
            .await;
        let (sender, driver) =
            handshake.map_err(|e| TryError::Connect(ConnectError::Failed(std::io::Error::other(e.to_string()))))?;
        let connection = Rc::new(H2Connection {
            sender,
            _guard: guard,
            peer,
            streams: Cell::new(0),
            closed: Cell::new(false),
            settled: Cell::new(false),
        });
        let name = endpoint.to_owned();
        let watched = Rc::downgrade(&connection);
        tokio::task::spawn_local(async move {
            if let Err(e) = driver.await {
                tracing::debug!(endpoint = %name, error = %e, "HTTP/2 upstream connection ended");
            }
            if let Some(connection) = watched.upgrade() {
                connection.closed.set(true);
            }
        });
        Ok(connection)
    }

    /// Whether its driver ended: it carries no new stream.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// Marks it unusable (a stream could not be opened on it).
    pub(crate) fn mark_closed(&self) {
        self.closed.set(true);
    }

    /// Room for one more stream of ours under the peer's
    /// `max_concurrent_streams` (one, until the peer's settings are known).
    pub(crate) fn has_room(&self) -> bool {
        let limit = if self.settled.get() { self.sender.current_max_send_streams() } else { 1 };
        self.streams.get() < limit
    }

    /// A sender ready to open a stream.
    pub(crate) async fn ready(&self) -> Result<SendRequest<Bytes>, h2::Error> {
        self.sender.clone().ready().await
    }
}

/// Counts one stream on a connection until dropped (with the exchange).
pub(crate) struct StreamSlot(Rc<H2Connection>);

impl StreamSlot {
    pub(crate) fn new(connection: &Rc<H2Connection>) -> StreamSlot {
        connection.streams.set(connection.streams.get() + 1);
        StreamSlot(connection.clone())
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.streams.set(self.0.streams.get() - 1);
    }
}

/// What an `h2` error means for the try.
pub(crate) fn try_error(e: &h2::Error, reused: bool) -> TryError {
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

/// One request and its response on an HTTP/2 stream.
pub(crate) struct Exchange {
    send: SendStream<Bytes>,
    response: Response,
    out: Outgoing,
    reused: bool,
    /// The stream counts against its connection until the exchange ends.
    slot: StreamSlot,
}

enum Response {
    /// Its head is awaited.
    Awaited(ResponseFuture),
    /// Its head arrived, not yet taken.
    Arrived(http::Response<RecvStream>),
    /// The body comes: `frame` holds what was read and not yet taken.
    Body { body: RecvStream, frame: Option<Result<Option<BodyFrame>, TryError>>, data_done: bool, done: bool },
    /// Failed before a head.
    Failed(Option<TryError>),
}

/// The request body on its way out, as the peer's window allows.
struct Outgoing {
    queue: VecDeque<Bytes>,
    /// More may come from the source.
    streaming: bool,
    /// The request said `expect: 100-continue`: nothing goes until the
    /// upstream answers `100` or this instant passes.
    awaiting_continue: Option<tokio::time::Instant>,
    /// The end (with trailers, if any) is to be sent once `queue` is out.
    end: Option<Option<HeaderMap>>,
    /// The upstream stopped taking it (reset, or the stream closed).
    refused: bool,
}

impl Outgoing {
    fn has_pending(&self) -> bool {
        !self.refused && !self.queue.is_empty()
    }
}

impl Exchange {
    /// Opens a stream on `sender` with the request head; a buffered body
    /// follows as the window allows, a streamed one as the source gives it.
    pub(crate) fn start(
        mut sender: SendRequest<Bytes>,
        slot: StreamSlot,
        reused: bool,
        endpoint: &str,
        request: &UpstreamRequest<'_>,
        body: &mut RequestBody,
    ) -> Result<Exchange, TryError> {
        let mut headers = request.headers.to_map();
        if let Some(left) = &request.deadline {
            headers.insert(left.name.clone(), left.value());
        }
        if let Some(parent) = &request.traceparent
            && let Ok(value) = HeaderValue::from_bytes(&parent.encode())
        {
            headers.insert(crate::spans::TRACEPARENT.clone(), value);
        }
        // The length is the body's as sent now (filters may have changed it).
        match (&*body, request.body) {
            (RequestBody::Buffered(chunks), _) => {
                let length: usize = chunks.iter().map(Bytes::len).sum();
                if length > 0 || super::http1::has_body_semantics(&request.method) {
                    headers.insert(header::CONTENT_LENGTH, length.into());
                } else {
                    headers.remove(header::CONTENT_LENGTH);
                }
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
            .or_else(|| Authority::try_from(endpoint).ok());
        let mut uri = Uri::builder().scheme(Scheme::HTTP);
        if let Some(authority) = authority {
            uri = uri.authority(authority);
        }
        let path = request.target.path_and_query().map_or("/", |pq| pq.as_str());
        let uri =
            uri.path_and_query(path).build().map_err(|e| TryError::BadResponse(format!("request target: {e}")))?;
        let mut upstream_request = http::Request::new(());
        *upstream_request.method_mut() = request.method.clone();
        *upstream_request.uri_mut() = uri;
        *upstream_request.version_mut() = Version::HTTP_2;
        crate::message::own_values(&mut headers);
        *upstream_request.headers_mut() = headers;

        let empty = body.is_empty();
        let (response, send) = sender.send_request(upstream_request, empty).map_err(|e| try_error(&e, reused))?;
        let mut out =
            Outgoing { queue: VecDeque::new(), streaming: false, awaiting_continue: None, end: None, refused: false };
        match body {
            _ if empty => {}
            RequestBody::Buffered(chunks) => {
                out.queue.extend(chunks.iter().filter(|c| !c.is_empty()).cloned());
                out.end = Some(None);
            }
            RequestBody::Streaming { started } => {
                *started = true;
                out.streaming = true;
                out.awaiting_continue =
                    request.expect_continue.then(|| tokio::time::Instant::now() + super::CONTINUE_WAIT);
            }
            RequestBody::Empty => {}
        }
        let mut exchange = Exchange { send, response: Response::Awaited(response), out, reused, slot };
        exchange.send_end_if_due();
        Ok(exchange)
    }

    pub(crate) fn take_head(&mut self) -> Result<Option<UpstreamHead>, TryError> {
        let response = match std::mem::replace(&mut self.response, Response::Failed(None)) {
            Response::Arrived(response) => response,
            Response::Failed(error) => {
                return Err(error.unwrap_or(TryError::BadResponse("the response was already taken".into())));
            }
            other => {
                self.response = other;
                return Ok(None);
            }
        };
        self.slot.0.settled.set(true);
        let (parts, body) = response.into_parts();
        let size = if body.is_end_stream() { BodySize::Empty } else { BodySize::from_content_length(&parts.headers) };
        let head = ResponseHead { status: parts.status, headers: parts.headers.into(), body: size };
        self.response = Response::Body { body, frame: None, data_done: false, done: false };
        Ok(Some(UpstreamHead { head, tunnel: false, peer: self.slot.0.peer }))
    }

    pub(crate) fn ready_frame(&mut self) -> Option<Result<Option<BodyFrame>, TryError>> {
        let Response::Body { frame, done, .. } = &mut self.response else { return None };
        match frame.take() {
            Some(frame) => Some(frame),
            None if *done => Some(Ok(None)),
            None => None,
        }
    }

    pub(crate) fn wants_body(&self) -> bool {
        self.out.streaming && !self.out.refused && self.out.queue.is_empty() && self.out.awaiting_continue.is_none()
    }

    pub(crate) fn push_body(&mut self, frame: Option<BodyFrame>) {
        if !self.out.streaming {
            return;
        }
        match frame {
            Some(BodyFrame::Data(data)) => {
                if !data.is_empty() {
                    self.out.queue.push_back(data);
                }
            }
            Some(BodyFrame::Trailers(trailers)) => {
                self.out.streaming = false;
                self.out.end = Some(Some(trailers));
            }
            None => {
                self.out.streaming = false;
                self.out.end = Some(None);
            }
        }
        self.send_end_if_due();
    }

    /// Sends the end of the request body once everything before it is out.
    fn send_end_if_due(&mut self) {
        if self.out.refused || !self.out.queue.is_empty() {
            return;
        }
        let Some(end) = self.out.end.take() else { return };
        let sent = match end {
            Some(trailers) => self.send.send_trailers(trailers),
            None => self.send.send_data(Bytes::new(), true),
        };
        if sent.is_err() {
            self.out.refused = true;
        }
    }

    /// The response head or the next body frame read, or queued request
    /// body sent as the peer's window opens, whichever comes first.
    /// Cancel-safe: `h2`'s polls keep their state.
    pub(crate) async fn io(&mut self) {
        let Exchange { send, response, out, reused, .. } = self;
        let reused = *reused;
        let awaiting = out.awaiting_continue;
        let (pending, wanted) = (out.has_pending(), out.queue.front().map_or(0, Bytes::len));
        let awaiting_continue = &mut out.awaiting_continue;
        let read = async {
            match response {
                Response::Awaited(future) => {
                    // An informational `100` first, when the body waits for it.
                    let got = poll_fn(|cx| {
                        if awaiting.is_some()
                            && let Poll::Ready(Some(Ok(interim))) = future.poll_informational(cx)
                        {
                            return Poll::Ready(Err(interim.status()));
                        }
                        Pin::new(&mut *future).poll(cx).map(Ok)
                    })
                    .await;
                    *response = match got {
                        Err(status) => {
                            if status == http::StatusCode::CONTINUE {
                                *awaiting_continue = None;
                            }
                            return;
                        }
                        Ok(Ok(arrived)) => Response::Arrived(arrived),
                        Ok(Err(e)) => Response::Failed(Some(try_error(&e, reused))),
                    };
                }
                Response::Body { body, frame, data_done, done } if frame.is_none() && !*done => {
                    if *data_done {
                        // The trailers, once the data ended. Done only once
                        // they are in: the wait may be dropped and asked again.
                        *frame = Some(match body.trailers().await {
                            Ok(trailers) => Ok(trailers.map(BodyFrame::Trailers)),
                            Err(e) => Err(TryError::BadResponse(e.to_string())),
                        });
                        *done = true;
                        return;
                    }
                    match body.data().await {
                        Some(Ok(data)) => {
                            // Window back to the upstream as the client takes it.
                            let _ = body.flow_control().release_capacity(data.len());
                            if !data.is_empty() {
                                *frame = Some(Ok(Some(BodyFrame::Data(data))));
                            }
                        }
                        Some(Err(e)) => {
                            *frame = Some(Err(TryError::BadResponse(e.to_string())));
                            *done = true;
                        }
                        None => *data_done = true,
                    }
                }
                // Nothing to read until what was read is taken.
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = read => {}
            // No `100` in time: the body goes anyway.
            () = super::sleep_until_some(awaiting), if awaiting.is_some() => {
                out.awaiting_continue = None;
            }
            capacity = send_capacity(send, wanted), if pending => {
                match capacity {
                    Some(n) if n > 0 => {
                        let front = out.queue.front_mut().expect("pending data");
                        let data = front.split_to(n.min(front.len()));
                        if front.is_empty() {
                            out.queue.pop_front();
                        }
                        if send.send_data(data, false).is_err() {
                            out.refused = true;
                        }
                    }
                    Some(_) => {}
                    None => {
                        tracing::debug!("upstream stopped taking the request body");
                        out.refused = true;
                        out.queue.clear();
                    }
                }
            }
        }
        self.send_end_if_due();
    }
}

/// Waits for window to send up to `wanted` bytes: how much there is, or
/// `None` when the stream takes no more (reset, closed). Cancel-safe.
async fn send_capacity(send: &mut SendStream<Bytes>, wanted: usize) -> Option<usize> {
    send.reserve_capacity(wanted);
    match poll_fn(|cx| send.poll_capacity(cx)).await {
        Some(Ok(n)) => Some(n),
        Some(Err(_)) | None => None,
    }
}
