//! An example nuncio filter, written against `nuncio-filter` alone: `fault`,
//! fault injection by path prefix (after Envoy's `fault` filter, trimmed).
//! A request whose path starts with a rule's `prefix` is held for the
//! rule's `delay_ms`, then answered by the filter with the rule's `abort`
//! status if it has one, else passed on. Useful to see how clients and
//! upstream timeouts behave when a service is slow or failing.
//!
//! ```yaml
//! filters:
//!   - name: fault
//!     config:
//!       report_header: x-fault-delay-ms       # optional
//!       rules:
//!         - prefix: /slow
//!           delay_ms: 500
//!         - prefix: /broken
//!           abort: { status: 503, body: "injected fault\n" }
//! ```
//!
//! What it shows, top to bottom (docs/filters.md, "Writing a filter", walks
//! through it):
//!
//! 1. **A config type** read from the YAML `config:` block with serde
//!    ([`parse_config`], `deny_unknown_fields`), then checked for what serde
//!    cannot express ([`ConfigError::at`] names the field). nuncio reports
//!    either kind of error as `FILE:LINE:COL: listeners[i].filters[j].config.FIELD: MESSAGE`,
//!    at load and by `validate`, so nothing on the request path can fail on
//!    a bad config.
//! 2. **Kind → factory → filter.** [`FaultKind`] is the name a config uses;
//!    `configure` runs once per config, on the main thread, and makes a
//!    [`FilterFactory`] that every worker shares (read only). The factory
//!    makes one [`FaultFilter`] per stream, on the stream's worker: the
//!    filter's fields are its per-stream state, never shared.
//! 3. **An async hook.** A delay is [`Hook::pending`]: the hook awaits a
//!    tokio timer on the worker. The worker goes on serving other streams;
//!    only this stream's chain waits at this filter.
//! 4. **The stream's context.** The wait also ends when the stream's
//!    [`Context`] is done ([`StreamCx::context`]): whatever ends the stream
//!    ends the work done for it.
//! 5. **The per-stream state map.** The filter records what it did as
//!    [`FaultInjected`] with [`StreamCx::put_state`]; its own response hook
//!    reads it back, and so can any other filter of the stream.
//! 6. **A local reply.** An abort answers the client from the filter:
//!    nothing goes upstream.
//! 7. **Counters.** `configure` declares two counters in a [`CounterSet`]
//!    (delays and aborts injected); the factory reports them
//!    ([`FilterFactory::counters`]) and nuncio exposes them as
//!    `nuncio_filter_fault_delays_injected_total{filter="fault",listener="..."}`
//!    and `nuncio_filter_fault_aborts_injected_total`. The filter bumps them
//!    with [`StreamCx::inc`] on its worker.
//!
//! A rule with no delay decides at once and answers [`Hook::Done`] (no
//! allocation); only a delay pays for a boxed future.
//!
//! Durations are whole milliseconds (`delay_ms`) rather than nuncio's
//! `500ms` strings: that parser lives in nuncio's config crate, and this
//! filter depends on the filter API alone.

use std::sync::Arc;
use std::time::Duration;

use nuncio_filter::http::header::CONTENT_TYPE;
use nuncio_filter::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use nuncio_filter::{
    Bytes, ConfigError, Context, CounterSet, CounterSpec, Filter, FilterCounter, FilterFactory, FilterKind, Hook,
    LocalReply, RequestHead, ResponseHead, Status, StreamCx, parse_config,
};
use serde::Deserialize;

/// The longest delay a rule may ask for, in milliseconds (a minute): a
/// held request keeps a client connection open, and a fault delay longer
/// than any sane client timeout tests nothing more.
pub const MAX_DELAY_MS: u64 = 60_000;

/// The `fault` filter kind: what a listener's `filters:` list names.
#[derive(Debug, Clone, Copy, Default)]
pub struct FaultKind;

impl FilterKind for FaultKind {
    fn name(&self) -> &'static str {
        "fault"
    }

    fn configure(&self, config: serde_json::Value) -> Result<Arc<dyn FilterFactory>, ConfigError> {
        let config: FaultConfig = parse_config(config)?;
        let mut counters = CounterSet::new();
        let counted = Counted {
            delays: counters.declare("delays_injected_total", "Requests the fault filter held for a rule's delay.")?,
            aborts: counters.declare("aborts_injected_total", "Requests the fault filter answered with an abort.")?,
        };
        Ok(Arc::new(FaultFactory { rules: Arc::new(Rules::check(config)?), counters, counted }))
    }
}

/// The `config:` block as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a map with `rules` and optionally `report_header`")]
pub struct FaultConfig {
    /// Tried in order: the first rule whose prefix the request path starts
    /// with applies; a request no rule matches passes untouched.
    pub rules: Vec<RuleConfig>,
    /// A response field telling the client how long its request was held,
    /// in milliseconds, on every response to a request a rule matched.
    /// Default: none.
    #[serde(default)]
    pub report_header: Option<String>,
}

/// One rule of [`FaultConfig::rules`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a map with `prefix`, and `delay_ms` and/or `abort`")]
pub struct RuleConfig {
    /// The path prefix (starts with `/`).
    pub prefix: String,
    /// How long to hold the request, in milliseconds (at most
    /// [`MAX_DELAY_MS`]); default 0.
    #[serde(default)]
    pub delay_ms: u64,
    /// Answer the request from the filter (after the delay) instead of
    /// passing it on.
    #[serde(default)]
    pub abort: Option<AbortConfig>,
}

/// The reply of [`RuleConfig::abort`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a map with `status` and optionally `body`")]
pub struct AbortConfig {
    /// An error status, 400 to 599.
    pub status: u16,
    /// The body, sent as `text/plain`; default empty.
    #[serde(default)]
    pub body: String,
}

/// The checked config, read by every stream's filter (each worker has its
/// own copy: `for_worker` below).
#[derive(Debug, Clone)]
struct Rules {
    rules: Vec<Rule>,
    report_header: Option<HeaderName>,
}

#[derive(Debug, Clone)]
struct Rule {
    prefix: String,
    delay_ms: u64,
    abort: Option<(StatusCode, Bytes)>,
}

impl Rules {
    /// Everything serde could not check, each error at its field.
    fn check(config: FaultConfig) -> Result<Rules, ConfigError> {
        if config.rules.is_empty() {
            return Err(ConfigError::at("rules", "no rules: the filter would do nothing; give at least one"));
        }
        let report_header = match config.report_header {
            Some(name) => Some(
                HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| ConfigError::at("report_header", format!("{name:?} is not a valid field name")))?,
            ),
            None => None,
        };
        let mut rules = Vec::with_capacity(config.rules.len());
        for (i, rule) in config.rules.into_iter().enumerate() {
            let at = |field: &str| format!("rules[{i}].{field}");
            if !rule.prefix.starts_with('/') {
                return Err(ConfigError::at(at("prefix"), "must start with `/`"));
            }
            if rule.delay_ms > MAX_DELAY_MS {
                return Err(ConfigError::at(at("delay_ms"), format!("at most {MAX_DELAY_MS} (a minute)")));
            }
            let abort = match rule.abort {
                Some(abort) => Some((
                    StatusCode::from_u16(abort.status)
                        .ok()
                        .filter(|s| s.is_client_error() || s.is_server_error())
                        .ok_or_else(|| {
                            ConfigError::at(at("abort.status"), "an abort is an error status, 400 to 599")
                        })?,
                    Bytes::from(abort.body),
                )),
                None => None,
            };
            if rule.delay_ms == 0 && abort.is_none() {
                return Err(ConfigError::at(
                    format!("rules[{i}]"),
                    "neither `delay_ms` nor `abort`: the rule does nothing",
                ));
            }
            rules.push(Rule { prefix: rule.prefix, delay_ms: rule.delay_ms, abort });
        }
        Ok(Rules { rules, report_header })
    }

    fn matching(&self, path: &str) -> Option<(usize, &Rule)> {
        self.rules.iter().enumerate().find(|(_, rule)| path.starts_with(&rule.prefix))
    }
}

/// Makes one [`FaultFilter`] per stream.
#[derive(Debug)]
struct FaultFactory {
    rules: Arc<Rules>,
    /// Declared once per config; nuncio reads them through `counters()`.
    counters: CounterSet,
    counted: Counted,
}

impl FilterFactory for FaultFactory {
    fn name(&self) -> &str {
        "fault"
    }

    fn create(&self) -> Box<dyn Filter> {
        Box::new(FaultFilter { rules: Arc::clone(&self.rules), counted: self.counted })
    }

    fn counters(&self) -> &[CounterSpec] {
        self.counters.specs()
    }

    // Each stream clones `rules`; a worker's own copy keeps that clone's
    // count off the other workers' cores.
    fn for_worker(&self) -> Option<Arc<dyn FilterFactory>> {
        let rules = Arc::new((*self.rules).clone());
        Some(Arc::new(FaultFactory { rules, counters: self.counters.clone(), counted: self.counted }))
    }
}

/// The ids of the filter's counters: `Copy`, kept by every stream's filter.
#[derive(Debug, Clone, Copy)]
struct Counted {
    delays: FilterCounter,
    aborts: FilterCounter,
}

impl Counted {
    /// Counts what `rule` did to a stream, once it did it (a delay cut
    /// short injected nothing).
    fn injected(self, cx: &StreamCx, rule: &Rule) {
        if rule.delay_ms > 0 {
            cx.inc(self.delays);
        }
        if rule.abort.is_some() {
            cx.inc(self.aborts);
        }
    }
}

/// What the `fault` filter did to a stream, in the stream's state map:
/// any filter of the stream reads it with `cx.state::<FaultInjected>()`
/// (an access-log or metrics filter, say), once the request hook ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultInjected {
    /// The index of the rule that applied, in `rules`.
    pub rule: usize,
    /// How long the request was held, in milliseconds.
    pub delay_ms: u64,
    /// The status the filter answered with, if the rule aborts.
    pub aborted: Option<StatusCode>,
}

/// The `fault` filter: one per stream, on the stream's worker.
#[derive(Debug)]
pub struct FaultFilter {
    rules: Arc<Rules>,
    counted: Counted,
}

impl Filter for FaultFilter {
    fn request_headers<'a>(
        &'a mut self,
        cx: &'a mut StreamCx,
        head: &'a mut RequestHead,
        _end_of_stream: bool,
    ) -> Hook<'a> {
        let Some((index, rule)) = self.rules.matching(head.path()) else {
            return Status::Continue.into();
        };
        let report_header = self.rules.report_header.as_ref();
        let injected =
            FaultInjected { rule: index, delay_ms: rule.delay_ms, aborted: rule.abort.as_ref().map(|a| a.0) };
        let counted = self.counted;
        if rule.delay_ms == 0 {
            // Nothing to wait for: decide now, without a future.
            cx.put_state(injected);
            counted.injected(cx, rule);
            return after_delay(rule, report_header).into();
        }
        // The future borrows the filter and `cx` for 'a: the chain waits at
        // this filter until it completes, and drops it if the client leaves.
        Hook::pending(async move {
            // `done` owns what it needs (no borrow of `cx`), so the select
            // below can take it alongside the timer.
            let done = cx.context().done();
            tokio::select! {
                // The timer and the stream's end both ready: the stream's end wins.
                biased;
                () = done => return cut_short(cx.context()),
                () = tokio::time::sleep(Duration::from_millis(rule.delay_ms)) => {}
            }
            cx.put_state(injected);
            counted.injected(cx, rule);
            after_delay(rule, report_header)
        })
    }

    fn response_headers<'a>(
        &'a mut self,
        cx: &'a mut StreamCx,
        head: &'a mut ResponseHead,
        _end_of_stream: bool,
    ) -> Hook<'a> {
        // Read back from the state map rather than a field of our own, to
        // show the map: any filter of the stream could do the same.
        if let (Some(name), Some(injected)) = (&self.rules.report_header, cx.state::<FaultInjected>()) {
            head.headers.insert(name.clone(), HeaderValue::from(injected.delay_ms));
        }
        Status::Continue.into()
    }
}

/// What a matched request gets once its delay is over: the abort reply,
/// or on to the next filter.
///
/// The reply carries the report field itself: the response hooks a local
/// reply passes are those of the filters *before* this one, not this
/// filter's own.
fn after_delay(rule: &Rule, report_header: Option<&HeaderName>) -> Status {
    let Some((status, body)) = &rule.abort else {
        return Status::Continue;
    };
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    if let Some(name) = report_header {
        headers.insert(name.clone(), HeaderValue::from(rule.delay_ms));
    }
    Status::LocalReply(LocalReply { status: *status, headers, body: body.clone() })
}

/// The stream's context was done while its request was held: the stream
/// is over (the client left, or its deadline passed). nuncio drops a
/// pending hook when the client leaves, so this answer is for any other
/// end; if no client is left to read it, it is dropped with the stream.
fn cut_short(context: &Context) -> Status {
    let why = context.err().map_or_else(|| "the stream ended".to_owned(), |e| e.to_string());
    Status::local_reply(StatusCode::SERVICE_UNAVAILABLE, format!("fault delay cut short: {why}\n"))
}

#[cfg(test)]
mod tests {
    //! The filter's decisions, driven directly; tests/example.rs runs it
    //! in nuncio over real sockets.

    use std::cell::RefCell;
    use std::rc::Rc;

    use nuncio_filter::CounterSink;
    use nuncio_filter::http::{Method, Uri, Version};
    use serde_json::json;

    use super::*;

    /// What the filter counted, as `(counter index, n)` (in nuncio the
    /// proxy's sink writes its stats instead).
    #[derive(Default)]
    struct Counts(RefCell<Vec<(usize, u64)>>);

    impl CounterSink for Counts {
        fn add(&self, _filter: usize, counter: FilterCounter, n: u64) {
            self.0.borrow_mut().push((counter.index(), n));
        }
    }

    /// A context whose counts land in the returned `Counts`.
    fn counted_cx(context: Context) -> (StreamCx, Rc<Counts>) {
        let counts = Rc::new(Counts::default());
        let mut cx = StreamCx::new(context, "127.0.0.1:1".parse().unwrap());
        cx.set_counters(counts.clone());
        (cx, counts)
    }

    fn filter(config: serde_json::Value) -> Box<dyn Filter> {
        FaultKind.configure(config).expect("a valid config").create()
    }

    fn head(path: &str) -> RequestHead {
        RequestHead {
            method: Method::GET,
            uri: Uri::try_from(path).unwrap(),
            version: Version::HTTP_11,
            headers: HeaderMap::new(),
            authority: None,
        }
    }

    /// The status of a hook that must have decided synchronously.
    fn decided(hook: Hook<'_>) -> Status {
        match hook {
            Hook::Done(status) => status,
            Hook::Pending(_) => panic!("expected a synchronous decision, got a future"),
        }
    }

    fn error(config: serde_json::Value) -> ConfigError {
        FaultKind.configure(config).err().expect("an invalid config")
    }

    #[test]
    fn config_errors_name_the_field() {
        let cases = [
            (json!(null), ""),
            (json!({ "rules": [] }), "rules"),
            (json!({ "rules": [ { "prefix": "/a", "delay_ms": "soon" } ] }), "rules[0].delay_ms"),
            (json!({ "rules": [ { "prefix": "a", "delay_ms": 1 } ] }), "rules[0].prefix"),
            (json!({ "rules": [ { "prefix": "/a", "delay_ms": MAX_DELAY_MS + 1 } ] }), "rules[0].delay_ms"),
            (json!({ "rules": [ { "prefix": "/a" }, { "prefix": "/b", "abort": { "status": 302 } } ] }), "rules[0]"),
            (json!({ "rules": [ { "prefix": "/b", "abort": { "status": 302 } } ] }), "rules[0].abort.status"),
            (json!({ "rules": [ { "prefix": "/a", "delay_ms": 1 } ], "report_header": "no good" }), "report_header"),
        ];
        for (config, path) in cases {
            let shown = config.to_string();
            assert_eq!(error(config).path, path, "{shown}");
        }
        let unknown = error(json!({ "rules": [ { "prefix": "/a", "dleay_ms": 1 } ] }));
        assert!(unknown.message.contains("unknown field `dleay_ms`"), "{unknown:?}");
    }

    #[test]
    fn an_abort_without_delay_answers_at_once_with_its_reply() {
        let factory = FaultKind
            .configure(json!({
                "rules": [ { "prefix": "/broken", "abort": { "status": 502, "body": "down" } } ],
                "report_header": "x-fault-delay-ms",
            }))
            .expect("a valid config");
        let mut filter = factory.create();
        let (mut cx, counts) = counted_cx(Context::background());
        let mut request = head("/broken/page");
        let status = decided(filter.request_headers(&mut cx, &mut request, true));
        let Status::LocalReply(reply) = status else { panic!("expected a reply: {status:?}") };
        assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
        assert_eq!(reply.body, "down");
        assert_eq!(reply.headers["x-fault-delay-ms"], "0");
        assert_eq!(
            cx.state::<FaultInjected>(),
            Some(&FaultInjected { rule: 0, delay_ms: 0, aborted: Some(StatusCode::BAD_GATEWAY) })
        );
        let aborts = factory.counters().iter().position(|c| c.name() == "aborts_injected_total").unwrap();
        assert_eq!(*counts.0.borrow(), [(aborts, 1)], "one abort, no delay");
    }

    #[test]
    fn a_path_no_rule_matches_passes_untouched() {
        let mut filter = filter(json!({ "rules": [ { "prefix": "/slow", "delay_ms": MAX_DELAY_MS } ] }));
        let mut cx = StreamCx::new(Context::background(), "127.0.0.1:1".parse().unwrap());
        let mut request = head("/fast");
        let status = decided(filter.request_headers(&mut cx, &mut request, true));
        assert!(matches!(status, Status::Continue), "{status:?}");
        assert!(cx.state::<FaultInjected>().is_none());
    }

    #[test]
    fn a_delay_ends_when_the_stream_context_does() {
        // The longest delay: only the context can end this wait.
        let mut filter = filter(json!({ "rules": [ { "prefix": "/slow", "delay_ms": MAX_DELAY_MS } ] }));
        let (context, cancel) = Context::background().with_cancel();
        let (mut cx, counts) = counted_cx(context.clone());
        let mut request = head("/slow");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let status = runtime.block_on(async {
            let hook = filter.request_headers(&mut cx, &mut request, true);
            assert!(matches!(hook, Hook::Pending(_)), "a delay awaits: {hook:?}");
            cancel.cancel();
            hook.resolve().await
        });
        let Status::LocalReply(reply) = status else { panic!("expected a reply: {status:?}") };
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        let cause = context.err().expect("cancelled").to_string();
        assert!(std::str::from_utf8(&reply.body).unwrap().contains(&cause), "{reply:?}");
        assert!(cx.state::<FaultInjected>().is_none(), "a cut-short delay injected nothing");
        assert!(counts.0.borrow().is_empty(), "and counted nothing");
    }
}
