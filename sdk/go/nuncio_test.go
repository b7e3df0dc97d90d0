package nuncio

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"nuncio.dev/sdk/go/internal/abi"
)

// fakeHost plays nuncio: it records decisions, answers posted calls from
// a goroutine of its own (as nuncio's worker would), and refuses calls
// for streams it was told ended.
type fakeHost struct {
	mu        sync.Mutex
	decisions map[uint64][]decided
	ended     map[uint64]bool
	logs      []string
	pending   int
	// wouldBlock makes calls answer WOULD_BLOCK (as on a worker thread).
	wouldBlock atomic.Bool
}

type decided struct {
	hook, kind, status uint32
	edits, body        []byte
	flags              uint32
}

func newFake() *fakeHost {
	return &fakeHost{decisions: map[uint64][]decided{}, ended: map[uint64]bool{}}
}

func (f *fakeHost) decide(stream uint64, hook uint32, kind, status uint32, edits, body []byte, flags uint32) int32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ended[stream] {
		return abi.StreamGone
	}
	for _, d := range f.decisions[stream] {
		if d.hook == hook {
			return abi.NotStopped
		}
	}
	f.decisions[stream] = append(f.decisions[stream], decided{hook, kind, status, append([]byte(nil), edits...), append([]byte(nil), body...), flags})
	return abi.OK
}

func (f *fakeHost) call(stream, call uint64, op, arg uint32, a, b []byte) int32 {
	if f.wouldBlock.Load() {
		return abi.WouldBlock
	}
	f.mu.Lock()
	gone := f.ended[stream]
	f.pending++
	f.mu.Unlock()
	if gone {
		f.mu.Lock()
		f.pending--
		f.mu.Unlock()
		return abi.StreamGone
	}
	go func() {
		f.mu.Lock()
		st := abi.OK
		if f.ended[stream] {
			st = abi.StreamGone
		}
		f.pending--
		f.mu.Unlock()
		var data []byte
		if op == abi.OpReadRequestHeaders && st == abi.OK {
			data = appendEntry(appendEntry(nil, "x-a"), "1")
		}
		complete(call, reply{status: st, data: data})
	}()
	return abi.OK
}

func (f *fakeHost) httpCall(stream, call uint64, cluster string, head, body []byte, timeoutMs, maxBytes uint64) int32 {
	if f.wouldBlock.Load() {
		return abi.WouldBlock
	}
	go complete(call, reply{status: abi.OK, httpStatus: 204, fields: string(appendEntry(appendEntry(nil, "x-cluster"), cluster))})
	return abi.OK
}

func (f *fakeHost) httpCancel(stream, call uint64) int32 { return abi.OK }

func (f *fakeHost) log(level uint32, filter, message string) {
	f.mu.Lock()
	f.logs = append(f.logs, filter+": "+message)
	f.mu.Unlock()
}

func (f *fakeHost) countsPending(uint64) int32 { return abi.OK }

func (f *fakeHost) end(stream uint64) {
	f.mu.Lock()
	f.ended[stream] = true
	f.mu.Unlock()
}

func (f *fakeHost) decisionsOf(stream uint64) []decided {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]decided(nil), f.decisions[stream]...)
}

var fake = newFake()

func TestMain(m *testing.M) {
	host = fake
	m.Run()
}

// testFilter is configured per test.
type testFilter struct {
	PassThrough
	onRequest func(ctx context.Context, h *RequestHead) Decision
}

func (f *testFilter) RequestHeaders(ctx context.Context, h *RequestHead, _ bool) Decision {
	return f.onRequest(ctx, h)
}

var nextStream atomic.Uint64

// run configures a filter, calls its request hook on a new stream and
// returns the stream id.
func run(t *testing.T, onRequest func(ctx context.Context, h *RequestHead) Decision, deadlineNs int64) uint64 {
	t.Helper()
	name := t.Name() + time.Now().String()
	Register(name, func(c *Config) (NewFilter, error) {
		return func() Filter { return &testFilter{onRequest: onRequest} }, nil
	})
	cfg, _, _, path, msg := configure(name, nil)
	if cfg == nil {
		t.Fatalf("configure: %s: %s", path, msg)
	}
	id := nextStream.Add(1)
	head := appendEntry(appendEntry(appendEntry(appendEntry(nil, "GET"), "/p"), "example.org"), "192.0.2.1:5000")
	head = appendEntry(appendEntry(head, "x-old"), "1")
	onHook(cfg.id, id, 1, abi.HookRequestHeaders, string(head), nil, abi.EndOfStream, deadlineNs)
	return id
}

func waitDecision(t *testing.T, id uint64) decided {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if ds := fake.decisionsOf(id); len(ds) > 0 {
			if len(ds) != 1 {
				t.Fatalf("%d decisions for one hook", len(ds))
			}
			return ds[0]
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatal("no decision")
	return decided{}
}

func end(id uint64, cause uint32) {
	fake.end(id)
	s := streams.get(id)
	onEnd(s.cfg.id, id, cause)
}

func TestAnInlineDecisionCarriesTheEdits(t *testing.T) {
	id := run(t, func(_ context.Context, h *RequestHead) Decision {
		if h.Method != "GET" || h.Path != "/p" || h.RemoteAddr != "192.0.2.1:5000" || h.Header.Get("X-Old") != "1" {
			t.Errorf("head: %+v", h)
		}
		h.Header.Set("X-New", "2")
		h.Header.Del("x-old")
		h.Path = "/q"
		return Continue()
	}, -1)
	d := waitDecision(t, id)
	want := appendEdit(appendEdit(appendEdit(nil, editSet, "x-new", "2"), editDel, "x-old"), editPath, "/q")
	if d.kind != abi.Continue || string(d.edits) != string(want) {
		t.Fatalf("decision %+v", d)
	}
	end(id, abi.EndComplete)
}

func TestADeferredHookDecidesOnceFromItsGoroutine(t *testing.T) {
	release := make(chan struct{})
	id := run(t, func(ctx context.Context, h *RequestHead) Decision {
		return Defer(func(ctx context.Context) Decision {
			<-release
			h.Header.Set("x-later", "1")
			return Stop()
		})
	}, -1)
	if ds := fake.decisionsOf(id); len(ds) != 0 {
		t.Fatalf("decided before fn returned: %+v", ds)
	}
	close(release)
	d := waitDecision(t, id)
	if d.kind != abi.Stop || !strings.Contains(string(d.edits), "x-later") {
		t.Fatalf("decision %+v", d)
	}
	end(id, abi.EndComplete)
}

func TestAPanicInAHookIsA500MarkedPanicked(t *testing.T) {
	id := run(t, func(context.Context, *RequestHead) Decision { panic("boom") }, -1)
	d := waitDecision(t, id)
	if d.kind != abi.Reply || d.status != 500 || d.flags&abi.DecisionPanicked == 0 {
		t.Fatalf("decision %+v", d)
	}
	end(id, abi.EndLocalReply)
}

func TestTheEndCancelsCtxWithItsCauseAndHandlesSayGone(t *testing.T) {
	var ctx context.Context
	id := run(t, func(c context.Context, _ *RequestHead) Decision {
		ctx = c
		return Continue()
	}, -1)
	h := HandleOf(ctx)
	if h == nil || h.Gone() {
		t.Fatal("no live handle")
	}
	end(id, abi.EndClientGone)
	<-ctx.Done()
	var e *EndError
	if !errors.As(context.Cause(ctx), &e) || !errors.Is(e, ErrClientGone) || e.At.IsZero() {
		t.Fatalf("cause %v", context.Cause(ctx))
	}
	if err := h.Resume(); !errors.Is(err, ErrStreamGone) {
		t.Fatalf("Resume after the end: %v", err)
	}
	if _, err := h.RequestHeaders(); !errors.Is(err, ErrStreamGone) {
		t.Fatalf("RequestHeaders after the end: %v", err)
	}
}

// Handle calls from many goroutines race the stream's end: each gets an
// answer (nil or ErrStreamGone), none hangs, and -race sees no race.
func TestHandleCallsRaceTheEnd(t *testing.T) {
	for round := 0; round < 20; round++ {
		var ctx context.Context
		id := run(t, func(c context.Context, _ *RequestHead) Decision {
			ctx = c
			return Stop()
		}, -1)
		h := HandleOf(ctx)
		var wg sync.WaitGroup
		for g := 0; g < 8; g++ {
			wg.Add(1)
			Go(ctx, func(context.Context) {
				defer wg.Done()
				for i := 0; i < 20; i++ {
					if err := h.SetRequestHeader("x", "y"); err != nil && !errors.Is(err, ErrStreamGone) {
						t.Errorf("unexpected %v", err)
					}
				}
			})
		}
		end(id, abi.EndAborted)
		wg.Wait()
	}
	waitIdle(t)
}

func waitIdle(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if st := liveStats(); st.Calls == 0 && st.Goroutines == 0 {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("still live: %+v", liveStats())
}

func TestCallsThatWouldBlockReturnErrInHook(t *testing.T) {
	fake.wouldBlock.Store(true)
	defer fake.wouldBlock.Store(false)
	var errs []error
	id := run(t, func(ctx context.Context, _ *RequestHead) Decision {
		errs = append(errs, HandleOf(ctx).Resume())
		_, err := Client().Get("http://authz/x")
		errs = append(errs, err)
		req, _ := newRequest(ctx)
		_, err = Client().Do(req)
		errs = append(errs, err)
		return Continue()
	}, -1)
	if !errors.Is(errs[0], ErrInHook) || errs[1] == nil || !errors.Is(errs[2], ErrInHook) {
		t.Fatalf("errors %v", errs)
	}
	end(id, abi.EndComplete)
}

func TestTransportCallsTheURLsHostAsACluster(t *testing.T) {
	var status int
	var cluster string
	id := run(t, func(ctx context.Context, _ *RequestHead) Decision {
		return Defer(func(ctx context.Context) Decision {
			req, _ := newRequest(ctx)
			resp, err := Client().Do(req)
			if err != nil {
				t.Errorf("call: %v", err)
				return Continue()
			}
			status, cluster = resp.StatusCode, resp.Header.Get("X-Cluster")
			return Continue()
		})
	}, int64(time.Second))
	waitDecision(t, id)
	if status != 204 || cluster != "authz" {
		t.Fatalf("status %d cluster %q", status, cluster)
	}
	end(id, abi.EndComplete)
}

func TestTheRouteDeadlineIsCtxsDeadline(t *testing.T) {
	var ctx context.Context
	id := run(t, func(c context.Context, _ *RequestHead) Decision {
		ctx = c
		return Continue()
	}, int64(50*time.Millisecond))
	dl, ok := ctx.Deadline()
	if !ok || time.Until(dl) > 50*time.Millisecond {
		t.Fatalf("deadline %v %v", dl, ok)
	}
	<-ctx.Done()
	if !errors.Is(ctx.Err(), context.DeadlineExceeded) || !errors.Is(context.Cause(ctx), ErrRouteTimeout) {
		t.Fatalf("err %v cause %v", ctx.Err(), context.Cause(ctx))
	}
	if HandleOf(ctx).Gone() {
		t.Fatal("the deadline is not the stream's end")
	}
	end(id, abi.EndAborted)
}

func TestRangeWhileDeleting(t *testing.T) {
	var h Header
	for _, n := range []string{"a", "x-drop", "b", "x-drop", "c"} {
		h.Add(n, "v")
	}
	var seen []string
	h.Range(func(name, _ string) bool {
		seen = append(seen, name)
		if name == "x-drop" {
			h.Del(name)
			h.Set("added", "1")
		}
		return true
	})
	if strings.Join(seen, ",") != "a,x-drop,b,x-drop,c" {
		t.Fatalf("Range saw %v", seen)
	}
	if h.Has("x-drop") || h.Get("added") != "1" || h.Len() != 4 {
		t.Fatalf("after: %+v", h.fields)
	}
}

func TestCountersFromManyGoroutines(t *testing.T) {
	cfg := &config{counts: make([]atomic.Uint64, 2)}
	a, b := &Counter{cfg: cfg, index: 0}, &Counter{cfg: cfg, index: 1}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 1000; i++ {
				a.Inc()
				b.Add(2)
			}
		}()
	}
	wg.Wait()
	got := cfg.takeCounts()
	if len(got) != 4 || got[1] != 8000 || got[3] != 16000 {
		t.Fatalf("counts %v", got)
	}
	if cfg.takeCounts() != nil {
		t.Fatal("taken twice")
	}
}

func TestGoRecoversAndAnswers500(t *testing.T) {
	var ctx context.Context
	id := run(t, func(c context.Context, _ *RequestHead) Decision {
		ctx = c
		return Stop()
	}, -1)
	s := streams.get(id)
	Go(ctx, func(context.Context) { panic("in a goroutine") })
	deadline := time.Now().Add(5 * time.Second)
	for s.cfg.panics.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if s.cfg.panics.Load() != 1 {
		t.Fatal("the panic was not counted")
	}
	end(id, abi.EndLocalReply)
	waitIdle(t)
}

type strict struct {
	Name  string `json:"name"`
	Rules []struct {
		Prefix  string `json:"prefix"`
		DelayMs uint32 `json:"delay_ms"`
	} `json:"rules"`
	Limits map[string]int `json:"limits"`
}

func TestDecodeNamesTheField(t *testing.T) {
	for _, tc := range []struct{ json, path, message string }{
		{`{"name": "a", "rules": [{"prefix": "/", "delay_ms": 1}, {"prefix": "/b", "dleay_ms": 1}]}`, "rules[1].dleay_ms", "unknown field `dleay_ms`, expected one of `prefix`, `delay_ms`"},
		{`{"rules": [{"delay_ms": "soon"}]}`, "rules[0].delay_ms", `invalid type: string "soon", expected a non-negative integer`},
		{`{"rules": [{"delay_ms": -1}]}`, "rules[0].delay_ms", "invalid value: -1"},
		{`{"limits": {"burst": true}}`, "limits.burst", "invalid type: boolean `true`, expected an integer"},
		{`{"name": 7}`, "name", "invalid type: number 7, expected a string"},
		{`[1]`, "", "invalid type: list, expected a map"},
	} {
		c := &Config{raw: []byte(tc.json)}
		var v strict
		err := c.Decode(&v)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Path != tc.path || !strings.Contains(fe.Message, tc.message) {
			t.Errorf("%s: got %v", tc.json, err)
		}
	}
	c := &Config{raw: []byte(`{"name": "ok", "rules": [{"prefix": "/", "delay_ms": 5}]}`)}
	var v strict
	if err := c.Decode(&v); err != nil || v.Name != "ok" || v.Rules[0].DelayMs != 5 {
		t.Fatalf("%v %+v", err, v)
	}
}

func TestSlogLandsInTheHostLog(t *testing.T) {
	l := defaultLogger().With("k", "v").WithGroup("g")
	l.Info("hello world", "n", 1, "s", "two words")
	fake.mu.Lock()
	last := fake.logs[len(fake.logs)-1]
	fake.mu.Unlock()
	if last != `go: hello world k=v g.n=1 g.s="two words"` {
		t.Fatalf("log %q", last)
	}
}

func newRequest(ctx context.Context) (*http.Request, error) {
	return http.NewRequestWithContext(ctx, "GET", "http://authz/check", nil)
}
