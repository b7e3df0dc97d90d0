//! The admin listener, served by main: `GET /ready` and `GET /config_dump`.
//!
//! Separate from the data plane on purpose: it keeps answering (and says
//! "not ready") while workers start, and nothing it does touches a worker.

use std::cell::Cell;
use std::rc::Rc;

use bytes::BytesMut;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Version, header};
use nuncio_http1::{BodyFraming, Limits, RequestDecoder};
use nuncio_runtime::Slot;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

use crate::snapshot::Snapshot;
use crate::upstream::http1::write_all_vectored;

/// What admin handlers read, all on main.
pub(crate) struct AdminState {
    pub(crate) snapshot: Slot<Snapshot>,
    /// True once every worker serves its listeners.
    pub(crate) ready: Cell<bool>,
}

/// Accepts admin connections on main.
pub(crate) async fn serve(listener: TcpListener, state: Rc<AdminState>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        tokio::task::spawn_local(connection(stream, state.clone()));
    }
}

/// One request per connection: admin traffic is rare, simplicity wins.
async fn connection(mut stream: TcpStream, state: Rc<AdminState>) {
    let mut buf = BytesMut::with_capacity(4096);
    let mut decoder = RequestDecoder::new(Limits::default());
    let request = loop {
        match decoder.decode(&mut buf) {
            Ok(Some(request)) => break request,
            Ok(None) => {}
            Err(e) => return respond(&mut stream, e.status(), "text/plain", format!("bad request: {e}\n")).await,
        }
        match tokio::time::timeout(std::time::Duration::from_secs(10), stream.read_buf(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return,
        }
    };
    let path = request.uri.path();
    let (status, content_type, body) = match (&request.method, path) {
        (&Method::GET, "/ready") if state.ready.get() => (StatusCode::OK, "text/plain", "ready\n".to_owned()),
        (&Method::GET, "/ready") => (StatusCode::SERVICE_UNAVAILABLE, "text/plain", "starting\n".to_owned()),
        (&Method::GET, "/config_dump") => match state.snapshot.get() {
            // The version is a comment, so the dump still reads back as a config.
            Ok(snapshot) => {
                let dump = format!("# config version {}\n{}", snapshot.version, snapshot.config.to_yaml());
                (StatusCode::OK, "application/yaml", dump)
            }
            Err(e) => (StatusCode::SERVICE_UNAVAILABLE, "text/plain", format!("no config: {e}\n")),
        },
        (_, "/ready" | "/config_dump") => (StatusCode::METHOD_NOT_ALLOWED, "text/plain", "use GET\n".to_owned()),
        _ => (StatusCode::NOT_FOUND, "text/plain", "admin endpoints: GET /ready, GET /config_dump\n".to_owned()),
    };
    respond(&mut stream, status, content_type, body).await;
}

async fn respond(stream: &mut TcpStream, status: StatusCode, content_type: &'static str, body: String) {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    let mut head = BytesMut::new();
    nuncio_http1::encode_response_head(
        status,
        Version::HTTP_11,
        &headers,
        BodyFraming::Length(body.len() as u64),
        &mut head,
    );
    let _ = write_all_vectored(stream, &[&head, body.as_bytes()]).await;
}
