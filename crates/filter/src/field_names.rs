//! Field names and values that every worker can copy without writing
//! shared memory.
//!
//! An `http::HeaderName` that is not one of the standard names keeps its
//! text in a reference-counted buffer. Config built once on main and read
//! by every worker holds such names; inserting one into a request clones
//! it, and the clone writes the buffer's count: one cache line written by
//! every worker on every request, which is what stops a proxy's cost per
//! request from staying flat as workers are added. A name made here is
//! backed by `'static` text instead, so its clones copy a pointer and
//! write nothing.
//!
//! The text is kept for the life of the process, once per distinct name
//! (a set the configs written over the process's life bounds): a reload
//! that names the same field reuses it.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock, PoisonError};

use http::header::InvalidHeaderName;
use http::{HeaderName, HeaderValue};

/// `text` as a field name whose clones write no shared memory (see the
/// module doc). For names that config or a filter factory reads once and
/// every stream then inserts; a name made per request needs none of this.
/// Case-insensitive like [`HeaderName::from_bytes`]: the name is lowercase.
///
/// ```
/// let name = nuncio_filter::field_name("X-Tenant").unwrap();
/// assert_eq!(name.as_str(), "x-tenant");
/// assert!(nuncio_filter::field_name("bad name").is_err());
/// ```
pub fn field_name(text: &str) -> Result<HeaderName, InvalidHeaderName> {
    let parsed = HeaderName::from_bytes(text.as_bytes())?;
    // `from_static` accepts what `from_bytes` made: lowercase and valid.
    Ok(HeaderName::from_static(kept(parsed.as_str())))
}

/// `text` as a field value whose clones write no shared memory, like
/// [`field_name`] (kept once per distinct value, for the process's life):
/// for a constant value that config gives and every stream sets. `None`
/// when `text` is not visible ASCII, spaces and tabs (those values are
/// copied per stream instead).
///
/// ```
/// let value = nuncio_filter::field_value("public, max-age=60").unwrap();
/// assert_eq!(value, "public, max-age=60");
/// assert!(nuncio_filter::field_value("line\nbreak").is_none());
/// ```
pub fn field_value(text: &str) -> Option<HeaderValue> {
    let ok = |b: u8| b == b'\t' || (0x20..0x7f).contains(&b);
    text.bytes().all(ok).then(|| HeaderValue::from_static(kept(text)))
}

/// The process's one copy of `text`.
fn kept(text: &str) -> &'static str {
    static KEPT: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut kept = KEPT.get_or_init(Mutex::default).lock().unwrap_or_else(PoisonError::into_inner);
    match kept.get(text) {
        Some(text) => text,
        None => {
            let text: &'static str = Box::leak(text.to_owned().into_boxed_str());
            kept.insert(text);
            text
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_lowercase_and_kept_once() {
        let a = field_name("X-Nuncio-Timeout").unwrap();
        let b = field_name("x-nuncio-timeout").unwrap();
        assert_eq!(a, "x-nuncio-timeout");
        assert_eq!(a, b);
        // The same kept text backs both.
        assert!(std::ptr::eq(a.as_str().as_ptr(), b.as_str().as_ptr()));
        // Standard names stay the standard ones.
        assert_eq!(field_name("Content-Type").unwrap(), http::header::CONTENT_TYPE);
        assert!(field_name("").is_err());
        assert!(field_name("a b").is_err());
    }

    #[test]
    fn values_are_kept_when_visible_ascii() {
        let a = field_value("v=1; x").unwrap();
        let b = field_value("v=1; x").unwrap();
        assert!(std::ptr::eq(a.as_bytes().as_ptr(), b.as_bytes().as_ptr()));
        assert!(field_value("caf\u{e9}").is_none());
        assert!(field_value("a\rb").is_none());
    }
}
