//! A head's header fields as they were received: where each name and value
//! lies in the head's bytes, nothing parsed into `http` types; plus the
//! fields added since.
//!
//! Building a [`HeaderMap`] costs, per field, a name lookup, a value
//! validation, a hash and an insert (~400 instructions a field of a typical
//! response head, `bench/instructions`). A proxy that relays a head with a
//! few fields removed and added needs none of it: httparse has already
//! checked every name (a token) and value (no control bytes but HTAB), so
//! the bytes can be written out again as they came. [`RawFields`] keeps the
//! head's `Bytes`, the positions of its fields and the fields added (as
//! `http` types); a caller that needs a map (a filter, HTTP/2) makes one
//! with [`RawFields::to_map`]. Lookups are linear: a head has a handful of
//! fields, and comparing a few names costs less than hashing one.
//!
//! Received names keep the case the sender wrote; lookups compare names
//! without case (RFC 9110 §5.1). Order is kept: the received fields first,
//! then the added ones.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::names::{Known, Special, classify};

/// Where one field's name and value lie in the head.
#[derive(Debug, Clone, Copy)]
struct Span {
    name: (u32, u32),
    value: (u32, u32),
    /// One of [`crate::HOP_BY_HOP`]: decided once, as the head is decoded.
    hop_by_hop: bool,
    /// `Content-Length` or `Transfer-Encoding`, which the encoder writes
    /// from the framing it is given: decided with `hop_by_hop` (in the
    /// padding beside it), not again as the head is written out.
    framing: bool,
}

impl Span {
    fn new(name: (u32, u32), value: (u32, u32), known: Known) -> Span {
        let framing = matches!(known.special, Some(Special::ContentLength | Special::TransferEncoding));
        Span { name, value, hop_by_hop: known.hop_by_hop, framing }
    }
}

/// The header fields of a decoded head, as received, and those added
/// since. See the module docs.
#[derive(Debug, Clone, Default)]
pub struct RawFields {
    head: Bytes,
    spans: Vec<Span>,
    added: Vec<(HeaderName, HeaderValue)>,
    /// A received `Connection` field names a field other than the
    /// hop-by-hop ones (`Connection: close, x-private`): seldom. Set by
    /// the decoder, which reads the options anyway.
    pub(crate) connection_names_others: bool,
}

impl RawFields {
    /// No fields yet, with room for `n` received ones; their head is
    /// [attached](RawFields::attach) once it is split off the buffer it
    /// was parsed in.
    pub(crate) fn with_capacity(n: usize) -> RawFields {
        RawFields {
            head: Bytes::new(),
            spans: Vec::with_capacity(n),
            added: Vec::new(),
            connection_names_others: false,
        }
    }

    /// Adds a received field, `name` and `value` slices of `parsed` (the
    /// bytes the head is the start of); `None` if they are not (a caller
    /// bug) or the head is over 4 GiB.
    /// `known`: what the decoder found `name` to be.
    pub(crate) fn push_received(&mut self, parsed: &[u8], name: &[u8], value: &[u8], known: Known) -> Option<()> {
        self.spans.push(Span::new(offset_in(parsed, name)?, offset_in(parsed, value)?, known));
        Some(())
    }

    /// Fields decoded elsewhere into one buffer (an HTTP/2 request's header
    /// block): each `(offset, length)` pair of a name and of its value is a
    /// range of `head`. The caller has checked names (tokens) and values
    /// (no control bytes but HTAB) as the HTTP/1.1 decoder does; which are
    /// hop-by-hop is decided here (a `Connection` field among them takes the
    /// general path of [`RawFields::remove_hop_by_hop`]).
    ///
    /// # Panics
    /// If a range is not in `head`.
    pub fn from_ranges(head: Bytes, fields: impl ExactSizeIterator<Item = ((u32, u32), (u32, u32))>) -> RawFields {
        let mut spans = Vec::with_capacity(fields.len());
        let mut connection = false;
        for (name, value) in fields {
            let name_bytes = slice(&head, name);
            let known = classify(name_bytes);
            connection |= known.special == Some(Special::Connection);
            let _ = slice(&head, value);
            spans.push(Span::new(name, value, known));
        }
        RawFields { head, spans, added: Vec::new(), connection_names_others: connection }
    }

    /// Gives the fields their head: the bytes they were parsed from, from
    /// the same start (at least up to the end of the last field).
    pub(crate) fn attach(&mut self, head: Bytes) {
        debug_assert!(self.spans.iter().all(|span| (span.value.0 + span.value.1) as usize <= head.len()));
        self.head = head;
    }

    /// How many fields there are.
    pub fn len(&self) -> usize {
        self.spans.len() + self.added.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Name and value of each field in order, received names as written.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.iter_marking_framing().map(|(name, value, _)| (name, value))
    }

    /// [`RawFields::iter`] with, for each field, whether it is
    /// `Content-Length` or `Transfer-Encoding` (any case): what the encoder
    /// skips when it writes the framing itself.
    pub(crate) fn iter_marking_framing(&self) -> impl Iterator<Item = (&[u8], &[u8], bool)> {
        let head = &self.head;
        let received =
            self.spans.iter().map(move |span| (slice(head, span.name), slice(head, span.value), span.framing));
        let added = self.added.iter().map(|(name, value)| {
            let framing = name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING;
            (name.as_str().as_bytes(), value.as_bytes(), framing)
        });
        received.chain(added)
    }

    /// The values of the fields called `name` (compared without case), in
    /// order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        let head = &self.head;
        let received = self.spans.iter().filter(move |span| is(head, span, name.as_bytes()));
        let received = received.map(move |span| slice(head, span.value));
        let added = self.added.iter().filter(move |(n, _)| n.as_str().eq_ignore_ascii_case(name));
        received.chain(added.map(|(_, value)| value.as_bytes()))
    }

    /// The value of the first field called `name` (compared without case).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        // Loops rather than `get_all`: this runs several times a request.
        for span in &self.spans {
            if is(&self.head, span, name.as_bytes()) {
                return Some(slice(&self.head, span.value));
            }
        }
        self.added.iter().find(|(n, _)| n.as_str().eq_ignore_ascii_case(name)).map(|(_, v)| v.as_bytes())
    }

    /// Whether a field is called `name` (compared without case).
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Adds a field after the others (beside any of the same name).
    pub fn append(&mut self, name: HeaderName, value: HeaderValue) {
        self.added.push((name, value));
    }

    /// Replaces every field called `name` by one with `value`.
    pub fn insert(&mut self, name: HeaderName, value: HeaderValue) {
        self.remove(name.as_str());
        self.append(name, value);
    }

    /// Removes every field called `name` (compared without case).
    pub fn remove(&mut self, name: &str) {
        let head = &self.head;
        let named = |span: &Span| is(head, span, name.as_bytes());
        // Mostly one field of a name (`Host`): shifting the few after it
        // down costs less than `retain` over all of them.
        if let Some(at) = self.spans.iter().position(named) {
            self.spans.remove(at);
            if self.spans[at..].iter().any(named) {
                self.spans.retain(|span| !named(span));
            }
        }
        if self.added.iter().any(|(n, _)| n.as_str().eq_ignore_ascii_case(name)) {
            self.added.retain(|(n, _)| !n.as_str().eq_ignore_ascii_case(name));
        }
    }

    /// Removes the hop-by-hop fields and every field named in `Connection`,
    /// as [`crate::remove_hop_by_hop`] does for a map.
    pub fn remove_hop_by_hop(&mut self) {
        // The usual head: which received fields are hop-by-hop was decided
        // as it was decoded, and its `Connection` names none but them.
        let added_connection = self.added.iter().any(|(name, _)| name == header::CONNECTION);
        if !self.connection_names_others && !added_connection {
            if self.spans.iter().any(|span| span.hop_by_hop) {
                self.spans.retain(|span| !span.hop_by_hop);
            }
            if self.added.iter().any(|(name, _)| is_hop_by_hop(name.as_str().as_bytes())) {
                self.added.retain(|(name, _)| !is_hop_by_hop(name.as_str().as_bytes()));
            }
            return;
        }
        // The other fields `Connection` names, copied (the fields are
        // removed below).
        let named: Vec<Vec<u8>> =
            self.get_all("connection").flat_map(tokens).filter(|t| !is_hop_by_hop(t)).map(<[u8]>::to_vec).collect();
        let keep = |name: &[u8]| !is_hop_by_hop(name) && !named.iter().any(|n| n.eq_ignore_ascii_case(name));
        let head = &self.head;
        self.spans.retain(|span| keep(slice(head, span.name)));
        self.added.retain(|(name, _)| keep(name.as_str().as_bytes()));
        self.connection_names_others = false;
    }

    /// The fields as a [`HeaderMap`] (one kept by [`crate::field_maps`]
    /// when there is one), received values sharing the head's bytes.
    pub fn to_map(&self) -> HeaderMap {
        self.map_with_values(&self.head, |span| span.value)
    }

    /// [`RawFields::to_map`] with the received values copied, together,
    /// into one allocation of their own: for a map that outlives the head's
    /// buffer (HTTP/2's HPACK table keeps the values it indexes for the
    /// connection's life, and a value sharing the buffer it was read into
    /// would keep all of it alive).
    pub fn to_owned_map(&self) -> HeaderMap {
        let total = self.spans.iter().map(|span| span.value.1 as usize).sum();
        let mut values = bytes::BytesMut::with_capacity(total);
        for span in &self.spans {
            values.extend_from_slice(slice(&self.head, span.value));
        }
        let values = values.freeze();
        // The copies lie in received order, one after the other.
        let mut at = 0;
        self.map_with_values(&values, |span| {
            let value = (at, span.value.1);
            at += span.value.1;
            value
        })
    }

    /// The map: names from the head, each received value the slice of
    /// `values` that `position` gives for its span (called in order).
    fn map_with_values(&self, values: &Bytes, mut position: impl FnMut(&Span) -> (u32, u32)) -> HeaderMap {
        let mut map =
            crate::field_maps::take(self.len() + crate::head::SPARE_FIELDS).unwrap_or_else(|_| HeaderMap::new());
        for span in &self.spans {
            let (start, len) = position(span);
            let value = values.slice(start as usize..start as usize + len as usize);
            // httparse accepted both (a token; no control bytes but HTAB),
            // which is what `http` asks of them too.
            if let (Ok(name), Ok(value)) =
                (HeaderName::from_bytes(slice(&self.head, span.name)), HeaderValue::from_maybe_shared(value))
            {
                map.append(name, value);
            }
        }
        for (name, value) in &self.added {
            map.append(name.clone(), value.clone());
        }
        map
    }
}

fn slice(head: &Bytes, (start, len): (u32, u32)) -> &[u8] {
    &head[start as usize..][..len as usize]
}

/// Where `part`, a slice of `whole`, lies in it: `None` if it does not, or
/// past 4 GiB.
pub(crate) fn offset_in(whole: &[u8], part: &[u8]) -> Option<(u32, u32)> {
    let start = (part.as_ptr() as usize).wrapping_sub(whole.as_ptr() as usize);
    if start > whole.len() || part.len() > whole.len() - start {
        return None;
    }
    Some((u32::try_from(start).ok()?, u32::try_from(part.len()).ok()?))
}

/// Whether the field at `span` is called `name`: lengths first, so that
/// most fields are passed over without a look at their bytes.
#[inline]
fn is(head: &Bytes, span: &Span, name: &[u8]) -> bool {
    span.name.1 as usize == name.len() && slice(head, span.name).eq_ignore_ascii_case(name)
}

/// One of [`crate::HOP_BY_HOP`] (any case).
pub(crate) fn is_hop_by_hop(name: &[u8]) -> bool {
    classify(name).hop_by_hop
}

/// The non-empty options of a `Connection` value.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(<[u8]>::trim_ascii).filter(|token| !token.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(head: &'static [u8]) -> RawFields {
        let head = Bytes::from_static(head);
        let mut slots = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut slots);
        assert!(response.parse(&head).unwrap().is_complete());
        let mut fields = crate::head::build_raw_fields(&head, response.headers).ok().unwrap().headers;
        fields.attach(head.clone());
        fields
    }

    #[test]
    fn the_hop_by_hop_names_are_the_codecs() {
        for name in crate::HOP_BY_HOP {
            assert!(is_hop_by_hop(name.as_str().as_bytes()), "{name}");
            assert!(is_hop_by_hop(name.as_str().to_ascii_uppercase().as_bytes()), "{name}");
        }
        for name in ["host", "tex", "trailers", "upgraded", "connections", "x-keep-alive", ""] {
            assert!(!is_hop_by_hop(name.as_bytes()), "{name}");
        }
    }

    #[test]
    fn fields_keep_their_order_and_case_and_are_found_without_case() {
        let f = fields(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-A: 1\r\nx-a: 2\r\n\r\n");
        assert_eq!(f.len(), 3);
        let all: Vec<_> = f.iter().collect();
        assert_eq!(all, [(&b"Content-Type"[..], &b"text/plain"[..]), (b"X-A", b"1"), (b"x-a", b"2")]);
        assert_eq!(f.get("content-type"), Some(&b"text/plain"[..]));
        assert_eq!(f.get("x-a"), Some(&b"1"[..]));
        assert_eq!(f.get("x-b"), None);
        let map = f.to_map();
        assert_eq!(map.len(), 3);
        assert_eq!(map.get_all("x-a").iter().map(HeaderValue::as_bytes).collect::<Vec<_>>(), [&b"1"[..], b"2"]);
        let mut f = f;
        f.remove("X-a");
        assert_eq!(f.len(), 1);
    }

    #[test]
    fn removing_a_field_keeps_the_order_of_the_others() {
        let mut f = fields(b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\nb: 4\r\nD: 5\r\n\r\n");
        f.remove("c");
        assert_eq!(f.iter().map(|(n, _)| n).collect::<Vec<_>>(), [&b"A"[..], b"B", b"b", b"D"]);
        f.remove("B");
        assert_eq!(f.iter().collect::<Vec<_>>(), [(&b"A"[..], &b"1"[..]), (b"D", b"5")]);
    }

    #[test]
    fn hop_by_hop_fields_and_those_connection_names_go() {
        let mut f = fields(
            b"HTTP/1.1 200 OK\r\nConnection: close, X-Private\r\nKeep-Alive: timeout=5\r\nx-private: 1\r\n\
              Server: s\r\nTransfer-Encoding: chunked\r\nconnection: ,Upgrade\r\nX-Privateer: 2\r\n\r\n",
        );
        f.remove_hop_by_hop();
        let names: Vec<_> = f.iter().map(|(n, _)| n).collect();
        assert_eq!(names, [&b"Server"[..], b"X-Privateer"]);
    }

    #[test]
    fn added_fields_come_after_the_received_ones_and_are_found_like_them() {
        let mut f = fields(b"HTTP/1.1 200 OK\r\nVia: a\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n");
        f.append(HeaderName::from_static("via"), HeaderValue::from_static("b"));
        f.insert(HeaderName::from_static("x-forwarded-for"), HeaderValue::from_static("10.0.0.1, 10.0.0.2"));
        let all: Vec<_> = f.iter().collect();
        assert_eq!(all, [(&b"Via"[..], &b"a"[..]), (b"via", b"b"), (b"x-forwarded-for", b"10.0.0.1, 10.0.0.2")]);
        assert_eq!(f.get_all("VIA").collect::<Vec<_>>(), [&b"a"[..], b"b"]);
        assert!(f.contains("x-forwarded-for"));
        f.remove("via");
        assert_eq!(f.len(), 1);
        assert_eq!(f.to_map().get("x-forwarded-for").unwrap(), "10.0.0.1, 10.0.0.2");
    }

    #[test]
    fn an_owned_map_is_the_map_with_its_values_out_of_the_head() {
        let mut f = fields(b"HTTP/1.1 200 OK\r\nA: 1\r\nB: two\r\nA: 3\r\n\r\n");
        f.append(HeaderName::from_static("c"), HeaderValue::from_static("added"));
        let owned = f.to_owned_map();
        assert_eq!(owned, f.to_map());
        let head = f.head.as_ptr_range();
        for value in owned.values() {
            assert!(!head.contains(&value.as_bytes().as_ptr()), "{value:?} still points into the head");
        }
    }

    #[test]
    fn the_same_rules_as_for_a_map() {
        let head = b"HTTP/1.1 200 OK\r\nConnection: x-a\r\nX-A: 1\r\nTE: trailers\r\nProxy-Connection: k\r\n\
                     Trailer: t\r\nUpgrade: h2c\r\nVary: a\r\n\r\n";
        let mut raw = fields(head);
        // An added field is named by `Connection` as well.
        raw.append(HeaderName::from_static("x-b"), HeaderValue::from_static("2"));
        raw.append(HeaderName::from_static("connection"), HeaderValue::from_static("x-b"));
        let mut map = raw.to_map();
        raw.remove_hop_by_hop();
        crate::remove_hop_by_hop(&mut map);
        assert_eq!(raw.to_map(), map);
        assert_eq!(map.len(), 1);
    }
}
