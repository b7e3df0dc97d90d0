//! nuncio in this process ([`Proxy`]), and what every running nuncio has:
//! an admin listener to read stats and endpoints from ([`Admin`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use nuncio_config::Config;
use nuncio_proxy::{FilterFactory, FilterKinds, Options, RunningServer};

use crate::TIMEOUT;
use crate::client::{Reply, exchange, get};
use crate::upstream::Upstream;

/// nuncio running in this process, stopped when dropped. Tests name their
/// listener `main`.
pub struct Proxy {
    server: RunningServer,
    /// The filter kinds its configs are checked against.
    kinds: FilterKinds,
}

impl Proxy {
    /// Starts nuncio from `yaml` (see [`test_config`]).
    pub fn start(yaml: &str, addresses: &[(&str, SocketAddr)]) -> Proxy {
        Proxy::start_with(yaml, addresses, Options::default())
    }

    /// [`Proxy::start`] with `options` (filter chains, filter kinds the
    /// config may name, a resolver...).
    pub fn start_with(yaml: &str, addresses: &[(&str, SocketAddr)], options: Options) -> Proxy {
        let kinds = options.filter_kinds.clone();
        let config = test_config_with(yaml, addresses, &kinds);
        Proxy { server: RunningServer::start_with(config, options).expect("nuncio starts"), kinds }
    }

    /// nuncio with one catch-all route to `upstream`.
    pub fn to(upstream: &Upstream) -> Proxy {
        Proxy::start(&catch_all("", "", "    endpoints: [ '{app}' ]"), &[("app", upstream.addr)])
    }

    /// nuncio with `workers` workers whose listener `main` runs `filters`,
    /// in order, in front of one catch-all route to `upstream`.
    pub fn with_filters(upstream: &Upstream, workers: usize, filters: Vec<Arc<dyn FilterFactory>>) -> Proxy {
        let mut options = Options::default();
        options.filters.insert("main".to_owned(), filters.into());
        let yaml = format!("workers: {workers}\n{}", catch_all("", "", "    endpoints: [ '{app}' ]"));
        Proxy::start_with(&yaml, &[("app", upstream.addr)], options)
    }

    /// The address of listener `main`.
    pub fn addr(&self) -> SocketAddr {
        self.listener("main")
    }

    /// The address of listener `name`.
    pub fn listener(&self, name: &str) -> SocketAddr {
        self.server.listener(name).unwrap_or_else(|| panic!("no listener {name}"))
    }

    /// `GET path` with hyper on a new connection to listener `main`.
    pub fn get(&self, path: &str) -> Reply {
        get(self.addr(), path)
    }

    /// Sends `bytes` on a new raw connection to listener `main` and reads
    /// one response.
    pub fn exchange(&self, bytes: impl AsRef<[u8]>) -> Reply {
        exchange(self.addr(), bytes)
    }

    /// What `SIGUSR1` does to the binary.
    pub fn reopen_access_logs(&self) {
        self.server.reopen_access_logs();
    }

    /// Replaces the config with `yaml` (as [`Proxy::start`] reads it);
    /// returns once every worker serves it.
    pub fn reload(&mut self, yaml: &str, addresses: &[(&str, SocketAddr)]) -> nuncio_proxy::Reloaded {
        let config = test_config_with(yaml, addresses, &self.kinds);
        self.server.reload(config).expect("the reload is applied")
    }

    /// The running server.
    pub fn server(&self) -> &RunningServer {
        &self.server
    }

    /// The running server, to stop or wait for.
    pub fn into_server(self) -> RunningServer {
        self.server
    }
}

impl Admin for Proxy {
    fn admin(&self) -> SocketAddr {
        self.server.addresses().admin
    }
}

/// The YAML of one listener, `main`, whose one route sends every request to
/// cluster `app`: `listener`, `route` and `cluster` are the further fields
/// of each (YAML lines at their indentation: 4, 8 and 4 spaces), the
/// cluster's `endpoints` among them. For [`Proxy::start`]:
///
/// ```text
/// catch_all("", "        timeout: 2s", "    endpoints: [ '{app}' ]")
/// ```
pub fn catch_all(listener: &str, route: &str, cluster: &str) -> String {
    let lines = |fields: &str| {
        let fields = fields.trim_matches('\n');
        if fields.is_empty() { String::new() } else { format!("{fields}\n") }
    };
    let (listener, route, cluster) = (lines(listener), lines(route), lines(cluster));
    format!(
        "listeners:
  - name: main
    address: 127.0.0.1:0
{listener}    routes:
      - match: {{}}
        cluster: app
{route}clusters:
  - name: app
{cluster}"
    )
}

/// `yaml` with each `{name}` replaced by its address, admin on
/// `127.0.0.1:0` and 2 workers unless it says otherwise, parsed (a file
/// named `test.yaml`) with no filter kinds.
pub fn test_config(yaml: &str, addresses: &[(&str, SocketAddr)]) -> Config {
    test_config_with(yaml, addresses, &FilterKinds::default())
}

/// [`test_config`], the listeners' `filters` checked against `kinds`.
pub fn test_config_with(yaml: &str, addresses: &[(&str, SocketAddr)], kinds: &FilterKinds) -> Config {
    let mut yaml = with_addresses(yaml, addresses);
    if !yaml.contains("admin:") {
        yaml.insert_str(0, "admin: { address: 127.0.0.1:0 }\n");
    }
    if !yaml.contains("workers:") {
        yaml.insert_str(0, "workers: 2\n");
    }
    Config::from_yaml_with(&yaml, "test.yaml", kinds).unwrap_or_else(|e| panic!("bad test config:\n{e}\n{yaml}"))
}

/// `yaml` with each `{name}` replaced by its address.
pub fn with_addresses(yaml: &str, addresses: &[(&str, SocketAddr)]) -> String {
    let mut yaml = yaml.to_owned();
    for (name, address) in addresses {
        yaml = yaml.replace(&format!("{{{name}}}"), &address.to_string());
    }
    yaml
}

/// A running nuncio's admin listener ([`Proxy`] in this process,
/// [`Process`](crate::Process) in another): stats and endpoint state,
/// read over HTTP as an operator would.
pub trait Admin {
    /// The admin address.
    fn admin(&self) -> SocketAddr;

    /// `GET path` on the admin listener.
    fn admin_get(&self, path: &str) -> Reply {
        exchange(self.admin(), format!("GET {path} HTTP/1.1\r\nHost: admin\r\n\r\n"))
    }

    /// The `/stats` text.
    fn stats(&self) -> String {
        let reply = self.admin_get("/stats");
        assert_eq!(reply.status, 200, "{}", reply.text());
        reply.text()
    }

    /// The value on the `/stats` line of `series` (`name` or
    /// `name{labels}`, exactly as written there), `None` when there is no
    /// such line.
    fn stat(&self, series: &str) -> Option<String> {
        let prefix = format!("{series}: ");
        self.stats().lines().find_map(|line| line.strip_prefix(&prefix).map(str::to_owned))
    }

    /// Waits (at most [`TIMEOUT`]) until `/stats` has every line of
    /// `expected` (`series: value`), and fails listing the missing ones if
    /// it never does. Workers count a request as its stream ends, which a
    /// client may see after its response.
    fn wait_for_stats<S: AsRef<str>>(&self, expected: &[S]) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let text = self.stats();
            let missing: Vec<&str> =
                expected.iter().map(AsRef::as_ref).filter(|line| !text.lines().any(|l| l == *line)).collect();
            if missing.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "after {TIMEOUT:?}, /stats lacks {missing:#?}\n/stats:\n{text}");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// `field` of endpoint `endpoint` in cluster `cluster`, read from
    /// `/clusters` (text: `cluster::endpoint::field::value` lines).
    fn endpoint_field(&self, cluster: &str, endpoint: SocketAddr, field: &str) -> String {
        let reply = self.admin_get("/clusters");
        assert_eq!(reply.status, 200, "{}", reply.text());
        let prefix = format!("{cluster}::{endpoint}::{field}::");
        let text = reply.text();
        text.lines()
            .find_map(|line| line.strip_prefix(&prefix).map(str::to_owned))
            .unwrap_or_else(|| panic!("no {prefix} line in /clusters:\n{text}"))
    }

    /// Waits (at most [`TIMEOUT`]) until `/clusters` shows `value` for
    /// `field` of `endpoint`.
    fn wait_for_endpoint(&self, cluster: &str, endpoint: SocketAddr, field: &str, value: &str) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let now = self.endpoint_field(cluster, endpoint, field);
            if now == value {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "after {TIMEOUT:?}, {cluster}::{endpoint}::{field} is {now}, not {value}"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
