//! The stock `nuncio` binary: nuncio's command line with the built-in
//! filters. A program with filters of its own is this file plus
//! `.filter_kind(...)` (see the `nuncio` library and examples/filter-example).

use std::process::ExitCode;

/// mimalloc instead of the system allocator: a proxied request allocates a
/// dozen times (header maps, the stream's future, buffers), and with
/// mimalloc the request path runs ~10 % fewer instructions than with
/// glibc's malloc (docs/benchmarks.md, "Optimization pass"). Built without
/// transparent huge pages (`no_thp`), which otherwise added ~8 MiB of
/// resident memory at rest. The `mimalloc` feature (default) turns it on;
/// without it, heap profilers see every allocation (tests/shared_writes.rs).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    nuncio::Command::new().run()
}
