//! How a client's request becomes the upstream's (hop-by-hop fields out,
//! forwarding fields in, the route's rewrites), and where a redirect
//! points.
//!
//! # Protocol switches
//!
//! Only a WebSocket upgrade (`Upgrade: websocket`) is forwarded as one, and
//! only to an HTTP/1.1 cluster; every other `Upgrade` — `h2c` first of all —
//! is stripped and the request goes on as a plain one, as Envoy does.
//! Forwarding `h2c` let an upstream that speaks it answer `101` and turn the
//! client's connection into a raw pipe to the origin: requests sent through
//! it would pass nuncio's routes, filters and access log.

use std::net::SocketAddr;

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderName, HeaderValue, Uri, Version, header};
use nuncio_config::{Forward, PathMatch, Redirect, RedirectPath};

use crate::message::{HeadFields, RequestHead};
use nuncio_router::CompiledRoute;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

/// The protocols a client's connection may switch to through nuncio.
const TUNNELLED: &[&[u8]] = &[b"websocket"];

/// The protocol a request's `Upgrade` may switch to through nuncio: the
/// first of the protocols it lists (in every `Upgrade` line, in order) that
/// is one of [`TUNNELLED`] (case-insensitive; a version is kept:
/// `websocket`, `WebSocket/13`). Only that one goes upstream; the others
/// are dropped.
pub(crate) fn tunnelled_protocol(request: &RequestHead) -> Option<HeaderValue> {
    if !request.upgrade {
        return None;
    }
    request
        .headers
        .get_all(&header::UPGRADE)
        .flat_map(|value| value.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .find(|token| {
            let name = token.split(|&b| b == b'/').next().unwrap_or_default();
            TUNNELLED.iter().any(|p| p.eq_ignore_ascii_case(name))
        })
        .and_then(|token| HeaderValue::from_bytes(token).ok())
}

/// Turns the client's head into the upstream's: hop-by-hop fields out,
/// forwarding fields in, rewrites applied. `upgrade` is what
/// [`tunnelled_protocol`] allowed (every other upgrade is stripped).
/// Returns the upstream request target.
pub(crate) fn prepare_upstream_request(
    request: &mut RequestHead,
    peer: SocketAddr,
    route: &CompiledRoute,
    forward: &Forward,
    time_left: Option<&HeaderName>,
    upgrade: Option<&HeaderValue>,
    https: bool,
) -> Uri {
    let headers = &mut request.headers;
    headers.remove_hop_by_hop();
    // The expectation goes on only as nuncio forwards it (`100-continue`,
    // for a body that waits for the upstream's go).
    headers.remove(&header::EXPECT);
    if request.expect_continue {
        headers.insert(header::EXPECT, HeaderValue::from_static("100-continue"));
    }
    // An h2c upgrade's settings belong to the connection it would have
    // switched; `remove_hop_by_hop` takes them only when `Connection` names
    // them.
    if request.upgrade {
        headers.remove(&HTTP2_SETTINGS);
    }
    // The listener's time-left field is nuncio's to set: what a client
    // sends in it never reaches the upstream as if nuncio had said it.
    if let Some(name) = time_left {
        headers.remove(name);
    }
    if let Some(protocol) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol.clone());
    }
    // Several `x-forwarded-for` lines are one list (RFC 9110 §5.3): keep
    // every hop, in order, and add the client as the last.
    let first_hop = headers.get_all(&X_FORWARDED_FOR).next().is_none();
    let xff = forwarded_for(headers, first_hop, peer);
    if let Ok(value) = HeaderValue::from_maybe_shared(xff) {
        // Added, not replaced, when the client is the first hop: nothing
        // to remove (a removal is a scan of the fields).
        if first_hop {
            headers.append(X_FORWARDED_FOR.clone(), value);
        } else {
            headers.insert(X_FORWARDED_FOR.clone(), value);
        }
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(if https { "https" } else { "http" }));
    // Log lines about the request say its id from now on (the client's,
    // or the one made here).
    match headers.get(&X_REQUEST_ID) {
        Some(id) => nuncio_trace::note_request_id(id),
        None => {
            let id = request_id();
            nuncio_trace::note_request_id(id.as_bytes());
            headers.append(X_REQUEST_ID.clone(), id);
        }
    }
    if let Some(host) = &route.host_rewrite {
        headers.insert(header::HOST, worker_copy(host));
    } else if let Some(authority) = &request.authority
        && (!headers.contains(&header::HOST) || request.version == Version::HTTP_2)
        && let Ok(value) = HeaderValue::from_str(authority.as_str())
    {
        // HTTP/2's `:authority` wins over a `Host` field (RFC 9113 §8.3.1).
        headers.insert(header::HOST, value);
    }
    match &forward.prefix_rewrite {
        Some(replacement) => {
            let path = rewrite_prefix(request.uri.path(), &route.route.matcher.path, replacement);
            let query = request.uri.query().map(|q| format!("?{q}")).unwrap_or_default();
            format!("{path}{query}").parse().unwrap_or_else(|_| Uri::from_static("/"))
        }
        // The path and query as they came, sharing the request's bytes.
        None => {
            let mut parts = http::uri::Parts::default();
            parts.path_and_query =
                Some(request.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/")));
            Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("/"))
        }
    }
}

/// The `Location` of a redirect: the request's URL with the route's
/// changes (query kept). `https`: the request came over TLS (its scheme
/// stays `https`). With `https: true` the URL becomes `https://`, on the
/// request's host without its port (the default port, 443) unless the
/// redirect names a host.
pub(crate) fn redirect_location(
    redirect: &Redirect,
    matched: &PathMatch,
    uri: &Uri,
    host: &str,
    https: bool,
) -> String {
    let path = uri.path();
    let new_path = match &redirect.path {
        RedirectPath::Keep => path.to_owned(),
        RedirectPath::Replace(p) => p.clone(),
        RedirectPath::PrefixRewrite(p) => rewrite_prefix(path, matched, p),
    };
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    let host = match &redirect.host {
        Some(host) => host.as_str(),
        None if redirect.https => strip_port(host),
        None => host,
    };
    let scheme = if redirect.https || https { "https" } else { "http" };
    format!("{scheme}://{host}{new_path}{query}")
}

/// `host` without a `:PORT` (an IPv6 literal keeps its brackets).
fn strip_port(host: &str) -> &str {
    match host.rfind(':') {
        Some(i) if !host[i..].contains(']') && host[i + 1..].bytes().all(|b| b.is_ascii_digit()) => &host[..i],
        _ => host,
    }
}

/// Replaces the part of `path` the route matched with `replacement`.
fn rewrite_prefix(path: &str, matched: &PathMatch, replacement: &str) -> String {
    match matched {
        PathMatch::Prefix(prefix) if path.starts_with(prefix.as_str()) => {
            format!("{replacement}{}", &path[prefix.len()..])
        }
        PathMatch::Exact(p) if path == p => replacement.to_owned(),
        _ => path.to_owned(),
    }
}

/// The `x-forwarded-for` value: the hops already listed (every line, in
/// order; none when `first_hop`) and then the client's address, written
/// into one buffer of the exact size (`Bytes` takes a full vector as it
/// is; one with room to spare cost it an allocation more).
fn forwarded_for(headers: &HeadFields, first_hop: bool, peer: SocketAddr) -> Bytes {
    let mut address = [0u8; 48];
    let address = client_address(peer, &mut address);
    if first_hop {
        return Bytes::copy_from_slice(address);
    }
    let hops = || headers.get_all(&X_FORWARDED_FOR);
    let mut value = Vec::with_capacity(hops().map(|hop| hop.len() + 2).sum::<usize>() + address.len());
    for hop in hops() {
        value.extend_from_slice(hop);
        value.extend_from_slice(b", ");
    }
    value.extend_from_slice(address);
    Bytes::from(value)
}

/// The client's address as text, written into `buf` (an IPv6 address
/// takes at most 45 bytes).
fn client_address(peer: SocketAddr, buf: &mut [u8; 48]) -> &[u8] {
    use std::io::Write;
    let mut out = std::io::Cursor::new(&mut buf[..]);
    match peer.ip() {
        // By hand: `Display` for an address goes through the formatting
        // machinery, several times the cost of the rest of this function.
        std::net::IpAddr::V4(ip) => {
            let mut digits = itoa::Buffer::new();
            for (i, octet) in ip.octets().into_iter().enumerate() {
                if i > 0 {
                    let _ = out.write_all(b".");
                }
                let _ = out.write_all(digits.format(octet).as_bytes());
            }
        }
        ip @ std::net::IpAddr::V6(_) => {
            let _ = write!(out, "{ip}");
        }
    }
    let len = usize::try_from(out.position()).unwrap_or_default();
    &buf[..len]
}

/// This worker's own copy of `value`, a field value of the config: cloning
/// the config's would write a count every worker shares, and copying it
/// anew was an allocation a request. A worker keeps copies of the last
/// [`KEPT_COPIES`] values it was asked for (a route's `host_rewrite`: few
/// per config), found by their bytes, and clones those (a count only this
/// worker writes).
fn worker_copy(value: &HeaderValue) -> HeaderValue {
    thread_local! {
        static COPIES: std::cell::RefCell<Vec<HeaderValue>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    COPIES.with_borrow_mut(|copies| {
        if let Some(copy) = copies.iter().find(|copy| copy.as_bytes() == value.as_bytes()) {
            return copy.clone();
        }
        let copy = HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
        if copies.len() == KEPT_COPIES {
            copies.remove(0);
        }
        copies.push(copy.clone());
        copy
    })
}

/// How many config values a worker keeps copies of ([`worker_copy`]).
const KEPT_COPIES: usize = 8;

/// A new request id: 128 random bits in hex.
pub(crate) fn request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = [0u8; 32];
    // A byte at a time: shifting a `u128` by a digit's place is several
    // instructions per digit.
    for (digits, byte) in id.chunks_exact_mut(2).zip(fastrand::u128(..).to_be_bytes()) {
        digits[0] = HEX[usize::from(byte >> 4)];
        digits[1] = HEX[usize::from(byte & 0xf)];
    }
    HeaderValue::from_bytes(&id).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::BodySize;
    use http::{HeaderMap, Method};

    fn upgrade_request(values: &[&'static str]) -> RequestHead {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(header::UPGRADE, HeaderValue::from_static(v));
        }
        RequestHead {
            method: Method::GET,
            uri: Uri::from_static("/"),
            version: Version::HTTP_11,
            headers: headers.into(),
            authority: None,
            body: BodySize::Empty,
            upgrade: true,
            expect_continue: false,
        }
    }

    #[test]
    fn only_websocket_is_tunnelled() {
        let protocol = |values: &[&'static str]| tunnelled_protocol(&upgrade_request(values));
        assert_eq!(protocol(&["websocket"]).unwrap(), "websocket");
        assert_eq!(protocol(&["WebSocket/13"]).unwrap(), "WebSocket/13");
        assert_eq!(protocol(&["h2c"]), None);
        assert_eq!(protocol(&["h2c, websocket"]).unwrap(), "websocket", "the allowed one of a list");
        assert_eq!(protocol(&["h2c", " websocket "]).unwrap(), "websocket");
        assert_eq!(protocol(&["TLS/1.2", "h2c"]), None);
        assert_eq!(protocol(&["websockets"]), None);
        let mut plain = upgrade_request(&["websocket"]);
        plain.upgrade = false;
        assert!(tunnelled_protocol(&plain).is_none(), "no `Connection: upgrade`, no upgrade");
    }

    #[test]
    fn a_request_id_is_its_128_random_bits_in_hex() {
        fastrand::seed(7);
        let id = request_id();
        let bits = fastrand::Rng::with_seed(7).u128(..);
        assert_eq!(id.to_str().unwrap(), format!("{bits:032x}"));
        assert_ne!(request_id(), id, "the next one is another");
    }

    #[test]
    fn forwarded_for_lists_every_hop_then_the_client() {
        let v4: SocketAddr = "10.1.20.255:4000".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:4000".parse().unwrap();
        let none = HeadFields::default();
        assert_eq!(forwarded_for(&none, true, v4), "10.1.20.255");
        assert_eq!(forwarded_for(&none, true, v6), "2001:db8::1");
        let mut map = HeaderMap::new();
        map.append(X_FORWARDED_FOR.clone(), HeaderValue::from_static("1.1.1.1, 2.2.2.2"));
        map.append(X_FORWARDED_FOR.clone(), HeaderValue::from_static("3.3.3.3"));
        let hops = HeadFields::from(map);
        let value = forwarded_for(&hops, false, v6);
        assert_eq!(value, "1.1.1.1, 2.2.2.2, 3.3.3.3, 2001:db8::1");
        assert_eq!(value.len(), "1.1.1.1, 2.2.2.2, 3.3.3.3, 2001:db8::1".len());
        let widest: SocketAddr = "[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255]:1".parse().unwrap();
        assert_eq!(forwarded_for(&none, true, widest), widest.ip().to_string());
    }

    #[test]
    fn a_worker_copy_is_made_once_and_is_the_workers_own() {
        std::thread::spawn(|| {
            let config = HeaderValue::from_bytes(b"upstream.example:8080").unwrap();
            let first = worker_copy(&config);
            assert_eq!(first, config);
            assert_ne!(first.as_bytes().as_ptr(), config.as_bytes().as_ptr(), "a copy, not the config's bytes");
            let again = worker_copy(&config);
            assert_eq!(again.as_bytes().as_ptr(), first.as_bytes().as_ptr(), "the same copy, cloned");
            for i in 0..KEPT_COPIES {
                worker_copy(&HeaderValue::from_str(&format!("other-{i}")).unwrap());
            }
            let later = worker_copy(&config);
            assert_eq!(later, config);
            assert_ne!(later.as_bytes().as_ptr(), first.as_bytes().as_ptr(), "the oldest gave way: copied anew");
        })
        .join()
        .unwrap();
    }
}
