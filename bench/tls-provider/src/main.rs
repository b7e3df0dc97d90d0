//! Full and resumed TLS 1.3 handshakes per second (ECDSA P-256 server certificate, X25519),
//! and the cost of sealing and opening 16 KiB of application data, with the provider this
//! binary was built with. In memory, one thread: the crypto and rustls, not the kernel.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

#[cfg(feature = "ring")]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
#[cfg(feature = "aws-lc-rs")]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn pump(client: &mut ClientConnection, server: &mut ServerConnection) {
    let mut buf = Vec::with_capacity(64 * 1024);
    loop {
        let mut moved = false;
        while client.wants_write() {
            buf.clear();
            client.write_tls(&mut buf).unwrap();
            let mut wire = &buf[..];
            while !wire.is_empty() {
                server.read_tls(&mut wire).unwrap();
                server.process_new_packets().unwrap();
            }
            moved = true;
        }
        while server.wants_write() {
            buf.clear();
            server.write_tls(&mut buf).unwrap();
            let mut wire = &buf[..];
            while !wire.is_empty() {
                client.read_tls(&mut wire).unwrap();
                client.process_new_packets().unwrap();
            }
            moved = true;
        }
        if !moved {
            return;
        }
    }
}

/// This thread's CPU time (user + system), in seconds, from /proc: the
/// machine is shared, so wall time would count other processes' turns.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// Runs `one` for `seconds` of CPU time; prints ops per CPU-second and CPU µs per op.
fn rate(what: &str, seconds: f64, mut one: impl FnMut()) {
    let (start, cpu) = (Instant::now(), cpu_seconds());
    let mut n = 0u64;
    while cpu_seconds() - cpu < seconds && start.elapsed() < Duration::from_secs_f64(seconds * 10.0) {
        for _ in 0..16 {
            one();
        }
        n += 16;
    }
    let per = (cpu_seconds() - cpu) / n as f64;
    println!("{what}\t{:.0}/CPU-s\t{:.1} µs CPU", 1.0 / per, per * 1e6);
}

fn main() {
    let seconds: f64 = std::env::args().nth(1).map_or(3.0, |s| s.parse().unwrap());
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["bench.test".into()]).unwrap().self_signed(&key).unwrap();
    let cert_der: CertificateDer<'static> = cert.der().clone();
    let key_der = PrivateKeyDer::try_from(key.serialize_der()).unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(cert_der.clone()).unwrap();

    let server = Arc::new(
        ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert_der], key_der)
            .unwrap(),
    );
    let client_fresh = || {
        Arc::new(
            ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots.clone())
                .with_no_client_auth(),
        )
    };
    let name = ServerName::try_from("bench.test").unwrap();

    // Full: a client config whose session cache is never reused.
    let full = {
        let mut c = (*client_fresh()).clone();
        c.resumption = rustls::client::Resumption::disabled();
        Arc::new(c)
    };
    rate("full handshake", seconds, || {
        let mut c = ClientConnection::new(full.clone(), name.clone()).unwrap();
        let mut s = ServerConnection::new(server.clone()).unwrap();
        pump(&mut c, &mut s);
        assert!(!c.is_handshaking() && !s.is_handshaking());
    });
    // Resumed: one client config (its ticket cache), tickets from the server's cache.
    let resuming = client_fresh();
    let mut warm = ClientConnection::new(resuming.clone(), name.clone()).unwrap();
    let mut s = ServerConnection::new(server.clone()).unwrap();
    pump(&mut warm, &mut s);
    rate("resumed handshake", seconds, || {
        let mut c = ClientConnection::new(resuming.clone(), name.clone()).unwrap();
        let mut s = ServerConnection::new(server.clone()).unwrap();
        pump(&mut c, &mut s);
        assert!(!c.is_handshaking());
        assert_eq!(c.handshake_kind(), Some(rustls::HandshakeKind::Resumed));
    });
    // Bulk: 16 KiB sealed by the server and opened by the client.
    let mut c = ClientConnection::new(full.clone(), name.clone()).unwrap();
    let mut s = ServerConnection::new(server.clone()).unwrap();
    pump(&mut c, &mut s);
    let data = vec![b'x'; 16 * 1024];
    let mut out = vec![0u8; 16 * 1024];
    rate("16 KiB sealed+opened", seconds, || {
        s.writer().write_all(&data).unwrap();
        pump(&mut c, &mut s);
        let mut got = 0;
        while got < data.len() {
            got += c.reader().read(&mut out[got..]).unwrap();
        }
    });
}
