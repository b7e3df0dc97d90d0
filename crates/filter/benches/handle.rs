//! The stream handle's round trip.
//!
//! `cargo bench -p nuncio-filter --bench handle`
//!
//! * `call_round_trip`: a `StreamHandle::call` from another thread, answered
//!   by a worker whose stream manager waits in `Mailbox::ready` and drains
//!   at once: post, registry lookup, queue, manager wake-up, drain, reply.
//! * `request_header_round_trip`: the same with a header read and a clone.
//! * `post_oneshot_round_trip`: the floor under both: a bare post to the
//!   worker answering through a oneshot (no mailbox, no task wake-up).
//! * `call_round_trip_same_thread`: `call_round_trip` with the caller on
//!   the worker's own thread: the mechanism's own cost (allocations,
//!   registry, queue, two task wake-ups) without a cross-thread wake-up.
//! * `call_on_ended_stream`: the refusal once the stream is gone.
//!
//! The cross-thread figures are dominated by the two thread wake-ups: read
//! them against `post_oneshot_round_trip` (and the runtime's
//! `post_round_trip`) on the same machine.

#![cfg(not(nuncio_loom))]

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use nuncio_filter::http::{HeaderMap, HeaderName, HeaderValue};
use nuncio_filter::{Bytes, Context, Error, LocalReply, Mailbox, StreamHandle, StreamOps};
use nuncio_runtime::{Dispatcher, DispatcherHandle};

/// A stream with a few request fields.
struct Stream {
    request: HeaderMap,
    resumed: u64,
}

impl StreamOps for Stream {
    fn request_headers(&mut self) -> Result<&mut HeaderMap, Error> {
        Ok(&mut self.request)
    }
    fn response_headers(&mut self) -> Result<&mut HeaderMap, Error> {
        Ok(&mut self.request)
    }
    fn take_request_headers(&mut self) -> Result<HeaderMap, Error> {
        Ok(std::mem::take(&mut self.request))
    }
    fn put_request_headers(&mut self, headers: HeaderMap) -> Result<(), Error> {
        self.request = headers;
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

/// Opens a stream on `worker` whose manager drains as soon as anything
/// arrives; returns its handle and a way to end it.
fn open_stream(worker: &DispatcherHandle) -> (StreamHandle, impl FnOnce()) {
    let (tx, rx) = mpsc::channel();
    worker
        .post(move || {
            let (mailbox, handle) = Mailbox::new(Context::background());
            let mut request = HeaderMap::new();
            request.insert("host", HeaderValue::from_static("example.com"));
            request.insert("x-request-id", HeaderValue::from_static("0123456789abcdef"));
            let stream = Rc::new(RefCell::new(Stream { request, resumed: 0 }));
            let manager = mailbox.clone();
            Dispatcher::current()
                .unwrap()
                .spawn_local(async move {
                    while !manager.is_closed() {
                        manager.ready().await;
                        manager.drain(&mut *stream.borrow_mut());
                    }
                })
                .unwrap();
            tx.send(handle).unwrap();
            // The manager task keeps the mailbox; closing ends the stream.
            let (end_tx, end_rx) = tokio::sync::oneshot::channel::<()>();
            Dispatcher::current()
                .unwrap()
                .spawn_local(async move {
                    let _ = end_rx.await;
                    mailbox.close();
                })
                .unwrap();
            END.with(|end| *end.borrow_mut() = Some(end_tx));
        })
        .unwrap();
    let handle = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let worker = worker.clone();
    let end = move || {
        worker
            .post(|| {
                if let Some(end) = END.with(|end| end.borrow_mut().take()) {
                    let _ = end.send(());
                }
            })
            .unwrap();
    };
    (handle, end)
}

thread_local! {
    static END: RefCell<Option<tokio::sync::oneshot::Sender<()>>> = const { RefCell::new(None) };
}

fn round_trips(c: &mut Criterion) {
    let (worker, thread) = Dispatcher::spawn("worker", |d| d.run()).unwrap();
    // The caller: another thread's executor (as an extension pool's would be).
    let caller = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (handle, end) = open_stream(&worker);
    let x_request_id = HeaderName::from_static("x-request-id");

    c.bench_function("call_round_trip", |b| {
        b.iter_custom(|iters| {
            caller.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    handle.call(|ops| ops.resume()).await.unwrap();
                }
                start.elapsed()
            })
        });
    });

    c.bench_function("request_header_round_trip", |b| {
        b.iter_custom(|iters| {
            caller.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let value = handle.request_header(x_request_id.clone()).await.unwrap();
                    assert!(value.is_some());
                }
                start.elapsed()
            })
        });
    });

    c.bench_function("post_oneshot_round_trip", |b| {
        b.iter_custom(|iters| {
            caller.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    worker
                        .post(move || {
                            let _ = tx.send(());
                        })
                        .unwrap();
                    rx.await.unwrap();
                }
                start.elapsed()
            })
        });
    });

    // The caller on the worker's thread: a dispatcher of its own here.
    let main = Dispatcher::new("main").unwrap();
    let (mailbox, local) = Mailbox::new(Context::background());
    let stream = Rc::new(RefCell::new(Stream { request: HeaderMap::new(), resumed: 0 }));
    let manager = mailbox.clone();
    main.spawn_local(async move {
        while !manager.is_closed() {
            manager.ready().await;
            manager.drain(&mut *stream.borrow_mut());
        }
    })
    .unwrap();
    c.bench_function("call_round_trip_same_thread", |b| {
        b.iter_custom(|iters| {
            main.run_until(async {
                let start = Instant::now();
                for _ in 0..iters {
                    local.call(|ops| ops.resume()).await.unwrap();
                }
                start.elapsed()
            })
            .unwrap()
        });
    });
    mailbox.close();
    drop(main);

    end();
    let deadline = Instant::now() + Duration::from_secs(10);
    while caller.block_on(handle.resume()) != Err(Error::StreamGone) {
        assert!(Instant::now() < deadline, "the stream did not end");
    }
    c.bench_function("call_on_ended_stream", |b| {
        b.iter(|| caller.block_on(handle.call(|ops| ops.resume())));
    });

    worker.stop();
    thread.join().unwrap();
}

criterion_group!(benches, round_trips);
criterion_main!(benches);
