package nuncio

import (
	"context"
	"fmt"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"nuncio.dev/sdk/go/internal/abi"
)

// stream is the SDK's record of one stream of one filter config: made at
// its first hook, forgotten when nuncio says it ended.
type stream struct {
	id     uint64
	cfg    *config
	filter Filter
	// ctx is what hooks get: base, with the route's deadline, and the
	// stream findable from it (HandleOf).
	ctx *streamCtx
	// base is cancelled when the stream ends, with an *EndError; its Done
	// is the "stream ended" signal (ctx's may close earlier, at the
	// deadline).
	base   context.Context
	cancel context.CancelCauseFunc
	ended  atomic.Bool
	// lastHook is the id of the stream's last hook call (for tests of the
	// ABI itself: testing.go).
	lastHook atomic.Uint32
}

// streamCtx is a stream's context: base, plus the route's deadline, plus
// the stream. The deadline costs nothing until someone waits on it: Done
// (or Err once the deadline passed) arms it, as a context.WithDeadline
// of base — no runtime timer per stream otherwise, and no thread woken
// for one.
type streamCtx struct {
	base     context.Context
	s        *stream
	deadline time.Time
	// timed is base with the deadline, once armed.
	timed atomic.Pointer[timedCtx]
	arm   sync.Mutex
}

type timedCtx struct {
	ctx  context.Context
	stop context.CancelFunc
}

type streamKey struct{}

// current is the context the answers come from: the deadline's once
// armed, else base.
func (c *streamCtx) current() context.Context {
	if t := c.timed.Load(); t != nil {
		return t.ctx
	}
	return c.base
}

// armed arms the deadline (once) and returns its context.
func (c *streamCtx) armed() context.Context {
	if t := c.timed.Load(); t != nil {
		return t.ctx
	}
	c.arm.Lock()
	defer c.arm.Unlock()
	if t := c.timed.Load(); t != nil {
		return t.ctx
	}
	ctx, stop := context.WithDeadlineCause(c.base, c.deadline, ErrRouteTimeout)
	c.timed.Store(&timedCtx{ctx, stop})
	return ctx
}

func (c *streamCtx) Deadline() (time.Time, bool) { return c.deadline, !c.deadline.IsZero() }

func (c *streamCtx) Done() <-chan struct{} {
	if c.deadline.IsZero() {
		return c.base.Done()
	}
	return c.armed().Done()
}

func (c *streamCtx) Err() error {
	if c.timed.Load() == nil && !c.deadline.IsZero() && !time.Now().Before(c.deadline) {
		return c.armed().Err()
	}
	return c.current().Err()
}

func (c *streamCtx) Value(key any) any {
	if key == (streamKey{}) {
		return c.s
	}
	return c.current().Value(key)
}

// disarm stops the deadline's timer, if armed (the stream ended).
func (c *streamCtx) disarm() {
	if t := c.timed.Load(); t != nil {
		t.stop()
	}
}

func streamOf(ctx context.Context) *stream {
	if ctx == nil {
		return nil
	}
	s, _ := ctx.Value(streamKey{}).(*stream)
	return s
}

// streams are the live streams, sharded to keep workers apart.
var streams shardedStreams

const shards = 64

type shardedStreams struct {
	shard [shards]struct {
		sync.Mutex
		m map[uint64]*stream
	}
	n atomic.Int64
}

func (t *shardedStreams) get(id uint64) *stream {
	sh := &t.shard[id%shards]
	sh.Lock()
	s := sh.m[id]
	sh.Unlock()
	return s
}

func (t *shardedStreams) put(s *stream) {
	sh := &t.shard[s.id%shards]
	sh.Lock()
	if sh.m == nil {
		sh.m = make(map[uint64]*stream)
	}
	sh.m[s.id] = s
	sh.Unlock()
	t.n.Add(1)
}

func (t *shardedStreams) remove(id uint64) *stream {
	sh := &t.shard[id%shards]
	sh.Lock()
	s := sh.m[id]
	if s != nil {
		delete(sh.m, id)
	}
	sh.Unlock()
	if s != nil {
		t.n.Add(-1)
	}
	return s
}

func newStream(cfg *config, id uint64, deadlineNs int64) *stream {
	s := &stream{id: id, cfg: cfg}
	s.base, s.cancel = context.WithCancelCause(context.Background())
	s.ctx = &streamCtx{base: s.base, s: s}
	if deadlineNs >= 0 {
		s.ctx.deadline = time.Now().Add(time.Duration(deadlineNs))
	}
	return s
}

// target is what a hook was handed, kept for its decision's edits.
type target struct {
	req      *RequestHead
	resp     *ResponseHead
	body     *Body
	trailers *Header
}

// edits are the changes to send with a decision; flags DecisionBody when
// the body was replaced.
func (t *target) edits() (edits, body []byte, flags uint32) {
	switch {
	case t.req != nil:
		edits = t.req.Header.edits
		if t.req.Method != t.req.orig[0] {
			edits = appendEdit(edits, editMethod, t.req.Method)
		}
		if t.req.Path != t.req.orig[1] {
			edits = appendEdit(edits, editPath, t.req.Path)
		}
		if t.req.Authority != t.req.orig[2] {
			edits = appendEdit(edits, editAuthority, t.req.Authority)
		}
	case t.resp != nil:
		edits = t.resp.Header.edits
		if t.resp.Status != t.resp.origStatus {
			edits = appendEdit(edits, editStatus, strconv.Itoa(t.resp.Status))
		}
	case t.trailers != nil:
		edits = t.trailers.edits
	case t.body != nil && t.body.set:
		return nil, t.body.data, abi.DecisionBody
	}
	return edits, nil, 0
}

// check reports a change nuncio would refuse, for a clear log line.
func (t *target) check() error {
	var h *Header
	switch {
	case t.req != nil:
		h = &t.req.Header
		if t.req.Path != t.req.orig[1] && (t.req.Path == "" || t.req.Path[0] != '/') {
			return fmt.Errorf("the path %q does not start with /", t.req.Path)
		}
		if t.req.Method != t.req.orig[0] && !validName(t.req.Method) {
			return fmt.Errorf("invalid method %q", t.req.Method)
		}
	case t.resp != nil:
		h = &t.resp.Header
		if t.resp.Status < 100 || t.resp.Status > 999 {
			return fmt.Errorf("invalid status %d", t.resp.Status)
		}
	case t.trailers != nil:
		h = t.trailers
	}
	if h != nil {
		if name, ok := h.check(); !ok {
			return fmt.Errorf("invalid field %q (or its value)", name)
		}
	}
	return nil
}

// onHook runs one hook call from nuncio (on a worker, inline).
func onHook(cfgID, streamID uint64, hookID, hook uint32, head string, body []byte, flags uint32, deadlineNs int64) uint32 {
	s := streams.get(streamID)
	if s == nil {
		v, ok := configs.Load(cfgID)
		if !ok {
			// nuncio never calls a released config; decide so nothing waits.
			host.decide(streamID, hookID, abi.Continue, 0, nil, nil, 0)
			return 0
		}
		s = newStream(v.(*config), streamID, deadlineNs)
		streams.put(s)
		sawWorker(streamID)
	}
	s.lastHook.Store(hookID)
	eos := flags&abi.EndOfStream != 0
	var t target
	d := s.callHook(hook, head, body, eos, &t)
	if d.deferred != nil {
		s.deferTo(hookID, d.deferred, t)
	} else {
		s.decide(hookID, d, &t)
	}
	return countsFlag(s.cfg)
}

// newFilter makes the stream's filter on its first hook.
func (s *stream) newFilter() (f Filter, err error) {
	defer func() {
		if p := recover(); p != nil {
			f, err = nil, fmt.Errorf("panic: %v", p)
		}
	}()
	return s.cfg.newFilter(), nil
}

// callHook calls the filter's hook with what nuncio handed it; a panic is
// a 500 decision marked panicked.
func (s *stream) callHook(hook uint32, head string, body []byte, eos bool, t *target) (d Decision) {
	defer func() {
		if p := recover(); p != nil {
			d = s.panicked(p, debug.Stack())
		}
	}()
	if s.filter == nil {
		f, err := s.newFilter()
		if err != nil || f == nil {
			s.filter = continuing{}
			s.cfg.logger.Error("the filter's constructor failed; the stream gets a 500", "error", err)
			return Decision{kind: abi.Reply, status: 500, body: []byte("nuncio: filter go." + s.cfg.filter + " failed\n"), panicked: err != nil}
		}
		s.filter = f
	}
	r := reader{rest: head}
	switch hook {
	case abi.HookRequestHeaders:
		h := new(RequestHead)
		var err error
		if h.Method, err = r.entry(); err == nil {
			if h.Path, err = r.entry(); err == nil {
				if h.Authority, err = r.entry(); err == nil {
					if h.RemoteAddr, err = r.entry(); err == nil {
						h.Header.fields, err = r.fields(h.room[:])
					}
				}
			}
		}
		if err != nil {
			return malformed()
		}
		h.orig = [3]string{h.Method, h.Path, h.Authority}
		t.req = h
		return s.filter.RequestHeaders(s.ctx, h, eos)
	case abi.HookResponseHeaders:
		h := new(ResponseHead)
		code, err := r.entry()
		if err == nil {
			h.Status, err = strconv.Atoi(code)
		}
		if err == nil {
			h.Header.fields, err = r.fields(h.room[:])
		}
		if err != nil {
			return malformed()
		}
		h.origStatus = h.Status
		t.resp = h
		return s.filter.ResponseHeaders(s.ctx, h, eos)
	case abi.HookRequestBody, abi.HookResponseBody:
		b := &Body{data: body}
		t.body = b
		if hook == abi.HookRequestBody {
			return s.filter.RequestBody(s.ctx, b, eos)
		}
		return s.filter.ResponseBody(s.ctx, b, eos)
	case abi.HookRequestTrailers, abi.HookResponseTrailers:
		fields, err := r.fields(nil)
		if err != nil {
			return malformed()
		}
		h := &Header{fields: fields}
		t.trailers = h
		if hook == abi.HookRequestTrailers {
			return s.filter.RequestTrailers(s.ctx, h)
		}
		return s.filter.ResponseTrailers(s.ctx, h)
	}
	return Continue()
}

func malformed() Decision {
	return Decision{kind: abi.Reply, status: 500, body: []byte("nuncio: malformed hook call\n")}
}

// panicked logs a recovered panic and makes the 500 decision.
func (s *stream) panicked(p any, stack []byte) Decision {
	s.cfg.logger.Error("filter panicked; the stream gets a 500", "panic", fmt.Sprint(p), "stack", string(stack))
	return Decision{kind: abi.Reply, status: 500, body: []byte("nuncio: filter go." + s.cfg.filter + " panicked\n"), panicked: true}
}

// decide sends the decision of hook hookID (once: the caller holds the
// only Decision for it).
func (s *stream) decide(hookID uint32, d Decision, t *target) {
	kind := d.kind
	if kind == 0 {
		kind = abi.Continue
	}
	var flags uint32
	if d.isDefault {
		flags |= abi.DecisionDefault
	}
	if d.panicked {
		flags |= abi.DecisionPanicked
	}
	var edits, body []byte
	var status uint32
	if kind == abi.Reply {
		if d.status < 200 || d.status > 599 {
			s.invalid(hookID, fmt.Errorf("a reply's status is 200 to 599, not %d", d.status))
			return
		}
		if name, ok := d.header.checkAll(); !ok {
			s.invalid(hookID, fmt.Errorf("the reply's field %q (or its value) is invalid", name))
			return
		}
		status, edits, body = uint32(d.status), d.header.asEdits(), d.body
	} else {
		if err := t.check(); err != nil {
			s.invalid(hookID, err)
			return
		}
		var more uint32
		edits, body, more = t.edits()
		flags |= more
	}
	if st := host.decide(s.id, hookID, kind, status, edits, body, flags); st == abi.Invalid {
		s.invalid(hookID, fmt.Errorf("nuncio refused the decision"))
	}
}

// invalid answers 500 for a decision nuncio would refuse.
func (s *stream) invalid(hookID uint32, err error) {
	s.cfg.logger.Error("invalid decision; the stream gets a 500", "error", err)
	host.decide(s.id, hookID, abi.Reply, 500, nil, []byte("nuncio: filter go."+s.cfg.filter+" made an invalid decision\n"), 0)
}

// deferTo runs fn in a goroutine; its result is hook hookID's decision.
func (s *stream) deferTo(hookID uint32, fn func(context.Context) Decision, t target) {
	goroutines.Add(1)
	go func() {
		defer goroutines.Add(-1)
		d := Decision{deferred: fn}
		for d.deferred != nil {
			d = s.runDeferred(d.deferred)
		}
		s.decide(hookID, d, &t)
	}()
}

func (s *stream) runDeferred(fn func(context.Context) Decision) (d Decision) {
	defer func() {
		if p := recover(); p != nil {
			d = s.panicked(p, debug.Stack())
		}
	}()
	return fn(s.ctx)
}

// onEnd: nuncio says the stream ended. Its ctx is cancelled with the
// cause, then OnComplete runs (inline, on the worker).
func onEnd(cfgID, streamID uint64, cause uint32) uint32 {
	s := streams.remove(streamID)
	if s == nil {
		v, _ := configs.Load(cfgID)
		cfg, _ := v.(*config)
		return countsFlag(cfg)
	}
	s.ended.Store(true)
	s.cancel(&EndError{Reason: endReason(cause), At: time.Now()})
	s.ctx.disarm()
	if s.filter != nil {
		func() {
			defer func() {
				if p := recover(); p != nil {
					s.cfg.countPanic()
					s.cfg.logger.Error("OnComplete panicked", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
				}
			}()
			s.filter.OnComplete(s.ctx)
		}()
	}
	return countsFlag(s.cfg)
}

// continuing is the filter of a stream whose constructor failed.
type continuing struct{}

func (continuing) RequestHeaders(context.Context, *RequestHead, bool) Decision   { return Continue() }
func (continuing) RequestBody(context.Context, *Body, bool) Decision             { return Continue() }
func (continuing) RequestTrailers(context.Context, *Header) Decision             { return Continue() }
func (continuing) ResponseHeaders(context.Context, *ResponseHead, bool) Decision { return Continue() }
func (continuing) ResponseBody(context.Context, *Body, bool) Decision            { return Continue() }
func (continuing) ResponseTrailers(context.Context, *Header) Decision            { return Continue() }
func (continuing) OnComplete(context.Context)                                    {}

// goroutines counts goroutines started by Defer and Go that still run.
var goroutines atomic.Int64

// Live is what the library holds right now (nuncio reads it through the
// ABI; tests check it returns to zero).
type Live struct {
	Streams    uint64
	Calls      uint64
	Goroutines uint64
}

func liveStats() Live {
	return Live{Streams: uint64(streams.n.Load()), Calls: uint64(calls.n.Load()), Goroutines: uint64(goroutines.Load())}
}
