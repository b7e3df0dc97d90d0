package nuncio

import (
	"encoding/binary"
	"log/slog"

	"nuncio.dev/sdk/go/internal/abi"
)

// hostAPI is nuncio's side of the ABI as the SDK calls it: the cgo
// functions in production, a fake in the SDK's own tests.
type hostAPI interface {
	decide(stream uint64, hook uint32, kind, status uint32, edits, body []byte, flags uint32) int32
	call(stream, call uint64, op, arg uint32, a, b []byte) int32
	httpCall(stream, call uint64, cluster string, head, body []byte, timeoutMs, maxBytes uint64) int32
	httpCancel(stream, call uint64) int32
	log(level uint32, filter, message string)
	countsPending(config uint64) int32
}

type cgoHost struct{}

func (cgoHost) decide(stream uint64, hook uint32, kind, status uint32, edits, body []byte, flags uint32) int32 {
	return abi.Decide(stream, hook, kind, status, edits, body, flags)
}

func (cgoHost) call(stream, call uint64, op, arg uint32, a, b []byte) int32 {
	return abi.Call(stream, call, op, arg, a, b)
}

func (cgoHost) httpCall(stream, call uint64, cluster string, head, body []byte, timeoutMs, maxBytes uint64) int32 {
	return abi.HTTPCall(stream, call, cluster, head, body, timeoutMs, maxBytes)
}

func (cgoHost) httpCancel(stream, call uint64) int32 { return abi.HTTPCancel(stream, call) }

func (cgoHost) log(level uint32, filter, message string) { abi.Log(level, filter, message) }

func (cgoHost) countsPending(config uint64) int32 { return abi.CountsPending(config) }

var host hostAPI = cgoHost{}

func init() {
	abi.SetHandler(exports{})
	// Plain slog (and the log package, which slog's default takes over)
	// writes to nuncio's log.
	slog.SetDefault(slog.New(&logHandler{filter: "go"}))
}

// exports receives nuncio's calls into the library.
type exports struct{}

func (exports) Configure(filter string, raw []byte, sink abi.Sink) uint64 {
	cfg, counters, clusters, path, message := configure(filter, raw)
	if cfg == nil {
		sink.PutString(path)
		sink.PutString(message)
		return 0
	}
	for _, c := range counters {
		sink.PutString(c.name)
		sink.PutString(c.help)
	}
	sink.PutString("")
	// The sides it acts on (ABI 2), then the clusters it calls.
	if !cfg.notRequest {
		sink.PutString("request")
	}
	if !cfg.notResponse {
		sink.PutString("response")
	}
	sink.PutString("")
	for _, c := range clusters {
		sink.PutString(c.field)
		sink.PutString(c.name)
	}
	return cfg.id
}

func (exports) Release(id uint64) { configs.Delete(id) }

func (exports) Hook(cfgID, streamID uint64, hookID, hook uint32, head string, body []byte, flags uint32, deadlineNs int64) uint32 {
	return onHook(cfgID, streamID, hookID, hook, head, body, flags, deadlineNs)
}

func (exports) End(cfgID, streamID uint64, cause uint32) uint32 { return onEnd(cfgID, streamID, cause) }

func (exports) CallDone(call uint64, status int32, data []byte) {
	complete(call, reply{status: status, data: data})
}

func (exports) HTTPDone(call uint64, status int32, httpStatus uint32, fields string, body []byte) {
	complete(call, reply{status: status, httpStatus: httpStatus, fields: fields, data: body})
}

func (exports) TakeCounts(id uint64, late bool, sink abi.Sink) {
	v, ok := configs.Load(id)
	if !ok {
		return
	}
	cfg := v.(*config)
	if late {
		cfg.flushAsked.Store(false)
	}
	counts := cfg.takeCounts()
	if len(counts) == 0 {
		return
	}
	out := make([]byte, 0, 8*len(counts))
	for _, n := range counts {
		out = binary.LittleEndian.AppendUint64(out, n)
	}
	sink.Put(out)
}

func (exports) Stats(sink abi.Sink) {
	st := liveStats()
	out := binary.LittleEndian.AppendUint64(nil, st.Streams)
	out = binary.LittleEndian.AppendUint64(out, st.Calls)
	out = binary.LittleEndian.AppendUint64(out, st.Goroutines)
	sink.Put(out)
}

// countsFlag is the return flag saying cfg has counts to take.
func countsFlag(cfg *config) uint32 {
	if cfg != nil && cfg.dirty.Load() {
		return abi.CountsPendingFlag
	}
	return 0
}
