//! The upstream pool closes idle connections when their `idle_timeout`
//! passes, whether or not another request comes (issue 11: the timeout was
//! checked only when a connection was taken, so idle sockets lingered).

use nuncio_test_support::{Admin, Proxy, TIMEOUT, Upstream, catch_all};
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
    let config = catch_all("", "", "    idle_timeout: 200ms\n    endpoints: [ '{app}' ]");
    let proxy = Proxy::start(&format!("workers: 1\n{config}"), &[("app", origin.addr)]);
    assert_eq!(proxy.get("/").text(), "ok\n");
    proxy.wait_for_stats(&["nuncio_upstream_cx_active{cluster=\"app\"}: 1"]);

    // No other request: the pool's own timer closes it.
    closed.recv_timeout(TIMEOUT).expect("nuncio closed the idle connection");
    proxy.wait_for_stats(&["nuncio_upstream_cx_active{cluster=\"app\"}: 0"]);

    // The next request opens a new one.
    assert_eq!(proxy.get("/").text(), "ok\n");
    assert_eq!(origin.connections(), 2);
}
