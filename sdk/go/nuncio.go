// Package nuncio is the Go SDK for nuncio filters: write a Filter, register
// it, build the package as a c-shared library, and name it in nuncio's
// config.
//
//	package main
//
//	import (
//		"context"
//
//		nuncio "nuncio.dev/sdk/go"
//	)
//
//	type stamp struct{ nuncio.PassThrough }
//
//	func (stamp) RequestHeaders(ctx context.Context, h *nuncio.RequestHead, _ bool) nuncio.Decision {
//		h.Header.Set("x-stamped", "go")
//		return nuncio.Continue()
//	}
//
//	func init() {
//		nuncio.Register("stamp", func(c *nuncio.Config) (nuncio.NewFilter, error) {
//			return func() nuncio.Filter { return stamp{} }, nil
//		})
//	}
//
//	func main() {}
//
// Build with `go build -buildmode=c-shared -o libstamp.so .`, then:
//
//	filters: [ { name: go, config: { library: ./libstamp.so, filter: stamp } } ]
//
// # Ownership
//
// A hook is handed copies: the head (or body piece, or trailers) belongs
// to the hook from the moment it is called until it decides. Reading it
// needs no call to nuncio; the changes made to it travel back with the
// decision. The decision is the hook's return value, so a hook decides
// exactly once.
//
//	worker thread (nuncio)                Go
//	──────────────────────                ─────────────────────────────────────────
//	hook ──copy of head/body──────▶  RequestHeaders(ctx, head, eos)   owns head
//	     ◀─decision + edits──────── return Continue()                 (inline)
//	or:  ◀─(nothing yet)──────────  return Defer(fn)
//	     stream waits at filter     fn(ctx) in a goroutine             owns head
//	     ◀─decision + edits──────── fn returns Continue()             (deferred)
//	later: Handle calls ─post──▶ worker applies between hooks ─answer─▶ caller
//	stream ends ───────────────▶ ctx cancelled (cause), Handle → ErrStreamGone
//
// # Which goroutine may do what
//
//   - A hook runs on nuncio's worker thread (a cgo call), like Envoy's Go
//     filters: it must not block. It may read and change what it was
//     handed, count, log, and return. Anything that waits — an HTTP call,
//     a Handle call, a timer, a lock another goroutine holds across such a
//     wait — belongs in Defer or a goroutine started with Go. Calls that
//     need a worker return ErrInHook at once when made from inside a hook,
//     rather than deadlocking.
//   - Defer's fn and goroutines started with Go run on Go's own threads:
//     they may block, call Transport, use a Handle.
//   - A Handle may be used from any goroutine, at any time; once the stream
//     ended every method returns ErrStreamGone at once. No lock is held on
//     nuncio's worker for any of it.
//   - ctx is the stream's: cancelled when the stream ends (context.Cause
//     says why: an *EndError), with the route's deadline. Pass it to
//     everything done for the stream.
//
// # Panics
//
// A panic in a hook (or in Defer's fn) is recovered: the stream gets a
// 500, nuncio counts it in nuncio_filter_go_<name>_panics_total, the
// process lives on. Go starts goroutines with the same recovery.
package nuncio

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"nuncio.dev/sdk/go/internal/abi"
)

// Filter is one stream's filter: NewFilter makes one per stream. Each hook
// gets the stream's context first and returns its decision. Embed
// PassThrough for the hooks a filter does not need: they continue (and
// nuncio stops calling them for that config).
//
// Hooks run on nuncio's worker thread and must not block (see the package
// documentation); the value a hook is handed is its own until it decides.
type Filter interface {
	// RequestHeaders is called with the request head; endOfStream: no body
	// follows.
	RequestHeaders(ctx context.Context, head *RequestHead, endOfStream bool) Decision
	// RequestBody is called with each piece of the request body.
	RequestBody(ctx context.Context, body *Body, endOfStream bool) Decision
	// RequestTrailers is called with the request trailers.
	RequestTrailers(ctx context.Context, trailers *Header) Decision
	// ResponseHeaders is called with the response head (from the upstream,
	// or a local reply).
	ResponseHeaders(ctx context.Context, head *ResponseHead, endOfStream bool) Decision
	// ResponseBody is called with each piece of the response body.
	ResponseBody(ctx context.Context, body *Body, endOfStream bool) Decision
	// ResponseTrailers is called with the response trailers.
	ResponseTrailers(ctx context.Context, trailers *Header) Decision
	// OnComplete is the last call, whatever ended the stream; ctx is
	// already cancelled (context.Cause(ctx) says why). Must not block.
	OnComplete(ctx context.Context)
}

// PassThrough implements every hook of Filter by continuing; embed it and
// write only the hooks you need. Its hooks tell nuncio that the filter
// does not implement them, so nuncio stops calling them for that config:
// to continue from a hook you wrote, return Continue(), not PassThrough's.
type PassThrough struct{}

var passThrough = Decision{kind: abi.Continue, isDefault: true}

// RequestHeaders continues.
func (PassThrough) RequestHeaders(context.Context, *RequestHead, bool) Decision { return passThrough }

// RequestBody continues.
func (PassThrough) RequestBody(context.Context, *Body, bool) Decision { return passThrough }

// RequestTrailers continues.
func (PassThrough) RequestTrailers(context.Context, *Header) Decision { return passThrough }

// ResponseHeaders continues.
func (PassThrough) ResponseHeaders(context.Context, *ResponseHead, bool) Decision { return passThrough }

// ResponseBody continues.
func (PassThrough) ResponseBody(context.Context, *Body, bool) Decision { return passThrough }

// ResponseTrailers continues.
func (PassThrough) ResponseTrailers(context.Context, *Header) Decision { return passThrough }

// OnComplete does nothing.
func (PassThrough) OnComplete(context.Context) {}

// Decision is what a hook returns: exactly one per hook call. The zero
// Decision continues.
type Decision struct {
	kind      uint32
	status    int
	header    Header
	body      []byte
	deferred  func(ctx context.Context) Decision
	isDefault bool
	panicked  bool
}

// Continue goes on to the next filter, with the hook's changes.
func Continue() Decision { return Decision{kind: abi.Continue} }

// Stop holds the stream at this filter with what the hook was handed
// (nothing more is read from that side); a Handle's Resume or Reply goes
// on, from any goroutine. A client that leaves ends the stream.
func Stop() Decision { return Decision{kind: abi.Stop} }

// Buffer, from a body hook, keeps the body (up to nuncio's per-stream
// limit, 1 MiB) and calls the hook once more with all of it and
// endOfStream. From a headers hook of a message without body it
// continues (there is nothing to buffer); with a body it is a filter bug
// (500): buffer from the body hook.
func Buffer() Decision { return Decision{kind: abi.Buffer} }

// Watermark, from a body hook, keeps the body and calls the hook with
// each piece; past the limit nuncio stops reading the sender until the
// filter continues.
func Watermark() Decision { return Decision{kind: abi.Watermark} }

// Reply answers the client with status (200 to 599), header and body;
// nothing goes upstream (from a request hook) or the response is replaced
// (from a response hook, while its head has not gone out).
func Reply(status int, header Header, body []byte) Decision {
	return Decision{kind: abi.Reply, status: status, header: header, body: body}
}

// ReplyText answers the client with status and a text/plain body.
func ReplyText(status int, text string) Decision {
	var h Header
	h.Set("content-type", "text/plain; charset=utf-8")
	return Reply(status, h, []byte(text))
}

// Defer decides later: fn runs in a goroutine of its own (with the
// stream's ctx) while the stream waits at this filter, and its return
// value is the hook's decision. fn may block, make HTTP calls, and read
// and change what the hook was handed, which stays the hook's until fn
// returns. If the stream ends first, ctx is cancelled and fn's decision is
// dropped. A panic in fn is a 500 for the stream.
func Defer(fn func(ctx context.Context) Decision) Decision {
	return Decision{deferred: fn}
}

// RequestHead is a request head as a hook sees it. Changing Method, Path
// (path and query) or Authority changes the request; Header's changes go
// with the decision.
type RequestHead struct {
	Method    string
	Path      string
	Authority string
	Header    Header
	// RemoteAddr is the client's address, "ip:port" (as net/http's
	// Request.RemoteAddr); changing it changes nothing.
	RemoteAddr string
	orig       [3]string
	// room for Header's fields, so that a head is one allocation.
	room [8]field
}

// ResponseHead is a response head as a hook sees it. Changing Status
// changes the response.
type ResponseHead struct {
	Status     int
	Header     Header
	origStatus int
	room       [8]field
}

// Body is a piece of a body, the hook's own copy. Set replaces what goes
// on; changing the bytes Bytes returns in place changes nothing.
type Body struct {
	data []byte
	set  bool
}

// Bytes is the piece as received (or as last Set).
func (b *Body) Bytes() []byte { return b.data }

// Len is its length.
func (b *Body) Len() int { return len(b.data) }

// Set replaces the piece that goes on.
func (b *Body) Set(data []byte) {
	b.data = data
	b.set = true
}

// Errors of Handle and Transport calls.
var (
	// ErrStreamGone: the stream ended; nothing is left to act on.
	ErrStreamGone = errors.New("nuncio: the stream is gone")
	// ErrNotStopped: the stream is not stopped where the call needs it.
	ErrNotStopped = errors.New("nuncio: the stream is not stopped")
	// ErrHeadersSent: the headers were already sent.
	ErrHeadersSent = errors.New("nuncio: the headers were already sent")
	// ErrInvalid: an argument nuncio refused (a field name or value, a
	// status).
	ErrInvalid = errors.New("nuncio: invalid argument")
	// ErrInHook: the call waits for a worker, and was made on a worker,
	// inside a hook; it would never end. Use Defer or Go.
	ErrInHook = errors.New("nuncio: this call waits for nuncio's worker and cannot be made inside a hook: use nuncio.Defer or nuncio.Go")
)

func statusError(status int32) error {
	switch status {
	case abi.OK:
		return nil
	case abi.StreamGone:
		return ErrStreamGone
	case abi.NotStopped:
		return ErrNotStopped
	case abi.HeadersSent:
		return ErrHeadersSent
	case abi.WouldBlock:
		return ErrInHook
	default:
		return ErrInvalid
	}
}

// Why a stream ended: the Reason of the *EndError that context.Cause
// returns for a stream's ctx (errors.Is works on the *EndError).
var (
	// ErrComplete: the response went through the filter whole.
	ErrComplete = errors.New("nuncio: the stream completed")
	// ErrClientGone: the client went away (disconnected or reset) while
	// the filter held the stream.
	ErrClientGone = errors.New("nuncio: the client went away")
	// ErrLocalReply: the filter answered the stream itself.
	ErrLocalReply = errors.New("nuncio: the filter answered the stream")
	// ErrAborted: the stream ended before its response was complete
	// (client gone, reset, timeout, an upstream failure, another filter's
	// answer).
	ErrAborted = errors.New("nuncio: the stream ended before its response was complete")
	// ErrRouteTimeout is the cause of a ctx done at the route's deadline
	// (ctx.Err() is then context.DeadlineExceeded).
	ErrRouteTimeout = errors.New("nuncio: the route's deadline passed")
)

// EndError is the cause of a stream's ctx once the stream ended: why, and
// when nuncio saw it end.
type EndError struct {
	Reason error
	At     time.Time
}

func (e *EndError) Error() string { return e.Reason.Error() }

// Unwrap returns Reason.
func (e *EndError) Unwrap() error { return e.Reason }

func endReason(cause uint32) error {
	switch cause {
	case abi.EndComplete:
		return ErrComplete
	case abi.EndClientGone:
		return ErrClientGone
	case abi.EndLocalReply:
		return ErrLocalReply
	default:
		return ErrAborted
	}
}

// NewFilter makes a stream's filter.
type NewFilter func() Filter

// Factory makes a filter config from its config block (nuncio calls it
// when the config loads): read the block with c.Decode, declare counters
// and clusters, and return the constructor of per-stream filters. An error
// refuses the config; a *FieldError names the field.
type Factory func(c *Config) (NewFilter, error)

var (
	registryMu sync.Mutex
	registry   = map[string]Factory{}
)

// Register makes a filter available to nuncio's config as `filter: name`.
// Call it from an init function. Registering a name twice panics.
func Register(name string, factory Factory) {
	registryMu.Lock()
	defer registryMu.Unlock()
	if _, dup := registry[name]; dup {
		panic(fmt.Sprintf("nuncio: filter %q registered twice", name))
	}
	registry[name] = factory
}

func lookupFactory(name string) (Factory, []string) {
	registryMu.Lock()
	defer registryMu.Unlock()
	if f, ok := registry[name]; ok {
		return f, nil
	}
	names := make([]string, 0, len(registry))
	for n := range registry {
		names = append(names, n)
	}
	return nil, names
}
