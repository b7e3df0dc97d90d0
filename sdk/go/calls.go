package nuncio

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"nuncio.dev/sdk/go/internal/abi"
)

// reply is a call's completion, from nuncio's worker.
type reply struct {
	status     int32
	httpStatus uint32
	fields     string
	data       []byte
}

// calls are the calls waiting for their completion, by id. Completions
// arrive on nuncio's worker: complete only hands them to the waiting
// goroutine's channel (buffered, one completion per call: never blocks).
var calls pendingCalls

type pendingCalls struct {
	next  atomic.Uint64
	shard [shards]struct {
		sync.Mutex
		m map[uint64]chan reply
	}
	n atomic.Int64
}

func (p *pendingCalls) add() (uint64, chan reply) {
	id := p.next.Add(1)
	ch := make(chan reply, 1)
	sh := &p.shard[id%shards]
	sh.Lock()
	if sh.m == nil {
		sh.m = make(map[uint64]chan reply)
	}
	sh.m[id] = ch
	sh.Unlock()
	p.n.Add(1)
	return id, ch
}

func (p *pendingCalls) take(id uint64) chan reply {
	sh := &p.shard[id%shards]
	sh.Lock()
	ch, ok := sh.m[id]
	if ok {
		delete(sh.m, id)
	}
	sh.Unlock()
	if ok {
		p.n.Add(-1)
	}
	return ch
}

func complete(id uint64, r reply) {
	if ch := calls.take(id); ch != nil {
		ch <- r
	}
}

// Handle reaches a stream from any goroutine, at any time: each call is
// posted to the stream's worker, applied there between hooks (never while
// a hook runs), and answered. Once the stream ended every method returns
// ErrStreamGone at once; nothing panics, nothing waits for ever, and
// nuncio's worker takes no lock for it.
//
// A Handle's methods wait for nuncio's worker: from inside a hook (which
// runs on that worker) they return ErrInHook. Use them from Defer's fn or
// a goroutine started with Go.
type Handle struct{ s *stream }

// HandleOf returns the Handle of the stream whose ctx this is (a hook's
// ctx, or one derived from it), or nil.
func HandleOf(ctx context.Context) *Handle {
	if s := streamOf(ctx); s != nil {
		return &Handle{s}
	}
	return nil
}

// Context is the stream's ctx.
func (h *Handle) Context() context.Context { return h.s.ctx }

// Done is closed when the stream ends (ctx.Done may close earlier, at the
// route's deadline).
func (h *Handle) Done() <-chan struct{} { return h.s.base.Done() }

// Gone tells whether the stream ended.
func (h *Handle) Gone() bool { return h == nil || h.s.ended.Load() }

// do posts op and waits for its completion (which nuncio always sends,
// once, for an op it accepted).
func (h *Handle) do(op, arg uint32, a, b []byte) ([]byte, error) {
	if h.Gone() {
		return nil, ErrStreamGone
	}
	id, ch := calls.add()
	if st := host.call(h.s.id, id, op, arg, a, b); st != abi.OK {
		calls.take(id)
		return nil, statusError(st)
	}
	r := <-ch
	return r.data, statusError(r.status)
}

func (h *Handle) readFields(op uint32) (Header, error) {
	data, err := h.do(op, 0, nil, nil)
	if err != nil {
		return Header{}, err
	}
	r := reader{rest: string(data)}
	fields, err := r.fields(nil)
	return Header{fields: fields}, err
}

func (h *Handle) edit(op uint32, code byte, operands ...string) error {
	_, err := h.do(op, 0, appendEdit(nil, code, operands...), nil)
	return err
}

// RequestHeaders returns a copy of the request fields (until they were
// forwarded: then ErrHeadersSent).
func (h *Handle) RequestHeaders() (Header, error) { return h.readFields(abi.OpReadRequestHeaders) }

// SetRequestHeader sets a request field.
func (h *Handle) SetRequestHeader(name, value string) error {
	return h.edit(abi.OpEditRequestHeaders, editSet, lower(name), value)
}

// AddRequestHeader adds a request field value.
func (h *Handle) AddRequestHeader(name, value string) error {
	return h.edit(abi.OpEditRequestHeaders, editAdd, lower(name), value)
}

// DelRequestHeader removes a request field.
func (h *Handle) DelRequestHeader(name string) error {
	return h.edit(abi.OpEditRequestHeaders, editDel, lower(name))
}

// ResponseHeaders returns a copy of the response fields (while the
// response head has not gone out).
func (h *Handle) ResponseHeaders() (Header, error) { return h.readFields(abi.OpReadResponseHeaders) }

// SetResponseHeader sets a response field.
func (h *Handle) SetResponseHeader(name, value string) error {
	return h.edit(abi.OpEditResponseHeaders, editSet, lower(name), value)
}

// AddResponseHeader adds a response field value.
func (h *Handle) AddResponseHeader(name, value string) error {
	return h.edit(abi.OpEditResponseHeaders, editAdd, lower(name), value)
}

// DelResponseHeader removes a response field.
func (h *Handle) DelResponseHeader(name string) error {
	return h.edit(abi.OpEditResponseHeaders, editDel, lower(name))
}

// Body returns a copy of the body held where the stream is stopped.
func (h *Handle) Body() ([]byte, error) { return h.do(abi.OpReadBody, 0, nil, nil) }

// ReplaceBody replaces the body held where the stream is stopped.
func (h *Handle) ReplaceBody(data []byte) error {
	_, err := h.do(abi.OpReplaceBody, 0, data, nil)
	return err
}

// AppendBody appends to the body held where the stream is stopped.
func (h *Handle) AppendBody(data []byte) error {
	_, err := h.do(abi.OpAppendBody, 0, data, nil)
	return err
}

// Resume goes on after the filter that stopped the stream (Stop). A
// second Resume finds nothing stopped: ErrNotStopped.
func (h *Handle) Resume() error {
	_, err := h.do(abi.OpResume, 0, nil, nil)
	return err
}

// Reply answers the client now (status 200 to 599).
func (h *Handle) Reply(status int, header Header, body []byte) error {
	if status < 200 || status > 599 {
		return ErrInvalid
	}
	_, err := h.do(abi.OpReply, uint32(status), header.asEdits(), body)
	return err
}

// replyLater posts a 500 without waiting (a goroutine's panic).
func (h *Handle) replyLater(text string) {
	if h.Gone() {
		return
	}
	// No one waits: the completion finds no call and is dropped.
	id := calls.next.Add(1)
	var hd Header
	hd.Set("content-type", "text/plain; charset=utf-8")
	host.call(h.s.id, id, abi.OpReply, 500, hd.asEdits(), []byte(text))
}

// Go starts fn in a goroutine with the SDK's recovery: a panic is logged,
// counted (panics_total), and answered with a 500 if the stream can still
// be answered; the process lives on. ctx should be the stream's.
func Go(ctx context.Context, fn func(ctx context.Context)) {
	s := streamOf(ctx)
	goroutines.Add(1)
	go func() {
		defer goroutines.Add(-1)
		defer func() {
			if p := recover(); p != nil {
				if s == nil {
					defaultLogger().Error("goroutine panicked", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
					return
				}
				s.cfg.countPanic()
				s.cfg.logger.Error("goroutine panicked; the stream gets a 500 if it still can", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
				(&Handle{s}).replyLater("nuncio: filter go." + s.cfg.filter + " panicked\n")
			}
		}()
		fn(ctx)
	}()
}

// Transport is an http.RoundTripper over nuncio's own HTTP client: a
// request goes to the cluster its URL's host names (http://authz/check →
// cluster authz), from the stream's worker, through the cluster's pools,
// load balancing, circuit breakers and stats. The request's context must
// be the stream's ctx (or derived from it): the call ends with the stream,
// and never outlives the context's deadline. Declare the clusters a filter
// calls (Config.Cluster).
//
// RoundTrip waits for nuncio's worker: from inside a hook it returns
// ErrInHook. Call it from Defer's fn or a goroutine started with Go.
type Transport struct {
	// MaxResponseBytes bounds the response body read (0: 1 MiB).
	MaxResponseBytes int64
}

// Client is an http.Client over a Transport.
func Client() *http.Client { return &http.Client{Transport: &Transport{}} }

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	s := streamOf(ctx)
	if s == nil {
		closeBody(req)
		return nil, errors.New("nuncio.Transport: the request's context is not a stream's: make it with the hook's ctx (http.NewRequestWithContext)")
	}
	var body []byte
	if req.Body != nil {
		var err error
		body, err = io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
	}
	if s.ended.Load() {
		return nil, ErrStreamGone
	}
	if err := ctx.Err(); err != nil {
		return nil, context.Cause(ctx)
	}
	var timeoutMs uint64
	if dl, ok := ctx.Deadline(); ok {
		left := time.Until(dl)
		if left <= 0 {
			return nil, context.DeadlineExceeded
		}
		timeoutMs = uint64(math.Ceil(float64(left) / float64(time.Millisecond)))
	}
	var maxBytes uint64
	if t.MaxResponseBytes > 0 {
		maxBytes = uint64(t.MaxResponseBytes)
	}
	h := FromHTTP(req.Header)
	authority := req.Host
	if authority == "" {
		authority = req.URL.Host
	}
	head := encodeRequestHead(req.Method, req.URL.RequestURI(), authority, &h)
	id, ch := calls.add()
	if st := host.httpCall(s.id, id, req.URL.Hostname(), head, body, timeoutMs, maxBytes); st != abi.OK {
		calls.take(id)
		return nil, statusError(st)
	}
	select {
	case r := <-ch:
		return response(req, r)
	case <-ctx.Done():
		if calls.take(id) != nil {
			host.httpCancel(s.id, id)
			return nil, context.Cause(ctx)
		}
		// The completion is in the channel already.
		return response(req, <-ch)
	}
}

// CallError is an HTTP call nuncio could not complete: Reason says why
// (no healthy endpoint, timeout, connect error, ...).
type CallError struct{ Reason string }

func (e *CallError) Error() string { return "nuncio: " + e.Reason }

func response(req *http.Request, r reply) (*http.Response, error) {
	switch r.status {
	case abi.OK:
	case abi.CallFailed:
		return nil, &CallError{Reason: string(r.data)}
	default:
		return nil, statusError(r.status)
	}
	rd := reader{rest: r.fields}
	fields, err := rd.fields(nil)
	if err != nil {
		return nil, err
	}
	hh := (&Header{fields: fields}).HTTP()
	return &http.Response{
		Status:        strconv.Itoa(int(r.httpStatus)) + " " + http.StatusText(int(r.httpStatus)),
		StatusCode:    int(r.httpStatus),
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        hh,
		Body:          io.NopCloser(bytes.NewReader(r.data)),
		ContentLength: int64(len(r.data)),
		Request:       req,
	}, nil
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}
