//! Hostile HTTP/2 clients (issue 14), frames written byte by byte: each
//! flood or abuse is cut off early with `GOAWAY` (or refused), reaches the
//! upstream a bounded number of times, and costs other clients nothing —
//! each test ends by serving an ordinary request.

use std::time::Duration;

use nuncio_test_support::h2raw::{Hpack, RawH2, frame};
use nuncio_test_support::{Proxy, TIMEOUT, Upstream, catch_all, rt};

/// `ENHANCE_YOUR_CALM`, the GOAWAY code for a peer that misbehaves.
const ENHANCE_YOUR_CALM: u32 = 0xb;

fn proxy(upstream: &Upstream) -> Proxy {
    Proxy::start(&catch_all("", "", "    endpoints: [ '{app}' ]"), &[("app", upstream.addr)])
}

/// An ordinary h2c request through `proxy` still gets its answer at once.
fn others_are_served(proxy: &Proxy) {
    let status = rt().block_on(async {
        let tcp = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
        let (client, connection) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut client = client.ready().await.unwrap();
        let request = http::Request::builder().uri("http://t/ok").body(()).unwrap();
        let (response, _) = client.send_request(request, true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), response).await.expect("answered at once").unwrap().status()
    });
    assert_eq!(status, 200);
}

/// HEADERS (end of stream) for a GET on `stream`.
fn get(stream: u32) -> Vec<u8> {
    RawH2::encode(frame::HEADERS, frame::END_HEADERS | frame::END_STREAM, stream, &Hpack::get().0)
}

#[test]
fn rapid_reset_is_cut_off_and_reaches_the_upstream_a_bounded_number_of_times() {
    let upstream = Upstream::echo("app");
    let proxy = proxy(&upstream);
    let mut client = RawH2::connect(proxy.addr());
    // Streams opened and reset as fast as one write can carry them.
    let mut burst = Vec::new();
    for i in 0..2_000u32 {
        let id = 2 * i + 1;
        burst.extend(get(id));
        burst.extend(RawH2::encode(frame::RST_STREAM, 0, id, &8u32.to_be_bytes()));
    }
    client.send_bytes(&burst);
    let seen = client.read_until_goaway(TIMEOUT);
    assert!(seen.goaway().is_some() || seen.closed, "cut off: {} frames", seen.frames.len());
    let reached = upstream.requests().len();
    assert!(reached <= 300, "{reached} of 2,000 reset streams reached the upstream");
    others_are_served(&proxy);
}

#[test]
fn streams_nuncio_must_reset_are_bounded_too() {
    // MadeYouReset (CVE-2025-8671): each stream is valid, then made to be
    // reset by nuncio (a WINDOW_UPDATE of 0 is a stream error).
    let upstream = Upstream::echo("app");
    let proxy = proxy(&upstream);
    let mut client = RawH2::connect(proxy.addr());
    let mut burst = Vec::new();
    for i in 0..1_000u32 {
        let id = 2 * i + 1;
        burst.extend(RawH2::encode(frame::HEADERS, frame::END_HEADERS, id, &Hpack::get().0));
        burst.extend(RawH2::encode(frame::WINDOW_UPDATE, 0, id, &0u32.to_be_bytes()));
    }
    client.send_bytes(&burst);
    let seen = client.read_until_goaway(TIMEOUT);
    assert!(seen.goaway().is_some() || seen.closed, "cut off: {} resets", seen.resets());
    assert!(upstream.requests().len() <= 300, "{} reached the upstream", upstream.requests().len());
    others_are_served(&proxy);
}

#[test]
fn a_continuation_flood_is_cut_off_early() {
    let upstream = Upstream::echo("app");
    let proxy = proxy(&upstream);
    let mut client = RawH2::connect(proxy.addr());
    client.send_frame(frame::HEADERS, 0, 1, &Hpack::get().0);
    // Header fields without end, 1 KiB a frame, far past the 60 KiB limit.
    let mut block = Hpack::default();
    block.literal(b"x-flood", &[b'a'; 1000]);
    let mut sent = 0;
    for _ in 0..10_000 {
        if !client.send_frame(frame::CONTINUATION, 0, 1, &block.0) {
            break;
        }
        sent += 1;
    }
    let seen = client.read_until_goaway(TIMEOUT);
    assert!(seen.goaway().is_some() || seen.closed || seen.resets() > 0, "refused after {sent} frames");
    assert!(upstream.requests().is_empty(), "the head never reached the upstream");
    others_are_served(&proxy);
}

#[test]
fn an_hpack_bomb_is_refused() {
    // One 4 KiB field put in the dynamic table, then referenced 100 times in
    // one header block: 400 KiB of fields from a 4 KiB block.
    let upstream = Upstream::echo("app");
    let proxy = proxy(&upstream);
    let mut client = RawH2::connect(proxy.addr());
    let mut block = Hpack::get();
    block.literal_add(b"x-bomb", &[b'b'; 4000]);
    for _ in 0..100 {
        block.indexed(62);
    }
    client.send_frame(frame::HEADERS, frame::END_HEADERS | frame::END_STREAM, 1, &block.0);
    let seen = client.read_for(Duration::from_secs(2));
    assert!(upstream.requests().is_empty(), "the bomb never reached the upstream");
    assert!(seen.heads() <= 1, "{seen:?}");
    others_are_served(&proxy);
}

#[test]
fn hpack_amplification_over_a_connection_ends_it() {
    // A 4 KiB field indexed once, then every stream references it ten times
    // with one byte each: ~25 bytes on the wire, ~40 KiB of fields, each
    // forwarded in full to an HTTP/1.1 upstream.
    let upstream = Upstream::echo("app");
    let proxy = proxy(&upstream);
    let mut client = RawH2::connect(proxy.addr());
    let mut first = Hpack::get();
    first.literal_add(b"x-amp", &[b'a'; 4000]);
    client.send_frame(frame::HEADERS, frame::END_HEADERS | frame::END_STREAM, 1, &first.0);
    let mut burst = Vec::new();
    for i in 1..500u32 {
        let mut block = Hpack::get();
        for _ in 0..10 {
            block.indexed(62);
        }
        burst.extend(RawH2::encode(frame::HEADERS, frame::END_HEADERS | frame::END_STREAM, 2 * i + 1, &block.0));
    }
    client.send_bytes(&burst);
    let seen = client.read_until_goaway(TIMEOUT);
    let goaway = seen.goaway().expect("GOAWAY");
    assert_eq!(goaway.goaway_code(), Some(ENHANCE_YOUR_CALM));
    let reached = upstream.requests().len();
    assert!(reached < 100, "{reached} of 500 amplified requests reached the upstream");
    others_are_served(&proxy);
}

#[test]
fn an_ordinary_client_with_a_large_cookie_is_not_mistaken_for_amplification() {
    let upstream = Upstream::echo("app");
    let proxy = proxy(&upstream);
    let cookie = "c".repeat(4000);
    let statuses = rt().block_on(async {
        let tcp = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
        let (client, connection) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut statuses = Vec::new();
        for i in 0..400 {
            let mut client = client.clone().ready().await.unwrap();
            let request = http::Request::builder()
                .uri(format!("http://t/{i}"))
                .header("cookie", cookie.as_str())
                .body(())
                .unwrap();
            let (response, _) = client.send_request(request, true).unwrap();
            statuses.push(tokio::time::timeout(TIMEOUT, response).await.unwrap().map(|r| r.status().as_u16()));
        }
        statuses
    });
    assert!(statuses.iter().all(|s| matches!(s, Ok(200))), "{:?}", statuses.iter().find(|s| !matches!(s, Ok(200))));
}

#[test]
fn ping_and_settings_floods_leave_others_unharmed() {
    let upstream = Upstream::echo("app");
    let proxy = proxy(&upstream);
    for kind in [frame::PING, frame::SETTINGS] {
        let mut client = RawH2::connect(proxy.addr());
        let payload: &[u8] = if kind == frame::PING { &[7; 8] } else { &[] };
        let one = RawH2::encode(kind, 0, 0, payload);
        let flood: Vec<u8> = one.iter().copied().cycle().take(one.len() * 20_000).collect();
        // nuncio answers each (PING ACK, SETTINGS ACK) while this client
        // never reads: the writes back stall, and the flood with them.
        let _ = client.stream.set_write_timeout(Some(Duration::from_secs(2)));
        let _ = client.send_bytes(&flood);
        others_are_served(&proxy);
    }
}

#[test]
fn a_client_that_never_reads_holds_back_the_upstream_and_is_ended_when_idle() {
    // The upstream sends 10 MB; the client's window is never opened past
    // its start. nuncio reads the upstream only as the client takes bytes,
    // so the upstream is held back, and the stream ends after
    // stream_idle_timeout.
    let written = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = written.clone();
    let upstream = Upstream::raw("big", move |mut conn| {
        let counter = counter.clone();
        async move {
            use tokio::io::AsyncWriteExt;
            if conn.read_request().await.is_none() {
                return;
            }
            let head = b"HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\n";
            if conn.stream.write_all(head).await.is_err() {
                return;
            }
            let chunk = vec![b'z'; 64 * 1024];
            for _ in 0..(10_000_000 / chunk.len()) {
                if conn.stream.write_all(&chunk).await.is_err() {
                    return;
                }
                counter.fetch_add(chunk.len(), std::sync::atomic::Ordering::SeqCst);
            }
        }
    });
    let proxy = Proxy::start(
        &catch_all("    stream_idle_timeout: 1s", "", "    endpoints: [ '{app}' ]"),
        &[("app", upstream.addr)],
    );
    let mut client = RawH2::connect(proxy.addr());
    client.send_bytes(&get(1));
    // Read frames (the default 64 KiB window fills) but never give window
    // back.
    let seen = client.read_for(Duration::from_secs(4));
    let reset = seen.frames.iter().any(|f| f.kind == frame::RST_STREAM && f.stream == 1);
    assert!(reset, "the idle stream is reset: {:?}", seen.frames.iter().map(|f| f.kind).collect::<Vec<_>>());
    let sent = written.load(std::sync::atomic::Ordering::SeqCst);
    assert!(sent < 8_000_000, "the upstream was held back: it got {sent} bytes out");
    others_are_served(&proxy);
}

#[test]
fn an_empty_body_of_unknown_length_is_not_forwarded_chunked() {
    let upstream = Upstream::echo("app");
    let proxy = proxy(&upstream);
    let mut client = RawH2::connect(proxy.addr());
    // HEADERS without the end, then an empty DATA with it, in one write.
    let mut request = RawH2::encode(frame::HEADERS, frame::END_HEADERS, 1, &Hpack::get().0);
    request.extend(RawH2::encode(frame::DATA, frame::END_STREAM, 1, &[]));
    client.send_bytes(&request);
    let seen = client.read_for(Duration::from_secs(2));
    assert_eq!(seen.heads(), 1);
    let got = upstream.last_request();
    assert_eq!(got.header("transfer-encoding"), "", "no chunked framing for an empty body");
    assert!(got.body.is_empty());
}
