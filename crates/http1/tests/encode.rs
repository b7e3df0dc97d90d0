//! Encoding heads and chunk framing, and encode → decode round trips.

use bytes::BytesMut;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, Version};
use nuncio_http1::{
    BodyDecoder, BodyEvent, BodyFraming, CRLF, ChunkSizeLine, LAST_CHUNK, Limits, ResponseDecoder, decode_request,
    decode_response, encode_chunk_size, encode_last_chunk, encode_raw_response_head, encode_request_head,
    encode_response_head, remove_hop_by_hop,
};

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(*k, HeaderValue::from_str(v).unwrap());
    }
    h
}

#[test]
fn request_head_bytes() {
    let h = headers(&[("host", "a.example"), ("accept", "*/*"), ("content-length", "999")]);
    let mut out = BytesMut::new();
    encode_request_head(&Method::POST, &Uri::from_static("/p?q=1"), &h, BodyFraming::Length(5), &mut out);
    assert_eq!(&out[..], b"POST /p?q=1 HTTP/1.1\r\nhost: a.example\r\naccept: */*\r\ncontent-length: 5\r\n\r\n");
    out.clear();
    encode_request_head(&Method::GET, &Uri::from_static("/"), &h, BodyFraming::None, &mut out);
    assert_eq!(&out[..], b"GET / HTTP/1.1\r\nhost: a.example\r\naccept: */*\r\n\r\n");
}

#[test]
fn request_target_forms() {
    let h = headers(&[("host", "a")]);
    let mut out = BytesMut::new();
    encode_request_head(&Method::CONNECT, &Uri::from_static("a:443"), &h, BodyFraming::None, &mut out);
    assert!(out.starts_with(b"CONNECT a:443 HTTP/1.1\r\n"));
    out.clear();
    encode_request_head(&Method::GET, &Uri::from_static("http://a/x?y"), &h, BodyFraming::None, &mut out);
    assert!(out.starts_with(b"GET http://a/x?y HTTP/1.1\r\n"));
    out.clear();
    encode_request_head(&Method::OPTIONS, &Uri::from_static("*"), &h, BodyFraming::None, &mut out);
    assert!(out.starts_with(b"OPTIONS * HTTP/1.1\r\n"));
}

#[test]
fn chunked_request_drops_stale_framing_fields() {
    let h = headers(&[("host", "a"), ("transfer-encoding", "gzip"), ("content-length", "3")]);
    let mut out = BytesMut::new();
    encode_request_head(&Method::PUT, &Uri::from_static("/"), &h, BodyFraming::Chunked, &mut out);
    assert_eq!(&out[..], b"PUT / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n");
}

#[test]
fn response_head_bytes() {
    let h = headers(&[("content-type", "text/plain")]);
    let mut out = BytesMut::new();
    encode_response_head(StatusCode::OK, Version::HTTP_11, &h, BodyFraming::Length(64), &mut out);
    assert_eq!(&out[..], b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 64\r\n\r\n");
    out.clear();
    encode_response_head(StatusCode::NOT_FOUND, Version::HTTP_10, &h, BodyFraming::UntilClose, &mut out);
    assert_eq!(&out[..], b"HTTP/1.0 404 Not Found\r\ncontent-type: text/plain\r\n\r\n");
    out.clear();
    encode_response_head(StatusCode::IM_A_TEAPOT, Version::HTTP_11, &HeaderMap::new(), BodyFraming::Chunked, &mut out);
    assert_eq!(&out[..], b"HTTP/1.1 418 I'm a teapot\r\ntransfer-encoding: chunked\r\n\r\n");
    out.clear();
    let odd = StatusCode::from_u16(599).unwrap();
    encode_response_head(odd, Version::HTTP_11, &HeaderMap::new(), BodyFraming::Length(0), &mut out);
    assert_eq!(&out[..], b"HTTP/1.1 599 \r\ncontent-length: 0\r\n\r\n");
}

#[test]
fn bodiless_responses_keep_or_drop_framing_fields() {
    let h = headers(&[("content-length", "1234"), ("etag", "\"x\"")]);
    let mut out = BytesMut::new();
    // HEAD / 304: `None` keeps the representation's Content-Length.
    encode_response_head(StatusCode::NOT_MODIFIED, Version::HTTP_11, &h, BodyFraming::None, &mut out);
    assert_eq!(&out[..], b"HTTP/1.1 304 Not Modified\r\ncontent-length: 1234\r\netag: \"x\"\r\n\r\n");
    out.clear();
    // 204 / 1xx never carry one, whatever the caller passes.
    encode_response_head(StatusCode::NO_CONTENT, Version::HTTP_11, &h, BodyFraming::Length(3), &mut out);
    assert_eq!(&out[..], b"HTTP/1.1 204 No Content\r\netag: \"x\"\r\n\r\n");
    out.clear();
    encode_response_head(StatusCode::CONTINUE, Version::HTTP_11, &HeaderMap::new(), BodyFraming::None, &mut out);
    assert_eq!(&out[..], b"HTTP/1.1 100 Continue\r\n\r\n");
}

#[test]
fn a_relayed_head_carries_only_the_framing_written_for_it() {
    // Framing fields as received, in any case, and one added since: the
    // encoder writes its own in their place, and keeps them where it writes
    // none (a 304's `None`).
    let received = b"HTTP/1.1 200 OK\r\nCONTENT-LENGTH: 5\r\nx-a: 1\r\nContent-Length: 5\r\n\r\nhello";
    let mut buf = BytesMut::from(&received[..]);
    let mut head = ResponseDecoder::new(Limits::default()).decode_raw(&mut buf, &Method::GET).unwrap().unwrap();
    head.headers.append(http::header::TRANSFER_ENCODING, HeaderValue::from_static("gzip"));
    let mut out = BytesMut::new();
    encode_raw_response_head(StatusCode::OK, Version::HTTP_11, &head.headers, BodyFraming::Chunked, &mut out);
    assert_eq!(&out[..], b"HTTP/1.1 200 OK\r\nx-a: 1\r\ntransfer-encoding: chunked\r\n\r\n");
    out.clear();
    encode_raw_response_head(StatusCode::NOT_MODIFIED, Version::HTTP_11, &head.headers, BodyFraming::None, &mut out);
    let kept = b"HTTP/1.1 304 Not Modified\r\nCONTENT-LENGTH: 5\r\nx-a: 1\r\nContent-Length: 5\r\ntransfer-encoding: gzip\r\n\r\n";
    assert_eq!(&out[..], kept);
}

#[test]
fn chunk_helpers() {
    assert_eq!(ChunkSizeLine::new(1).unwrap().as_bytes(), b"1\r\n");
    assert_eq!(ChunkSizeLine::new(4096).unwrap().as_bytes(), b"1000\r\n");
    assert_eq!(ChunkSizeLine::new(u64::MAX).unwrap().as_bytes(), b"ffffffffffffffff\r\n");
    assert!(ChunkSizeLine::new(0).is_none());
    let mut out = BytesMut::new();
    assert!(!encode_chunk_size(0, &mut out));
    assert!(out.is_empty());
    assert!(encode_chunk_size(255, &mut out));
    assert_eq!(&out[..], b"ff\r\n");
    out.clear();
    encode_last_chunk(None, &mut out);
    assert_eq!(&out[..], LAST_CHUNK);
    out.clear();
    encode_last_chunk(Some(&HeaderMap::new()), &mut out);
    assert_eq!(&out[..], b"0\r\n\r\n");
    out.clear();
    encode_last_chunk(Some(&headers(&[("grpc-status", "0"), ("content-length", "1")])), &mut out);
    assert_eq!(&out[..], b"0\r\ngrpc-status: 0\r\n\r\n");
}

#[test]
fn request_round_trip_with_chunked_body() {
    let h = headers(&[("host", "up.example"), ("x-a", "1"), ("x-a", "2"), ("te", "trailers")]);
    // One buffer for head and first size line; data separately (vectored).
    let mut head = BytesMut::new();
    encode_request_head(&Method::POST, &Uri::from_static("/rpc"), &h, BodyFraming::Chunked, &mut head);
    encode_chunk_size(5, &mut head);
    let mut wire = head.to_vec();
    wire.extend_from_slice(b"hello");
    wire.extend_from_slice(CRLF);
    let mut tail = BytesMut::new();
    encode_last_chunk(Some(&headers(&[("x-sum", "42")])), &mut tail);
    wire.extend_from_slice(&tail);

    let mut buf = BytesMut::from(&wire[..]);
    let req = decode_request(&mut buf, &Limits::default()).unwrap().unwrap();
    assert_eq!(req.method, Method::POST);
    assert_eq!(req.uri, "/rpc");
    assert_eq!(req.framing, BodyFraming::Chunked);
    assert_eq!(req.headers.get_all("x-a").iter().collect::<Vec<_>>(), ["1", "2"]);
    let mut body = BodyDecoder::new(req.framing, Limits::default());
    assert_eq!(body.decode(&mut buf).unwrap(), Some(BodyEvent::Data("hello".into())));
    let Some(BodyEvent::Trailers(t)) = body.decode(&mut buf).unwrap() else { panic!() };
    assert_eq!(t["x-sum"], "42");
    assert_eq!(body.decode(&mut buf).unwrap(), Some(BodyEvent::End));
    assert!(buf.is_empty());
}

#[test]
fn response_round_trip() {
    let mut buf = BytesMut::from(
        &b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nContent-Length: 5\r\n\r\nhello"[..],
    );
    let mut res = decode_response(&mut buf, &Method::GET, &Limits::default()).unwrap().unwrap();
    remove_hop_by_hop(&mut res.headers);
    let mut out = BytesMut::new();
    encode_response_head(res.status, res.version, &res.headers, res.framing, &mut out);
    assert_eq!(&out[..], b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 5\r\n\r\n");
    let again = decode_response(&mut out, &Method::GET, &Limits::default()).unwrap().unwrap();
    assert_eq!(again.status, res.status);
    assert_eq!(again.framing, BodyFraming::Length(5));
    assert_eq!(again.headers["content-type"], "text/html");
}
