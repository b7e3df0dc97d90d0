//! The upstream pool closes idle connections when their `idle_timeout`
//! passes, whether or not another request comes (issue 11: the timeout was
//! checked only when a connection was taken, so idle sockets lingered).

mod support;

use support::{Proxy, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[test]
fn an_idle_upstream_connection_is_closed_when_its_idle_timeout_passes() {
    // Answers keep-alive, then reports (on a channel) when nuncio closes
    // the connection.
    let (closed_tx, closed) = std::sync::mpsc::channel();
    let closed_tx = std::sync::Mutex::new(closed_tx);
    let origin = Upstream::raw("keepalive", move |mut conn| {
        let closed_tx = closed_tx.lock().unwrap().clone();
        async move {
            let mut buf = [0u8; 4096];
            loop {
                match conn.stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n";
                        let _ = conn.stream.write_all(answer).await;
                    }
                }
            }
            let _ = closed_tx.send(());
        }
    });
    let proxy = Proxy::start(
        "
workers: 1
listeners:
  - name: main
    address: 127.0.0.1:0
    routes:
      - match: {}
        cluster: app
clusters:
  - name: app
    idle_timeout: 200ms
    endpoints: [ '{app}' ]
",
        &[("app", origin.addr)],
    );
    let reply = support::get(proxy.addr(), "/");
    assert_eq!(reply.text(), "ok\n");
    support::wait_for_stats(&proxy, &["nuncio_upstream_cx_active{cluster=\"app\"}: 1"]);

    // No other request: the pool's own timer closes it.
    closed.recv_timeout(support::TIMEOUT).expect("nuncio closed the idle connection");
    support::wait_for_stats(&proxy, &["nuncio_upstream_cx_active{cluster=\"app\"}: 0"]);

    // The next request opens a new one.
    assert_eq!(support::get(proxy.addr(), "/").text(), "ok\n");
    assert_eq!(origin.connections(), 2);
}
