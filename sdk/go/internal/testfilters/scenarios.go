package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	nuncio "nuncio.dev/sdk/go"
)

// outcomes counts what Handle calls answered.
type outcomes struct {
	ok, refused, gone, other *nuncio.Counter
}

func declareOutcomes(c *nuncio.Config, prefix string) outcomes {
	return outcomes{
		ok:      c.Counter(prefix+"ok_total", "Handle calls that succeeded."),
		refused: c.Counter(prefix+"refused_total", "Handle calls refused with ErrHeadersSent or ErrNotStopped."),
		gone:    c.Counter(prefix+"gone_total", "Handle calls that found the stream gone."),
		other:   c.Counter(prefix+"other_total", "Handle calls that failed otherwise (a bug)."),
	}
}

func (o outcomes) count(err error) {
	switch {
	case err == nil:
		o.ok.Inc()
	case errors.Is(err, nuncio.ErrHeadersSent), errors.Is(err, nuncio.ErrNotStopped):
		o.refused.Inc()
	case errors.Is(err, nuncio.ErrStreamGone):
		o.gone.Inc()
	default:
		o.other.Inc()
		slog.Error("unexpected handle error", "error", err)
	}
}

// race: envoy#25289. A goroutine writes request and response fields
// through the Handle while the worker forwards the stream.
type race struct {
	nuncio.PassThrough
	o outcomes
}

func (f *race) RequestHeaders(ctx context.Context, _ *nuncio.RequestHead, _ bool) nuncio.Decision {
	h := nuncio.HandleOf(ctx)
	nuncio.Go(ctx, func(ctx context.Context) {
		for i := 0; i < 20; i++ {
			err := h.SetRequestHeader("x-race", strconv.Itoa(i))
			f.o.count(err)
			if errors.Is(err, nuncio.ErrStreamGone) {
				return
			}
			f.o.count(h.SetResponseHeader("x-race", strconv.Itoa(i)))
		}
	})
	return nuncio.Continue()
}

// hold: the stream ends during a hook (envoy#26537, #37225, #44320). The
// hook defers; its goroutine waits for ctx and then touches the stream.
// It reports how long after nuncio saw the end ctx was done, per
// x-key, to a later /report request.
type hold struct {
	nuncio.PassThrough
	o        outcomes
	canceled *nuncio.Counter
	within   *nuncio.Counter
}

var (
	reportsMu sync.Mutex
	reports   = map[string]time.Time{}
	observed  = map[string]time.Duration{}
)

func (f *hold) RequestHeaders(ctx context.Context, h *nuncio.RequestHead, _ bool) nuncio.Decision {
	if h.Path == "/report" {
		return report(h)
	}
	key := h.Header.Get("x-key")
	return nuncio.Defer(func(ctx context.Context) nuncio.Decision {
		<-ctx.Done()
		seen := time.Now()
		var end *nuncio.EndError
		if errors.As(context.Cause(ctx), &end) && errors.Is(end, nuncio.ErrClientGone) {
			f.canceled.Inc()
			if seen.Sub(end.At) <= 10*time.Millisecond {
				f.within.Inc()
			}
			reportsMu.Lock()
			reports[key], observed[key] = seen, seen.Sub(end.At)
			reportsMu.Unlock()
		}
		f.o.count(nuncio.HandleOf(ctx).SetRequestHeader("x-late", "1"))
		// A decision for a stream that is gone: dropped, no crash.
		return nuncio.Continue()
	})
}

// report answers how long after the client's close (x-closed-at, Unix
// nanoseconds) and after nuncio saw the end the hold filter's ctx was
// done, in microseconds.
func report(h *nuncio.RequestHead) nuncio.Decision {
	key := h.Header.Get("x-key")
	closedAt, _ := strconv.ParseInt(h.Header.Get("x-closed-at"), 10, 64)
	reportsMu.Lock()
	seen, ok := reports[key]
	inside := observed[key]
	reportsMu.Unlock()
	if !ok {
		return nuncio.ReplyText(404, "no report for "+key)
	}
	var hd nuncio.Header
	hd.Set("x-after-close-us", strconv.FormatInt(seen.Sub(time.Unix(0, closedAt)).Microseconds(), 10))
	hd.Set("x-after-end-us", strconv.FormatInt(inside.Microseconds(), 10))
	return nuncio.Reply(200, hd, nil)
}

// afterEnd: envoy#26537 and kin. A goroutine waits until the stream ended,
// then calls every Handle method and Transport: each must say gone.
type afterEnd struct {
	nuncio.PassThrough
	o outcomes
}

func (f *afterEnd) RequestHeaders(ctx context.Context, _ *nuncio.RequestHead, _ bool) nuncio.Decision {
	h := nuncio.HandleOf(ctx)
	nuncio.Go(ctx, func(ctx context.Context) {
		<-h.Done()
		_, err := h.RequestHeaders()
		f.o.count(err)
		f.o.count(h.SetRequestHeader("x-a", "1"))
		f.o.count(h.AddRequestHeader("x-a", "1"))
		f.o.count(h.DelRequestHeader("x-a"))
		_, err = h.ResponseHeaders()
		f.o.count(err)
		f.o.count(h.SetResponseHeader("x-a", "1"))
		f.o.count(h.AddResponseHeader("x-a", "1"))
		f.o.count(h.DelResponseHeader("x-a"))
		_, err = h.Body()
		f.o.count(err)
		f.o.count(h.ReplaceBody([]byte("x")))
		f.o.count(h.AppendBody([]byte("x")))
		f.o.count(h.Resume())
		f.o.count(h.Reply(503, nuncio.Header{}, nil))
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://app/", nil)
		_, err = nuncio.Client().Do(req)
		f.o.count(err)
	})
	return nuncio.Continue()
}

// rangeDel: envoy#27914, #29617. Range over the fields while deleting and
// setting some.
type rangeDel struct{ nuncio.PassThrough }

func (rangeDel) RequestHeaders(_ context.Context, h *nuncio.RequestHead, _ bool) nuncio.Decision {
	seen := 0
	h.Header.Range(func(name, value string) bool {
		seen++
		if strings.HasPrefix(name, "x-drop-") {
			h.Header.Del(name)
		}
		if name == "x-keep" {
			h.Header.Set("x-kept", value)
			h.Header.Del("x-keep")
		}
		return true
	})
	h.Header.Set("x-ranged", strconv.Itoa(seen))
	return nuncio.Continue()
}

// resume: Stop, then a goroutine resumes twice (the second finds nothing
// stopped) and once more after the end.
type resume struct {
	nuncio.PassThrough
	o outcomes
}

func (f *resume) RequestHeaders(ctx context.Context, _ *nuncio.RequestHead, _ bool) nuncio.Decision {
	h := nuncio.HandleOf(ctx)
	nuncio.Go(ctx, func(ctx context.Context) {
		f.o.count(h.SetRequestHeader("x-resumed", "yes"))
		f.o.count(h.Resume())
		f.o.count(h.Resume())
		<-h.Done()
		f.o.count(h.Resume())
	})
	return nuncio.Stop()
}

// bufferless: envoy#30688. Buffer from RequestHeaders (a bodiless request
// goes on), and from RequestBody until the end (the body comes whole).
type bufferless struct {
	nuncio.PassThrough
	bodyCalls *nuncio.Counter
}

func (f *bufferless) RequestHeaders(_ context.Context, h *nuncio.RequestHead, _ bool) nuncio.Decision {
	if h.Header.Get("x-buffer-from") == "headers" {
		return nuncio.Buffer()
	}
	return nuncio.Continue()
}

func (f *bufferless) RequestBody(_ context.Context, b *nuncio.Body, eos bool) nuncio.Decision {
	f.bodyCalls.Inc()
	if !eos {
		return nuncio.Buffer()
	}
	b.Set([]byte(strings.ToUpper(string(b.Bytes()))))
	return nuncio.Continue()
}

// panicky panics where x-panic says: hook, deferred, goroutine.
type panicky struct{ nuncio.PassThrough }

func (panicky) RequestHeaders(ctx context.Context, h *nuncio.RequestHead, _ bool) nuncio.Decision {
	switch h.Header.Get("x-panic") {
	case "hook":
		panic("a panic in a hook")
	case "deferred":
		return nuncio.Defer(func(context.Context) nuncio.Decision { panic("a panic in a deferred hook") })
	case "goroutine":
		nuncio.Go(ctx, func(context.Context) {
			var m map[string]int
			m["nil map"] = 1
		})
		return nuncio.Stop()
	}
	return nuncio.Continue()
}

// caller makes an HTTP call to a cluster through Transport: deferred (it
// works), or from the hook itself (ErrInHook, answered 500).
type caller struct {
	nuncio.PassThrough
	cluster string
}

func (f *caller) RequestHeaders(ctx context.Context, h *nuncio.RequestHead, _ bool) nuncio.Decision {
	call := func(ctx context.Context) nuncio.Decision {
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+f.cluster+"/check"+h.Path, nil)
		req.Header.Set("x-from", "go")
		resp, err := nuncio.Client().Do(req)
		if err != nil {
			return nuncio.ReplyText(502, "call failed: "+err.Error())
		}
		body, _ := io.ReadAll(resp.Body)
		h.Header.Set("x-check-status", strconv.Itoa(resp.StatusCode))
		h.Header.Set("x-check-path", resp.Header.Get("x-path"))
		h.Header.Set("x-check-body", strings.TrimSpace(string(body)))
		return nuncio.Continue()
	}
	if h.Header.Get("x-call-from") == "hook" {
		return call(ctx)
	}
	return nuncio.Defer(call)
}

// deadline tells the upstream how long the stream's ctx has.
type deadline struct{ nuncio.PassThrough }

func (deadline) RequestHeaders(ctx context.Context, h *nuncio.RequestHead, _ bool) nuncio.Decision {
	if d, ok := ctx.Deadline(); ok {
		h.Header.Set("x-deadline-left-ms", strconv.FormatInt(time.Until(d).Milliseconds(), 10))
	} else {
		h.Header.Set("x-deadline-left-ms", "none")
	}
	return nuncio.Continue()
}

// reply answers every request with a status.
type reply struct {
	nuncio.PassThrough
	status int
}

func (f *reply) RequestHeaders(context.Context, *nuncio.RequestHead, bool) nuncio.Decision {
	return nuncio.ReplyText(f.status, fmt.Sprintf("replied %d by go\n", f.status))
}

// observe counts the hooks it sees and its completions.
type observe struct {
	hooks, completions *nuncio.Counter
}

func (f *observe) RequestHeaders(context.Context, *nuncio.RequestHead, bool) nuncio.Decision {
	f.hooks.Inc()
	return nuncio.Continue()
}
func (f *observe) RequestBody(context.Context, *nuncio.Body, bool) nuncio.Decision {
	f.hooks.Inc()
	return nuncio.Continue()
}
func (f *observe) RequestTrailers(context.Context, *nuncio.Header) nuncio.Decision {
	f.hooks.Inc()
	return nuncio.Continue()
}
func (f *observe) ResponseHeaders(context.Context, *nuncio.ResponseHead, bool) nuncio.Decision {
	f.hooks.Inc()
	return nuncio.Continue()
}
func (f *observe) ResponseBody(context.Context, *nuncio.Body, bool) nuncio.Decision {
	f.hooks.Inc()
	return nuncio.Continue()
}
func (f *observe) ResponseTrailers(context.Context, *nuncio.Header) nuncio.Decision {
	f.hooks.Inc()
	return nuncio.Continue()
}
func (f *observe) OnComplete(context.Context) { f.completions.Inc() }

// stress: goroutines touch their streams after random delays; some hooks
// defer, some stop and are resumed late.
type stress struct {
	nuncio.PassThrough
	o outcomes
}

func (f *stress) RequestHeaders(ctx context.Context, h *nuncio.RequestHead, _ bool) nuncio.Decision {
	hd := nuncio.HandleOf(ctx)
	n := rand.IntN(4)
	delay := time.Duration(rand.IntN(3000)) * time.Microsecond
	nuncio.Go(ctx, func(ctx context.Context) {
		time.Sleep(delay)
		f.o.count(hd.SetResponseHeader("x-stress", "late"))
		_, err := hd.RequestHeaders()
		f.o.count(err)
		if n == 2 {
			f.o.count(hd.Resume())
		}
	})
	switch n {
	case 0:
		return nuncio.Continue()
	case 1:
		return nuncio.Defer(func(ctx context.Context) nuncio.Decision {
			select {
			case <-time.After(delay):
			case <-ctx.Done():
			}
			h.Header.Set("x-deferred", "1")
			return nuncio.Continue()
		})
	case 2:
		return nuncio.Stop()
	}
	h.Header.Set("x-inline", "1")
	return nuncio.Continue()
}

// logs counts and logs every request through slog.
type logs struct {
	nuncio.PassThrough
	seen *nuncio.Counter
	log  *slog.Logger
}

func (f *logs) RequestHeaders(_ context.Context, h *nuncio.RequestHead, _ bool) nuncio.Decision {
	f.seen.Inc()
	f.log.Info("request seen", "path", h.Path)
	slog.Warn("through the default logger", "path", h.Path)
	return nuncio.Continue()
}

func register() {
	nuncio.Register("race", func(c *nuncio.Config) (nuncio.NewFilter, error) {
		o := declareOutcomes(c, "")
		return func() nuncio.Filter { return &race{o: o} }, nil
	})
	nuncio.Register("hold", func(c *nuncio.Config) (nuncio.NewFilter, error) {
		f := hold{o: declareOutcomes(c, ""),
			canceled: c.Counter("client_gone_total", "Deferred hooks whose ctx ended with ErrClientGone."),
			within:   c.Counter("cancelled_within_10ms_total", "Of those, ctx done within 10 ms of nuncio seeing the end."),
		}
		return func() nuncio.Filter { g := f; return &g }, nil
	})
	nuncio.Register("after_end", func(c *nuncio.Config) (nuncio.NewFilter, error) {
		o := declareOutcomes(c, "")
		return func() nuncio.Filter { return &afterEnd{o: o} }, nil
	})
	nuncio.Register("range_del", func(c *nuncio.Config) (nuncio.NewFilter, error) {
		return func() nuncio.Filter { return rangeDel{} }, nil
	})
	nuncio.Register("resume", func(c *nuncio.Config) (nuncio.NewFilter, error) {
		o := declareOutcomes(c, "")
		return func() nuncio.Filter { return &resume{o: o} }, nil
	})
	nuncio.Register("bufferless", func(c *nuncio.Config) (nuncio.NewFilter, error) {
		calls := c.Counter("body_calls_total", "RequestBody calls.")
		return func() nuncio.Filter { return &bufferless{bodyCalls: calls} }, nil
	})
	nuncio.Register("panicky", func(c *nuncio.Config) (nuncio.NewFilter, error) {
		return func() nuncio.Filter { return panicky{} }, nil
	})
	nuncio.Register("caller", func(c *nuncio.Config) (nuncio.NewFilter, error) {
		var cfg struct {
			Cluster string `json:"cluster"`
		}
		if err := c.Decode(&cfg); err != nil {
			return nil, err
		}
		if cfg.Cluster == "" {
			return nil, nuncio.FieldErrorf("cluster", "required: the cluster to call")
		}
		c.Cluster("cluster", cfg.Cluster)
		return func() nuncio.Filter { return &caller{cluster: cfg.Cluster} }, nil
	})
	nuncio.Register("deadline", func(c *nuncio.Config) (nuncio.NewFilter, error) {
		return func() nuncio.Filter { return deadline{} }, nil
	})
	nuncio.Register("reply", func(c *nuncio.Config) (nuncio.NewFilter, error) {
		var cfg struct {
			Status int `json:"status"`
		}
		if err := c.Decode(&cfg); err != nil {
			return nil, err
		}
		return func() nuncio.Filter { return &reply{status: cfg.Status} }, nil
	})
	nuncio.Register("observe", func(c *nuncio.Config) (nuncio.NewFilter, error) {
		hooks := c.Counter("hooks_total", "Hooks called.")
		done := c.Counter("completions_total", "OnComplete calls.")
		return func() nuncio.Filter { return &observe{hooks: hooks, completions: done} }, nil
	})
	nuncio.Register("stress", func(c *nuncio.Config) (nuncio.NewFilter, error) {
		o := declareOutcomes(c, "")
		return func() nuncio.Filter { return &stress{o: o} }, nil
	})
	nuncio.Register("logs", func(c *nuncio.Config) (nuncio.NewFilter, error) {
		seen := c.Counter("seen_total", "Requests seen.")
		return func() nuncio.Filter { return &logs{seen: seen, log: c.Logger()} }, nil
	})
}

// The crossing bench's filters (crates/filter-abi/benches/crossing.rs):
// one that continues with no change, one that makes the bench's header
// edit (as bench/go-headers does), one that defers its decision.
type benchNoop struct{ nuncio.PassThrough }

func (benchNoop) RequestHeaders(context.Context, *nuncio.RequestHead, bool) nuncio.Decision {
	return nuncio.Continue()
}

type benchEdit struct{ nuncio.PassThrough }

func (benchEdit) RequestHeaders(_ context.Context, h *nuncio.RequestHead, _ bool) nuncio.Decision {
	ip, _, _ := strings.Cut(h.RemoteAddr, ":")
	h.Header.Set("x-bench-1", ip)
	return nuncio.Continue()
}

type benchDefer struct{ nuncio.PassThrough }

func (benchDefer) RequestHeaders(context.Context, *nuncio.RequestHead, bool) nuncio.Decision {
	return nuncio.Defer(func(context.Context) nuncio.Decision { return nuncio.Continue() })
}

func init() {
	nuncio.Register("bench_noop", func(*nuncio.Config) (nuncio.NewFilter, error) {
		return func() nuncio.Filter { return benchNoop{} }, nil
	})
	nuncio.Register("bench_edit", func(*nuncio.Config) (nuncio.NewFilter, error) {
		return func() nuncio.Filter { return benchEdit{} }, nil
	})
	nuncio.Register("bench_defer", func(*nuncio.Config) (nuncio.NewFilter, error) {
		return func() nuncio.Filter { return benchDefer{} }, nil
	})
}
