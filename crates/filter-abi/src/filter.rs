//! The `go` filter kind and the Rust [`Filter`] that drives a foreign
//! filter: each hook calls the library on the worker (inline), and either
//! gets its decision during that call or waits for it as a pending hook
//! (deferred), resumed by exactly one `decide`.

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use nuncio_filter::{
    ClusterRef, ConfigError, CounterSet, CounterSpec, Filter, FilterCounter, FilterFactory, FilterKind, Hook,
    LocalReply, RequestHead, ResponseHead, Status, StreamCx, parse_config,
};
use serde::Deserialize;

use crate::abi::{end, hook, hook_flags, returns};
use crate::boundary::Library;
use crate::counts;
use crate::decision::{self, Decision, Kind};
use crate::stream::StreamCell;
use crate::table;
use crate::wire;

/// The `go` filter kind: `filters: [ { name: go, config: { library: PATH,
/// filter: NAME, config: ANY } } ]`.
///
/// `configure` (on the thread that loads the config) loads the library on
/// first use (the process's one library: see [`crate::library`]) and asks
/// it to configure filter `NAME` with `config` (as JSON); a bad block is
/// refused with the field named, like any config error.
#[derive(Debug, Clone, Copy, Default)]
pub struct GoKind;

/// The `go` block.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a map with `library`, `filter` and optionally `config`")]
struct Block {
    /// The library's path (relative: from the working directory).
    library: PathBuf,
    /// The filter of the library.
    filter: String,
    /// The filter's own config block.
    #[serde(default)]
    config: serde_json::Value,
}

/// The counter every foreign filter config has, before its own.
const PANICS: &str = "panics_total";

impl FilterKind for GoKind {
    fn name(&self) -> &'static str {
        "go"
    }

    fn configure(&self, config: serde_json::Value) -> Result<Arc<dyn FilterFactory>, ConfigError> {
        Ok(Arc::new(self.factory(config)?))
    }
}

impl GoKind {
    /// [`FilterKind::configure`], with the factory's own type.
    fn factory(&self, config: serde_json::Value) -> Result<GoFactory, ConfigError> {
        let block: Block = parse_config(config)?;
        if block.filter.is_empty() {
            return Err(ConfigError::at("filter", "names one of the filters the library registers"));
        }
        let library = crate::library::library(&block.library).map_err(|e| ConfigError::at("library", e.to_string()))?;
        let json = serde_json::to_vec(&block.config).map_err(|e| ConfigError::at("config", e.to_string()))?;
        let (id, out) = library.configure(&block.filter, &json);
        let mut reader = wire::Reader::new(&out);
        if id == 0 {
            let path = reader.text("a path").unwrap_or("");
            let message = reader.text("a message").unwrap_or("the library refused this config");
            return Err(ConfigError::at(path, message));
        }
        // From here on the config exists in the library: dropping `config`
        // releases it, whatever fails below.
        let mut config = GoConfig {
            library,
            id,
            name: format!("go.{}", block.filter),
            counters: CounterSet::new(),
            go_counters: Vec::new(),
            panics: None,
            clusters: Vec::new(),
            acts_on_request: false,
            acts_on_response: false,
            skip: AtomicU32::new(0),
            flush: counts::Flush::default(),
        };
        config.panics = Some(config.counters.declare(
            PANICS,
            "Hooks and SDK goroutines of a Go filter that panicked (each answered 500 when it still could).",
        )?);
        let bad =
            |what: &str| ConfigError::at("", format!("the library answered a malformed {what} (a bug in the SDK)"));
        loop {
            let name = reader.text("a counter name").map_err(|_| bad("counter list"))?;
            if name.is_empty() {
                break;
            }
            let help = reader.text("a counter help").map_err(|_| bad("counter list"))?;
            if name == PANICS {
                return Err(ConfigError::at(
                    "",
                    format!("the filter's counter {PANICS:?} is nuncio's own (a bug in the filter)"),
                ));
            }
            config.go_counters.push(config.counters.declare(name, help)?);
        }
        // The sides the filter acts on (`Config.ActsOn` in Go), then the
        // clusters it calls.
        loop {
            match reader.text("a side").map_err(|_| bad("side list"))? {
                "" => break,
                "request" => config.acts_on_request = true,
                "response" => config.acts_on_response = true,
                _ => return Err(bad("side list")),
            }
        }
        while !reader.is_empty() {
            let field = reader.text("a cluster field").map_err(|_| bad("cluster list"))?;
            let name = reader.text("a cluster name").map_err(|_| bad("cluster list"))?;
            let path = if field.is_empty() { "config".to_owned() } else { format!("config.{field}") };
            config.clusters.push(ClusterRef::at(path, name));
        }
        let config = Arc::new(config);
        counts::register(&config);
        Ok(GoFactory { config: Arc::new(WorkerConfig { shared: config }) })
    }
}

/// The factory of a listener's `go` entry: makes one [`GoFilter`] per
/// stream, sharing the config (which lives until its last stream ends).
///
/// Two `Arc`s: the config ([`WorkerConfig::shared`]) is shared by every
/// worker; the [`WorkerConfig`] around it is what each stream clones. Each
/// worker creates from its own copy ([`FilterFactory::for_worker`]), whose
/// `WorkerConfig` is the worker's: a stream's clone writes a count on the
/// worker's own cache line, not one that every worker writes
/// (docs/benchmarks.md, "Shared writes per request"). A stream reads the
/// config through both.
struct GoFactory {
    config: Arc<WorkerConfig>,
}

/// A worker's hold on the shared config: see [`GoFactory`].
struct WorkerConfig {
    shared: Arc<GoConfig>,
}

impl std::ops::Deref for WorkerConfig {
    type Target = GoConfig;

    fn deref(&self) -> &GoConfig {
        &self.shared
    }
}

/// One configured foreign filter: the factory of a listener's `go` entry.
pub(crate) struct GoConfig {
    pub(crate) library: Library,
    /// The library's id of this config.
    pub(crate) id: u64,
    /// `go.<filter>`: the kind part of its stats and logs.
    name: String,
    counters: CounterSet,
    /// The library's counters, by its index.
    pub(crate) go_counters: Vec<FilterCounter>,
    pub(crate) panics: Option<FilterCounter>,
    clusters: Vec<ClusterRef>,
    /// The sides the library said the filter acts on.
    acts_on_request: bool,
    acts_on_response: bool,
    /// Hooks the filter does not implement (bit per hook number), learnt
    /// from `DECISION_DEFAULT`: not called again.
    skip: AtomicU32,
    /// Where counts made outside a call are taken.
    pub(crate) flush: counts::Flush,
}

impl GoConfig {
    fn skips(&self, hook: u32) -> bool {
        self.skip.load(Ordering::Relaxed) & (1 << hook) != 0
    }

    /// Counts what the library counted since the last take.
    fn take_counts(&self, cx: &StreamCx) {
        let bytes = self.library.take_counts(self.id, false);
        counts::apply(self, &bytes, |counter, n| cx.add(counter, n));
    }
}

impl Drop for GoConfig {
    fn drop(&mut self) {
        counts::unregister(self.id);
        self.library.release(self.id);
    }
}

impl GoFactory {
    /// A copy for one worker: see the type's docs.
    fn worker_copy(&self) -> GoFactory {
        GoFactory { config: Arc::new(WorkerConfig { shared: Arc::clone(&self.config.shared) }) }
    }
}

impl FilterFactory for GoFactory {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn create(&self) -> Box<dyn Filter> {
        Box::new(GoFilter { config: self.config.clone(), cell: None, hooks: 0, response_done: false, replied: false })
    }

    fn clusters(&self) -> Vec<ClusterRef> {
        self.config.clusters.clone()
    }

    fn acts_on_request(&self) -> bool {
        self.config.acts_on_request
    }

    fn acts_on_response(&self) -> bool {
        self.config.acts_on_response
    }

    fn counters(&self) -> &[CounterSpec] {
        self.config.counters.specs()
    }

    fn for_worker(&self) -> Option<Arc<dyn FilterFactory>> {
        Some(Arc::new(self.worker_copy()))
    }
}

/// What a hook was given.
enum Target<'a> {
    Request(&'a mut RequestHead),
    Response(&'a mut ResponseHead),
    Body(&'a mut Bytes),
    Trailers(&'a mut HeaderMap),
}

thread_local! {
    /// The buffer heads are encoded into, reused hook after hook.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The Rust side of one stream of a foreign filter.
struct GoFilter {
    /// The worker's `Arc` around the shared config (see [`GoFactory`]).
    config: Arc<WorkerConfig>,
    /// Registered at the first hook that calls the library.
    cell: Option<Rc<StreamCell>>,
    /// The last hook id given (24 bits, never 0).
    hooks: u32,
    /// The response passed this filter whole.
    response_done: bool,
    /// This filter answered the stream.
    replied: bool,
}

impl GoFilter {
    fn cell(&mut self, cx: &StreamCx) -> Option<Rc<StreamCell>> {
        if self.cell.is_none() {
            self.cell = StreamCell::register(self.config.library, cx.handle(), cx.http_client(), cx.context().clone());
            counts::note_worker(&self.config.shared, cx);
        }
        self.cell.clone()
    }

    fn run<'a>(&'a mut self, cx: &'a mut StreamCx, hook: u32, end_of_stream: bool, target: Target<'a>) -> Hook<'a> {
        if self.config.skips(hook) {
            return Status::Continue.into();
        }
        let Some(cell) = self.cell(cx) else {
            let message = "nuncio: this worker tracks too many streams of foreign filters\n";
            return Status::local_reply(StatusCode::SERVICE_UNAVAILABLE, message).into();
        };
        self.hooks = match self.hooks.wrapping_add(1) & 0x00FF_FFFF {
            0 => 1,
            n => n,
        };
        let hook_id = self.hooks;
        let flags = if end_of_stream { hook_flags::END_OF_STREAM } else { 0 };
        let deadline = deadline_ns(cx);
        table::expect(cell.id, hook_id);
        cell.wait_for(hook_id);
        let config = &*self.config;
        let mut returned = 0;
        let decided = SCRATCH.with(|scratch| {
            let mut head = scratch.borrow_mut();
            head.clear();
            let body: &[u8] = match &target {
                Target::Request(h) => {
                    wire::put_request_head(&mut head, h, cx.downstream_address());
                    &[]
                }
                Target::Response(h) => {
                    wire::put_response_head(&mut head, h);
                    &[]
                }
                Target::Trailers(t) => {
                    wire::put_fields(&mut head, t);
                    &[]
                }
                Target::Body(b) => b,
            };
            decision::inline(cell.id, hook_id, || {
                returned = config.library.hook(config.id, cell.id.raw(), hook_id, hook, &head, body, flags, deadline);
            })
        });
        if returned & returns::COUNTS_PENDING != 0 {
            config.take_counts(cx);
        }
        match decided {
            Some(decision) => {
                cell.stop_waiting();
                self.apply(cx, decision, hook, end_of_stream, target).into()
            }
            None => {
                let wait = cell.decision(hook_id);
                Hook::pending(async move {
                    let decision = wait.await;
                    let status = self.apply(cx, decision, hook, end_of_stream, target);
                    // The deferred work may have counted.
                    self.config.take_counts(cx);
                    status
                })
            }
        }
    }

    fn apply(
        &mut self,
        cx: &StreamCx,
        decision: Decision,
        hook: u32,
        end_of_stream: bool,
        target: Target<'_>,
    ) -> Status {
        if decision.panicked
            && let Some(panics) = self.config.panics
        {
            cx.inc(panics);
        }
        if decision.default {
            self.config.skip.fetch_or(1 << hook, Ordering::Relaxed);
        }
        if let Kind::Reply(status) = decision.kind {
            self.replied = true;
            let headers = wire::reply_fields(&decision.edits);
            return Status::LocalReply(LocalReply { status, headers, body: decision.body.unwrap_or_default() });
        }
        let is_body = matches!(target, Target::Body(_));
        match target {
            Target::Request(head) => wire::apply_request(&decision.edits, head),
            Target::Response(head) => wire::apply_response(&decision.edits, head),
            Target::Trailers(trailers) => wire::apply_fields(&decision.edits, trailers),
            Target::Body(body) => {
                if let Some(new) = decision.body {
                    *body = new;
                }
            }
        }
        match decision.kind {
            Kind::Continue => Status::Continue,
            Kind::Stop => Status::StopIteration,
            Kind::Buffer if is_body => Status::StopAndBuffer,
            Kind::Watermark if is_body => Status::StopAndWatermark,
            // Nothing follows (a head without body, or trailers): there is
            // nothing to buffer, so the stream goes on rather than waiting
            // for a body that never comes (envoy#30688).
            Kind::Buffer | Kind::Watermark if end_of_stream => Status::Continue,
            Kind::Buffer | Kind::Watermark => {
                tracing::error!(filter = %self.config.name, hook, "a filter asked to buffer from a headers hook: only body hooks buffer; the stream gets a 500");
                Status::local_reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("nuncio: filter {} asked to buffer from a headers hook\n", self.config.name),
                )
            }
            Kind::Reply(_) => unreachable!("handled above"),
        }
    }

    /// The stream ended: the library forgets it (its context is cancelled
    /// with the cause), and its id reads "gone" from now on.
    fn finish(&mut self, cx: Option<&StreamCx>) {
        let Some(cell) = self.cell.take() else { return };
        let cause = if cell.abandoned.get() {
            end::END_CLIENT_GONE
        } else if self.replied {
            end::END_LOCAL_REPLY
        } else if self.response_done {
            end::END_COMPLETE
        } else {
            end::END_ABORTED
        };
        table::unregister(cell.id);
        let returned = self.config.library.end(self.config.id, cell.id.raw(), cause);
        if returned & returns::COUNTS_PENDING != 0
            && let Some(cx) = cx
        {
            self.config.take_counts(cx);
        }
    }
}

/// Nanoseconds until the stream's deadline (the route's, or its context's
/// if that is sooner), or -1.
fn deadline_ns(cx: &StreamCx) -> i64 {
    let deadline = match (cx.route_deadline(), cx.context().deadline()) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    match deadline {
        Some(deadline) => {
            let left = deadline.saturating_duration_since(nuncio_context::Instant::now());
            i64::try_from(left.as_nanos()).unwrap_or(i64::MAX)
        }
        None => -1,
    }
}

impl Filter for GoFilter {
    fn request_headers<'a>(&'a mut self, cx: &'a mut StreamCx, head: &'a mut RequestHead, eos: bool) -> Hook<'a> {
        self.run(cx, hook::HOOK_REQUEST_HEADERS, eos, Target::Request(head))
    }

    fn request_body<'a>(&'a mut self, cx: &'a mut StreamCx, body: &'a mut Bytes, eos: bool) -> Hook<'a> {
        self.run(cx, hook::HOOK_REQUEST_BODY, eos, Target::Body(body))
    }

    fn request_trailers<'a>(&'a mut self, cx: &'a mut StreamCx, trailers: &'a mut HeaderMap) -> Hook<'a> {
        self.run(cx, hook::HOOK_REQUEST_TRAILERS, true, Target::Trailers(trailers))
    }

    fn response_headers<'a>(&'a mut self, cx: &'a mut StreamCx, head: &'a mut ResponseHead, eos: bool) -> Hook<'a> {
        self.response_done |= eos;
        self.run(cx, hook::HOOK_RESPONSE_HEADERS, eos, Target::Response(head))
    }

    fn response_body<'a>(&'a mut self, cx: &'a mut StreamCx, body: &'a mut Bytes, eos: bool) -> Hook<'a> {
        self.response_done |= eos;
        self.run(cx, hook::HOOK_RESPONSE_BODY, eos, Target::Body(body))
    }

    fn response_trailers<'a>(&'a mut self, cx: &'a mut StreamCx, trailers: &'a mut HeaderMap) -> Hook<'a> {
        self.response_done = true;
        self.run(cx, hook::HOOK_RESPONSE_TRAILERS, true, Target::Trailers(trailers))
    }

    fn on_complete(&mut self, cx: &StreamCx) {
        self.finish(Some(cx));
    }
}

impl Drop for GoFilter {
    fn drop(&mut self) {
        self.finish(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A factory of the SDK's test filters (built here); `None` without a
    /// Go toolchain (see `nuncio_test_support::go`).
    fn stamp_factory() -> Option<GoFactory> {
        let out = std::env::temp_dir().join("nuncio-filter-abi-unit");
        let library = nuncio_test_support::go::library(
            "sdk/go/internal/testfilters",
            "testfilters",
            &["-tags", "nunciotest"],
            out.to_str().expect("a UTF-8 temporary directory"),
        )?;
        let block = serde_json::json!({ "library": library, "filter": "stamp", "config": { "value": "hi" } });
        Some(GoKind.factory(block).unwrap_or_else(|e| panic!("the stamp filter: {e}")))
    }

    /// Counted, not timed: the streams a worker creates from its copy
    /// write the count of the worker's `Arc`; the shared config's count
    /// moves only when a copy is made.
    #[test]
    fn streams_of_a_worker_copy_leave_the_shared_count_alone() {
        let Some(factory) = stamp_factory() else { return };
        assert!(factory.for_worker().is_some(), "a Go factory has per-worker copies");
        let shared = || Arc::strong_count(&factory.config.shared);
        let before = shared();
        let copy = factory.worker_copy();
        assert_eq!(shared(), before + 1, "a copy holds the shared config once");
        let streams: Vec<Box<dyn Filter>> = (0..8).map(|_| copy.create()).collect();
        assert_eq!(shared(), before + 1, "streams of the copy do not touch the shared count");
        assert_eq!(Arc::strong_count(&copy.config), 1 + streams.len(), "they clone the worker's own");
        drop(streams);
        drop(copy);
        assert_eq!(shared(), before);
    }
}
