package nuncio

import (
	"net/http"
	"strings"
)

// Header is a message's fields, like http.Header: names are
// case-insensitive (kept lower-case, as HTTP/2 writes them), a name may
// have several values, and order is kept.
//
// A Header handed to a hook is the hook's own copy: reading it needs no
// call to nuncio, and what the hook changes (Set, Add, Del) goes back
// with its decision. It is not safe for concurrent use by several
// goroutines (like http.Header); a goroutine that continues a deferred
// hook (Defer) may use it once the hook returned.
//
// Del and Set are safe inside Range: Range walks the fields as they were
// when it began, and no lock is taken (envoy#27914, #29617).
type Header struct {
	fields []field
	// The changes made since the hook began, as an edit list.
	edits []byte
	// invalid is the first name changed with a name or value nuncio would
	// refuse ("" when none): checked as changes are made, not per field.
	invalid string
	bad     bool
}

type field struct {
	name, value string
}

// lower returns name in lower case, allocating only if it has upper-case
// letters.
func lower(name string) string {
	for i := 0; i < len(name); i++ {
		if c := name[i]; 'A' <= c && c <= 'Z' {
			return strings.ToLower(name)
		}
	}
	return name
}

// Get returns the first value of name, or "".
func (h *Header) Get(name string) string {
	name = lower(name)
	for _, f := range h.fields {
		if f.name == name {
			return f.value
		}
	}
	return ""
}

// Values returns every value of name, in order.
func (h *Header) Values(name string) []string {
	name = lower(name)
	var out []string
	for _, f := range h.fields {
		if f.name == name {
			out = append(out, f.value)
		}
	}
	return out
}

// Has tells whether name has a value.
func (h *Header) Has(name string) bool {
	name = lower(name)
	for _, f := range h.fields {
		if f.name == name {
			return true
		}
	}
	return false
}

// Len is the number of fields (a name with two values counts twice).
func (h *Header) Len() int { return len(h.fields) }

// Range calls fn with each field in order until fn returns false. fn may
// change h (Set, Add, Del): Range goes on over the fields as they were
// when it began.
func (h *Header) Range(fn func(name, value string) bool) {
	for _, f := range h.fields {
		if !fn(f.name, f.value) {
			return
		}
	}
}

// Set replaces every value of name with value.
func (h *Header) Set(name, value string) {
	name = lower(name)
	h.note(name, value)
	h.remove(name)
	h.fields = append(h.fields, field{name, value})
	h.edits = appendEdit(h.grow(), editSet, name, value)
}

// Add adds value to name's values.
func (h *Header) Add(name, value string) {
	name = lower(name)
	h.note(name, value)
	h.fields = append(h.fields, field{name, value})
	h.edits = appendEdit(h.grow(), editAdd, name, value)
}

// Del removes every value of name.
func (h *Header) Del(name string) {
	name = lower(name)
	h.note(name, "")
	h.remove(name)
	h.edits = appendEdit(h.grow(), editDel, name)
}

// note records a change nuncio would refuse.
func (h *Header) note(name, value string) {
	if !h.bad && (!validName(name) || !validValue(value)) {
		h.bad, h.invalid = true, name
	}
}

// grow gives the edit list room for a few edits at its first.
func (h *Header) grow() []byte {
	if h.edits == nil {
		return make([]byte, 0, 128)
	}
	return h.edits
}

// remove drops name's fields into a new slice, so that a Range in
// progress keeps walking the old one.
func (h *Header) remove(name string) {
	keep := -1
	for i, f := range h.fields {
		if f.name == name {
			keep = i
			break
		}
	}
	if keep < 0 {
		return
	}
	out := make([]field, keep, len(h.fields))
	copy(out, h.fields[:keep])
	for _, f := range h.fields[keep:] {
		if f.name != name {
			out = append(out, f)
		}
	}
	h.fields = out
}

// Clone returns a copy with no changes recorded.
func (h *Header) Clone() Header {
	return Header{fields: append([]field(nil), h.fields...)}
}

// HTTP returns the fields as an http.Header (canonical names), for a
// request made with Transport or for logging.
func (h *Header) HTTP() http.Header {
	out := make(http.Header, len(h.fields))
	for _, f := range h.fields {
		out.Add(f.name, f.value)
	}
	return out
}

// FromHTTP makes a Header of an http.Header's fields (names in lower
// case), for a reply.
func FromHTTP(hh http.Header) Header {
	var h Header
	for name, values := range hh {
		for _, v := range values {
			h.fields = append(h.fields, field{lower(name), v})
		}
	}
	return h
}

// asEdits is the fields as an edit list of additions (a reply's fields).
func (h *Header) asEdits() []byte {
	var out []byte
	for _, f := range h.fields {
		out = appendEdit(out, editAdd, f.name, f.value)
	}
	return out
}

// validName tells whether name is an HTTP token.
func validName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// validValue tells whether value can be sent: no control characters but
// tab.
func validValue(value string) bool {
	for i := 0; i < len(value); i++ {
		if c := value[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// check reports the first change nuncio would refuse.
func (h *Header) check() (string, bool) {
	return h.invalid, !h.bad
}

// checkAll reports the first field nuncio would refuse (a reply's, made
// whole by the filter).
func (h *Header) checkAll() (string, bool) {
	if !h.bad {
		for _, f := range h.fields {
			if !validName(f.name) || !validValue(f.value) {
				return f.name, false
			}
		}
	}
	return h.invalid, !h.bad
}
