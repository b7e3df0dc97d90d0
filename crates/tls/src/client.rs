//! The cluster side: a rustls `ClientConfig` that verifies upstreams
//! (system roots or a CA file), offers ALPN, presents a client certificate
//! for mTLS, and resumes sessions.

use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

use crate::error::Error;
use crate::files::{CaBundle, Certificate};

/// What a cluster's TLS is made of (the validated config's values).
#[derive(Debug, Clone, Copy)]
pub struct ClientSettings<'a> {
    /// Trust anchors; `None`: the system's roots.
    pub ca: Option<&'a CaBundle>,
    /// Whether the upstream's certificate is verified (chain, validity and
    /// name). Off only when the config says `verify: false`.
    pub verify: bool,
    /// Presented when the upstream asks (mTLS).
    pub client_certificate: Option<&'a Certificate>,
    /// ALPN protocol ids offered, in preference order.
    pub alpn: &'a [String],
}

/// Builds a cluster's client config (on main; shared by every worker's
/// connections to the cluster).
pub fn client_config(settings: ClientSettings<'_>) -> Result<Arc<ClientConfig>, Error> {
    let builder = ClientConfig::builder_with_provider(crate::provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| Error::Settings(format!("TLS versions: {e}")))?;
    let builder = if settings.verify {
        let roots = match settings.ca {
            Some(ca) => ca.roots(),
            None => system_roots()?,
        };
        builder.with_root_certificates(roots)
    } else {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(NoVerification))
    };
    let mut config = match settings.client_certificate {
        None => builder.with_no_client_auth(),
        Some(certificate) => {
            builder.with_client_cert_resolver(Arc::new(ClientCertificate(certificate.certified.clone())))
        }
    };
    config.alpn_protocols = settings.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Ok(Arc::new(config))
}

/// The name an upstream is verified against and told in SNI: a DNS name,
/// or an IP address (verified against the certificate's IP SANs; no SNI is
/// sent then, as RFC 6066 says).
pub fn server_name(host: &str) -> Result<ServerName<'static>, Error> {
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    ServerName::try_from(host.to_owned())
        .map_err(|_| Error::Settings(format!("{host:?} is not a DNS name or IP address")))
}

/// The system's trust anchors (read once per process).
fn system_roots() -> Result<rustls::RootCertStore, Error> {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    let certificates = ROOTS.get_or_init(|| rustls_native_certs::load_native_certs().certs);
    if certificates.is_empty() {
        return Err(Error::Settings(
            "no system root certificates were found (install ca-certificates, or give the cluster a `ca`)".into(),
        ));
    }
    let mut roots = rustls::RootCertStore::empty();
    let _ = roots.add_parsable_certificates(certificates.iter().cloned());
    Ok(roots)
}

/// The one client certificate a cluster presents, whatever the upstream
/// asks for (it is the operator's choice).
#[derive(Debug)]
struct ClientCertificate(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for ClientCertificate {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// `verify: false`: any certificate is taken, but the handshake's
/// signatures are still checked (the peer holds the key of the certificate
/// it sent).
#[derive(Debug)]
struct NoVerification;

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &crate::provider().signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &crate::provider().signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        crate::provider().signature_verification_algorithms.supported_schemes()
    }
}
