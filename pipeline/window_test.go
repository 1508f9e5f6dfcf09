package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/junctionhq/junction/config"
)

// winAt is a time of the test day, from "hh:mm:ss" or "hh:mm".
func winAt(hms string) string {
	if strings.Count(hms, ":") == 1 {
		hms += ":00"
	}
	return "2024-01-01T" + hms + "Z"
}

// winShow renders a window record compactly: key [start,end) and the
// aggregates in name order.
func winShow(r *Record) string {
	short := func(v any) string { return strings.TrimSuffix(strings.TrimPrefix(v.(string), "2024-01-01T"), "Z") }
	var b strings.Builder
	fmt.Fprintf(&b, "%s [%s,%s)", r.Fields["key"], short(r.Fields["window_start"]), short(r.Fields["window_end"]))
	for _, k := range sortedKeys(r.Fields) {
		if k == "key" || k == "window_start" || k == "window_end" {
			continue
		}
		v := r.Fields[k]
		if t, ok := v.(time.Time); ok {
			v = t.UTC().Format("15:04:05")
		}
		fmt.Fprintf(&b, " %s=%v", k, v)
	}
	return b.String()
}

func winShowAll(recs []*Record) []string {
	out := []string{}
	for _, r := range recs {
		out = append(out, winShow(r))
	}
	return out
}

type winStep struct {
	fields  map[string]any
	want    []string // windows emitted
	wantErr string   // the record is refused with this in its error
}

// winRun feeds steps to a window processor, then checks what End emits.
func winRun(t *testing.T, cfg *config.WindowProcess, steps []winStep, wantEnd []string) {
	t.Helper()
	p, err := newWindower(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i, s := range steps {
		out, err := p.Process(ctx, &Record{Fields: s.fields})
		if s.wantErr != "" {
			if err == nil || !errors.Is(err, ErrRecord) || !strings.Contains(err.Error(), s.wantErr) {
				t.Fatalf("step %d %v: error %v, want a record error with %q", i, s.fields, err, s.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("step %d %v: %v", i, s.fields, err)
		}
		if got, want := winShowAll(out), append([]string{}, s.want...); !slices.Equal(got, want) {
			t.Fatalf("step %d %v: emitted\n%q\nwant\n%q", i, s.fields, got, want)
		}
	}
	if tk, err := p.Tick(ctx); err != nil || len(tk) != 0 {
		t.Fatalf("Tick = %v, %v; want nothing", tk, err)
	}
	out, err := p.End(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := winShowAll(out), append([]string{}, wantEnd...); !slices.Equal(got, want) {
		t.Fatalf("End emitted\n%q\nwant\n%q", got, want)
	}
	if out, _ := p.End(ctx); len(out) != 0 {
		t.Fatalf("a second End emitted %q", winShowAll(out))
	}
}

func winRec(k, at string) map[string]any { return map[string]any{"k": k, "at": winAt(at)} }

func TestWindowTumbling(t *testing.T) {
	count := map[string]string{"n": "count"}
	tests := []struct {
		name    string
		cfg     config.WindowProcess
		steps   []winStep
		wantEnd []string
	}{
		{
			name: "out of order within lateness lands in its window",
			cfg:  config.WindowProcess{Key: "row.k", Time: "row.at", Size: config.Duration(time.Minute), AllowedLateness: config.Duration(30 * time.Second), Aggregates: count},
			steps: []winStep{
				{fields: winRec("a", "00:00:10")},
				{fields: winRec("a", "00:00:50")},
				{fields: winRec("a", "00:01:10")},                                              // watermark 00:00:40
				{fields: winRec("a", "00:00:55")},                                              // late by event time, within lateness
				{fields: winRec("a", "00:01:40"), want: []string{"a [00:00:00,00:01:00) n=3"}}, // watermark 00:01:10
				{fields: winRec("a", "00:00:20"), wantErr: "late record"},
				{fields: winRec("a", "00:01:05")}, // behind the max, but its window is open
			},
			wantEnd: []string{"a [00:01:00,00:02:00) n=3"},
		},
		{
			name: "without lateness a window closes when the watermark reaches its end",
			cfg:  config.WindowProcess{Key: "row.k", Time: "row.at", Size: config.Duration(time.Minute), Aggregates: count},
			steps: []winStep{
				{fields: winRec("a", "00:00:00")},
				{fields: winRec("a", "00:00:59.999")},
				{fields: winRec("a", "00:01:00"), want: []string{"a [00:00:00,00:01:00) n=2"}},
				{fields: winRec("a", "00:00:30"), wantErr: "late record"},
			},
			wantEnd: []string{"a [00:01:00,00:02:00) n=1"},
		},
		{
			name: "keys have their own windows and one watermark",
			cfg:  config.WindowProcess{Key: "row.k", Time: "row.at", Size: config.Duration(time.Minute), Aggregates: count},
			steps: []winStep{
				{fields: winRec("b", "00:00:05")},
				{fields: winRec("a", "00:00:10")},
				{fields: winRec("a", "00:00:20")},
				{fields: winRec("c", "00:02:00"), want: []string{"a [00:00:00,00:01:00) n=2", "b [00:00:00,00:01:00) n=1"}},
				// A window that never had a record closed with the
				// watermark too: its record is late.
				{fields: winRec("b", "00:01:30"), wantErr: "late record"},
			},
			wantEnd: []string{"c [00:02:00,00:03:00) n=1"},
		},
		{
			name: "an empty key makes one group; windows align on the epoch",
			cfg:  config.WindowProcess{Time: "row.at", Size: config.Duration(time.Hour), Aggregates: count},
			steps: []winStep{
				{fields: winRec("a", "10:59")},
				{fields: winRec("b", "10:01")},
				{fields: winRec("c", "11:00"), want: []string{" [10:00:00,11:00:00) n=2"}},
			},
			wantEnd: []string{" [11:00:00,12:00:00) n=1"},
		},
		{
			name: "a timestamp and a non-text key",
			cfg:  config.WindowProcess{Key: "row.n", Time: "timestamp(row.at)", Size: config.Duration(time.Minute), Aggregates: count},
			steps: []winStep{
				{fields: map[string]any{"n": 1.0, "at": winAt("00:00:01")}},
				{fields: map[string]any{"n": 1.0, "at": winAt("00:00:02")}},
			},
			wantEnd: []string{"1 [00:00:00,00:01:00) n=2"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { winRun(t, &tt.cfg, tt.steps, tt.wantEnd) })
	}
}

func TestWindowSliding(t *testing.T) {
	count := map[string]string{"n": "count"}
	tests := []struct {
		name    string
		cfg     config.WindowProcess
		steps   []winStep
		wantEnd []string
	}{
		{
			name:    "a record is in size/slide windows",
			cfg:     config.WindowProcess{Key: "row.k", Time: "row.at", Size: config.Duration(10 * time.Minute), Slide: config.Duration(5 * time.Minute), Aggregates: count},
			steps:   []winStep{{fields: winRec("a", "00:07")}},
			wantEnd: []string{"a [00:00:00,00:10:00) n=1", "a [00:05:00,00:15:00) n=1"},
		},
		{
			name: "three windows, closing one at a time",
			cfg:  config.WindowProcess{Key: "row.k", Time: "row.at", Size: config.Duration(3 * time.Minute), Slide: config.Duration(time.Minute), Aggregates: count},
			steps: []winStep{
				{fields: winRec("a", "00:02:30")},
				{fields: winRec("a", "00:03:10"), want: []string{"a [00:00:00,00:03:00) n=1"}},
				{fields: winRec("a", "00:04:00"), want: []string{"a [00:01:00,00:04:00) n=2"}},
			},
			wantEnd: []string{"a [00:02:00,00:05:00) n=3", "a [00:03:00,00:06:00) n=2", "a [00:04:00,00:07:00) n=1"},
		},
		{
			name: "a record counts in its open windows and is late only when all closed",
			cfg:  config.WindowProcess{Key: "row.k", Time: "row.at", Size: config.Duration(10 * time.Minute), Slide: config.Duration(5 * time.Minute), Aggregates: count},
			steps: []winStep{
				{fields: winRec("a", "00:20"), want: nil},
				{fields: winRec("a", "00:12"), wantErr: "late record"},
				{fields: winRec("a", "00:16")},
			},
			wantEnd: []string{"a [00:15:00,00:25:00) n=2", "a [00:20:00,00:30:00) n=1"},
		},
		{
			name:    "a slide that does not divide the size",
			cfg:     config.WindowProcess{Time: "row.at", Size: config.Duration(10 * time.Minute), Slide: config.Duration(4 * time.Minute), Aggregates: count},
			steps:   []winStep{{fields: winRec("a", "00:09")}},
			wantEnd: []string{" [00:00:00,00:10:00) n=1", " [00:04:00,00:14:00) n=1", " [00:08:00,00:18:00) n=1"},
		},
		{
			name:    "slide equal to size is tumbling",
			cfg:     config.WindowProcess{Time: "row.at", Size: config.Duration(10 * time.Minute), Slide: config.Duration(10 * time.Minute), Aggregates: count},
			steps:   []winStep{{fields: winRec("a", "00:09")}},
			wantEnd: []string{" [00:00:00,00:10:00) n=1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { winRun(t, &tt.cfg, tt.steps, tt.wantEnd) })
	}
}

func TestWindowSession(t *testing.T) {
	aggs := map[string]string{"n": "count", "first": "first(row.at)", "last": "last(row.at)"}
	gap := config.Duration(10 * time.Minute)
	tests := []struct {
		name    string
		cfg     config.WindowProcess
		steps   []winStep
		wantEnd []string
	}{
		{
			name: "a session extends while records come within the gap",
			cfg:  config.WindowProcess{Key: "row.k", Time: "row.at", Gap: gap, Aggregates: map[string]string{"n": "count"}},
			steps: []winStep{
				{fields: winRec("a", "00:00")},
				{fields: winRec("a", "00:09")},
				{fields: winRec("a", "00:18")},
				{fields: winRec("a", "00:28"), want: []string{"a [00:00:00,00:28:00) n=3"}}, // exactly the gap: a new session
			},
			wantEnd: []string{"a [00:28:00,00:38:00) n=1"},
		},
		{
			name: "a record bridging two sessions merges them",
			cfg:  config.WindowProcess{Key: "row.k", Time: "row.at", Gap: gap, AllowedLateness: config.Duration(30 * time.Minute), Aggregates: aggs},
			steps: []winStep{
				{fields: winRec("a", "00:00")},
				{fields: winRec("a", "00:15")},
				{fields: winRec("b", "00:07")},
				{fields: winRec("a", "00:07")}, // within the gap of both
				{fields: winRec("a", "01:00"), want: []string{
					// By end: b's ends first.
					"b [00:07:00,00:17:00) first=2024-01-01T00:07:00Z last=2024-01-01T00:07:00Z n=1",
					"a [00:00:00,00:25:00) first=2024-01-01T00:00:00Z last=2024-01-01T00:15:00Z n=3",
				}},
			},
			wantEnd: []string{"a [01:00:00,01:10:00) first=2024-01-01T01:00:00Z last=2024-01-01T01:00:00Z n=1"},
		},
		{
			name: "a record before a session within the gap extends it backwards",
			cfg:  config.WindowProcess{Key: "row.k", Time: "row.at", Gap: gap, AllowedLateness: config.Duration(time.Hour), Aggregates: aggs},
			steps: []winStep{
				{fields: winRec("a", "00:30")},
				{fields: winRec("a", "00:21")},
				{fields: winRec("a", "00:05")}, // a session of its own
			},
			wantEnd: []string{
				"a [00:05:00,00:15:00) first=2024-01-01T00:05:00Z last=2024-01-01T00:05:00Z n=1",
				"a [00:21:00,00:40:00) first=2024-01-01T00:21:00Z last=2024-01-01T00:30:00Z n=2",
			},
		},
		{
			name: "a record inside an open session is absorbed behind the watermark; one opening a closed session is late",
			cfg:  config.WindowProcess{Key: "row.k", Time: "row.at", Gap: gap, AllowedLateness: config.Duration(5 * time.Minute), Aggregates: map[string]string{"n": "count"}},
			steps: []winStep{
				{fields: winRec("a", "00:00")},
				{fields: winRec("a", "00:08")},                                              // a: [00:00, 00:18)
				{fields: winRec("b", "00:20")},                                              // watermark 00:15
				{fields: winRec("a", "00:01")},                                              // behind the watermark, inside a's open session
				{fields: winRec("c", "00:02"), wantErr: "late record"},                      // would end 00:12, behind the watermark
				{fields: winRec("b", "00:23"), want: []string{"a [00:00:00,00:18:00) n=3"}}, // watermark 00:18
			},
			wantEnd: []string{"b [00:20:00,00:33:00) n=2"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { winRun(t, &tt.cfg, tt.steps, tt.wantEnd) })
	}
}

func TestWindowAggregates(t *testing.T) {
	aggs := map[string]string{
		"n":      "count",
		"n2":     "count()",
		"total":  "sum(row.amount)",
		"mean":   "avg(row.amount)",
		"lo":     "min(row.amount)",
		"hi":     "max( row.amount )",
		"first":  "first(row.name)",
		"last":   "last(row.name)",
		"lo_txt": "min(row.name)",
		"hi_txt": "max(row.name)",
		"lo_ts":  "min(timestamp(row.at))",
		"none":   "avg(row.missing)",
	}
	rec := func(at string, amount any, name string) map[string]any {
		return map[string]any{"at": winAt(at), "amount": amount, "name": name, "missing": nil}
	}
	// Read order differs from event order; 00:50 comes twice (of equal
	// times, last keeps the one read last); one amount is null.
	recs := []map[string]any{rec("00:30", 4.0, "b"), rec("00:10", -2.0, "d"), rec("00:50", 10.0, "c"), rec("00:20", nil, "a"), rec("00:50", 0.0, "e")}
	tests := []struct {
		name string
		cfg  config.WindowProcess
		recs []map[string]any
		want string
	}{
		{"tumbling", config.WindowProcess{Key: "'k'", Time: "row.at", Size: config.Duration(time.Hour), Aggregates: aggs}, recs,
			"k [00:00:00,01:00:00) first=d hi=10 hi_txt=e last=e lo=-2 lo_ts=00:10:00 lo_txt=a mean=3 n=5 n2=5 none=<nil> total=12"},
		// With a gap of 11m the records make sessions at 00:30, 00:10 and
		// 00:50; 00:20 merges the first two, and 00:40 that one with
		// 00:50's: merged aggregates must be what folding gives.
		{"session", config.WindowProcess{Key: "'k'", Time: "row.at", Gap: config.Duration(11 * time.Minute), AllowedLateness: config.Duration(time.Hour), Aggregates: aggs},
			append(slices.Clone(recs), rec("00:40", 1.0, "a")),
			"k [00:10:00,01:01:00) first=d hi=10 hi_txt=e last=e lo=-2 lo_ts=00:10:00 lo_txt=a mean=2.6 n=6 n2=6 none=<nil> total=13"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var steps []winStep
			for _, r := range tt.recs {
				steps = append(steps, winStep{fields: r})
			}
			winRun(t, &tt.cfg, steps, []string{tt.want})
		})
	}
}

func TestWindowRecordErrors(t *testing.T) {
	cfg := &config.WindowProcess{Key: "row.k", Time: "row.at", Size: config.Duration(time.Minute),
		Aggregates: map[string]string{"s": "sum(row.v)", "m": "min(row.v)"}}
	tests := []struct {
		name   string
		fields map[string]any
		want   string
	}{
		{"time not RFC 3339", map[string]any{"k": "a", "at": "yesterday", "v": 1.0}, "not RFC 3339"},
		{"time of another type", map[string]any{"k": "a", "at": 12.0, "v": 1.0}, "want a timestamp"},
		{"time missing", map[string]any{"k": "a", "v": 1.0}, "window: time"},
		{"key fails", map[string]any{"at": winAt("00:00"), "v": 1.0}, "window: key"},
		{"sum of text", map[string]any{"k": "a", "at": winAt("00:00"), "v": "x"}, "want a number"},
		{"min of a list", map[string]any{"k": "a", "at": winAt("00:00"), "v": []any{1.0}}, "want a number, text or a timestamp"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := newWindower(cfg)
			if err != nil {
				t.Fatal(err)
			}
			_, err = p.Process(context.Background(), &Record{Fields: tt.fields})
			if !errors.Is(err, ErrRecord) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want a record error with %q", err, tt.want)
			}
			if out, _ := p.End(context.Background()); len(out) != 0 {
				t.Fatalf("a refused record made windows: %q", winShowAll(out))
			}
		})
	}
}

func TestWindowConfigErrors(t *testing.T) {
	m := config.Duration(time.Minute)
	tests := []struct {
		name string
		cfg  config.WindowProcess
		want string
	}{
		{"no time", config.WindowProcess{Size: m}, "needs time"},
		{"no shape", config.WindowProcess{Time: "row.at"}, "needs size"},
		{"size and gap", config.WindowProcess{Time: "row.at", Size: m, Gap: m}, "tumbling"},
		{"slide above size", config.WindowProcess{Time: "row.at", Size: m, Slide: 2 * m}, "at most size"},
		{"slide without size", config.WindowProcess{Time: "row.at", Slide: m}, "needs size"},
		{"too many windows", config.WindowProcess{Time: "row.at", Size: 2000 * m, Slide: m}, "more than 1000"},
		{"negative lateness", config.WindowProcess{Time: "row.at", Size: m, AllowedLateness: -m}, "negative"},
		{"bad aggregate", config.WindowProcess{Time: "row.at", Size: m, Aggregates: map[string]string{"x": "median(row.a)"}}, "unknown function"},
		{"bad aggregate CEL", config.WindowProcess{Time: "row.at", Size: m, Aggregates: map[string]string{"x": "sum(row.)"}}, "x:"},
		{"reserved field", config.WindowProcess{Time: "row.at", Size: m, Aggregates: map[string]string{"key": "count"}}, "every window record"},
		{"bad key", config.WindowProcess{Key: "row.", Time: "row.at", Size: m}, "key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := newWindower(&tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one with %q", err, tt.want)
			}
		})
	}
}

// winInput hands out its records in one read, then io.EOF.
type winInput struct {
	recs []*Record
	done bool
}

func (in *winInput) Next(context.Context) ([]*Record, error) {
	if in.done {
		return nil, io.EOF
	}
	in.done = true
	return in.recs, nil
}
func (in *winInput) Commit(context.Context, json.RawMessage) error { return nil }
func (in *winInput) Close() error                                  { return nil }

// winOutput keeps what it is given.
type winOutput struct{ recs []*Record }

func (o *winOutput) Write(_ context.Context, recs []*Record) error {
	o.recs = append(o.recs, recs...)
	return nil
}
func (o *winOutput) Close() error { return nil }

// TestWindowInRun runs a window through the runner: closed windows and
// those End flushes reach the output, late records the dead letter.
func TestWindowInRun(t *testing.T) {
	p, err := newWindower(&config.WindowProcess{Key: "row.k", Time: "row.at", Size: config.Duration(time.Minute),
		Aggregates: map[string]string{"n": "count", "total": "sum(row.v)"}})
	if err != nil {
		t.Fatal(err)
	}
	var in winInput
	for i, r := range [][3]any{{"a", "00:00:10", 1.0}, {"b", "00:00:20", 2.0}, {"a", "00:01:30", 3.0}, {"a", "00:00:40", 4.0}, {"a", "00:01:40", 5.0}} {
		in.recs = append(in.recs, &Record{Fields: map[string]any{"k": r[0], "at": winAt(r[1].(string)), "v": r[2]}, Pos: json.RawMessage(fmt.Sprint(i))})
	}
	out, dead := &winOutput{}, &winOutput{}
	r := &runner{in: &in, procs: []Processor{p}, outs: []Output{out}, dead: dead, start: time.Now()}
	if err := r.run(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := []string{"a [00:00:00,00:01:00) n=1 total=1", "b [00:00:00,00:01:00) n=1 total=2", "a [00:01:00,00:02:00) n=2 total=8"}
	if got := winShowAll(out.recs); !slices.Equal(got, want) {
		t.Fatalf("output\n%q\nwant\n%q", got, want)
	}
	if len(dead.recs) != 1 || dead.recs[0].Fields["v"] != 4.0 || !strings.Contains(dead.recs[0].Err.Error(), "late record") {
		t.Fatalf("dead letters %v", dead.recs)
	}
	if r.c.Read != 5 || r.c.Written != 3 || r.c.DeadLettered != 1 {
		t.Fatalf("counters %+v", r.c)
	}
}
