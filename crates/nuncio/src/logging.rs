//! The process's log: `tracing` events to stderr, as text (the default)
//! or one JSON object a line (`--log-format json`), at a level admin can
//! change at run time.
//!
//! A line logged while a request is worked on says which request:
//! `request_id=…` (and `trace_id=…` when the request is traced), read
//! from the thread's current request (`nuncio_trace::current_log_ids`,
//! which the stream sets around each poll of its future). Nothing is
//! added to lines about no request.
//!
//! JSON lines (keys in this order, `request_id` and `trace_id` only when
//! known, then the event's own fields):
//!
//! ```text
//! {"timestamp":"2026-12-04T18:03:44.123456Z","level":"DEBUG","target":"nuncio_proxy::cluster",
//!  "thread":"nuncio-worker-1","message":"upstream connect failed","request_id":"req-42",
//!  "trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","endpoint":0,"address":"127.0.0.1:9","error":"..."}
//! ```

use std::fmt::{self, Write as _};
use std::sync::Arc;

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{DefaultFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// `TIMESTAMP LEVEL message key=value ...`, colored on a terminal.
    Text,
    /// One JSON object a line.
    Json,
}

/// Logs to stderr at `level` in `format`; the returned hook changes the
/// level at run time (admin `POST /logging?level=`).
pub(crate) fn init(level: LevelFilter, format: LogFormat) -> nuncio_proxy::LogLevelHook {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let (filter, handle) = tracing_subscriber::reload::Layer::new(level);
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => {
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let fmt = tracing_subscriber::fmt::layer()
                .with_target(false)
                .with_ansi(ansi)
                .fmt_fields(WithLogIds(DefaultFields::new()))
                .with_writer(std::io::stderr);
            registry.with(fmt).init();
        }
        LogFormat::Json => {
            let fmt = tracing_subscriber::fmt::layer().event_format(Json).with_writer(std::io::stderr);
            registry.with(fmt).init();
        }
    }
    Arc::new(move |name: &str| {
        let level: tracing::Level =
            name.parse().map_err(|_| format!("unknown level `{name}`: use trace, debug, info, warn or error"))?;
        handle.modify(|filter| *filter = LevelFilter::from_level(level)).map_err(|e| e.to_string())
    })
}

/// The text format's fields, then the request's ids.
struct WithLogIds(DefaultFields);

impl<'writer> FormatFields<'writer> for WithLogIds {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        self.0.format_fields(writer.by_ref(), fields)?;
        if let Some(ids) = nuncio_trace::current_log_ids() {
            if let Some(id) = ids.request_id() {
                write!(writer, " request_id={id}")?;
            }
            if let Some(trace) = ids.trace_id() {
                write!(writer, " trace_id={trace}")?;
            }
        }
        Ok(())
    }
}

/// One JSON object a line (see the module docs).
struct Json;

impl<S, N> FormatEvent<S, N> for Json
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let meta = event.metadata();
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let mut line = String::with_capacity(256);
        line.push('{');
        pair(&mut line, "timestamp", &timestamp, false);
        pair(&mut line, "level", meta.level().as_str(), true);
        pair(&mut line, "target", meta.target(), true);
        if let Some(thread) = std::thread::current().name() {
            pair(&mut line, "thread", thread, true);
        }
        let mut fields = Fields { message: None, rest: String::new() };
        event.record(&mut fields);
        pair(&mut line, "message", fields.message.as_deref().unwrap_or(""), true);
        if let Some(ids) = nuncio_trace::current_log_ids() {
            if let Some(id) = ids.request_id() {
                pair(&mut line, "request_id", id, true);
            }
            if let Some(trace) = ids.trace_id() {
                pair(&mut line, "trace_id", &trace.to_string(), true);
            }
        }
        line.push_str(&fields.rest);
        line.push('}');
        writeln!(writer, "{line}")
    }
}

/// `"key":"value"` (with a comma before unless `first`), both escaped.
fn pair(line: &mut String, key: &str, value: &str, comma: bool) {
    if comma {
        line.push(',');
    }
    let _ = write!(line, "{}:{}", quoted(key), quoted(value));
}

fn quoted(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

/// An event's message, and its other fields as `,"key":value` JSON.
struct Fields {
    message: Option<String>,
    rest: String,
}

impl Fields {
    fn raw(&mut self, field: &Field, json: &str) {
        let _ = write!(self.rest, ",{}:{json}", quoted(field.name()));
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = Some(value.to_owned());
        } else {
            self.raw(field, &quoted(value));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        self.record_str(field, &text);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.raw(field, &value.to_string());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.raw(field, &value.to_string());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.raw(field, &value.to_string());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.raw(field, &serde_json::Value::from(value).to_string());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let text = value.to_string();
        self.record_str(field, &text);
    }
}
