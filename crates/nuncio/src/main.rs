//! The `nuncio` command: run the proxy, or check a config.
//!
//! ```text
//! nuncio                               built-in default: a page on 127.0.0.1:8080
//! nuncio --upstream http://HOST:PORT   proxy everything to one service
//! nuncio -c nuncio.yaml                (also: nuncio run -c nuncio.yaml)
//! nuncio validate -c nuncio.yaml       exit 0 and a summary, or 1 and every error
//! ```

// A command line prints to stdout; that is its job.
#![allow(clippy::print_stdout)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use nuncio_config::Config;
use tracing::level_filters::LevelFilter;

/// nuncio: an HTTP reverse proxy.
#[derive(Debug, Parser)]
#[command(name = "nuncio", version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
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
    /// Where to listen with --upstream.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080", requires = "upstream")]
    listen: SocketAddr,
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Validate { config }) => validate(&config),
        Some(Command::Run(args)) => run(&args),
        None => run(&cli.run),
    }
}

fn validate(path: &std::path::Path) -> ExitCode {
    match Config::load_with(path, &filter_kinds()) {
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

fn run(args: &RunArgs) -> ExitCode {
    let set_log_level = init_logging(args.log_level);
    let config = match (&args.config, &args.upstream) {
        (Some(path), _) => Config::load_with(path, &filter_kinds()),
        (None, Some(url)) => Config::single_upstream(url, args.listen),
        (None, None) => Ok(Config::builtin_default()),
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
    options.filter_kinds = filter_kinds();
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

/// The filters a config may name: the built-in ones (`nuncio-filters`). A
/// program with filters of its own adds its kinds here (see
/// examples/filter-example).
fn filter_kinds() -> nuncio_proxy::FilterKinds {
    nuncio_proxy::FilterKinds::new(nuncio_filters::builtin())
}

/// Logs to stderr at `level`; the returned hook changes the level at run
/// time (admin `POST /logging?level=`).
fn init_logging(level: LevelFilter) -> nuncio_proxy::LogLevelHook {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (filter, handle) = tracing_subscriber::reload::Layer::new(level);
    let fmt = tracing_subscriber::fmt::layer().with_target(false).with_ansi(ansi).with_writer(std::io::stderr);
    tracing_subscriber::registry().with(filter).with(fmt).init();
    std::sync::Arc::new(move |name: &str| {
        let level: tracing::Level =
            name.parse().map_err(|_| format!("unknown level `{name}`: use trace, debug, info, warn or error"))?;
        handle.modify(|filter| *filter = LevelFilter::from_level(level)).map_err(|e| e.to_string())
    })
}
