//! nuncio's TLS mechanics, with no proxy knowledge: PEM files read and
//! checked ([`Certificate`], [`CaBundle`]), a listener's rustls
//! `ServerConfig` with certificates chosen by SNI ([`ServerTls`],
//! [`SniResolver`]), a cluster's `ClientConfig` ([`client_config`]), what a
//! certificate is for `/certs` ([`CertInfo`]), what a handshake agreed on
//! and why one failed ([`SessionInfo`], [`failure_reason`]), and the
//! fingerprint the file watch compares ([`Fingerprint`]). The proxy wires
//! them into its accept and connect paths (tokio-rustls, re-exported).
//!
//! The crypto provider is *ring* (see `docs/benchmarks.md`, "TLS
//! provider", for the measurement behind the choice): [`provider`].
//!
//! # Threading
//!
//! Everything here is plain data or `Send + Sync` rustls configs. Files
//! are read (blocking) by whoever validates a config: in nuncio, main or
//! the reload's blocking task, never a worker. A built [`ServerTls`] or
//! client config is shared by every worker through the config snapshot.
//!
//! # Example
//!
//! ```
//! use nuncio_tls::{Certificate, MinVersion, ServerSettings, ServerTls};
//!
//! let dir = std::env::temp_dir().join(format!("nuncio-tls-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let key = rcgen::KeyPair::generate().unwrap();
//! let cert = rcgen::CertificateParams::new(vec!["example.test".into()]).unwrap().self_signed(&key).unwrap();
//! std::fs::write(dir.join("site.pem"), cert.pem()).unwrap();
//! std::fs::write(dir.join("site.key"), key.serialize_pem()).unwrap();
//!
//! let now = nuncio_tls::now();
//! let site = Certificate::load(&dir.join("site.pem"), &dir.join("site.key"), now).unwrap();
//! assert_eq!(site.info.sans, ["example.test"]);
//! let alpn = ["h2".to_owned(), "http/1.1".to_owned()];
//! let settings =
//!     ServerSettings { certificates: &[site], alpn: &alpn, min_version: MinVersion::Tls12, client_ca: None };
//! let tls = ServerTls::new(settings, None).unwrap();
//! assert_eq!(tls.config.alpn_protocols, [b"h2".to_vec(), b"http/1.1".to_vec()]);
//!
//! // A key that is not the certificate's is refused, naming both files.
//! let other = rcgen::KeyPair::generate().unwrap();
//! std::fs::write(dir.join("other.key"), other.serialize_pem()).unwrap();
//! let (_, error) = Certificate::load(&dir.join("site.pem"), &dir.join("other.key"), now).unwrap_err();
//! assert!(error.to_string().contains("does not match the certificate in"));
//! # std::fs::remove_dir_all(&dir).unwrap();
//! ```

#![forbid(unsafe_code)]

mod client;
mod error;
mod files;
mod server;
mod session;
mod watch;
mod x509;

use std::sync::{Arc, OnceLock};

pub use client::{ClientSettings, client_config, server_name};
pub use error::Error;
pub use files::{CaBundle, Certificate, Which, now};
pub use server::{MinVersion, ServerSettings, ServerTls, SniResolver};
pub use session::{FAILURE_REASONS, SessionInfo, describe, failure_reason, version_name};
pub use watch::Fingerprint;
pub use x509::CertInfo;

pub use rustls;
pub use tokio_rustls;

/// `YYYY-MM-DD` of Unix seconds.
pub fn date(unix: i64) -> String {
    x509::date(unix)
}

/// The crypto provider every config is built with (*ring*).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    static PROVIDER: OnceLock<Arc<rustls::crypto::CryptoProvider>> = OnceLock::new();
    PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())).clone()
}

/// A new ticket producer (keys rotated every 6 hours by rustls).
fn ticketer() -> Result<Arc<dyn rustls::server::ProducesTickets>, Error> {
    rustls::crypto::ring::Ticketer::new().map_err(|e| Error::Settings(format!("TLS ticket keys: {e}")))
}
