//! `nuncio-example`: nuncio's whole command line (`run`, `validate`,
//! `--upstream`, the built-in default) with the built-in filters plus this
//! crate's `fault`.
//!
//! ```text
//! cargo run -p nuncio-filter-example -- validate -c examples/filter-example/nuncio.yaml
//! cargo run -p nuncio-filter-example -- -c examples/filter-example/nuncio.yaml
//! ```

use std::process::ExitCode;

fn main() -> ExitCode {
    nuncio::Command::new().filter_kind(nuncio_filter_example::FaultKind).run()
}
