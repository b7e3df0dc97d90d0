//! Go filter libraries for the tests that run Go filters: built with
//! `go build -buildmode=c-shared` by the test run itself, once per test
//! process and library (a nuncio of another test may have the file loaded:
//! it is never rewritten under it).
//!
//! Without a Go toolchain [`library`] prints a note and answers `None`, and
//! the test returns early (a Rust-only developer's `cargo test` passes);
//! with `NUNCIO_REQUIRE_GO=1` (CI) a missing toolchain fails the test.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

/// The Go toolchain: `$NUNCIO_GO`, `go` on the `PATH`, or Debian's
/// `/usr/lib/go-1.23/bin/go`.
pub fn go_binary() -> Option<PathBuf> {
    if let Some(go) = std::env::var_os("NUNCIO_GO") {
        return Some(PathBuf::from(go));
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("go"))
        .find(|p| p.is_file())
        .or_else(|| Some(PathBuf::from("/usr/lib/go-1.23/bin/go")).filter(|p| p.is_file()))
}

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("the repository's root")
}

/// The c-shared library of the Go main package at `package` (a path from
/// the repository's root), built into `out_dir` (a test's
/// `env!("CARGO_TARGET_TMPDIR")`) as `lib<name>.so` with `extra` `go
/// build` arguments; `None` without a Go toolchain (see the module docs).
/// No Go module is downloaded (`GOPROXY=off`): the SDK is reached by a
/// `replace` to its path.
pub fn library(package: &str, name: &str, extra: &[&str], out_dir: &str) -> Option<PathBuf> {
    static BUILT: OnceLock<Mutex<HashMap<String, Option<PathBuf>>>> = OnceLock::new();
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    let key = format!("{package} {name} {extra:?}");
    if let Some(path) = built.get(&key) {
        return path.clone();
    }
    let path = build(package, name, extra, out_dir);
    built.insert(key, path.clone());
    path
}

fn build(package: &str, name: &str, extra: &[&str], out_dir: &str) -> Option<PathBuf> {
    let Some(go) = go_binary() else {
        assert!(
            std::env::var("NUNCIO_REQUIRE_GO").as_deref() != Ok("1"),
            "NUNCIO_REQUIRE_GO=1 but no Go toolchain was found (set NUNCIO_GO, put `go` on the PATH, or install \
             golang-1.23-go from bookworm-backports: see the README, \"Filters in Go\")"
        );
        eprintln!("note: no Go toolchain found: skipping this Go filter test (see the README, \"Filters in Go\")");
        return None;
    };
    let out = Path::new(out_dir).join("go").join(format!("lib{name}.so"));
    std::fs::create_dir_all(out.parent().expect("a directory")).expect("create the output directory");
    let started = Instant::now();
    let output = Command::new(&go)
        .current_dir(repo().join(package))
        .args(["build", "-buildmode=c-shared", "-o"])
        .arg(&out)
        .args(extra)
        .arg(".")
        .env("GOFLAGS", "-mod=mod")
        .env("GOPROXY", "off")
        .env("GOTOOLCHAIN", "local")
        .env("GOWORK", "off")
        .env("CGO_ENABLED", "1")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", go.display()));
    assert!(
        output.status.success(),
        "go build of {package} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("built {} in {:?}", out.display(), started.elapsed());
    Some(out)
}
