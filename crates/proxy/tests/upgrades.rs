//! Protocol switches (issue 11, defect 3): only an upgrade the route allows
//! (WebSocket) becomes a tunnel, and only after the upstream's `101` for
//! that same protocol. An `h2c` upgrade is stripped and the request served
//! as a plain one, so that nobody reaches the origin past nuncio's routes,
//! filters and access log through a `101` tunnel — tried here as an
//! attacker would, against an origin that does switch to h2c.

use std::sync::{Arc, Mutex};

use nuncio_test_support::{Proxy, RawClient, Upstream, catch_all};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The request heads an origin saw, lower-cased, in order.
type Heads = Arc<Mutex<Vec<String>>>;

/// An origin that switches to any protocol it is asked for (`101`), then
/// treats whatever comes through the switched connection as HTTP/1.1
/// requests and answers each with the path it saw; a request without an
/// upgrade is answered plainly (`plain PATH`). Every head it sees is
/// recorded.
fn switching_origin() -> (Upstream, Heads) {
    let heads = Heads::default();
    let seen = heads.clone();
    let origin = Upstream::raw("switcher", move |mut conn| {
        let seen = seen.clone();
        async move {
            let mut switched = false;
            loop {
                let Some(head) = read_head(&mut conn.stream).await else { return };
                let path = head.split(' ').nth(1).unwrap_or("?").to_owned();
                seen.lock().unwrap().push(head.to_ascii_lowercase());
                let upgrade =
                    head.lines().find_map(|l| l.to_ascii_lowercase().strip_prefix("upgrade: ").map(str::to_owned));
                let answer = match upgrade {
                    Some(protocol) if !switched => {
                        switched = true;
                        format!(
                            "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: {protocol}\r\n\r\n"
                        )
                    }
                    _ => {
                        let body = if switched { format!("origin saw {path}\n") } else { format!("plain {path}\n") };
                        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len())
                    }
                };
                if conn.stream.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
    });
    (origin, heads)
}

/// The last head `heads` holds.
fn last(heads: &Heads) -> String {
    heads.lock().unwrap().last().cloned().expect("the origin saw a request")
}

async fn read_head(stream: &mut tokio::net::TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// nuncio answers `/admin` itself (403) and sends the rest to `origin`.
fn guarded_proxy(origin: &Upstream) -> Proxy {
    Proxy::start(
        "
listeners:
  - name: main
    address: 127.0.0.1:0
    routes:
      - match: { prefix: /admin }
        direct_response: { status: 403, body: \"nuncio says no\\n\" }
      - match: { prefix: / }
        cluster: app
clusters:
  - name: app
    endpoints: [ '{app}' ]
",
        &[("app", origin.addr)],
    )
}

#[test]
fn an_h2c_upgrade_is_served_as_a_plain_request_and_opens_no_tunnel() {
    let (origin, heads) = switching_origin();
    let proxy = guarded_proxy(&origin);
    let mut client = RawClient::connect(proxy.addr());
    client.send(
        "GET / HTTP/1.1\r\nHost: t\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\
         HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    );
    let reply = client.response();
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), "plain /\n", "the origin saw no upgrade");
    let seen = last(&heads);
    assert!(!seen.contains("upgrade"), "Upgrade: h2c is not forwarded: {seen}");
    assert!(!seen.contains("http2-settings"), "nor its settings: {seen}");

    // The connection is still nuncio's: the next request is routed, and
    // the route nuncio answers itself is not reachable at the origin.
    client.send("GET /admin/users HTTP/1.1\r\nHost: t\r\n\r\n");
    let reply = client.response();
    assert_eq!((reply.status, reply.text().as_str()), (403, "nuncio says no\n"));
    let heads = heads.lock().unwrap();
    assert!(heads.iter().all(|h| !h.contains("/admin")), "the origin saw no /admin: {heads:?}");
}

#[test]
fn a_101_for_another_protocol_than_asked_is_refused() {
    // Asked for websocket; the upstream switches to something else.
    let origin =
        Upstream::fixed("liar", b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n");
    let proxy = guarded_proxy(&origin);
    let mut client = RawClient::connect(proxy.addr());
    client.send("GET /chat HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    let reply = client.response();
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert!(reply.text().contains("switched protocols"), "{}", reply.text());
}

#[test]
fn websocket_still_tunnels_and_only_websocket_goes_upstream() {
    let (origin, heads) = switching_origin();
    let proxy = guarded_proxy(&origin);
    let mut client = RawClient::connect(proxy.addr());
    client.send("GET /chat HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: h2c, websocket\r\n\r\n");
    let reply = client.head_response();
    assert_eq!(reply.status, 101);
    assert_eq!(reply.header("upgrade"), "websocket");
    assert!(last(&heads).contains("\r\nupgrade: websocket\r\n"), "{}", last(&heads));
    // A tunnel now: what the client sends reaches the origin as is.
    client.send("GET /inside HTTP/1.1\r\nHost: t\r\n\r\n");
    let reply = client.response();
    assert_eq!(reply.text(), "origin saw /inside\n");
}

#[test]
fn an_h2c_upgrade_to_an_http2_cluster_is_forwarded_plainly() {
    // Before: "protocol upgrades go to HTTP/1.1 clusters only" (501). An
    // h2c upgrade is no upgrade to nuncio: the request is forwarded.
    let origin = Upstream::echo_h2("h2");
    let cluster = "    protocol: http2\n    endpoints: [ '{app}' ]";
    let proxy = Proxy::start(&catch_all("", "", cluster), &[("app", origin.addr)]);
    let reply = proxy.exchange(
        "GET /x HTTP/1.1\r\nHost: t\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), "hello from h2\n");
}
