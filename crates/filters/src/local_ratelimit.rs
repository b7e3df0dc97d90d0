//! `local_ratelimit`: a token bucket per worker; a request that finds it
//! empty gets `429 Too Many Requests` with `retry-after`.
//!
//! ```yaml
//! filters:
//!   - name: local_ratelimit
//!     config: { tokens: 100, fill: 100, interval: 1s }
//! ```
//!
//! * `tokens`: the bucket's capacity (≥ 1); it starts full.
//! * `fill`: tokens added every `interval` (≥ 1, capped at `tokens`);
//!   default `tokens`, so `{ tokens: 100, interval: 1s }` reads "100 per
//!   second, bursts of 100".
//! * `interval`: a duration > 0 (`500ms`, `1s`, `2m`, `1h`). Tokens come
//!   in whole fills at whole intervals, as in Envoy's token bucket.
//!
//! Each request (its head) takes one token. None left: `429` with
//! `retry-after: <seconds until the next fill, rounded up>`, a
//! `text/plain` body, and nothing goes upstream.
//!
//! **Per worker.** Each worker has its own bucket for each configured
//! filter, so the effective limit is `tokens` × `workers` per instance
//! (Envoy's local rate limit is likewise per instance and not
//! coordinated). This keeps the request path free of locks and shared
//! writes: a bucket lives in a thread-local table keyed by the factory's
//! process-unique id, touched only by its worker. With `workers: 1` the
//! limit is exact. A new config (a new factory) starts with full buckets;
//! the old factory's buckets are dropped by the next new one on each worker.
//!
//! **Counted** in `nuncio_filter_local_ratelimit_rate_limited_total`
//! (labels `listener`, `filter`): every request refused with `429`.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue, StatusCode, header};
use nuncio_filter::{
    ConfigError, CounterSet, CounterSpec, Filter, FilterCounter, FilterFactory, FilterKind, Hook, LocalReply,
    RequestHead, Status, StreamCx, parse_config,
};
use serde::Deserialize;

use crate::duration;

/// The `local_ratelimit` filter kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalRateLimitKind;

impl FilterKind for LocalRateLimitKind {
    fn name(&self) -> &'static str {
        "local_ratelimit"
    }

    fn configure(&self, config: serde_json::Value) -> Result<Arc<dyn FilterFactory>, ConfigError> {
        let config: Config = parse_config(config)?;
        if config.tokens == 0 {
            return Err(ConfigError::at("tokens", "must be at least 1"));
        }
        let fill = config.fill.unwrap_or(config.tokens);
        if fill == 0 {
            return Err(ConfigError::at("fill", "must be at least 1"));
        }
        let mut counters = CounterSet::new();
        let rate_limited =
            counters.declare("rate_limited_total", "Requests refused with 429: the bucket was empty.")?;
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let limit = Limit {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            capacity: config.tokens,
            fill: fill.min(config.tokens),
            interval: config.interval,
            rate_limited,
        };
        Ok(Arc::new(LocalRateLimitFactory { limit, alive: Arc::new(()), counters }))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a map with `tokens`, `interval` and optionally `fill`")]
struct Config {
    tokens: u32,
    #[serde(default)]
    fill: Option<u32>,
    #[serde(deserialize_with = "duration::positive")]
    interval: Duration,
}

/// A configured bucket shape, copied into each stream's filter.
#[derive(Debug, Clone, Copy)]
struct Limit {
    /// Unique in the process: the key of this factory's buckets.
    id: u64,
    capacity: u32,
    fill: u32,
    interval: Duration,
    /// `nuncio_filter_local_ratelimit_rate_limited_total`.
    rate_limited: FilterCounter,
}

#[derive(Debug)]
struct LocalRateLimitFactory {
    limit: Limit,
    /// Dropped with the factory: tells each worker's table that the
    /// buckets under `limit.id` can go.
    alive: Arc<()>,
    counters: CounterSet,
}

impl FilterFactory for LocalRateLimitFactory {
    /// Request hooks only: the response passes unfiltered.
    fn acts_on_response(&self) -> bool {
        false
    }

    fn name(&self) -> &str {
        "local_ratelimit"
    }

    fn create(&self) -> Box<dyn Filter> {
        // On the stream's worker: make sure its bucket exists (the only
        // place the table grows, so the hook needs no `Weak` per stream).
        with_bucket(&self.limit, || Arc::downgrade(&self.alive), |_| ());
        Box::new(LocalRateLimit { limit: self.limit })
    }

    fn counters(&self) -> &[CounterSpec] {
        self.counters.specs()
    }
}

/// One stream's filter: the limit, by value (no shared state per stream).
struct LocalRateLimit {
    limit: Limit,
}

impl Filter for LocalRateLimit {
    fn request_headers<'a>(&'a mut self, cx: &'a mut StreamCx, _head: &'a mut RequestHead, _eos: bool) -> Hook<'a> {
        let limit = &self.limit;
        let now = Instant::now();
        match with_bucket(limit, Weak::new, |bucket| bucket.take(limit, now)) {
            Ok(()) => Status::Continue.into(),
            Err(wait) => {
                cx.inc(limit.rate_limited);
                Status::LocalReply(too_many(wait)).into()
            }
        }
    }
}

fn too_many(wait: Duration) -> LocalReply {
    let seconds = u64::try_from(wait.as_millis().div_ceil(1000)).unwrap_or(u64::MAX).max(1);
    let mut headers = HeaderMap::new();
    headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    LocalReply { status: StatusCode::TOO_MANY_REQUESTS, headers, body: "nuncio: local rate limit exceeded\n".into() }
}

/// A worker's bucket for one factory.
struct Entry {
    id: u64,
    /// Dead once the factory is dropped.
    owner: Weak<()>,
    bucket: Bucket,
}

thread_local! {
    /// This worker's buckets (a handful: one per configured filter).
    static BUCKETS: RefCell<Vec<Entry>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on this thread's bucket for `limit`, making it (full) if there
/// is none yet, after dropping the buckets of factories that are gone.
fn with_bucket<R>(limit: &Limit, owner: impl FnOnce() -> Weak<()>, f: impl FnOnce(&mut Bucket) -> R) -> R {
    BUCKETS.with_borrow_mut(|entries| {
        let i = match entries.iter().position(|e| e.id == limit.id) {
            Some(i) => i,
            None => {
                entries.retain(|e| e.owner.strong_count() > 0);
                entries.push(Entry { id: limit.id, owner: owner(), bucket: Bucket::full(limit, Instant::now()) });
                entries.len() - 1
            }
        };
        f(&mut entries[i].bucket)
    })
}

/// A token bucket with whole fills at whole intervals.
#[derive(Debug, Clone)]
struct Bucket {
    tokens: u32,
    /// When the last fill was due (a whole number of intervals after the
    /// bucket was made).
    last_fill: Instant,
}

impl Bucket {
    fn full(limit: &Limit, now: Instant) -> Bucket {
        Bucket { tokens: limit.capacity, last_fill: now }
    }

    /// Takes a token; or says how long until the next fill.
    fn take(&mut self, limit: &Limit, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last_fill);
        if elapsed >= limit.interval {
            let fills = elapsed.as_nanos() / limit.interval.as_nanos();
            let added = fills.saturating_mul(u128::from(limit.fill));
            let tokens = u128::from(self.tokens).saturating_add(added).min(u128::from(limit.capacity));
            self.tokens = u32::try_from(tokens).unwrap_or(limit.capacity);
            // Keep the fill grid; after a very long idle time just restart it.
            self.last_fill = u32::try_from(fills)
                .ok()
                .and_then(|n| limit.interval.checked_mul(n))
                .and_then(|d| self.last_fill.checked_add(d))
                .unwrap_or(now);
        }
        if self.tokens > 0 {
            self.tokens -= 1;
            Ok(())
        } else {
            Err(limit.interval.saturating_sub(now.saturating_duration_since(self.last_fill)))
        }
    }
}

#[cfg(test)]
mod tests {
    use nuncio_filter::Context;
    use serde_json::json;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn limit(capacity: u32, fill: u32, interval: Duration) -> Limit {
        let rate_limited = CounterSet::new().declare("rate_limited_total", "Refused.").unwrap();
        Limit { id: 0, capacity, fill, interval, rate_limited }
    }

    #[test]
    fn the_bucket_fills_in_whole_intervals_up_to_its_capacity() {
        let l = limit(3, 2, 100 * MS);
        let t0 = Instant::now();
        let mut b = Bucket::full(&l, t0);
        for _ in 0..3 {
            assert_eq!(b.take(&l, t0 + 10 * MS), Ok(()));
        }
        assert_eq!(b.take(&l, t0 + 30 * MS), Err(70 * MS));
        // 99 ms: still no fill.
        assert_eq!(b.take(&l, t0 + 99 * MS), Err(MS));
        // One fill: two tokens.
        assert_eq!(b.take(&l, t0 + 150 * MS), Ok(()));
        assert_eq!(b.take(&l, t0 + 150 * MS), Ok(()));
        assert_eq!(b.take(&l, t0 + 150 * MS), Err(50 * MS));
        // A long pause refills to the capacity, not beyond.
        let later = t0 + 10_000 * MS;
        for _ in 0..3 {
            assert_eq!(b.take(&l, later), Ok(()));
        }
        assert!(b.take(&l, later).is_err());
        // The grid is kept: the fill after `later` is due 100 ms after it.
        assert_eq!(b.take(&l, later + 40 * MS), Err(60 * MS));
    }

    #[test]
    fn a_bucket_survives_an_absurd_idle_time() {
        let l = limit(1, 1, Duration::from_nanos(1));
        let t0 = Instant::now();
        let mut b = Bucket::full(&l, t0);
        assert_eq!(b.take(&l, t0), Ok(()));
        assert_eq!(b.take(&l, t0 + Duration::from_secs(1_000_000)), Ok(()));
    }

    fn request(filter: &mut dyn Filter) -> Status {
        let mut cx = StreamCx::new(Context::background(), "127.0.0.1:1".parse().unwrap());
        let mut head = RequestHead {
            method: http::Method::GET,
            uri: "/".parse().unwrap(),
            version: http::Version::HTTP_11,
            headers: HeaderMap::new(),
            authority: None,
        };
        match filter.request_headers(&mut cx, &mut head, true) {
            Hook::Done(status) => status,
            Hook::Pending(_) => panic!("synchronous"),
        }
    }

    /// How many of `n` requests on a new thread pass.
    fn passed_on_a_thread(factory: &Arc<dyn FilterFactory>, n: usize) -> usize {
        let factory = factory.clone();
        std::thread::spawn(move || {
            (0..n).filter(|_| matches!(request(&mut *factory.create()), Status::Continue)).count()
        })
        .join()
        .unwrap()
    }

    #[test]
    fn each_worker_thread_has_its_own_bucket() {
        let factory = LocalRateLimitKind.configure(json!({ "tokens": 3, "interval": "1h" })).unwrap();
        assert_eq!(passed_on_a_thread(&factory, 5), 3);
        assert_eq!(passed_on_a_thread(&factory, 5), 3);
        // A second factory (a new config) has buckets of its own.
        let other = LocalRateLimitKind.configure(json!({ "tokens": 1, "interval": "1h" })).unwrap();
        let mut a = factory.create();
        let mut b = other.create();
        assert!(matches!(request(&mut *b), Status::Continue));
        assert!(matches!(request(&mut *b), Status::LocalReply(_)));
        assert!(matches!(request(&mut *a), Status::Continue));
    }

    #[test]
    fn an_empty_bucket_answers_429_with_retry_after() {
        let factory = LocalRateLimitKind.configure(json!({ "tokens": 1, "fill": 1, "interval": "2m" })).unwrap();
        let mut f = factory.create();
        assert!(matches!(request(&mut *f), Status::Continue));
        let Status::LocalReply(reply) = request(&mut *f) else { panic!("limited") };
        assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
        let retry: u64 = reply.headers[header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
        assert!((1..=120).contains(&retry), "{retry}");
        assert_eq!(reply.body, "nuncio: local rate limit exceeded\n");
    }

    #[test]
    fn dropped_factories_leave_the_table() {
        let count = || BUCKETS.with_borrow(Vec::len);
        let before = count();
        for _ in 0..10 {
            let factory = LocalRateLimitKind.configure(json!({ "tokens": 1, "interval": "1s" })).unwrap();
            drop(factory.create());
        }
        assert!(count() <= before + 1, "{} entries", count());
    }

    #[test]
    fn config_errors_name_the_field() {
        let e = |v| LocalRateLimitKind.configure(v).err().expect("an error");
        let error = e(json!({ "tokens": 0, "interval": "1s" }));
        assert_eq!((error.path.as_str(), error.message.as_str()), ("tokens", "must be at least 1"));
        let error = e(json!({ "tokens": 5, "fill": 0, "interval": "1s" }));
        assert_eq!(error.path, "fill");
        let error = e(json!({ "tokens": 5, "interval": "1.5s" }));
        assert_eq!(error.path, "interval");
        assert!(error.message.contains("invalid duration \"1.5s\""), "{error}");
        let error = e(json!({ "tokens": 5, "interval": "0" }));
        assert_eq!((error.path.as_str(), error.message.as_str()), ("interval", "must be greater than 0"));
        let error = e(json!({ "tokens": -1, "interval": "1s" }));
        assert_eq!(error.path, "tokens");
        let error = e(json!({ "tokens": 5 }));
        assert!(error.message.contains("missing field `interval`"), "{error}");
        let error = e(json!({ "tokens": 5, "interval": "1s", "burst": 2 }));
        assert!(error.message.contains("unknown field `burst`"), "{error}");
    }
}
