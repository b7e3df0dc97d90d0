//go:build nunciotest

package main

import (
	"context"

	nuncio "nuncio.dev/sdk/go"
	"nuncio.dev/sdk/go/internal/abi"
)

// twice: a decision given twice and after the end, at the ABI itself
// (the SDK makes both impossible: a hook decides by returning).
type twice struct {
	nuncio.PassThrough
	first, second, late, sdk *nuncio.Counter
}

func (f *twice) RequestHeaders(ctx context.Context, _ *nuncio.RequestHead, _ bool) nuncio.Decision {
	return nuncio.Defer(func(ctx context.Context) nuncio.Decision {
		id, hook := nuncio.TestIDs(ctx)
		if abi.Decide(id, hook, abi.Continue, 0, nil, nil, 0) == abi.OK {
			f.first.Inc()
		}
		if abi.Decide(id, hook, abi.Reply, 500, nil, nil, 0) == abi.NotStopped {
			f.second.Inc()
		}
		h := nuncio.HandleOf(ctx)
		nuncio.Go(ctx, func(context.Context) {
			<-h.Done()
			if abi.Decide(id, hook, abi.Continue, 0, nil, nil, 0) == abi.StreamGone {
				f.late.Inc()
			}
		})
		// The SDK's own decision comes third: refused (NotStopped), ignored.
		f.sdk.Inc()
		return nuncio.ReplyText(500, "the third decision must not win")
	})
}

func init() {
	nuncio.Register("twice", func(c *nuncio.Config) (nuncio.NewFilter, error) {
		f := twice{
			first:  c.Counter("first_ok_total", "First decisions accepted."),
			second: c.Counter("second_not_stopped_total", "Second decisions refused with NOT_STOPPED."),
			late:   c.Counter("late_gone_total", "Decisions after the end refused with STREAM_GONE."),
			sdk:    c.Counter("sdk_decisions_total", "SDK decisions made after the raw ones."),
		}
		return func() nuncio.Filter { g := f; return &g }, nil
	})
}
