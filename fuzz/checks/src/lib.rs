//! The bodies of nuncio's cargo-fuzz targets for what an operator writes:
//! the YAML config, the access-log format language and the `headers`
//! filter's value templates; and for what a filter library sends: the C
//! ABI's host functions. `fuzz/fuzz_targets/` (cargo-fuzz, nightly)
//! calls them; `tests/` runs them on stable over the committed seeds and
//! proptest's inputs, so `cargo test` checks the same properties.
//!
//! Each function takes arbitrary bytes and panics only when the code under
//! test breaks one of its promises: parsing never panics, whatever parses
//! renders without panicking, and a few properties that pin the output down
//! (see each function).
//!
//! The config resolves endpoint host names with a blocking `getaddrinfo`.
//! A fuzzer finds host names quickly, so run the config target without a
//! network (`unshare -n`, as `scripts/fuzz-smoke` and the commands in
//! `fuzz/README.md` do): lookups then fail at once and send nothing. The
//! committed seeds only name IP addresses and `localhost`.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
use nuncio_accesslog::{Format, Record, ResponseFlags};
use nuncio_config::{Config, FilterCatalog, FilterCheckError, FilterClusterRef};
use nuncio_filter::{Context, FilterKind, Hook, RequestHead, ResponseHead, Status, StreamCx};

// ------------------------------------------------------------- config --

/// The built-in filter kinds as the `nuncio` binary checks a config
/// against them. The same lookup as `nuncio_proxy::FilterKinds`, written
/// out here so the fuzz build does not pull in the whole proxy.
struct Builtin(Vec<Arc<dyn FilterKind>>);

impl FilterCatalog for Builtin {
    fn names(&self) -> Vec<String> {
        self.0.iter().map(|k| k.name().to_owned()).collect()
    }

    fn check(&self, name: &str, config: &serde_json::Value) -> Result<(), FilterCheckError> {
        self.check_with_clusters(name, config).map(drop)
    }

    fn check_with_clusters(
        &self,
        name: &str,
        config: &serde_json::Value,
    ) -> Result<Vec<FilterClusterRef>, FilterCheckError> {
        let kind = self.0.iter().find(|k| k.name() == name).ok_or(FilterCheckError::UnknownName)?;
        let factory = kind
            .configure(config.clone())
            .map_err(|e| FilterCheckError::Config { path: e.path, message: e.message })?;
        Ok(factory.clusters().into_iter().map(|c| FilterClusterRef { path: c.path, name: c.name }).collect())
    }
}

/// YAML text (the input, invalid UTF-8 replaced) through `Config::from_yaml`
/// and `Config::from_yaml_with` the built-in filters: never a panic; every
/// error names a position and renders; and a config that validates dumps
/// (`to_yaml`, what `/config_dump` shows) to YAML that validates again to
/// the same `Config`.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let catalog = Builtin(nuncio_filters::builtin());
    for result in [Config::from_yaml(&text, "fuzz.yaml"), Config::from_yaml_with(&text, "fuzz.yaml", &catalog)] {
        match result {
            Ok(config) => {
                let dump = config.to_yaml();
                let again = Config::from_yaml_with(&dump, "dump.yaml", &catalog)
                    .unwrap_or_else(|e| panic!("the dump of a valid config fails: {e}\n--- dump\n{dump}"));
                assert_eq!(again, config, "the dump reads back differently\n--- dump\n{dump}");
            }
            Err(errors) => {
                assert!(!errors.is_empty(), "an error without errors");
                for error in errors.iter() {
                    assert!(!error.message.is_empty(), "an empty message: {error:?}");
                    let _ = error.to_string();
                }
            }
        }
    }
}

// ---------------------------------------------------------- accesslog --

/// Reads fuzz input as typed values; past its end everything is zero.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        let (first, rest) = self.0.split_first().map_or((0, &[][..]), |(f, r)| (*f, r));
        self.0 = rest;
        first
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }

    fn address(&mut self) -> SocketAddr {
        if self.u8().is_multiple_of(2) {
            SocketAddr::from((Ipv4Addr::from(self.u32()), self.u16()))
        } else {
            let ip = Ipv6Addr::from(u128::from(self.u64()) | (u128::from(self.u64()) << 64));
            SocketAddr::V6(SocketAddrV6::new(ip, self.u16(), 0, self.u32()))
        }
    }
}

/// The flags whose bits are set in `bits`.
fn flags(bits: u32) -> ResponseFlags {
    const ALL: [ResponseFlags; 15] = [
        ResponseFlags::NO_HEALTHY_UPSTREAM,
        ResponseFlags::UPSTREAM_REQUEST_TIMEOUT,
        ResponseFlags::LOCAL_RESET,
        ResponseFlags::UPSTREAM_REMOTE_RESET,
        ResponseFlags::UPSTREAM_CONNECTION_FAILURE,
        ResponseFlags::UPSTREAM_CONNECTION_TERMINATION,
        ResponseFlags::UPSTREAM_OVERFLOW,
        ResponseFlags::NO_ROUTE_FOUND,
        ResponseFlags::RATE_LIMITED,
        ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION,
        ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED,
        ResponseFlags::STREAM_IDLE_TIMEOUT,
        ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR,
        ResponseFlags::UPSTREAM_PROTOCOL_ERROR,
        ResponseFlags::OVERLOAD_MANAGER,
    ];
    ALL.iter().enumerate().filter(|(i, _)| bits & (1 << i) != 0).fold(ResponseFlags::NONE, |acc, (_, f)| acc | *f)
}

/// `name: value` lines as a header map (lines that are not a valid field
/// are skipped): what a record's request and response fields hold.
fn header_map(text: &str) -> HeaderMap {
    let mut map = HeaderMap::new();
    for line in text.split('\n') {
        let Some((name, value)) = line.split_once(':') else { continue };
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value.trim())) {
            map.append(name, value);
        }
    }
    map
}

/// Splits `text` at the first `sep` (all of it and nothing when absent).
fn cut(text: &str, sep: char) -> (&str, &str) {
    text.split_once(sep).unwrap_or((text, ""))
}

/// What the strings a record borrows are made from.
struct RecordText {
    method: Option<Method>,
    path: String,
    authority: String,
    request: HeaderMap,
    response: HeaderMap,
}

impl RecordText {
    /// From `method\x1epath\x1eauthority\x1erequest fields\x1eresponse fields`.
    fn parse(text: &str) -> RecordText {
        let (method, rest) = cut(text, '\x1e');
        let (path, rest) = cut(rest, '\x1e');
        let (authority, rest) = cut(rest, '\x1e');
        let (request, response) = cut(rest, '\x1e');
        RecordText {
            method: Method::from_bytes(method.as_bytes()).ok(),
            path: path.to_owned(),
            authority: authority.to_owned(),
            request: header_map(request),
            response: header_map(response),
        }
    }

    /// A record with every field taken from `b` and `self`.
    fn record(&self, b: &mut Bytes<'_>) -> Record<'_> {
        let start_time = UNIX_EPOCH.checked_add(Duration::from_millis(b.u64())).unwrap_or(UNIX_EPOCH);
        let bits = b.u32();
        let on = |i: u32| bits & (1 << i) != 0;
        let version = [Version::HTTP_09, Version::HTTP_10, Version::HTTP_11, Version::HTTP_2, Version::HTTP_3]
            [usize::from(b.u8() % 5)];
        Record {
            method: self.method.as_ref(),
            path: on(0).then_some(self.path.as_str()),
            authority: on(1).then_some(self.authority.as_str()),
            scheme: on(2).then_some(if on(3) { "https" } else { "http" }),
            version: on(4).then_some(version),
            request_headers: on(5).then_some(&self.request),
            response_headers: on(6).then_some(&self.response),
            status: StatusCode::from_u16(b.u16() % 1000).ok(),
            flags: flags(b.u32()),
            bytes_received: b.u64(),
            bytes_sent: b.u64(),
            duration: Duration::from_nanos(b.u64()),
            response_duration: on(7).then(|| Duration::from_micros(b.u64())),
            upstream_service_time: on(8).then(|| Duration::from_secs(b.u64())),
            upstream_host: on(9).then(|| b.address()),
            upstream_cluster: on(10).then_some(self.authority.as_str()),
            route_name: on(11).then_some(self.path.as_str()),
            downstream_remote_address: on(12).then(|| b.address()),
            upstream_transport_failure_reason: on(13).then_some("connection refused"),
            upstream_request_attempt_count: b.u32(),
            upstream_hedge_won: on(14).then_some(on(15)),
            connection_id: on(16).then(|| b.u64()),
            ..Record::new(start_time)
        }
    }
}

/// Envoy's format language: the first byte picks a text or JSON format
/// and how many record bytes follow; the text after them is
/// `format\x1frecord strings` (see `RecordText::parse`). A JSON format
/// is one `key=template` per line.
///
/// Never a panic, in parsing or rendering (a record with nothing set, and
/// one with everything from the input). A text line ends with its one
/// newline; a format with no command renders as written (`%%` → `%`). A
/// JSON line is one valid JSON object with every key. A text format
/// serializes (for the config dump) to the text it was parsed from.
pub fn access_log(data: &[u8]) {
    let [mode, rest @ ..] = data else { return };
    let record_len = (usize::from(*mode >> 1) * 2).min(rest.len());
    let (record_bytes, text) = rest.split_at(record_len);
    let text = String::from_utf8_lossy(text);
    let (template, record_text) = cut(&text, '\x1f');
    let strings = RecordText::parse(record_text);
    let records = [Record::new(UNIX_EPOCH), strings.record(&mut Bytes(record_bytes))];

    let json = mode & 1 == 1;
    if json {
        let fields: Vec<(String, String)> = template
            .split('\n')
            .map(|line| {
                let (key, value) = cut(line, '=');
                (key.to_owned(), value.to_owned())
            })
            .collect();
        let Ok(format) = Format::json(&fields) else { return };
        let keys: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
        for record in &records {
            let mut out = Vec::new();
            format.render(record, &mut out);
            let line = out.strip_suffix(b"\n").unwrap_or_else(|| panic!("no newline: {out:?}"));
            assert!(!line.contains(&b'\n'), "a newline inside a JSON line: {out:?}");
            let value: serde_json::Value = serde_json::from_slice(line)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(line)));
            let object = value.as_object().expect("a JSON object");
            let mut seen: Vec<&str> = object.keys().map(String::as_str).collect();
            let mut want = keys.clone();
            seen.sort_unstable();
            want.sort_unstable();
            assert_eq!(seen, want, "the keys of {}", String::from_utf8_lossy(line));
        }
    } else {
        let Ok(format) = Format::text(template) else { return };
        for record in &records {
            let mut out = Vec::new();
            format.render(record, &mut out);
            assert!(out.ends_with(b"\n"), "no newline: {out:?}");
            if !template.replace("%%", "").contains('%') {
                let mut want = template.replace("%%", "%");
                if !want.ends_with('\n') {
                    want.push('\n');
                }
                assert_eq!(String::from_utf8_lossy(&out), want, "a format without commands");
            }
        }
        // The config dump writes the format as given; it must read back.
        let dumped = serde_json::to_value(&format).expect("a format serializes");
        assert_eq!(dumped.as_str(), Some(template));
        assert_eq!(Format::text(template).as_ref(), Ok(&format));
    }
}

// ---------------------------------------------------------- templates --

/// A request head for a template to read: `method path\nname: value...`
/// (a part that does not parse is left at its default).
fn request_head(text: &str) -> RequestHead {
    let (line, fields) = cut(text, '\n');
    let (method, uri) = cut(line, ' ');
    let headers = header_map(fields);
    let authority = headers.get(http::header::HOST).and_then(|h| h.to_str().ok()?.parse().ok());
    RequestHead {
        method: Method::from_bytes(method.as_bytes()).unwrap_or(Method::GET),
        uri: uri.parse().unwrap_or_else(|_| http::Uri::from_static("/")),
        version: Version::HTTP_11,
        headers,
        authority,
    }
}

/// What a template renders, computed independently of the filter from the
/// documented language (`%%`, `%DOWNSTREAM_REMOTE_ADDRESS%`,
/// `%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%`, `%REQ(name)%` with
/// `:method`, `:path`, `:authority`, `:scheme`), for a template the filter
/// accepted.
fn expected(template: &str, client: SocketAddr, head: &RequestHead) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find('%') {
        out.extend_from_slice(&rest.as_bytes()[..start]);
        let after = &rest[start + 1..];
        if let Some(tail) = after.strip_prefix('%') {
            out.push(b'%');
            rest = tail;
            continue;
        }
        let end = after.find('%').expect("an accepted template closes its variables");
        let name = &after[..end];
        rest = &after[end + 1..];
        match name {
            "DOWNSTREAM_REMOTE_ADDRESS" => out.extend_from_slice(client.to_string().as_bytes()),
            "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => out.extend_from_slice(client.ip().to_string().as_bytes()),
            _ => {
                let arg = name.strip_prefix("REQ(").and_then(|a| a.strip_suffix(')')).expect("a known variable");
                // Field values may hold obs-text: bytes, not text.
                let value: Option<&[u8]> = match arg.to_ascii_lowercase().as_str() {
                    ":method" => Some(head.method.as_str().as_bytes()),
                    ":path" => Some(head.uri.path_and_query().map_or("/", |pq| pq.as_str()).as_bytes()),
                    ":authority" => head.authority.as_ref().map(|a| a.as_str().as_bytes()),
                    ":scheme" => Some(head.scheme().as_bytes()),
                    _ => {
                        let name = HeaderName::from_bytes(arg.as_bytes()).expect("an accepted field name");
                        head.headers.get(name).map(HeaderValue::as_bytes)
                    }
                };
                out.extend_from_slice(value.unwrap_or_default());
            }
        }
    }
    out.extend_from_slice(rest.as_bytes());
    out
}

fn run(hook: Hook<'_>) -> Status {
    match hook {
        Hook::Done(status) => status,
        Hook::Pending(_) => panic!("the headers filter is synchronous"),
    }
}

/// The `headers` filter's value templates: the first byte and the next
/// ones pick the client's address; the text after them is
/// `template\x1frequest` (see `request_head`). The template goes into a
/// request `set` and `add` and a response `set`; configuring never panics,
/// and a filter that configures runs both hooks synchronously, writing
/// what the language says the template renders to (nothing when it
/// renders empty).
pub fn template(data: &[u8]) {
    let mut b = Bytes(data);
    let client = b.address();
    let used = data.len() - b.0.len();
    let text = String::from_utf8_lossy(&data[used.min(data.len())..]);
    let (template, request) = cut(&text, '\x1f');
    let config = serde_json::json!({
        "request": {
            "set": [ { "name": "x-fuzz-set", "value": template } ],
            "add": [ { "name": "x-fuzz-add", "value": template } ],
        },
        "response": { "set": [ { "name": "x-fuzz-resp", "value": template } ] },
    });
    let Ok(factory) = nuncio_filters::headers::HeadersKind.configure(config) else { return };

    let mut head = request_head(request);
    for name in ["x-fuzz-set", "x-fuzz-add", "x-fuzz-resp"] {
        head.headers.remove(name);
    }
    let want = expected(template, client, &head);
    let mut filter = factory.create();
    let mut cx = StreamCx::new(Context::background(), client);
    assert!(matches!(run(filter.request_headers(&mut cx, &mut head, true)), Status::Continue));
    let set = head.headers.get("x-fuzz-set").map(HeaderValue::as_bytes);
    assert_eq!(set, (!want.is_empty()).then_some(&want[..]), "template {template:?}");

    let mut response = ResponseHead { status: StatusCode::OK, headers: HeaderMap::new() };
    assert!(matches!(run(filter.response_headers(&mut cx, &mut response, false)), Status::Continue));
    // The response reads the request as the filter passed it on.
    let want = expected(template, client, &head);
    let resp = response.headers.get("x-fuzz-resp").map(HeaderValue::as_bytes);
    assert_eq!(resp, (!want.is_empty()).then_some(&want[..]), "template {template:?} (response)");
}

/// The C ABI's host functions (crates/filter-abi), called through their
/// `extern "C"` entries as a filter library calls them, with what the
/// library controls: stream and call ids, ops, statuses, flags and buffers.
/// No stream is live here, so every call names a stream that does not
/// exist or never did. Records are separated by `\x1e`; a record is an op
/// byte, eight bytes of stream id, a kind byte, two of status or argument
/// (little-endian), a flags byte, then `a\x1fb` (the two buffers).
///
/// Promises: no entry panics or unwinds (each is guarded, and a panic would
/// show as `INVALID` where the checks expect otherwise); `decide` refuses
/// exactly the decisions that do not parse (`INVALID`) and answers
/// `STREAM_GONE` to the others; `call` and `http_call` answer `INVALID` or
/// `STREAM_GONE`, and `INVALID` whenever their buffers do not parse;
/// `http_cancel` answers `STREAM_GONE`; `log` takes anything; an edit list
/// is refused or applied (to a request and a response head, without a
/// panic) the same way whether it comes with a decision or alone; a sink
/// takes exactly the bytes while lent and nothing when not.
pub fn abi(data: &[u8]) {
    use nuncio_filter_abi::abi::{decision, op, status};
    use nuncio_filter_abi::raw;
    const OK: i32 = status::OK as i32;
    const GONE: i32 = status::STREAM_GONE as i32;
    const INVALID: i32 = status::INVALID as i32;
    for record in data.split(|&b| b == 0x1e) {
        let Some((&[which], rest)) = record.split_first_chunk::<1>() else { continue };
        let Some((stream, rest)) = rest.split_first_chunk::<8>() else { continue };
        let stream = u64::from_le_bytes(*stream);
        let Some(([kind, s0, s1, flags], rest)) = rest.split_first_chunk::<4>().map(|(h, r)| (*h, r)) else {
            continue;
        };
        let (kind, number, flags) = (u32::from(kind), u32::from(u16::from_le_bytes([s0, s1])), u32::from(flags));
        let (a, b) = match rest.iter().position(|&c| c == 0x1f) {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &[][..]),
        };
        match which % 7 {
            0 => {
                let answer = raw::decide(stream, 1, kind, number, a, b, flags);
                let valid = raw::decision_is_valid(kind, number, a, b, flags);
                assert_eq!(answer, if valid { GONE } else { INVALID }, "decide({kind}, {number}, {flags:#x})");
            }
            1 => {
                let answer = raw::call(stream, 7, kind, number, a, b);
                assert!(answer == GONE || answer == INVALID, "call op {kind}: {answer}");
                let edits_refused = raw::apply_edits(a).is_none();
                let needs_edits = [op::OP_EDIT_REQUEST_HEADERS, op::OP_EDIT_RESPONSE_HEADERS, op::OP_REPLY];
                if needs_edits.contains(&kind) && edits_refused {
                    assert_eq!(answer, INVALID, "call op {kind} with an edit list that does not parse");
                }
            }
            2 => {
                let answer = raw::http_call(stream, 9, a, b, &[], u64::from(number));
                assert!(answer == GONE || answer == INVALID, "http_call: {answer}");
                if std::str::from_utf8(a).is_err() {
                    assert_eq!(answer, INVALID, "http_call to a cluster named by bytes that are not UTF-8");
                }
            }
            3 => assert_eq!(raw::http_cancel(stream, u64::from(number)), GONE),
            4 => assert_eq!(raw::log(kind, a, b), OK),
            5 => {
                let applied = raw::apply_edits(a);
                let with_decision = raw::decision_is_valid(decision::CONTINUE, 0, a, &[], 0);
                assert_eq!(applied.is_some(), with_decision, "an edit list alone and in a decision");
            }
            _ => {
                let (answer, out) = raw::put_active(a);
                assert_eq!((answer, out.as_slice()), (OK, a));
                assert_eq!(raw::put_stray(a), INVALID);
            }
        }
    }
}
