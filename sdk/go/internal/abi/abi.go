// Package abi is the SDK's side of nuncio's C ABI (the header
// crates/filter-abi/include/nuncio_filter.h): the library's exports, which
// hand every call to a Handler (package nuncio), and thin wrappers over the
// host functions nuncio handed the library. Only the SDK uses it.
//
// Memory crosses by copy: what nuncio passes is copied into Go memory
// before an export returns, and what Go passes to a host function is a
// []byte or string that holds no Go pointers, read by nuncio during the
// call only (so cgocheck's default rules hold).
package abi

/*
#cgo CFLAGS: -I${SRCDIR}/../../../../crates/filter-abi/include
#include "host.h"
*/
import "C"

import (
	"strconv"
	"strings"
	"unsafe"
)

// abiTag is the ABI version this SDK was built for, in the form nuncio
// reads from the library file before loading it. A test build may set it
// with -ldflags "-X nuncio.dev/sdk/go/internal/abi.abiTag=...".
var abiTag = "nuncio-filter-abi-version:2"

// Version is the ABI version in abiTag.
func Version() uint32 {
	v, err := strconv.ParseUint(abiTag[strings.LastIndexByte(abiTag, ':')+1:], 10, 32)
	if err != nil {
		return 0
	}
	return uint32(v)
}

// Status codes (NUNCIO_*).
const (
	OK          = int32(C.NUNCIO_OK)
	StreamGone  = int32(C.NUNCIO_STREAM_GONE)
	NotStopped  = int32(C.NUNCIO_NOT_STOPPED)
	HeadersSent = int32(C.NUNCIO_HEADERS_SENT)
	Invalid     = int32(C.NUNCIO_INVALID)
	WouldBlock  = int32(C.NUNCIO_WOULD_BLOCK)
	CallFailed  = int32(C.NUNCIO_CALL_FAILED)
)

// Hooks.
const (
	HookRequestHeaders   = uint32(C.NUNCIO_HOOK_REQUEST_HEADERS)
	HookRequestBody      = uint32(C.NUNCIO_HOOK_REQUEST_BODY)
	HookRequestTrailers  = uint32(C.NUNCIO_HOOK_REQUEST_TRAILERS)
	HookResponseHeaders  = uint32(C.NUNCIO_HOOK_RESPONSE_HEADERS)
	HookResponseBody     = uint32(C.NUNCIO_HOOK_RESPONSE_BODY)
	HookResponseTrailers = uint32(C.NUNCIO_HOOK_RESPONSE_TRAILERS)
	EndOfStream          = uint32(C.NUNCIO_END_OF_STREAM)
)

// Decisions and their flags.
const (
	Continue         = uint32(C.NUNCIO_CONTINUE)
	Stop             = uint32(C.NUNCIO_STOP)
	Buffer           = uint32(C.NUNCIO_BUFFER)
	Watermark        = uint32(C.NUNCIO_WATERMARK)
	Reply            = uint32(C.NUNCIO_REPLY)
	DecisionBody     = uint32(C.NUNCIO_DECISION_BODY)
	DecisionPanicked = uint32(C.NUNCIO_DECISION_PANICKED)
	DecisionDefault  = uint32(C.NUNCIO_DECISION_DEFAULT)
)

// Edit ops.
const (
	EditSet       = byte(C.NUNCIO_EDIT_SET)
	EditAdd       = byte(C.NUNCIO_EDIT_ADD)
	EditDel       = byte(C.NUNCIO_EDIT_DEL)
	EditMethod    = byte(C.NUNCIO_EDIT_METHOD)
	EditPath      = byte(C.NUNCIO_EDIT_PATH)
	EditAuthority = byte(C.NUNCIO_EDIT_AUTHORITY)
	EditStatus    = byte(C.NUNCIO_EDIT_STATUS)
)

// Stream calls.
const (
	OpReadRequestHeaders  = uint32(C.NUNCIO_OP_READ_REQUEST_HEADERS)
	OpEditRequestHeaders  = uint32(C.NUNCIO_OP_EDIT_REQUEST_HEADERS)
	OpReadResponseHeaders = uint32(C.NUNCIO_OP_READ_RESPONSE_HEADERS)
	OpEditResponseHeaders = uint32(C.NUNCIO_OP_EDIT_RESPONSE_HEADERS)
	OpReadBody            = uint32(C.NUNCIO_OP_READ_BODY)
	OpReplaceBody         = uint32(C.NUNCIO_OP_REPLACE_BODY)
	OpAppendBody          = uint32(C.NUNCIO_OP_APPEND_BODY)
	OpResume              = uint32(C.NUNCIO_OP_RESUME)
	OpReply               = uint32(C.NUNCIO_OP_REPLY)
)

// End causes.
const (
	EndComplete   = uint32(C.NUNCIO_END_COMPLETE)
	EndClientGone = uint32(C.NUNCIO_END_CLIENT_GONE)
	EndLocalReply = uint32(C.NUNCIO_END_LOCAL_REPLY)
	EndAborted    = uint32(C.NUNCIO_END_ABORTED)
)

// Log levels.
const (
	LogError = uint32(C.NUNCIO_LOG_ERROR)
	LogWarn  = uint32(C.NUNCIO_LOG_WARN)
	LogInfo  = uint32(C.NUNCIO_LOG_INFO)
	LogDebug = uint32(C.NUNCIO_LOG_DEBUG)
)

// CountsPendingFlag is the return flag of hooks and ends.
const CountsPendingFlag = uint32(C.NUNCIO_COUNTS_PENDING)

func bytesPtr(b []byte) (*C.uint8_t, C.size_t) {
	if len(b) == 0 {
		return nil, 0
	}
	return (*C.uint8_t)(unsafe.Pointer(&b[0])), C.size_t(len(b))
}

func stringPtr(s string) (*C.uint8_t, C.size_t) {
	if len(s) == 0 {
		return nil, 0
	}
	return (*C.uint8_t)(unsafe.Pointer(unsafe.StringData(s))), C.size_t(len(s))
}

// Decide is the host's decide.
func Decide(stream uint64, hook uint32, decision uint32, status uint32, edits []byte, body []byte, flags uint32) int32 {
	e, el := bytesPtr(edits)
	b, bl := bytesPtr(body)
	return int32(C.nuncio_sdk_decide(C.uint64_t(stream), C.uint32_t(hook), C.uint32_t(decision), C.uint32_t(status), e, el, b, bl, C.uint32_t(flags)))
}

// Call is the host's call.
func Call(stream, call uint64, op, arg uint32, a, b []byte) int32 {
	ap, al := bytesPtr(a)
	bp, bl := bytesPtr(b)
	return int32(C.nuncio_sdk_call(C.uint64_t(stream), C.uint64_t(call), C.uint32_t(op), C.uint32_t(arg), ap, al, bp, bl))
}

// HTTPCall is the host's http_call.
func HTTPCall(stream, call uint64, cluster string, head, body []byte, timeoutMs, maxBytes uint64) int32 {
	cp, cl := stringPtr(cluster)
	hp, hl := bytesPtr(head)
	bp, bl := bytesPtr(body)
	return int32(C.nuncio_sdk_http_call(C.uint64_t(stream), C.uint64_t(call), cp, cl, hp, hl, bp, bl, C.uint64_t(timeoutMs), C.uint64_t(maxBytes)))
}

// HTTPCancel is the host's http_cancel.
func HTTPCancel(stream, call uint64) int32 {
	return int32(C.nuncio_sdk_http_cancel(C.uint64_t(stream), C.uint64_t(call)))
}

// Log is the host's log.
func Log(level uint32, filter, message string) int32 {
	fp, fl := stringPtr(filter)
	mp, ml := stringPtr(message)
	return int32(C.nuncio_sdk_log(C.uint32_t(level), fp, fl, mp, ml))
}

// CountsPending is the host's counts_pending.
func CountsPending(config uint64) int32 {
	return int32(C.nuncio_sdk_counts_pending(C.uint64_t(config)))
}

// Sink is an output buffer nuncio lent to the export call in progress.
type Sink struct{ p unsafe.Pointer }

// Put appends data to the sink (the host's put).
func (s Sink) Put(data []byte) int32 {
	p, l := bytesPtr(data)
	return int32(C.nuncio_sdk_put(s.p, p, l))
}

// PutString appends one string-list entry.
func (s Sink) PutString(v string) int32 {
	var n [4]byte
	putLen(n[:], len(v))
	if st := s.Put(n[:]); st != OK {
		return st
	}
	return s.Put([]byte(v))
}

func putLen(b []byte, n int) {
	b[0], b[1], b[2], b[3] = byte(n), byte(n>>8), byte(n>>16), byte(n>>24)
}
