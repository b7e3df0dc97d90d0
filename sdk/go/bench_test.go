package nuncio

import (
	"context"
	"testing"

	"nuncio.dev/sdk/go/internal/abi"
)

type nopHost struct{ *fakeHost }

func (nopHost) decide(uint64, uint32, uint32, uint32, []byte, []byte, uint32) int32 { return abi.OK }

func benchHook(b *testing.B, edit bool) {
	if f, _ := lookupFactory(b.Name()); f != nil {
		registryMu.Lock()
		delete(registry, b.Name())
		registryMu.Unlock()
	}
	Register(b.Name(), func(c *Config) (NewFilter, error) {
		return func() Filter {
			return &testFilter{onRequest: func(_ context.Context, h *RequestHead) Decision {
				if edit {
					h.Header.Set("x-bench-1", "192.0.2.7")
				}
				return Continue()
			}}
		}, nil
	})
	cfg, _, _, _, _ := configure(b.Name(), nil)
	saved := host
	host = nopHost{fake}
	defer func() { host = saved }()
	head := appendEntry(appendEntry(appendEntry(appendEntry(nil, "GET"), "/small"), "bench.example"), "192.0.2.7:40000")
	for _, f := range [][2]string{{"host", "bench.example"}, {"user-agent", "wrk"}, {"accept", "*/*"}, {"x-request-id", "0f8e1c1e-8d5b-4b5e-9a3c-2b7a1f0d9e11"}, {"accept-encoding", "gzip"}} {
		head = appendEntry(appendEntry(head, f[0]), f[1])
	}
	id := nextStream.Add(1)
	onHook(cfg.id, id, 1, abi.HookRequestHeaders, string(head), nil, abi.EndOfStream, -1)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		onHook(cfg.id, id, uint32(i+2), abi.HookRequestHeaders, string(head), nil, abi.EndOfStream, -1)
	}
}

func BenchmarkHookContinue(b *testing.B) { benchHook(b, false) }
func BenchmarkHookEdit(b *testing.B)     { benchHook(b, true) }
