//! Changing what a running server serves: a reload (a whole new config)
//! and a drain (finish what is in flight, then stop). Runs on main.
//!
//! # Reload
//!
//! The new config was parsed and validated by the caller (a bad one never
//! gets here: it is counted in `config_reload_failed_total`, and the old
//! config keeps serving). [`ConfigManager::apply`] then:
//!
//! 1. binds the listeners that are new or moved to another address (a port
//!    in use refuses the whole reload, before anything changed);
//! 2. builds one immutable [`Snapshot`] of version V + 1 (clusters whose
//!    config is unchanged are the same `ClusterShared`, so workers keep
//!    their pools; listeners still draining stay in it under their last
//!    settings);
//! 3. reconciles endpoint state (unchanged clusters keep health and
//!    ejections) and restarts health checks and DNS refreshes of changed
//!    clusters;
//! 4. delivers the snapshot through the slot — each thread, main first,
//!    gets it with a stats store of its own — and, in the same order on
//!    each worker, starts the new listeners and drains the removed ones;
//! 5. when every worker has the snapshot, the slot's completion callback
//!    runs on main: the version is recorded as applied and the time since
//!    step 1 is observed in `config_reload_duration_seconds`.
//!
//! A request keeps the snapshot it started with to its end; the next
//! request on the same connection gets the newest. Unchanged listeners
//! keep their sockets and connections.
//!
//! `workers` and `admin` cannot change while running: a reload keeps the
//! running values (and logs that the file's need a restart).
//!
//! # Drain
//!
//! A removed listener (or every listener, on `SIGTERM` / `POST /drain`)
//! stops accepting — its sockets close, so new connections are refused —
//! and its connections finish: idle HTTP/1.1 connections close at once,
//! busy ones answer with `Connection: close`, HTTP/2 ones get `GOAWAY`.
//! After `drain_timeout` whatever is left is closed.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use nuncio_accesslog::SinkRegistry;
use nuncio_config::{Config, ConfigErrors, Listener};
use nuncio_runtime::{Dispatcher, DispatcherHandle, Slot};
use nuncio_stats::Store;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::cluster::hosts::{HostStatus, Hosts};
use crate::error::Error;
use crate::listener;
use crate::options::Options;
use crate::snapshot::{Exporters, Local, Snapshot};

/// How often a watched config file is looked at.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(500);

/// How often a drain looks whether its connections are gone.
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// A reload every worker applied.
#[derive(Debug, Clone)]
pub struct Reloaded {
    /// The config version every worker now serves.
    pub version: u64,
    /// From the new config validated to the last worker serving it.
    pub duration: Duration,
    /// Of `duration`, the part spent on main building the snapshot
    /// (routes compiled, stats declared, sockets bound); the rest is the
    /// delivery to every worker.
    pub build: Duration,
    /// Every listener's bound address, by name (new ones included).
    pub listeners: HashMap<String, SocketAddr>,
}

/// One config change as the admin's live page lists it.
#[derive(Clone, Debug)]
pub(crate) struct ReloadEvent {
    /// When it was applied (every worker serving it) or refused.
    pub(crate) at: std::time::SystemTime,
    /// The version every worker serves since; `None` when refused.
    pub(crate) version: Option<u64>,
    /// From validated to every worker serving it.
    pub(crate) duration: Option<Duration>,
    /// Why it was refused.
    pub(crate) error: Option<String>,
}

/// Config changes kept for the live page, newest last.
const HISTORY: usize = 32;

/// A listener as the live page shows it.
pub(crate) struct ListenerState {
    pub(crate) name: String,
    pub(crate) address: SocketAddr,
    /// Open connections, all workers together.
    pub(crate) connections: usize,
    /// A reload removed it: its connections are finishing.
    pub(crate) draining: bool,
}

/// Main's view of what the workers serve, and the means to change it.
pub(crate) struct ConfigManager {
    main: DispatcherHandle,
    slot: Slot<Local>,
    pub(crate) hosts: Rc<Hosts>,
    options: Options,
    workers: Vec<DispatcherHandle>,
    /// Every thread's stats stores (the admin sums them; each reload
    /// frees those no thread holds any more).
    stats: Rc<crate::stats_book::StatsBook>,
    state: RefCell<State>,
    /// The whole server is draining (`/ready` says so).
    draining: Cell<bool>,
    /// The config file's text as last read (applied or refused): the
    /// watcher reloads only when the file says something else.
    file_text: RefCell<Option<String>>,
    /// The last [`HISTORY`] config changes (the first config included).
    history: RefCell<std::collections::VecDeque<ReloadEvent>>,
}

struct State {
    snapshot: Option<Arc<Snapshot>>,
    sinks: SinkRegistry,
    /// Tracing exporters, one per collector.
    exporters: Exporters,
    /// Listeners in the config, by name.
    listeners: HashMap<String, ServedListener>,
    /// Listeners a reload removed whose connections are finishing.
    draining: HashMap<u64, ServedListener>,
    /// Health-check and DNS tasks, by cluster.
    cluster_tasks: HashMap<String, Vec<JoinHandle<()>>>,
    next_listener_id: u64,
    /// The last version every worker confirmed, and how long it took.
    applied: Option<(u64, Duration)>,
}

/// A listener's sockets as main knows them (the workers serve them).
#[derive(Clone)]
struct ServedListener {
    id: u64,
    config: Listener,
    address: SocketAddr,
    /// Its open connections, all workers together.
    open: Arc<AtomicUsize>,
}

impl ConfigManager {
    /// A manager for `workers` (registered with the slot's `ThreadLocal`),
    /// serving nothing yet: [`ConfigManager::apply`] the first config.
    pub(crate) fn new(
        main: &Dispatcher,
        slot: Slot<Local>,
        hosts_slot: Slot<HostStatus>,
        options: Options,
        workers: Vec<DispatcherHandle>,
        stats: Rc<crate::stats_book::StatsBook>,
    ) -> Result<Rc<ConfigManager>, Error> {
        let hosts = Hosts::new(hosts_slot, std::iter::empty())?;
        let options_text = options.config_path.as_ref().and_then(|p| std::fs::read_to_string(p).ok());
        Ok(Rc::new(ConfigManager {
            main: main.handle(),
            slot,
            hosts,
            options,
            workers,
            stats,
            state: RefCell::new(State {
                snapshot: None,
                sinks: SinkRegistry::new(),
                exporters: Exporters::default(),
                listeners: HashMap::new(),
                draining: HashMap::new(),
                cluster_tasks: HashMap::new(),
                next_listener_id: 0,
                applied: None,
            }),
            draining: Cell::new(false),
            // What the program loaded a moment ago, at start.
            file_text: RefCell::new(options_text),
            history: RefCell::default(),
        }))
    }

    /// The last version every worker confirmed, and how long that reload
    /// took (`None` before the first completes).
    pub(crate) fn applied(&self) -> Option<(u64, Duration)> {
        self.state.borrow().applied
    }

    /// The last config changes, oldest first (the live page).
    pub(crate) fn history(&self) -> Vec<ReloadEvent> {
        self.history.borrow().iter().cloned().collect()
    }

    fn record(&self, event: ReloadEvent) {
        let mut history = self.history.borrow_mut();
        if history.len() == HISTORY {
            history.pop_front();
        }
        history.push_back(event);
    }

    /// Every listener served and draining, by name (the live page).
    pub(crate) fn listener_states(&self) -> Vec<ListenerState> {
        let state = self.state.borrow();
        let serving = state.listeners.values().map(|l| (l, false));
        let draining = state.draining.values().map(|l| (l, true));
        let mut all: Vec<ListenerState> = serving
            .chain(draining)
            .map(|(l, draining)| ListenerState {
                name: l.config.name.clone(),
                address: l.address,
                connections: l.open.load(Ordering::Relaxed),
                draining,
            })
            .collect();
        all.sort_by(|a, b| (&a.name, a.draining).cmp(&(&b.name, b.draining)));
        all
    }

    /// What the embedding program gave.
    pub(crate) fn options(&self) -> &Options {
        &self.options
    }

    /// Reopens every access-log file (after logrotate moved them).
    pub(crate) fn reopen_access_logs(&self) {
        self.state.borrow().sinks.reopen_all();
    }

    /// The metadata of every TLS file the running config names.
    pub(crate) fn tls_fingerprint(&self) -> nuncio_tls::Fingerprint {
        let state = self.state.borrow();
        let Some(snapshot) = &state.snapshot else { return nuncio_tls::Fingerprint::default() };
        nuncio_tls::Fingerprint::of(tls_files(&snapshot.config).iter().map(|p| p.as_path()))
    }

    /// Whether the whole server is draining.
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.get()
    }

    /// Every listener's bound address, by name.
    pub(crate) fn addresses(&self) -> HashMap<String, SocketAddr> {
        self.state.borrow().listeners.iter().map(|(name, l)| (name.clone(), l.address)).collect()
    }

    /// Makes `config` (validated) what every worker serves; see the module
    /// doc. Resolves once every worker serves it. An error leaves the old
    /// config serving, untouched.
    pub(crate) fn apply(self: &Rc<Self>, mut config: Config) -> Result<oneshot::Receiver<Reloaded>, Error> {
        // "Validation done" is now: the clock of the reload starts here.
        let started = Instant::now();
        if self.draining.get() {
            return Err(Error::Draining);
        }
        let mut guard = self.state.borrow_mut();
        let state = &mut *guard;
        let previous = state.snapshot.clone();
        if let Some(previous) = &previous {
            keep_restart_only_settings(&mut config, &previous.config);
        }
        let workers = self.workers.len();

        // 1. Sockets for new and moved listeners: the only step that can
        // fail for reasons outside the config, so it goes first.
        let mut bound = Vec::new();
        for l in &config.listeners {
            let same = state.listeners.get(&l.name).is_some_and(|s| s.config.address == l.address);
            if !same {
                bound.push((l.clone(), listener::bind(&l.name, l.address, workers)?));
            }
        }
        let leaving: Vec<ServedListener> = state
            .listeners
            .values()
            .filter(|s| !config.listeners.iter().any(|l| l.name == s.config.name && l.address == s.config.address))
            .cloned()
            .collect();

        // 2. The snapshot. Listeners still draining keep their settings.
        let version = previous.as_ref().map_or(1, |p| p.version + 1);
        let draining: Vec<Listener> = state.draining.values().chain(&leaving).map(|l| l.config.clone()).collect();
        // Exporters of versions no thread serves any more go first.
        state.exporters.prune();
        let snapshot = Arc::new(Snapshot::new(
            version,
            Arc::new(config),
            previous.as_deref(),
            &mut state.sinks,
            &mut state.exporters,
            &self.options,
            &draining,
        )?);
        let stores = self.stats.sender();
        for store in state.exporters.take_new_stores() {
            let _ = stores.send(store);
        }
        // The stores of snapshots no thread serves any more are freed here,
        // not only when someone reads /stats (see crate::stats_book).
        self.stats.collect();

        // 3. Endpoint state and the tasks that keep it.
        let changed = self.hosts.reconcile(snapshot.clusters.values().map(|c| &c.config))?;
        state.cluster_tasks.retain(|name, tasks| {
            let keep = snapshot.clusters.contains_key(name) && !changed.contains(name);
            if !keep {
                tasks.iter().for_each(JoinHandle::abort);
            }
            keep
        });
        if let Some(main) = Dispatcher::current() {
            for name in &changed {
                let cluster = &snapshot.clusters[name].config;
                let mut tasks = crate::health::checks::start(&main, &self.hosts, &self.slot, cluster)?;
                tasks.extend(crate::cluster::dns::start(&main, &self.hosts, cluster, self.options.resolver.as_ref())?);
                state.cluster_tasks.insert(name.clone(), tasks);
            }
        }

        let build = started.elapsed();

        // 4. The snapshot to every thread, then listener changes (posted
        // after it, so a worker has the listener's settings before it
        // accepts on it).
        let (done_tx, done_rx) = oneshot::channel::<()>();
        deliver(&self.slot, snapshot.clone(), stores, move || {
            let _ = done_tx.send(());
        })?;
        for leaving in leaving {
            state.listeners.remove(&leaving.config.name);
            tracing::info!(listener = %leaving.config.name, address = %leaving.address, "listener removed: draining");
            self.drain_listener(leaving.clone(), snapshot.config.drain_timeout);
            state.draining.insert(leaving.id, leaving);
        }
        for (config, mut sockets) in bound {
            let id = state.next_listener_id;
            state.next_listener_id += 1;
            let served =
                ServedListener { id, config: config.clone(), address: sockets.address, open: sockets.open.clone() };
            for worker in &self.workers {
                let (name, socket, open) = (config.name.clone(), sockets.sockets.remove(0), sockets.open.clone());
                worker.post(move || listener::start(id, &name, socket, open))?;
            }
            if previous.is_some() {
                tracing::info!(listener = %config.name, address = %served.address, "listener added");
            }
            state.listeners.insert(config.name.clone(), served);
        }
        state.snapshot = Some(snapshot);
        drop(guard);

        // 5. Completion: recorded on main when the last worker has it.
        let (reloaded_tx, reloaded_rx) = oneshot::channel();
        let manager = self.clone();
        tokio::task::spawn_local(async move {
            // The replaced snapshot lives until the swap is reported: it
            // may be the last reference, and freeing a big route table
            // here, before main reads the completion, would delay it.
            let previous = previous;
            if done_rx.await.is_err() {
                return; // main stopped meanwhile
            }
            let duration = started.elapsed();
            manager.state.borrow_mut().applied = Some((version, duration));
            manager.record(ReloadEvent {
                at: std::time::SystemTime::now(),
                version: Some(version),
                duration: Some(duration),
                error: None,
            });
            if version > 1 {
                if let Ok(local) = manager.slot.get() {
                    local.stats.inc(local.snapshot.stats.config_reload);
                    local.stats.observe(local.snapshot.stats.config_reload_duration, duration);
                }
                tracing::info!(version, ?duration, "config reloaded: every worker serves it");
            }
            let listeners = manager.addresses();
            let _ = reloaded_tx.send(Reloaded { version, duration, build, listeners });
            // A collector the new version no longer names: its exporter goes
            // once no request holds the old version (or at the next reload).
            drop(previous);
            manager.state.borrow_mut().exporters.prune();
        });
        Ok(reloaded_rx)
    }

    /// A reload that failed before reaching the workers: logged, counted,
    /// and the old config keeps serving.
    pub(crate) fn refused(&self, why: &dyn std::fmt::Display) {
        tracing::error!("config reload refused, the running config keeps serving:\n{why}");
        self.record(ReloadEvent {
            at: std::time::SystemTime::now(),
            version: None,
            duration: None,
            error: Some(why.to_string()),
        });
        if let Ok(local) = self.slot.get() {
            local.stats.inc(local.snapshot.stats.config_reload_failed);
        }
    }

    /// Reads the config file again and applies it (`SIGHUP`, `POST
    /// /config/reload`, a change of the file).
    pub(crate) async fn reload_file(self: &Rc<Self>) -> Result<Reloaded, Error> {
        let Some(path) = self.options.config_path.clone() else {
            return Err(Error::NoConfigFile);
        };
        // Read and validated off main: a slow disk or a big file must not
        // stall admin.
        let kinds = self.options.filter_kinds.clone();
        let read = tokio::task::spawn_blocking(move || {
            let text =
                std::fs::read_to_string(&path).map_err(|e| Error::ReadConfig(format!("{}: {e}", path.display())))?;
            let config = Config::from_yaml_with(&text, &path.display().to_string(), &kinds);
            Ok::<_, Error>((text, config))
        })
        .await
        .map_err(|e| Error::ReadConfig(e.to_string()));
        let (text, config) = match read {
            Ok(Ok(read)) => read,
            Ok(Err(e)) | Err(e) => {
                self.refused(&e);
                return Err(e);
            }
        };
        *self.file_text.borrow_mut() = Some(text);
        self.reload(config).await
    }

    /// Applies a config given as YAML text (`POST /config`).
    pub(crate) async fn reload_text(self: &Rc<Self>, text: &str) -> Result<Reloaded, Error> {
        let config = Config::from_yaml_with(text, "POST /config", &self.options.filter_kinds);
        self.reload(config).await
    }

    /// Applies a parsed config (or counts why there is none).
    pub(crate) async fn reload(self: &Rc<Self>, config: Result<Config, ConfigErrors>) -> Result<Reloaded, Error> {
        let result = match config {
            Err(errors) => Err(Error::Invalid(errors)),
            Ok(config) => match self.apply(config) {
                Err(e) => Err(e),
                Ok(done) => return done.await.map_err(|_| Error::Stopped),
            },
        };
        if let Err(e) = &result {
            self.refused(e);
        }
        result
    }

    /// Starts a graceful shutdown in the background (`SIGTERM`, `POST
    /// /drain`): every listener drains (see [`ConfigManager::drain`]), then
    /// the main loop stops. `/ready` says "draining" from the first moment;
    /// a second call does nothing more.
    pub(crate) fn shut_down(self: &Rc<Self>) {
        if self.draining.replace(true) {
            return;
        }
        let (listeners, timeout) = {
            let state = self.state.borrow();
            let timeout = state.snapshot.as_ref().map_or(Duration::ZERO, |s| s.config.drain_timeout);
            (state.listeners.values().chain(state.draining.values()).cloned().collect::<Vec<_>>(), timeout)
        };
        tracing::info!(?timeout, "draining: no new connections; waiting for those open to finish");
        let manager = self.clone();
        tokio::task::spawn_local(async move {
            manager.drain(&listeners, timeout).await;
            manager.main.stop();
        });
    }

    /// Drains one listener a reload removed, in the background.
    fn drain_listener(self: &Rc<Self>, listener: ServedListener, timeout: Duration) {
        let manager = self.clone();
        tokio::task::spawn_local(async move {
            manager.drain(std::slice::from_ref(&listener), timeout).await;
            manager.state.borrow_mut().draining.remove(&listener.id);
            tracing::info!(listener = %listener.config.name, "listener drained");
        });
    }

    /// The one drain: `listeners` stop accepting and their connections
    /// finish, for at most `timeout`; then what is left is closed.
    async fn drain(&self, listeners: &[ServedListener], timeout: Duration) {
        for listener in listeners {
            self.post_all(listener.id, listener::drain);
        }
        let open = || listeners.iter().map(|l| l.open.load(Ordering::Relaxed)).sum::<usize>();
        let deadline = Instant::now() + timeout;
        while open() > 0 && Instant::now() < deadline {
            tokio::time::sleep(DRAIN_POLL).await;
        }
        let left = open();
        if left > 0 {
            tracing::warn!(connections = left, "drain_timeout passed: closing the connections left");
        }
        for listener in listeners {
            self.post_all(listener.id, listener::close);
        }
    }

    fn post_all(&self, id: u64, f: fn(u64)) {
        for worker in &self.workers {
            let _ = worker.post(move || f(id));
        }
    }
}

/// Reloads when the config file changes: its metadata (modification
/// time, length, inode) is polled every [`WATCH_INTERVAL`]; a change is
/// applied once the file stayed the same for one more poll (an editor or
/// a `ConfigMap` swap writes in steps), and only if its text differs from
/// what was last applied or refused (a `touch` reloads nothing).
///
/// The TLS files the running config names (certificates, keys, CAs) are
/// watched the same way: when one changes (and stays so for a poll), the
/// config file is applied again, whatever its text, which reads and checks
/// every TLS file anew. A bad new certificate is refused like any bad
/// config: the running one serves on, and the next change is tried again.
pub(crate) async fn watch_file(manager: Rc<ConfigManager>) {
    use std::os::unix::fs::MetadataExt;
    let Some(path) = manager.options.config_path.clone() else { return };
    let stamp =
        |path: &std::path::Path| std::fs::metadata(path).ok().map(|m| (m.modified().ok(), m.len(), m.ino(), m.dev()));
    let mut seen = stamp(&path);
    let mut seen_tls = manager.tls_fingerprint();
    let (mut pending, mut pending_tls) = (false, false);
    loop {
        tokio::time::sleep(WATCH_INTERVAL).await;
        let now = stamp(&path);
        let tls = manager.tls_fingerprint();
        if now != seen || tls != seen_tls {
            pending_tls |= tls != seen_tls;
            (seen, seen_tls) = (now, tls);
            pending = true;
            continue;
        }
        if !std::mem::take(&mut pending) {
            continue;
        }
        let tls_changed = std::mem::take(&mut pending_tls);
        let text = std::fs::read_to_string(&path).ok();
        if text.is_none() || (text == *manager.file_text.borrow() && !tls_changed) {
            continue;
        }
        if tls_changed {
            tracing::info!(path = %path.display(), "TLS files changed: reloading the config");
        } else {
            tracing::info!(path = %path.display(), "config file changed: reloading");
        }
        let _ = manager.reload_file().await;
        // The files of the config now serving (a reload may name others).
        seen_tls = manager.tls_fingerprint();
    }
}

/// Every TLS file `config` names.
fn tls_files(config: &Config) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for tls in config.listeners.iter().filter_map(|l| l.tls.as_ref()) {
        for c in &tls.certificates {
            files.extend([c.cert_chain.clone(), c.private_key.clone()]);
        }
        files.extend(tls.client_ca.iter().map(|ca| ca.path.clone()));
    }
    for tls in config.clusters.iter().filter_map(|c| c.tls.as_ref()) {
        files.extend(tls.ca.iter().map(|ca| ca.path.clone()));
        if let Some(c) = &tls.client_certificate {
            files.extend([c.cert_chain.clone(), c.private_key.clone()]);
        }
    }
    files
}

/// `workers` and `admin` need a restart: a reload keeps the running ones.
fn keep_restart_only_settings(config: &mut Config, running: &Config) {
    if config.workers != running.workers {
        tracing::warn!(file = config.workers, running = running.workers, "`workers` changes need a restart; kept");
        config.workers = running.workers;
    }
    if config.admin != running.admin {
        tracing::warn!("`admin` changes need a restart; kept");
        config.admin = running.admin.clone();
    }
}

/// Sends `snapshot` to every thread with a stats store of its own for it
/// (main gets each store through `stores`: the admin sums them), then
/// calls `on_complete` on main once every worker has it. Workers drop the
/// state of clusters it no longer has. The snapshot a thread replaces is
/// freed at the end of that loop turn (deferred drop), after the swap is
/// reported: freeing a big route table must not delay the completion.
pub(crate) fn deliver(
    slot: &Slot<Local>,
    snapshot: Arc<Snapshot>,
    stores: std::sync::mpsc::Sender<Arc<Store>>,
    on_complete: impl FnOnce() + Send + 'static,
) -> Result<(), nuncio_runtime::Error> {
    slot.run_on_all_threads(
        move |current| {
            let Some(d) = Dispatcher::current() else { return };
            let worker = d.name().strip_prefix("nuncio-worker-").unwrap_or(d.name());
            let store = Store::new(&snapshot.stats.defs, worker);
            let version = i64::try_from(snapshot.version).unwrap_or(i64::MAX);
            store.worker_gauge_set(snapshot.stats.config_version, version);
            let _ = stores.send(store.clone());
            if let Some(worker) = crate::worker::Worker::current() {
                worker.retain_clusters(&snapshot);
            }
            if let Some(old) = current.replace(Arc::new(Local::new(snapshot.clone(), store))) {
                d.deferred_drop(old);
            }
        },
        on_complete,
    )
}
