package nuncio

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"nuncio.dev/sdk/go/internal/abi"
)

// Config is a filter's config block as its Factory sees it, when nuncio
// loads the config (on nuncio's main thread; the factory may take its
// time, but must not wait for a stream).
type Config struct {
	filter   string
	raw      []byte
	counters []counterSpec
	clusters []clusterRef
	cfg      *config
	sealed   bool
	// The sides the filter acts on (ActsOn); both unless said.
	notRequest, notResponse bool
}

type counterSpec struct{ name, help string }
type clusterRef struct{ field, name string }

// Filter is the name the config gave (`filter: NAME`).
func (c *Config) Filter() string { return c.filter }

// Raw is the block as JSON ("null" when the config has none).
func (c *Config) Raw() []byte { return c.raw }

// Decode reads the block into v (a pointer to a struct, map, ...) with
// encoding/json's rules and field names (`json` tags), strictly: a field v
// does not have, or a value of the wrong type, is a *FieldError naming
// the field, e.g. `rules[1].timeout_ms: invalid type: string "soon",
// expected a number`. nuncio reports it at the field's line.
func (c *Config) Decode(v any) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return &FieldError{Message: "Decode needs a non-nil pointer (a bug in the filter)"}
	}
	dec := json.NewDecoder(bytes.NewReader(c.raw))
	dec.UseNumber()
	var tree any
	if err := dec.Decode(&tree); err != nil {
		return &FieldError{Message: "not JSON: " + err.Error()}
	}
	if err := check(tree, rv.Type().Elem(), ""); err != nil {
		return err
	}
	if err := json.Unmarshal(c.raw, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return &FieldError{Path: te.Field, Message: fmt.Sprintf("invalid value, expected %s", te.Type)}
		}
		return &FieldError{Message: err.Error()}
	}
	return nil
}

// Counter declares a counter, exposed by nuncio as
// nuncio_filter_go_<filter>_<name>{filter="go.<filter>",listener=...} in
// /stats and /stats/prometheus. name is lower-case letters, digits and _,
// ending in _total; help one line. Declare counters in the Factory only.
func (c *Config) Counter(name, help string) *Counter {
	if c.sealed {
		panic("nuncio: Config.Counter called after the factory returned")
	}
	c.counters = append(c.counters, counterSpec{name, help})
	return &Counter{cfg: c.cfg, index: len(c.counters) - 1}
}

// Cluster declares that the filter calls cluster name (through
// Transport); field is where the block names it (`cluster`,
// `services[1].cluster`). nuncio refuses a config whose clusters do not
// include it, at that field's line. Calls to undeclared clusters fail.
func (c *Config) Cluster(field, name string) {
	c.clusters = append(c.clusters, clusterRef{field, name})
}

// ActsOn declares which sides of the exchange the filter's hooks act on
// (both, unless said). When no filter of a listener's chain acts on a
// side, that side passes as if the chain had no filters: the response's
// head as the upstream sent it, nothing held back, no hook per body piece
// (or the request's head unparsed and its body streamed as it comes).
// A filter that only reads and edits requests says ActsOn(true, false).
// Its hooks for the other side may still be called when another filter of
// the chain acts on that side: keep them PassThrough's.
func (c *Config) ActsOn(request, response bool) {
	if c.sealed {
		panic("nuncio: Config.ActsOn called after the factory returned")
	}
	c.notRequest, c.notResponse = !request, !response
}

// Logger writes to nuncio's log, naming this filter.
func (c *Config) Logger() *slog.Logger { return c.cfg.logger }

// FieldError is a config error at a field of the filter's block: Path is
// dotted from the block (`rules[1].timeout_ms`; empty: the block).
type FieldError struct {
	Path    string
	Message string
}

func (e *FieldError) Error() string {
	if e.Path == "" {
		return e.Message
	}
	return e.Path + ": " + e.Message
}

// FieldErrorf makes a *FieldError at path.
func FieldErrorf(path, format string, args ...any) error {
	return &FieldError{Path: path, Message: fmt.Sprintf(format, args...)}
}

// Counter is a counter a filter declared. Inc and Add may be called from
// any goroutine, at any time, without a lock: the counts reach nuncio's
// stats with the config's next call into the library.
type Counter struct {
	cfg   *config
	index int
}

// Inc adds one.
func (k *Counter) Inc() { k.Add(1) }

// Add adds n.
func (k *Counter) Add(n uint64) {
	if k == nil || k.index >= len(k.cfg.counts) {
		return
	}
	k.cfg.counts[k.index].Add(n)
	k.cfg.counted()
}

// config is a configured filter, shared by its streams.
type config struct {
	id        uint64
	filter    string
	newFilter NewFilter
	counts    []atomic.Uint64
	panics    atomic.Uint64
	dirty     atomic.Bool
	// flushAsked: nuncio was asked to take the counts soon (counts made
	// outside a call into the library reach its stats within 100 ms).
	flushAsked atomic.Bool
	logger     *slog.Logger
	// The sides the filter does not act on (Config.ActsOn).
	notRequest, notResponse bool
}

var (
	configs      sync.Map // uint64 -> *config
	nextConfigID atomic.Uint64
)

func (c *config) countPanic() {
	c.panics.Add(1)
	c.counted()
}

// counted marks counts pending, and asks nuncio to take them unless it
// was asked already (once per take: cheap on a hot counter).
func (c *config) counted() {
	c.dirty.Store(true)
	if !c.flushAsked.Load() && c.flushAsked.CompareAndSwap(false, true) {
		if host.countsPending(c.id) != abi.OK {
			c.flushAsked.Store(false)
		}
	}
}

// takeCounts drains the counts: (index, n) pairs; the panics counter is
// index ^uint64(0).
func (c *config) takeCounts() []uint64 {
	if !c.dirty.Swap(false) {
		return nil
	}
	var out []uint64
	for i := range c.counts {
		if n := c.counts[i].Swap(0); n > 0 {
			out = append(out, uint64(i), n)
		}
	}
	if n := c.panics.Swap(0); n > 0 {
		out = append(out, ^uint64(0), n)
	}
	return out
}

// configure runs a factory: the config, or an error at a path relative to
// the `go` block (`filter`, `config`, `config.<field>`).
func configure(filter string, raw []byte) (cfg *config, counters []counterSpec, clusters []clusterRef, path, message string) {
	factory, known := lookupFactory(filter)
	if factory == nil {
		sort.Strings(known)
		return nil, nil, nil, "filter", fmt.Sprintf("the library registers no filter %q (it has: %s)", filter, strings.Join(known, ", "))
	}
	if len(raw) == 0 {
		raw = []byte("null")
	}
	cfg = &config{id: nextConfigID.Add(1), filter: filter}
	cfg.logger = slog.New(&logHandler{filter: "go." + filter})
	c := &Config{filter: filter, raw: raw, cfg: cfg}
	newFilter, err := runFactory(factory, c)
	c.sealed = true
	if err != nil {
		var fe *FieldError
		if errors.As(err, &fe) {
			if fe.Path == "" {
				return nil, nil, nil, "config", fe.Message
			}
			return nil, nil, nil, "config." + fe.Path, fe.Message
		}
		return nil, nil, nil, "config", err.Error()
	}
	if newFilter == nil {
		return nil, nil, nil, "config", "the filter's factory returned no constructor (a bug in the filter)"
	}
	cfg.newFilter = newFilter
	cfg.notRequest, cfg.notResponse = c.notRequest, c.notResponse
	cfg.counts = make([]atomic.Uint64, len(c.counters))
	configs.Store(cfg.id, cfg)
	return cfg, c.counters, c.clusters, "", ""
}

func runFactory(factory Factory, c *Config) (nf NewFilter, err error) {
	defer func() {
		if p := recover(); p != nil {
			nf, err = nil, fmt.Errorf("the filter's factory panicked: %v", p)
		}
	}()
	return factory(c)
}

// check walks a decoded JSON value against the Go type it will be read
// into, for errors that name their field.
func check(v any, t reflect.Type, path string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if v == nil {
		return nil
	}
	if reflect.PointerTo(t).Implements(reflect.TypeFor[json.Unmarshaler]()) ||
		reflect.PointerTo(t).Implements(reflect.TypeFor[encoding.TextUnmarshaler]()) {
		return nil
	}
	wrong := func(expected string) error {
		return &FieldError{Path: path, Message: fmt.Sprintf("invalid type: %s, expected %s", describe(v), expected)}
	}
	switch t.Kind() {
	case reflect.Interface:
		return nil
	case reflect.Struct:
		obj, ok := v.(map[string]any)
		if !ok {
			return wrong("a map")
		}
		fields := jsonFields(t)
		keys := make([]string, 0, len(obj))
		for k := range obj {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			f, ok := findField(fields, k)
			if !ok {
				names := make([]string, len(fields))
				for i, f := range fields {
					names[i] = "`" + f.name + "`"
				}
				return &FieldError{Path: join(path, k), Message: fmt.Sprintf("unknown field `%s`, expected one of %s", k, strings.Join(names, ", "))}
			}
			if err := check(obj[k], f.typ, join(path, k)); err != nil {
				return err
			}
		}
		return nil
	case reflect.Map:
		obj, ok := v.(map[string]any)
		if !ok {
			return wrong("a map")
		}
		for k, e := range obj {
			if err := check(e, t.Elem(), join(path, k)); err != nil {
				return err
			}
		}
		return nil
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			if _, ok := v.(string); ok {
				return nil
			}
		}
		arr, ok := v.([]any)
		if !ok {
			return wrong("a list")
		}
		for i, e := range arr {
			if err := check(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		return nil
	case reflect.String:
		if _, ok := v.(string); !ok {
			return wrong("a string")
		}
		return nil
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			return wrong("a boolean")
		}
		return nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, ok := v.(json.Number)
		if !ok {
			return wrong("an integer")
		}
		i, err := strconv.ParseInt(string(n), 10, 64)
		if err != nil || reflect.Zero(t).OverflowInt(i) {
			return &FieldError{Path: path, Message: fmt.Sprintf("invalid value: %s, expected an integer that fits %s", n, t.Kind())}
		}
		return nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, ok := v.(json.Number)
		if !ok {
			return wrong("a non-negative integer")
		}
		u, err := strconv.ParseUint(string(n), 10, 64)
		if err != nil || reflect.Zero(t).OverflowUint(u) {
			return &FieldError{Path: path, Message: fmt.Sprintf("invalid value: %s, expected a non-negative integer that fits %s", n, t.Kind())}
		}
		return nil
	case reflect.Float32, reflect.Float64:
		if _, ok := v.(json.Number); !ok {
			return wrong("a number")
		}
		return nil
	}
	return nil
}

func describe(v any) string {
	switch x := v.(type) {
	case string:
		return fmt.Sprintf("string %q", x)
	case json.Number:
		return "number " + string(x)
	case bool:
		return fmt.Sprintf("boolean `%v`", x)
	case []any:
		return "list"
	case map[string]any:
		return "map"
	}
	return fmt.Sprintf("%T", v)
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

type jsonField struct {
	name string
	typ  reflect.Type
}

// jsonFields lists the fields encoding/json reads into a struct type:
// exported, by tag name, embedded structs flattened.
func jsonFields(t reflect.Type) []jsonField {
	var out []jsonField
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				out = append(out, jsonFields(ft)...)
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out = append(out, jsonField{name, f.Type})
	}
	return out
}

// findField matches a key as encoding/json does: exactly, else ignoring
// case.
func findField(fields []jsonField, key string) (jsonField, bool) {
	for _, f := range fields {
		if f.name == key {
			return f, true
		}
	}
	for _, f := range fields {
		if strings.EqualFold(f.name, key) {
			return f, true
		}
	}
	return jsonField{}, false
}
