package pipeline

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// A window's state is saved with every checkpoint, so it is encoded in
// a compact binary form rather than JSON (a few thousand open windows
// at each batch): a version, the configuration it was taken under, the
// watermark, then each open window with its accumulators. Values keep
// their types (a timestamp stays a timestamp, an integer an integer);
// values that are neither scalars nor timestamps are JSON.

const windowStateVersion = 1

// Value tags of the encoding.
const (
	tagNil byte = iota
	tagFloat
	tagInt
	tagUint
	tagString
	tagBool
	tagTime
	tagJSON
)

// signature identifies the configuration a state fits: the kind and
// lengths of the windows and the aggregates.
func (p *windower) signature() string {
	var b strings.Builder
	fmt.Fprintf(&b, "size=%d slide=%d gap=%d lateness=%d key=%t", p.size, p.slide, p.gap, p.lateness, p.key != nil)
	for _, a := range p.aggs {
		fmt.Fprintf(&b, " %s=%s", a.field, a.fn)
	}
	return b.String()
}

// State encodes the open windows and the watermark.
func (p *windower) State() ([]byte, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.fixed)
	for _, ss := range p.sessions {
		n += len(ss)
	}
	b := make([]byte, 0, 64+n*(32+24*len(p.aggs)))
	b = append(b, windowStateVersion)
	b = appendString(b, p.signature())
	b = appendBool(b, p.seen)
	b = appendTime(b, p.maxEvent)
	b = binary.AppendUvarint(b, uint64(n))
	var err error
	put := func(w *window) {
		b = appendString(b, w.key)
		b = appendTime(b, w.start)
		b = appendTime(b, w.end)
		for _, c := range w.accs {
			b = binary.AppendVarint(b, c.n)
			b = binary.LittleEndian.AppendUint64(b, math.Float64bits(c.sum))
			b = appendBool(b, c.set)
			b = appendTime(b, c.at)
			if b, err = appendValue(b, c.val); err != nil {
				return
			}
		}
	}
	for _, w := range p.fixed {
		if put(w); err != nil {
			return nil, err
		}
	}
	for _, ss := range p.sessions {
		for _, w := range ss {
			if put(w); err != nil {
				return nil, err
			}
		}
	}
	return b, nil
}

// errWindowState is a state that does not decode.
var errWindowState = errors.New("window state: malformed")

// Restore replaces the windows and watermark with a state's.
func (p *windower) Restore(state []byte) error {
	d := stateDecoder{b: state}
	if v := d.byte(); v != windowStateVersion {
		return fmt.Errorf("window state: version %d, want %d", v, windowStateVersion)
	}
	if sig := d.string(); d.err == nil && sig != p.signature() {
		return fmt.Errorf("window state: taken under another configuration (%s; now %s)", sig, p.signature())
	}
	seen, maxEvent := d.bool(), d.time()
	n := d.uvarint()
	if d.err != nil {
		return d.err
	}
	if n > uint64(len(state)) { // each window takes bytes: a bound before allocating
		return errWindowState
	}
	fixed := make(map[windowID]*window, n)
	sessions := map[string][]*window{}
	var nextEnd time.Time
	for range n {
		w := &window{key: d.string(), start: d.time(), end: d.time(), accs: make([]accum, len(p.aggs))}
		for i := range w.accs {
			c := &w.accs[i]
			c.n = d.varint()
			c.sum = math.Float64frombits(d.uint64())
			c.set = d.bool()
			c.at = d.time()
			c.val = d.value()
		}
		if d.err != nil {
			return d.err
		}
		if !w.start.Before(w.end) {
			return fmt.Errorf("%w: a window ends before it starts", errWindowState)
		}
		if p.gap > 0 {
			sessions[w.key] = append(sessions[w.key], w)
		} else {
			fixed[windowID{w.key, w.start.UnixNano()}] = w
		}
		if nextEnd.IsZero() || w.end.Before(nextEnd) {
			nextEnd = w.end
		}
	}
	if len(d.b) != 0 {
		return fmt.Errorf("%w: %d bytes left over", errWindowState, len(d.b))
	}
	for _, ss := range sessions {
		slices.SortFunc(ss, func(a, b *window) int { return a.start.Compare(b.start) })
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fixed, p.sessions, p.seen, p.maxEvent, p.nextEnd = fixed, sessions, seen, maxEvent, nextEnd
	return nil
}

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

// appendTime encodes a time as seconds and nanoseconds since the epoch
// (UTC: windows are reported in UTC), which covers every time.Time.
func appendTime(b []byte, t time.Time) []byte {
	if t.IsZero() {
		return append(b, 0)
	}
	b = append(b, 1)
	b = binary.AppendVarint(b, t.Unix())
	return binary.AppendUvarint(b, uint64(t.Nanosecond()))
}

func appendValue(b []byte, v any) ([]byte, error) {
	switch x := v.(type) {
	case nil:
		return append(b, tagNil), nil
	case float64:
		return binary.LittleEndian.AppendUint64(append(b, tagFloat), math.Float64bits(x)), nil
	case int64:
		return binary.AppendVarint(append(b, tagInt), x), nil
	case uint64:
		return binary.AppendUvarint(append(b, tagUint), x), nil
	case string:
		return appendString(append(b, tagString), x), nil
	case bool:
		return appendBool(append(b, tagBool), x), nil
	case time.Time:
		if x.IsZero() {
			// appendTime's zero: tagged so that it decodes as a value.
			return append(b, tagTime, 0), nil
		}
		return appendTime(append(b, tagTime), x), nil
	}
	j, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("window state: a %T value: %w", v, err)
	}
	return appendString(append(b, tagJSON), string(j)), nil
}

// stateDecoder reads the encoding, keeping the first error.
type stateDecoder struct {
	b   []byte
	err error
}

func (d *stateDecoder) fail() {
	if d.err == nil {
		d.err = errWindowState
	}
	d.b = nil
}

func (d *stateDecoder) byte() byte {
	if len(d.b) < 1 {
		d.fail()
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *stateDecoder) bool() bool {
	switch d.byte() {
	case 0:
		return false
	case 1:
		return true
	}
	d.fail()
	return false
}

func (d *stateDecoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *stateDecoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *stateDecoder) uint64() uint64 {
	if len(d.b) < 8 {
		d.fail()
		return 0
	}
	v := binary.LittleEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

func (d *stateDecoder) string() string {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail()
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

func (d *stateDecoder) time() time.Time {
	if !d.bool() {
		return time.Time{}
	}
	sec, nsec := d.varint(), d.uvarint()
	if nsec >= 1e9 {
		d.fail()
		return time.Time{}
	}
	return time.Unix(sec, int64(nsec)).UTC()
}

func (d *stateDecoder) value() any {
	switch d.byte() {
	case tagNil:
		return nil
	case tagFloat:
		return math.Float64frombits(d.uint64())
	case tagInt:
		return d.varint()
	case tagUint:
		return d.uvarint()
	case tagString:
		return d.string()
	case tagBool:
		return d.bool()
	case tagTime:
		return d.time()
	case tagJSON:
		var v any
		if err := json.Unmarshal([]byte(d.string()), &v); err != nil {
			d.fail()
		}
		return v
	}
	d.fail()
	return nil
}
