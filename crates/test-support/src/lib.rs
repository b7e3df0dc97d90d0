//! Fixtures for nuncio's integration tests (a dev-dependency only): a test
//! reads as its scenario — start an upstream, start nuncio with this
//! config, send this, expect that — over real sockets on 127.0.0.1.
//!
//! - nuncio in this process: [`Proxy`] (from YAML, with `{name}`
//!   placeholders for addresses, [`catch_all`] for the usual one-route
//!   config; [`Proxy::with_filters`] for filter chains), or as a process: [`Process`] (any binary built on the
//!   `nuncio` library: its readiness line is waited for and its addresses
//!   read from its log; killed on drop, its log shown if the test failed).
//!   Both read their admin listener through [`Admin`] (`/stats`,
//!   `/clusters`).
//! - Upstreams: [`Upstream`] (hyper's HTTP/1.1 and h2c echo servers, one
//!   steered by a [`Control`], raw ones scripted byte by byte, a scripted
//!   service answering with an [`Answer`]); each records what it receives.
//!   [`dead_address`] refuses connections, [`Blackhole`] never completes
//!   them.
//! - A browser: [`Browser`], headless Chromium over the DevTools protocol
//!   (navigate, evaluate, screenshot).
//! - An OTLP/HTTP collector: [`Collector`] records what nuncio exports and
//!   decodes it with the `opentelemetry-proto` crate ([`ExportedSpan`]).
//! - Clients: [`Client`] (hyper, keep-alive), [`RawClient`] (exact bytes),
//!   the one-shot [`get`] and [`exchange`], and [`h2raw::RawH2`] for HTTP/2
//!   frames written byte by byte (floods, bad frames).
//! - TLS: [`Pki`] (a CA of the test's own and what it signs, as PEM files:
//!   nothing downloaded), [`Upstream::echo_tls`], [`tls_get`] (a rustls
//!   client that reports the handshake), [`Nginx`] as a TLS upstream, and
//!   [`run`] for curl, `openssl s_client` and Python.
//! - Go filter libraries built by the test run: [`go::library`] (a note
//!   and `None` without Go, unless `NUNCIO_REQUIRE_GO=1`).
//!
//! No test sleeps for an event: it waits for it — a request at the
//! upstream ([`Upstream::wait_for_requests`]), a stats line
//! ([`Admin::wait_for_stats`]), a log line ([`Process::wait_for_log`]),
//! anything else with [`wait_until`] — for at most [`TIMEOUT`] (a process:
//! [`PROCESS_TIMEOUT`]), generous enough for a loaded 2-core machine. No
//! test uses a fixed port: everything binds `127.0.0.1:0`.
//!
//! ```no_run
//! use nuncio_test_support::{Admin, Proxy, Upstream};
//!
//! let upstream = Upstream::echo("app");
//! let proxy = Proxy::start(
//!     "
//! listeners:
//!   - name: main
//!     address: 127.0.0.1:0
//!     routes:
//!       - match: { prefix: / }
//!         cluster: app
//! clusters:
//!   - name: app
//!     endpoints: [ '{app}' ]
//! ",
//!     &[("app", upstream.addr)],
//! );
//!
//! let reply = proxy.get("/hello");
//!
//! assert_eq!((reply.status, reply.header("x-upstream")), (200, "app"));
//! assert_eq!(upstream.last_request().target, "/hello");
//! proxy.wait_for_stats(&["nuncio_downstream_rq_total: 1"]);
//! ```

use std::sync::LazyLock;
use std::time::{Duration, Instant};

mod browser;
mod client;
pub mod go;
pub mod h2raw;
mod http;
mod otlp;
mod process;
mod proxy;
mod tls;
mod upstream;

pub use browser::Browser;
pub use client::{Client, RawClient, Reply, exchange, get, get_in_background};
pub use otlp::{Collector, ExportedSpan, parse_traceparent};
pub use process::{PROCESS_TIMEOUT, Process, Scratch};
pub use proxy::{Admin, Proxy, catch_all, test_config, test_config_with, with_addresses};
pub use tls::{
    CertFiles, Nginx, Output, Pki, TlsReply, client_config, client_config_full_handshakes, run, tls_get, try_tls_get,
};
pub use upstream::{Answer, Blackhole, Control, RawConn, Seen, Upstream, dead_address};

/// The longest any single wait in a test may take (a read, a response, an
/// upstream seeing a request). Generous: a loaded 2-core machine must keep
/// it.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The runtime upstream servers and the hyper client run on (shared by
/// every test of a test binary; the tests themselves are synchronous).
pub fn rt() -> &'static tokio::runtime::Runtime {
    static RT: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("test runtime")
    });
    &RT
}

/// Waits until `condition` holds, checking every 10 ms, at most
/// [`TIMEOUT`]; `what` names it in the failure.
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !condition() {
        assert!(Instant::now() < deadline, "waited {TIMEOUT:?} for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}
