//! The `Host` values a thread parsed last, kept as [`Authority`]s.
//!
//! A keep-alive client sends the same `Host` on every request, and most of
//! a proxy's traffic names a few hosts; parsing one into an `Authority` and
//! checking it (no userinfo, a port in range) cost ~500 instructions a
//! request (`bench/instructions`). A value seen lately is found by
//! comparing bytes, and its `Authority` cloned (a count this thread alone
//! writes).
//!
//! A value not kept costs a copy more than before (an allocation and a
//! copy, ~150 instructions by estimate, not measured: a
//! slice of a request's head would keep that request's read buffer alive),
//! so the cache pays while at least a quarter of requests find their host:
//! with [`KEEP`] hosts kept and the oldest giving way, up to ~30 hosts
//! evenly interleaved on one worker.
//!
//! Thread rule: a thread-local, like [`crate::field_maps`]; nothing is
//! shared between workers.

use std::cell::RefCell;

use bytes::Bytes;
use http::uri::Authority;

/// How many hosts a thread keeps.
const KEEP: usize = 8;

thread_local! {
    /// The hosts, and where the next one goes (round robin).
    static HOSTS: RefCell<([Option<Authority>; KEEP], usize)> = const { RefCell::new(([const { None }; KEEP], 0)) };
}

/// The `Authority` of `value`, a `Host` value this thread parsed and
/// accepted lately.
pub(crate) fn find(value: &[u8]) -> Option<Authority> {
    HOSTS.with_borrow(|(hosts, _)| hosts.iter().flatten().find(|host| host.as_str().as_bytes() == value).cloned())
}

/// Parses `value` with `parse` (which also checks it), keeping what it
/// accepts for [`find`]; the `Authority` returned has bytes of its own.
pub(crate) fn parse<E>(value: &[u8], parse: impl FnOnce(Bytes) -> Result<Authority, E>) -> Result<Authority, E> {
    let authority = parse(Bytes::copy_from_slice(value))?;
    HOSTS.with_borrow_mut(|(hosts, next)| {
        hosts[*next] = Some(authority.clone());
        *next = (*next + 1) % KEEP;
    });
    Ok(authority)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: Bytes) -> Result<Authority, ()> {
        Authority::from_maybe_shared(value).map_err(|_| ())
    }

    #[test]
    fn a_host_parsed_is_found_by_its_bytes_until_keep_others_follow() {
        std::thread::spawn(|| {
            assert!(find(b"a.example:80").is_none());
            let a = parse(b"a.example:80", accept).unwrap();
            assert_eq!(find(b"a.example:80"), Some(a));
            assert!(find(b"A.example:80").is_none(), "bytes, as received");
            assert!(parse(b"bad host", |_| Err::<Authority, _>(())).is_err());
            assert!(find(b"bad host").is_none(), "a refused value is not kept");
            for other in 1..KEEP {
                parse(other.to_string().as_bytes(), accept).unwrap();
            }
            assert!(find(b"a.example:80").is_some(), "KEEP kept");
            parse(b"e", accept).unwrap();
            assert!(find(b"a.example:80").is_none(), "the oldest gave way");
            assert!(find(b"e").is_some() && find(b"1").is_some());
        })
        .join()
        .unwrap();
    }
}
