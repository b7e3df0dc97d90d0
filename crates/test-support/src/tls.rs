//! TLS fixtures: certificates made by the test ([`Pki`]: a CA and what it
//! signs, expired, self-signed and client certificates, written as PEM
//! files), a TLS echo upstream ([`Upstream::echo_tls`](crate::Upstream::echo_tls)),
//! a rustls client that says what the handshake agreed on ([`tls_get`]),
//! and the real programs operators use: curl, `openssl s_client`, Python's
//! `ssl` ([`run`]) and nginx as a TLS upstream ([`Nginx`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::process::{PROCESS_TIMEOUT, Scratch};
use crate::{TIMEOUT, rt};

/// A test's own certificate authority, and the certificates it signs, as
/// PEM files in a scratch directory (removed with it).
pub struct Pki {
    dir: Scratch,
    issuer: Issuer<'static, KeyPair>,
    ca: String,
}

/// A certificate and its key as files, and the certificate's DER (to tell
/// which certificate a server presented).
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// The PEM certificate file's path.
    pub cert: String,
    /// The PEM key file's path.
    pub key: String,
    /// The certificate, DER.
    pub der: Vec<u8>,
}

impl Pki {
    /// A new CA (`CN=nuncio test CA <test>`), its certificate in `ca.pem`.
    pub fn new(test: &str) -> Pki {
        let dir = Scratch::new(&format!("pki-{test}"));
        let key = KeyPair::generate().expect("a CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, format!("nuncio test CA {test}"));
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let cert = params.self_signed(&key).expect("the CA certificate");
        let ca = dir.write("ca.pem", &cert.pem());
        Pki { dir, issuer: Issuer::new(params, key), ca }
    }

    /// The CA certificate's path.
    pub fn ca(&self) -> &str {
        &self.ca
    }

    /// The path of `name` in the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path(name)
    }

    /// Writes `text` to `name` in the directory; its path.
    pub fn write(&self, name: &str, text: &str) -> String {
        self.dir.write(name, text)
    }

    /// A server certificate for `names` (DNS names or IPs), signed by the
    /// CA, valid from yesterday for a year: `NAME.pem` and `NAME.key`.
    pub fn leaf(&self, name: &str, names: &[&str]) -> CertFiles {
        self.make(name, names, |_| {})
    }

    /// [`Pki::leaf`] whose validity ended yesterday.
    pub fn expired(&self, name: &str, names: &[&str]) -> CertFiles {
        self.make(name, names, |params| {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = time::OffsetDateTime::now_utc() - time::Duration::days(1);
        })
    }

    /// A certificate for `names` signed by itself (no CA trusts it).
    pub fn self_signed(&self, name: &str, names: &[&str]) -> CertFiles {
        let key = KeyPair::generate().expect("a key");
        let params = leaf_params(names, ExtendedKeyUsagePurpose::ServerAuth);
        let cert = params.self_signed(&key).expect("a self-signed certificate");
        self.files(name, &cert, &key)
    }

    /// A client certificate (`CN=cn`, clientAuth), signed by the CA.
    pub fn client(&self, name: &str, cn: &str) -> CertFiles {
        let key = KeyPair::generate().expect("a key");
        let mut params = leaf_params(&[], ExtendedKeyUsagePurpose::ClientAuth);
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.issuer).expect("a client certificate");
        self.files(name, &cert, &key)
    }

    fn make(&self, name: &str, names: &[&str], change: impl FnOnce(&mut CertificateParams)) -> CertFiles {
        let key = KeyPair::generate().expect("a key");
        let mut params = leaf_params(names, ExtendedKeyUsagePurpose::ServerAuth);
        change(&mut params);
        let cert = params.signed_by(&key, &self.issuer).expect("a certificate");
        self.files(name, &cert, &key)
    }

    fn files(&self, name: &str, cert: &rcgen::Certificate, key: &KeyPair) -> CertFiles {
        CertFiles {
            cert: self.dir.write(&format!("{name}.pem"), &cert.pem()),
            key: self.dir.write(&format!("{name}.key"), &key.serialize_pem()),
            der: cert.der().to_vec(),
        }
    }
}

fn leaf_params(names: &[&str], usage: ExtendedKeyUsagePurpose) -> CertificateParams {
    let mut params =
        CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).expect("leaf params");
    if let Some(first) = names.first() {
        params.distinguished_name.push(DnType::CommonName, *first);
    }
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(365);
    params.extended_key_usages = vec![usage];
    params
}

impl CertFiles {
    /// A rustls server config presenting this certificate, offering `alpn`
    /// (for a TLS upstream).
    pub fn server_config(&self, alpn: &[&str]) -> Arc<rustls::ServerConfig> {
        let chain = vec![CertificateDer::from(self.der.clone())];
        let key = PrivateKeyDer::from_pem_file(&self.key).expect("the key file");
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .expect("a server config");
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        Arc::new(config)
    }
}

use rustls::pki_types::pem::PemObject;

/// What a TLS client saw: the response and the handshake.
#[derive(Debug)]
pub struct TlsReply {
    /// The response (hyper's).
    pub reply: crate::Reply,
    /// The ALPN protocol agreed on.
    pub alpn: Option<String>,
    /// `TLSv1_2` or `TLSv1_3` (rustls's words).
    pub version: String,
    /// The leaf certificate the server presented, DER.
    pub leaf: Vec<u8>,
    /// Whether the session was resumed.
    pub resumed: bool,
}

/// A rustls client trusting `ca` (a PEM file), offering `alpn`, with a
/// session cache of its own (share it to resume).
pub fn client_config(ca: &str, alpn: &[&str]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("the CA file") {
        roots.add(cert.expect("a CA certificate")).expect("a trust anchor");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Arc::new(config)
}

/// [`client_config`] that never resumes a session: every connection is a
/// full handshake, and shows the certificate the server presents now (a
/// resumed session reports the one it was first made with).
pub fn client_config_full_handshakes(ca: &str, alpn: &[&str]) -> Arc<rustls::ClientConfig> {
    let mut config = (*client_config(ca, alpn)).clone();
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// `GET path` over TLS to `addr` with SNI `sni` on a new connection (HTTP/2
/// when ALPN says `h2`, else HTTP/1.1), at most [`TIMEOUT`].
pub fn tls_get(addr: SocketAddr, sni: &str, config: &Arc<rustls::ClientConfig>, path: &str) -> TlsReply {
    try_tls_get(addr, sni, config, path).unwrap_or_else(|e| panic!("GET {path} over TLS: {e}"))
}

/// [`tls_get`] that says what failed instead of panicking (for client
/// loops that count failures).
pub fn try_tls_get(
    addr: SocketAddr,
    sni: &str,
    config: &Arc<rustls::ClientConfig>,
    path: &str,
) -> Result<TlsReply, String> {
    let name = ServerName::try_from(sni.to_owned()).map_err(|e| e.to_string())?;
    let text = |e: &dyn std::fmt::Display| e.to_string();
    rt().block_on(async {
        let exchange = async {
            let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| text(&e))?;
            let tls = tokio_rustls::TlsConnector::from(config.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS handshake: {e}"))?;
            let (_, conn) = tls.get_ref();
            let alpn = conn.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned());
            let version = format!("{:?}", conn.protocol_version().expect("a version"));
            let leaf = conn.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec()).unwrap_or_default();
            let resumed = conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
            let request =
                http::Request::get(path).header(http::header::HOST, sni).body(Full::<Bytes>::default()).unwrap();
            let response = if alpn.as_deref() == Some("h2") {
                let (mut sender, connection) =
                    hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), TokioIo::new(tls))
                        .await
                        .map_err(|e| text(&e))?;
                tokio::spawn(connection);
                let mut request = request;
                *request.uri_mut() = format!("https://{sni}{path}").parse().unwrap();
                sender.send_request(request).await.map_err(|e| text(&e))?
            } else {
                let (mut sender, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| text(&e))?;
                tokio::spawn(connection);
                sender.send_request(request).await.map_err(|e| text(&e))?
            };
            let (parts, body) = response.into_parts();
            let body = body.collect().await.map_err(|e| text(&e))?.to_bytes().to_vec();
            let reply = crate::Reply {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body,
                head: String::new(),
                trailers: http::HeaderMap::new(),
            };
            Ok(TlsReply { reply, alpn, version, leaf, resumed })
        };
        tokio::time::timeout(TIMEOUT, exchange).await.map_err(|_| "no answer in time".to_owned())?
    })
}

/// What a program printed and how it ended.
#[derive(Debug)]
pub struct Output {
    /// Its exit status's code (`-1` when killed).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs `program` with `args` (and `stdin` as its input), killed after
/// [`PROCESS_TIMEOUT`]; panics, naming the apt package, if it is not
/// installed (`.ci/run` installs curl, openssl, python3 and nginx).
pub fn run(program: &str, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {program} ({e}): apt-get install {program} (.ci/run does)"));
    {
        use std::io::Write;
        let mut input = child.stdin.take().expect("piped stdin");
        let _ = input.write_all(stdin.as_bytes());
    }
    let deadline = Instant::now() + PROCESS_TIMEOUT;
    while child.try_wait().expect("its status").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let output = child.wait_with_output().expect("its output");
    Output {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// nginx as a TLS upstream on `127.0.0.1` (a free port it is given),
/// started by the test with the config it is given, stopped when dropped.
pub struct Nginx {
    /// Where it listens.
    pub addr: SocketAddr,
    child: Child,
    _dir: Scratch,
}

impl Nginx {
    /// Starts nginx serving `server` (the inside of a `server { }` block,
    /// with `{port}` for its listen port) and waits until it accepts
    /// connections.
    pub fn start(test: &str, server: &str) -> Nginx {
        let dir = Scratch::new(&format!("nginx-{test}"));
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().unwrap().port();
        let root = dir.path("").display().to_string();
        let config = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {root}/nginx.pid;\nerror_log stderr warn;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {root}/tmp; proxy_temp_path {root}/tmp;\n  \
             fastcgi_temp_path {root}/tmp; uwsgi_temp_path {root}/tmp; scgi_temp_path {root}/tmp;\n  \
             server {{\n{}\n  }}\n}}\n",
            server.replace("{port}", &port.to_string())
        );
        std::fs::create_dir_all(dir.path("tmp")).expect("nginx's temp dir");
        let path = dir.write("nginx.conf", &config);
        let nginx = ["/usr/sbin/nginx", "nginx"].into_iter().find(|p| Command::new(p).arg("-v").output().is_ok());
        let nginx = nginx.unwrap_or_else(|| panic!("nginx is not installed: apt-get install nginx (.ci/run does)"));
        let child = Command::new(nginx)
            .args(["-p", &root, "-c", &path, "-e", "stderr"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start nginx");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        crate::wait_until("nginx to listen", || std::net::TcpStream::connect(addr).is_ok());
        Nginx { addr, child, _dir: dir }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
