//! Request head decoding: framing, strictness (one test per rule), splits.

use bytes::BytesMut;
use http::{Method, StatusCode, Version};
use nuncio_http1::{BodyFraming, Error, Limits, Request, RequestDecoder, decode_request};

fn decode(raw: &str) -> Result<Request, Error> {
    let mut buf = BytesMut::from(raw.as_bytes());
    let req = decode_request(&mut buf, &Limits::default())?.expect("complete head");
    Ok(req)
}

/// Asserts `raw` is rejected with `err` and answered with `status`.
#[track_caller]
fn rejects(raw: &str, err: Error, status: u16) {
    match decode(raw) {
        Ok(r) => panic!("accepted {raw:?}: {r:?}"),
        Err(e) => {
            assert_eq!(e, err, "{raw:?}");
            assert_eq!(e.status(), StatusCode::from_u16(status).unwrap(), "{raw:?}");
        }
    }
}

#[test]
fn simple_get() {
    let r = decode("GET /a/b?c=d HTTP/1.1\r\nHost: example.com:8080\r\nAccept: */*\r\n\r\n").unwrap();
    assert_eq!(r.method, Method::GET);
    assert_eq!(r.uri, "/a/b?c=d");
    assert_eq!(r.version, Version::HTTP_11);
    assert_eq!(r.authority.unwrap().as_str(), "example.com:8080");
    assert_eq!(r.framing, BodyFraming::None);
    assert!(r.keep_alive);
    assert!(!r.expect_continue);
    assert!(!r.upgrade);
    assert_eq!(r.headers["accept"], "*/*");
    assert_eq!(r.headers.len(), 2);
}

#[test]
fn content_length_and_chunked_framing() {
    let r = decode("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 42\r\n\r\n").unwrap();
    assert_eq!(r.framing, BodyFraming::Length(42));
    let r = decode("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n").unwrap();
    assert_eq!(r.framing, BodyFraming::Chunked);
}

#[test]
fn header_values_share_the_head_buffer() {
    let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: a\r\nX-Long: 0123456789\r\n\r\n"[..]);
    let start = buf.as_ptr() as usize;
    let end = start + buf.len();
    let r = decode_request(&mut buf, &Limits::default()).unwrap().unwrap();
    let p = r.headers["x-long"].as_bytes().as_ptr() as usize;
    assert!(p > start && p < end, "value was copied");
}

// ---- limits ----

#[test]
fn head_too_large() {
    let big = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n", "a".repeat(61 * 1024));
    rejects(&big, Error::HeadTooLarge, 431);
}

#[test]
fn head_too_large_while_incomplete() {
    // No terminator yet, but already over the limit: do not wait for more.
    let partial = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}", "a".repeat(60 * 1024));
    let mut buf = BytesMut::from(partial.as_bytes());
    let err = decode_request(&mut buf, &Limits::default()).unwrap_err();
    assert_eq!(err, Error::HeadTooLarge);
    assert_eq!(err.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
}

#[test]
fn head_exactly_at_limit_is_accepted() {
    let mut limits = Limits::default();
    let raw = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    limits.max_head_bytes = raw.len();
    let mut buf = BytesMut::from(raw.as_bytes());
    assert!(decode_request(&mut buf, &limits).unwrap().is_some());
    limits.max_head_bytes = raw.len() - 1;
    let mut buf = BytesMut::from(raw.as_bytes());
    assert_eq!(decode_request(&mut buf, &limits).unwrap_err(), Error::HeadTooLarge);
}

#[test]
fn too_many_headers() {
    let mut raw = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
    for i in 0..100 {
        raw.push_str(&format!("X-{i}: v\r\n"));
    }
    raw.push_str("\r\n");
    rejects(&raw, Error::TooManyHeaders, 431);
}

#[test]
fn headers_up_to_the_limit_are_accepted() {
    let mut raw = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
    for i in 0..99 {
        raw.push_str(&format!("X-{i}: v\r\n"));
    }
    raw.push_str("\r\n");
    assert_eq!(decode(&raw).unwrap().headers.len(), 100);
}

#[test]
fn many_headers_above_the_stack_slots() {
    let mut limits = Limits::default();
    limits.max_headers = 300;
    let mut raw = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
    for i in 0..250 {
        raw.push_str(&format!("X-{i}: v\r\n"));
    }
    raw.push_str("\r\n");
    let mut buf = BytesMut::from(raw.as_bytes());
    let r = decode_request(&mut buf, &limits).unwrap().unwrap();
    assert_eq!(r.headers.len(), 251);
}

// ---- start line ----

#[test]
fn malformed_request_line() {
    rejects("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", Error::InvalidRequestLine, 400);
    rejects("GET /\r\nHost: a\r\n\r\n", Error::InvalidRequestLine, 400);
    rejects("G(T / HTTP/1.1\r\nHost: a\r\n\r\n", Error::InvalidRequestLine, 400);
    rejects("GET / HTTP/1.1 \r\nHost: a\r\n\r\n", Error::InvalidRequestLine, 400);
    rejects("GET / HTTP/1.1\rHost: a\r\n\r\n", Error::InvalidRequestLine, 400);
}

#[test]
fn unsupported_version_is_505() {
    rejects("GET / HTTP/2.0\r\nHost: a\r\n\r\n", Error::UnsupportedVersion, 505);
    rejects("GET / HTTP/1.2\r\nHost: a\r\n\r\n", Error::UnsupportedVersion, 505);
    rejects("GET / HTTP/0.9\r\n\r\n", Error::UnsupportedVersion, 505);
    rejects("GET / HTTX/1.1\r\nHost: a\r\n\r\n", Error::InvalidRequestLine, 400);
}

#[test]
fn http10_is_accepted() {
    let r = decode("GET / HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(r.version, Version::HTTP_10);
    assert!(r.authority.is_none());
    assert!(!r.keep_alive);
}

#[test]
fn invalid_targets() {
    for raw in [
        "GET example.com:80 HTTP/1.1\r\nHost: a\r\n\r\n", // authority-form, not CONNECT
        "CONNECT example.com HTTP/1.1\r\nHost: a\r\n\r\n", // CONNECT without port
        "CONNECT /x HTTP/1.1\r\nHost: a\r\n\r\n",         // CONNECT origin-form
        "CONNECT http://a:1/ HTTP/1.1\r\nHost: a\r\n\r\n", // CONNECT absolute-form
        "GET * HTTP/1.1\r\nHost: a\r\n\r\n",              // asterisk, not OPTIONS
        "GET ftp://a/x HTTP/1.1\r\nHost: a\r\n\r\n",      // not http(s)
        "GET http://u@a/x HTTP/1.1\r\nHost: a\r\n\r\n",   // userinfo
        "GET http://a:99999/ HTTP/1.1\r\nHost: a\r\n\r\n", // bad port
        "GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n",        // fragment
        "GET /caf\u{e9} HTTP/1.1\r\nHost: a\r\n\r\n",     // non-ASCII
        "GET a/b HTTP/1.1\r\nHost: a\r\n\r\n",            // relative
    ] {
        rejects(raw, Error::InvalidTarget, 400);
    }
}

#[test]
fn valid_target_forms() {
    let r = decode("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    assert_eq!(r.uri, "*");
    let r = decode("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n").unwrap();
    assert_eq!(r.method, Method::CONNECT);
    assert_eq!(r.authority.unwrap().as_str(), "example.com:443");
    let r = decode("GET //double/slash HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    assert_eq!(r.uri.path(), "//double/slash");
    assert!(r.uri.authority().is_none());
}

#[test]
fn absolute_form_authority_wins_over_host() {
    let r = decode("GET http://upstream.example:8080/p?q HTTP/1.1\r\nHost: other.example\r\n\r\n").unwrap();
    assert_eq!(r.authority.unwrap().as_str(), "upstream.example:8080");
    assert_eq!(r.headers["host"], "upstream.example:8080");
    assert_eq!(r.headers.get_all("host").iter().count(), 1);
    assert_eq!(r.uri.path_and_query().unwrap(), "/p?q");
}

// ---- fields ----

#[test]
fn obs_fold_is_rejected() {
    rejects("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", Error::ObsFold, 400);
    rejects("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n\tb\r\n\r\n", Error::ObsFold, 400);
}

#[test]
fn whitespace_before_colon_is_rejected() {
    rejects("GET / HTTP/1.1\r\nHost : a\r\n\r\n", Error::WhitespaceBeforeColon, 400);
    rejects("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding\t: chunked\r\n\r\n", Error::WhitespaceBeforeColon, 400);
}

#[test]
fn invalid_header_bytes_are_rejected() {
    rejects("GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n", Error::InvalidHeader, 400);
    rejects("GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n", Error::InvalidHeader, 400);
    rejects("GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", Error::InvalidHeader, 400);
    rejects("GET / HTTP/1.1\r\nHost: a\r\nX(y): b\r\n\r\n", Error::InvalidHeader, 400);
    rejects("GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n", Error::InvalidHeader, 400);
    rejects("GET / HTTP/1.1\r\nHost: a\r\nno-colon\r\n\r\n", Error::InvalidHeader, 400);
}

#[test]
fn obs_text_and_empty_values_are_accepted() {
    let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: a\r\nX: caf\xe9\r\nY:\r\nZ:  \t\r\n\r\n"[..]);
    let r = decode_request(&mut buf, &Limits::default()).unwrap().unwrap();
    assert_eq!(r.headers["x"].as_bytes(), b"caf\xe9");
    assert_eq!(r.headers["y"], "");
    assert_eq!(r.headers["z"], "");
}

#[test]
fn bare_lf_line_endings_are_accepted() {
    // RFC 9112 §2.2 allows it; the head is re-encoded with CRLF so the
    // upstream never sees the difference.
    let r = decode("GET / HTTP/1.1\nHost: a\nX: 1\n\n").unwrap();
    assert_eq!(r.headers["x"], "1");
}

// ---- host ----

#[test]
fn missing_host_on_http11() {
    rejects("GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", Error::MissingHost, 400);
    // Even with an absolute-form target (RFC 9112 §3.2).
    rejects("GET http://a/ HTTP/1.1\r\n\r\n", Error::MissingHost, 400);
}

#[test]
fn multiple_host() {
    rejects("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", Error::MultipleHost, 400);
    rejects("GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", Error::MultipleHost, 400);
}

#[test]
fn invalid_host() {
    for host in ["a b", "u@a", "a:99999", "a:8x", ":80", "[::1"] {
        rejects(&format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n"), Error::InvalidHost, 400);
    }
}

#[test]
fn empty_host_means_no_authority() {
    let r = decode("GET / HTTP/1.1\r\nHost:\r\n\r\n").unwrap();
    assert!(r.authority.is_none());
    let r = decode("GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n").unwrap();
    assert_eq!(r.authority.unwrap().host(), "[::1]");
}

// ---- framing ----

#[test]
fn content_length_with_transfer_encoding() {
    rejects(
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        Error::ContentLengthAndTransferEncoding,
        400,
    );
    rejects(
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
        Error::ContentLengthAndTransferEncoding,
        400,
    );
}

#[test]
fn conflicting_content_lengths() {
    rejects(
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        Error::ConflictingContentLength,
        400,
    );
    rejects("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n", Error::ConflictingContentLength, 400);
}

#[test]
fn identical_content_lengths_are_merged() {
    let r = decode("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n").unwrap();
    assert_eq!(r.framing, BodyFraming::Length(5));
    let r = decode("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n").unwrap();
    assert_eq!(r.framing, BodyFraming::Length(5));
}

#[test]
fn content_length_must_be_plain_decimal() {
    for value in ["+5", "-1", "0x5", "5 5", "5,", "", "abc", "1.0", "18446744073709551616", "99999999999999999999999"] {
        rejects(
            &format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {value}\r\n\r\n"),
            Error::InvalidContentLength,
            400,
        );
    }
}

#[test]
fn transfer_encoding_must_end_with_chunked() {
    rejects("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", Error::NotChunkedLast, 400);
    rejects("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", Error::NotChunkedLast, 400);
    rejects("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunkedx\r\n\r\n", Error::NotChunkedLast, 400);
    rejects("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\n\r\n", Error::NotChunkedLast, 400);
    rejects("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ,chunked\r\n\r\n", Error::NotChunkedLast, 400);
}

#[test]
fn chunked_repeated() {
    rejects("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", Error::ChunkedRepeated, 400);
    rejects(
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        Error::ChunkedRepeated,
        400,
    );
}

#[test]
fn unknown_transfer_coding_is_501() {
    rejects(
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        Error::UnsupportedTransferCoding,
        501,
    );
    rejects(
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
        Error::UnsupportedTransferCoding,
        501,
    );
}

#[test]
fn transfer_encoding_on_http10() {
    rejects("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", Error::TransferEncodingHttp10, 400);
}

// ---- connection semantics ----

#[test]
fn keep_alive_rules() {
    assert!(decode("GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap().keep_alive);
    assert!(!decode("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").unwrap().keep_alive);
    assert!(!decode("GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Close\r\n\r\n").unwrap().keep_alive);
    assert!(!decode("GET / HTTP/1.0\r\n\r\n").unwrap().keep_alive);
    assert!(decode("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").unwrap().keep_alive);
    assert!(decode("GET / HTTP/1.1\r\nHost: a\r\nConnection: foo\r\nConnection: bar\r\n\r\n").unwrap().keep_alive);
}

#[test]
fn expect_continue() {
    let r = decode("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-Continue\r\n\r\n").unwrap();
    assert!(r.expect_continue);
    let r = decode("POST / HTTP/1.0\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n").unwrap();
    assert!(!r.expect_continue, "ignored on HTTP/1.0");
    let r = decode("POST / HTTP/1.1\r\nHost: a\r\nExpect: something-else\r\n\r\n").unwrap();
    assert!(!r.expect_continue);
}

#[test]
fn upgrade_detection() {
    let r = decode(
        "GET /chat HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: x\r\n\r\n",
    )
    .unwrap();
    assert!(r.upgrade);
    assert_eq!(r.headers["upgrade"], "websocket");
    // Upgrade without the Connection option, or the option without Upgrade.
    assert!(!decode("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n").unwrap().upgrade);
    assert!(!decode("GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\n\r\n").unwrap().upgrade);
    // Ignored on HTTP/1.0 (RFC 9110 §7.8).
    assert!(!decode("GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n").unwrap().upgrade);
}

// ---- buffers ----

#[test]
fn pipelined_requests() {
    let mut buf = BytesMut::from(
        &b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nPOST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET /3 HTTP/1.1\r\nHost: a\r\n\r\nGET /4 HT"[..],
    );
    let mut d = RequestDecoder::new(Limits::default());
    let r1 = d.decode(&mut buf).unwrap().unwrap();
    assert_eq!(r1.uri, "/1");
    let r2 = d.decode(&mut buf).unwrap().unwrap();
    assert_eq!(r2.uri, "/2");
    assert_eq!(r2.framing, BodyFraming::Length(3));
    assert_eq!(&buf[..3], b"abc");
    let _ = buf.split_to(3);
    let r3 = d.decode(&mut buf).unwrap().unwrap();
    assert_eq!(r3.uri, "/3");
    assert!(d.decode(&mut buf).unwrap().is_none());
    buf.extend_from_slice(b"TP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(d.decode(&mut buf).unwrap().unwrap().uri, "/4");
    assert!(buf.is_empty());
}

#[test]
fn leading_empty_lines_are_skipped() {
    let r = decode("\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    assert_eq!(r.uri, "/");
    let mut d = RequestDecoder::new(Limits::default());
    let mut buf = BytesMut::from(&b"\r"[..]);
    assert!(d.decode(&mut buf).unwrap().is_none());
    buf.extend_from_slice(b"\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(d.decode(&mut buf).unwrap().unwrap().uri, "/");
}

const BROWSER_GET: &str = "GET /search?q=rust&lang=en HTTP/1.1\r\n\
Host: www.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br\r\n\
Connection: keep-alive\r\n\
Cookie: session=abc123; theme=dark\r\n\
Upgrade-Insecure-Requests: 1\r\n\
Sec-Fetch-Dest: document\r\n\
Cache-Control: max-age=0\r\n\r\n";

#[test]
fn byte_by_byte_decodes_identically() {
    let whole = decode(BROWSER_GET).unwrap();
    let mut d = RequestDecoder::new(Limits::default());
    let mut buf = BytesMut::new();
    let mut got = None;
    for (i, b) in BROWSER_GET.bytes().enumerate() {
        buf.extend_from_slice(&[b]);
        match d.decode(&mut buf).unwrap() {
            Some(r) => {
                assert_eq!(i, BROWSER_GET.len() - 1);
                got = Some(r);
            }
            None => assert!(i < BROWSER_GET.len() - 1),
        }
    }
    let got = got.unwrap();
    assert_eq!(got.method, whole.method);
    assert_eq!(got.uri, whole.uri);
    assert_eq!(got.headers, whole.headers);
    assert_eq!(got.authority, whole.authority);
    assert_eq!(got.keep_alive, whole.keep_alive);
    assert!(buf.is_empty());
}

#[test]
fn every_two_piece_split_decodes_identically() {
    let whole = decode(BROWSER_GET).unwrap();
    for cut in 0..BROWSER_GET.len() {
        let mut d = RequestDecoder::new(Limits::default());
        let mut buf = BytesMut::from(&BROWSER_GET.as_bytes()[..cut]);
        assert!(d.decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(&BROWSER_GET.as_bytes()[cut..]);
        let r = d.decode(&mut buf).unwrap().unwrap();
        assert_eq!(r.headers, whole.headers);
        assert_eq!(r.uri, whole.uri);
    }
}

#[test]
fn garbage_is_rejected_before_the_head_completes() {
    // A TLS ClientHello on the cleartext port: fail at once, not at 60 KiB.
    let mut buf = BytesMut::from(&[0x16u8, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00][..]);
    let err = RequestDecoder::new(Limits::default()).decode(&mut buf).unwrap_err();
    assert_eq!(err.status(), StatusCode::BAD_REQUEST);
}

#[test]
fn errors_do_not_depend_on_the_split() {
    for raw in [
        "GET / HTTP/2.0\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
    ] {
        let status = decode(raw).unwrap_err().status();
        let mut d = RequestDecoder::new(Limits::default());
        let mut buf = BytesMut::new();
        let mut result = None;
        for b in raw.bytes() {
            buf.extend_from_slice(&[b]);
            if let Err(e) = d.decode(&mut buf) {
                result = Some(e.status());
                break;
            }
        }
        assert_eq!(result, Some(status), "{raw:?}");
    }
}

/// The first look at a head parses the whole buffer at once (httparse
/// finds the head's end): what follows the head (a pipelined request, a
/// body, even one that ends like a head) stays in the buffer.
#[test]
fn a_buffer_ending_like_a_head_may_hold_more_than_one() {
    let first = "GET /one HTTP/1.1\r\nHost: a\r\n\r\n";
    let second = "GET /two HTTP/1.1\r\nHost: a\r\nX-Extra: b\r\n\r\n";
    let mut buf = BytesMut::from(format!("{first}{second}").as_bytes());
    let mut d = RequestDecoder::new(Limits::default());
    let one = d.decode_raw(&mut buf).unwrap().expect("the first head");
    assert_eq!(one.uri, "/one");
    assert_eq!(one.headers.len(), 1);
    assert_eq!(&buf[..], second.as_bytes());
    let two = d.decode_raw(&mut buf).unwrap().expect("the second head");
    assert_eq!(two.uri, "/two");
    assert_eq!(two.headers.get("x-extra"), Some(&b"b"[..]));
    assert!(buf.is_empty());

    // A body read with its head, ending in an empty line of its own.
    let head = "POST /form HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\n\r\n";
    let mut buf = BytesMut::from(format!("{head}ab\r\n\r\n").as_bytes());
    let post = d.decode(&mut buf).unwrap().expect("the head");
    assert_eq!(post.framing, BodyFraming::Length(6));
    assert_eq!(&buf[..], b"ab\r\n\r\n");

    // The usual case: one head, all of the buffer.
    let mut buf = BytesMut::from(first.as_bytes());
    assert_eq!(d.decode(&mut buf).unwrap().expect("the head").uri, "/one");
    assert!(buf.is_empty());
}

/// An invalid head that arrives whole is named as when it arrives a byte
/// at a time (first look parsed at once, or its end searched for first).
#[test]
fn an_invalid_whole_head_is_named_as_when_split() {
    for (raw, err) in [
        ("GET / HTTP/1.1\r\n\r\n", Error::MissingHost),
        ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", Error::MultipleHost),
        ("GET / HTTP/1.1\r\nHost : a\r\n\r\n", Error::WhitespaceBeforeColon),
        ("GET / HTTP/1.1\nHost: a\nHost: b\n\n", Error::MultipleHost),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 2\r\n\r\n", Error::ConflictingContentLength),
    ] {
        let whole = RequestDecoder::new(Limits::default()).decode(&mut BytesMut::from(raw.as_bytes()));
        assert_eq!(whole.unwrap_err(), err, "{raw:?} whole");
        let mut d = RequestDecoder::new(Limits::default());
        let mut buf = BytesMut::new();
        let split = raw.bytes().find_map(|b| {
            buf.extend_from_slice(&[b]);
            d.decode(&mut buf).err()
        });
        assert_eq!(split, Some(err), "{raw:?} a byte at a time");
    }
}
