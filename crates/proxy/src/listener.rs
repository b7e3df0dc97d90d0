//! Listening sockets: bound on main, one `SO_REUSEPORT` socket per worker
//! per listener, so the kernel spreads connections over workers and a
//! connection stays on the worker that accepted it.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use nuncio_context::Context;
use socket2::{Domain, Protocol, Socket, Type};

use crate::error::Error;
use crate::worker::{ListenerTasks, Worker};

/// The sockets of one listener, one per worker, all on the same address.
pub(crate) struct BoundListener {
    /// The address actually bound (port 0 in the config is resolved here).
    pub(crate) address: SocketAddr,
    pub(crate) sockets: Vec<std::net::TcpListener>,
    /// Connections open on this listener, all workers together.
    pub(crate) open: Arc<AtomicUsize>,
}

/// Binds `count` sockets to `address` with `SO_REUSEPORT`. Runs on main, so
/// a port in use is reported before anything starts serving.
pub(crate) fn bind(name: &str, address: SocketAddr, count: usize) -> Result<BoundListener, Error> {
    let bind_error = |source| Error::Bind { address, what: format!("listener `{name}`"), source };
    let first = reuseport_socket(address).map_err(bind_error)?;
    // With port 0 the first bind picks the port; the others join it.
    let actual = first.local_addr().map_err(bind_error)?;
    let mut sockets = vec![first];
    for _ in 1..count {
        sockets.push(reuseport_socket(actual).map_err(bind_error)?);
    }
    Ok(BoundListener { address: actual, sockets, open: Arc::new(AtomicUsize::new(0)) })
}

fn reuseport_socket(address: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Starts accepting on `socket` for listener `name` (on this worker).
pub(crate) fn start(id: u64, name: &str, socket: std::net::TcpListener, open: Arc<AtomicUsize>) {
    let Some(worker) = Worker::current() else { return };
    let socket = match tokio::net::TcpListener::from_std(socket) {
        Ok(socket) => socket,
        Err(e) => return tracing::error!(listener = %name, error = %e, "cannot serve listener"),
    };
    let (root, close) = Context::background().with_cancel();
    let (draining, drain) = Context::background().with_cancel();
    let accept = tokio::task::spawn_local(accept_loop(worker.clone(), name.into(), socket, open, root, draining));
    worker.add_listener(id, ListenerTasks { accept, drain, close });
}

/// Stops accepting on listener `id` (its socket closes: new connections
/// are refused) and tells its connections to finish and close.
pub(crate) fn drain(id: u64) {
    let Some(worker) = Worker::current() else { return };
    worker.with_listener(id, |listener| {
        listener.accept.abort();
        listener.drain.cancel();
    });
}

/// Closes listener `id`'s connections now (a drain ran out of time, or it
/// ended).
pub(crate) fn close(id: u64) {
    let Some(worker) = Worker::current() else { return };
    if let Some(listener) = worker.remove_listener(id) {
        listener.accept.abort();
        listener.drain.cancel();
        listener.close.cancel();
    }
}

/// Accepts connections on one worker's socket and serves each on this
/// worker for its whole life. Connections get children of `ctx` (cancelled
/// when the listener closes for good) and watch `draining` (cancelled when
/// the listener drains: finish, then close).
pub(crate) async fn accept_loop(
    worker: Rc<Worker>,
    name: Rc<str>,
    socket: tokio::net::TcpListener,
    open: Arc<AtomicUsize>,
    ctx: Context,
    draining: Context,
) {
    loop {
        let (stream, peer) = match socket.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, or a connection reset while
                // queued: back off a little instead of spinning.
                crate::warn_limited::warn_limited!("accept", listener = %name, error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(local) = worker.local.get() else { continue };
        if !worker.overload.connection_opened(&local.snapshot.config.overload) {
            local.stats.inc(local.snapshot.stats.overload_refused);
            drop(stream);
            continue;
        }
        let max = local.snapshot.listeners.get(&*name).map_or(0, |l| l.config.max_connections);
        if open.fetch_add(1, Ordering::Relaxed) >= max {
            open.fetch_sub(1, Ordering::Relaxed);
            worker.overload.connection_closed();
            tracing::debug!(listener = %name, %peer, max, "connection limit reached, closing");
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        // Counted on the store of the snapshot it was accepted under, and
        // uncounted on the same one.
        local.stats.inc(local.snapshot.stats.downstream_cx_total);
        local.stats.gauge_inc(local.snapshot.stats.downstream_cx_active);
        let guard = OpenConnection { open: open.clone(), local, overload: worker.overload.clone() };
        // The connection's context: its handle lends it, so the task holds
        // one, not both.
        let (_, conn) = ctx.with_cancel();
        // What an idle connection's task holds is its cost: the opening
        // (TLS handshake, protocol sniff) is boxed here with all it needs,
        // and the task is `serve`'s future itself, no block around it (see
        // `downstream::serve`).
        let opening = Box::pin(crate::downstream::open(worker.clone(), name.clone(), stream, peer, draining.clone()));
        tokio::task::spawn_local(crate::downstream::serve(worker.clone(), name.clone(), opening, conn, guard));
    }
}

/// Counts an open connection until dropped.
struct OpenConnection {
    open: Arc<AtomicUsize>,
    local: nuncio_runtime::SlotRef<crate::snapshot::Local>,
    overload: Arc<crate::overload::Overload>,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        self.overload.connection_closed();
        self.local.stats.gauge_dec(self.local.snapshot.stats.downstream_cx_active);
    }
}
