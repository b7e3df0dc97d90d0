//! The stock `nuncio` binary: nuncio's command line with the built-in
//! filters. A program with filters of its own is this file plus
//! `.filter_kind(...)` (see the `nuncio` library and examples/filter-example).

use std::process::ExitCode;

fn main() -> ExitCode {
    nuncio::Command::new().run()
}
