//! What a finished handshake says (for stats, the access log and
//! routing), and why a failed one failed.

use rustls::{CertificateError, ProtocolVersion};

/// A TLS connection as the access log and stats see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// `TLSv1.2` or `TLSv1.3` (Envoy's `%DOWNSTREAM_TLS_VERSION%` words).
    pub version: &'static str,
    /// The IANA name of the cipher suite, e.g. `TLS_AES_128_GCM_SHA256`.
    pub cipher: &'static str,
    /// The SNI the client sent, if any.
    pub server_name: Option<String>,
    /// The ALPN protocol agreed on (`h2`, `http/1.1`), if any.
    pub alpn: Option<String>,
    /// Whether the session was resumed (no full handshake).
    pub resumed: bool,
}

impl SessionInfo {
    /// What `conn` agreed on (after its handshake).
    pub fn of<D>(conn: &rustls::ConnectionCommon<D>, server_name: Option<&str>) -> SessionInfo {
        SessionInfo {
            version: version_name(conn.protocol_version()),
            cipher: conn.negotiated_cipher_suite().map_or("-", |s| cipher_name(s.suite())),
            server_name: server_name.map(str::to_owned),
            alpn: conn.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned()),
            resumed: conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
        }
    }
}

/// `TLSv1.2`, `TLSv1.3` (`-` for anything else).
pub fn version_name(version: Option<ProtocolVersion>) -> &'static str {
    match version {
        Some(ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "-",
    }
}

/// The IANA name (rustls writes TLS 1.3 suites `TLS13_...`).
fn cipher_name(suite: rustls::CipherSuite) -> &'static str {
    use rustls::CipherSuite as S;
    match suite {
        S::TLS13_AES_128_GCM_SHA256 => "TLS_AES_128_GCM_SHA256",
        S::TLS13_AES_256_GCM_SHA384 => "TLS_AES_256_GCM_SHA384",
        S::TLS13_CHACHA20_POLY1305_SHA256 => "TLS_CHACHA20_POLY1305_SHA256",
        other => other.as_str().unwrap_or("-"),
    }
}

/// Why a handshake failed, as a stats label: `timeout` (the caller's),
/// `closed` (the peer left mid-handshake), `malformed` (not TLS, or broken
/// TLS), `incompatible` (no version, cipher or ALPN in common),
/// `no_client_certificate`, `certificate_expired`,
/// `certificate_untrusted`, `certificate_name_mismatch`,
/// `certificate_invalid`, `alert_received` (the peer refused), `other`.
pub const FAILURE_REASONS: [&str; 11] = [
    "timeout",
    "closed",
    "malformed",
    "incompatible",
    "no_client_certificate",
    "certificate_expired",
    "certificate_untrusted",
    "certificate_name_mismatch",
    "certificate_invalid",
    "alert_received",
    "other",
];

/// The [`FAILURE_REASONS`] entry for a handshake's I/O error.
pub fn failure_reason(error: &std::io::Error) -> &'static str {
    if let Some(tls) = error.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
        return match tls {
            rustls::Error::InvalidCertificate(c) => certificate_reason(c),
            rustls::Error::NoCertificatesPresented => "no_client_certificate",
            rustls::Error::PeerIncompatible(_) | rustls::Error::NoApplicationProtocol => "incompatible",
            rustls::Error::InvalidMessage(_)
            | rustls::Error::InappropriateMessage { .. }
            | rustls::Error::InappropriateHandshakeMessage { .. }
            | rustls::Error::PeerMisbehaved(_)
            | rustls::Error::DecryptError => "malformed",
            rustls::Error::AlertReceived(_) => "alert_received",
            _ => "other",
        };
    }
    match error.kind() {
        std::io::ErrorKind::UnexpectedEof
        | std::io::ErrorKind::ConnectionReset
        | std::io::ErrorKind::BrokenPipe
        | std::io::ErrorKind::ConnectionAborted => "closed",
        std::io::ErrorKind::InvalidData => "malformed",
        _ => "other",
    }
}

fn certificate_reason(error: &CertificateError) -> &'static str {
    match error {
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => "certificate_expired",
        CertificateError::UnknownIssuer => "certificate_untrusted",
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            "certificate_name_mismatch"
        }
        _ => "certificate_invalid",
    }
}

/// A handshake failure in words for a log line: rustls's own account for
/// TLS errors (`invalid peer certificate: certificate expired: ...`), the
/// I/O error otherwise.
pub fn describe(error: &std::io::Error) -> String {
    match error.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
        Some(tls) => tls.to_string(),
        None if error.kind() == std::io::ErrorKind::UnexpectedEof => "the peer closed the connection".to_owned(),
        None => error.to_string(),
    }
}
