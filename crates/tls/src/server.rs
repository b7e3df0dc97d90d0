//! The listener side: a rustls `ServerConfig` with certificates chosen by
//! SNI, ALPN, a version floor, session resumption that survives reloads,
//! and client certificate verification when asked.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::server::{ClientHello, ProducesTickets, ResolvesServerCert, StoresServerSessions, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, SupportedProtocolVersion};

use crate::error::Error;
use crate::files::{CaBundle, Certificate};

/// The lowest TLS version a listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MinVersion {
    /// TLS 1.2 and 1.3 (the default).
    #[default]
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

/// What a listener's TLS is made of (the validated config's values).
#[derive(Debug, Clone, Copy)]
pub struct ServerSettings<'a> {
    /// At least one; chosen by SNI, the first is the default.
    pub certificates: &'a [Certificate],
    /// ALPN protocol ids offered, in preference order (`h2`, `http/1.1`).
    pub alpn: &'a [String],
    /// The lowest version accepted.
    pub min_version: MinVersion,
    /// When set, clients must present a certificate issued by one of
    /// these (mTLS).
    pub client_ca: Option<&'a CaBundle>,
}

/// Sessions TLS resumption remembers: kept from one config version to the
/// next of the same listener, so that a reload (or a certificate rotation)
/// does not cost every client a full handshake.
struct Sessions {
    /// TLS 1.2 session ids (and TLS 1.3 tickets when tickets are off).
    cache: Arc<dyn StoresServerSessions>,
    /// Stateless tickets (TLS 1.2 and 1.3), their key rotated by rustls.
    ticketer: Arc<dyn ProducesTickets>,
}

/// A listener's TLS, built on main for a config version and read by every
/// worker: each new connection takes [`ServerTls::config`]; connections
/// already open keep the config they were accepted with.
#[derive(Clone)]
pub struct ServerTls {
    /// What a handshake is made with.
    pub config: Arc<ServerConfig>,
    sessions: Arc<Sessions>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").field("alpn", &self.config.alpn_protocols).finish_non_exhaustive()
    }
}

/// Sessions kept per listener (TLS 1.2 ids; nginx's shared cache holds
/// about 4000 per MiB).
const SESSION_CACHE: usize = 20_000;

impl ServerTls {
    /// Builds the config; `previous` (the same listener's last one) lends
    /// its session cache and ticket keys.
    pub fn new(settings: ServerSettings<'_>, previous: Option<&ServerTls>) -> Result<ServerTls, Error> {
        let sessions = match previous {
            Some(previous) => previous.sessions.clone(),
            None => Arc::new(Sessions {
                cache: rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE),
                ticketer: crate::ticketer()?,
            }),
        };
        let versions: &[&'static SupportedProtocolVersion] = match settings.min_version {
            MinVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
            MinVersion::Tls13 => &[&rustls::version::TLS13],
        };
        let builder = ServerConfig::builder_with_provider(crate::provider())
            .with_protocol_versions(versions)
            .map_err(|e| Error::Settings(format!("TLS versions: {e}")))?;
        let builder = match settings.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(ca.roots()), crate::provider())
                    .build()
                    .map_err(|e| Error::Unusable { path: ca.path.clone(), what: format!("as client CA: {e}") })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_cert_resolver(Arc::new(SniResolver::new(settings.certificates)?));
        config.alpn_protocols = settings.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        config.session_storage = sessions.cache.clone();
        config.ticketer = sessions.ticketer.clone();
        // An unexpected client close_notify is no error worth a log line.
        config.ignore_client_order = false;
        Ok(ServerTls { config: Arc::new(config), sessions })
    }
}

/// Picks the certificate for a ClientHello's server name: an exact name
/// first, then a `*.` wildcard one label deep, else the first certificate
/// (also for clients that send no SNI). Among certificates for the same
/// name, the first listed wins.
#[derive(Debug)]
pub struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// By the part after `*.`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl SniResolver {
    /// Indexes `certificates` by the DNS names each is for.
    pub fn new(certificates: &[Certificate]) -> Result<SniResolver, Error> {
        let default =
            certificates.first().ok_or_else(|| Error::Settings("a TLS listener needs a certificate".into()))?;
        let (mut exact, mut wildcard) = (HashMap::new(), HashMap::new());
        for certificate in certificates {
            for name in certificate.info.dns_names() {
                let name = name.to_ascii_lowercase();
                match name.strip_prefix("*.") {
                    Some(suffix) => wildcard.entry(suffix.to_owned()),
                    None => exact.entry(name),
                }
                .or_insert_with(|| certificate.certified.clone());
            }
        }
        Ok(SniResolver { exact, wildcard, default: default.certified.clone() })
    }

    /// The certificate for `name` (`None`: no SNI).
    pub fn select(&self, name: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = name.map(str::to_ascii_lowercase) else { return self.default.clone() };
        if let Some(found) = self.exact.get(&name) {
            return found.clone();
        }
        name.split_once('.').and_then(|(_, parent)| self.wildcard.get(parent)).unwrap_or(&self.default).clone()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.select(hello.server_name()))
    }
}
