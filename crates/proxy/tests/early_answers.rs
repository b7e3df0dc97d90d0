//! An upstream that answers an upload before reading it (a `413` after the
//! head alone) and then stops reading or closes: the client gets that
//! answer, whichever protocol each side speaks (issue 11, defect 2). nuncio
//! reads the response while the body still goes out (full duplex), stops
//! sending when the upstream stopped taking it, and ends the client side
//! cleanly: a lingering close on HTTP/1.1, the stream closed on HTTP/2.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use bytes::Bytes;
use nuncio_test_support::{Proxy, TIMEOUT, Upstream, catch_all, rt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The upload: far more than every buffer on the way (socket buffers,
/// HTTP/2 windows) holds.
const UPLOAD: usize = 50 * 1024 * 1024;
const REFUSAL: &str = "too large for this origin\n";

/// An HTTP/1.1 origin that answers 413 as soon as it has a request head,
/// then closes without reading a byte of the body (the kernel resets the
/// connection: the body is unread).
fn http1_origin() -> Upstream {
    Upstream::raw("early", |mut conn| async move {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match conn.stream.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                _ => return,
            }
        }
        let answer = format!(
            "HTTP/1.1 413 Payload Too Large\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{REFUSAL}",
            REFUSAL.len()
        );
        let _ = conn.stream.write_all(answer.as_bytes()).await;
    })
}

/// An h2c origin that answers 413 to each stream at once and drops its
/// request body (the `h2` crate then resets the stream with `NO_ERROR`,
/// RFC 9113 §8.1), granting no more window.
fn http2_origin() -> Upstream {
    Upstream::raw("early-h2", |conn| async move {
        let Ok(mut server) = h2::server::handshake(conn.stream).await else { return };
        while let Some(Ok((request, mut respond))) = server.accept().await {
            drop(request);
            let response =
                http::Response::builder().status(413).header("content-length", REFUSAL.len()).body(()).unwrap();
            if let Ok(mut send) = respond.send_response(response, false) {
                let _ = send.send_data(Bytes::from_static(REFUSAL.as_bytes()), true);
            }
        }
    })
}

fn proxy(origin: &Upstream, protocol: &str) -> Proxy {
    let cluster = format!("    protocol: {protocol}\n    endpoints: [ '{{app}}' ]");
    Proxy::start(&catch_all("", "        timeout: 30s", &cluster), &[("app", origin.addr)])
}

/// Uploads `UPLOAD` bytes over HTTP/1.1 while reading the answer, as curl
/// does; returns the answer's status and body.
fn upload_http1(addr: SocketAddr) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream
        .write_all(format!("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: {UPLOAD}\r\n\r\n").as_bytes())
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let chunk = vec![b'x'; 64 * 1024];
        let mut sent = 0;
        while sent < UPLOAD {
            match writer.write(&chunk[..chunk.len().min(UPLOAD - sent)]) {
                Ok(n) => sent += n,
                // nuncio stopped reading (it answered and closed).
                Err(_) => break,
            }
        }
    });
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    let (head, body) = loop {
        let text = String::from_utf8_lossy(&response).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(|v| v.parse().unwrap()))
                .expect("the answer has a content-length");
            if body.len() >= length {
                break (head.to_owned(), body[..length].to_owned());
            }
        }
        match stream.read(&mut buf) {
            Ok(0) => panic!("nuncio closed before the whole answer: {text:?}"),
            Ok(n) => response.extend_from_slice(&buf[..n]),
            Err(e) => panic!("no answer from nuncio ({e}); got {text:?}"),
        }
    };
    sender.join().unwrap();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status line");
    (status, body)
}

/// The same over h2c: the body sent as nuncio's window allows, the answer
/// awaited beside it.
fn upload_http2(addr: SocketAddr) -> (u16, String) {
    rt().block_on(async {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (client, connection) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut client = client.ready().await.unwrap();
        let request = http::Request::builder().method("POST").uri("http://t/upload").body(()).unwrap();
        let (response, mut stream) = client.send_request(request, false).unwrap();
        let sender = tokio::spawn(async move {
            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
            let mut sent = 0;
            while sent < UPLOAD {
                stream.reserve_capacity(chunk.len());
                match std::future::poll_fn(|cx| stream.poll_capacity(cx)).await {
                    Some(Ok(n)) => {
                        let n = n.min(chunk.len()).min(UPLOAD - sent);
                        if stream.send_data(chunk.slice(..n), false).is_err() {
                            return;
                        }
                        sent += n;
                    }
                    // nuncio closed the stream (it answered).
                    _ => return,
                }
            }
            let _ = stream.send_data(Bytes::new(), true);
        });
        let response = tokio::time::timeout(TIMEOUT, response).await.expect("an answer in time").unwrap();
        let (parts, mut body) = response.into_parts();
        let mut text = Vec::new();
        while let Some(chunk) = tokio::time::timeout(TIMEOUT, body.data()).await.expect("the body in time") {
            text.extend_from_slice(&chunk.unwrap());
        }
        sender.abort();
        (parts.status.as_u16(), String::from_utf8_lossy(&text).into_owned())
    })
}

/// nuncio still serves after the exchange.
fn still_serves(proxy: &Proxy) {
    let reply = proxy.exchange("POST /again HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nok");
    assert_eq!(reply.status, 413, "the next request is answered too");
}

#[test]
fn the_early_answer_reaches_the_client_in_every_protocol_mix() {
    for (client, upstream) in [("http1", "http1"), ("http1", "http2"), ("http2", "http1"), ("http2", "http2")] {
        let origin = if upstream == "http1" { http1_origin() } else { http2_origin() };
        let proxy = proxy(&origin, upstream);
        let (status, body) = match client {
            "http1" => upload_http1(proxy.addr()),
            _ => upload_http2(proxy.addr()),
        };
        assert_eq!((status, body.as_str()), (413, REFUSAL), "{client} client, {upstream} upstream");
        still_serves(&proxy);
    }
}

/// An upstream that streams its answer back while it reads the request
/// (an echo, chunk by chunk): both directions at once, through nuncio,
/// without either side waiting for the other to finish.
#[test]
fn request_and_response_bodies_flow_at_the_same_time() {
    let origin = Upstream::raw("echo-stream", |mut conn| async move {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match conn.stream.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                _ => return,
            }
        }
        // Chunked request body in, each chunk straight back out.
        let _ = conn.stream.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").await;
        let mut buf = [0u8; 4096];
        loop {
            match conn.stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let _ = conn.stream.write_all(&buf[..n]).await;
                    if buf[..n].ends_with(b"0\r\n\r\n") {
                        return;
                    }
                }
            }
        }
    });
    let proxy = proxy(&origin, "http1");
    let mut client = TcpStream::connect(proxy.addr()).unwrap();
    client.set_read_timeout(Some(TIMEOUT)).unwrap();
    client.write_all(b"POST /chat HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    // Each message comes back before the next is sent: the upload is not
    // over, and nuncio relays the answer anyway.
    for message in ["ping", "pong", "done"] {
        client.write_all(format!("4\r\n{message}\r\n").as_bytes()).unwrap();
        while !String::from_utf8_lossy(&seen).contains(message) {
            let n = client.read(&mut buf).expect("the echo arrives while the upload goes on");
            assert!(n > 0, "nuncio closed: {:?}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
        }
    }
    client.write_all(b"0\r\n\r\n").unwrap();
    let text = String::from_utf8_lossy(&seen);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}
