//! nuncio's access log: one line per finished stream, in Envoy's format
//! language, written by a thread of its own so that no worker ever waits
//! for a disk.
//!
//! A [`Format`] is parsed once from the config. When a stream ends, its
//! worker fills a [`Record`] (borrowing the stream's own state) and hands
//! it to a [`Sink`], which renders the line and queues it to the sink's
//! writer thread.
//!
//! # Format language
//!
//! A text format is literal text with `%COMMAND%` or `%COMMAND(arg)%`
//! fields; `%%` is a literal `%`; a newline is added at the end if missing.
//! A field whose value is unknown renders `-`. The commands, named as in
//! Envoy:
//!
//! | command | renders |
//! |---|---|
//! | `%START_TIME%` | [`Record::start_time`], RFC 3339 UTC with milliseconds: `2026-11-23T14:05:01.123Z` |
//! | `%REQ(name)%` | the request field `name` (any case; the first value if repeated); also `:METHOD`, `:PATH`, `:AUTHORITY`, `:SCHEME`. `%REQ(A?B)%` is `A`, else `B`; `%REQ(name):N%` keeps the first `N` bytes. `REQUEST_HEADER` is an alias |
//! | `%RESP(name)%` | the response field `name`, with `?` and `:N` as for `REQ`. `RESPONSE_HEADER` is an alias |
//! | `%PROTOCOL%` | `HTTP/1.0`, `HTTP/1.1`, `HTTP/2`, `HTTP/3` |
//! | `%RESPONSE_CODE%` | the status sent downstream; `0` when none was sent (as Envoy) |
//! | `%RESPONSE_FLAGS%` | [`ResponseFlags`]: `UT,URX`, or `-` |
//! | `%BYTES_RECEIVED%`, `%BYTES_SENT%` | body bytes from and to the client |
//! | `%DURATION%` | total milliseconds, start to end of stream |
//! | `%RESPONSE_DURATION%` | milliseconds until the response head was sent downstream |
//! | `%UPSTREAM_SERVICE_TIME%` | milliseconds from sending the request upstream to its response head (what Envoy puts in `x-envoy-upstream-service-time`; nuncio-only) |
//! | `%UPSTREAM_HOST%` | the upstream `ip:port` |
//! | `%UPSTREAM_CLUSTER%`, `%ROUTE_NAME%` | the cluster's and route's names |
//! | `%DOWNSTREAM_REMOTE_ADDRESS%` | the client's `ip:port` |
//! | `%UPSTREAM_TRANSPORT_FAILURE_REASON%` | why connecting upstream failed |
//! | `%UPSTREAM_REQUEST_ATTEMPT_COUNT%` | how many times the request went upstream (`0` when never), hedged tries included |
//! | `%UPSTREAM_HEDGE_WON%` | `1` when a hedged try (one started beside a try past its per-try timeout) answered, `0` when the first try did although hedges were started, `-` when none was (nuncio-only) |
//! | `%CONNECTION_ID%` | the downstream connection's id |
//!
//! The default is [`DEFAULT_FORMAT`], Envoy's default format. A JSON format
//! ([`Format::json`]) maps keys, in order, to templates; a template that is
//! one command alone renders typed (a number for numeric commands, `null`
//! when unknown), any other renders as an escaped string.
//!
//! # Threading
//!
//! * [`Format`] and [`SinkRegistry`] are built on main; a [`Format`] is
//!   read-only afterwards and can be shared with every worker.
//! * On a worker, [`Sink::log`] renders into a line buffer taken from a
//!   lock-free pool and `try_send`s it to the writer thread, which returns
//!   it to the pool once written: no lock, no wait, no system call (the
//!   writer polls every [`FLUSH_INTERVAL`] rather than being woken), and in
//!   steady state no allocation. A full channel drops the line and counts
//!   it ([`Sink::dropped`]).
//! * Each sink's writer thread owns the file; main asks it to reopen
//!   ([`SinkRegistry::reopen_all`] on SIGUSR1) and drops the last handle at
//!   shutdown, which flushes and joins it.
//!
//! # Example
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use nuncio_accesslog::{Format, Record, ResponseFlags, SinkRegistry, Target};
//!
//! let dir = std::env::temp_dir().join(format!("nuncio-accesslog-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let path = dir.join("access.log");
//!
//! // Main: parse the format, open the sink.
//! let format = Format::text("%RESPONSE_CODE% %RESPONSE_FLAGS% %REQ(:PATH)%").unwrap();
//! let mut sinks = SinkRegistry::new();
//! let sink = sinks.get(&Target::File(path.clone())).unwrap();
//!
//! // A worker, when a stream ends.
//! let record = Record {
//!     path: Some("/nowhere"),
//!     status: Some(http::StatusCode::NOT_FOUND),
//!     flags: ResponseFlags::NO_ROUTE_FOUND,
//!     duration: Duration::from_millis(2),
//!     ..Record::new(SystemTime::now())
//! };
//! assert!(sink.log(&format, &record));
//!
//! // Main, at shutdown: the last handle flushes and joins the writer.
//! drop(sink);
//! drop(sinks);
//! assert_eq!(std::fs::read_to_string(&path).unwrap(), "404 NR /nowhere\n");
//! # std::fs::remove_dir_all(&dir).unwrap();
//! ```

mod error;
mod format;
mod record;
mod sink;

pub use error::FormatError;
pub use format::{DEFAULT_FORMAT, Format};
pub use record::{Record, ResponseFlags};
pub use sink::{DEFAULT_CAPACITY, FLUSH_INTERVAL, SHUTDOWN_TIMEOUT, Sink, SinkRegistry, Target};
