//! Hostile HTTP/1.1 clients and broken upstreams (issue 14), over raw
//! sockets: every obfuscated framing is refused or normalised so that the
//! origin sees exactly one well-framed request; slow heads and bodies are
//! cut off while a normal client is served; pipelining is answered in order;
//! `Expect: 100-continue` gets its `100` only when the upstream asks; every
//! upstream fault is a 5xx (or a cut response) for that stream only, with
//! Envoy's response flag in the access log.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nuncio_test_support::{Proxy, RawClient, Scratch, TIMEOUT, Upstream, catch_all, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An origin that records the raw bytes of every connection and answers
/// each request `200 ok` once it has a whole head (and its body, framed by
/// Content-Length or chunked).
fn recording_origin(bytes: Arc<Mutex<Vec<u8>>>) -> Upstream {
    Upstream::raw("recorder", move |mut conn| {
        let bytes = bytes.clone();
        async move {
            let mut buf = [0u8; 4096];
            loop {
                match conn.stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        let complete = {
                            let mut all = bytes.lock().unwrap();
                            all.extend_from_slice(&buf[..n]);
                            complete_request(&all)
                        };
                        if complete {
                            let _ = conn.stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n").await;
                        }
                    }
                }
            }
        }
    })
}

/// Whether `bytes` hold one whole request (head and body as framed).
fn complete_request(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes);
    let Some((head, body)) = text.split_once("\r\n\r\n") else { return false };
    let head = head.to_ascii_lowercase();
    if head.contains("transfer-encoding: chunked") {
        return body.ends_with("0\r\n\r\n");
    }
    let length = head.lines().find_map(|l| l.strip_prefix("content-length: ")?.trim().parse::<usize>().ok());
    body.len() >= length.unwrap_or(0)
}

fn proxy_to(origin: &Upstream, listener: &str) -> Proxy {
    Proxy::start(&catch_all(listener, "", "    endpoints: [ '{app}' ]"), &[("app", origin.addr)])
}

/// Sends `request` and reads what comes back until nuncio closes or goes
/// quiet; the text, and whether the connection closed.
fn send_raw(proxy: &Proxy, request: &[u8]) -> (String, bool) {
    let mut stream = TcpStream::connect(proxy.addr()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    stream.write_all(request).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match stream.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => break false,
            Err(_) => break true,
        }
    };
    (String::from_utf8_lossy(&got).into_owned(), closed)
}

#[test]
fn obfuscated_framing_is_refused_or_normalised_into_one_request() {
    let cases: &[(&str, &str)] = &[
        (
            "te with a space before the colon",
            "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding : chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "te list not ending in chunked",
            "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "te with an unknown coding",
            "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        ("te xchunked", "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        ("te with a tab", "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding:\tchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        (
            "te and cl together",
            "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        ("cl with a sign", "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: +5\r\n\r\nhello"),
        ("cl negative", "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: -5\r\n\r\nhello"),
        ("cl with leading zeros", "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 005\r\n\r\nhello"),
        ("two different cls", "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
        ("a cl list of equal values", "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 5\r\n\r\nhello"),
        (
            "a chunk size that overflows",
            "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "a chunk size with a sign",
            "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n",
        ),
        ("bare cr in a field", "GET / HTTP/1.1\r\nHost: t\r\nX-A: a\rb\r\n\r\n"),
        ("lf-only lines", "GET / HTTP/1.1\nHost: t\n\n"),
        ("obs-fold", "GET / HTTP/1.1\r\nHost: t\r\nX-A: a\r\n b\r\n\r\n"),
        ("nul in a field", "GET / HTTP/1.1\r\nHost: t\r\nX-A: a\0b\r\n\r\n"),
        ("nul in the target", "GET /a\0b HTTP/1.1\r\nHost: t\r\n\r\n"),
        ("a space in the field name", "GET / HTTP/1.1\r\nHost: t\r\nX A: b\r\n\r\n"),
    ];
    for (what, request) in cases {
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let origin = recording_origin(bytes.clone());
        let proxy = proxy_to(&origin, "");
        let (answer, closed) = send_raw(&proxy, request.as_bytes());
        let status: u16 = answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let seen = String::from_utf8_lossy(&bytes.lock().unwrap()).into_owned();
        if (400..500).contains(&status) || status == 501 {
            assert!(closed, "{what}: refused ({status}) and the connection closed");
            assert!(seen.is_empty(), "{what}: refused, yet the origin saw {seen:?}");
        } else {
            assert_eq!(status, 200, "{what}: {answer:?}");
            // Normalised: exactly one request, framed one way only.
            assert_eq!(seen.matches(" HTTP/1.1\r\n").count(), 1, "{what}: {seen:?}");
            let head = seen.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
            let framings = ["content-length:", "transfer-encoding:"].iter().filter(|f| head.contains(**f)).count();
            assert!(framings <= 1, "{what}: {seen:?}");
            assert!(!head.contains('\0') && !head.contains("\r\n "), "{what}: {seen:?}");
            assert!(complete_request(seen.as_bytes()), "{what}: {seen:?}");
        }
    }
}

#[test]
fn a_thousand_pipelined_requests_are_answered_in_order() {
    let origin = Upstream::echo("app");
    let proxy = proxy_to(&origin, "");
    let mut all = String::new();
    for i in 0..1000 {
        all.push_str(&format!("GET /{i} HTTP/1.1\r\nHost: t\r\n\r\n"));
    }
    let mut client = RawClient::connect(proxy.addr());
    client.send(all);
    for i in 0..1000 {
        let reply = client.response();
        assert_eq!((reply.status, reply.header("x-path")), (200, format!("/{i}").as_str()));
    }
}

/// Sends `head`, then 5 body bytes every 100 ms (50 bytes a second) until
/// nuncio answers, calling `meanwhile` after each; what nuncio answered,
/// and when.
fn trickle_body(proxy: &Proxy, head: &[u8], mut meanwhile: impl FnMut()) -> (String, Duration) {
    let mut slow = TcpStream::connect(proxy.addr()).unwrap();
    slow.write_all(head).unwrap();
    let started = Instant::now();
    slow.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut answer = Vec::new();
    while started.elapsed() < TIMEOUT && answer.is_empty() {
        if slow.write_all(b"hello").is_err() {
            break;
        }
        let mut buf = [0u8; 1024];
        match slow.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        meanwhile();
    }
    (String::from_utf8_lossy(&answer).into_owned(), started.elapsed())
}

#[test]
fn a_trickled_body_is_cut_off_while_others_are_served() {
    let origin = Upstream::echo("app");
    let proxy = proxy_to(&origin, "    request_body_timeout: 1s\n    request_body_min_rate: 1000");
    let head = b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 10000000\r\n\r\n";
    let (answer, after) = trickle_body(&proxy, head, || {
        // Meanwhile, others are served at once.
        let quick = Instant::now();
        assert_eq!(nuncio_test_support::get(proxy.addr(), "/quick").status, 200);
        assert!(quick.elapsed() < Duration::from_secs(2));
    });
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(after < Duration::from_secs(5), "cut off after {after:?}");
}

#[test]
fn a_trickled_small_body_is_cut_off_and_never_reaches_the_upstream() {
    // 600 bytes: small enough to be read whole (kept for retries) before
    // the upstream is asked.
    let origin = Upstream::echo("app");
    let proxy = proxy_to(&origin, "    request_body_timeout: 1s\n    request_body_min_rate: 1000");
    let head = b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 600\r\n\r\n";
    let (answer, after) = trickle_body(&proxy, head, || {});
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(after < Duration::from_secs(5), "cut off after {after:?}");
    assert_eq!(origin.requests().len(), 0, "the upstream was asked");
}

#[test]
fn a_large_upload_at_a_decent_rate_is_not_cut_off() {
    let origin = Upstream::echo("app");
    // 200 KB at well over 1 KB/s, past the 1 s base timeout.
    let proxy = proxy_to(&origin, "    request_body_timeout: 1s\n    request_body_min_rate: 1000");
    let mut client = TcpStream::connect(proxy.addr()).unwrap();
    client.write_all(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 200000\r\n\r\n").unwrap();
    for _ in 0..20 {
        client.write_all(&[b'u'; 10_000]).unwrap();
        std::thread::sleep(Duration::from_millis(75));
    }
    client.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut head = [0u8; 12];
    client.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
}

#[test]
fn slowloris_connections_do_not_slow_a_normal_client() {
    let origin = Upstream::echo("app");
    let proxy = proxy_to(&origin, "    request_headers_timeout: 1s");
    let mut slow: Vec<TcpStream> = (0..200).map(|_| TcpStream::connect(proxy.addr()).unwrap()).collect();
    for stream in &mut slow {
        let _ = stream.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ");
    }
    let quick = Instant::now();
    assert_eq!(nuncio_test_support::get(proxy.addr(), "/").status, 200);
    assert!(quick.elapsed() < Duration::from_secs(2), "{:?}", quick.elapsed());
    // Each trickler is cut off by the head timeout.
    let mut answer = String::new();
    slow[0].set_read_timeout(Some(TIMEOUT)).unwrap();
    let _ = slow[0].read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}

#[test]
fn expect_100_continue_is_not_answered_before_the_upstream_asks() {
    // The upstream refuses the upload from its head alone, never sending 100.
    let origin = Upstream::raw("refuser", |mut conn| async move {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match conn.stream.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                _ => return,
            }
        }
        let _ =
            conn.stream.write_all(b"HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await;
    });
    let proxy = proxy_to(&origin, "");
    let mut client = RawClient::connect(proxy.addr());
    client.send("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\nExpect: 100-continue\r\n\r\n");
    let first = client.response();
    assert_eq!(first.status, 413, "the refusal, never a 100 before it");
}

#[test]
fn an_upstream_that_ignores_the_expectation_gets_the_body_after_a_second() {
    let origin = Upstream::echo("app");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorder = recording_origin(seen.clone());
    drop(origin);
    let proxy = proxy_to(&recorder, "");
    let mut client = RawClient::connect(proxy.addr());
    let started = Instant::now();
    client.send("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    // No 100 from this origin: nuncio says go after its wait.
    let interim = client.response();
    assert_eq!(interim.status, 100);
    assert!(started.elapsed() >= Duration::from_millis(900), "{:?}", started.elapsed());
    client.send("hello");
    assert_eq!(client.response().status, 200);
    let text = String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
    assert!(text.to_ascii_lowercase().contains("expect: 100-continue\r\n") && text.ends_with("hello"), "{text}");
}

#[test]
fn upstream_faults_are_5xx_for_their_stream_with_envoys_flags() {
    let faults: &[(&str, &'static [u8], &str, &str)] = &[
        ("accepts and closes", b"", "502", "UC"),
        ("a malformed status line", b"HTTP/1.1 2OO OK\r\n\r\n", "502", "UPE"),
        (
            "cl and te together",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            "502",
            "UPE",
        ),
        ("half a body then gone", b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this", "200", "UC"),
    ];
    for (what, answer, status, flag) in faults {
        let scratch = Scratch::new("faults");
        let log = scratch.path("access.log");
        let origin = Upstream::fixed("broken", answer);
        let listener =
            format!("    access_log: {{ path: '{}', format: \"%RESPONSE_CODE% %RESPONSE_FLAGS%\\n\" }}", log.display());
        let proxy = proxy_to(&origin, &listener);
        let _ = send_raw(&proxy, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
        wait_until("the access log line", || std::fs::read_to_string(&log).is_ok_and(|t| !t.is_empty()));
        let line = std::fs::read_to_string(&log).unwrap();
        assert_eq!(line.trim(), format!("{status} {flag}"), "{what}");
        // nuncio serves on.
        let healthy = Upstream::echo("app");
        let next = Proxy::start(&catch_all("", "", "    endpoints: [ '{app}' ]"), &[("app", healthy.addr)]);
        assert_eq!(next.get("/").status, 200);
    }
    // Headers that never end: cut at the head limit.
    let endless = Upstream::raw("endless", |mut conn| async move {
        if conn.read_request().await.is_none() {
            return;
        }
        let _ = conn.stream.write_all(b"HTTP/1.1 200 OK\r\n").await;
        let line = b"X-More: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n";
        for _ in 0..100_000 {
            if conn.stream.write_all(line).await.is_err() {
                return;
            }
        }
    });
    let proxy = proxy_to(&endless, "");
    let (answer, _) = send_raw(&proxy, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
}

#[test]
fn a_tunnel_is_ended_when_idle_and_its_bytes_are_logged() {
    let scratch = Scratch::new("tunnel");
    let log = scratch.path("access.log");
    let origin = Upstream::raw("ws", |mut conn| async move {
        if conn.read_request().await.is_none() {
            return;
        }
        conn.write(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n").await;
        while let Some(bytes) = conn.read_exact_bytes(4).await {
            conn.write(&bytes).await;
        }
    });
    let listener = format!(
        "    stream_idle_timeout: 1s\n    access_log: {{ path: '{}', format: \"%RESPONSE_CODE% %BYTES_RECEIVED% %BYTES_SENT%\\n\" }}",
        log.display()
    );
    let proxy = proxy_to(&origin, &listener);
    let mut client = RawClient::connect(proxy.addr());
    client.send("GET /chat HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    assert_eq!(client.head_response().status, 101);
    for message in ["ping", "pong"] {
        client.send(message);
        assert_eq!(client.read_exact_bytes(4), message.as_bytes());
    }
    // Then nothing: the tunnel ends after the idle timeout.
    let quiet = Instant::now();
    assert!(client.is_closed_within(Duration::from_secs(5)), "closed when idle");
    assert!(quiet.elapsed() >= Duration::from_millis(900));
    wait_until("the access log line", || std::fs::read_to_string(&log).is_ok_and(|t| !t.is_empty()));
    assert_eq!(std::fs::read_to_string(&log).unwrap().trim(), "101 8 8");
}
