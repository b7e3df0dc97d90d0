//! Where spans go: an OTLP/HTTP collector's URL.

use std::fmt;

use crate::Error;

/// The path OTLP/HTTP collectors take traces on when the URL names none.
pub const DEFAULT_PATH: &str = "/v1/traces";

/// An OTLP/HTTP collector: `http://HOST:PORT[/PATH]`, the path
/// [`DEFAULT_PATH`] when absent (or `/`). The host may be a name
/// (resolved by the exporter's thread at each connection) or an IP
/// address (IPv6 in brackets).
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Endpoint {
    host: String,
    port: u16,
    path: String,
}

impl Endpoint {
    /// Parses and checks `text`. HTTPS, credentials, a query or a fragment
    /// are refused.
    pub fn parse(text: &str) -> Result<Endpoint, Error> {
        let error = |reason| Err(Error::Endpoint { endpoint: text.to_owned(), reason });
        let Some((scheme, rest)) = text.split_once("://") else {
            return error("missing http://");
        };
        if scheme.eq_ignore_ascii_case("https") {
            return error("https is not supported yet");
        }
        if !scheme.eq_ignore_ascii_case("http") {
            return error("the scheme must be http");
        }
        if rest.contains(['?', '#']) {
            return error("a query or fragment is not allowed");
        }
        let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
        if authority.contains('@') {
            return error("credentials are not supported");
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            match v6.split_once(']') {
                Some((address, port)) if address.parse::<std::net::Ipv6Addr>().is_ok() => {
                    (&authority[..address.len() + 2], port.strip_prefix(':'))
                }
                _ => return error("invalid IPv6 address"),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return error("missing host");
        }
        if !host.starts_with('[') && !host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') {
            return error("invalid host");
        }
        let Some(port) = port else { return error("missing port") };
        let port = match port.parse::<u16>() {
            Ok(port) if port > 0 => port,
            _ => return error("invalid port"),
        };
        if !path.bytes().all(|b| b.is_ascii_graphic()) {
            return error("invalid path");
        }
        let path = if path.is_empty() || path == "/" { DEFAULT_PATH } else { path };
        Ok(Endpoint { host: host.to_owned(), port, path: path.to_owned() })
    }

    /// `HOST:PORT`, as the `Host` field says it.
    pub fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The host, without the brackets of an IPv6 address.
    pub fn host(&self) -> &str {
        self.host.trim_start_matches('[').trim_end_matches(']')
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The path spans are posted to.
    pub fn path(&self) -> &str {
        &self.path
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}:{}{}", self.host, self.port, self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_their_defaults() {
        let e = Endpoint::parse("http://127.0.0.1:4318").unwrap();
        assert_eq!(e.to_string(), "http://127.0.0.1:4318/v1/traces");
        assert_eq!(Endpoint::parse("HTTP://collector:4318/").unwrap().path(), "/v1/traces");
        let e = Endpoint::parse("http://[::1]:4318/otlp/v1/traces").unwrap();
        assert_eq!(
            (e.host(), e.port(), e.path(), e.authority().as_str()),
            ("::1", 4318, "/otlp/v1/traces", "[::1]:4318")
        );
    }

    #[test]
    fn bad_endpoints_say_why() {
        for (text, why) in [
            ("127.0.0.1:4318", "missing http://"),
            ("https://c:4318", "https is not supported yet"),
            ("ftp://c:4318", "the scheme must be http"),
            ("http://c:4318/v1?x=1", "a query or fragment is not allowed"),
            ("http://u:p@c:4318", "credentials are not supported"),
            ("http://c", "missing port"),
            ("http://c:0", "invalid port"),
            ("http://c:99999", "invalid port"),
            ("http://:4318", "missing host"),
            ("http://c d:4318", "invalid host"),
            ("http://[::g]:4318", "invalid IPv6 address"),
        ] {
            match Endpoint::parse(text) {
                Err(Error::Endpoint { reason, .. }) => assert_eq!(reason, why, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }
}
