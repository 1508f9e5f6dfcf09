package pipeline

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/junctionhq/junction/config"
)

// TestWindowStateRestores: a window processor restored from the state of
// another, part way through its records, emits exactly what the other
// does for the rest, for every kind of window and aggregate (values of
// every type included).
func TestWindowStateRestores(t *testing.T) {
	aggs := map[string]string{
		"n": "count", "total": "sum(row.v)", "mean": "avg(row.v)", "lo": "min(row.v)", "hi": "max(row.name)",
		"lo_ts": "min(timestamp(row.at))", "first": "first(row.obj)", "last": "last(row.i)", "flag": "last(row.flag)",
		"none": "first(row.missing)",
	}
	m := config.Duration(time.Minute)
	cfgs := map[string]config.WindowProcess{
		"tumbling":  {Key: "row.k", Time: "row.at", Size: m, AllowedLateness: m, Aggregates: aggs},
		"sliding":   {Key: "row.k", Time: "row.at", Size: 3 * m, Slide: m, Aggregates: aggs},
		"session":   {Key: "row.k", Time: "row.at", Gap: 2 * m, AllowedLateness: m, Aggregates: aggs},
		"one group": {Time: "row.at", Size: 5 * m, Aggregates: map[string]string{"n": "count"}},
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var recs []map[string]any
	for i := range 400 {
		// Mostly in order, some up to 90s out of it (some late), with a
		// pause every 50 records (sessions end).
		at := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(i)*3*time.Second + time.Duration(i/50)*5*time.Minute -
			time.Duration(rng.IntN(90))*time.Second)
		recs = append(recs, map[string]any{
			"k": fmt.Sprintf("k%d", rng.IntN(4)), "at": at.Format(time.RFC3339Nano), "v": float64(rng.IntN(100)) / 4,
			"name": fmt.Sprintf("n%03d", rng.IntN(1000)), "i": int64(i), "flag": i%2 == 0,
			"obj": map[string]any{"i": float64(i), "tags": []any{"x", "y"}}, "missing": nil,
		})
	}
	for name, cfg := range cfgs {
		t.Run(name, func(t *testing.T) {
			for _, cut := range []int{0, 1, 57, 200, 399} {
				a, b := mustWindower(t, &cfg), mustWindower(t, &cfg)
				feed := func(p *windower, recs []map[string]any) []string {
					var out []string
					for _, f := range recs {
						o, err := p.Process(context.Background(), &Record{Fields: f})
						if err != nil {
							out = append(out, "refused: "+err.Error())
						}
						out = append(out, winShowAll(o)...)
					}
					end, _ := p.End(context.Background())
					return append(out, winShowAll(end)...)
				}
				for _, f := range recs[:cut] {
					a.Process(context.Background(), &Record{Fields: f})
				}
				st, err := a.State()
				if err != nil {
					t.Fatal(err)
				}
				if err := b.Restore(st); err != nil {
					t.Fatalf("cut %d: %v", cut, err)
				}
				want, got := feed(a, recs[cut:]), feed(b, recs[cut:])
				if !slices.Equal(got, want) {
					t.Fatalf("cut %d: restored processor emitted\n%q\nwant\n%q", cut, got, want)
				}
				if cut == 200 && len(want) < 10 {
					t.Fatalf("only %d windows: the test checks too little", len(want))
				}
			}
		})
	}

	t.Run("the watermark survives", func(t *testing.T) {
		cfg := &config.WindowProcess{Key: "row.k", Time: "row.at", Size: m, Aggregates: map[string]string{"n": "count"}}
		a := mustWindower(t, cfg)
		a.Process(context.Background(), &Record{Fields: map[string]any{"k": "a", "at": winAt("00:05")}})
		st, err := a.State()
		if err != nil {
			t.Fatal(err)
		}
		b := mustWindower(t, cfg)
		if err := b.Restore(st); err != nil {
			t.Fatal(err)
		}
		// Behind the watermark (00:05) for its only window: late, for
		// the restored processor as for the one that saw 00:05.
		late := map[string]any{"k": "b", "at": winAt("00:00:30")}
		for name, p := range map[string]*windower{"original": a, "restored": b} {
			if _, err := p.Process(context.Background(), &Record{Fields: late}); err == nil {
				t.Errorf("%s: a late record was taken", name)
			}
		}
	})

	t.Run("a state fits only its configuration", func(t *testing.T) {
		a := mustWindower(t, &config.WindowProcess{Key: "row.k", Time: "row.at", Size: m, Aggregates: map[string]string{"n": "count"}})
		a.Process(context.Background(), &Record{Fields: map[string]any{"k": "a", "at": winAt("00:00:10")}})
		st, err := a.State()
		if err != nil {
			t.Fatal(err)
		}
		for _, other := range []config.WindowProcess{
			{Key: "row.k", Time: "row.at", Size: 2 * m, Aggregates: map[string]string{"n": "count"}},
			{Key: "row.k", Time: "row.at", Size: m, Aggregates: map[string]string{"n": "sum(row.v)"}},
			{Time: "row.at", Size: m, Aggregates: map[string]string{"n": "count"}},
		} {
			if err := mustWindower(t, &other).Restore(st); err == nil || !strings.Contains(err.Error(), "another configuration") {
				t.Errorf("%+v: error %v", other, err)
			}
		}
		for i := range st {
			if err := mustWindower(t, &config.WindowProcess{Key: "row.k", Time: "row.at", Size: m, Aggregates: map[string]string{"n": "count"}}).Restore(st[:i]); err == nil {
				t.Fatalf("a state cut at %d of %d bytes restored", i, len(st))
			}
		}
	})
}

func mustWindower(t testing.TB, cfg *config.WindowProcess) *windower {
	t.Helper()
	p, err := newWindower(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// FuzzWindowState: any bytes either restore or are refused, without
// panicking, and a state that restores encodes again.
func FuzzWindowState(f *testing.F) {
	cfg := &config.WindowProcess{Key: "row.k", Time: "row.at", Gap: config.Duration(time.Minute),
		Aggregates: map[string]string{"n": "count", "s": "sum(row.v)", "f": "first(row.x)"}}
	p := mustWindower(f, cfg)
	for i, x := range []any{"a", 1.5, int64(-3), map[string]any{"a": []any{true}}, nil} {
		p.Process(context.Background(), &Record{Fields: map[string]any{"k": fmt.Sprint(i % 2), "at": winAt(fmt.Sprintf("00:0%d", i)), "v": 2.0, "x": x}})
		st, err := p.State()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(st)
	}
	f.Fuzz(func(t *testing.T, st []byte) {
		q := mustWindower(t, cfg)
		if err := q.Restore(st); err != nil {
			return
		}
		if _, err := q.State(); err != nil {
			t.Fatalf("a restored state does not encode: %v", err)
		}
		q.Process(context.Background(), &Record{Fields: map[string]any{"k": "0", "at": winAt("00:10"), "v": 1.0, "x": "z"}})
		q.End(context.Background())
	})
}
