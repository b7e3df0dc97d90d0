package nuncio

import (
	"context"
	"log/slog"
	"strconv"
	"strings"

	"nuncio.dev/sdk/go/internal/abi"
)

// logHandler is a slog.Handler writing to nuncio's log (its level
// filtering, format and destination), as one line per record: the
// message, then key=value attributes. Safe from any goroutine.
type logHandler struct {
	filter string
	attrs  string
	group  string
}

func defaultLogger() *slog.Logger { return slog.New(&logHandler{filter: "go"}) }

// Enabled lets everything through: nuncio's log level decides.
func (h *logHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *logHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	b.WriteString(h.attrs)
	r.Attrs(func(a slog.Attr) bool {
		writeAttr(&b, h.group, a)
		return true
	})
	level := abi.LogDebug
	switch {
	case r.Level >= slog.LevelError:
		level = abi.LogError
	case r.Level >= slog.LevelWarn:
		level = abi.LogWarn
	case r.Level >= slog.LevelInfo:
		level = abi.LogInfo
	}
	host.log(level, h.filter, b.String())
	return nil
}

func writeAttr(b *strings.Builder, group string, a slog.Attr) {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return
	}
	key := a.Key
	if group != "" {
		key = group + "." + key
	}
	if a.Value.Kind() == slog.KindGroup {
		for _, g := range a.Value.Group() {
			writeAttr(b, key, g)
		}
		return
	}
	b.WriteByte(' ')
	b.WriteString(key)
	b.WriteByte('=')
	v := a.Value.String()
	if strings.ContainsAny(v, " \t\n\"=") || v == "" {
		v = strconv.Quote(v)
	}
	b.WriteString(v)
}

func (h *logHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	var b strings.Builder
	b.WriteString(h.attrs)
	for _, a := range attrs {
		writeAttr(&b, h.group, a)
	}
	return &logHandler{filter: h.filter, attrs: b.String(), group: h.group}
}

func (h *logHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	g := name
	if h.group != "" {
		g = h.group + "." + name
	}
	return &logHandler{filter: h.filter, attrs: h.attrs, group: g}
}
