//! The field names the codec itself looks for, recognised in received
//! bytes in one step per field: the name's length picks the one or two
//! names it could be, then one comparison without case.

/// What a field name is to the codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Known {
    /// A field whose value the codec reads.
    pub(crate) special: Option<Special>,
    /// One of [`crate::HOP_BY_HOP`].
    pub(crate) hop_by_hop: bool,
}

/// The fields whose values the codec reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Special {
    ContentLength,
    TransferEncoding,
    Host,
    Connection,
    Expect,
    Upgrade,
}

const OTHER: Known = Known { special: None, hop_by_hop: false };

/// Classifies a received name (a token: httparse checked it), or a
/// `Connection` option.
pub(crate) fn classify(name: &[u8]) -> Known {
    let known = |special, hop_by_hop| Known { special, hop_by_hop };
    let is = |lowercase: &[u8]| eq_lowercase(name, lowercase);
    match name.len() {
        2 if is(b"te") => known(None, true),
        4 if is(b"host") => known(Some(Special::Host), false),
        6 if is(b"expect") => known(Some(Special::Expect), false),
        7 if is(b"upgrade") => known(Some(Special::Upgrade), true),
        7 if is(b"trailer") => known(None, true),
        10 if is(b"connection") => known(Some(Special::Connection), true),
        10 if is(b"keep-alive") => known(None, true),
        14 if is(b"content-length") => known(Some(Special::ContentLength), false),
        16 if is(b"proxy-connection") => known(None, true),
        17 if is(b"transfer-encoding") => known(Some(Special::TransferEncoding), true),
        _ => OTHER,
    }
}

/// `name` is `lowercase` (lowercase letters and `-` only) in any case,
/// for a `name` httparse accepted (a token, or a field value's bytes: no
/// control bytes but HTAB). Setting bit 0x20 lowercases a letter and
/// leaves `-` alone; the only other bytes it maps onto those are control
/// bytes (CR onto `-`), which such a name cannot hold. Eight bytes at a
/// time.
pub(crate) fn eq_lowercase(name: &[u8], lowercase: &[u8]) -> bool {
    debug_assert!(lowercase.iter().all(|&b| b.is_ascii_lowercase() || b == b'-'));
    if name.len() != lowercase.len() {
        return false;
    }
    let mut name_chunks = name.chunks_exact(8);
    let mut lowercase_chunks = lowercase.chunks_exact(8);
    for (a, b) in name_chunks.by_ref().zip(lowercase_chunks.by_ref()) {
        let a = u64::from_le_bytes(a.try_into().unwrap_or_default());
        let b = u64::from_le_bytes(b.try_into().unwrap_or_default());
        if a | 0x2020_2020_2020_2020 != b {
            return false;
        }
    }
    name_chunks.remainder().iter().zip(lowercase_chunks.remainder()).all(|(&a, &b)| a | 0x20 == b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_known_name_in_any_case_and_nothing_else() {
        let cases: [(&str, Option<Special>, bool); 10] = [
            ("te", None, true),
            ("host", Some(Special::Host), false),
            ("expect", Some(Special::Expect), false),
            ("upgrade", Some(Special::Upgrade), true),
            ("trailer", None, true),
            ("connection", Some(Special::Connection), true),
            ("keep-alive", None, true),
            ("content-length", Some(Special::ContentLength), false),
            ("proxy-connection", None, true),
            ("transfer-encoding", Some(Special::TransferEncoding), true),
        ];
        for (name, special, hop_by_hop) in cases {
            let known = Known { special, hop_by_hop };
            assert_eq!(classify(name.as_bytes()), known, "{name}");
            assert_eq!(classify(name.to_ascii_uppercase().as_bytes()), known, "{name}");
        }
        for (name, _, hop_by_hop) in cases {
            assert_eq!(crate::HOP_BY_HOP.iter().any(|h| h.as_str() == name), hop_by_hop, "{name}");
        }
        for name in ["", "hosts", "tf", "content-lengt!", "content_length", "Content-Lengtx", "x-keep-alive"] {
            assert_eq!(classify(name.as_bytes()), OTHER, "{name}");
        }
    }
}
