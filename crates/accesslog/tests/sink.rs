//! The writer: real files in a temporary directory, real threads.

use std::fs;
use std::io::Read;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use nuncio_accesslog::{Format, Record, SHUTDOWN_TIMEOUT, Sink, SinkRegistry, Target};

#[test]
fn the_worker_handle_is_clone_send_sync() {
    fn check<T: Clone + Send + Sync>() {}
    check::<Sink>();
    check::<Format>();
}

#[test]
fn lines_from_four_threads_all_arrive_in_per_thread_order() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 2_500;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let sink = Sink::open(Target::File(path.clone())).unwrap();

    let writers: Vec<_> = (0..THREADS)
        .map(|t| {
            let sink = sink.clone();
            thread::spawn(move || {
                for i in 0..PER_THREAD {
                    assert!(sink.write_line(format!("{t} {i}\n").as_bytes()));
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    assert_eq!(sink.dropped(), 0);
    // The last handle: flushes and joins the writer thread.
    drop(sink);

    let text = fs::read_to_string(&path).unwrap();
    let mut next = [0usize; THREADS];
    for line in text.lines() {
        let (t, i) = line.split_once(' ').unwrap();
        let (t, i): (usize, usize) = (t.parse().unwrap(), i.parse().unwrap());
        assert_eq!(i, next[t], "thread {t} out of order");
        next[t] += 1;
    }
    assert_eq!(next, [PER_THREAD; THREADS]);
}

#[test]
fn log_renders_and_appends_to_an_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    fs::write(&path, "earlier line\n").unwrap();
    let sink = Sink::open(Target::File(path.clone())).unwrap();
    let format = Format::text("%RESPONSE_CODE% %REQ(:PATH)%").unwrap();
    let record = Record { status: Some(http::StatusCode::OK), path: Some("/x"), ..Record::new(SystemTime::now()) };
    assert!(sink.log(&format, &record));
    drop(sink);
    assert_eq!(fs::read_to_string(&path).unwrap(), "earlier line\n200 /x\n");
}

#[test]
fn opening_a_bad_path_fails_on_the_caller() {
    let dir = tempfile::tempdir().unwrap();
    let err = Sink::open(Target::File(dir.path().join("missing-dir/access.log"))).unwrap_err();
    assert!(err.to_string().contains("missing-dir/access.log"), "{err}");
}

#[test]
fn reopen_after_rename_writes_a_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let rotated = dir.path().join("access.log.1");
    let mut registry = SinkRegistry::new();
    let sink = registry.get(&Target::File(path.clone())).unwrap();

    for i in 0..3 {
        assert!(sink.write_line(format!("old {i}\n").as_bytes()));
    }
    assert!(sink.flush(Duration::from_secs(10)));
    assert_eq!(fs::read_to_string(&path).unwrap().lines().count(), 3);

    // logrotate: rename, then SIGUSR1, whose handler on main reopens.
    fs::rename(&path, &rotated).unwrap();
    assert!(sink.write_line(b"old 3, after the rename, before the reopen\n"));
    assert!(sink.flush(Duration::from_secs(10)));
    assert_eq!(fs::read_to_string(&rotated).unwrap().lines().count(), 4);
    registry.reopen_all();
    for i in 0..2 {
        assert!(sink.write_line(format!("new {i}\n").as_bytes()));
    }
    drop(sink);
    drop(registry);

    assert_eq!(fs::read_to_string(&path).unwrap(), "new 0\nnew 1\n");
    assert_eq!(
        fs::read_to_string(&rotated).unwrap(),
        "old 0\nold 1\nold 2\nold 3, after the rename, before the reopen\n"
    );
}

#[test]
fn registry_shares_one_sink_per_path_and_prunes_unused_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.log");
    let mut registry = SinkRegistry::new();
    let a = registry.get(&Target::File(path.clone())).unwrap();
    // Another spelling of the same path.
    let b = registry.get(&Target::File(dir.path().join(".").join("shared.log"))).unwrap();
    assert!(a.same_sink(&b));
    let out = registry.get(&Target::Stdout).unwrap();
    assert!(out.same_sink(&registry.get(&Target::Stdout).unwrap()));
    assert!(!out.same_sink(&a));
    assert_eq!(registry.len(), 2);

    assert!(a.write_line(b"from a\n"));
    assert!(b.write_line(b"from b\n"));
    drop((a, b, out));
    // Nothing holds them but the registry: closing them flushes the file.
    registry.prune();
    assert!(registry.is_empty());
    assert_eq!(fs::read_to_string(&path).unwrap(), "from a\nfrom b\n");

    // Still held by a listener: kept.
    let held = registry.get(&Target::File(path.clone())).unwrap();
    registry.prune();
    assert_eq!(registry.len(), 1);
    assert_eq!(held.target(), &Target::File(path));
}

/// A reader that stops reading (a stalled disk, or stdout piped into a
/// stuck process): the writer thread blocks in `write`, the channel fills,
/// and workers drop lines instead of waiting.
#[cfg(unix)]
#[test]
fn full_channel_drops_and_counts_instead_of_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());

    // Opening a FIFO blocks until both ends are open: open the reader on a
    // thread, which then waits before draining.
    let (drain_tx, drain_rx) = mpsc::channel::<()>();
    let reader_path = fifo.clone();
    let reader = thread::spawn(move || {
        let mut file = fs::File::open(reader_path).unwrap();
        drain_rx.recv().unwrap();
        let mut text = String::new();
        file.read_to_string(&mut text).unwrap();
        text
    });
    let sink = Sink::with_capacity(Target::File(fifo), 8).unwrap();

    // A "worker" writes 1 KiB lines until the writer has been stuck for a
    // while (100 refusals in a row, 1 ms apart): first the pipe (64 KiB on
    // Linux) and then the channel fill. It runs on its own thread so that a
    // blocking write fails the test instead of hanging it.
    let worker_sink = sink.clone();
    let (done_tx, done_rx) = mpsc::channel();
    thread::spawn(move || {
        let line = format!("{}\n", "x".repeat(1023));
        let (mut accepted, mut refused, mut in_a_row) = (0u64, 0u64, 0);
        while in_a_row < 100 && accepted < 10_000 {
            if worker_sink.write_line(line.as_bytes()) {
                accepted += 1;
                in_a_row = 0;
            } else {
                refused += 1;
                in_a_row += 1;
                thread::sleep(Duration::from_millis(1));
            }
        }
        // Before reporting, so that the test's drop below is the last one.
        drop(worker_sink);
        done_tx.send((accepted, refused)).unwrap();
    });
    let (accepted, refused) =
        done_rx.recv_timeout(Duration::from_secs(10)).expect("write_line blocked on a full channel");
    assert!((8..10_000).contains(&accepted), "accepted {accepted}");
    assert!(refused >= 100);
    assert_eq!(sink.dropped(), refused);
    // A flush cannot finish while the reader is stuck; it gives up in time.
    assert!(!sink.flush(Duration::from_millis(50)));

    // Shutdown with the writer stuck waits at most SHUTDOWN_TIMEOUT.
    let started = Instant::now();
    drop(sink);
    let waited = started.elapsed();
    assert!(waited >= SHUTDOWN_TIMEOUT && waited < SHUTDOWN_TIMEOUT + Duration::from_secs(2), "{waited:?}");

    // Once the reader drains, the left-behind writer still delivers every
    // accepted line, then closes the pipe.
    drain_tx.send(()).unwrap();
    let text = reader.join().unwrap();
    assert_eq!(text.lines().count() as u64, accepted);
}
