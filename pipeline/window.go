package pipeline

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/expr"
)

func init() {
	processors["window"] = func(_ context.Context, _ *Env, cfg *config.PipelineProcess) (Processor, error) {
		return newWindower(cfg.Window)
	}
}

// windower aggregates records by key over event-time windows.
//
// Windows are half-open intervals [start, end) of event time:
//
//   - tumbling (Size): consecutive windows of Size, aligned on the Unix
//     epoch (a 1h window starts on the hour, UTC);
//   - sliding (Size and Slide): windows of Size starting every Slide
//     (aligned on the epoch), so that a record falls in about Size/Slide
//     of them;
//   - session (Gap): a record opens the window [t, t+Gap) for its key;
//     windows of a key that overlap merge, so a session lasts while its
//     records come less than Gap apart, and ends Gap after its last one.
//     A record between two sessions that is within Gap of both merges
//     them.
//
// The watermark is the latest event time seen (over every key) less
// AllowedLateness. A window closes when the watermark reaches its end:
// Process returns the windows the record's advance of the watermark
// closed, ordered by end, start and key, one record each with fields
// key (text), window_start and window_end (RFC 3339 text, UTC) and the
// aggregates. A record absorbed into an open window yields no record (the
// runner counts it as filtered). A record all of whose windows have
// closed is late: it is refused (ErrRecord, so to the dead letter). A
// record out of order but within the lateness lands in its window as any
// other. For sliding windows, a record counts in those of its windows
// that are still open, and is late only if none is.
//
// Aggregates: count (records), and sum, avg, min, max, first, last of a
// CEL expression over row. sum and avg take numbers (JSON numbers are
// doubles) and yield doubles, ignoring nulls (avg is null when every
// value was); min and max take numbers, text or timestamps (values of
// different types order numbers before text before timestamps) and
// ignore nulls; first and last keep the value of the record with the
// earliest, latest event time (of equal times, the first, last read).
//
// End (the end of a batch run's input) emits every window still open,
// closed or not. Tick emits nothing: windows close on event time only,
// so an idle stream holds its last windows until records move the
// watermark on.
//
// Durability: open windows live in memory, and their state (State,
// Restore) is saved with the checkpoint of each batch, as of the record
// whose position that batch commits. A run that stops or is killed
// resumes with the windows as they were at its last checkpoint, and the
// input replays the records after it, so each record is counted once
// and, with an upsert output, the result is that of one run. Windows
// already emitted are as durable as the output.
type windower struct {
	key, time *expr.Program // key nil: one group
	size      time.Duration // tumbling and sliding
	slide     time.Duration // sliding; 0 when tumbling
	gap       time.Duration // session
	lateness  time.Duration
	aggs      []aggSpec

	mu       sync.Mutex
	fixed    map[windowID]*window // tumbling and sliding windows
	sessions map[string][]*window // session windows by key, by start
	maxEvent time.Time            // latest event time seen
	seen     bool                 // maxEvent is set
	// nextEnd is at most the earliest end of an open window: the
	// watermark must reach it for anything to close.
	nextEnd time.Time
	// vars and vals are Process's scratch (under mu).
	vars map[string]any
	vals []any
	// targets is addFixed's scratch: the windows a record lands in.
	targets []*window
}

type windowID struct {
	key   string
	start int64 // Unix nanoseconds
}

// aggSpec is one aggregate: the output field, the function, and its
// expression (nil for count).
type aggSpec struct {
	field string
	fn    string
	prg   *expr.Program
}

type window struct {
	key        string
	start, end time.Time
	accs       []accum
}

// accum is the state of one aggregate in one window.
type accum struct {
	n   int64   // records (count), values (sum, avg)
	sum float64 // sum, avg
	val any     // min, max, first, last
	at  time.Time
	set bool // val holds a value
}

func newWindower(w *config.WindowProcess) (*windower, error) {
	if w == nil {
		return nil, fmt.Errorf("window: no configuration")
	}
	p := &windower{size: w.Size.D(), slide: w.Slide.D(), gap: w.Gap.D(), lateness: w.AllowedLateness.D(),
		fixed: map[windowID]*window{}, sessions: map[string][]*window{}}
	switch {
	case p.size < 0 || p.slide < 0 || p.gap < 0 || p.lateness < 0:
		return nil, fmt.Errorf("window: size, slide, gap and allowed_lateness must not be negative")
	case p.gap > 0 && (p.size > 0 || p.slide > 0):
		return nil, fmt.Errorf("window: a window is tumbling (size), sliding (size and slide) or session (gap)")
	case p.gap == 0 && p.size == 0:
		return nil, fmt.Errorf("window: needs size, size and slide, or gap")
	case p.slide > p.size && p.size > 0 || p.slide > 0 && p.size == 0:
		return nil, fmt.Errorf("window: slide must be positive and at most size")
	case p.slide > 0 && (p.size+p.slide-1)/p.slide > config.MaxWindowsPerRecord:
		return nil, fmt.Errorf("window: size / slide puts each record in more than %d windows", config.MaxWindowsPerRecord)
	}
	if p.slide == p.size {
		p.slide = 0 // sliding by its size is tumbling
	}
	var err error
	if strings.TrimSpace(w.Key) != "" {
		if p.key, err = expr.Compile(w.Key); err != nil {
			return nil, fmt.Errorf("window: key: %w", err)
		}
	}
	if strings.TrimSpace(w.Time) == "" {
		return nil, fmt.Errorf("window: needs time, the record's event time")
	}
	if p.time, err = expr.Compile(w.Time); err != nil {
		return nil, fmt.Errorf("window: time: %w", err)
	}
	for _, f := range sortedKeys(w.Aggregates) {
		if slices.Contains(config.WindowFields, f) {
			return nil, fmt.Errorf("window: aggregate %q: every window record has that field", f)
		}
		fn, arg, err := config.ParseAggregate(w.Aggregates[f])
		if err != nil {
			return nil, fmt.Errorf("window: %s: %w", f, err)
		}
		a := aggSpec{field: f, fn: fn}
		if fn != "count" {
			if a.prg, err = expr.Compile(arg); err != nil {
				return nil, fmt.Errorf("window: %s: %w", f, err)
			}
		}
		p.aggs = append(p.aggs, a)
	}
	return p, nil
}

// watermark returns the current watermark (zero before any record).
func (p *windower) watermark() time.Time {
	if !p.seen {
		return time.Time{}
	}
	return p.maxEvent.Add(-p.lateness)
}

// closed says whether a window ending at end has closed.
func (p *windower) closed(end time.Time) bool {
	return p.seen && !end.After(p.watermark())
}

func (p *windower) Process(_ context.Context, r *Record) ([]*Record, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	// The variables and values are reused from record to record (under
	// the lock): the window keeps copies of what it needs.
	if p.vars == nil {
		p.vars = map[string]any{}
	}
	vars := p.vars
	vars["row"] = r.vars()
	key := ""
	if p.key != nil {
		k, err := p.key.EvalString(vars)
		if err != nil {
			return nil, fmt.Errorf("%w: window: key: %v", ErrRecord, err)
		}
		key = k
	}
	t, err := p.eventTime(vars)
	if err != nil {
		return nil, err
	}
	vals, err := p.values(vars)
	if err != nil {
		return nil, err
	}
	if p.gap > 0 {
		err = p.addSession(key, t, vals)
	} else {
		err = p.addFixed(key, t, vals)
	}
	if err != nil {
		return nil, err
	}
	if !p.seen || t.After(p.maxEvent) {
		p.maxEvent, p.seen = t, true
	}
	return p.closeUpTo(p.watermark(), false), nil
}

// Tick emits nothing: windows close on event time only.
func (p *windower) Tick(context.Context) ([]*Record, error) { return nil, nil }

// End emits every open window.
func (p *windower) End(context.Context) ([]*Record, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closeUpTo(time.Time{}, true), nil
}

func (p *windower) eventTime(vars map[string]any) (time.Time, error) {
	v, err := p.time.Eval(vars)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: window: time: %v", ErrRecord, err)
	}
	switch x := v.(type) {
	case time.Time:
		return x, nil
	case string:
		t, err := time.Parse(time.RFC3339Nano, x)
		if err != nil {
			return time.Time{}, fmt.Errorf("%w: window: time %q is not RFC 3339 text (as 2024-05-01T12:00:00Z)", ErrRecord, x)
		}
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%w: window: time yields %T, want a timestamp or RFC 3339 text", ErrRecord, v)
}

// values evaluates the aggregates' expressions over a record, checking
// their types, so that folding them in cannot fail.
func (p *windower) values(vars map[string]any) ([]any, error) {
	if p.vals == nil {
		p.vals = make([]any, len(p.aggs))
	}
	vals := p.vals
	for i, a := range p.aggs {
		if a.prg == nil {
			continue
		}
		v, err := a.prg.Eval(vars)
		if err != nil {
			return nil, fmt.Errorf("%w: window: %s: %v", ErrRecord, a.field, err)
		}
		switch a.fn {
		case "sum", "avg":
			if v != nil {
				f, ok := winFloat(v)
				if !ok {
					return nil, fmt.Errorf("%w: window: %s: %s of a %T, want a number", ErrRecord, a.field, a.fn, v)
				}
				v = asFloat(v, f)
			}
		case "min", "max":
			if f, ok := winFloat(v); ok {
				v = asFloat(v, f)
			} else {
				switch v.(type) {
				case nil, string, time.Time:
				default:
					return nil, fmt.Errorf("%w: window: %s: %s of a %T, want a number, text or a timestamp", ErrRecord, a.field, a.fn, v)
				}
			}
		}
		vals[i] = v
	}
	return vals, nil
}

// asFloat returns v, a number, as a float64 f: v itself when it is one
// already (boxing f again would allocate, once per record).
func asFloat(v any, f float64) any {
	if _, ok := v.(float64); ok {
		return v
	}
	return f
}

func winFloat(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case int64:
		return float64(x), true
	case uint64:
		return float64(x), true
	case int:
		return float64(x), true
	}
	return 0, false
}

// winAlign returns the start of the period of length d that holds t,
// periods being aligned on the Unix epoch.
func winAlign(t time.Time, d time.Duration) time.Time {
	n := t.UnixNano()
	m := n % int64(d)
	if m < 0 {
		m += int64(d)
	}
	return time.Unix(0, n-m).UTC()
}

func (p *windower) addFixed(key string, t time.Time, vals []any) error {
	// The windows holding t: tumbling, the one; sliding, those starting
	// at a multiple of slide in (t-size, t].
	step := p.slide
	if step == 0 {
		step = p.size
	}
	targets := p.targets[:0]
	lateEnd := time.Time{}
	for start := winAlign(t, step); start.Add(p.size).After(t); start = start.Add(-step) {
		end := start.Add(p.size)
		id := windowID{key, start.UnixNano()}
		if w := p.fixed[id]; w != nil {
			targets = append(targets, w)
			continue
		}
		if p.closed(end) {
			if lateEnd.IsZero() {
				lateEnd = end
			}
			continue
		}
		w := &window{key: key, start: start, end: end, accs: make([]accum, len(p.aggs))}
		p.fixed[id] = w
		p.noteEnd(end)
		targets = append(targets, w)
	}
	p.targets = targets[:0] // kept for the next record
	if len(targets) == 0 {
		return fmt.Errorf("%w: window: late record: event time %s is behind the watermark %s (its window ending %s was emitted)",
			ErrRecord, winFormat(t), winFormat(p.watermark()), winFormat(lateEnd))
	}
	for _, w := range targets {
		p.fold(w, t, vals)
	}
	return nil
}

func (p *windower) addSession(key string, t time.Time, vals []any) error {
	start, end := t, t.Add(p.gap)
	ss := p.sessions[key]
	// Open sessions overlapping [t, t+gap) merge with it.
	var merged *window
	kept := ss[:0:0]
	for _, s := range ss {
		if s.start.Before(end) && start.Before(s.end) {
			if merged == nil {
				merged = s
			} else {
				p.merge(merged, s)
			}
			continue
		}
		kept = append(kept, s)
	}
	if merged == nil {
		if p.closed(end) {
			return fmt.Errorf("%w: window: late record: event time %s is behind the watermark %s (its session would have ended %s)",
				ErrRecord, winFormat(t), winFormat(p.watermark()), winFormat(end))
		}
		merged = &window{key: key, start: start, end: end, accs: make([]accum, len(p.aggs))}
		p.noteEnd(end)
	}
	if start.Before(merged.start) {
		merged.start = start
	}
	if end.After(merged.end) {
		merged.end = end
	}
	p.fold(merged, t, vals)
	i, _ := slices.BinarySearchFunc(kept, merged, func(a, b *window) int { return a.start.Compare(b.start) })
	p.sessions[key] = slices.Insert(kept, i, merged)
	return nil
}

func (p *windower) noteEnd(end time.Time) {
	if p.nextEnd.IsZero() || end.Before(p.nextEnd) {
		p.nextEnd = end
	}
}

// fold adds one record's values to a window.
func (p *windower) fold(w *window, t time.Time, vals []any) {
	for i, a := range p.aggs {
		c := &w.accs[i]
		v := vals[i]
		switch a.fn {
		case "count":
			c.n++
		case "sum", "avg":
			if v != nil {
				c.n++
				c.sum += v.(float64)
			}
		case "min", "max":
			if v != nil && (!c.set || winBeats(a.fn, v, c.val)) {
				c.val, c.set = v, true
			}
		case "first":
			if !c.set || t.Before(c.at) {
				c.val, c.at, c.set = v, t, true
			}
		case "last":
			if !c.set || !t.Before(c.at) {
				c.val, c.at, c.set = v, t, true
			}
		}
	}
}

// merge folds session b into session a.
func (p *windower) merge(a, b *window) {
	if b.start.Before(a.start) {
		a.start = b.start
	}
	if b.end.After(a.end) {
		a.end = b.end
	}
	for i, s := range p.aggs {
		x, y := &a.accs[i], &b.accs[i]
		switch s.fn {
		case "count", "sum", "avg":
			x.n += y.n
			x.sum += y.sum
		case "min", "max":
			if y.set && (!x.set || winBeats(s.fn, y.val, x.val)) {
				x.val, x.set = y.val, true
			}
		case "first":
			if y.set && (!x.set || y.at.Before(x.at)) {
				*x = *y
			}
		case "last":
			if y.set && (!x.set || !y.at.Before(x.at)) {
				*x = *y
			}
		}
	}
}

// winBeats says whether v replaces cur as the min or max.
func winBeats(fn string, v, cur any) bool {
	c := winCompare(v, cur)
	if fn == "min" {
		return c < 0
	}
	return c > 0
}

// winCompare orders min/max values: numbers, then text, then
// timestamps.
func winCompare(a, b any) int {
	rank := func(v any) int {
		switch v.(type) {
		case float64:
			return 0
		case string:
			return 1
		}
		return 2
	}
	if ra, rb := rank(a), rank(b); ra != rb {
		return ra - rb
	}
	switch x := a.(type) {
	case float64:
		y := b.(float64)
		switch {
		case x < y:
			return -1
		case x > y:
			return 1
		}
		return 0
	case string:
		return strings.Compare(x, b.(string))
	case time.Time:
		return x.Compare(b.(time.Time))
	}
	return 0
}

// closeUpTo removes and returns the windows the watermark wm has closed,
// or all of them.
func (p *windower) closeUpTo(wm time.Time, all bool) []*Record {
	if !all && (p.nextEnd.IsZero() || wm.Before(p.nextEnd)) {
		return nil
	}
	var done []*window
	next := time.Time{}
	keep := func(end time.Time) bool {
		if all || !end.After(wm) {
			return false
		}
		if next.IsZero() || end.Before(next) {
			next = end
		}
		return true
	}
	for id, w := range p.fixed {
		if !keep(w.end) {
			done = append(done, w)
			delete(p.fixed, id)
		}
	}
	for k, ss := range p.sessions {
		kept := ss[:0]
		for _, s := range ss {
			if keep(s.end) {
				kept = append(kept, s)
			} else {
				done = append(done, s)
			}
		}
		if len(kept) == 0 {
			delete(p.sessions, k)
		} else {
			clear(ss[len(kept):])
			p.sessions[k] = kept
		}
	}
	p.nextEnd = next
	slices.SortFunc(done, func(a, b *window) int {
		if c := a.end.Compare(b.end); c != 0 {
			return c
		}
		if c := a.start.Compare(b.start); c != 0 {
			return c
		}
		return strings.Compare(a.key, b.key)
	})
	out := make([]*Record, len(done))
	for i, w := range done {
		out[i] = &Record{Fields: p.result(w)}
	}
	return out
}

func (p *windower) result(w *window) map[string]any {
	f := make(map[string]any, 3+len(p.aggs))
	f["key"] = w.key
	f["window_start"] = winFormat(w.start)
	f["window_end"] = winFormat(w.end)
	for i, a := range p.aggs {
		c := w.accs[i]
		switch a.fn {
		case "count":
			f[a.field] = c.n
		case "sum":
			f[a.field] = c.sum
		case "avg":
			if c.n == 0 {
				f[a.field] = nil
			} else {
				f[a.field] = c.sum / float64(c.n)
			}
		default:
			f[a.field] = c.val // nil when unset
		}
	}
	return f
}

func winFormat(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
