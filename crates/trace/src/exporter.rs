//! The exporter: a bounded queue from the workers to a thread of its own,
//! which batches spans and posts them to an OTLP/HTTP collector.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use crossbeam_queue::ArrayQueue;
use http::{HeaderMap, HeaderValue, Method, Uri, header};
use nuncio_http1::{BodyDecoder, BodyEvent, BodyFraming, Limits, ResponseDecoder};
use nuncio_stats::{Counter, DURATION_BUCKETS, Histogram, StatsBuilder, Store};

use crate::Error;
use crate::context::SpanIds;
use crate::endpoint::Endpoint;
use crate::proto::{self, field};
use crate::span::{Span, SpanKind};

/// Spans the queue between the workers and the exporter holds by default:
/// OpenTelemetry's `OTEL_BSP_MAX_QUEUE_SIZE`.
pub const DEFAULT_QUEUE_SIZE: usize = 2048;

/// Most spans in one export request: OpenTelemetry's
/// `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`.
pub const MAX_BATCH: usize = 512;

/// How long a span waits for others to fill a batch before the batch goes
/// anyway. (OpenTelemetry's SDKs wait 5 s; nuncio's batches fill fast under
/// load and a short wait keeps traces close to live when traffic is light.)
pub const BATCH_DELAY: Duration = Duration::from_millis(200);

/// How often the exporter's thread looks at the queue. It polls rather
/// than sleeping until woken, for the reason the access log's writer
/// does: waking a sleeping thread would cost the worker that queued a span
/// a system call.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// The longest a connection to the collector may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The longest a write to, or a read from, the collector may take
/// (OpenTelemetry's export timeout).
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// After a failed export the next one waits this long, doubling up to
/// [`MAX_BACKOFF`]; the queue fills meanwhile, and spans that find it full
/// are dropped and counted.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// The longest wait between failed exports.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Buffers kept for reuse between the workers and the thread, and the
/// largest one kept.
const POOL_SIZE: usize = 1024;
const SPAN_CAPACITY: usize = 384;
const MAX_POOLED_CAPACITY: usize = 4096;

/// What an exporter sends where.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct ExporterConfig {
    /// The collector.
    pub endpoint: Endpoint,
    /// The `service.name` resource attribute of every span.
    pub service_name: String,
    /// Spans queued between the workers and the exporter's thread before
    /// new ones are dropped (at least 1).
    pub queue_size: usize,
}

/// A handle to one exporter: cheap to clone, `Send + Sync`, and never
/// blocking whoever records spans through it.
///
/// Spans ([`Exporter::span`]) are written by the thread that records them
/// into a buffer from the exporter's pool and, when they end, pushed onto
/// a bounded lock-free queue ([`ExporterConfig::queue_size`]) to the
/// exporter's thread: a few atomic operations, no lock, no system call.
/// When the queue is full the span is dropped and counted
/// (`nuncio_tracing_spans_dropped_total{reason="queue_full"}`). The queue
/// is the bound: the thread takes spans off it only to send them.
///
/// The thread batches spans (up to [`MAX_BATCH`], or what came within
/// [`BATCH_DELAY`]) into one OTLP `ExportTraceServiceRequest` and posts it
/// (HTTP/1.1, `application/x-protobuf`, a kept-alive connection). A batch
/// the collector refuses or cannot be reached for is dropped and counted
/// (`reason="export_failed"`), the failure logged once per run of
/// failures, and the next export waits ([`FIRST_BACKOFF`] up to
/// [`MAX_BACKOFF`]).
///
/// The thread keeps its own counts in its own stats [`Store`]
/// ([`Exporter::store`]: attach it to the admin's `Stats`). When the last
/// handle is dropped the thread exports what is queued (one attempt) and
/// ends by itself: dropping a handle never waits, on any thread.
#[derive(Clone)]
pub struct Exporter {
    shared: Arc<Shared>,
}

struct Shared {
    config: ExporterConfig,
    state: Arc<State>,
    store: Arc<Store>,
}

/// Shared with the thread (which must not hold `Shared`, or the last
/// handle would never go).
struct State {
    /// Ended spans, waiting for the thread.
    queue: ArrayQueue<Vec<u8>>,
    /// Every handle is gone: the thread sends what is queued and ends.
    closed: AtomicBool,
    pool: ArrayQueue<Vec<u8>>,
    /// Spans dropped on a full queue (written by the workers, on that path
    /// only; the thread copies the count into its store).
    queue_full: AtomicU64,
    /// Batches the thread was asked to send now ([`Exporter::flush`]).
    flush: Mutex<Vec<SyncSender<()>>>,
}

impl State {
    fn buffer(&self) -> Vec<u8> {
        self.pool.pop().unwrap_or_else(|| Vec::with_capacity(SPAN_CAPACITY))
    }

    fn recycle(&self, mut buffer: Vec<u8>) {
        if buffer.capacity() <= MAX_POOLED_CAPACITY {
            buffer.clear();
            let _ = self.pool.push(buffer);
        }
    }
}

impl Exporter {
    /// Starts an exporter for `config`: its stats and its thread. Call on
    /// main (it declares stats); nothing is connected until the first
    /// batch.
    pub fn start(config: ExporterConfig) -> Result<Exporter, Error> {
        let (stats, store) = ExportStats::declare();
        let state = Arc::new(State {
            queue: ArrayQueue::new(config.queue_size.max(1)),
            closed: AtomicBool::new(false),
            pool: ArrayQueue::new(POOL_SIZE.min(config.queue_size.max(1))),
            queue_full: AtomicU64::new(0),
            flush: Mutex::new(Vec::new()),
        });
        let batcher = Batcher::new(&config, state.clone(), stats, store.clone());
        thread::Builder::new().name("otlp-exporter".into()).spawn(move || batcher.run())?;
        Ok(Exporter { shared: Arc::new(Shared { config, state, store }) })
    }

    /// Starts span `ids` now (sampled: the caller decided). Record its
    /// attributes, then [`Span::end`] it; it leaves for the exporter's
    /// thread then. For the thread that records the span (a worker).
    pub fn span(&self, ids: &SpanIds, kind: SpanKind, name: &[&str]) -> Span<'_> {
        Span::start(self, ids, kind, name)
    }

    /// What it sends where.
    pub fn config(&self) -> &ExporterConfig {
        &self.shared.config
    }

    /// The exporter's stats: spans exported and dropped, exports by result
    /// and their duration. Written by the exporter's thread only; attach a
    /// clone to the reader (the admin's `Stats`).
    pub fn store(&self) -> &Arc<Store> {
        &self.shared.store
    }

    /// Spans dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.shared.state.queue_full.load(Ordering::Relaxed)
    }

    /// Whether both handles lead to the same thread.
    pub fn same_exporter(&self, other: &Exporter) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// Asks the thread to export everything queued before this call now
    /// (without waiting for a batch to fill or a back-off to pass) and
    /// waits for it to have tried, at most `timeout`. Blocks: for main,
    /// shutdown paths and tests, never for workers.
    pub fn flush(&self, timeout: Duration) -> bool {
        let (done_tx, done_rx) = sync_channel(1);
        if let Ok(mut waiting) = self.shared.state.flush.lock() {
            waiting.push(done_tx);
        }
        done_rx.recv_timeout(timeout).is_ok()
    }

    pub(crate) fn buffer(&self) -> Vec<u8> {
        self.shared.state.buffer()
    }

    /// Queues an ended span; drops it (counted) when the queue is full.
    pub(crate) fn send(&self, span: Vec<u8>) {
        let state = &self.shared.state;
        if let Err(span) = state.queue.push(span) {
            state.queue_full.fetch_add(1, Ordering::Relaxed);
            state.recycle(span);
        }
    }
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter")
            .field("endpoint", &self.shared.config.endpoint.to_string())
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The thread sends what is queued and ends by itself.
        self.state.closed.store(true, Ordering::Release);
    }
}

/// The exporter's stats, in a store its thread alone writes.
struct ExportStats {
    exported: Counter,
    dropped_queue_full: Counter,
    dropped_export_failed: Counter,
    exports_success: Counter,
    exports_failure: Counter,
    duration: Histogram,
}

impl ExportStats {
    fn declare() -> (ExportStats, Arc<Store>) {
        let mut b = StatsBuilder::new();
        let dropped = "Spans not exported, by reason: the queue to the exporter was full, or the collector refused \
                       or could not be reached for their batch.";
        let exports = "Export requests to the OTLP collector, by result.";
        let stats = ExportStats {
            exported: b
                .counter("tracing_spans_exported_total", "Spans the OTLP collector accepted.", &[])
                .expect("a valid name"),
            dropped_queue_full: b
                .counter("tracing_spans_dropped_total", dropped, &[("reason", "queue_full")])
                .expect("a valid name"),
            dropped_export_failed: b
                .counter("tracing_spans_dropped_total", dropped, &[("reason", "export_failed")])
                .expect("a valid name"),
            exports_success: b
                .counter("tracing_exports_total", exports, &[("result", "success")])
                .expect("a valid name"),
            exports_failure: b
                .counter("tracing_exports_total", exports, &[("result", "failure")])
                .expect("a valid name"),
            duration: b
                .histogram(
                    "tracing_export_duration_seconds",
                    "Time to post one batch of spans to the OTLP collector and read its answer.",
                    &[],
                    DURATION_BUCKETS,
                )
                .expect("a valid name"),
        };
        (stats, Store::new(&b.build(), "exporter"))
    }
}

/// The exporter's thread: batches what the queue brings and posts it.
struct Batcher {
    state: Arc<State>,
    stats: ExportStats,
    store: Arc<Store>,
    client: Client,
    /// The request up to its spans (resource, scope), encoded once.
    resource: Vec<u8>,
    scope: Vec<u8>,
    /// Drops on a full queue already copied into the store.
    synced_drops: u64,
    /// Whether the last export failed (one warning per run of failures).
    failing: bool,
}

impl Batcher {
    fn new(config: &ExporterConfig, state: Arc<State>, stats: ExportStats, store: Arc<Store>) -> Batcher {
        let mut resource = Vec::new();
        for (key, value) in [
            ("service.name", config.service_name.as_str()),
            ("telemetry.sdk.name", "nuncio"),
            ("telemetry.sdk.language", "rust"),
            ("telemetry.sdk.version", env!("CARGO_PKG_VERSION")),
        ] {
            proto::string_attribute(&mut resource, field::resource::ATTRIBUTES, key, value.as_bytes());
        }
        let mut scope = Vec::new();
        proto::bytes_field(&mut scope, field::scope::NAME, b"nuncio");
        proto::bytes_field(&mut scope, field::scope::VERSION, env!("CARGO_PKG_VERSION").as_bytes());
        Batcher {
            state,
            stats,
            store,
            client: Client::new(config.endpoint.clone()),
            resource,
            scope,
            synced_drops: 0,
            failing: false,
        }
    }

    fn run(mut self) {
        let mut pending: Vec<Vec<u8>> = Vec::with_capacity(MAX_BATCH);
        // When the queue was first seen holding spans not yet sent.
        let mut since: Option<Instant> = None;
        let mut next_try = Instant::now();
        let mut backoff = FIRST_BACKOFF;
        let mut body = Vec::new();
        loop {
            self.sync_drops();
            let flushing = std::mem::take(&mut *self.state.flush.lock().unwrap_or_else(|e| e.into_inner()));
            // Read before the queue: spans queued before the last handle
            // went are all seen below.
            let closed = self.state.closed.load(Ordering::Acquire);
            let queued = self.state.queue.len();
            let now = Instant::now();
            if queued > 0 {
                since.get_or_insert(now);
            }
            let urgent = closed || !flushing.is_empty();
            let due = queued >= MAX_BATCH || since.is_some_and(|s| now - s >= BATCH_DELAY) || urgent;
            if queued > 0 && due && (now >= next_try || urgent) {
                while pending.len() < MAX_BATCH
                    && let Some(span) = self.state.queue.pop()
                {
                    pending.push(span);
                }
                since = (!self.state.queue.is_empty()).then_some(now);
                if self.export(&pending, &mut body) {
                    backoff = FIRST_BACKOFF;
                    next_try = Instant::now();
                } else {
                    next_try = Instant::now() + backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                for span in pending.drain(..) {
                    self.state.recycle(span);
                }
            }
            for done in flushing {
                let _ = done.send(());
            }
            if closed && self.state.queue.is_empty() {
                self.sync_drops();
                return;
            }
            if self.state.queue.len() < MAX_BATCH {
                thread::sleep(POLL_INTERVAL);
            }
        }
    }

    /// Copies the workers' count of spans dropped on a full queue.
    fn sync_drops(&mut self) {
        let drops = self.state.queue_full.load(Ordering::Relaxed);
        if drops > self.synced_drops {
            self.store.add(self.stats.dropped_queue_full, drops - self.synced_drops);
            self.synced_drops = drops;
        }
    }

    /// Posts `spans` as one request; whether the collector took it.
    fn export(&mut self, spans: &[Vec<u8>], body: &mut Vec<u8>) -> bool {
        body.clear();
        encode_request(&self.resource, &self.scope, spans, body);
        let started = Instant::now();
        let result = self.client.post(body);
        self.store.observe(self.stats.duration, started.elapsed());
        let n = spans.len() as u64;
        match result {
            Ok(()) => {
                self.store.add(self.stats.exported, n);
                self.store.inc(self.stats.exports_success);
                if std::mem::take(&mut self.failing) {
                    tracing::info!(endpoint = %self.client.endpoint, "OTLP export works again");
                }
                true
            }
            Err(e) => {
                self.store.add(self.stats.dropped_export_failed, n);
                self.store.inc(self.stats.exports_failure);
                if !std::mem::replace(&mut self.failing, true) {
                    tracing::warn!(endpoint = %self.client.endpoint, spans = n, "OTLP export failed, spans dropped: {e}");
                }
                false
            }
        }
    }
}

/// An `ExportTraceServiceRequest` of one `ResourceSpans` with one
/// `ScopeSpans` holding `spans` (each an encoded `Span` message).
fn encode_request(resource: &[u8], scope: &[u8], spans: &[Vec<u8>], out: &mut Vec<u8>) {
    use field::{export_request, resource_spans, scope_spans};
    let spans_len: usize = spans.iter().map(|s| proto::len_field_len(scope_spans::SPANS, s.len())).sum();
    let scope_spans_len = proto::len_field_len(scope_spans::SCOPE, scope.len()) + spans_len;
    let resource_spans_len = proto::len_field_len(resource_spans::RESOURCE, resource.len())
        + proto::len_field_len(resource_spans::SCOPE_SPANS, scope_spans_len);
    out.reserve(proto::len_field_len(export_request::RESOURCE_SPANS, resource_spans_len));
    proto::len_header(out, export_request::RESOURCE_SPANS, resource_spans_len);
    proto::bytes_field(out, resource_spans::RESOURCE, resource);
    proto::len_header(out, resource_spans::SCOPE_SPANS, scope_spans_len);
    proto::bytes_field(out, scope_spans::SCOPE, scope);
    for span in spans {
        proto::bytes_field(out, scope_spans::SPANS, span);
    }
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
enum ExportError {
    #[error("cannot resolve the collector's host: {0}")]
    Resolve(std::io::Error),
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("bad response: {0}")]
    Response(#[from] nuncio_http1::Error),
    #[error("the collector closed the connection before answering")]
    Closed,
    #[error("the collector answered {0}")]
    Status(http::StatusCode),
}

/// A blocking HTTP/1.1 client for one collector, on the exporter's thread:
/// one kept-alive connection, opened again when the collector closed it.
struct Client {
    endpoint: Endpoint,
    target: Uri,
    headers: HeaderMap,
    conn: Option<(TcpStream, BytesMut)>,
}

impl Client {
    fn new(endpoint: Endpoint) -> Client {
        let target = Uri::try_from(endpoint.path()).unwrap_or_else(|_| Uri::from_static("/v1/traces"));
        let mut headers = HeaderMap::new();
        if let Ok(host) = HeaderValue::try_from(endpoint.authority()) {
            headers.insert(header::HOST, host);
        }
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-protobuf"));
        headers.insert(header::USER_AGENT, HeaderValue::from_static(concat!("nuncio/", env!("CARGO_PKG_VERSION"))));
        Client { endpoint, target, headers, conn: None }
    }

    /// Posts `body`; a kept-alive connection the collector closed meanwhile
    /// costs one more connection, not a failure.
    fn post(&mut self, body: &[u8]) -> Result<(), ExportError> {
        if let Some(conn) = self.conn.take() {
            match self.exchange(conn, body) {
                Err(ExportError::Io(_) | ExportError::Closed) => {}
                done => return done,
            }
        }
        let conn = self.connect()?;
        self.exchange(conn, body)
    }

    fn connect(&self) -> Result<(TcpStream, BytesMut), ExportError> {
        let addresses = (self.endpoint.host(), self.endpoint.port()).to_socket_addrs().map_err(ExportError::Resolve)?;
        let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "the host resolves to no address");
        for address in addresses {
            match TcpStream::connect_timeout(&address, CONNECT_TIMEOUT) {
                Ok(stream) => {
                    stream.set_nodelay(true)?;
                    stream.set_read_timeout(Some(EXPORT_TIMEOUT))?;
                    stream.set_write_timeout(Some(EXPORT_TIMEOUT))?;
                    return Ok((stream, BytesMut::with_capacity(4096)));
                }
                Err(e) => last = e,
            }
        }
        Err(ExportError::Connect(last))
    }

    fn exchange(&mut self, (mut stream, mut buf): (TcpStream, BytesMut), body: &[u8]) -> Result<(), ExportError> {
        let mut head = BytesMut::with_capacity(256);
        nuncio_http1::encode_request_head(
            &Method::POST,
            &self.target,
            &self.headers,
            BodyFraming::Length(body.len() as u64),
            &mut head,
        );
        stream.write_all(&head)?;
        stream.write_all(body)?;
        let mut decoder = ResponseDecoder::new(Limits::default());
        let response = loop {
            match decoder.decode(&mut buf, &Method::POST)? {
                Some(response) if response.is_interim() => {}
                Some(response) => break response,
                None => read_more(&mut stream, &mut buf)?,
            }
        };
        let mut body = BodyDecoder::new(response.framing, Limits::default());
        loop {
            match body.decode(&mut buf)? {
                Some(BodyEvent::End) => break,
                Some(_) => {}
                None if matches!(response.framing, BodyFraming::UntilClose) => {
                    if read_more(&mut stream, &mut buf).is_err() {
                        break;
                    }
                }
                None => read_more(&mut stream, &mut buf)?,
            }
        }
        if response.keep_alive && body.is_done() {
            self.conn = Some((stream, buf));
        }
        if response.status.is_success() { Ok(()) } else { Err(ExportError::Status(response.status)) }
    }
}

fn read_more(stream: &mut TcpStream, buf: &mut BytesMut) -> Result<(), ExportError> {
    let mut chunk = [0u8; 4096];
    match stream.read(&mut chunk)? {
        0 => Err(ExportError::Closed),
        n => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(())
        }
    }
}

/// One [`Exporter`] per collector and service name, kept on main (as the
/// access log's sinks are): configs that name the same collector share a
/// thread, a reload that keeps it keeps its queue and its connection, and
/// [`prune`](ExporterRegistry::prune) lets go of those no config holds any
/// more.
#[derive(Debug, Default)]
pub struct ExporterRegistry {
    exporters: HashMap<ExporterConfig, Exporter>,
}

impl ExporterRegistry {
    /// An empty registry.
    pub fn new() -> ExporterRegistry {
        ExporterRegistry::default()
    }

    /// The exporter for `config`, and whether it was started now (attach
    /// a new one's [`store`](Exporter::store) to the admin's stats).
    pub fn get(&mut self, config: &ExporterConfig) -> Result<(Exporter, bool), Error> {
        if let Some(exporter) = self.exporters.get(config) {
            return Ok((exporter.clone(), false));
        }
        let exporter = Exporter::start(config.clone())?;
        self.exporters.insert(config.clone(), exporter.clone());
        Ok((exporter, true))
    }

    /// Lets go of the exporters only the registry still holds (their
    /// threads export what is queued and end).
    pub fn prune(&mut self) {
        self.exporters.retain(|_, exporter| Arc::strong_count(&exporter.shared) > 1);
    }

    /// How many exporters are held.
    pub fn len(&self) -> usize {
        self.exporters.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.exporters.is_empty()
    }
}
