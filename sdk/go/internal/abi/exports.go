package abi

/*
#cgo CFLAGS: -I${SRCDIR}/../../../../crates/filter-abi/include
// Beside cgo's own prototypes of the exports below, so that the C compiler
// refuses any that disagree with the header.
#include "nuncio_filter.h"
*/
import "C"

import (
	"fmt"
	"runtime/debug"
	"unsafe"
)

// Handler receives every call nuncio makes into the library. Package
// nuncio implements it; the exports below only copy their arguments into
// Go memory and pass them on.
type Handler interface {
	Configure(filter string, config []byte, sink Sink) uint64
	Release(config uint64)
	Hook(config, stream uint64, hookID, hook uint32, head string, body []byte, flags uint32, deadlineNs int64) uint32
	End(config, stream uint64, cause uint32) uint32
	CallDone(call uint64, status int32, data []byte)
	HTTPDone(call uint64, status int32, httpStatus uint32, fields string, body []byte)
	TakeCounts(config uint64, late bool, sink Sink)
	Stats(sink Sink)
}

var handler Handler

// SetHandler installs the handler (package nuncio's init).
func SetHandler(h Handler) { handler = h }

func goBytes(p *C.uint8_t, n C.size_t) []byte {
	if n == 0 {
		return nil
	}
	return C.GoBytes(unsafe.Pointer(p), C.int(n))
}

func goString(p *C.uint8_t, n C.size_t) string {
	if n == 0 {
		return ""
	}
	return C.GoStringN((*C.char)(unsafe.Pointer(p)), C.int(n))
}

// survive keeps a panic of the SDK itself (a bug: filters' panics are
// recovered where they run) from unwinding into nuncio, which would end
// the process: it is logged, and `after` answers for the call.
func survive(what string, after func()) {
	if p := recover(); p != nil {
		Log(LogError, "go", fmt.Sprintf("the Go SDK panicked in %s (a bug in the SDK): %v\n%s", what, p, debug.Stack()))
		if after != nil {
			after()
		}
	}
}

//export nuncio_filter_abi_version
func nuncio_filter_abi_version() C.uint32_t {
	return C.uint32_t(Version())
}

//export nuncio_filter_init
func nuncio_filter_init(host *C.nuncio_host_v1) C.int32_t {
	return C.int32_t(setHost(host))
}

//export nuncio_filter_configure
func nuncio_filter_configure(filter *C.uint8_t, filterLen C.size_t, config *C.uint8_t, configLen C.size_t, sink unsafe.Pointer) (id C.uint64_t) {
	defer survive("configure", func() {
		id = 0
		Sink{sink}.PutString("")
		Sink{sink}.PutString("the Go SDK panicked configuring this filter (a bug in the SDK; see the log)")
	})
	return C.uint64_t(handler.Configure(goString(filter, filterLen), goBytes(config, configLen), Sink{sink}))
}

//export nuncio_filter_release
func nuncio_filter_release(config C.uint64_t) {
	defer survive("release", nil)
	handler.Release(uint64(config))
}

//export nuncio_filter_hook
func nuncio_filter_hook(config C.uint64_t, stream C.uint64_t, hookID C.uint32_t, hook C.uint32_t, head *C.uint8_t, headLen C.size_t, body *C.uint8_t, bodyLen C.size_t, flags C.uint32_t, deadlineNs C.int64_t) C.uint32_t {
	// Whatever happened, the hook gets a decision (a second one is refused).
	defer survive("a hook", func() {
		Decide(uint64(stream), uint32(hookID), Reply, 500, nil, []byte("nuncio: the Go SDK failed\n"), DecisionPanicked)
	})
	return C.uint32_t(handler.Hook(uint64(config), uint64(stream), uint32(hookID), uint32(hook), goString(head, headLen), goBytes(body, bodyLen), uint32(flags), int64(deadlineNs)))
}

//export nuncio_filter_end
func nuncio_filter_end(config C.uint64_t, stream C.uint64_t, cause C.uint32_t) C.uint32_t {
	defer survive("a stream's end", nil)
	return C.uint32_t(handler.End(uint64(config), uint64(stream), uint32(cause)))
}

//export nuncio_filter_call_done
func nuncio_filter_call_done(call C.uint64_t, status C.int32_t, data *C.uint8_t, dataLen C.size_t) {
	defer survive("a call's completion", nil)
	handler.CallDone(uint64(call), int32(status), goBytes(data, dataLen))
}

//export nuncio_filter_http_done
func nuncio_filter_http_done(call C.uint64_t, status C.int32_t, httpStatus C.uint32_t, fields *C.uint8_t, fieldsLen C.size_t, body *C.uint8_t, bodyLen C.size_t) {
	defer survive("an HTTP call's completion", nil)
	handler.HTTPDone(uint64(call), int32(status), uint32(httpStatus), goString(fields, fieldsLen), goBytes(body, bodyLen))
}

//export nuncio_filter_take_counts
func nuncio_filter_take_counts(config C.uint64_t, late C.uint32_t, sink unsafe.Pointer) {
	defer survive("taking counts", nil)
	handler.TakeCounts(uint64(config), late != 0, Sink{sink})
}

//export nuncio_filter_stats
func nuncio_filter_stats(sink unsafe.Pointer) {
	defer survive("stats", nil)
	handler.Stats(Sink{sink})
}
