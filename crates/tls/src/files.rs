//! Certificates, keys and CA bundles read from PEM files and checked, once,
//! when the config is validated. What was checked is what serves: the
//! bytes are kept, not read again.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use crate::error::Error;
use crate::x509::{CertInfo, date};

/// Which file of a certificate an [`Error`] is about (the config names the
/// field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// The certificate chain (`cert_chain`).
    Chain,
    /// The private key (`private_key`).
    Key,
}

/// A certificate chain and its private key, read from two PEM files and
/// checked: the chain parses, the key parses and belongs to the leaf, and
/// the leaf is valid now. Compared by content (a reload that reads the same
/// bytes changes nothing); `Debug` never shows the key.
#[derive(Clone)]
pub struct Certificate {
    /// Where the chain was read from.
    pub cert_chain: PathBuf,
    /// Where the key was read from.
    pub private_key: PathBuf,
    /// The leaf first, then intermediates.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's subject, names and validity.
    pub info: CertInfo,
    /// The chain and the key as rustls signs with them.
    pub certified: Arc<CertifiedKey>,
    key_der: Arc<[u8]>,
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificate")
            .field("cert_chain", &self.cert_chain)
            .field("private_key", &self.private_key)
            .field("subject", &self.info.subject)
            .finish_non_exhaustive()
    }
}

impl PartialEq for Certificate {
    fn eq(&self, other: &Self) -> bool {
        self.cert_chain == other.cert_chain
            && self.private_key == other.private_key
            && self.chain == other.chain
            && self.key_der == other.key_der
    }
}

impl Eq for Certificate {}

impl Certificate {
    /// Reads and checks `cert_chain` and `private_key` (see the type's
    /// docs); `now` is Unix seconds. The error says which file is wrong.
    pub fn load(cert_chain: &Path, private_key: &Path, now: i64) -> Result<Certificate, (Which, Error)> {
        let chain = read_certificates(cert_chain).map_err(|e| (Which::Chain, e))?;
        let info = CertInfo::parse(&chain[0]).ok_or_else(|| {
            let what = "the first PEM block is not an X.509 certificate".to_owned();
            (Which::Chain, Error::Pem { path: cert_chain.to_owned(), what })
        })?;
        let key_bytes = read(private_key).map_err(|e| (Which::Key, e))?;
        let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| {
            (
                Which::Key,
                Error::Pem { path: private_key.to_owned(), what: pem_problem(&e, "private key", "PRIVATE KEY") },
            )
        })?;
        let key_der: Arc<[u8]> = Arc::from(key.secret_der());
        let signing = crate::provider().key_provider.load_private_key(key).map_err(|e| {
            let what = format!("unusable private key: {e} (use an RSA, ECDSA P-256/P-384 or Ed25519 key)");
            (Which::Key, Error::Pem { path: private_key.to_owned(), what })
        })?;
        let certified = CertifiedKey::new(chain.clone(), signing);
        match certified.keys_match() {
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(_) => {
                return Err((
                    Which::Key,
                    Error::KeyMismatch { cert: cert_chain.to_owned(), key: private_key.to_owned() },
                ));
            }
        }
        check_validity(cert_chain, &info, now).map_err(|e| (Which::Chain, e))?;
        Ok(Certificate {
            cert_chain: cert_chain.to_owned(),
            private_key: private_key.to_owned(),
            chain,
            info,
            certified: Arc::new(certified),
            key_der,
        })
    }
}

/// Certificates to verify peers with (`client_ca` of a listener, `ca` of a
/// cluster), read from one PEM file. Compared by content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaBundle {
    /// Where it was read from.
    pub path: PathBuf,
    /// Each certificate of the file, in order.
    pub certificates: Vec<CertificateDer<'static>>,
    /// What each is.
    pub infos: Vec<CertInfo>,
}

impl CaBundle {
    /// Reads `path`: at least one certificate, each usable as a trust
    /// anchor.
    pub fn load(path: &Path) -> Result<CaBundle, Error> {
        let certificates = read_certificates(path)?;
        let mut roots = rustls::RootCertStore::empty();
        let mut infos = Vec::with_capacity(certificates.len());
        for (i, cert) in certificates.iter().enumerate() {
            roots.add(cert.clone()).map_err(|e| Error::Unusable {
                path: path.to_owned(),
                what: format!("certificate {} cannot be a trust anchor: {e}", i + 1),
            })?;
            infos.push(CertInfo::parse(cert).ok_or_else(|| Error::Unusable {
                path: path.to_owned(),
                what: format!("certificate {} is not X.509", i + 1),
            })?);
        }
        Ok(CaBundle { path: path.to_owned(), certificates, infos })
    }

    /// As a rustls root store.
    pub fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        // Checked in `load`.
        let _ = roots.add_parsable_certificates(self.certificates.iter().cloned());
        roots
    }
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Read { path: path.to_owned(), source })
}

/// Every `CERTIFICATE` block of a PEM file (at least one).
fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let bytes = read(path)?;
    let certificates: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&bytes)
            .collect::<Result<_, _>>()
            .map_err(|e| Error::Pem { path: path.to_owned(), what: pem_problem(&e, "certificate", "CERTIFICATE") })?;
    if certificates.is_empty() {
        let what = if bytes.starts_with(b"-----BEGIN") {
            "no CERTIFICATE block (is this a key? give the certificate chain, leaf first)".to_owned()
        } else {
            "not PEM: expected -----BEGIN CERTIFICATE----- blocks (convert DER with `openssl x509 -inform der`)"
                .to_owned()
        };
        return Err(Error::Pem { path: path.to_owned(), what });
    }
    Ok(certificates)
}

fn pem_problem(e: &rustls::pki_types::pem::Error, what: &str, label: &str) -> String {
    match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            format!("not PEM, or no {label} block: expected a PEM {what} (-----BEGIN {label}-----)")
        }
        other => format!("malformed PEM: {other:?} (expected a PEM {what})"),
    }
}

fn check_validity(path: &Path, info: &CertInfo, now: i64) -> Result<(), Error> {
    if info.not_after < now {
        return Err(Error::Expired { path: path.to_owned(), date: date(info.not_after), days: -info.days_left(now) });
    }
    if info.not_before > now {
        return Err(Error::NotYetValid { path: path.to_owned(), date: date(info.not_before) });
    }
    Ok(())
}

/// Now, in Unix seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
