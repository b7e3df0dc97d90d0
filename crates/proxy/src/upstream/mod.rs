//! The upstream side of a stream: one try of a request on a cluster
//! endpoint, in the cluster's protocol, and the response body it brings.
//!
//! [`send`] is the one entry: the stream layer does not know whether the
//! cluster speaks HTTP/1.1 (nuncio's codec, pooled connections) or HTTP/2
//! (the `h2` crate, one multiplexed connection per endpoint per worker).
//! Who asked is a [`RequestSource`]: a client's [`Downstream`] (a streamed
//! body, and a client that may leave), or [`NoClient`] for nuncio's own
//! requests (a filter's call), whose body is buffered whole.

pub(crate) mod http1;
pub(crate) mod http2;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use nuncio_config::UpstreamProtocol;

use crate::cluster::{ActiveRequest, ConnectError};
use crate::downstream::{Downstream, ReadError};
use crate::message::{BodyFrame, BodySize, ResponseHead};

/// The request as it goes upstream (prepared once, sent by every try).
pub(crate) struct UpstreamRequest<'r> {
    pub(crate) method: Method,
    /// Origin-form: `/path?query`.
    pub(crate) target: Uri,
    /// Hop-by-hop fields removed, forwarding fields and `Host` set (the
    /// client's head, changed in place: the access log sees what was sent).
    pub(crate) headers: &'r HeaderMap,
    pub(crate) body: BodySize,
    /// The time left to this try, told to the upstream (`grpc-timeout`, or
    /// the listener's `time_left_header`), set per try; replaces a field of
    /// that name in `headers`.
    pub(crate) deadline: Option<(HeaderName, HeaderValue)>,
}

/// The request body as the tries see it.
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
}

/// Why one try failed.
#[derive(Debug)]
pub(crate) enum TryError {
    Connect(ConnectError),
    /// The upstream closed or reset before a complete response head.
    /// `reused`: on a connection that carried requests before (it may have
    /// been closed by the upstream meanwhile, without seeing this one).
    Reset {
        reused: bool,
    },
    /// The upstream refused the HTTP/2 stream: it was not processed.
    Refused,
    /// The upstream's response could not be decoded.
    BadResponse(String),
    /// The upstream switched protocols (101) for a request that did not ask.
    UnaskedUpgrade,
    /// The try's deadline (per-try timeout) passed.
    TryTimeout,
    /// The client went away, or sent a bad body.
    Downstream(ReadError),
}

/// A response head from the upstream and the body still to come.
pub(crate) struct UpstreamResponse {
    pub(crate) head: ResponseHead,
    pub(crate) body: ResponseBody,
    /// `101 Switching Protocols` (HTTP/1.1 only): the connection becomes a
    /// byte pipe.
    pub(crate) tunnel: bool,
    /// The address that answered.
    pub(crate) peer: Option<std::net::SocketAddr>,
}

/// A response body being received.
pub(crate) enum ResponseBody {
    Http1(http1::ResponseBody),
    Http2(http2::ResponseBody),
}

/// The upstream failed while sending the body.
#[derive(Debug)]
pub(crate) struct BodyError(pub(crate) String);

impl ResponseBody {
    /// A frame available without waiting, if any (`None`: the caller may
    /// flush what it buffered, then wait with [`ResponseBody::next_frame`]).
    pub(crate) fn ready_frame(&mut self) -> Option<Result<Option<BodyFrame>, BodyError>> {
        match self {
            ResponseBody::Http1(b) => b.ready_frame(),
            ResponseBody::Http2(_) => None,
        }
    }

    /// The next frame; `None` at the end of the body.
    pub(crate) async fn next_frame(&mut self) -> Result<Option<BodyFrame>, BodyError> {
        match self {
            ResponseBody::Http1(b) => b.next_frame().await,
            ResponseBody::Http2(b) => b.next_frame().await,
        }
    }

    /// After the body ended: an HTTP/1.1 connection goes back to the pool.
    pub(crate) fn release(self, active: &ActiveRequest<'_>) {
        match self {
            ResponseBody::Http1(b) => b.release(active),
            ResponseBody::Http2(_) => {}
        }
    }
}

/// One try: the request (head and body) sent to `active`'s endpoint in
/// `protocol`, the response head received. A [`RequestBody::Streaming`]
/// body comes from `source`; a source that leaves cancels the try.
pub(crate) async fn send<S: RequestSource>(
    protocol: UpstreamProtocol,
    active: &ActiveRequest<'_>,
    request: &UpstreamRequest<'_>,
    body: &mut RequestBody,
    source: &mut S,
) -> Result<UpstreamResponse, TryError> {
    match protocol {
        UpstreamProtocol::Http1 => http1::send(active, request, body, source).await,
        UpstreamProtocol::Http2 => http2::send(active, request, body, source).await,
    }
}

/// Who a try is made for: where a streamed request body comes from, and
/// whether they are still there. Worker-local.
pub(crate) trait RequestSource {
    /// The next piece of the request body; `None` once it ended.
    async fn read_body(&mut self) -> Result<Option<BodyFrame>, ReadError>;

    /// Resolves when whoever asked is gone (the try is abandoned then).
    /// Cancel-safe.
    async fn closed(&mut self);
}

impl RequestSource for Downstream<'_> {
    async fn read_body(&mut self) -> Result<Option<BodyFrame>, ReadError> {
        Downstream::read_body(self).await
    }

    async fn closed(&mut self) {
        Downstream::closed(self).await;
    }
}

/// A request nuncio makes itself (a filter's HTTP call): its body is
/// [`RequestBody::Empty`] or [`RequestBody::Buffered`], never streamed, and
/// nobody can leave midway (the caller's context bounds the call instead).
pub(crate) struct NoClient;

impl RequestSource for NoClient {
    async fn read_body(&mut self) -> Result<Option<BodyFrame>, ReadError> {
        Ok(None)
    }

    async fn closed(&mut self) {
        std::future::pending::<()>().await;
    }
}
