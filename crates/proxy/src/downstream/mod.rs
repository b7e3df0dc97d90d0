//! The client side: a connection's protocol, and the client side of each
//! stream on it.
//!
//! [`serve`] first completes the TLS handshake on a TLS listener (`tls`:
//! under the listener's `handshake_timeout`), whose ALPN, when agreed on,
//! picks the protocol. Otherwise it looks at the first bytes of the
//! connection (listener `protocol: auto`): the HTTP/2 connection preface
//! means HTTP/2 with prior knowledge, anything else HTTP/1.1. Either way each request becomes a
//! [`Downstream`]: the one protocol-neutral interface to read the request
//! body from and write the response to. It knows nothing of filters; the
//! filter manager wraps it (`filter_manager::FilteredStream`), and the
//! stream layer ([`crate::stream`]) only ever talks to that wrapper.

mod http1;
mod http2;
mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use nuncio_config::ListenerProtocol;
use nuncio_context::{CancelHandle, Context, Done};
use tokio::net::TcpStream;

use crate::io::Io;

use crate::bounded::{until, within};
use crate::message::{BodyFrame, RequestBodyError, ResponseHead};
use crate::worker::Worker;

/// What starts every HTTP/2 connection (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a request body starts with, as far as what is buffered shows
/// ([`Downstream::body_start`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyStart {
    /// Not here yet, or data.
    Unknown,
    /// The body ended without a byte.
    Empty,
    /// The body is malformed from its first bytes (a bad chunk size).
    Invalid,
}

/// The client is gone: a response write failed.
#[derive(Debug)]
pub(crate) struct WriteError;

/// What [`open`] leaves: the connection, and whether it speaks HTTP/2.
pub(crate) type Opened = Option<(http1::Connection, bool)>;

/// Serves one accepted client connection until it closes: `opening` (the
/// boxed [`open`]) completes the TLS handshake and picks the protocol, then
/// that protocol's connection loop takes over. `conn` cancels the
/// connection's context when the connection ends (whatever still derives
/// from it), then `guard` (what counts the connection open) is dropped.
///
/// An idle keep-alive connection costs what its task holds, and this
/// future is the task: it owns what the connection needs once (the worker,
/// the listener's name, the context's handle, the guard) and lends it
/// down; it is not an `async fn` (an `async fn` keeps room for each
/// argument twice); and the opening comes boxed, made by the accept loop,
/// so that the socket, the address and what the TLS handshake needs live
/// in the box only while the connection opens. The listener closing for
/// good (a drain out of time) ends the connection wherever it is
/// ([`until_closed`], one waiter on the connection's context for its
/// life); an idle one already ended when the listener began to drain.
#[expect(clippy::manual_async_fn, reason = "an `async fn` keeps room for each argument twice")]
pub(crate) fn serve(
    worker: Rc<Worker>,
    listener: Rc<str>,
    opening: Pin<Box<impl Future<Output = Opened> + 'static>>,
    conn: CancelHandle,
    guard: impl Sized + 'static,
) -> impl Future<Output = ()> + 'static {
    async move {
        // Each waiter on the closing (`ctx.done()`) lives in the phase that
        // needs it, and nothing the task keeps across an `.await` is a
        // local it could do without: an idle connection's task is 512
        // bytes of tokio task cell, and 8 more bytes of future would make
        // it 640.
        'served: {
            // A `let`, not an `if let`: the scrutinee would keep its room
            // through the connection's whole life.
            let Some(Some((mut opened, http2))) = until_closed(&worker, &mut conn.as_context().done(), opening).await
            else {
                break 'served;
            };
            if http2 {
                let (session, peer) = (opened.tls.clone(), opened.peer);
                let (io, drained) = opened.into_parts();
                let (worker_rc, listener_rc) = (worker.clone(), listener.clone());
                let ctx = conn.as_context();
                let serve = http2::serve(worker_rc, listener_rc, io, peer, session, ctx.clone(), drained);
                Box::pin(until_closed(&worker, &mut ctx.done(), serve)).await;
            } else {
                http1::serve(&worker, &listener, &mut opened, conn.as_context()).await;
            }
        }
        drop(conn);
        drop(guard);
    }
}

pin_project_lite::pin_project! {
    /// See [`until_closed`].
    #[must_use = "futures do nothing unless awaited"]
    struct UntilClosed<'a, F> {
        #[pin]
        work: F,
        worker: &'a Worker,
        closed: &'a mut Done,
    }
}

/// `work`, unless the listener closes for good first (`closed`: the
/// connection context's `done()`): then `work` is dropped wherever it is,
/// and `None`. A struct, not an `async fn`: that would hold `work` twice
/// (see `bounded`), and a request's future is kilobytes.
fn until_closed<'a, F: Future>(worker: &'a Worker, closed: &'a mut Done, work: F) -> UntilClosed<'a, F> {
    UntilClosed { work, worker, closed }
}

impl<F: Future> Future for UntilClosed<'_, F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        let this = self.project();
        // First: once closed, not a byte more (a stream would otherwise see
        // its context cancelled and answer).
        if Pin::new(&mut **this.closed).poll(cx).is_ready() {
            count_drain_close(this.worker);
            return std::task::Poll::Ready(None);
        }
        this.work.poll(cx).map(Some)
    }
}

/// Counts a connection the listener's closing ended.
fn count_drain_close(worker: &Worker) {
    if let Ok(local) = worker.local.get() {
        local.stats.inc(local.snapshot.stats.downstream_cx_drain_close);
    }
}

/// Completes the TLS handshake (on a TLS listener) and picks the
/// protocol: the connection, and whether it speaks HTTP/2. Owns what it
/// needs: the accept loop boxes it (see [`serve`]).
pub(crate) async fn open(
    worker: Rc<Worker>,
    listener: Rc<str>,
    socket: TcpStream,
    peer: SocketAddr,
    draining: Context,
) -> Opened {
    let (protocol, idle, tls) = worker
        .local
        .with(|l| {
            let snapshot = l.snapshot.listeners.get(&*listener)?;
            Some((snapshot.config.protocol, snapshot.config.idle_timeout, snapshot.tls.clone()))
        })
        .ok()
        .flatten()?;
    let (stream, session) = match tls {
        None => (Io::Plain(socket), None),
        Some(tls) => {
            let (stream, session) = Box::pin(tls::accept(&worker, &listener, &tls, socket, peer)).await?;
            (stream, Some(Rc::new(session)))
        }
    };
    // ALPN decides when it was agreed on; else the listener's protocol.
    let protocol = match session.as_ref().and_then(|s| s.alpn.as_deref()) {
        Some("h2") => ListenerProtocol::Http2,
        Some("http/1.1") => ListenerProtocol::Http1,
        _ => protocol,
    };
    let mut conn = http1::Connection::new(stream, peer, session, draining.done());
    let http2 = match protocol {
        ListenerProtocol::Http1 => false,
        ListenerProtocol::Http2 => true,
        ListenerProtocol::Auto => {
            // Read until the bytes stop looking like the preface (one read
            // for any HTTP/1.1 request) or the whole preface is there.
            while conn.read_buf.len() < PREFACE.len() && PREFACE.starts_with(&conn.read_buf) {
                if within(idle, conn.read_more()).await.is_none_or(|r| r.is_err()) {
                    return None;
                }
            }
            conn.read_buf.starts_with(PREFACE)
        }
    };
    Some((conn, http2))
}

/// The client side of one stream: where the request body comes from and
/// the response goes to, with the bytes counted both ways. Protocol only:
/// what it is asked to write goes out as is.
pub(crate) struct Downstream<'c> {
    codec: Codec<'c>,
    /// Request body bytes read.
    bytes_received: u64,
    /// Response body bytes sent.
    bytes_sent: u64,
    /// When the request body must have arrived by (see [`BodyClock`]).
    body_clock: BodyClock,
}

/// The request body's deadline: `timeout` after the head, one second more
/// for every `min_rate` bytes received (Apache's `RequestReadTimeout
/// body=20,MinRate=500`). A large upload at a decent rate always has time
/// left; a client trickling a few bytes a second runs out.
#[derive(Clone, Copy)]
pub(crate) struct BodyClock {
    start: tokio::time::Instant,
    timeout: Option<std::time::Duration>,
    min_rate: u64,
}

impl BodyClock {
    /// The clock of a body whose head arrived now, under `listener`'s
    /// settings.
    pub(crate) fn new(listener: &nuncio_config::Listener) -> BodyClock {
        BodyClock {
            start: nuncio_runtime::clock::now(),
            timeout: listener.request_body_timeout,
            min_rate: listener.request_body_min_rate,
        }
    }

    /// The deadline once `received` bytes are in; `None` for none.
    fn deadline(&self, received: u64) -> Option<tokio::time::Instant> {
        let timeout = self.timeout?;
        let earned = match self.min_rate {
            0 => std::time::Duration::ZERO,
            rate => std::time::Duration::from_secs(received / rate),
        };
        Some(self.start + timeout + earned)
    }
}

/// The protocol of a [`Downstream`].
enum Codec<'c> {
    Http1(http1::Exchange<'c>),
    Http2(http2::Exchange),
}

impl<'c> Downstream<'c> {
    fn new(codec: Codec<'c>, body_clock: BodyClock) -> Downstream<'c> {
        Downstream { codec, bytes_received: 0, bytes_sent: 0, body_clock }
    }

    /// When the request's head arrived (one clock read serves the body's
    /// timeouts and the stream's timings).
    pub(crate) fn started(&self) -> tokio::time::Instant {
        self.body_clock.start
    }

    /// The client's address.
    pub(crate) fn peer(&self) -> SocketAddr {
        match &self.codec {
            Codec::Http1(e) => e.peer(),
            Codec::Http2(e) => e.peer(),
        }
    }

    /// The connection's TLS session, on a TLS listener.
    pub(crate) fn tls(&self) -> Option<&nuncio_tls::SessionInfo> {
        match &self.codec {
            Codec::Http1(e) => e.tls(),
            Codec::Http2(e) => e.tls(),
        }
    }

    /// Request body bytes read so far.
    pub(crate) fn bytes_received(&self) -> u64 {
        self.bytes_received
    }

    /// Response body bytes sent so far.
    pub(crate) fn bytes_sent(&self) -> u64 {
        self.bytes_sent
    }

    /// The next piece of the request body as the client sent it; `None`
    /// once it ended. Trailers, if any, come last.
    pub(crate) async fn read_body(&mut self) -> Result<Option<BodyFrame>, RequestBodyError> {
        let read = async {
            match &mut self.codec {
                Codec::Http1(e) => e.read_body().await,
                Codec::Http2(e) => e.read_body().await,
            }
        };
        let frame =
            until(self.body_clock.deadline(self.bytes_received), read).await.unwrap_or(Err(RequestBodyError::TimedOut));
        if let Ok(Some(BodyFrame::Data(data))) = &frame {
            self.bytes_received += data.len() as u64;
        }
        frame
    }

    /// Whether the request body is known to have ended with the piece
    /// [`Downstream::read_body`] returned last, without reading more: the
    /// filters then hear the end with that piece. Asked only by the filter
    /// path (the unfiltered one takes the end as it comes).
    pub(crate) fn body_ended(&mut self) -> bool {
        match &mut self.codec {
            Codec::Http1(e) => e.body_ended(),
            Codec::Http2(e) => e.body_ended(),
        }
    }

    /// Resolves when [`Downstream::read_body`] has something to return
    /// without waiting: a piece, the end, or why there is none. Cancel-safe
    /// (what it read is kept for `read_body`), so that the request body can
    /// be waited for beside the upstream's answer.
    /// Resolves, too, when the body's time runs out (`read_body` then says
    /// so).
    pub(crate) async fn body_ready(&mut self) {
        let ready = async {
            match &mut self.codec {
                Codec::Http1(e) => e.body_ready().await,
                Codec::Http2(e) => e.body_ready().await,
            }
        };
        let _ = until(self.body_clock.deadline(self.bytes_received), ready).await;
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

    /// What the request body's first piece is, if it is here already
    /// (checked without waiting: what is buffered is decoded, and kept for
    /// [`Downstream::read_body`]).
    pub(crate) fn body_start(&mut self) -> BodyStart {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let peeked = match &mut self.codec {
            Codec::Http1(e) => {
                let ready = std::pin::pin!(e.body_ready()).poll(&mut cx).is_ready();
                if ready { e.peeked_start() } else { None }
            }
            Codec::Http2(e) => {
                let ready = std::pin::pin!(e.body_ready()).poll(&mut cx).is_ready();
                if ready { e.peeked_start() } else { None }
            }
        };
        peeked.unwrap_or(BodyStart::Unknown)
    }

    /// Whether the client has reset the stream already, checked without
    /// waiting (HTTP/2; an HTTP/1.1 client that leaves is seen while its
    /// request waits for the upstream).
    pub(crate) fn gone_now(&mut self) -> bool {
        match &mut self.codec {
            Codec::Http1(_) => false,
            Codec::Http2(e) => e.gone_now(),
        }
    }

    /// The response status, once a head was sent.
    pub(crate) fn status(&self) -> Option<StatusCode> {
        match &self.codec {
            Codec::Http1(e) => e.status(),
            Codec::Http2(e) => e.status(),
        }
    }

    /// Whether a response head went out (or is queued to): after that, a
    /// failure can only abort the stream.
    pub(crate) fn response_started(&self) -> bool {
        match &self.codec {
            Codec::Http1(e) => e.response_started(),
            Codec::Http2(e) => e.response_started(),
        }
    }

    /// Starts the response. HTTP/1.1 buffers the head until the first body
    /// bytes or [`Downstream::flush`]: one write for a small response.
    pub(crate) fn send_head(&mut self, head: ResponseHead) -> Result<(), WriteError> {
        match &mut self.codec {
            Codec::Http1(e) => {
                e.send_head(head);
                Ok(())
            }
            Codec::Http2(e) => e.send_head(head),
        }
    }

    /// Sends a piece of the response body, waiting for the client to take
    /// it (TCP or HTTP/2 flow control): whoever feeds it is slowed down.
    pub(crate) async fn send_data(&mut self, data: Bytes) -> Result<(), WriteError> {
        self.bytes_sent += data.len() as u64;
        match &mut self.codec {
            Codec::Http1(e) => e.send_data(data).await,
            Codec::Http2(e) => e.send_data(data).await,
        }
    }

    /// Sends a piece of the response body whose next piece the caller
    /// already has: HTTP/1.1 keeps it to go out with that one (one write,
    /// one TCP segment); HTTP/2 sends it as [`Downstream::send_data`] does
    /// (the `h2` crate queues frames and writes them together anyway).
    pub(crate) async fn hold_data(&mut self, data: Bytes) -> Result<(), WriteError> {
        self.bytes_sent += data.len() as u64;
        match &mut self.codec {
            Codec::Http1(e) => e.hold_data(data).await,
            Codec::Http2(e) => e.send_data(data).await,
        }
    }

    /// Sends the response's last piece of body and ends the response: one
    /// write for a chunked HTTP/1.1 body (the last chunk with it), one DATA
    /// frame with `END_STREAM` for HTTP/2.
    pub(crate) async fn send_last(&mut self, data: Bytes) -> Result<(), WriteError> {
        self.bytes_sent += data.len() as u64;
        match &mut self.codec {
            Codec::Http1(e) => e.send_last(data).await,
            Codec::Http2(e) => e.send_last(data).await,
        }
    }

    /// Ends the response with trailer fields (dropped if the response is
    /// not chunked HTTP/1.1 or HTTP/2: nothing else can carry them).
    pub(crate) async fn send_trailers(&mut self, trailers: HeaderMap) -> Result<(), WriteError> {
        match &mut self.codec {
            Codec::Http1(e) => e.send_trailers(trailers).await,
            Codec::Http2(e) => e.send_trailers(&trailers),
        }
    }

    /// Ends the response (no-op if trailers ended it).
    pub(crate) async fn finish(&mut self) -> Result<(), WriteError> {
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

    /// Gives up on the client connection after this stream whatever the
    /// protocol would allow (a request the codec could not frame).
    pub(crate) fn close_connection(&mut self) {
        match &mut self.codec {
            Codec::Http1(e) => e.abort(),
            Codec::Http2(_) => {}
        }
    }

    /// Switches protocols (HTTP/1.1 only; see `http1::Exchange::tunnel`):
    /// bytes flow both ways until either side closes or nothing moves for
    /// `idle`; what moved is counted as the stream's body bytes (the access
    /// log's `%BYTES_RECEIVED%` and `%BYTES_SENT%`). `false` when the
    /// client speaks another protocol: nothing was sent.
    pub(crate) async fn tunnel(
        &mut self,
        status: StatusCode,
        headers: &HeaderMap,
        upstream: &mut Io,
        early: Bytes,
        idle: Option<std::time::Duration>,
    ) -> bool {
        match &mut self.codec {
            Codec::Http1(e) => {
                let moved = e.tunnel(status, headers, upstream, early, idle).await;
                self.bytes_received += moved.up;
                self.bytes_sent += moved.down;
                true
            }
            Codec::Http2(_) => false,
        }
    }
}
