// Command bodyrewrite is an example Go filter for nuncio: it rewrites the
// body of responses whose content type it is told to, replacing every
// `from` with `to`. It buffers the body (nuncio keeps it, up to 1 MiB, and
// holds the response head back meanwhile), rewrites it whole, and nuncio
// sends it with its new exact content-length.
//
//	go build -buildmode=c-shared -o libbodyrewrite.so .
//	nuncio -c nuncio.yaml
//
// Every hook decides at once: it runs inline on nuncio's worker, with no
// goroutine and no thread hop.
package main

import (
	"bytes"
	"context"
	"strings"

	nuncio "nuncio.dev/sdk/go"
)

// settings is the filter's config block.
type settings struct {
	From string `json:"from"`
	To   string `json:"to"`
	// ContentTypes are the media types rewritten (default: text/html,
	// text/plain).
	ContentTypes []string `json:"content_types"`
}

type rewrite struct {
	nuncio.PassThrough
	s         *settings
	from, to  []byte
	rewritten *nuncio.Counter
	// on: this response is one to rewrite.
	on bool
}

func (f *rewrite) ResponseHeaders(_ context.Context, head *nuncio.ResponseHead, endOfStream bool) nuncio.Decision {
	mediaType, _, _ := strings.Cut(head.Header.Get("content-type"), ";")
	for _, t := range f.s.ContentTypes {
		if strings.EqualFold(strings.TrimSpace(mediaType), t) {
			f.on = !endOfStream
		}
	}
	return nuncio.Continue()
}

func (f *rewrite) ResponseBody(_ context.Context, body *nuncio.Body, endOfStream bool) nuncio.Decision {
	if !f.on {
		return nuncio.Continue()
	}
	if !endOfStream {
		// Keep it; this hook is called again with the whole body.
		return nuncio.Buffer()
	}
	if n := bytes.Count(body.Bytes(), f.from); n > 0 {
		body.Set(bytes.ReplaceAll(body.Bytes(), f.from, f.to))
		f.rewritten.Inc()
	}
	return nuncio.Continue()
}

func init() {
	nuncio.Register("bodyrewrite", func(c *nuncio.Config) (nuncio.NewFilter, error) {
		s := &settings{ContentTypes: []string{"text/html", "text/plain"}}
		if err := c.Decode(s); err != nil {
			return nil, err
		}
		if s.From == "" {
			return nil, nuncio.FieldErrorf("from", "required: the text to replace")
		}
		rewritten := c.Counter("rewritten_total", "Response bodies rewritten.")
		// It rewrites responses only: requests pass unfiltered.
		c.ActsOn(false, true)
		return func() nuncio.Filter {
			return &rewrite{s: s, from: []byte(s.From), to: []byte(s.To), rewritten: rewritten}
		}, nil
	})
}

func main() {}
