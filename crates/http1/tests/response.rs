//! Response head decoding and the RFC 9112 §6.3 framing rules.

use bytes::BytesMut;
use http::{Method, StatusCode, Version};
use nuncio_http1::{BodyFraming, Error, Limits, Response, ResponseDecoder, decode_response};

fn decode(raw: &str, method: &Method) -> Result<Response, Error> {
    let mut buf = BytesMut::from(raw.as_bytes());
    let res = decode_response(&mut buf, method, &Limits::default())?.expect("complete head");
    assert!(buf.is_empty());
    Ok(res)
}

fn get(raw: &str) -> Result<Response, Error> {
    decode(raw, &Method::GET)
}

#[test]
fn length_and_chunked() {
    let r = get("HTTP/1.1 200 OK\r\nContent-Length: 12\r\nContent-Type: text/plain\r\n\r\n").unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.version, Version::HTTP_11);
    assert_eq!(r.framing, BodyFraming::Length(12));
    assert!(r.keep_alive);
    assert!(!r.tunnel && !r.is_interim());
    let r = get("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
    assert_eq!(r.framing, BodyFraming::Chunked);
}

#[test]
fn no_length_reads_until_close() {
    let r = get("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n").unwrap();
    assert_eq!(r.framing, BodyFraming::UntilClose);
    assert!(!r.keep_alive, "the connection ends with the body");
}

#[test]
fn head_response_has_no_body() {
    let r = decode("HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", &Method::HEAD).unwrap();
    assert_eq!(r.framing, BodyFraming::None);
    assert_eq!(r.headers["content-length"], "1234");
    assert!(r.keep_alive);
    let r = decode("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", &Method::HEAD).unwrap();
    assert_eq!(r.framing, BodyFraming::None);
    let r = decode("HTTP/1.1 200 OK\r\n\r\n", &Method::HEAD).unwrap();
    assert_eq!(r.framing, BodyFraming::None);
    assert!(r.keep_alive);
}

#[test]
fn no_content_and_not_modified_have_no_body() {
    let r = get("HTTP/1.1 204 No Content\r\n\r\n").unwrap();
    assert_eq!(r.framing, BodyFraming::None);
    assert!(r.keep_alive);
    let r = get("HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\nETag: \"x\"\r\n\r\n").unwrap();
    assert_eq!(r.framing, BodyFraming::None);
}

#[test]
fn interim_responses() {
    let mut buf = BytesMut::from(
        &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"[..],
    );
    let mut d = ResponseDecoder::new(Limits::default());
    let r = d.decode(&mut buf, &Method::POST).unwrap().unwrap();
    assert_eq!(r.status, StatusCode::CONTINUE);
    assert!(r.is_interim() && !r.tunnel);
    assert_eq!(r.framing, BodyFraming::None);
    let r = d.decode(&mut buf, &Method::POST).unwrap().unwrap();
    assert_eq!(r.status.as_u16(), 103);
    assert!(r.is_interim());
    let r = d.decode(&mut buf, &Method::POST).unwrap().unwrap();
    assert_eq!(r.status, StatusCode::CREATED);
    assert!(!r.is_interim());
    assert_eq!(r.framing, BodyFraming::Length(0));
    assert!(buf.is_empty());
}

#[test]
fn switching_protocols_is_a_tunnel() {
    let r = get("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n").unwrap();
    assert!(r.is_interim());
    assert!(r.tunnel);
    assert_eq!(r.framing, BodyFraming::None);
}

#[test]
fn connect_success_is_a_tunnel() {
    // Framing fields of a 2xx to CONNECT are ignored (RFC 9112 §6.3).
    let r =
        decode("HTTP/1.1 200 Connection Established\r\nContent-Length: nonsense\r\n\r\n", &Method::CONNECT).unwrap();
    assert!(r.tunnel);
    assert_eq!(r.framing, BodyFraming::None);
    let r = decode("HTTP/1.1 407 Proxy Auth\r\nContent-Length: 3\r\n\r\n", &Method::CONNECT).unwrap();
    assert!(!r.tunnel);
    assert_eq!(r.framing, BodyFraming::Length(3));
}

#[test]
fn keep_alive_rules() {
    assert!(!get("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap().keep_alive);
    assert!(!get("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").unwrap().keep_alive);
    let r = get("HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n").unwrap();
    assert!(r.keep_alive);
    assert_eq!(r.version, Version::HTTP_10);
}

#[test]
fn strict_framing_applies_to_responses() {
    assert_eq!(
        get("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap_err(),
        Error::ContentLengthAndTransferEncoding
    );
    assert_eq!(
        get("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n").unwrap_err(),
        Error::ConflictingContentLength
    );
    assert_eq!(get("HTTP/1.1 200 OK\r\nContent-Length: -3\r\n\r\n").unwrap_err(), Error::InvalidContentLength);
    assert_eq!(get("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n").unwrap_err(), Error::NotChunkedLast);
    assert_eq!(
        get("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap_err(),
        Error::TransferEncodingHttp10
    );
    assert_eq!(get("HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n").unwrap_err(), Error::ObsFold);
    assert_eq!(get("HTTP/1.1 200 OK\r\nX : a\r\n\r\n").unwrap_err(), Error::WhitespaceBeforeColon);
}

#[test]
fn malformed_status_lines() {
    for raw in [
        "HTTP/1.1 20 OK\r\n\r\n",
        "HTTP/1.1 2000 OK\r\n\r\n",
        "HTTP/1.1 099 Too Low\r\n\r\n",
        "HTTP/1.1  200 OK\r\n\r\n",
        "HTTP/1.1 abc OK\r\n\r\n",
    ] {
        let e = get(raw).unwrap_err();
        assert_eq!(e, Error::InvalidStatusLine, "{raw:?}");
        assert_eq!(e.status(), StatusCode::BAD_GATEWAY);
    }
    assert_eq!(get("HTTP/2.0 200 OK\r\n\r\n").unwrap_err(), Error::UnsupportedVersion);
    assert_eq!(get("HTTQ/1.1 200 OK\r\n\r\n").unwrap_err(), Error::InvalidStatusLine);
}

#[test]
fn missing_reason_phrase_is_accepted() {
    let r = get("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n").unwrap();
    assert_eq!(r.status, StatusCode::OK);
    let r = get("HTTP/1.1 599 \r\nContent-Length: 0\r\n\r\n").unwrap();
    assert_eq!(r.status.as_u16(), 599);
}

#[test]
fn byte_by_byte_decodes_identically() {
    let raw = "HTTP/1.1 200 OK\r\nDate: Mon, 23 Nov 2026 10:00:00 GMT\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: 5\r\nCache-Control: no-cache\r\n\r\nhello";
    let mut d = ResponseDecoder::new(Limits::default());
    let mut buf = BytesMut::new();
    let mut got = None;
    for b in raw.bytes() {
        buf.extend_from_slice(&[b]);
        if got.is_none() {
            got = d.decode(&mut buf, &Method::GET).unwrap();
        }
    }
    let got = got.unwrap();
    assert_eq!(&buf[..], b"hello");
    let mut whole = BytesMut::from(raw.as_bytes());
    let whole = decode_response(&mut whole, &Method::GET, &Limits::default()).unwrap().unwrap();
    assert_eq!(got.headers, whole.headers);
    assert_eq!(got.framing, BodyFraming::Length(5));
}

#[test]
fn response_head_too_large() {
    let mut limits = Limits::default();
    limits.max_head_bytes = 64;
    let mut buf = BytesMut::from(format!("HTTP/1.1 200 OK\r\nX: {}", "a".repeat(64)).as_bytes());
    assert_eq!(decode_response(&mut buf, &Method::GET, &limits).unwrap_err(), Error::HeadTooLarge);
}

/// A response read with its body in one buffer, a body that ends like a
/// head: the first look parses the head at once, and the body stays in the
/// buffer.
#[test]
fn a_body_that_ends_like_a_head_stays_in_the_buffer() {
    let head = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n";
    let mut buf = BytesMut::from(format!("{head}a\n\nb").as_bytes());
    buf.truncate(head.len() + 3);
    let mut d = ResponseDecoder::new(Limits::default());
    let r = d.decode_raw(&mut buf, &Method::GET).unwrap().expect("the head");
    assert_eq!(r.framing, BodyFraming::Length(4));
    assert_eq!(&buf[..], b"a\n\n");

    // A bodiless answer, all of the buffer.
    let mut buf = BytesMut::from(&b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n"[..]);
    let r = d.decode_raw(&mut buf, &Method::GET).unwrap().expect("the head");
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    assert_eq!(r.headers.get("etag"), Some(&b"\"x\""[..]));
    assert!(buf.is_empty());
}
