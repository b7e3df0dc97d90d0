//! Requests and responses pass through nuncio intact: bodies in every
//! framing, HEAD, keep-alive on both sides, pipelining, `Expect:
//! 100-continue` and protocol upgrades.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;

use nuncio_test_support::{Admin, Client, Proxy, RawClient, TIMEOUT, Upstream, exchange, get, rt};

#[test]
fn get_is_forwarded_and_answered() {
    let upstream = Upstream::echo("app");
    let proxy = Proxy::to(&upstream);

    let reply = get(proxy.addr(), "/hello?x=1");

    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "hello from app\n");
    let seen = upstream.last_request();
    assert_eq!((seen.method.as_str(), seen.target.as_str()), ("GET", "/hello?x=1"));
}

#[test]
fn post_with_content_length_body() {
    let upstream = Upstream::echo("app");
    let proxy = Proxy::to(&upstream);

    let request = http::Request::post("/upload").body(Full::new(Bytes::from_static(b"name=nuncio"))).unwrap();
    let reply = Client::connect(proxy.addr()).send(request);

    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "name=nuncio");
    assert_eq!(upstream.last_request().header("content-length"), "11");
}

#[test]
fn post_with_chunked_body() {
    let upstream = Upstream::echo("app");
    let proxy = Proxy::to(&upstream);

    let reply = exchange(
        proxy.addr(),
        "POST /upload HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    );

    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "hello world");
    assert_eq!(upstream.last_request().body, b"hello world");
}

#[test]
fn one_megabyte_body_streams_through_in_both_directions() {
    let upstream = Upstream::echo("app");
    let proxy = Proxy::to(&upstream);
    let body: Vec<u8> = (0..1024 * 1024).map(|i: u32| (i % 251) as u8).collect();

    // Sent in 16 chunks of 64 KiB, each its own write.
    let mut client = RawClient::connect(proxy.addr());
    client.send("POST /big HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n");
    for piece in body.chunks(64 * 1024) {
        client.send(format!("{:x}\r\n", piece.len()));
        client.send(piece);
        client.send("\r\n");
    }
    client.send("0\r\n\r\n");
    let reply = client.response();

    assert_eq!(reply.status, 200);
    assert_eq!(upstream.last_request().body.len(), body.len());
    assert!(reply.body == body, "the echoed body differs");
}

#[test]
fn large_content_length_body_streams_through() {
    let upstream = Upstream::echo("app");
    let proxy = Proxy::to(&upstream);
    // Over the retry buffer: forwarded as it arrives, with its length.
    let body = vec![b'x'; 300 * 1024];

    let request = http::Request::post("/big").body(Full::new(Bytes::from(body.clone()))).unwrap();
    let reply = Client::connect(proxy.addr()).send(request);

    assert_eq!(reply.status, 200);
    assert_eq!(reply.body.len(), body.len());
    assert_eq!(upstream.last_request().header("content-length"), "307200");
}

#[test]
fn body_read_ahead_leaves_before_nuncio_waits_for_more() {
    // The upstream sends its head and 40 KiB of a 41 KiB body at once:
    // more than nuncio's 20 KiB read buffer, so nuncio reads pieces back to
    // back and keeps one to leave with the next (one write).
    let mut first = b"HTTP/1.1 200 OK\r\nContent-Length: 41984\r\n\r\n".to_vec();
    first.extend(std::iter::repeat_n(b'a', 40 * 1024));
    let (upstream, sent, received) = pausing_upstream(first, vec![b'b'; 1024]);
    let proxy = Proxy::to(&upstream);

    let mut client = RawClient::connect(proxy.addr());
    client.send("GET / HTTP/1.1\r\nHost: app\r\n\r\n");
    wait(&sent);
    let head = read_head(&mut client);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // Every byte the upstream sent, while it waits.
    assert!(client.read_exact_bytes(40 * 1024).iter().all(|&b| b == b'a'));
    received.notify_one();
    assert!(client.read_exact_bytes(1024).iter().all(|&b| b == b'b'));
}

#[test]
fn chunks_that_came_together_leave_together_and_before_nuncio_waits() {
    // Eight chunks in one write, then the upstream waits for the client to
    // have them before it sends the last: nuncio gathers chunks that came
    // together into one write, but never keeps one while it waits.
    let chunks =
        |c: u8, n: usize| -> Vec<u8> { (0..n).flat_map(|_| [&b"3e8\r\n"[..], &[c; 1000], b"\r\n"].concat()).collect() };
    let first = [&b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"[..], &chunks(b'a', 8)].concat();
    let rest = [&chunks(b'b', 1)[..], b"0\r\n\r\n"].concat();
    let (upstream, sent, received) = pausing_upstream(first, rest);
    let proxy = Proxy::to(&upstream);

    let mut client = RawClient::connect(proxy.addr());
    client.send("GET / HTTP/1.1\r\nHost: app\r\n\r\n");
    wait(&sent);
    let head = read_head(&mut client);
    assert!(head.to_ascii_lowercase().contains("transfer-encoding: chunked"), "{head}");
    // The eight chunks' data, while the upstream waits.
    let mut body = Vec::new();
    while body.len() < 8000 {
        body.extend(read_chunk(&mut client).expect("a chunk, not the end"));
    }
    assert_eq!(body, vec![b'a'; 8000]);
    received.notify_one();
    assert_eq!(read_chunk(&mut client), Some(vec![b'b'; 1000]));
    assert_eq!(read_chunk(&mut client), None, "the last chunk");
    assert_eq!(client.read_exact_bytes(2), b"\r\n");
}

/// An upstream that answers a request with `first`, says so through the
/// first notify, waits for the second, then sends `rest`.
fn pausing_upstream(first: Vec<u8>, rest: Vec<u8>) -> (Upstream, Arc<tokio::sync::Notify>, Arc<tokio::sync::Notify>) {
    let sent = Arc::new(tokio::sync::Notify::new());
    let received = Arc::new(tokio::sync::Notify::new());
    let (sent_in, received_in) = (sent.clone(), received.clone());
    let (first, rest) = (Arc::new(first), Arc::new(rest));
    let upstream = Upstream::raw("app", move |mut conn| {
        let (sent, received, first, rest) = (sent_in.clone(), received_in.clone(), first.clone(), rest.clone());
        async move {
            if conn.read_request().await.is_some() {
                conn.write(&first).await;
                sent.notify_one();
                received.notified().await;
                conn.write(&rest).await;
                conn.read_request().await;
            }
        }
    });
    (upstream, sent, received)
}

fn wait(notify: &tokio::sync::Notify) {
    rt().block_on(async { tokio::time::timeout(TIMEOUT, notify.notified()).await }).expect("the upstream sent");
}

fn read_head(client: &mut RawClient) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.extend(client.read_exact_bytes(1));
    }
    String::from_utf8(head).unwrap()
}

/// One chunk's data; `None` for the last chunk (its line only).
fn read_chunk(client: &mut RawClient) -> Option<Vec<u8>> {
    let mut line = Vec::new();
    while !line.ends_with(b"\r\n") {
        line.extend(client.read_exact_bytes(1));
    }
    let size = usize::from_str_radix(std::str::from_utf8(&line[..line.len() - 2]).unwrap(), 16).unwrap();
    if size == 0 {
        return None;
    }
    let data = client.read_exact_bytes(size);
    assert_eq!(client.read_exact_bytes(2), b"\r\n");
    Some(data)
}

#[test]
fn chunked_response_arrives_intact() {
    let upstream = Upstream::fixed(
        "app",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    );
    let proxy = Proxy::to(&upstream);

    let reply = get(proxy.addr(), "/");

    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "hello world");
}

#[test]
fn chunked_response_trailers_are_relayed() {
    // A keep-alive upstream answering every request with a trailer.
    let upstream = Upstream::raw("app", |mut conn| async move {
        while conn.read_request().await.is_some() {
            conn.write(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nx-checksum: 42\r\n\r\n",
            )
            .await;
        }
    });
    let proxy = Proxy::to(&upstream);

    let mut client = RawClient::connect(proxy.addr());
    for _ in 0..2 {
        client.send("GET / HTTP/1.1\r\nHost: test\r\n\r\n");
        let reply = client.response();
        assert_eq!(reply.text(), "hello");
        assert_eq!(reply.trailers.get("x-checksum").map(|v| v.as_bytes()), Some(&b"42"[..]));
    }
    // The upstream connection was complete after the trailers: reused.
    assert_eq!(upstream.connections(), 1);
}

#[test]
fn close_delimited_response_arrives_intact() {
    // An HTTP/1.0-style upstream: no length, the body ends when it closes.
    let upstream = Upstream::fixed("app", b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello until close");
    let proxy = Proxy::to(&upstream);

    let mut client = Client::connect(proxy.addr());
    let reply = client.get("/");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "hello until close");

    // Re-framed for the client, whose connection stays open.
    assert_eq!(client.get("/").text(), "hello until close");
}

#[test]
fn close_delimited_response_to_an_http10_client() {
    let upstream = Upstream::fixed("app", b"HTTP/1.0 200 OK\r\n\r\nhello until close");
    let proxy = Proxy::to(&upstream);

    let mut client = RawClient::connect(proxy.addr());
    client.send("GET / HTTP/1.0\r\n\r\n");
    let reply = client.response();

    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "hello until close");
    assert!(reply.head.starts_with("HTTP/1.0 200"), "{}", reply.head);
    assert!(client.is_closed());
}

#[test]
fn head_gets_the_headers_and_no_body() {
    let upstream = Upstream::echo("app");
    let proxy = Proxy::to(&upstream);

    let mut client = RawClient::connect(proxy.addr());
    client.send("HEAD /page HTTP/1.1\r\nHost: test\r\n\r\n");
    let reply = client.head_response();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-length"), "15", "the length of the GET body");
    assert_eq!(upstream.last_request().method, "HEAD");

    // No stray body bytes: the next response on the connection parses.
    client.send("GET /page HTTP/1.1\r\nHost: test\r\n\r\n");
    assert_eq!(client.response().text(), "hello from app\n");
}

#[test]
fn keep_alive_on_both_sides() {
    let upstream = Upstream::echo("app");
    let proxy = Proxy::to(&upstream);

    let mut client = RawClient::connect(proxy.addr());
    for i in 0..5 {
        client.send(format!("GET /{i} HTTP/1.1\r\nHost: test\r\n\r\n"));
        let reply = client.response();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("x-path"), format!("/{i}"));
    }

    assert_eq!(upstream.requests().len(), 5);
    assert!(upstream.connections() < 5, "upstream connections are reused: {}", upstream.connections());
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let upstream = Upstream::echo("app");
    let proxy = Proxy::to(&upstream);

    let mut client = RawClient::connect(proxy.addr());
    client.send(
        "GET /1 HTTP/1.1\r\nHost: test\r\n\r\n\
         POST /2 HTTP/1.1\r\nHost: test\r\nContent-Length: 3\r\n\r\ntwo\
         GET /3 HTTP/1.1\r\nHost: test\r\n\r\n",
    );

    let first = client.response();
    let second = client.response();
    let third = client.response();
    assert_eq!(first.header("x-path"), "/1");
    assert_eq!((second.header("x-path"), second.text().as_str()), ("/2", "two"));
    assert_eq!(third.header("x-path"), "/3");
}

#[test]
fn expect_100_continue_gets_100_then_the_response() {
    let upstream = Upstream::echo("app");
    let proxy = Proxy::to(&upstream);

    let mut client = RawClient::connect(proxy.addr());
    client.send("POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    let interim = client.response();
    assert_eq!(interim.status, 100);

    client.send("hello");
    let reply = client.response();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "hello");
    // The expectation goes upstream, and the 100 the client got is the
    // upstream's go (issue 14: nuncio no longer answers 100 itself).
    assert_eq!(upstream.last_request().header("expect"), "100-continue");
}

#[test]
fn upgrade_passes_bytes_both_ways() {
    // A WebSocket-style upstream: 101, then it echoes what it gets.
    let upstream = Upstream::raw("ws", |mut conn| async move {
        if conn.read_request().await.is_none() {
            return;
        }
        conn.write(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n").await;
        while let Some(bytes) = conn.read_exact_bytes(4).await {
            conn.write(&bytes).await;
        }
    });
    let proxy = Proxy::to(&upstream);

    let mut client = RawClient::connect(proxy.addr());
    client.send("GET /chat HTTP/1.1\r\nHost: test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    let reply = client.head_response();
    assert_eq!(reply.status, 101);
    assert_eq!(reply.header("upgrade"), "websocket");

    for message in ["ping", "pong", "done"] {
        client.send(message);
        assert_eq!(client.read_exact_bytes(4), message.as_bytes());
    }
    let seen = upstream.last_request();
    assert_eq!((seen.header("connection"), seen.header("upgrade")), ("upgrade", "websocket"));
}

#[test]
fn upgrade_answer_names_the_protocol_the_upstream_chose() {
    let upstream =
        Upstream::fixed("ws", b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n");
    let proxy = Proxy::to(&upstream);

    let mut client = RawClient::connect(proxy.addr());
    client.send("GET /chat HTTP/1.1\r\nHost: test\r\nConnection: upgrade\r\nUpgrade: foo/2, websocket\r\n\r\n");
    let reply = client.head_response();

    assert_eq!(reply.status, 101);
    assert_eq!(reply.header("upgrade"), "websocket");
    // Only the protocol nuncio tunnels goes upstream (issue 11: an upgrade
    // the route does not allow must not reach the origin).
    assert_eq!(upstream.last_request().header("upgrade"), "websocket");
}

#[test]
fn switching_protocols_without_an_upgrade_request_is_502() {
    // A 101 nobody asked for would turn the client connection into a raw
    // tunnel to the upstream, past every route.
    let upstream =
        Upstream::fixed("rogue", b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n");
    let proxy = Proxy::to(&upstream);

    assert_eq!(get(proxy.addr(), "/").status, 502);
}

#[test]
fn declined_upgrade_is_an_ordinary_response() {
    let upstream = Upstream::echo("app");
    let proxy = Proxy::to(&upstream);

    let mut client = RawClient::connect(proxy.addr());
    client.send("GET / HTTP/1.1\r\nHost: test\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n");
    assert_eq!(client.response().status, 200);
    client.send("GET / HTTP/1.1\r\nHost: test\r\n\r\n");
    assert_eq!(client.response().status, 200);
}

#[test]
fn connection_close_from_the_client_is_honoured() {
    let upstream = Upstream::echo("app");
    let proxy = Proxy::to(&upstream);

    let mut client = RawClient::connect(proxy.addr());
    client.send("GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    let reply = client.response();

    assert_eq!((reply.status, reply.header("connection")), (200, "close"));
    assert!(client.is_closed());
}

#[test]
fn http10_keep_alive_client() {
    let upstream = Upstream::echo("app");
    let proxy = Proxy::to(&upstream);

    let mut client = RawClient::connect(proxy.addr());
    for _ in 0..2 {
        client.send("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let reply = client.response();
        assert!(reply.head.starts_with("HTTP/1.0 200"), "{}", reply.head);
        assert_eq!(reply.header("connection"), "keep-alive");
        assert_eq!(reply.text(), "hello from app\n");
    }
    client.send("GET / HTTP/1.0\r\n\r\n");
    assert_eq!(client.response().status, 200);
    assert!(client.is_closed(), "HTTP/1.0 without keep-alive closes");
}

#[test]
fn absolute_form_target_is_forwarded_in_origin_form() {
    let upstream = Upstream::echo("app");
    let proxy = Proxy::to(&upstream);

    exchange(proxy.addr(), "GET http://app.example.com/path?q=1 HTTP/1.1\r\nHost: other.example.com\r\n\r\n");

    let seen = upstream.last_request();
    assert_eq!(seen.target, "/path?q=1");
    assert_eq!(seen.header("host"), "app.example.com");
}

#[test]
fn stale_pooled_connection_is_not_used() {
    // The upstream answers one request per connection, then closes it
    // (FIN) while nuncio has it pooled, and reports once nuncio's end has
    // the FIN. A request nuncio still sent on it would reach the upstream
    // (its reading side stays open), fail there, and be retried for free
    // on a fresh connection: the client would not notice, so the test
    // looks at both ends.
    let (closed_tx, closed) = std::sync::mpsc::channel();
    let closed_tx = Arc::new(Mutex::new(closed_tx));
    let upstream = Upstream::raw("app", move |mut conn| {
        let closed_tx = closed_tx.clone();
        async move {
            if conn.read_request().await.is_some() {
                conn.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
                conn.close_write().await;
                let _ = closed_tx.lock().unwrap().send(());
                // Recorded, unanswered: a request on a closed connection.
                conn.read_request().await;
            }
        }
    });
    let proxy = Proxy::to(&upstream);

    let mut client = Client::connect(proxy.addr());
    for _ in 0..3 {
        assert_eq!(client.get("/").text(), "ok");
        closed.recv_timeout(TIMEOUT).expect("the upstream closed the connection");
    }

    assert_eq!(upstream.connections(), 3);
    // Each try is counted before it goes out: a try on a stale connection
    // and its free retry would make 5.
    assert_eq!(proxy.stat(r#"nuncio_upstream_rq_total{cluster="app"}"#).as_deref(), Some("3"));
    let connections: Vec<usize> = upstream.requests().iter().map(|r| r.connection).collect();
    assert_eq!(connections, [0, 1, 2], "one request per connection, none on a closed one");
}

#[test]
fn pooled_connection_closed_under_the_request_is_retried_once_for_free() {
    // Closes right after each response, so nuncio may pool a connection
    // the upstream is closing: the request then goes out on a fresh one.
    let upstream = Upstream::raw("app", |mut conn| async move {
        if conn.read_request().await.is_some() {
            conn.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
        }
    });
    let proxy = Proxy::to(&upstream);

    let mut client = Client::connect(proxy.addr());
    for _ in 0..20 {
        assert_eq!(client.get("/").status, 200);
    }
}
