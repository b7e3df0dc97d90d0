//! Where lines go: one writer thread per destination, fed through a
//! bounded channel that workers never wait on.

use std::collections::HashMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{self, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;

use crate::{Format, Record};

/// Lines a [`Sink`] holds between the workers and its writer thread before
/// it drops new ones: about 4 MiB of typical lines; room for 1.6 million
/// lines a second between two polls ([`FLUSH_INTERVAL`]), or a short
/// stall of the disk at a high request rate.
pub const DEFAULT_CAPACITY: usize = 16_384;

/// How long dropping the last [`Sink`] handle waits for the writer thread
/// to write what is queued before leaving it behind.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);

/// How often the writer thread looks for lines. It polls rather than
/// sleeping in `recv`, because waking a thread asleep in `recv` costs the
/// sending worker a futex system call (about as much as rendering the
/// line); polling keeps the worker's side to a few atomic operations. Lines
/// reach the file at most this late (Envoy flushes every second).
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(10);

/// Bytes the writer thread gathers before a `write(2)`; it also writes
/// whenever the channel runs empty, so lines are not held past a poll.
const BUFFER_SIZE: usize = 64 * 1024;

/// Line buffers kept for reuse, and the largest one kept: in steady state a
/// worker renders into a buffer the writer thread has already used, so no
/// line costs a `malloc` (or a cross-thread `free`, which takes the
/// allocator's arena lock in glibc).
const POOL_SIZE: usize = 1024;
const POOLED_CAPACITY: usize = 512;
const MAX_POOLED_CAPACITY: usize = 4096;

/// Where a [`Sink`] writes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// The process's standard output.
    Stdout,
    /// The process's standard error.
    Stderr,
    /// A file, opened for appending and created if missing. A relative path
    /// is made absolute when the sink opens, so a later reopen finds the
    /// same file.
    File(PathBuf),
}

/// A handle to one access-log destination: cheap to clone, `Send + Sync`,
/// and never blocking on the writing side.
///
/// Workers call [`log`](Sink::log) or [`write_line`](Sink::write_line): the
/// line goes into a bounded channel (see [`DEFAULT_CAPACITY`]) to the sink's
/// one writer thread, which empties the channel every [`FLUSH_INTERVAL`]
/// into a 64 KiB buffer and writes it out whenever it fills or the channel
/// runs empty. When the channel is full
/// the new line is dropped and counted in [`dropped`](Sink::dropped):
/// losing log lines under a stalled disk beats stalling the proxy.
///
/// Dropping the last handle disconnects the channel; the writer thread
/// writes what is queued, flushes and exits, and the drop waits for it up
/// to [`SHUTDOWN_TIMEOUT`]. Keep sinks in a [`SinkRegistry`] on main so the
/// last handle is dropped there, never on a worker.
#[derive(Clone)]
pub struct Sink {
    shared: Arc<Shared>,
}

struct Shared {
    target: Target,
    /// `None` only while dropping (taking it disconnects the channel).
    tx: Option<SyncSender<Message>>,
    state: Arc<State>,
    thread: Option<JoinHandle<()>>,
}

/// Shared with the writer thread (which must not hold `Shared`, or the last
/// handle would never go).
struct State {
    dropped: AtomicU64,
    write_errors: AtomicU64,
    reopen: AtomicBool,
    /// Empty line buffers (lock-free; the writer returns, workers take).
    pool: ArrayQueue<Vec<u8>>,
}

impl State {
    fn buffer(&self) -> Vec<u8> {
        self.pool.pop().unwrap_or_else(|| Vec::with_capacity(POOLED_CAPACITY))
    }

    /// Keeps `buffer` for another line, unless the pool is full or it grew
    /// large (a huge header once should not pin memory forever).
    fn recycle(&self, mut buffer: Vec<u8>) {
        if buffer.capacity() <= MAX_POOLED_CAPACITY {
            buffer.clear();
            let _ = self.pool.push(buffer);
        }
    }
}

enum Message {
    Line(Vec<u8>),
    /// Only wakes the writer so that a requested reopen happens now.
    Wake,
    /// Write out everything before this, then answer.
    Flush(SyncSender<()>),
}

impl Sink {
    /// Opens `target` with [`DEFAULT_CAPACITY`] and starts its writer
    /// thread. Call on main: it opens the file here, so a bad path fails
    /// now rather than on the first line.
    pub fn open(target: Target) -> io::Result<Sink> {
        Sink::with_capacity(target, DEFAULT_CAPACITY)
    }

    /// [`Sink::open`] with a channel of `capacity` lines (at least 1).
    pub fn with_capacity(target: Target, capacity: usize) -> io::Result<Sink> {
        let target = normalize(target)?;
        let out = Output::open(&target)?;
        let (tx, rx) = sync_channel(capacity.max(1));
        let state = Arc::new(State {
            dropped: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
            reopen: AtomicBool::new(false),
            pool: ArrayQueue::new(POOL_SIZE),
        });
        let thread_state = state.clone();
        let busy = capacity / 4;
        let thread =
            thread::Builder::new().name("accesslog".into()).spawn(move || write_loop(&rx, out, &thread_state, busy))?;
        Ok(Sink { shared: Arc::new(Shared { target, tx: Some(tx), state, thread: Some(thread) }) })
    }

    /// Renders `record` with `format` and queues the line; `false` if the
    /// channel was full and the line was dropped. Never blocks. For workers.
    pub fn log(&self, format: &Format, record: &Record<'_>) -> bool {
        let mut line = self.shared.state.buffer();
        format.render(record, &mut line);
        self.send(line)
    }

    /// Queues one finished line (its newline included), copied; `false` if
    /// the channel was full and the line was dropped. Never blocks.
    pub fn write_line(&self, line: &[u8]) -> bool {
        let mut buffer = self.shared.state.buffer();
        buffer.extend_from_slice(line);
        self.send(buffer)
    }

    fn send(&self, line: Vec<u8>) -> bool {
        let tx = self.shared.tx.as_ref().expect("the sender is only taken while dropping");
        match tx.try_send(Message::Line(line)) {
            Ok(()) => true,
            Err(TrySendError::Full(message) | TrySendError::Disconnected(message)) => {
                self.shared.state.dropped.fetch_add(1, Ordering::Relaxed);
                if let Message::Line(line) = message {
                    self.shared.state.recycle(line);
                }
                false
            }
        }
    }

    /// Makes the writer thread close and reopen the file at the same path
    /// (logrotate's rename, then SIGUSR1): lines queued after this call go
    /// to the new file. A no-op for stdout and stderr. Call on main.
    pub fn reopen(&self) {
        self.shared.state.reopen.store(true, Ordering::Release);
        // If the channel is full the writer is busy and sees the flag at
        // its next line anyway.
        if let Some(tx) = &self.shared.tx {
            let _ = tx.try_send(Message::Wake);
        }
    }

    /// Waits until every line queued before this call is written to the
    /// destination (handed to the OS); `false` if that took longer than
    /// `timeout`. Blocks: for main, shutdown paths and tests, never for
    /// workers.
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (done_tx, done_rx) = sync_channel(1);
        let tx = self.shared.tx.as_ref().expect("the sender is only taken while dropping");
        let mut message = Message::Flush(done_tx);
        // A full channel frees up as the writer works; poll for a place.
        loop {
            match tx.try_send(message) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                    message = back;
                    thread::sleep(Duration::from_millis(1));
                }
                Err(_) => return false,
            }
        }
        done_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).is_ok()
    }

    /// Lines dropped so far because the channel was full.
    pub fn dropped(&self) -> u64 {
        self.shared.state.dropped.load(Ordering::Relaxed)
    }

    /// Failed writes, flushes and reopens so far (each is also logged with
    /// `tracing`, once per run of failures).
    pub fn write_errors(&self) -> u64 {
        self.shared.state.write_errors.load(Ordering::Relaxed)
    }

    /// Where this sink writes (a file path is absolute).
    pub fn target(&self) -> &Target {
        &self.shared.target
    }

    /// Whether both handles lead to the same writer thread.
    pub fn same_sink(&self, other: &Sink) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
}

impl fmt::Debug for Sink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sink")
            .field("target", &self.shared.target)
            .field("dropped", &self.dropped())
            .field("write_errors", &self.write_errors())
            .finish()
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Disconnect: the writer drains the queue, flushes and returns.
        drop(self.tx.take());
        let Some(thread) = self.thread.take() else { return };
        let deadline = Instant::now() + SHUTDOWN_TIMEOUT;
        while !thread.is_finished() {
            if Instant::now() >= deadline {
                tracing::warn!(sink = ?self.target, "access log writer still busy after {SHUTDOWN_TIMEOUT:?}; not waiting for it");
                return;
            }
            thread::sleep(Duration::from_millis(1));
        }
        let _ = thread.join();
    }
}

fn normalize(target: Target) -> io::Result<Target> {
    Ok(match target {
        Target::File(path) => Target::File(path::absolute(path)?),
        other => other,
    })
}

/// The writer thread: take everything queued, write it out, wait a poll
/// interval (unless the queue was filling up), repeat until every handle is
/// gone and the queue is empty.
fn write_loop(rx: &Receiver<Message>, mut out: Output, state: &State, busy: usize) {
    loop {
        let mut taken = 0;
        let finished = loop {
            match rx.try_recv() {
                Ok(message) => {
                    out.handle(message, state);
                    taken += 1;
                }
                Err(TryRecvError::Empty) => break false,
                Err(TryRecvError::Disconnected) => break true,
            }
        };
        let result = out.writer.flush();
        out.check(result, state, "write");
        if finished {
            return;
        }
        if taken <= busy {
            thread::sleep(FLUSH_INTERVAL);
        }
    }
}

struct Output {
    /// `None` for stdout and stderr, which are never reopened.
    path: Option<PathBuf>,
    writer: BufWriter<Box<dyn Write + Send>>,
    /// Whether the last operation failed, so a broken disk logs one warning
    /// rather than one per line.
    failing: bool,
}

impl Output {
    fn open(target: &Target) -> io::Result<Output> {
        let (path, inner): (_, Box<dyn Write + Send>) = match target {
            Target::Stdout => (None, Box::new(io::stdout())),
            Target::Stderr => (None, Box::new(io::stderr())),
            Target::File(path) => (Some(path.clone()), Box::new(open_file(path)?)),
        };
        Ok(Output { path, writer: BufWriter::with_capacity(BUFFER_SIZE, inner), failing: false })
    }

    fn handle(&mut self, message: Message, state: &State) {
        if state.reopen.swap(false, Ordering::AcqRel) {
            self.reopen(state);
        }
        match message {
            Message::Line(line) => {
                let result = self.writer.write_all(&line);
                self.check(result, state, "write");
                state.recycle(line);
            }
            Message::Wake => {}
            Message::Flush(done) => {
                let result = self.writer.flush();
                self.check(result, state, "write");
                let _ = done.send(());
            }
        }
    }

    /// Flushes what belongs to the old file, then switches to a fresh open
    /// of the path; if that fails, keeps writing to the old one.
    fn reopen(&mut self, state: &State) {
        let Some(path) = self.path.clone() else { return };
        let flushed = self.writer.flush();
        self.check(flushed, state, "write");
        match open_file(&path) {
            Ok(file) => self.writer = BufWriter::with_capacity(BUFFER_SIZE, Box::new(file)),
            Err(e) => self.check(Err(e), state, "reopen"),
        }
    }

    fn check(&mut self, result: io::Result<()>, state: &State, what: &str) {
        match result {
            Ok(()) => self.failing = false,
            Err(e) => {
                state.write_errors.fetch_add(1, Ordering::Relaxed);
                if !self.failing {
                    tracing::warn!(path = ?self.path, "access log {what} failed: {e}");
                }
                self.failing = true;
            }
        }
    }
}

fn open_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("access log {}: {e}", path.display())))
}

/// One [`Sink`] per destination, kept on main.
///
/// Listeners that log to the same file (or both to stdout) share one
/// writer thread, so their lines never interleave mid-line. The registry
/// holds a handle to each sink, which makes main the place where the last
/// handle is dropped: after a config change, [`prune`](SinkRegistry::prune)
/// closes the sinks no listener holds any more.
#[derive(Debug, Default)]
pub struct SinkRegistry {
    sinks: HashMap<Target, Sink>,
}

impl SinkRegistry {
    /// An empty registry.
    pub fn new() -> SinkRegistry {
        SinkRegistry::default()
    }

    /// The sink for `target`, opened on first use. Paths are compared after
    /// making them absolute (symbolic links are not resolved).
    pub fn get(&mut self, target: &Target) -> io::Result<Sink> {
        let key = normalize(target.clone())?;
        if let Some(sink) = self.sinks.get(&key) {
            return Ok(sink.clone());
        }
        let sink = Sink::open(key.clone())?;
        self.sinks.insert(key, sink.clone());
        Ok(sink)
    }

    /// [`Sink::reopen`] on every sink: what main does on SIGUSR1.
    pub fn reopen_all(&self) {
        self.sinks.values().for_each(Sink::reopen);
    }

    /// Closes (flushes and joins) the sinks that only the registry still
    /// holds.
    pub fn prune(&mut self) {
        self.sinks.retain(|_, sink| Arc::strong_count(&sink.shared) > 1);
    }

    /// How many sinks are open.
    pub fn len(&self) -> usize {
        self.sinks.len()
    }

    /// Whether no sink is open.
    pub fn is_empty(&self) -> bool {
        self.sinks.is_empty()
    }
}
