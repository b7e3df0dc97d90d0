//! Property tests: arbitrary input never panics (the fuzz targets' bodies,
//! run on stable), and generated valid messages round-trip.

use bytes::BytesMut;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use nuncio_http1::{
    BodyDecoder, BodyEvent, BodyFraming, CRLF, Limits, RequestDecoder, encode_chunk_size, encode_last_chunk,
    encode_request_head, fuzzing,
};
use proptest::prelude::*;

/// Bytes that look like HTTP often enough to get past the start line.
fn http_ish() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(&b"GET / HTTP/1.1\r\n"[..]),
        Just(&b"POST http://a:80/x HTTP/1.1\r\n"[..]),
        Just(&b"CONNECT a:443 HTTP/1.0\r\n"[..]),
        Just(&b"HTTP/1.1 200 OK\r\n"[..]),
        Just(&b"HTTP/1.0 101 \r\n"[..]),
        Just(&b"HTTP/1.1 304 Not Modified\r\n"[..]),
        Just(&b"Host: a\r\n"[..]),
        Just(&b"Content-Length: 5\r\n"[..]),
        Just(&b"Content-Length: 5, 5\r\n"[..]),
        Just(&b"Transfer-Encoding: chunked\r\n"[..]),
        Just(&b"Transfer-Encoding: gzip\r\n"[..]),
        Just(&b"Connection: close, upgrade\r\n"[..]),
        Just(&b"connection: X-A, te,\r\n"[..]),
        Just(&b"X-a: 1\r\n"[..]),
        Just(&b"Keep-Alive: timeout=5\r\n"[..]),
        Just(&b"Upgrade: websocket\r\n"[..]),
        Just(&b"Expect: 100-continue\r\n"[..]),
        Just(&b" folded\r\n"[..]),
        Just(&b"5;x=y\r\nhello\r\n"[..]),
        Just(&b"0\r\n"[..]),
        Just(&b"\r\n"[..]),
        Just(&b"\n"[..]),
        Just(&b"\r"[..]),
        Just(&b":"[..]),
        Just(&b" "[..]),
    ];
    let chunk = prop_oneof![
        3 => piece.prop_map(<[u8]>::to_vec),
        1 => proptest::collection::vec(any::<u8>(), 0..8),
    ];
    (any::<[u8; 2]>(), proptest::collection::vec(chunk, 0..24)).prop_map(|(head, parts)| {
        let mut v = head.to_vec();
        for p in parts {
            v.extend_from_slice(&p);
        }
        v
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn request_decoder_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        fuzzing::request_head(&data);
    }

    #[test]
    fn request_decoder_never_panics_on_http_ish(data in http_ish()) {
        fuzzing::request_head(&data);
    }

    #[test]
    fn response_decoder_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        fuzzing::response_head(&data);
    }

    #[test]
    fn response_decoder_never_panics_on_http_ish(data in http_ish()) {
        fuzzing::response_head(&data);
    }

    #[test]
    fn chunked_decoder_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        fuzzing::chunked(&data);
    }

    #[test]
    fn chunked_decoder_never_panics_on_chunked_ish(data in http_ish()) {
        fuzzing::chunked(&data);
    }

    #[test]
    fn connection_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        fuzzing::connection(&data);
    }

    #[test]
    fn connection_never_panics_on_http_ish(data in http_ish()) {
        fuzzing::connection(&data);
    }

    #[test]
    fn connection_never_panics_on_pipelines(data in pipeline()) {
        fuzzing::connection(&data);
    }
}

/// Whole requests with bodies, back to back, with a little damage: what a
/// pipelining client sends, and what a smuggling attempt looks like.
fn pipeline() -> impl Strategy<Value = Vec<u8>> {
    let request = prop_oneof![
        Just(&b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..]),
        Just(&b"GET /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"[..]),
        Just(&b"POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"[..]),
        Just(
            &b"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;e=1\r\nhello\r\n0\r\nx-t: 1\r\n\r\n"
                [..]
        ),
        Just(&b"POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"[..]),
        Just(&b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"[..]),
        Just(&b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n"[..]),
        Just(&b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"[..]),
        Just(&b"\r\n"[..]),
    ];
    let piece = prop_oneof![
        4 => request.prop_map(<[u8]>::to_vec),
        1 => proptest::collection::vec(any::<u8>(), 0..6),
    ];
    (any::<[u8; 3]>(), proptest::collection::vec(piece, 0..6)).prop_map(|(head, parts)| {
        let mut v = head.to_vec();
        for p in parts {
            v.extend_from_slice(&p);
        }
        v
    })
}

/// A header name that is not one the codec interprets.
fn plain_name() -> impl Strategy<Value = HeaderName> {
    "[a-z][a-z0-9-]{0,15}"
        .prop_filter("codec-interpreted name", |n| {
            !["host", "content-length", "transfer-encoding", "connection", "expect", "upgrade"].contains(&n.as_str())
        })
        .prop_map(|n| HeaderName::from_bytes(n.as_bytes()).unwrap())
}

/// A field value as it survives parsing: no leading/trailing whitespace.
fn value() -> impl Strategy<Value = HeaderValue> {
    prop_oneof![Just(String::new()), "[!-~]", "[!-~][ -~\t]{0,30}[!-~]",]
        .prop_map(|v| HeaderValue::from_str(&v).unwrap())
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::GET),
        Just(Method::POST),
        Just(Method::PUT),
        Just(Method::DELETE),
        Just(Method::PATCH),
        Just(Method::from_bytes(b"PURGE").unwrap()),
    ]
}

fn framing() -> impl Strategy<Value = BodyFraming> {
    prop_oneof![Just(BodyFraming::None), any::<u64>().prop_map(BodyFraming::Length), Just(BodyFraming::Chunked),]
}

proptest! {
    #[test]
    fn generated_requests_round_trip(
        method in method(),
        path in "/[A-Za-z0-9._~!$&'()*+,;=:@%/-]{0,40}(\\?[A-Za-z0-9=&%/?-]{0,20})?",
        host in "[a-z][a-z0-9.-]{0,20}(:[0-9]{1,4})?",
        fields in proptest::collection::vec((plain_name(), value()), 0..20),
        framing in framing(),
        cut in any::<prop::sample::Index>(),
    ) {
        let uri: Uri = path.parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(http::header::HOST, HeaderValue::from_str(&host).unwrap());
        for (name, value) in fields {
            headers.append(name, value);
        }
        let mut out = BytesMut::new();
        encode_request_head(&method, &uri, &headers, framing, &mut out);
        let wire = out.to_vec();

        // Decode from two reads split anywhere.
        let cut = cut.index(wire.len());
        let mut decoder = RequestDecoder::new(Limits::default());
        let mut buf = BytesMut::from(&wire[..cut]);
        prop_assert!(decoder.decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(&wire[cut..]);
        let req = decoder.decode(&mut buf).unwrap().unwrap();
        prop_assert!(buf.is_empty());

        prop_assert_eq!(&req.method, &method);
        prop_assert_eq!(&req.uri, &uri);
        prop_assert_eq!(req.framing, framing);
        prop_assert_eq!(req.authority.as_ref().map(|a| a.as_str()), Some(host.as_str()));
        let mut decoded = req.headers;
        decoded.remove(http::header::CONTENT_LENGTH);
        decoded.remove(http::header::TRANSFER_ENCODING);
        prop_assert_eq!(decoded, headers);
        prop_assert!(req.keep_alive);
    }

    #[test]
    fn generated_chunked_bodies_round_trip(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..300), 0..10),
        trailers in proptest::collection::vec((plain_name(), value()), 0..4),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let mut wire = Vec::new();
        for chunk in &chunks {
            let mut line = BytesMut::new();
            encode_chunk_size(chunk.len() as u64, &mut line);
            wire.extend_from_slice(&line);
            wire.extend_from_slice(chunk);
            wire.extend_from_slice(CRLF);
        }
        let mut map = HeaderMap::new();
        for (name, value) in trailers {
            map.append(name, value);
        }
        let mut tail = BytesMut::new();
        encode_last_chunk(Some(&map), &mut tail);
        wire.extend_from_slice(&tail);

        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(wire.len() + 1)).collect();
        points.push(0);
        points.push(wire.len());
        points.sort_unstable();
        let mut decoder = BodyDecoder::new(BodyFraming::Chunked, Limits::default());
        let mut buf = BytesMut::new();
        let (mut data, mut got_trailers, mut end) = (Vec::new(), None, false);
        for w in points.windows(2) {
            buf.extend_from_slice(&wire[w[0]..w[1]]);
            while let Some(event) = decoder.decode(&mut buf).unwrap() {
                match event {
                    BodyEvent::Data(d) => data.extend_from_slice(&d),
                    BodyEvent::Trailers(t) => got_trailers = Some(t),
                    BodyEvent::End => end = true,
                }
            }
        }
        prop_assert!(end);
        prop_assert!(buf.is_empty());
        prop_assert_eq!(data, chunks.concat());
        prop_assert_eq!(got_trailers.unwrap_or_default(), map);
    }
}
