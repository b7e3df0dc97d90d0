//! The format language: every command, the default line, JSON, errors.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue, Method, StatusCode, Version};
use nuncio_accesslog::{DEFAULT_FORMAT, Format, Record, ResponseFlags};

/// 2026-11-23T14:05:01.123Z (`date -u -d @1795442701`).
fn start() -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(1_795_442_701_123)
}

fn headers(fields: &[(&'static str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in fields {
        map.append(*name, HeaderValue::from_str(value).unwrap());
    }
    map
}

fn render(format: &Format, record: &Record<'_>) -> String {
    let mut out = Vec::new();
    format.render(record, &mut out);
    String::from_utf8(out).unwrap()
}

fn text(template: &str, record: &Record<'_>) -> String {
    render(&Format::text(template).unwrap(), record)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

const CLIENT_HEADERS: &[(&str, &str)] = &[
    ("user-agent", "curl/8.5.0"),
    ("x-forwarded-for", "203.0.113.9"),
    ("x-request-id", "4c2f9a1e-77b0-4c39-9f0e-2d1f5e6a7b8c"),
];

#[test]
fn default_format_success() {
    let req = headers(CLIENT_HEADERS);
    let resp = headers(&[("content-type", "application/json")]);
    let record = Record {
        method: Some(&Method::GET),
        path: Some("/api/v1/items?id=7"),
        authority: Some("shop.example.com"),
        scheme: Some("http"),
        version: Some(Version::HTTP_11),
        request_headers: Some(&req),
        response_headers: Some(&resp),
        status: Some(StatusCode::OK),
        bytes_received: 0,
        bytes_sent: 1234,
        duration: Duration::from_micros(15_900),
        response_duration: Some(Duration::from_millis(13)),
        upstream_service_time: Some(Duration::from_millis(12)),
        upstream_host: Some(addr("10.1.2.3:8080")),
        upstream_request_attempt_count: 1,
        ..Record::new(start())
    };
    assert_eq!(
        render(&Format::default_text(), &record),
        "[2026-11-23T14:05:01.123Z] \"GET /api/v1/items?id=7 HTTP/1.1\" 200 - 0 1234 15 12 \
         \"203.0.113.9\" \"curl/8.5.0\" \"4c2f9a1e-77b0-4c39-9f0e-2d1f5e6a7b8c\" \
         \"shop.example.com\" \"10.1.2.3:8080\"\n"
    );
}

#[test]
fn default_format_no_route_404() {
    let req = headers(&[("user-agent", "curl/8.5.0")]);
    let record = Record {
        method: Some(&Method::POST),
        path: Some("/nowhere"),
        authority: Some("shop.example.com"),
        version: Some(Version::HTTP_11),
        request_headers: Some(&req),
        status: Some(StatusCode::NOT_FOUND),
        flags: ResponseFlags::NO_ROUTE_FOUND,
        bytes_received: 17,
        duration: Duration::from_millis(1),
        ..Record::new(start())
    };
    assert_eq!(
        render(&Format::default_text(), &record),
        "[2026-11-23T14:05:01.123Z] \"POST /nowhere HTTP/1.1\" 404 NR 17 0 1 - \
         \"-\" \"curl/8.5.0\" \"-\" \"shop.example.com\" \"-\"\n"
    );
}

#[test]
fn default_format_connect_failure_503() {
    let req = headers(&[("host", "api.internal:8443")]);
    let record = Record {
        method: Some(&Method::GET),
        path: Some("/"),
        version: Some(Version::HTTP_2),
        request_headers: Some(&req),
        status: Some(StatusCode::SERVICE_UNAVAILABLE),
        flags: ResponseFlags::UPSTREAM_CONNECTION_FAILURE | ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED,
        bytes_sent: 91,
        duration: Duration::from_millis(3_002),
        upstream_host: Some(addr("[2001:db8::7]:9000")),
        upstream_request_attempt_count: 3,
        upstream_transport_failure_reason: Some("connection refused"),
        ..Record::new(start())
    };
    // No `authority` in the record: `:AUTHORITY` falls back to `host`.
    assert_eq!(
        render(&Format::default_text(), &record),
        "[2026-11-23T14:05:01.123Z] \"GET / HTTP/2\" 503 UF,URX 0 91 3002 - \
         \"-\" \"-\" \"-\" \"api.internal:8443\" \"[2001:db8::7]:9000\"\n"
    );
    assert_eq!(
        text("%UPSTREAM_REQUEST_ATTEMPT_COUNT% %UPSTREAM_TRANSPORT_FAILURE_REASON%", &record),
        "3 connection refused\n"
    );
}

#[test]
fn default_format_circuit_open_503() {
    let record = Record {
        method: Some(&Method::GET),
        path: Some("/"),
        authority: Some("a"),
        version: Some(Version::HTTP_11),
        status: Some(StatusCode::SERVICE_UNAVAILABLE),
        flags: ResponseFlags::UPSTREAM_OVERFLOW,
        bytes_sent: 81,
        ..Record::new(start())
    };
    assert_eq!(
        render(&Format::default_text(), &record),
        "[2026-11-23T14:05:01.123Z] \"GET / HTTP/1.1\" 503 UO 0 81 0 - \"-\" \"-\" \"-\" \"a\" \"-\"\n"
    );
}

#[test]
fn default_format_timeout_504() {
    let record = Record {
        method: Some(&Method::PUT),
        path: Some("/slow"),
        authority: Some("a"),
        version: Some(Version::HTTP_11),
        status: Some(StatusCode::GATEWAY_TIMEOUT),
        flags: ResponseFlags::UPSTREAM_REQUEST_TIMEOUT,
        bytes_received: 5,
        bytes_sent: 24,
        duration: Duration::from_millis(15_000),
        upstream_host: Some(addr("10.0.0.2:80")),
        ..Record::new(start())
    };
    assert_eq!(
        render(&Format::default_text(), &record),
        "[2026-11-23T14:05:01.123Z] \"PUT /slow HTTP/1.1\" 504 UT 5 24 15000 - \
         \"-\" \"-\" \"-\" \"a\" \"10.0.0.2:80\"\n"
    );
}

#[test]
fn nothing_known_renders_dashes_and_zeros() {
    let record = Record::new(UNIX_EPOCH);
    assert_eq!(
        render(&Format::default_text(), &record),
        "[1970-01-01T00:00:00.000Z] \"- - -\" 0 - 0 0 0 - \"-\" \"-\" \"-\" \"-\" \"-\"\n"
    );
}

#[test]
fn every_command() {
    let req = headers(&[("user-agent", "ua/1"), ("x-a", "alpha")]);
    let resp = headers(&[("content-type", "text/plain"), ("x-b", "beta")]);
    let record = Record {
        method: Some(&Method::DELETE),
        path: Some("/p?q=1"),
        authority: Some("example.org"),
        scheme: Some("https"),
        version: Some(Version::HTTP_2),
        request_headers: Some(&req),
        response_headers: Some(&resp),
        status: Some(StatusCode::ACCEPTED),
        flags: ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION,
        bytes_received: 10,
        bytes_sent: 20,
        duration: Duration::from_millis(30),
        response_duration: Some(Duration::from_millis(25)),
        upstream_service_time: Some(Duration::from_millis(22)),
        upstream_host: Some(addr("10.0.0.1:8080")),
        upstream_cluster: Some("backend"),
        route_name: Some("api"),
        downstream_remote_address: Some(addr("192.0.2.1:54321")),
        upstream_transport_failure_reason: None,
        upstream_request_attempt_count: 2,
        connection_id: Some(42),
        ..Record::new(start())
    };
    let cases = [
        ("%START_TIME%", "2026-11-23T14:05:01.123Z"),
        ("%REQ(:METHOD)% %REQ(:path)% %REQ(:Authority)% %REQ(:SCHEME)%", "DELETE /p?q=1 example.org https"),
        ("%REQ(USER-AGENT)% %REQ(user-agent)% %REQUEST_HEADER(X-A)%", "ua/1 ua/1 alpha"),
        ("%REQ(x-missing)% %REQ(x-missing?x-a)% %REQ(x-a?user-agent)%", "- alpha alpha"),
        ("%REQ(X-A):3% %REQ(x-a):99% %REQ(:PATH):2%", "alp alpha /p"),
        ("%RESP(Content-Type)% %RESPONSE_HEADER(x-b)% %RESP(x-none?x-b)%", "text/plain beta beta"),
        ("%PROTOCOL%", "HTTP/2"),
        ("%RESPONSE_CODE%", "202"),
        ("%RESPONSE_FLAGS%", "DC"),
        ("%BYTES_RECEIVED% %BYTES_SENT%", "10 20"),
        ("%DURATION% %RESPONSE_DURATION% %UPSTREAM_SERVICE_TIME%", "30 25 22"),
        ("%UPSTREAM_HOST% %UPSTREAM_CLUSTER% %ROUTE_NAME%", "10.0.0.1:8080 backend api"),
        ("%DOWNSTREAM_REMOTE_ADDRESS%", "192.0.2.1:54321"),
        ("%UPSTREAM_TRANSPORT_FAILURE_REASON%", "-"),
        ("%UPSTREAM_REQUEST_ATTEMPT_COUNT% %CONNECTION_ID%", "2 42"),
        ("100%% of %RESPONSE_CODE%%%", "100% of 202%"),
        ("no commands", "no commands"),
        ("", ""),
    ];
    for (template, expected) in cases {
        assert_eq!(text(template, &record), format!("{expected}\n"), "{template}");
    }
    // A template's own trailing newline is kept, not doubled.
    assert_eq!(text("%RESPONSE_CODE%\n", &record), "202\n");

    let none = Record::new(start());
    for template in [
        "%REQ(:METHOD)%",
        "%RESP(x-b)%",
        "%PROTOCOL%",
        "%RESPONSE_FLAGS%",
        "%RESPONSE_DURATION%",
        "%UPSTREAM_SERVICE_TIME%",
        "%UPSTREAM_HOST%",
        "%UPSTREAM_CLUSTER%",
        "%ROUTE_NAME%",
        "%DOWNSTREAM_REMOTE_ADDRESS%",
        "%CONNECTION_ID%",
    ] {
        assert_eq!(text(template, &none), "-\n", "{template}");
    }
    assert_eq!(text("%RESPONSE_CODE% %UPSTREAM_REQUEST_ATTEMPT_COUNT%", &none), "0 0\n");
    assert_eq!(text("%PROTOCOL%", &Record { version: Some(Version::HTTP_10), ..none }), "HTTP/1.0\n");
}

#[test]
fn start_time_is_utc_rfc3339_with_millis() {
    // Expected values from `date -u -d @SECONDS`.
    let cases = [
        (0, "1970-01-01T00:00:00.000Z"),
        (951_782_400_000, "2000-02-29T00:00:00.000Z"),
        (1_000_000_000_007, "2001-09-09T01:46:40.007Z"),
        (1_700_000_000_050, "2023-11-14T22:13:20.050Z"),
        (4_102_444_799_999, "2099-12-31T23:59:59.999Z"),
    ];
    for (ms, expected) in cases {
        let record = Record::new(UNIX_EPOCH + Duration::from_millis(ms));
        assert_eq!(text("%START_TIME%", &record), format!("{expected}\n"));
    }
}

#[test]
fn response_flags_render_in_envoy_order() {
    let all = [
        (ResponseFlags::NO_HEALTHY_UPSTREAM, "UH"),
        (ResponseFlags::UPSTREAM_REQUEST_TIMEOUT, "UT"),
        (ResponseFlags::LOCAL_RESET, "LR"),
        (ResponseFlags::UPSTREAM_REMOTE_RESET, "UR"),
        (ResponseFlags::UPSTREAM_CONNECTION_FAILURE, "UF"),
        (ResponseFlags::UPSTREAM_CONNECTION_TERMINATION, "UC"),
        (ResponseFlags::UPSTREAM_OVERFLOW, "UO"),
        (ResponseFlags::NO_ROUTE_FOUND, "NR"),
        (ResponseFlags::RATE_LIMITED, "RL"),
        (ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION, "DC"),
        (ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED, "URX"),
        (ResponseFlags::STREAM_IDLE_TIMEOUT, "SI"),
        (ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR, "DPE"),
        (ResponseFlags::UPSTREAM_PROTOCOL_ERROR, "UPE"),
    ];
    let mut every = ResponseFlags::NONE;
    for (flag, code) in all {
        assert_eq!(flag.to_string(), code);
        every |= flag;
    }
    assert_eq!(every.to_string(), "UH,UT,LR,UR,UF,UC,UO,NR,RL,DC,URX,SI,DPE,UPE");
    assert_eq!(ResponseFlags::NONE.to_string(), "-");
    assert!(every.contains(ResponseFlags::RATE_LIMITED | ResponseFlags::LOCAL_RESET));
    assert!(!ResponseFlags::LOCAL_RESET.contains(ResponseFlags::RATE_LIMITED));
    // Set in any order, rendered in Envoy's.
    let mut flags = ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED;
    flags.insert(ResponseFlags::UPSTREAM_REQUEST_TIMEOUT);
    assert_eq!(text("%RESPONSE_FLAGS%", &Record { flags, ..Record::new(start()) }), "UT,URX\n");
}

fn json(fields: &[(&str, &str)]) -> Format {
    let fields: Vec<(String, String)> = fields.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Format::json(&fields).unwrap()
}

#[test]
fn json_lines_parse_keep_key_order_and_types() {
    let req = headers(&[("user-agent", "say \"hi\" \\ \ttab")]);
    let record = Record {
        method: Some(&Method::GET),
        path: Some("/a\"b\nc"),
        request_headers: Some(&req),
        status: Some(StatusCode::OK),
        bytes_sent: 512,
        duration: Duration::from_millis(7),
        upstream_host: Some(addr("10.0.0.1:80")),
        ..Record::new(start())
    };
    let format = json(&[
        ("time", "%START_TIME%"),
        ("status", "%RESPONSE_CODE%"),
        ("ua", "%REQ(user-agent)%"),
        ("path", "%REQ(:PATH)%"),
        ("line", "%REQ(:METHOD)% %REQ(:PATH)% took %DURATION%ms"),
        ("note", "quote \" backslash \\ newline \n 100%%"),
        ("bytes", "%BYTES_SENT%"),
        ("host", "%UPSTREAM_HOST%"),
        ("cluster", "%UPSTREAM_CLUSTER%"),
        ("rt", "%RESPONSE_DURATION%"),
        ("mixed", "%UPSTREAM_CLUSTER%/%RESPONSE_DURATION%"),
        ("k\"ey", "v"),
    ]);
    let line = render(&format, &record);
    assert!(line.ends_with("}\n"));
    assert_eq!(line.matches('\n').count(), 1, "one line: {line}");
    let value: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        value,
        serde_json::json!({
            "time": "2026-11-23T14:05:01.123Z",
            "status": 200,
            "ua": "say \"hi\" \\ \ttab",
            "path": "/a\"b\nc",
            "line": "GET /a\"b\nc took 7ms",
            "note": "quote \" backslash \\ newline \n 100%",
            "bytes": 512,
            "host": "10.0.0.1:80",
            "cluster": null,
            "rt": null,
            "mixed": "-/-",
            "k\"ey": "v",
        })
    );
    // Keys come out in the configured order.
    let positions: Vec<usize> = ["\"time\"", "\"status\"", "\"ua\"", "\"path\"", "\"line\"", "\"note\"", "\"bytes\""]
        .iter()
        .map(|key| line.find(key).unwrap())
        .collect();
    assert!(positions.is_sorted(), "{line}");
}

#[test]
fn json_replaces_bytes_that_are_not_utf8() {
    let mut req = HeaderMap::new();
    req.insert("x-raw", HeaderValue::from_bytes(b"caf\xe9!").unwrap());
    let record = Record { request_headers: Some(&req), ..Record::new(start()) };
    let line = render(&json(&[("raw", "%REQ(x-raw)%")]), &record);
    let value: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(value["raw"], "caf\u{fffd}!");
    // Text lines carry the bytes as they came.
    let mut out = Vec::new();
    Format::text("%REQ(x-raw)%").unwrap().render(&record, &mut out);
    assert_eq!(out, b"caf\xe9!\n");
}

#[test]
fn empty_json_format_is_an_empty_object() {
    assert_eq!(render(&Format::json(&[]).unwrap(), &Record::new(start())), "{}\n");
}

#[test]
fn errors_name_the_command_and_column() {
    let err = |template: &str| Format::text(template).unwrap_err().to_string();
    assert_eq!(err("[%START_TIME%] %FOO%"), "`%FOO%` at column 16: unknown command");
    // Columns count characters, not bytes.
    assert_eq!(err("héllo %req(x)%"), "`%req%` at column 7: unknown command");
    assert_eq!(err("%REQ%"), "`%REQ%` at column 1: needs a header name, e.g. `%REQ(user-agent)%`");
    assert_eq!(err("ab%REQ(x-a%"), "`%REQ%` at column 3: missing `)`");
    assert_eq!(err("%DURATION"), "`%DURATION%` at column 1: missing the closing `%`");
    assert_eq!(err("%DURATION(x)%"), "`%DURATION%` at column 1: takes no argument");
    assert_eq!(err("%DURATION:4%"), "`%DURATION%` at column 1: takes no length limit (only REQ and RESP do)");
    assert_eq!(err("%REQ(x):%"), "`%REQ%` at column 1: `:` must be followed by a length");
    assert_eq!(err("50% off"), "`%` at column 3: not a command (write `%%` for a literal percent sign)");
    assert_eq!(err("x %"), "`%` at column 3: not a command (write `%%` for a literal percent sign)");
    assert_eq!(err("%REQ(bad name)%"), "`%REQ%` at column 1: not a valid header name");
    assert_eq!(
        err("%REQ(:status)%"),
        "`%REQ%` at column 1: unknown pseudo-header (use :METHOD, :PATH, :AUTHORITY or :SCHEME)"
    );
    assert_eq!(err("%RESP(:PATH)%"), "`%RESP%` at column 1: pseudo-header names are for REQ only");
    assert!(err("%START_TIME(%Y)%").starts_with("`%START_TIME%` at column 1: custom time formats are not supported"));

    let fields = [("status".to_owned(), "%RESPONSE_CODE%".to_owned()), ("up".to_owned(), " %UPSTREAM%".to_owned())];
    assert_eq!(Format::json(&fields).unwrap_err().to_string(), "key `up`: `%UPSTREAM%` at column 2: unknown command");
    let twice = [("a".to_owned(), "x".to_owned()), ("a".to_owned(), "y".to_owned())];
    assert_eq!(Format::json(&twice).unwrap_err().to_string(), "key `a` appears twice");
}

#[test]
fn serializes_back_to_what_was_written() {
    let template = "%REQ(User-Agent)% %RESPONSE_CODE%";
    let format = Format::text(template).unwrap();
    assert_eq!(serde_json::to_string(&format).unwrap(), "\"%REQ(User-Agent)% %RESPONSE_CODE%\"");
    assert_eq!(serde_json::to_string(&Format::default_text()).unwrap(), serde_json::to_string(DEFAULT_FORMAT).unwrap());
    let fields = [("z".to_owned(), "%DURATION%".to_owned()), ("a".to_owned(), "x %% y".to_owned())];
    let format = Format::json(&fields).unwrap();
    assert_eq!(serde_json::to_string(&format).unwrap(), r#"{"z":"%DURATION%","a":"x %% y"}"#);

    assert_eq!(Format::text(template).unwrap(), Format::text(template).unwrap());
    assert_ne!(Format::text(template).unwrap(), Format::text("%DURATION%").unwrap());
    assert_eq!(Format::default(), Format::default_text());
}
