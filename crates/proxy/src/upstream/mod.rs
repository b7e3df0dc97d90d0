//! The upstream side of a stream: one try of a request on an endpoint, in
//! the cluster's protocol, as an [`Exchange`] that sends the request and
//! receives the response at the same time.
//!
//! # Full duplex
//!
//! An upstream may answer before it has read the whole request body (a
//! `413`, `401` or `302` to an upload) and then stop reading, or close.
//! Written half-duplex — the whole body out, then the response read — that
//! answer would be lost behind a write that never completes. So an
//! exchange reads the response *while* the body goes out, as Envoy and
//! Pingora's duplex mode do: [`response_head`] and [`next_frame`] wait for
//! the upstream's next head or frame and, meanwhile, feed it the request
//! body from its [`RequestSource`] as the upstream takes it. Once the
//! upstream stops taking the body (it answered and closed, or reset the
//! stream), nothing more is sent and its answer still goes to the client.
//!
//! Everything a try waits on is cancel-safe (a try's future may be dropped
//! at any await: timeout, client gone, a faster answer): reads land in
//! buffers that outlive the wait, writes remember how far they got.
//!
//! [`pool`] owns the connections: idle HTTP/1.1 keep-alive connections and
//! multiplexed HTTP/2 connections, per endpoint, on this worker.

pub(crate) mod http1;
pub(crate) mod http2;
pub(crate) mod pool;

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, Uri};
use nuncio_accesslog::ResponseFlags;

use crate::cluster::ConnectError;
use crate::message::{BodyFrame, BodySize, HeadFields, RequestBodyError, ResponseHead};

/// The request as it goes upstream (prepared once, sent by every try).
#[derive(Clone)]
pub(crate) struct UpstreamRequest<'r> {
    pub(crate) method: Method,
    /// Origin-form: `/path?query`.
    pub(crate) target: Uri,
    /// Hop-by-hop fields removed, forwarding fields and `Host` set (the
    /// client's head, changed in place: the access log sees what was sent).
    pub(crate) headers: &'r HeadFields,
    pub(crate) body: BodySize,
    /// The time left to this try, told to the upstream (`grpc-timeout`, or
    /// the listener's `time_left_header`), set per try; replaces a field of
    /// that name in `headers`.
    pub(crate) deadline: Option<crate::deadline::TimeLeft>,
    /// The `traceparent` this try sends (it names the try's span), when the
    /// request is traced; set per try. (A sampled request's own
    /// `traceparent` was taken out of `headers`.)
    pub(crate) traceparent: Option<nuncio_trace::TraceParent>,
    /// The protocol a tunnel may switch to (`Upgrade: websocket`, HTTP/1.1
    /// only): a `101` for anything else is refused.
    pub(crate) upgrade: Option<HeaderValue>,
    /// The request carries `Expect: 100-continue`: its (streamed) body goes
    /// out once the upstream answers `100`, or after [`CONTINUE_WAIT`]
    /// without an answer (RFC 9110 §10.1.1).
    pub(crate) expect_continue: bool,
}

/// How long a body waits for the upstream's `100 Continue` before it goes
/// anyway (curl waits 1 s too): an upstream that ignores the expectation
/// must not stall the upload.
pub(crate) const CONTINUE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Sleeps until `at`; never wakes for `None`. For a `select!` branch with
/// a precondition: its future is built even while the branch is disabled,
/// and `sleep_until(at.unwrap_or_else(Instant::now))` read the clock and
/// built a timer for every turn of every exchange.
pub(crate) async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The request body as the tries see it.
#[derive(Clone)]
pub(crate) enum RequestBody {
    /// No body.
    Empty,
    /// Read in full before the first try; can be sent again.
    Buffered(Vec<Bytes>),
    /// Still with the client, forwarded as it arrives (once).
    Streaming { started: bool },
}

impl RequestBody {
    /// Whether another try can send it again.
    pub(crate) fn replayable(&self) -> bool {
        !matches!(self, RequestBody::Streaming { started: true })
    }

    /// Whether there is no byte to send.
    fn is_empty(&self) -> bool {
        match self {
            RequestBody::Empty => true,
            RequestBody::Buffered(chunks) => chunks.iter().all(Bytes::is_empty),
            RequestBody::Streaming { .. } => false,
        }
    }
}

impl std::fmt::Display for TryError {
    /// What went wrong, as the client is told it (spans say it too).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (_, message) = self.answer();
        f.write_str(message.strip_prefix("nuncio: ").unwrap_or(&message))
    }
}

/// Why one try failed.
#[derive(Debug)]
pub(crate) enum TryError {
    Connect(ConnectError),
    /// The upstream closed or reset before a complete response head (or
    /// during the body). `reused`: on a connection that carried requests
    /// before (it may have been closed by the upstream meanwhile, without
    /// seeing this one).
    Reset {
        reused: bool,
    },
    /// The upstream refused the HTTP/2 stream: it was not processed.
    Refused,
    /// The upstream's response could not be decoded.
    BadResponse(String),
    /// The upstream switched protocols (101) for a request that did not ask
    /// for that protocol.
    UnaskedUpgrade,
    /// The try's deadline (per-try timeout) passed.
    TryTimeout,
    /// Whoever the request is for stopped it: the client left or sent a bad
    /// body, or a filter answered.
    Source(RequestBodyError),
}

impl TryError {
    /// What the client is told when this ends the request: the status and a
    /// line saying why (nuncio answered itself).
    pub(crate) fn answer(&self) -> (StatusCode, String) {
        match self {
            TryError::Connect(ConnectError::Timeout) => {
                (StatusCode::SERVICE_UNAVAILABLE, "nuncio: upstream connect timeout".to_owned())
            }
            TryError::Connect(ConnectError::Failed(e)) => {
                (StatusCode::SERVICE_UNAVAILABLE, format!("nuncio: upstream connect error: {e}"))
            }
            TryError::Connect(ConnectError::Tls { message, .. }) => {
                (StatusCode::SERVICE_UNAVAILABLE, format!("nuncio: upstream TLS handshake failed: {message}"))
            }
            TryError::Connect(ConnectError::Overflow(breaker)) => {
                (StatusCode::SERVICE_UNAVAILABLE, format!("nuncio: circuit breaker {} open", breaker.name()))
            }
            TryError::Reset { .. } => {
                (StatusCode::BAD_GATEWAY, "nuncio: upstream reset before response headers".to_owned())
            }
            TryError::Refused => (StatusCode::SERVICE_UNAVAILABLE, "nuncio: upstream refused the stream".to_owned()),
            TryError::BadResponse(e) => (StatusCode::BAD_GATEWAY, format!("nuncio: invalid upstream response: {e}")),
            TryError::UnaskedUpgrade => (
                StatusCode::BAD_GATEWAY,
                "nuncio: upstream switched protocols for a request that did not ask to".to_owned(),
            ),
            TryError::TryTimeout => (StatusCode::GATEWAY_TIMEOUT, "nuncio: upstream per-try timeout".to_owned()),
            TryError::Source(RequestBodyError::Invalid(e)) => (e.status(), format!("nuncio: bad request body: {e}")),
            TryError::Source(RequestBodyError::TimedOut) => {
                (StatusCode::REQUEST_TIMEOUT, "nuncio: request body not received in time".to_owned())
            }
            TryError::Source(RequestBodyError::Gone | RequestBodyError::Answered) => {
                (StatusCode::BAD_REQUEST, "nuncio: the request ended before it was forwarded".to_owned())
            }
        }
    }

    /// The response flag it leaves in the access log.
    pub(crate) fn flag(&self) -> ResponseFlags {
        match self {
            TryError::Connect(ConnectError::Overflow(_)) => ResponseFlags::UPSTREAM_OVERFLOW,
            TryError::Connect(_) => ResponseFlags::UPSTREAM_CONNECTION_FAILURE,
            TryError::Reset { .. } => ResponseFlags::UPSTREAM_CONNECTION_TERMINATION,
            TryError::Refused => ResponseFlags::UPSTREAM_REMOTE_RESET,
            TryError::BadResponse(_) | TryError::UnaskedUpgrade => ResponseFlags::UPSTREAM_PROTOCOL_ERROR,
            TryError::TryTimeout => ResponseFlags::UPSTREAM_REQUEST_TIMEOUT,
            TryError::Source(RequestBodyError::Invalid(_)) => ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR,
            TryError::Source(RequestBodyError::Gone) => ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION,
            TryError::Source(RequestBodyError::Answered) => ResponseFlags::NONE,
            TryError::Source(RequestBodyError::TimedOut) => ResponseFlags::STREAM_IDLE_TIMEOUT,
        }
    }
}

/// A final response head from the upstream.
pub(crate) struct UpstreamHead {
    pub(crate) head: ResponseHead,
    /// `101 Switching Protocols` (HTTP/1.1 only): the connection becomes a
    /// byte pipe.
    pub(crate) tunnel: bool,
    /// The address that answered.
    pub(crate) peer: Option<std::net::SocketAddr>,
}

/// One try's request and response on an upstream connection, in the
/// cluster's protocol.
pub(crate) enum Exchange {
    Http1(http1::Exchange),
    Http2(http2::Exchange),
}

impl Exchange {
    /// The final response head, if it arrived (1xx skipped); an error if the
    /// upstream failed before one.
    fn take_head(&mut self) -> Result<Option<UpstreamHead>, TryError> {
        match self {
            Exchange::Http1(e) => e.take_head(),
            Exchange::Http2(e) => e.take_head(),
        }
    }

    /// A response body frame available without waiting, if any (`Some(Ok(None))`
    /// at the end of the body).
    pub(crate) fn ready_frame(&mut self) -> Option<Result<Option<BodyFrame>, TryError>> {
        match self {
            Exchange::Http1(e) => e.ready_frame(),
            Exchange::Http2(e) => e.ready_frame(),
        }
    }

    /// Reads what the upstream has sent already, without waiting; returns
    /// whether anything happened (bytes read, or the connection's end), so
    /// that [`Exchange::ready_frame`] may have a frame. After a read that
    /// filled its buffer the socket likely holds more (a 16 KiB body and its
    /// head are more than one buffer); after a shorter one the socket's
    /// readiness was cleared and this makes no system call. HTTP/2 reads on
    /// its own connection task: nothing to do here.
    pub(crate) fn read_now(&mut self) -> bool {
        match self {
            Exchange::Http1(e) => e.read_now(),
            Exchange::Http2(_) => false,
        }
    }

    /// Whether the upstream can take more request body now (the body is
    /// streaming, nothing is waiting to go out, and the upstream has not
    /// stopped taking it).
    fn wants_body(&self) -> bool {
        match self {
            Exchange::Http1(e) => e.wants_body(),
            Exchange::Http2(e) => e.wants_body(),
        }
    }

    /// Queues a piece of the request body (`None`: its end).
    fn push_body(&mut self, frame: Option<BodyFrame>) {
        match self {
            Exchange::Http1(e) => e.push_body(frame),
            Exchange::Http2(e) => e.push_body(frame),
        }
    }

    /// One step of I/O with the upstream: response bytes read, or queued
    /// request bytes written. Cancel-safe.
    async fn io(&mut self) {
        match self {
            Exchange::Http1(e) => e.io().await,
            Exchange::Http2(e) => e.io().await,
        }
    }
}

/// What woke a [`RequestSource`] ([`RequestSource::wait`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wake {
    /// Request body can be read.
    Body,
    /// A filter's handle call is queued.
    Calls,
    /// The client left.
    Gone,
}

/// What a [`RequestSource`] did when it acted on a [`Wake`].
pub(crate) enum Acted {
    /// A piece of the request body to send (`None`: its end).
    Body(Option<BodyFrame>),
    /// Nothing to send (held by a filter, or handle calls applied).
    Nothing,
}

/// Who a try is made for: where its streamed request body comes from, and
/// whether they are still there. Worker-local.
pub(crate) trait RequestSource {
    /// Resolves when the source needs attention: request body to read (when
    /// `want_body`), handle calls to apply, or the client gone. Cancel-safe:
    /// it waits without consuming anything.
    async fn wait(&mut self, want_body: bool) -> Wake;

    /// Acts on what [`RequestSource::wait`] said. Not cancel-safe (filter
    /// hooks may run): awaited to the end.
    async fn act(&mut self, wake: Wake) -> Result<Acted, RequestBodyError>;

    /// Whether whoever asked is known to be gone already (checked without
    /// waiting, before a try goes out: a stream the client reset is not
    /// forwarded).
    fn gone(&mut self) -> bool {
        false
    }
}

/// A request nuncio makes itself (a filter's call): its body is
/// [`RequestBody::Empty`] or [`RequestBody::Buffered`], never streamed, and
/// nobody can leave midway (the caller's context bounds the call instead).
pub(crate) struct NoClient;

impl RequestSource for NoClient {
    async fn wait(&mut self, _want_body: bool) -> Wake {
        std::future::pending().await
    }

    async fn act(&mut self, _wake: Wake) -> Result<Acted, RequestBodyError> {
        Ok(Acted::Nothing)
    }
}

/// Waits for the response head, sending the request body meanwhile.
pub(crate) async fn response_head<S: RequestSource>(
    exchange: &mut Exchange,
    source: &mut S,
) -> Result<UpstreamHead, TryError> {
    loop {
        if let Some(head) = exchange.take_head()? {
            return Ok(head);
        }
        drive(exchange, source).await?;
    }
}

/// The next frame of the response body (`None` at its end), sending the
/// request body meanwhile if it still streams.
pub(crate) async fn next_frame<S: RequestSource>(
    exchange: &mut Exchange,
    source: &mut S,
) -> Result<Option<BodyFrame>, TryError> {
    loop {
        if let Some(frame) = exchange.ready_frame() {
            return frame;
        }
        drive(exchange, source).await?;
    }
}

/// One step: the upstream's I/O or the source's, whichever is ready first
/// (the upstream first: an answer wins over more body).
async fn drive<S: RequestSource>(exchange: &mut Exchange, source: &mut S) -> Result<(), TryError> {
    let want_body = exchange.wants_body();
    let wake = tokio::select! {
        biased;
        () = exchange.io() => return Ok(()),
        wake = source.wait(want_body) => wake,
    };
    // Boxed: acting may run filter hooks, a large future; most waits end
    // in `io` and never come here.
    if let Acted::Body(frame) = Box::pin(source.act(wake)).await.map_err(TryError::Source)? {
        exchange.push_body(frame);
    }
    Ok(())
}
