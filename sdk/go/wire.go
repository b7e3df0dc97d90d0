package nuncio

import (
	"encoding/binary"
	"errors"

	"nuncio.dev/sdk/go/internal/abi"
)

const (
	editSet       = abi.EditSet
	editAdd       = abi.EditAdd
	editDel       = abi.EditDel
	editMethod    = abi.EditMethod
	editPath      = abi.EditPath
	editAuthority = abi.EditAuthority
	editStatus    = abi.EditStatus
)

// appendEntry appends one string-list entry.
func appendEntry(b []byte, s string) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// appendEdit appends one edit: its op, then its operands.
func appendEdit(b []byte, op byte, operands ...string) []byte {
	b = append(b, op)
	for _, s := range operands {
		b = appendEntry(b, s)
	}
	return b
}

var errMalformed = errors.New("nuncio: malformed buffer from nuncio")

// reader reads a string list; its entries are substrings of one string
// (no copy per entry).
type reader struct {
	rest string
}

func (r *reader) empty() bool { return len(r.rest) == 0 }

func (r *reader) entry() (string, error) {
	if len(r.rest) < 4 {
		return "", errMalformed
	}
	n := int(uint32(r.rest[0]) | uint32(r.rest[1])<<8 | uint32(r.rest[2])<<16 | uint32(r.rest[3])<<24)
	if len(r.rest)-4 < n {
		return "", errMalformed
	}
	e := r.rest[4 : 4+n]
	r.rest = r.rest[4+n:]
	return e, nil
}

// fields reads the rest as a field list, in one allocation (none when
// room fits them).
func (r *reader) fields(room []field) ([]field, error) {
	n := 0
	for rest := r.rest; len(rest) >= 4; n++ {
		l := int(uint32(rest[0]) | uint32(rest[1])<<8 | uint32(rest[2])<<16 | uint32(rest[3])<<24)
		if len(rest)-4 < l {
			return nil, errMalformed
		}
		rest = rest[4+l:]
	}
	if n == 0 {
		return nil, nil
	}
	out := room[:0]
	if cap(room) < n/2+2 {
		// Room for a few more: a hook that adds a field does not reallocate.
		out = make([]field, 0, n/2+2)
	}
	for !r.empty() {
		name, err := r.entry()
		if err != nil {
			return nil, err
		}
		value, err := r.entry()
		if err != nil {
			return nil, err
		}
		out = append(out, field{name, value})
	}
	return out, nil
}

// encodeRequestHead is a request head as http_call takes it.
func encodeRequestHead(method, path, authority string, h *Header) []byte {
	b := appendEntry(nil, method)
	b = appendEntry(b, path)
	b = appendEntry(b, authority)
	for _, f := range h.fields {
		b = appendEntry(b, f.name)
		b = appendEntry(b, f.value)
	}
	return b
}
