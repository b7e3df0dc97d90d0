// Command testfilters is the filter library nuncio's own tests load
// (crates/filter-abi/tests): one filter per scenario. Built with
// `go build -buildmode=c-shared -tags nunciotest` by the test run (the
// tag gives it nuncio.TestIDs, to call the ABI directly).
package main

import (
	"context"

	nuncio "nuncio.dev/sdk/go"
)

// stamp sets x-go-stamp on the request and x-go-seen on the response:
// the simplest inline filter.
type stamp struct {
	nuncio.PassThrough
	value string
}

func (f *stamp) RequestHeaders(ctx context.Context, h *nuncio.RequestHead, _ bool) nuncio.Decision {
	h.Header.Set("x-go-stamp", f.value)
	return nuncio.Continue()
}

func (f *stamp) ResponseHeaders(ctx context.Context, h *nuncio.ResponseHead, _ bool) nuncio.Decision {
	h.Header.Set("x-go-seen", "yes")
	return nuncio.Continue()
}

func init() {
	register()
	nuncio.Register("stamp", func(c *nuncio.Config) (nuncio.NewFilter, error) {
		var cfg struct {
			Value string `json:"value"`
		}
		if err := c.Decode(&cfg); err != nil {
			return nil, err
		}
		if cfg.Value == "" {
			cfg.Value = "go"
		}
		return func() nuncio.Filter { return &stamp{value: cfg.Value} }, nil
	})
}

// requestStamp stamps the request only; with `request_only: true` its
// config says so (Config.ActsOn), and the response passes unfiltered.
type requestStamp struct{ nuncio.PassThrough }

func (requestStamp) RequestHeaders(ctx context.Context, h *nuncio.RequestHead, _ bool) nuncio.Decision {
	h.Header.Set("x-go-request-only", "yes")
	return nuncio.Continue()
}

func init() {
	nuncio.Register("request_stamp", func(c *nuncio.Config) (nuncio.NewFilter, error) {
		var cfg struct {
			RequestOnly bool `json:"request_only"`
		}
		if err := c.Decode(&cfg); err != nil {
			return nil, err
		}
		if cfg.RequestOnly {
			c.ActsOn(true, false)
		}
		return func() nuncio.Filter { return requestStamp{} }, nil
	})
}

func main() {}
