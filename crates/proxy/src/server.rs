//! Starting and stopping nuncio: main thread, workers, slots, listeners.
//!
//! Main binds every socket (so a bad address fails before anything
//! serves), builds the config snapshot once, hands it to the workers
//! through a slot, gives each worker its own `SO_REUSEPORT` socket per
//! listener, serves admin itself, and on stop shuts the workers down and
//! the slots in reverse order.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use nuncio_accesslog::SinkRegistry;
use nuncio_config::Config;
use nuncio_context::Context;
use nuncio_runtime::{Dispatcher, DispatcherHandle, Slot, ThreadLocal};
use nuncio_stats::Store;

use crate::admin::{self, AdminState};
use crate::cluster::hosts::{HostStatus, Hosts};
use crate::error::Error;
use crate::filter_catalog::FilterKinds;
use crate::filter_manager::FilterChainFactory;
use crate::listener::{self, BoundListener};
use crate::snapshot::{Local, Snapshot};
use crate::worker::Worker;

/// Where a running server listens.
#[derive(Debug, Clone)]
pub struct Addresses {
    /// Each listener's bound address, by name (port 0 resolved).
    pub listeners: HashMap<String, SocketAddr>,
    /// The admin listener's bound address.
    pub admin: SocketAddr,
}

/// Resolves an endpoint name (`host:port`) to its addresses.
pub type Resolver = Arc<dyn Fn(&str) -> std::io::Result<Vec<SocketAddr>> + Send + Sync>;

/// Sets the log level from a name (`debug`, `info`, ...).
pub type LogLevelHook = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// What the embedding program provides beyond the config.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct Options {
    /// Resolves endpoint names for `dns_refresh` (default: the system
    /// resolver). Tests give their own to change what a name resolves to.
    pub resolver: Option<Resolver>,
    /// Changes the log level for admin `POST /logging?level=` (default:
    /// none, and the endpoint says so).
    pub set_log_level: Option<LogLevelHook>,
    /// Filters by listener name, in order, ahead of those the config names
    /// (the router is the implicit last).
    pub filters: HashMap<String, FilterChainFactory>,
    /// The filter kinds the config's `filters:` lists may name (give the
    /// same set to `Config::load_with`).
    pub filter_kinds: FilterKinds,
}

/// What can be asked of main from elsewhere (signals, embedding code).
#[derive(Debug)]
pub(crate) enum Control {
    /// Reopen every access-log file (after logrotate moved them).
    ReopenAccessLogs,
}

/// A server running on a main thread of its own (tests, embedding).
/// Dropping it stops the server and waits for its threads.
pub struct RunningServer {
    addresses: Addresses,
    main: DispatcherHandle,
    control: tokio::sync::mpsc::UnboundedSender<Control>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RunningServer {
    /// Starts nuncio with `config` on a new main thread and returns once
    /// every worker serves.
    pub fn start(config: Config) -> Result<RunningServer, Error> {
        RunningServer::start_with(config, Options::default())
    }

    /// [`RunningServer::start`] with hooks.
    pub fn start_with(config: Config, options: Options) -> Result<RunningServer, Error> {
        let (control, control_rx) = tokio::sync::mpsc::unbounded_channel();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("nuncio-main".into())
            .spawn(move || {
                let main = match Dispatcher::new("main") {
                    Ok(main) => main,
                    Err(e) => return drop(tx.send(Err(Error::Runtime(e)))),
                };
                let handle = main.handle();
                let report = tx.clone();
                let started = move |addresses| drop(report.send(Ok((addresses, handle))));
                let result = serve(&main, config, &options, control_rx, started);
                if let Err(e) = result {
                    let _ = tx.send(Err(e));
                }
            })
            .map_err(|e| {
                Error::Runtime(nuncio_runtime::Error::Runtime { name: "main".into(), reason: e.to_string() })
            })?;
        let (addresses, main) = rx.recv().map_err(|_| Error::StartAborted)??;
        Ok(RunningServer { addresses, main, control, thread: Some(thread) })
    }

    /// Reopens every access-log file (what `SIGUSR1` does for the binary).
    pub fn reopen_access_logs(&self) {
        let _ = self.control.send(Control::ReopenAccessLogs);
    }

    /// Where it listens.
    pub fn addresses(&self) -> &Addresses {
        &self.addresses
    }

    /// The bound address of listener `name`.
    pub fn listener(&self, name: &str) -> Option<SocketAddr> {
        self.addresses.listeners.get(name).copied()
    }

    /// Stops the server and waits until every thread has ended.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.main.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs nuncio with the calling thread as main until `until` completes
/// (for the binary: a shutdown signal). `started` is called once every
/// worker serves. `SIGUSR1` reopens the access logs.
// `options` is taken by value like `config`: it belongs to the server now.
#[allow(clippy::needless_pass_by_value)]
pub fn run<F: Future + 'static>(
    config: Config,
    options: Options,
    until: F,
    started: impl FnOnce(&Addresses),
) -> Result<(), Error> {
    let main = Dispatcher::new("main")?;
    let handle = main.handle();
    let stopper = main.spawn_local(async move {
        until.await;
        handle.stop();
    })?;
    let (control, control_rx) = tokio::sync::mpsc::unbounded_channel();
    let usr1 = main.spawn_local(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut usr1) = signal(SignalKind::user_defined1()) else { return };
        while usr1.recv().await.is_some() {
            tracing::info!("SIGUSR1: reopening access logs");
            let _ = control.send(Control::ReopenAccessLogs);
        }
    })?;
    let result = serve(&main, config, &options, control_rx, |addresses| started(&addresses));
    stopper.abort();
    usr1.abort();
    result
}

/// The main thread's life: start everything, run the loop until stopped,
/// shut everything down.
fn serve(
    main: &Dispatcher,
    config: Config,
    options: &Options,
    mut control: tokio::sync::mpsc::UnboundedReceiver<Control>,
    started: impl FnOnce(Addresses),
) -> Result<(), Error> {
    let workers = config.workers.max(1);
    let mut bound: Vec<BoundListener> =
        config.listeners.iter().map(|l| listener::bind(&l.name, l.address, workers)).collect::<Result<_, _>>()?;
    let admin_socket = std::net::TcpListener::bind(config.admin.address)
        .and_then(|s| s.set_nonblocking(true).map(|()| s))
        .map_err(|source| Error::Bind { address: config.admin.address, what: "admin".into(), source })?;
    let addresses = Addresses {
        listeners: bound.iter().map(|l| (l.name.clone(), l.address)).collect(),
        admin: admin_socket.local_addr().map_err(|source| Error::Bind {
            address: config.admin.address,
            what: "admin".into(),
            source,
        })?,
    };

    let tls = ThreadLocal::new(main);
    // Allocation order is shutdown order reversed: endpoint status is
    // dropped after the config that names its clusters.
    let hosts_slot = tls.allocate_slot::<HostStatus>()?;
    let slot = tls.allocate_slot::<Local>()?;
    let hosts = Hosts::new(hosts_slot.clone(), &config)?;
    let (stores_tx, stores) = std::sync::mpsc::channel();
    let mut sinks = SinkRegistry::new();
    deliver(&slot, Arc::new(Snapshot::new(1, Arc::new(config), None, &mut sinks, options)?), stores_tx)?;
    main.spawn_local(async move {
        while let Some(command) = control.recv().await {
            match command {
                Control::ReopenAccessLogs => sinks.reopen_all(),
            }
        }
    })?;

    let (events_tx, events) = tokio::sync::mpsc::unbounded_channel();
    main.spawn_local(crate::cluster::outlier::run(hosts.clone(), slot.clone(), events))?;
    crate::cluster::health::start(main, &hosts, &slot)?;
    crate::cluster::dns::start(main, &hosts, &slot, options.resolver.clone())?;

    let admin_state = Rc::new(AdminState {
        local: slot.clone(),
        hosts,
        stats: RefCell::new(nuncio_stats::Stats::new()),
        stores,
        ready: std::cell::Cell::new(false),
        set_log_level: options.set_log_level.clone(),
    });
    let state = admin_state.clone();
    // Registering with the event loop needs its runtime: done in the task.
    main.spawn_local(async move {
        match tokio::net::TcpListener::from_std(admin_socket) {
            Ok(socket) => admin::serve(socket, state).await,
            Err(e) => tracing::error!(error = %e, "cannot serve admin"),
        }
    })?;

    // Workers: each gets a dispatcher thread, the slots, and one socket of
    // every listener.
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
    let mut threads = Vec::with_capacity(workers);
    let mut handles = Vec::with_capacity(workers);
    for index in 0..workers {
        let worker_tls = tls.clone();
        let (handle, thread) = Dispatcher::spawn(format!("nuncio-worker-{index}"), move |d| {
            d.run();
            let _ = worker_tls.shutdown_thread();
        })?;
        tls.register_thread(handle.clone())?;
        let sockets: Vec<(String, std::net::TcpListener, Arc<std::sync::atomic::AtomicUsize>)> =
            bound.iter_mut().map(|l| (l.name.clone(), l.sockets.remove(0), l.open.clone())).collect();
        let (slot, hosts_slot, events, ready) = (slot.clone(), hosts_slot.clone(), events_tx.clone(), ready_tx.clone());
        handle.post_with(move |d| {
            let worker = Rc::new(Worker::new(slot, hosts_slot, events));
            let root = Context::background();
            for (name, socket, open) in sockets {
                match tokio::net::TcpListener::from_std(socket) {
                    Ok(socket) => {
                        let _ = d.spawn_local(listener::accept_loop(
                            worker.clone(),
                            name.into(),
                            socket,
                            open,
                            root.clone(),
                        ));
                    }
                    Err(e) => tracing::error!(listener = %name, error = %e, "cannot serve listener"),
                }
            }
            let _ = ready.send(index);
        })?;
        threads.push(thread);
        handles.push(handle);
    }
    drop(ready_tx);
    let all_ready = main.run_until(async {
        let mut count = 0;
        while count < workers && ready_rx.recv().await.is_some() {
            count += 1;
        }
        count == workers
    });
    if all_ready == Some(true) {
        admin_state.ready.set(true);
        tracing::info!(workers, "nuncio is serving");
        started(addresses);
        main.run();
    }

    let _ = tls.shutdown_global_threading();
    for handle in &handles {
        handle.stop();
    }
    for thread in threads {
        let _ = thread.join();
    }
    drop(slot);
    drop(hosts_slot);
    let _ = tls.shutdown_thread();
    Ok(())
}

/// Sends `snapshot` to every thread with a stats store of its own for it;
/// main gets each store through `stores` (the admin sums them).
fn deliver(
    slot: &Slot<Local>,
    snapshot: Arc<Snapshot>,
    stores: std::sync::mpsc::Sender<Arc<Store>>,
) -> Result<(), nuncio_runtime::Error> {
    slot.set(move |d| {
        let worker = d.name().strip_prefix("nuncio-worker-").unwrap_or(d.name());
        let store = Store::new(&snapshot.stats.defs, worker);
        store.worker_gauge_set(snapshot.stats.config_version, i64::try_from(snapshot.version).unwrap_or(i64::MAX));
        let _ = stores.send(store.clone());
        Arc::new(Local { snapshot: snapshot.clone(), stats: store })
    })
}
