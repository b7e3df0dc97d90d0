//! The stress run: requests through a Go filter whose goroutines touch
//! their streams after random delays (some hooks defer, some stop and are
//! resumed late by a goroutine) while clients reset at random. No crash,
//! every live-stream and Go-object count back to zero at the end, resident
//! memory flat.
//!
//! 2,000 requests by default; `NUNCIO_GO_STRESS=100000` for the full run
//! (release mode: `NUNCIO_GO_STRESS=100000 cargo test --release -p
//! nuncio-filter-abi --test go_stress -- --nocapture`; figures in
//! docs/benchmarks.md).

// The run prints its figures.
#![allow(clippy::print_stdout)]

mod support;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An upstream that answers each GET (bodiless, as this run sends) with a
/// small 200 and records nothing: over 100,000 requests a recording one
/// would grow the process's memory, which this test measures.
fn quiet_upstream() -> Upstream {
    Upstream::raw("app", |mut conn| async move {
        const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        let (mut buf, mut chunk) = (Vec::new(), [0u8; 4096]);
        loop {
            while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                buf.drain(..end + 4);
                if conn.stream.write_all(ANSWER).await.is_err() {
                    return;
                }
            }
            match conn.stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
}

/// Sends one request and resets the connection (RST) without reading,
/// after a random short wait.
fn reset_one(addr: SocketAddr) {
    let Ok(mut stream) = TcpStream::connect(addr) else { return };
    let _ = stream.write_all(b"GET /stress/reset HTTP/1.1\r\nHost: test\r\n\r\n");
    if fastrand::bool() {
        std::thread::sleep(Duration::from_micros(fastrand::u64(0..2000)));
    }
    let socket = socket2::SockRef::from(&stream);
    let _ = socket.set_linger(Some(Duration::ZERO));
    drop(stream);
}

#[test]
fn goroutines_touch_streams_while_clients_reset() {
    let _serial = serial();
    let Some(library) = test_library() else { return };
    let total: u64 = std::env::var("NUNCIO_GO_STRESS").ok().and_then(|v| v.parse().ok()).unwrap_or(2_000);
    let upstream = quiet_upstream();
    let filters =
        format!("    filters:\n      - {{ name: go, config: {{ library: '{}', filter: stress }} }}", library.display());
    let proxy =
        start(&catch_all(&filters, "        timeout: 5s", "    endpoints: [ '{app}' ]"), &[("app", upstream.addr)]);
    let addr = proxy.addr();
    let started = Instant::now();
    let (done, resets, answered) =
        (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut rss_start = 0;
    let clients = 4;
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let (done, resets, answered) = (done.clone(), resets.clone(), answered.clone());
            std::thread::spawn(move || {
                let mut client = RawClient::connect(addr);
                while done.fetch_add(1, Ordering::Relaxed) < total {
                    if fastrand::u8(0..5) == 0 {
                        reset_one(addr);
                        resets.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    client.send(b"GET /stress HTTP/1.1\r\nHost: test\r\n\r\n");
                    match client.try_response() {
                        Some(response) => {
                            assert_eq!(response.status, 200, "{response:?}");
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        None => client = RawClient::connect(addr),
                    }
                }
            })
        })
        .collect();
    // Resident memory once the run is warm (a tenth of it).
    while done.load(Ordering::Relaxed) < total / 10 && started.elapsed() < Duration::from_secs(600) {
        std::thread::sleep(Duration::from_millis(5));
    }
    rss_start = rss_start.max(rss_kib());
    for h in handles {
        h.join().expect("a client");
    }
    let elapsed = started.elapsed();
    wait_until_idle();
    let rss_end = rss_kib();
    let stats = nuncio_filter_abi::library_stats().expect("the library is loaded");
    let count = |n: &str| {
        proxy
            .stats()
            .lines()
            .find(|l| l.starts_with(&format!("nuncio_filter_go_stress_{n}_total{{")))
            .and_then(|l| l.rsplit(": ").next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    println!(
        "stress: {total} requests ({} answered, {} reset) in {elapsed:.1?}; RSS {rss_start} KiB warm, {rss_end} KiB at the end; \
         live streams {}, Go streams {}, Go calls {}, Go goroutines {}; handle calls ok {}, refused {}, gone {}, other {}",
        answered.load(Ordering::Relaxed),
        resets.load(Ordering::Relaxed),
        nuncio_filter_abi::live_streams(),
        stats.streams,
        stats.calls,
        stats.goroutines,
        count("ok"),
        count("refused"),
        count("gone"),
        count("other"),
    );
    assert_eq!(nuncio_filter_abi::live_streams(), 0);
    assert_eq!((stats.streams, stats.calls, stats.goroutines), (0, 0, 0));
    assert_eq!(count("other"), 0, "every handle call succeeded or failed with a precise error");
    assert!(answered.load(Ordering::Relaxed) > 0);
    // Flat: what grows per request would show over a run this long.
    let growth = rss_end.saturating_sub(rss_start);
    assert!(growth < 32 * 1024, "RSS grew {growth} KiB ({rss_start} → {rss_end} KiB)");
    assert_eq!(proxy.get("/after").status, 200, "nuncio serves on");
}
