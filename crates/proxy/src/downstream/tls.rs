//! TLS termination: a client's handshake with the listener's certificates
//! (chosen by SNI), under the listener's `handshake_timeout`, counted by
//! version, ALPN, resumption and failure reason.
//!
//! The config a handshake uses is the one in the snapshot the connection
//! was accepted under; a reload or certificate rotation changes it for the
//! next connections only (a connection keeps its session for life).

use std::net::SocketAddr;

use nuncio_tls::SessionInfo;
use tokio::net::TcpStream;

use crate::io::Io;
use crate::snapshot::TlsTermination;
use crate::worker::Worker;

/// The handshake on `socket`; `None` when it failed or timed out (counted,
/// logged at debug level: scanners and broken clients are common, and each
/// failure is the client's).
pub(super) async fn accept(
    worker: &Worker,
    listener: &str,
    tls: &TlsTermination,
    socket: TcpStream,
    peer: SocketAddr,
) -> Option<(Io, SessionInfo)> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.server.config.clone());
    let handshake = tokio::time::timeout(tls.handshake_timeout, acceptor.accept(socket)).await;
    let local = worker.local.get().ok()?;
    let stats = local.snapshot.stats.downstream_tls.get(listener);
    let stream = match handshake {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            let reason = nuncio_tls::failure_reason(&e);
            if let Some(stats) = stats {
                local.stats.inc(stats.failed(reason));
            }
            tracing::debug!(listener, %peer, reason, error = %nuncio_tls::describe(&e), "TLS handshake failed");
            return None;
        }
        Err(_) => {
            if let Some(stats) = stats {
                local.stats.inc(stats.failed("timeout"));
            }
            tracing::debug!(listener, %peer, "TLS handshake timed out");
            return None;
        }
    };
    let (_, conn) = stream.get_ref();
    let session = SessionInfo::of(conn, conn.server_name());
    if let Some(stats) = stats {
        stats.count(&local.stats, &session);
    }
    Some((Io::Tls(Box::new(stream.into())), session))
}
