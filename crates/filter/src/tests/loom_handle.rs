//! A handle call racing the end of its stream or of its worker, on the real
//! code: the mailbox, its registry and alive flag, the handle's post, and
//! the runtime's dispatcher (whose queue and loop are loom-modelled too).
//! The stream's worker is the model's main thread, running its dispatcher
//! loop with the filter manager's part as the loop's future; the caller is
//! a second thread. What must hold in every interleaving: the caller gets
//! exactly one answer (a hang is a loom deadlock), `Ok` if and only if its
//! operation ran, `StreamGone` otherwise; the operation is dropped exactly
//! once; nothing runs after the stream closed; the registry ends empty.

use std::cell::Cell;

use bytes::Bytes;
use http::HeaderMap;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::thread;
use nuncio_context::Context;
use nuncio_runtime::Dispatcher;

use crate::status::LocalReply;
use crate::{Error, Mailbox, StreamOps, live_mailboxes};

/// The stream as the manager would expose it; the model only counts.
#[derive(Default)]
struct Stream {
    headers: HeaderMap,
    resumed: usize,
}

impl StreamOps for Stream {
    fn request_headers(&mut self) -> Result<&mut HeaderMap, Error> {
        Ok(&mut self.headers)
    }
    fn response_headers(&mut self) -> Result<&mut HeaderMap, Error> {
        Ok(&mut self.headers)
    }
    fn take_request_headers(&mut self) -> Result<HeaderMap, Error> {
        Ok(std::mem::take(&mut self.headers))
    }
    fn put_request_headers(&mut self, headers: HeaderMap) -> Result<(), Error> {
        self.headers = headers;
        Ok(())
    }
    fn take_body(&mut self) -> Result<Bytes, Error> {
        Ok(Bytes::new())
    }
    fn replace_body(&mut self, _body: Bytes) -> Result<(), Error> {
        Ok(())
    }
    fn append_body(&mut self, _data: Bytes) -> Result<(), Error> {
        Ok(())
    }
    fn resume(&mut self) -> Result<(), Error> {
        self.resumed += 1;
        Ok(())
    }
    fn local_reply(&mut self, _reply: LocalReply) -> Result<(), Error> {
        Ok(())
    }
}

/// Counts drops of the caller's closure.
struct Probe(Arc<AtomicUsize>);

impl Drop for Probe {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// What the caller's operation left behind.
struct Trace {
    ran: Arc<AtomicUsize>,
    dropped: Arc<AtomicUsize>,
    /// Set by the worker right after it closed the stream; the operation
    /// asserts it is clear (both run on the worker, so this is ordering).
    closed: Arc<AtomicBool>,
}

impl Trace {
    fn new() -> Trace {
        Trace {
            ran: Arc::new(AtomicUsize::new(0)),
            dropped: Arc::new(AtomicUsize::new(0)),
            closed: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Starts the caller: one `resume` through `call`, then a signal to the
    /// worker that it has its answer.
    fn caller(
        &self,
        handle: crate::StreamHandle,
        answered: tokio::sync::oneshot::Sender<()>,
    ) -> thread::JoinHandle<Result<(), Error>> {
        let (ran, closed, probe) = (self.ran.clone(), self.closed.clone(), Probe(self.dropped.clone()));
        thread::spawn(move || {
            let result = loom::future::block_on(handle.call(move |ops| {
                let _probe = &probe;
                assert!(!closed.load(Ordering::SeqCst), "an operation ran after its stream closed");
                ran.fetch_add(1, Ordering::SeqCst);
                ops.resume()
            }));
            let _ = answered.send(());
            result
        })
    }

    /// The invariants, once the caller is joined.
    fn check(&self, result: &Result<(), Error>) {
        assert_eq!(self.dropped.load(Ordering::SeqCst), 1, "the operation is dropped exactly once");
        match self.ran.load(Ordering::SeqCst) {
            0 => assert_eq!(*result, Err(Error::StreamGone)),
            1 => assert_eq!(*result, Ok(())),
            n => panic!("the operation ran {n} times"),
        }
    }
}

/// The stream's manager drains once (a safe point) and then the stream
/// ends, while the caller checks the alive flag, posts, and waits: the call
/// is either applied (`Ok`) or refused at once / dropped on the worker
/// (`StreamGone`), never lost and never run after the close.
#[test]
fn loom_call_races_close() {
    loom::model(|| {
        let worker = Dispatcher::new("worker").unwrap();
        let (mailbox, handle) = Mailbox::new(Context::background());
        let trace = Trace::new();
        let (answered, caller_done) = tokio::sync::oneshot::channel();
        let caller = trace.caller(handle, answered);

        let mut stream = Stream::default();
        let closed = trace.closed.clone();
        worker
            .run_until(async {
                mailbox.drain(&mut stream);
                mailbox.close();
                closed.store(true, Ordering::SeqCst);
                // Keep the loop turning (running posts) until answered.
                let _ = caller_done.await;
            })
            .expect("the worker was not stopped");
        let result = caller.join().unwrap();
        trace.check(&result);

        assert_eq!(stream.resumed, trace.ran.load(Ordering::SeqCst));
        assert_eq!(mailbox.drain(&mut stream), 0, "a closed mailbox applies nothing");
        assert_eq!(live_mailboxes(), 0);
        drop(mailbox);
    });
}

/// The same race, the stream ending by its mailbox being dropped while the
/// manager waits in `ready` (as when a stream's task is torn down).
#[test]
fn loom_call_races_mailbox_drop() {
    loom::model(|| {
        let worker = Dispatcher::new("worker").unwrap();
        let (mailbox, handle) = Mailbox::new(Context::background());
        let trace = Trace::new();
        let (answered, caller_done) = tokio::sync::oneshot::channel();
        let caller = trace.caller(handle, answered);

        let mut stream = Stream::default();
        let closed = trace.closed.clone();
        let polled_once = Cell::new(false);
        worker
            .run_until(async {
                // One turn of the manager's wait: take what has arrived.
                std::future::poll_fn(|cx| {
                    if mailbox.poll_ready(cx).is_ready() {
                        mailbox.drain(&mut stream);
                    }
                    polled_once.set(true);
                    std::task::Poll::Ready(())
                })
                .await;
                drop(mailbox);
                closed.store(true, Ordering::SeqCst);
                let _ = caller_done.await;
            })
            .expect("the worker was not stopped");
        assert!(polled_once.get());
        let result = caller.join().unwrap();
        trace.check(&result);
        assert_eq!(stream.resumed, trace.ran.load(Ordering::SeqCst));
        assert_eq!(live_mailboxes(), 0);
    });
}

/// The worker stops while the stream is still open: a post is refused, or
/// accepted and then dropped when the loop finishes. Either way the caller
/// gets `StreamGone` and the operation never runs.
#[test]
fn loom_call_races_worker_stop() {
    loom::model(|| {
        let worker = Dispatcher::new("worker").unwrap();
        let (mailbox, handle) = Mailbox::new(Context::background());
        let trace = Trace::new();
        let (answered, _caller_done) = tokio::sync::oneshot::channel();
        let caller = trace.caller(handle, answered);

        worker.handle().stop();
        worker.run();
        let result = caller.join().unwrap();
        trace.check(&result);
        assert_eq!(result, Err(Error::StreamGone));
        drop(mailbox);
        assert_eq!(live_mailboxes(), 0);
    });
}
