// Command go-headers is bench/filters' Go filter: the same work as its
// Rust `headers` variant (one request field set to the client's address
// without port, one response field set), as a Go filter that decides at
// once (inline on the worker).
//
//	go build -buildmode=c-shared -o libgoheaders.so .
package main

import (
	"context"
	"net"

	nuncio "nuncio.dev/sdk/go"
)

type headers struct {
	nuncio.PassThrough
	name string
}

func (f *headers) RequestHeaders(_ context.Context, h *nuncio.RequestHead, _ bool) nuncio.Decision {
	ip, _, err := net.SplitHostPort(h.RemoteAddr)
	if err != nil {
		ip = h.RemoteAddr
	}
	h.Header.Set(f.name, ip)
	return nuncio.Continue()
}

func (f *headers) ResponseHeaders(_ context.Context, h *nuncio.ResponseHead, _ bool) nuncio.Decision {
	h.Header.Set(f.name, "on")
	return nuncio.Continue()
}

func init() {
	nuncio.Register("headers", func(c *nuncio.Config) (nuncio.NewFilter, error) {
		var cfg struct {
			Name string `json:"name"`
		}
		if err := c.Decode(&cfg); err != nil {
			return nil, err
		}
		if cfg.Name == "" {
			cfg.Name = "x-bench-1"
		}
		return func() nuncio.Filter { return &headers{name: cfg.Name} }, nil
	})
}

func main() {}
