//! Starting and stopping nuncio: main thread, workers, slots, listeners.
//!
//! Main binds every socket (so a bad address fails before anything
//! serves), builds the config snapshot once, hands it to the workers
//! through a slot, gives each worker its own `SO_REUSEPORT` socket per
//! listener, serves admin itself, and on stop shuts the workers down and
//! the slots in reverse order.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use nuncio_config::Config;
use nuncio_runtime::{Dispatcher, DispatcherHandle, ThreadLocal};

use crate::admin::{self, AdminState};
use crate::cluster::hosts::HostStatus;
use crate::error::Error;
use crate::options::Options;
use crate::overload::{Level, Overload};
use crate::reload::{ConfigManager, Reloaded};
use crate::snapshot::Local;
use crate::worker::Worker;

/// Where a running server listens.
#[derive(Debug, Clone)]
pub struct Addresses {
    /// Each listener's bound address, by name (port 0 resolved).
    pub listeners: HashMap<String, SocketAddr>,
    /// The admin listener's bound address.
    pub admin: SocketAddr,
}

/// What can be asked of main from elsewhere (signals, embedding code).
#[derive(Debug)]
pub(crate) enum Control {
    /// Reopen every access-log file (after logrotate moved them).
    ReopenAccessLogs,
    /// Apply this config; say how it went.
    Reload(Box<Config>, std::sync::mpsc::Sender<Result<Reloaded, Error>>),
    /// Read the config file again and apply it (`SIGHUP`).
    ReloadFile,
    /// Drain, then stop (`SIGTERM`).
    Drain,
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
                let result = serve(&main, config, options, control_rx, started);
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

    /// Replaces the running config with `config` (validated, e.g. by
    /// `Config::from_yaml_with`) and returns once every worker serves it.
    /// On error the running config keeps serving. New listeners' addresses
    /// are in the answer (and in [`RunningServer::listener`] after).
    pub fn reload(&mut self, config: Config) -> Result<Reloaded, Error> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.control.send(Control::Reload(Box::new(config), tx)).map_err(|_| Error::Stopped)?;
        let reloaded = rx.recv().map_err(|_| Error::Stopped)??;
        self.addresses.listeners.clone_from(&reloaded.listeners);
        Ok(reloaded)
    }

    /// Starts a graceful drain (what `SIGTERM` does for the binary): no new
    /// connections, those open finish within `drain_timeout`, then the
    /// server stops. [`RunningServer::wait`] returns when it has.
    pub fn drain(&self) {
        let _ = self.control.send(Control::Drain);
    }

    /// Waits until the server stopped by itself (after a drain).
    pub fn wait(mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
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

/// Runs nuncio with the calling thread as main until it stops: when
/// `until` completes (at once, as `SIGINT` does), or after a drain.
/// `started` is called once every worker serves.
///
/// Signals: `SIGTERM` drains (no new connections, those open finish
/// within `drain_timeout`) then returns; a second `SIGTERM` or a `SIGINT`
/// stops at once. `SIGHUP` reloads the config file
/// ([`Options::config_path`]); `SIGUSR1` reopens the access logs.
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
    let signals = main.spawn_local(watch_signals(control, main.handle()))?;
    let result = serve(&main, config, options, control_rx, |addresses| started(&addresses));
    stopper.abort();
    signals.abort();
    result
}

/// Turns signals into [`Control`]s (a signal that cannot be watched is
/// logged and never fires).
async fn watch_signals(control: tokio::sync::mpsc::UnboundedSender<Control>, main: DispatcherHandle) {
    use tokio::signal::unix::{SignalKind, signal};
    let watch = |kind: SignalKind, name: &'static str| {
        signal(kind).inspect_err(|e| tracing::warn!(signal = name, error = %e, "cannot watch signal")).ok()
    };
    async fn next(signal: &mut Option<tokio::signal::unix::Signal>) {
        match signal {
            Some(signal) => {
                signal.recv().await;
            }
            None => std::future::pending().await,
        }
    }
    let (mut term, mut int) = (watch(SignalKind::terminate(), "SIGTERM"), watch(SignalKind::interrupt(), "SIGINT"));
    let (mut hup, mut usr1) = (watch(SignalKind::hangup(), "SIGHUP"), watch(SignalKind::user_defined1(), "SIGUSR1"));
    let mut terms = 0;
    loop {
        tokio::select! {
            () = next(&mut term) => {
                terms += 1;
                if terms > 1 {
                    tracing::info!("second SIGTERM: stopping now");
                    main.stop();
                } else {
                    tracing::info!("SIGTERM: draining (SIGINT or another SIGTERM stops at once)");
                    let _ = control.send(Control::Drain);
                }
            }
            () = next(&mut int) => {
                tracing::info!("SIGINT: stopping now");
                main.stop();
            }
            () = next(&mut hup) => {
                tracing::info!("SIGHUP: reloading the config file");
                let _ = control.send(Control::ReloadFile);
            }
            () = next(&mut usr1) => {
                tracing::info!("SIGUSR1: reopening access logs");
                let _ = control.send(Control::ReopenAccessLogs);
            }
        }
    }
}

/// The main thread's life: start everything, run the loop until stopped,
/// shut everything down.
fn serve(
    main: &Dispatcher,
    config: Config,
    options: Options,
    mut control: tokio::sync::mpsc::UnboundedReceiver<Control>,
    started: impl FnOnce(Addresses),
) -> Result<(), Error> {
    let workers = config.workers.max(1);
    let admin_socket = std::net::TcpListener::bind(config.admin.address)
        .and_then(|s| s.set_nonblocking(true).map(|()| s))
        .map_err(|source| Error::Bind { address: config.admin.address, what: "admin".into(), source })?;
    let admin_address = admin_socket.local_addr().map_err(|source| Error::Bind {
        address: config.admin.address,
        what: "admin".into(),
        source,
    })?;

    let tls = ThreadLocal::new(main);
    // Allocation order is shutdown order reversed: endpoint status is
    // dropped after the config that names its clusters.
    let hosts_slot = tls.allocate_slot::<HostStatus>()?;
    let slot = tls.allocate_slot::<Local>()?;
    let (events_tx, events) = tokio::sync::mpsc::unbounded_channel();
    let overload = Arc::new(Overload::default());

    // Workers: each a dispatcher thread with the slots; listeners come
    // with the first config.
    let mut threads = Vec::with_capacity(workers);
    let mut handles = Vec::with_capacity(workers);
    for index in 0..workers {
        let worker_tls = tls.clone();
        let (handle, thread) = Dispatcher::spawn(format!("nuncio-worker-{index}"), move |d| {
            d.run();
            Worker::uninstall();
            let _ = worker_tls.shutdown_thread();
        })?;
        tls.register_thread(handle.clone())?;
        let (slot, hosts_slot, events) = (slot.clone(), hosts_slot.clone(), events_tx.clone());
        let overload = overload.clone();
        handle.post(move || Worker::install(slot, hosts_slot, events, overload))?;
        threads.push(thread);
        handles.push(handle);
    }
    drop(events_tx);
    let stop_workers = |threads: Vec<std::thread::JoinHandle<()>>| {
        let _ = tls.shutdown_global_threading();
        for handle in &handles {
            handle.stop();
        }
        for thread in threads {
            let _ = thread.join();
        }
    };

    let stats = Rc::new(crate::stats_book::StatsBook::new());
    let watch = options.watch_config;
    let manager = ConfigManager::new(main, slot.clone(), hosts_slot.clone(), options, handles.clone(), stats.clone())?;
    // The first config goes the way every reload does.
    let first = main.run_until(async {
        let done = manager.apply(config)?;
        done.await.map_err(|_| Error::StartAborted)
    });
    let first = match first {
        Some(Ok(first)) => first,
        Some(Err(e)) => {
            stop_workers(threads);
            return Err(e);
        }
        None => {
            stop_workers(threads);
            return Err(Error::StartAborted);
        }
    };
    let addresses = Addresses { listeners: first.listeners, admin: admin_address };

    main.spawn_local(crate::health::outlier::run(manager.hosts.clone(), slot.clone(), events))?;
    main.spawn_local(watch_overload(overload.clone(), slot.clone()))?;
    let admin_state = Rc::new(AdminState {
        local: slot.clone(),
        manager: manager.clone(),
        stats,
        ready: std::cell::Cell::new(true),
        overload,
        set_log_level: manager.options().set_log_level.clone(),
        started: std::time::Instant::now(),
    });
    // Registering with the event loop needs its runtime: done in the task.
    main.spawn_local(async move {
        match tokio::net::TcpListener::from_std(admin_socket) {
            Ok(socket) => admin::serve(socket, admin_state).await,
            Err(e) => tracing::error!(error = %e, "cannot serve admin"),
        }
    })?;
    let commands = manager.clone();
    main.spawn_local(async move {
        while let Some(command) = control.recv().await {
            handle_control(&commands, command);
        }
    })?;
    if watch {
        main.spawn_local(crate::reload::watch_file(manager.clone()))?;
    }

    tracing::info!(workers, "nuncio is serving");
    started(addresses);
    main.run();

    stop_workers(threads);
    drop(manager);
    drop(slot);
    drop(hosts_slot);
    let _ = tls.shutdown_thread();
    Ok(())
}

/// Acts on one [`Control`], on main.
fn handle_control(manager: &Rc<ConfigManager>, command: Control) {
    match command {
        Control::ReopenAccessLogs => manager.reopen_access_logs(),
        Control::Reload(config, reply) => {
            let manager = manager.clone();
            tokio::task::spawn_local(async move {
                let _ = reply.send(manager.reload(Ok(*config)).await);
            });
        }
        Control::ReloadFile => {
            let manager = manager.clone();
            tokio::task::spawn_local(async move {
                let _ = manager.reload_file().await;
            });
        }
        Control::Drain => manager.shut_down(),
    }
}

/// Samples the process's memory for overload protection and keeps the
/// `overload_level` gauge current (on main, for as long as it runs).
async fn watch_overload(overload: Arc<Overload>, local: nuncio_runtime::Slot<Local>) {
    let mut last = None;
    loop {
        overload.sample_memory();
        if let Ok(local) = local.get() {
            let level = overload.level(&local.snapshot.config.overload);
            if last != Some(level) {
                if level != Level::Normal {
                    let (connections, memory) = overload.readings();
                    tracing::warn!(?level, connections, memory, "overloaded");
                } else if last.is_some() {
                    tracing::info!("no longer overloaded");
                }
                last = Some(level);
            }
            local.stats.gauge_set(local.snapshot.stats.overload_level, level as i64);
        }
        tokio::time::sleep(crate::overload::SAMPLE_EVERY).await;
    }
}
