//! The format language: parsed once on main, rendered on workers.

use std::io::Write;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, Version, header};
use serde::{Serialize, Serializer};

use crate::{FormatError, Record, ResponseFlags};

/// The format used when none is configured: Envoy's default, with two
/// adaptations. `%REQ(:PATH)%` replaces `%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%`
/// because [`Record::path`] is already the path as the client sent it, and
/// `%UPSTREAM_SERVICE_TIME%` replaces `%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%`
/// (same meaning, `-` when no upstream answered) because nuncio sets no
/// such header.
pub const DEFAULT_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(:PATH)% %PROTOCOL%\" \
    %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% \
    %UPSTREAM_SERVICE_TIME% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \
    \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\"\n";

/// A parsed access-log format: text with `%COMMAND%` fields, or JSON.
///
/// Built once on main (from the config); [`render`](Format::render) runs on
/// the workers and only reads it. See the crate docs for the commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    /// As written, for [`Serialize`].
    source: FormatSource,
    compiled: Compiled,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum FormatSource {
    Text(String),
    Json(Vec<(String, String)>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Compiled {
    Text(Vec<Part>),
    Json(Vec<JsonField>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    /// Copied as is (already JSON-escaped inside a JSON format).
    Literal(Box<str>),
    Command(Command),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct JsonField {
    /// `{"key":` for the first field, `,"key":` after it.
    prefix: Box<str>,
    value: JsonValue,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum JsonValue {
    /// The template is exactly one command: numbers stay numbers and a
    /// missing value is `null`, as Envoy does.
    Typed(Command),
    /// Anything else renders as one string, with `-` for missing values.
    Text(Vec<Part>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Command {
    StartTime,
    Req(Lookup),
    Resp(Lookup),
    Protocol,
    ResponseCode,
    ResponseFlags,
    BytesReceived,
    BytesSent,
    Duration,
    ResponseDuration,
    UpstreamServiceTime,
    UpstreamHost,
    UpstreamCluster,
    RouteName,
    DownstreamRemoteAddress,
    UpstreamTransportFailureReason,
    UpstreamRequestAttemptCount,
    UpstreamHedgeWon,
    ConnectionId,
}

/// `REQ(first?fallback):max_len`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Lookup {
    first: Field,
    fallback: Option<Field>,
    max_len: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Field {
    Method,
    Path,
    Authority,
    Scheme,
    Header(HeaderName),
}

/// One command's value for one record, borrowed from it.
#[derive(Clone, Copy)]
enum Value<'r> {
    Missing,
    Bytes(&'r [u8]),
    Number(u64),
    Time(SystemTime),
    Flags(ResponseFlags),
    Addr(SocketAddr),
}

impl Format {
    /// A text format (one line per stream; a newline is added if missing).
    pub fn text(template: &str) -> Result<Format, FormatError> {
        let mut parts = parse(template, false)?;
        if !template.ends_with('\n') {
            parts.push(Part::Literal("\n".into()));
        }
        Ok(Format { source: FormatSource::Text(template.to_owned()), compiled: Compiled::Text(parts) })
    }

    /// A JSON format: one object per line, keys in the given order, each
    /// key's value rendered from its template.
    pub fn json(fields: &[(String, String)]) -> Result<Format, FormatError> {
        let mut compiled = Vec::with_capacity(fields.len());
        for (i, (key, template)) in fields.iter().enumerate() {
            if fields[..i].iter().any(|(k, _)| k == key) {
                return Err(FormatError(format!("key `{key}` appears twice")));
            }
            let parts = parse(template, true).map_err(|e| FormatError(format!("key `{key}`: {}", e.0)))?;
            let value = match parts.as_slice() {
                [Part::Command(command)] => JsonValue::Typed(command.clone()),
                _ => JsonValue::Text(parts),
            };
            let mut prefix = Vec::with_capacity(key.len() + 4);
            prefix.extend_from_slice(if i == 0 { b"{\"" } else { b",\"" });
            escape_json(&mut prefix, key.as_bytes());
            prefix.extend_from_slice(b"\":");
            let prefix = String::from_utf8(prefix).expect("escape_json writes UTF-8");
            compiled.push(JsonField { prefix: prefix.into(), value });
        }
        Ok(Format { source: FormatSource::Json(fields.to_vec()), compiled: Compiled::Json(compiled) })
    }

    /// Envoy's default text format, adapted to nuncio: [`DEFAULT_FORMAT`].
    pub fn default_text() -> Format {
        Format::text(DEFAULT_FORMAT).expect("the default format parses")
    }

    /// Appends one line (newline included) for `record` to `out`.
    ///
    /// Runs on the worker that ran the stream: it allocates nothing beyond
    /// `out`'s growth, so a buffer reused across streams makes it
    /// allocation-free.
    pub fn render(&self, record: &Record<'_>, out: &mut Vec<u8>) {
        match &self.compiled {
            Compiled::Text(parts) => render_parts(parts, record, out, false),
            Compiled::Json(fields) => {
                if fields.is_empty() {
                    out.push(b'{');
                }
                for field in fields {
                    out.extend_from_slice(field.prefix.as_bytes());
                    match &field.value {
                        JsonValue::Typed(command) => match command.value(record) {
                            Value::Missing => out.extend_from_slice(b"null"),
                            Value::Number(n) => write_u64(out, n),
                            value => {
                                out.push(b'"');
                                write_value(out, value, true);
                                out.push(b'"');
                            }
                        },
                        JsonValue::Text(parts) => {
                            out.push(b'"');
                            render_parts(parts, record, out, true);
                            out.push(b'"');
                        }
                    }
                }
                out.extend_from_slice(b"}\n");
            }
        }
    }
}

impl Default for Format {
    /// [`Format::default_text`].
    fn default() -> Format {
        Format::default_text()
    }
}

impl Serialize for Format {
    /// As written in the config (a string, or a mapping for JSON).
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.source {
            FormatSource::Text(t) => s.serialize_str(t),
            FormatSource::Json(fields) => s.collect_map(fields.iter().map(|(k, v)| (k, v))),
        }
    }
}

fn render_parts(parts: &[Part], record: &Record<'_>, out: &mut Vec<u8>, json: bool) {
    for part in parts {
        match part {
            Part::Literal(text) => out.extend_from_slice(text.as_bytes()),
            Part::Command(command) => write_value(out, command.value(record), json),
        }
    }
}

impl Command {
    fn value<'r>(&self, r: &Record<'r>) -> Value<'r> {
        let opt_ms = |d: Option<std::time::Duration>| d.map_or(Value::Missing, |d| Value::Number(millis(d)));
        let opt_str = |s: Option<&'r str>| s.map_or(Value::Missing, |s| Value::Bytes(s.as_bytes()));
        let opt_addr = |a: Option<SocketAddr>| a.map_or(Value::Missing, Value::Addr);
        match self {
            Command::StartTime => Value::Time(r.start_time),
            Command::Req(lookup) => lookup.find(r, r.request_headers),
            Command::Resp(lookup) => lookup.find(r, r.response_headers),
            Command::Protocol => match r.version.and_then(protocol) {
                Some(p) => Value::Bytes(p.as_bytes()),
                None => Value::Missing,
            },
            Command::ResponseCode => Value::Number(r.status.map_or(0, |s| u64::from(s.as_u16()))),
            Command::ResponseFlags => Value::Flags(r.flags),
            Command::BytesReceived => Value::Number(r.bytes_received),
            Command::BytesSent => Value::Number(r.bytes_sent),
            Command::Duration => Value::Number(millis(r.duration)),
            Command::ResponseDuration => opt_ms(r.response_duration),
            Command::UpstreamServiceTime => opt_ms(r.upstream_service_time),
            Command::UpstreamHost => opt_addr(r.upstream_host),
            Command::UpstreamCluster => opt_str(r.upstream_cluster),
            Command::RouteName => opt_str(r.route_name),
            Command::DownstreamRemoteAddress => opt_addr(r.downstream_remote_address),
            Command::UpstreamTransportFailureReason => opt_str(r.upstream_transport_failure_reason),
            Command::UpstreamRequestAttemptCount => Value::Number(u64::from(r.upstream_request_attempt_count)),
            Command::UpstreamHedgeWon => {
                r.upstream_hedge_won.map_or(Value::Missing, |won| Value::Number(u64::from(won)))
            }
            Command::ConnectionId => r.connection_id.map_or(Value::Missing, Value::Number),
        }
    }
}

impl Lookup {
    fn find<'r>(&self, r: &Record<'r>, headers: Option<&'r HeaderMap>) -> Value<'r> {
        let found = self.first.get(r, headers).or_else(|| self.fallback.as_ref()?.get(r, headers));
        match found {
            Some(v) => Value::Bytes(&v[..v.len().min(self.max_len.unwrap_or(usize::MAX))]),
            None => Value::Missing,
        }
    }
}

impl Field {
    /// The first value of a repeated header, like `HeaderMap::get`.
    fn get<'r>(&self, r: &Record<'r>, headers: Option<&'r HeaderMap>) -> Option<&'r [u8]> {
        let header = |name: &HeaderName| headers?.get(name).map(|v| v.as_bytes());
        match self {
            Field::Method => r.method.map(|m| m.as_str().as_bytes()),
            Field::Path => r.path.map(str::as_bytes),
            Field::Authority => r.authority.map(str::as_bytes).or_else(|| header(&header::HOST)),
            Field::Scheme => r.scheme.map(str::as_bytes),
            Field::Header(name) => header(name),
        }
    }
}

fn protocol(v: Version) -> Option<&'static str> {
    Some(match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => return None,
    })
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn write_value(out: &mut Vec<u8>, value: Value<'_>, json: bool) {
    match value {
        Value::Missing => out.push(b'-'),
        Value::Bytes(b) if json => escape_json(out, b),
        Value::Bytes(b) => out.extend_from_slice(b),
        Value::Number(n) => write_u64(out, n),
        Value::Time(t) => write_time(out, t),
        Value::Flags(f) if f.is_empty() => out.push(b'-'),
        Value::Flags(f) => {
            for (i, code) in f.codes().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(code.as_bytes());
            }
        }
        // An address needs no JSON escaping.
        Value::Addr(a) => write_addr(out, a),
    }
}

/// `ip:port`, or `[ip]:port` for IPv6. IPv4 is written by hand: `Display`
/// for `SocketAddr` costs more than the rest of a line.
fn write_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(v4) => {
            for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                write_u64(out, u64::from(octet));
            }
            out.push(b':');
            write_u64(out, u64::from(v4.port()));
        }
        // Writing to a Vec cannot fail.
        SocketAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

fn write_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// RFC 3339 in UTC with milliseconds, Envoy's default `%START_TIME%`:
/// `2026-11-23T14:05:01.123Z`.
fn write_time(out: &mut Vec<u8>, t: SystemTime) {
    // Before 1970 only with a broken clock; the epoch says so plainly.
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days(secs / 86_400);
    if year > 9999 {
        // Not a date a real clock shows; say so rather than misalign.
        out.push(b'-');
        return;
    }
    let sod = secs % 86_400;
    let ms = u64::from(since.subsec_millis());
    // Filled in one go: one length check instead of one per byte.
    let mut text = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, n: u64, width: usize| {
        let mut n = n;
        for i in (at..at + width).rev() {
            text[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
    };
    put(0, year, 4);
    put(5, month, 2);
    put(8, day, 2);
    put(11, sod / 3600, 2);
    put(14, sod / 60 % 60, 2);
    put(17, sod % 60, 2);
    put(20, ms, 3);
    out.extend_from_slice(&text);
}

/// (year, month, day) of a day count since 1970-01-01, in the proleptic
/// Gregorian calendar (Howard Hinnant's `civil_from_days`, for days >= 0).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Appends `bytes` as the inside of a JSON string. Header values may hold
/// bytes that are not UTF-8; each such run becomes U+FFFD so the line stays
/// valid JSON.
fn escape_json(out: &mut Vec<u8>, bytes: &[u8]) {
    for chunk in bytes.utf8_chunks() {
        let valid = chunk.valid().as_bytes();
        let mut start = 0;
        for (i, &b) in valid.iter().enumerate() {
            let escaped: &[u8] = match b {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b'\t' => b"\\t",
                0..0x20 => b"",
                _ => continue,
            };
            out.extend_from_slice(&valid[start..i]);
            if escaped.is_empty() {
                let _ = write!(out, "\\u{b:04x}");
            } else {
                out.extend_from_slice(escaped);
            }
            start = i + 1;
        }
        out.extend_from_slice(&valid[start..]);
        if !chunk.invalid().is_empty() {
            out.extend_from_slice("\u{fffd}".as_bytes());
        }
    }
}

/// Splits a template into literals and commands. Literals are JSON-escaped
/// here when `json`, so rendering copies them as they are.
fn parse(template: &str, json: bool) -> Result<Vec<Part>, FormatError> {
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut pos = 0;
    while let Some(found) = template[pos..].find('%') {
        let start = pos + found;
        literal.push_str(&template[pos..start]);
        let rest = &template[start + 1..];
        if rest.starts_with('%') {
            literal.push('%');
            pos = start + 2;
            continue;
        }
        let column = template[..start].chars().count() + 1;
        let name_len = rest.bytes().take_while(|b| b.is_ascii_alphanumeric() || *b == b'_').count();
        let name = &rest[..name_len];
        let err = |what: &str| {
            let shown = if name.is_empty() { "%".to_owned() } else { format!("%{name}%") };
            FormatError(format!("`{shown}` at column {column}: {what}"))
        };
        if name.is_empty() {
            return Err(err("not a command (write `%%` for a literal percent sign)"));
        }
        let mut rest = &rest[name_len..];
        let mut arg = None;
        if let Some(after) = rest.strip_prefix('(') {
            let close = after.find(')').ok_or_else(|| err("missing `)`"))?;
            arg = Some(&after[..close]);
            rest = &after[close + 1..];
        }
        let mut max_len = None;
        if let Some(after) = rest.strip_prefix(':') {
            let digits = after.bytes().take_while(u8::is_ascii_digit).count();
            let n = after[..digits].parse().map_err(|_| err("`:` must be followed by a length"))?;
            max_len = Some(n);
            rest = &after[digits..];
        }
        if !rest.starts_with('%') {
            return Err(err("missing the closing `%`"));
        }
        pos = template.len() - rest.len() + 1;
        let command = command(name, arg, max_len).map_err(err)?;
        if !literal.is_empty() {
            parts.push(Part::Literal(literal_part(&literal, json)));
            literal.clear();
        }
        parts.push(Part::Command(command));
    }
    literal.push_str(&template[pos..]);
    if !literal.is_empty() {
        parts.push(Part::Literal(literal_part(&literal, json)));
    }
    Ok(parts)
}

fn literal_part(literal: &str, json: bool) -> Box<str> {
    if !json {
        return literal.into();
    }
    let mut escaped = Vec::with_capacity(literal.len());
    escape_json(&mut escaped, literal.as_bytes());
    String::from_utf8(escaped).expect("escape_json writes UTF-8").into()
}

/// One command from its name, `(argument)` and `:length`; the error says
/// what is wrong with it (the caller adds where).
fn command(name: &str, arg: Option<&str>, max_len: Option<usize>) -> Result<Command, &'static str> {
    let command = match name {
        "REQ" | "REQUEST_HEADER" | "RESP" | "RESPONSE_HEADER" => {
            let request = name.starts_with("REQ");
            let arg = arg.ok_or("needs a header name, e.g. `%REQ(user-agent)%`")?;
            let (first, fallback) = match arg.split_once('?') {
                Some((first, fallback)) => (first, Some(fallback)),
                None => (arg, None),
            };
            let first = field(first, request)?;
            let fallback = fallback.map(|f| field(f, request)).transpose()?;
            let lookup = Lookup { first, fallback, max_len };
            return Ok(if request { Command::Req(lookup) } else { Command::Resp(lookup) });
        }
        "START_TIME" => Command::StartTime,
        "PROTOCOL" => Command::Protocol,
        "RESPONSE_CODE" => Command::ResponseCode,
        "RESPONSE_FLAGS" => Command::ResponseFlags,
        "BYTES_RECEIVED" => Command::BytesReceived,
        "BYTES_SENT" => Command::BytesSent,
        "DURATION" => Command::Duration,
        "RESPONSE_DURATION" => Command::ResponseDuration,
        "UPSTREAM_SERVICE_TIME" => Command::UpstreamServiceTime,
        "UPSTREAM_HOST" => Command::UpstreamHost,
        "UPSTREAM_CLUSTER" => Command::UpstreamCluster,
        "ROUTE_NAME" => Command::RouteName,
        "DOWNSTREAM_REMOTE_ADDRESS" => Command::DownstreamRemoteAddress,
        "UPSTREAM_TRANSPORT_FAILURE_REASON" => Command::UpstreamTransportFailureReason,
        "UPSTREAM_REQUEST_ATTEMPT_COUNT" => Command::UpstreamRequestAttemptCount,
        "UPSTREAM_HEDGE_WON" => Command::UpstreamHedgeWon,
        "CONNECTION_ID" => Command::ConnectionId,
        _ => return Err("unknown command"),
    };
    if arg.is_some() {
        return Err(if command == Command::StartTime {
            "custom time formats are not supported (it renders RFC 3339 in UTC with milliseconds)"
        } else {
            "takes no argument"
        });
    }
    if max_len.is_some() {
        return Err("takes no length limit (only REQ and RESP do)");
    }
    Ok(command)
}

fn field(name: &str, request: bool) -> Result<Field, &'static str> {
    if let Some(pseudo) = name.strip_prefix(':') {
        if !request {
            return Err("pseudo-header names are for REQ only");
        }
        return [
            ("method", Field::Method),
            ("path", Field::Path),
            ("authority", Field::Authority),
            ("scheme", Field::Scheme),
        ]
        .into_iter()
        .find(|(n, _)| pseudo.eq_ignore_ascii_case(n))
        .map(|(_, f)| f)
        .ok_or("unknown pseudo-header (use :METHOD, :PATH, :AUTHORITY or :SCHEME)");
    }
    // from_bytes lowercases, which makes the lookup case-insensitive.
    HeaderName::from_bytes(name.as_bytes()).map(Field::Header).map_err(|_| "not a valid header name")
}
