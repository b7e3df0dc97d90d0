//! `StreamHandle` on real threads: workers are real dispatchers, callers are
//! plain threads, and each stream's filter manager is simulated on its
//! worker by a local task that waits in `Mailbox::ready` and drains. The
//! stream itself is `FakeStream`, this file's implementation of
//! `StreamOps` (a header map, a body and flags). Every wait is bounded.

#![cfg(not(nuncio_loom))]

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::{Pin, pin};
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, mpsc};
use std::task::{Context as TaskContext, Poll, Waker};
use std::thread::{self, JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use nuncio_filter::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use nuncio_filter::{Bytes, Context, Error, LocalReply, Mailbox, StreamHandle, StreamOps, live_mailboxes};
use nuncio_runtime::{Dispatcher, DispatcherHandle};

/// A safety net: no wait in these tests is longer.
const PATIENCE: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// The stream: `StreamOps` over plain data.

#[derive(Default)]
struct FakeStream {
    request: HeaderMap,
    /// The request fields are out (taken through a handle).
    request_taken: bool,
    response: HeaderMap,
    /// Simulates a response already sent: its fields can't change.
    response_sent: bool,
    body: Vec<u8>,
    resumed: usize,
    replied: Option<StatusCode>,
    /// The threads operations ran on.
    threads: Vec<ThreadId>,
    /// A local reply ends the stream, from inside the operation.
    mailbox: Weak<Mailbox>,
}

impl FakeStream {
    fn seen(&mut self) {
        let me = thread::current().id();
        if self.threads.last() != Some(&me) {
            self.threads.push(me);
        }
    }
}

impl StreamOps for FakeStream {
    fn request_headers(&mut self) -> Result<&mut HeaderMap, Error> {
        self.seen();
        Ok(&mut self.request)
    }
    fn response_headers(&mut self) -> Result<&mut HeaderMap, Error> {
        self.seen();
        if self.response_sent {
            return Err(Error::HeadersAlreadySent);
        }
        Ok(&mut self.response)
    }
    fn take_request_headers(&mut self) -> Result<HeaderMap, Error> {
        self.seen();
        self.request_taken = true;
        Ok(std::mem::take(&mut self.request))
    }
    fn put_request_headers(&mut self, headers: HeaderMap) -> Result<(), Error> {
        self.seen();
        self.request_taken = false;
        self.request = headers;
        Ok(())
    }
    fn take_body(&mut self) -> Result<Bytes, Error> {
        self.seen();
        Ok(Bytes::from(std::mem::take(&mut self.body)))
    }
    fn replace_body(&mut self, body: Bytes) -> Result<(), Error> {
        self.seen();
        self.body = body.to_vec();
        Ok(())
    }
    fn append_body(&mut self, data: Bytes) -> Result<(), Error> {
        self.seen();
        self.body.extend_from_slice(&data);
        Ok(())
    }
    fn resume(&mut self) -> Result<(), Error> {
        self.seen();
        self.resumed += 1;
        Ok(())
    }
    fn local_reply(&mut self, reply: LocalReply) -> Result<(), Error> {
        self.seen();
        self.replied = Some(reply.status);
        if let Some(mailbox) = self.mailbox.upgrade() {
            mailbox.close();
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// The worker side: streams live in a thread-local table on their worker.

struct Stream {
    mailbox: Rc<Mailbox>,
    state: Rc<RefCell<FakeStream>>,
    manager: Option<tokio::task::JoinHandle<()>>,
}

thread_local! {
    static STREAMS: RefCell<HashMap<u64, Stream>> = RefCell::new(HashMap::new());
}

static NEXT_STREAM: AtomicU64 = AtomicU64::new(1);

/// How a stream's manager applies operations.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Manager {
    /// Waits in `ready`, drains, until the mailbox closes.
    Draining,
    /// The same, but gives up waiting every millisecond (drops the `ready`
    /// future): `ready` must be cancel-safe.
    Impatient,
    /// None: the stream sits "inside a hook"; the test drains by hand.
    Manual,
}

/// How a stream ends.
#[derive(Clone, Copy, Debug)]
enum End {
    /// `Mailbox::close`, then the manager notices and exits.
    Close,
    /// Every `Rc<Mailbox>` dropped (the manager task is aborted).
    Drop,
}

async fn manage(mailbox: Rc<Mailbox>, state: Rc<RefCell<FakeStream>>, impatient: bool) {
    while !mailbox.is_closed() {
        if impatient {
            if tokio::time::timeout(Duration::from_millis(1), mailbox.ready()).await.is_err() {
                continue;
            }
        } else {
            mailbox.ready().await;
        }
        mailbox.drain(&mut *state.borrow_mut());
    }
}

struct Worker {
    handle: DispatcherHandle,
    thread: JoinHandle<()>,
}

impl Worker {
    fn start(name: &str) -> Worker {
        let (handle, thread) = Dispatcher::spawn(name, |d| {
            d.run();
            STREAMS.with(|s| s.borrow_mut().clear());
        })
        .unwrap();
        Worker { handle, thread }
    }

    /// Runs `f` on the worker and returns its result.
    fn ask<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> R {
        ask(&self.handle, f)
    }

    /// Opens a stream on the worker; returns its id and first handle.
    fn open(&self, manager: Manager) -> (u64, StreamHandle) {
        open(&self.handle, manager)
    }

    fn end(&self, id: u64, how: End) {
        end(&self.handle, id, how);
    }

    /// Runs `f` on stream `id`'s state, on the worker.
    fn inspect<R: Send + 'static>(&self, id: u64, f: impl FnOnce(&mut FakeStream) -> R + Send + 'static) -> R {
        self.ask(move || STREAMS.with(|s| f(&mut s.borrow()[&id].state.borrow_mut())))
    }

    /// Open mailboxes on the worker, once aborted managers are gone.
    fn settled_live_mailboxes(&self) -> usize {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let live = self.ask(live_mailboxes);
            if live == 0 || Instant::now() > deadline {
                return live;
            }
            thread::sleep(Duration::from_millis(1));
        }
    }

    fn panicked_posts(&self) -> u64 {
        self.ask(|| Dispatcher::current().unwrap().panicked_posts())
    }

    fn stop(self) {
        self.handle.stop();
        self.thread.join().expect("worker panicked");
    }
}

fn ask<R: Send + 'static>(worker: &DispatcherHandle, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = mpsc::channel();
    worker.post(move || tx.send(f()).unwrap()).expect("worker stopped");
    rx.recv_timeout(PATIENCE).expect("worker did not answer")
}

fn open(worker: &DispatcherHandle, manager: Manager) -> (u64, StreamHandle) {
    ask(worker, move || open_here(manager))
}

/// Opens a stream on the calling worker.
fn open_here(manager: Manager) -> (u64, StreamHandle) {
    let id = NEXT_STREAM.fetch_add(1, Ordering::Relaxed);
    let (mailbox, handle) = Mailbox::new(Context::background());
    let state = Rc::new(RefCell::new(FakeStream { mailbox: Rc::downgrade(&mailbox), ..FakeStream::default() }));
    let task = (manager != Manager::Manual).then(|| {
        Dispatcher::current()
            .unwrap()
            .spawn_local(manage(mailbox.clone(), state.clone(), manager == Manager::Impatient))
            .unwrap()
    });
    STREAMS.with(|s| s.borrow_mut().insert(id, Stream { mailbox, state, manager: task }));
    (id, handle)
}

fn end(worker: &DispatcherHandle, id: u64, how: End) {
    // The worker may have stopped already (end of a test): nothing to end.
    let _ = worker.post(move || end_now(id, how));
}

fn end_now(id: u64, how: End) {
    let Some(stream) = STREAMS.with(|s| s.borrow_mut().remove(&id)) else {
        return;
    };
    match how {
        End::Close => {
            // The manager sees the close, returns and drops its `Rc`.
            stream.mailbox.close();
        }
        End::Drop => {
            if let Some(manager) = &stream.manager {
                manager.abort();
            }
        }
    }
}

fn drain_now(id: u64) -> usize {
    STREAMS.with(|s| {
        let s = s.borrow();
        let stream = &s[&id];
        stream.mailbox.drain(&mut *stream.state.borrow_mut())
    })
}

// ---------------------------------------------------------------------------
// The calling side.

/// An off-worker thread's executor: a current-thread tokio runtime with
/// time, and a bound on every wait.
struct Caller {
    rt: tokio::runtime::Runtime,
}

impl Caller {
    fn new() -> Caller {
        Caller { rt: tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap() }
    }

    fn run<F: Future>(&self, fut: F) -> F::Output {
        self.rt.block_on(async { tokio::time::timeout(PATIENCE, fut).await.expect("a handle call hung") })
    }
}

/// Polls `fut` once (a call posts when first polled) and returns whether
/// it is still pending.
fn poll_once<F: Future>(fut: Pin<&mut F>) -> Poll<F::Output> {
    fut.poll(&mut TaskContext::from_waker(Waker::noop()))
}

fn name(s: &'static str) -> HeaderName {
    HeaderName::from_static(s)
}

fn value(s: &'static str) -> HeaderValue {
    HeaderValue::from_static(s)
}

/// A `StreamHandle`'s key as its `Debug` shows it: (slot, stream id).
fn key_of(handle: &StreamHandle) -> (String, String) {
    let debug = format!("{handle:?}");
    let field = |label: &str| {
        let start = debug.find(label).unwrap_or_else(|| panic!("no {label} in {debug}")) + label.len();
        debug[start..].chars().take_while(char::is_ascii_digit).collect::<String>()
    };
    (field("index: "), field("id: "))
}

// ---------------------------------------------------------------------------
// The API surface.

#[test]
fn handles_and_their_calls_cross_threads() {
    fn send_sync_clone_static<T: Send + Sync + Clone + 'static>() {}
    fn send<T: Send>(_: &T) {}
    send_sync_clone_static::<StreamHandle>();
    // Never run: checks that every call's future can be spawned on a
    // multi-threaded executor.
    #[allow(dead_code)]
    fn futures_are_send(h: &StreamHandle) {
        send(&h.call(|ops| ops.resume()));
        send(&h.set_request_header(name("a"), value("b")));
        send(&h.add_request_header(name("a"), value("b")));
        send(&h.remove_request_header(name("a")));
        send(&h.request_header(name("a")));
        send(&h.request_headers());
        send(&h.take_request_headers());
        send(&h.put_request_headers(HeaderMap::new()));
        send(&h.set_response_header(name("a"), value("b")));
        send(&h.add_response_header(name("a"), value("b")));
        send(&h.remove_response_header(name("a")));
        send(&h.response_header(name("a")));
        send(&h.response_headers());
        send(&h.take_body());
        send(&h.replace_body("x"));
        send(&h.append_body(Bytes::new()));
        send(&h.resume());
        send(&h.local_reply(LocalReply { status: StatusCode::OK, headers: HeaderMap::new(), body: Bytes::new() }));
    }
}

#[test]
#[should_panic(expected = "must run on a worker")]
fn a_mailbox_needs_a_worker() {
    let _ = Mailbox::new(Context::background());
}

#[test]
fn the_handle_carries_the_stream_context() {
    let worker = Worker::start("context");
    let handle = worker.ask(|| {
        let (ctx, cancel) = Context::background().with_cancel();
        let (mailbox, handle) = Mailbox::new(ctx);
        cancel.cancel();
        assert!(mailbox.context().is_done());
        handle
    });
    assert!(handle.context().is_done());
    assert_eq!(worker.ask(live_mailboxes), 0);
    worker.stop();
}

// ---------------------------------------------------------------------------
// Writes, reads, ownership.

#[test]
fn a_write_from_another_thread_is_applied_on_the_worker() {
    let worker = Worker::start("writes");
    let worker_thread = worker.thread.thread().id();
    let (id, handle) = worker.open(Manager::Draining);

    thread::spawn(move || {
        let caller = Caller::new();
        caller.run(async {
            handle.set_request_header(name("x-a"), value("1")).await.unwrap();
            handle.set_request_header(name("x-a"), value("2")).await.unwrap();
            handle.add_request_header(name("x-b"), value("1")).await.unwrap();
            handle.add_request_header(name("x-b"), value("2")).await.unwrap();
            handle.set_request_header(name("x-gone"), value("1")).await.unwrap();
            handle.remove_request_header(name("x-gone")).await.unwrap();
            handle.set_response_header(name("x-r"), value("1")).await.unwrap();
            handle.add_response_header(name("x-r"), value("2")).await.unwrap();
            handle.add_response_header(name("x-s"), value("1")).await.unwrap();
            handle.remove_response_header(name("x-s")).await.unwrap();
        });
    })
    .join()
    .unwrap();

    let (request, response, threads) =
        worker.inspect(id, |s| (s.request.clone(), s.response.clone(), s.threads.clone()));
    assert_eq!(request.get_all("x-a").iter().collect::<Vec<_>>(), ["2"]);
    assert_eq!(request.get_all("x-b").iter().collect::<Vec<_>>(), ["1", "2"]);
    assert!(!request.contains_key("x-gone"));
    assert_eq!(response.get_all("x-r").iter().collect::<Vec<_>>(), ["1", "2"]);
    assert!(!response.contains_key("x-s"));
    assert_eq!(threads, [worker_thread], "every operation ran on the worker");

    worker.end(id, End::Close);
    assert_eq!(worker.settled_live_mailboxes(), 0);
    worker.stop();
}

#[test]
fn reads_are_round_trips_that_return_copies() {
    let worker = Worker::start("reads");
    let (id, handle) = worker.open(Manager::Draining);
    worker.inspect(id, |s| {
        s.request.insert("x-a", value("1"));
        s.request.append("x-a", value("2"));
        s.response.insert("x-r", value("r"));
    });

    let caller = Caller::new();
    caller.run(async {
        assert_eq!(handle.request_header(name("x-a")).await, Ok(Some(value("1"))));
        assert_eq!(handle.request_header(name("x-none")).await, Ok(None));
        let mut copy = handle.request_headers().await.unwrap();
        assert_eq!(copy.get_all("x-a").iter().count(), 2);
        copy.clear();
        assert_eq!(handle.request_headers().await.unwrap().len(), 2, "the copy is the caller's own");
        assert_eq!(handle.response_header(name("x-r")).await, Ok(Some(value("r"))));
        assert_eq!(handle.response_headers().await.unwrap().len(), 1);
        // `call` returns what the operation computed.
        assert_eq!(handle.call(|ops| Ok(ops.request_headers()?.len() * 10)).await, Ok(20));
    });

    // The stream's own errors come through as they are.
    worker.inspect(id, |s| s.response_sent = true);
    caller.run(async {
        assert_eq!(handle.set_response_header(name("x-r"), value("2")).await, Err(Error::HeadersAlreadySent));
        assert_eq!(handle.response_header(name("x-r")).await, Err(Error::HeadersAlreadySent));
        assert_eq!(handle.call(|_| Err::<(), _>(Error::NotStopped)).await, Err(Error::NotStopped));
    });

    worker.end(id, End::Drop);
    assert_eq!(worker.settled_live_mailboxes(), 0);
    worker.stop();
}

#[test]
fn take_and_put_move_ownership_across_threads() {
    let worker = Worker::start("ownership");
    let (id, handle) = worker.open(Manager::Draining);
    worker.inspect(id, |s| {
        s.request.insert("x-a", value("1"));
        s.body = b"hello".to_vec();
    });

    let off_worker = thread::spawn(move || {
        let caller = Caller::new();
        caller.run(async {
            // The fields move out: the stream no longer has them...
            let mut fields = handle.take_request_headers().await.unwrap();
            assert_eq!(fields.get("x-a"), Some(&value("1")));
            fields.insert("x-added", value("off-worker"));
            let during = handle.request_headers().await.unwrap();
            // ...and move back in.
            handle.put_request_headers(fields).await.unwrap();

            let body = handle.take_body().await.unwrap();
            assert_eq!(&body[..], b"hello");
            let mut upper = body.to_ascii_uppercase();
            upper.extend_from_slice(b"!");
            handle.replace_body(upper).await.unwrap();
            handle.append_body(Bytes::from_static(b"?")).await.unwrap();
            during
        })
    });
    let during = off_worker.join().unwrap();
    assert!(during.is_empty(), "while taken, the stream has no request fields");

    let (request, taken, body) = worker.inspect(id, |s| (s.request.clone(), s.request_taken, s.body.clone()));
    assert!(!taken);
    assert_eq!(request.get("x-a"), Some(&value("1")));
    assert_eq!(request.get("x-added"), Some(&value("off-worker")));
    assert_eq!(body, b"HELLO!?");

    worker.end(id, End::Close);
    worker.stop();
}

#[test]
fn resume_and_local_reply_reach_the_stream() {
    let worker = Worker::start("control");
    let (id, handle) = worker.open(Manager::Impatient);
    let caller = Caller::new();
    caller.run(async {
        handle.resume().await.unwrap();
        handle.resume().await.unwrap();
    });
    assert_eq!(worker.inspect(id, |s| s.resumed), 2);

    // The fake ends the stream inside its local reply, as a proxy would.
    caller.run(async {
        let reply = LocalReply { status: StatusCode::FORBIDDEN, headers: HeaderMap::new(), body: Bytes::new() };
        handle.local_reply(reply).await.unwrap();
    });
    assert_eq!(worker.inspect(id, |s| s.replied), Some(StatusCode::FORBIDDEN));
    assert_eq!(poll_once(pin!(handle.resume())), Poll::Ready(Err(Error::StreamGone)));
    assert_eq!(worker.ask(live_mailboxes), 0);
    worker.end(id, End::Drop);
    worker.stop();
}

#[test]
fn operations_from_one_thread_apply_in_order() {
    let worker = Worker::start("order");
    let (id, handle) = worker.open(Manager::Manual);
    let caller = Caller::new();
    // Post all of them first, then let the stream reach a safe point.
    let mut calls: Vec<_> = (0..100u8).map(|i| Box::pin(handle.append_body(vec![i]))).collect();
    for call in &mut calls {
        assert!(poll_once(call.as_mut()).is_pending());
    }
    // Posted after the calls by the same thread, so delivered after them.
    let (drained_tx, drained_rx) = mpsc::channel();
    worker.handle.post(move || drained_tx.send(drain_now(id)).unwrap()).unwrap();
    assert_eq!(drained_rx.recv_timeout(PATIENCE).unwrap(), 100, "one safe point applies everything queued");
    caller.run(async {
        for call in calls {
            call.await.unwrap();
        }
    });
    assert_eq!(worker.inspect(id, |s| s.body.clone()), (0..100u8).collect::<Vec<_>>());
    worker.end(id, End::Close);
    worker.stop();
}

#[test]
fn ready_is_cancel_safe() {
    // The impatient manager drops its `ready` future every millisecond.
    let worker = Worker::start("cancel-safe");
    let (id, handle) = worker.open(Manager::Impatient);
    let caller = Caller::new();
    for i in 0..20 {
        if i % 5 == 0 {
            thread::sleep(Duration::from_millis(3));
        }
        caller.run(handle.resume()).unwrap();
    }
    assert_eq!(worker.inspect(id, |s| s.resumed), 20);
    worker.end(id, End::Close);
    assert_eq!(worker.settled_live_mailboxes(), 0);
    worker.stop();
}

// ---------------------------------------------------------------------------
// The end of a stream.

#[test]
fn calls_after_the_stream_ended_fail_at_once() {
    let worker = Worker::start("after-end");
    for how in [End::Close, End::Drop] {
        let (id, handle) = worker.open(Manager::Draining);
        let spare = handle.clone();
        worker.end(id, how);
        assert_eq!(worker.settled_live_mailboxes(), 0);
        // Without posting: the first poll answers.
        assert_eq!(poll_once(pin!(handle.resume())), Poll::Ready(Err(Error::StreamGone)), "{how:?}");
        assert_eq!(poll_once(pin!(spare.request_header(name("a")))), Poll::Ready(Err(Error::StreamGone)));
        let ran = Arc::new(AtomicBool::new(false));
        let flag = ran.clone();
        let call = spare.call(move |_| {
            flag.store(true, Ordering::SeqCst);
            Ok(())
        });
        assert_eq!(poll_once(pin!(call)), Poll::Ready(Err(Error::StreamGone)));
        assert!(!ran.load(Ordering::SeqCst));
    }
    assert_eq!(worker.panicked_posts(), 0);
    worker.stop();
}

#[test]
fn queued_calls_answer_stream_gone_when_the_stream_ends() {
    let worker = Worker::start("queued");
    for how in [End::Close, End::Drop] {
        // A stream stopped "inside a hook": nothing is applied.
        let (id, handle) = worker.open(Manager::Manual);
        let ran = Arc::new(AtomicUsize::new(0));
        let posted = Arc::new(Barrier::new(5));
        let callers: Vec<_> = (0..4)
            .map(|_| {
                let (handle, ran, posted) = (handle.clone(), ran.clone(), posted.clone());
                thread::spawn(move || {
                    let caller = Caller::new();
                    let ran2 = ran.clone();
                    let mut call = pin!(handle.call(move |ops| {
                        ran2.fetch_add(1, Ordering::SeqCst);
                        ops.resume()
                    }));
                    assert!(poll_once(call.as_mut()).is_pending());
                    posted.wait();
                    let started = Instant::now();
                    let result = caller.run(call);
                    (result, started.elapsed())
                })
            })
            .collect();
        posted.wait();
        worker.end(id, how);
        for caller in callers {
            let (result, waited) = caller.join().unwrap();
            assert_eq!(result, Err(Error::StreamGone), "{how:?}");
            assert!(waited < Duration::from_secs(5), "answered when the stream ended, not by a timeout");
        }
        assert_eq!(ran.load(Ordering::SeqCst), 0, "nothing runs on a stream that never drained");
        assert_eq!(worker.settled_live_mailboxes(), 0);
    }
    worker.stop();
}

#[test]
fn a_call_in_flight_never_lands_in_the_stream_that_reused_its_slot() {
    let worker = Worker::start("generations");
    let (old_id, old) = worker.open(Manager::Draining);

    // Hold the worker so that what follows queues up behind, in order:
    // the old stream ends, a new one takes its slot, and only then does
    // the old handle's operation (posted while the old stream still
    // looked alive) arrive.
    let (release, held) = mpsc::channel::<()>();
    worker.handle.post(move || held.recv_timeout(PATIENCE).unwrap()).unwrap();
    let (new_tx, new_rx) = mpsc::channel();
    worker
        .handle
        .post(move || {
            end_now(old_id, End::Close);
            new_tx.send(open_here(Manager::Draining)).unwrap();
        })
        .unwrap();
    let ran = Arc::new(AtomicBool::new(false));
    let flag = ran.clone();
    let mut call = pin!(old.call(move |ops| {
        flag.store(true, Ordering::SeqCst);
        ops.resume()
    }));
    assert!(poll_once(call.as_mut()).is_pending(), "posted: the old stream was still alive");
    release.send(()).unwrap();

    let (new_id, new) = new_rx.recv_timeout(PATIENCE).unwrap();
    let (old_slot, old_stream) = key_of(&old);
    let (new_slot, new_stream) = key_of(&new);
    assert_eq!(old_slot, new_slot, "the new stream reuses the slot");
    assert_ne!(old_stream, new_stream);

    assert_eq!(Caller::new().run(call), Err(Error::StreamGone));
    assert!(!ran.load(Ordering::SeqCst));
    assert_eq!(worker.inspect(new_id, |s| s.resumed), 0, "the new stream was not touched");
    assert_eq!(Caller::new().run(new.resume()), Ok(()));
    worker.end(new_id, End::Close);
    assert_eq!(worker.settled_live_mailboxes(), 0);
    worker.stop();
}

#[test]
fn calls_racing_the_end_of_the_stream_are_ok_or_gone() {
    let worker = Worker::start("race-end");
    let total_ok = Arc::new(AtomicUsize::new(0));
    for round in 0..200 {
        let (id, handle) = worker.open(if round % 2 == 0 { Manager::Draining } else { Manager::Impatient });
        let ran = Arc::new(AtomicUsize::new(0));
        let callers: Vec<_> = (0..3)
            .map(|_| {
                let (handle, ran) = (handle.clone(), ran.clone());
                thread::spawn(move || {
                    let caller = Caller::new();
                    let mut ok = 0;
                    loop {
                        let ran = ran.clone();
                        let result = caller.run(handle.call(move |ops| {
                            ran.fetch_add(1, Ordering::SeqCst);
                            ops.append_body(Bytes::from_static(b"x"))
                        }));
                        match result {
                            Ok(()) => ok += 1,
                            Err(Error::StreamGone) => return ok,
                            Err(e) => panic!("unexpected {e:?}"),
                        }
                    }
                })
            })
            .collect();
        thread::sleep(Duration::from_micros(fastrand::u64(0..300)));
        worker.end(id, if fastrand::bool() { End::Close } else { End::Drop });
        let ok: usize = callers.into_iter().map(|c| c.join().unwrap()).sum();
        assert_eq!(ok, ran.load(Ordering::SeqCst), "Ok exactly when the operation ran");
        total_ok.fetch_add(ok, Ordering::Relaxed);
    }
    assert!(total_ok.load(Ordering::Relaxed) > 0, "some calls beat the end");
    assert_eq!(worker.settled_live_mailboxes(), 0);
    assert_eq!(worker.panicked_posts(), 0);
    worker.stop();
}

#[test]
fn calls_on_a_stopped_worker_answer_stream_gone() {
    let worker = Worker::start("stopping");
    let (_id, handle) = worker.open(Manager::Manual);
    let mut pending = pin!(handle.resume());
    assert!(poll_once(pending.as_mut()).is_pending());
    worker.stop();
    let caller = Caller::new();
    assert_eq!(caller.run(pending), Err(Error::StreamGone), "dropped with the worker's queue");
    assert_eq!(caller.run(handle.resume()), Err(Error::StreamGone), "refused, or the stream went with the worker");
}

#[test]
fn a_panicking_operation_panics_the_caller_not_the_worker() {
    let worker = Worker::start("panics");
    let (id, handle) = worker.open(Manager::Draining);
    let panicking = handle.clone();
    let caught = thread::spawn(move || {
        let caller = Caller::new();
        catch_unwind(AssertUnwindSafe(|| caller.run(panicking.call(|_| -> Result<(), Error> { panic!("filter bug") }))))
    })
    .join()
    .unwrap();
    let payload = caught.expect_err("the caller panics");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"filter bug"));

    // The worker and the stream go on.
    assert_eq!(Caller::new().run(handle.resume()), Ok(()));
    assert_eq!(worker.inspect(id, |s| s.resumed), 1);
    assert_eq!(worker.panicked_posts(), 0);
    worker.end(id, End::Close);
    worker.stop();
}

// ---------------------------------------------------------------------------
// Stress.

/// Streams opened and ended at random on two workers (some end themselves
/// with a local reply) while eight threads make 100,000 calls on them
/// (some on handles kept long after their stream ended). Every call is
/// answered, `Ok` or `StreamGone`; nothing panics; the workers' registries
/// end empty.
#[test]
fn stress_many_threads_many_streams() {
    const CALLERS: usize = 8;
    const CALLS_PER_CALLER: usize = 12_500;
    const MAX_OPEN: usize = 64;

    let started = Instant::now();
    let workers = [Worker::start("stress-0"), Worker::start("stress-1")];
    let dispatchers: Vec<DispatcherHandle> = workers.iter().map(|w| w.handle.clone()).collect();
    // (worker, stream id, handle)
    let pool: Arc<Mutex<Vec<(usize, u64, StreamHandle)>>> = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicUsize::new(0));

    let churners: Vec<_> = (0..2)
        .map(|_| {
            let (dispatchers, pool, done, opened) = (dispatchers.clone(), pool.clone(), done.clone(), opened.clone());
            thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    let open_count = pool.lock().unwrap().len();
                    if open_count < MAX_OPEN && fastrand::u8(0..3) != 0 {
                        let w = fastrand::usize(0..dispatchers.len());
                        let manager = if fastrand::u8(0..8) == 0 { Manager::Impatient } else { Manager::Draining };
                        let (id, handle) = open(&dispatchers[w], manager);
                        pool.lock().unwrap().push((w, id, handle));
                        opened.fetch_add(1, Ordering::Relaxed);
                    } else {
                        let victim = {
                            let mut pool = pool.lock().unwrap();
                            if pool.is_empty() {
                                None
                            } else {
                                let i = fastrand::usize(0..pool.len());
                                Some(pool.swap_remove(i))
                            }
                        };
                        if let Some((w, id, _)) = victim {
                            end(&dispatchers[w], id, if fastrand::bool() { End::Close } else { End::Drop });
                        }
                    }
                    thread::sleep(Duration::from_micros(fastrand::u64(0..50)));
                }
            })
        })
        .collect();

    let ok = Arc::new(AtomicUsize::new(0));
    let gone = Arc::new(AtomicUsize::new(0));
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (pool, ok, gone) = (pool.clone(), ok.clone(), gone.clone());
            thread::spawn(move || {
                let caller = Caller::new();
                let mut kept: Option<StreamHandle> = None;
                let mut made = 0;
                while made < CALLS_PER_CALLER {
                    let handle = match &kept {
                        Some(old) if fastrand::u8(0..20) == 0 => old.clone(),
                        _ => {
                            let pool = pool.lock().unwrap();
                            if pool.is_empty() {
                                drop(pool);
                                thread::yield_now();
                                continue;
                            }
                            pool[fastrand::usize(0..pool.len())].2.clone()
                        }
                    };
                    if kept.is_none() || fastrand::u16(0..1000) == 0 {
                        kept = Some(handle.clone());
                    }
                    let result = caller.run(random_call(&handle));
                    made += 1;
                    match result {
                        Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(Error::StreamGone) => gone.fetch_add(1, Ordering::Relaxed),
                        Err(e) => panic!("a call failed with {e:?}"),
                    };
                }
            })
        })
        .collect();

    for caller in callers {
        caller.join().expect("a caller panicked");
    }
    done.store(true, Ordering::Relaxed);
    for churner in churners {
        churner.join().expect("a churner panicked");
    }
    for (w, id, _) in pool.lock().unwrap().drain(..) {
        end(&dispatchers[w], id, End::Close);
    }
    // Streams that ended themselves (local reply) are closed but still in
    // the test's table: clear it.
    for worker in &workers {
        worker.ask(|| {
            let streams: Vec<_> = STREAMS.with(|s| s.borrow_mut().drain().collect());
            for (_, stream) in streams {
                stream.mailbox.close();
            }
        });
    }

    let (ok, gone) = (ok.load(Ordering::Relaxed), gone.load(Ordering::Relaxed));
    assert_eq!(ok + gone, CALLERS * CALLS_PER_CALLER);
    assert!(ok > 0 && gone > 0, "both outcomes exercised: ok {ok}, gone {gone}");
    for worker in workers {
        assert_eq!(worker.settled_live_mailboxes(), 0, "{} leaked mailboxes", worker.handle.name());
        assert_eq!(worker.panicked_posts(), 0);
        worker.stop();
    }
    eprintln!(
        "stress: {} calls ({ok} ok, {gone} gone) on {} streams in {:?}",
        CALLERS * CALLS_PER_CALLER,
        opened.load(Ordering::Relaxed),
        started.elapsed()
    );
}

/// One of the handle's calls, at random; the fake never fails, so only the
/// stream's end can.
async fn random_call(handle: &StreamHandle) -> Result<(), Error> {
    match fastrand::u8(0..14) {
        0 => handle.set_request_header(name("x-a"), value("1")).await,
        1 => handle.add_request_header(name("x-b"), value("2")).await,
        2 => handle.remove_request_header(name("x-b")).await,
        3 => handle.request_header(name("x-a")).await.map(drop),
        4 => handle.request_headers().await.map(drop),
        5 => {
            let headers = handle.take_request_headers().await?;
            handle.put_request_headers(headers).await
        }
        6 => handle.set_response_header(name("x-r"), value("1")).await,
        7 => handle.response_headers().await.map(drop),
        8 => handle.append_body(Bytes::from_static(b"ab")).await,
        9 => handle.take_body().await.map(drop),
        10 => handle.replace_body(Bytes::from_static(b"cd")).await,
        11 => handle.resume().await,
        12 if fastrand::u8(0..50) == 0 => {
            let reply =
                LocalReply { status: StatusCode::TOO_MANY_REQUESTS, headers: HeaderMap::new(), body: Bytes::new() };
            handle.local_reply(reply).await
        }
        _ => handle.call(|ops| ops.request_headers().map(drop)).await,
    }
}
