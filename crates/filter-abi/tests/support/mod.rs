//! What the Go filter tests add to `nuncio-test-support`: the test library
//! (sdk/go/internal/testfilters, built by the test run), nuncio in this
//! process with the `go` kind, and the live counts that must come back to
//! zero.

#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use nuncio_config::Config;
use nuncio_filter_abi::GoKind;
use nuncio_proxy::{FilterKinds, Options};
pub use nuncio_test_support::*;

/// The library of sdk/go/internal/testfilters (every scenario's filter),
/// with `nuncio.TestIDs` (tag `nunciotest`); `None` without Go.
pub fn test_library() -> Option<PathBuf> {
    go::library("sdk/go/internal/testfilters", "testfilters", &["-tags", "nunciotest"], env!("CARGO_TARGET_TMPDIR"))
}

/// Runs the tests of one binary one at a time: they share the process's
/// library and its live counts.
pub fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The filter kinds these tests run with: the `go` kind.
pub fn kinds() -> FilterKinds {
    FilterKinds::new(vec![Arc::new(GoKind)])
}

/// nuncio in this process from `yaml` (`{name}` placeholders for
/// addresses), with the `go` kind.
pub fn start(yaml: &str, addresses: &[(&str, std::net::SocketAddr)]) -> Proxy {
    let mut options = Options::default();
    options.filter_kinds = kinds();
    Proxy::start_with(yaml, addresses, options)
}

/// `yaml` checked as the `nuncio` command checks a file named
/// `nuncio.yaml`: the errors as it prints them.
pub fn load(yaml: &str) -> Result<Config, String> {
    Config::from_yaml_with(yaml, "nuncio.yaml", &kinds()).map_err(|e| e.to_string())
}

/// Waits until nuncio and the library hold nothing for any stream.
pub fn wait_until_idle() {
    wait_until("every stream, Go call and goroutine is gone", || {
        nuncio_filter_abi::live_streams() == 0
            && nuncio_filter_abi::library_stats().is_none_or(|s| s.streams == 0 && s.calls == 0 && s.goroutines == 0)
    });
}

/// The process's resident memory, in KiB.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
