//! The `nuncio` command line as a library, so that a program with filters
//! of its own ships nuncio's whole command line plus its filter kinds,
//! without copying it.
//!
//! ```text
//! nuncio [--listen ADDR]               built-in default: a page on 127.0.0.1:8080
//! nuncio --upstream http://HOST:PORT   proxy everything to one service
//! nuncio -c nuncio.yaml                (also: nuncio run -c nuncio.yaml)
//! nuncio validate -c nuncio.yaml       exit 0 and a summary, or 1 and every error
//! ```
//!
//! The stock binary is `nuncio::Command::new().run()`. A binary with its own
//! filters adds their kinds; a config may then name them in a listener's
//! `filters:` list, and `validate` checks their `config:` blocks like the
//! rest, naming line and field:
//!
//! ```no_run
//! use std::process::ExitCode;
//! use std::sync::Arc;
//!
//! use nuncio_filter::{ConfigError, Filter, FilterFactory, FilterKind};
//!
//! /// A filter that lets everything through (every hook defaults to `Continue`).
//! struct Noop;
//! impl Filter for Noop {}
//!
//! /// `filters: [ { name: noop } ]`: one `Noop` per stream.
//! struct NoopKind;
//! impl FilterKind for NoopKind {
//!     fn name(&self) -> &'static str {
//!         "noop"
//!     }
//!     fn configure(&self, _config: serde_json::Value) -> Result<Arc<dyn FilterFactory>, ConfigError> {
//!         Ok(Arc::new(NoopKind))
//!     }
//! }
//! impl FilterFactory for NoopKind {
//!     fn name(&self) -> &str {
//!         "noop"
//!     }
//!     fn create(&self) -> Box<dyn Filter> {
//!         Box::new(Noop)
//!     }
//! }
//!
//! fn main() -> ExitCode {
//!     nuncio::Command::new().filter_kind(NoopKind).run()
//! }
//! ```
//!
//! examples/filter-example is a whole crate built this way (an async
//! filter, its config type, its binary and config), and docs/filters.md
//! walks through it.

// A command line prints to stdout; that is its job.
#![allow(clippy::print_stdout)]

mod logging;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use logging::LogFormat;
use nuncio_config::Config;
use nuncio_filter::FilterKind;
use nuncio_proxy::FilterKinds;
use tracing::level_filters::LevelFilter;

/// nuncio's command line with a set of filter kinds: the built-in ones
/// (`nuncio-filters`) and any a program adds.
///
/// Every subcommand and flag works the same whatever the kinds; they only
/// change which names a config's `filters:` lists may use, for `run` and
/// `validate` alike.
#[derive(Clone)]
pub struct Command {
    kinds: Vec<Arc<dyn FilterKind>>,
}

impl Command {
    /// The stock command: the built-in filter kinds (`nuncio-filters`),
    /// and `go`, which runs filters from a Go library
    /// (`nuncio-filter-abi`; nuncio needs no Go to build or run, only the
    /// library a config names).
    pub fn new() -> Command {
        let mut kinds = nuncio_filters::builtin();
        kinds.push(Arc::new(nuncio_filter_abi::GoKind));
        Command { kinds }
    }

    /// Adds a filter kind the config may name. A kind with the name of one
    /// already there (built-in or added) replaces it: the last one added
    /// wins, so a program can swap a built-in for its own version.
    #[must_use]
    pub fn filter_kind(mut self, kind: impl FilterKind) -> Command {
        self.kinds.push(Arc::new(kind));
        self
    }

    /// Parses the process's arguments and runs what they say: the proxy
    /// (until SIGINT or SIGTERM) or `validate`, returning the process's
    /// exit code. `--help`, `--version` and usage errors are answered by
    /// clap, which exits the process itself (0, or 2 for a usage error),
    /// as the stock binary always did.
    ///
    /// Call it once, from the process's main thread: running the proxy
    /// makes the calling thread nuncio's main thread until shutdown, and
    /// installs the process's logger.
    pub fn run(self) -> ExitCode {
        let cli = Cli::parse();
        let kinds = self.kinds();
        match cli.command {
            Some(Action::Validate { config }) => validate(&config, &kinds),
            Some(Action::Run(args)) => run(&args, kinds),
            None => run(&cli.run, kinds),
        }
    }

    /// The kinds as the config and the server take them.
    fn kinds(self) -> FilterKinds {
        FilterKinds::new(self.kinds)
    }
}

impl Default for Command {
    fn default() -> Command {
        Command::new()
    }
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Command")
            .field("filter_kinds", &self.kinds.iter().map(|k| k.name()).collect::<Vec<_>>())
            .finish()
    }
}

/// nuncio: an HTTP reverse proxy.
#[derive(Debug, Parser)]
#[command(name = "nuncio", version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Action>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Run the proxy (the default).
    Run(RunArgs),
    /// Check a config file and exit: 0 and a one-line summary when valid,
    /// 1 and every error (FILE:LINE:COL: FIELD: MESSAGE) otherwise.
    Validate {
        /// The config file.
        #[arg(short = 'c', long = "config", value_name = "FILE")]
        config: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The YAML config file (see docs/config.md). Without one, nuncio serves
    /// a built-in page, or proxies to --upstream.
    #[arg(short = 'c', long = "config", value_name = "FILE", conflicts_with = "upstream")]
    config: Option<PathBuf>,
    /// Proxy every request to this service, e.g. http://127.0.0.1:3000.
    #[arg(long, value_name = "URL")]
    upstream: Option<String>,
    /// Where to listen, with --upstream or for the built-in page (no
    /// config): default 127.0.0.1:8080; port 0 picks a free one.
    #[arg(long, value_name = "ADDR", conflicts_with = "config")]
    listen: Option<SocketAddr>,
    /// Where the admin listener binds, overriding the config's
    /// `admin.address` (default 127.0.0.1:9901; port 0 picks a free one).
    #[arg(long, value_name = "ADDR")]
    admin: Option<SocketAddr>,
    /// Worker threads (default: the config's `workers`, else one per core).
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// Log level: error, warn, info, debug or trace.
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    log_level: LevelFilter,
    /// Log lines as text, or one JSON object a line. Either way a line
    /// about a request carries its request id (and trace id).
    #[arg(long, value_name = "FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
}

/// Where `--upstream` listens without `--listen`.
const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 8080));

fn validate(path: &std::path::Path, kinds: &FilterKinds) -> ExitCode {
    match Config::load_with(path, kinds) {
        Ok(config) => {
            let routes: usize = config.listeners.iter().map(|l| l.routes.len()).sum();
            println!(
                "{}: valid: {} listener(s), {} route(s), {} cluster(s), {} worker(s)",
                path.display(),
                config.listeners.len(),
                routes,
                config.clusters.len(),
                config.workers
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &RunArgs, kinds: FilterKinds) -> ExitCode {
    let set_log_level = logging::init(args.log_level, args.log_format);
    let config = match (&args.config, &args.upstream) {
        (Some(path), _) => Config::load_with(path, &kinds),
        (None, Some(url)) => Config::single_upstream(url, args.listen.unwrap_or(DEFAULT_LISTEN)),
        (None, None) => {
            let mut config = Config::builtin_default();
            if let Some(listen) = args.listen {
                config.listeners[0].address = listen;
            }
            Ok(config)
        }
    };
    let mut config = match config {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(workers) = args.workers {
        config.workers = workers.max(1);
    }
    if let Some(admin) = args.admin {
        // The flag gets the file's rule: admin changes state, so it stays on
        // loopback unless the config says `admin.allow_remote: true`.
        if !admin.ip().is_loopback() && !config.admin.allow_remote {
            eprintln!(
                "nuncio: --admin {admin} is not a loopback address; admin can change nuncio's state, \
                 so set admin.allow_remote: true in a config file to expose it"
            );
            return ExitCode::FAILURE;
        }
        config.admin.address = admin;
    }
    let mut options = nuncio_proxy::Options::default();
    options.set_log_level = Some(set_log_level);
    options.filter_kinds = kinds;
    // SIGHUP, admin POST /config/reload and edits of the file reload it.
    options.watch_config = args.config.is_some();
    options.config_path.clone_from(&args.config);
    // Signals are the proxy's: SIGTERM drains, SIGINT stops at once.
    let result = nuncio_proxy::run(config, options, std::future::pending::<()>(), |addresses| {
        let mut listeners: Vec<_> = addresses.listeners.iter().collect();
        listeners.sort();
        for (name, address) in listeners {
            tracing::info!("listener {name} on http://{address}");
        }
        tracing::info!("admin on http://{}", addresses.admin);
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nuncio: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use nuncio_config::FilterCatalog;
    use nuncio_filter::{ConfigError, FilterFactory};
    use serde_json::json;

    use super::*;

    /// A kind named like a built-in, which tells its checks apart from the
    /// built-in's by refusing every config block with a message of its own.
    struct MyHeaders;

    impl FilterKind for MyHeaders {
        fn name(&self) -> &'static str {
            "headers"
        }

        fn configure(&self, _config: serde_json::Value) -> Result<Arc<dyn FilterFactory>, ConfigError> {
            Err(ConfigError::at("", "checked by MyHeaders"))
        }
    }

    #[test]
    fn an_added_kind_joins_the_builtins_and_replaces_one_of_the_same_name() {
        let builtin_names = Command::new().kinds().names();
        let kinds = Command::new().filter_kind(MyHeaders).kinds();
        assert_eq!(kinds.names(), builtin_names, "same names, none twice");
        // A block the built-in would accept: the added kind checks it.
        let block = json!({ "response": { "remove": ["server"] } });
        assert!(Command::new().kinds().check("headers", &block).is_ok());
        let error = kinds.check("headers", &block).unwrap_err();
        assert!(format!("{error:?}").contains("checked by MyHeaders"), "{error:?}");
    }
}
