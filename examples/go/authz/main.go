// Command authz is an example Go filter for nuncio: it asks an
// authorization service — a cluster of nuncio's config — about every
// request, asynchronously, and honours the stream's ctx (a client that
// leaves cancels the call; the route's deadline bounds it).
//
//	go build -buildmode=c-shared -o libauthz.so .
//	nuncio -c nuncio.yaml
//
// The check goes to the cluster as GET <path_prefix><path>, with the
// fields named in `headers`. A 2xx answer lets the request through,
// copying `x-user` from the answer; any other status is the client's
// answer; no answer (the service is down, too slow) is a 503, or lets the
// request through with `allow_on_failure`.
package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"time"

	nuncio "nuncio.dev/sdk/go"
)

// settings is the filter's config block.
type settings struct {
	// Cluster is the authorization service (required).
	Cluster string `json:"cluster"`
	// PathPrefix goes before the request's path in the check.
	PathPrefix string `json:"path_prefix"`
	// TimeoutMs bounds the check (default 200); the route's deadline,
	// if sooner, wins.
	TimeoutMs int `json:"timeout_ms"`
	// Headers are the request fields sent with the check (default:
	// authorization).
	Headers []string `json:"headers"`
	// AllowOnFailure lets requests through when the service gives no
	// answer.
	AllowOnFailure bool `json:"allow_on_failure"`
}

type counters struct {
	allowed, denied, failed *nuncio.Counter
}

type authz struct {
	nuncio.PassThrough
	s      *settings
	counts counters
	client *http.Client
	log    *slog.Logger
}

// RequestHeaders defers: the check is an HTTP call, which waits, so it
// runs in a goroutine of its own while the stream waits at this filter.
// The head stays this hook's until the deferred function returns.
func (f *authz) RequestHeaders(ctx context.Context, head *nuncio.RequestHead, _ bool) nuncio.Decision {
	return nuncio.Defer(func(ctx context.Context) nuncio.Decision {
		ctx, cancel := context.WithTimeout(ctx, time.Duration(f.s.TimeoutMs)*time.Millisecond)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, "GET", "http://"+f.s.Cluster+f.s.PathPrefix+head.Path, nil)
		if err != nil {
			return f.failed(ctx, err)
		}
		req.Host = head.Authority
		for _, name := range f.s.Headers {
			for _, v := range head.Header.Values(name) {
				req.Header.Add(name, v)
			}
		}
		resp, err := f.client.Do(req)
		if err != nil {
			return f.failed(ctx, err)
		}
		defer resp.Body.Close()
		if resp.StatusCode/100 == 2 {
			f.counts.allowed.Inc()
			if user := resp.Header.Get("x-user"); user != "" {
				head.Header.Set("x-user", user)
			}
			return nuncio.Continue()
		}
		f.counts.denied.Inc()
		body, _ := io.ReadAll(resp.Body)
		var h nuncio.Header
		if ct := resp.Header.Get("content-type"); ct != "" {
			h.Set("content-type", ct)
		}
		if wa := resp.Header.Get("www-authenticate"); wa != "" {
			h.Set("www-authenticate", wa)
		}
		return nuncio.Reply(resp.StatusCode, h, body)
	})
}

// failed: no answer from the service.
func (f *authz) failed(ctx context.Context, err error) nuncio.Decision {
	var end *nuncio.EndError
	if errors.As(context.Cause(ctx), &end) {
		// The stream ended (the client left): nobody waits for a decision.
		return nuncio.Continue()
	}
	f.counts.failed.Inc()
	f.log.Warn("authorization service gave no answer", "cluster", f.s.Cluster, "error", err)
	if f.s.AllowOnFailure {
		return nuncio.Continue()
	}
	return nuncio.ReplyText(503, "authorization service unavailable\n")
}

func init() {
	nuncio.Register("authz", func(c *nuncio.Config) (nuncio.NewFilter, error) {
		s := &settings{TimeoutMs: 200, Headers: []string{"authorization"}}
		if err := c.Decode(s); err != nil {
			return nil, err
		}
		if s.Cluster == "" {
			return nil, nuncio.FieldErrorf("cluster", "required: the cluster of the authorization service")
		}
		if s.TimeoutMs <= 0 {
			return nil, nuncio.FieldErrorf("timeout_ms", "must be positive, not %d", s.TimeoutMs)
		}
		if s.PathPrefix != "" && s.PathPrefix[0] != '/' {
			return nil, nuncio.FieldErrorf("path_prefix", "must start with /")
		}
		c.Cluster("cluster", s.Cluster)
		// It decides on requests only: responses pass unfiltered.
		c.ActsOn(true, false)
		counts := counters{
			allowed: c.Counter("allowed_total", "Requests the service allowed."),
			denied:  c.Counter("denied_total", "Requests the service denied."),
			failed:  c.Counter("failed_total", "Requests the service gave no answer about."),
		}
		client, log := nuncio.Client(), c.Logger()
		return func() nuncio.Filter { return &authz{s: s, counts: counts, client: client, log: log} }, nil
	})
}

func main() {}
