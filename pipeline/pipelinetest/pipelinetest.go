// Package pipelinetest is the conformance suite of pipeline inputs and
// outputs: it writes records with a connector's output and reads them
// back with its input, on a real service, checking the contracts of
// package pipeline (fields kept, order, commit and redelivery, waiting
// and cancellation).
package pipelinetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"github.com/junctionhq/junction/pipeline"
)

// Endpoint is one fresh place a connector pair meets (a topic, a queue, a
// stream, a directory): its output writes there and its inputs read from
// there.
type Endpoint struct {
	NewOutput func(t *testing.T) pipeline.Output
	// NewInput opens an input; resume is the position the previous input
	// of this endpoint committed last (nil for the first). Inputs opened
	// one after another share their consumer state (group, session,
	// queue), as the runs of one pipeline do.
	NewInput func(t *testing.T, resume json.RawMessage) pipeline.Input
}

// Kind describes a connector pair.
type Kind struct {
	Name string
	// Setup makes a fresh endpoint for one test, removed by t.Cleanup.
	Setup func(t *testing.T) Endpoint
	// Streaming inputs wait for records: Next returns no records within
	// about a second when there are none, and the context's error when it
	// ends. Other inputs are finite: Next returns io.EOF at their end, and
	// are opened after the records are written.
	Streaming bool
	// Unordered kinds may read records in another order than written.
	Unordered bool
	// Record is the i-th test record; the default has a string, integer,
	// real, boolean, null, list and object.
	Record func(i int) map[string]any
}

// Timeouts of the suite.
const (
	// IdleWait bounds a streaming input's Next when nothing arrives.
	IdleWait = 1500 * time.Millisecond
	// ReadWait bounds the reading of records written.
	ReadWait = 30 * time.Second
)

var (
	seq  atomic.Int64
	base = time.Now().UnixNano() % 1e9
)

// Name returns a name unique to this test process and call, for queues,
// topics, streams and groups: prefix_PID_T_N.
func Name(prefix string) string {
	return fmt.Sprintf("%s_%d_%d_%d", prefix, os.Getpid(), base, seq.Add(1))
}

// DefaultRecord is the i-th record of the suite.
func DefaultRecord(i int) map[string]any {
	return map[string]any{
		"n":     i,
		"name":  fmt.Sprintf("record %d: «ünïcode» \"quoted\"", i),
		"price": float64(i) + 0.25,
		"ok":    i%2 == 0,
		"none":  nil,
		"tags":  []any{"a", i},
		"obj":   map[string]any{"k": "v", "i": i},
	}
}

// Run runs the suite on a kind.
func Run(t *testing.T, k Kind) {
	if k.Record == nil {
		k.Record = DefaultRecord
	}
	t.Run("RoundTrip", func(t *testing.T) { roundTrip(t, k) })
	t.Run("Idle", func(t *testing.T) { idle(t, k) })
	if k.Streaming {
		t.Run("Cancel", func(t *testing.T) { cancel(t, k) })
	}
	t.Run("Redelivery", func(t *testing.T) { redelivery(t, k) })
	t.Run("Many", func(t *testing.T) { many(t, k) })
}

func records(k Kind, from, to int) []*pipeline.Record {
	var out []*pipeline.Record
	for i := from; i < to; i++ {
		out = append(out, &pipeline.Record{Fields: k.Record(i)})
	}
	return out
}

func write(t *testing.T, out pipeline.Output, recs []*pipeline.Record) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ReadWait)
	defer cancel()
	if err := out.Write(ctx, recs); err != nil {
		t.Fatalf("write %d records: %v", len(recs), err)
	}
}

func closeInput(t *testing.T, in pipeline.Input) {
	t.Helper()
	if err := in.Close(); err != nil {
		t.Errorf("closing the input: %v", err)
	}
}

// normal is a record's fields as JSON would carry them.
func normal(t *testing.T, m map[string]any) any {
	t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// reader reads an endpoint's records, knowing which ones by their "n".
type reader struct {
	t  *testing.T
	k  Kind
	in pipeline.Input
	// commit: commit each Next's last position (as the runner would).
	commit bool
}

// read reads until it has the records numbered in want (or, for finite
// inputs, until io.EOF), and returns what it read.
func (r reader) read(want map[int]bool) []*pipeline.Record {
	t := r.t
	t.Helper()
	deadline := time.Now().Add(ReadWait)
	var got []*pipeline.Record
	missing := len(want)
	seen := map[int]bool{}
	for missing > 0 || !r.k.Streaming {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: read %d records, %d of %d wanted still missing", ReadWait, len(got), missing, len(want))
		}
		recs, err := r.next(context.Background())
		if errors.Is(err, io.EOF) && !r.k.Streaming {
			break
		}
		if err != nil {
			t.Fatalf("next: %v", err)
		}
		for _, rec := range recs {
			got = append(got, rec)
			if n, ok := number(rec); ok && want[n] && !seen[n] {
				seen[n] = true
				missing--
			}
		}
		if r.commit && len(recs) > 0 {
			if err := r.in.Commit(context.Background(), recs[len(recs)-1].Position()); err != nil {
				t.Fatalf("commit: %v", err)
			}
		}
	}
	return got
}

// next calls Next, checking that it returns in time and that its records
// have positions.
func (r reader) next(ctx context.Context) ([]*pipeline.Record, error) {
	t := r.t
	t.Helper()
	start := time.Now()
	recs, err := r.in.Next(ctx)
	if d := time.Since(start); r.k.Streaming && d > IdleWait {
		t.Errorf("Next took %v: a streaming input returns within about 500ms", d.Round(time.Millisecond))
	}
	for _, rec := range recs {
		if len(rec.Position()) == 0 {
			t.Fatalf("record %v has no position", rec.Map())
		}
		if !json.Valid(rec.Position()) {
			t.Fatalf("record %v: position %q is not JSON", rec.Map(), rec.Position())
		}
	}
	return recs, err
}

// drain reads until Next returns no records (streaming) or io.EOF, and
// returns what came.
func (r reader) drain() []*pipeline.Record {
	t := r.t
	t.Helper()
	var got []*pipeline.Record
	deadline := time.Now().Add(ReadWait)
	for time.Now().Before(deadline) {
		recs, err := r.next(context.Background())
		if errors.Is(err, io.EOF) && !r.k.Streaming {
			return got
		}
		if err != nil {
			t.Fatalf("next: %v", err)
		}
		if len(recs) == 0 && r.k.Streaming {
			return got
		}
		got = append(got, recs...)
	}
	t.Fatalf("the input kept returning records for %v", ReadWait)
	return nil
}

func number(rec *pipeline.Record) (int, bool) {
	switch n := rec.Map()["n"].(type) {
	case float64:
		return int(n), true
	case int64:
		return int(n), true
	case int:
		return n, true
	case json.Number:
		i, err := n.Int64()
		return int(i), err == nil
	case string:
		var i int
		_, err := fmt.Sscan(n, &i)
		return i, err == nil
	}
	return 0, false
}

func numbers(recs []*pipeline.Record) []int {
	out := make([]int, 0, len(recs))
	for _, r := range recs {
		n, _ := number(r)
		out = append(out, n)
	}
	return out
}

func span(from, to int) map[int]bool {
	m := map[int]bool{}
	for i := from; i < to; i++ {
		m[i] = true
	}
	return m
}

// check compares the records read to those numbered from..to-1: each
// exactly once (in order unless the kind is unordered) with the same
// fields.
func check(t *testing.T, k Kind, got []*pipeline.Record, from, to int) {
	t.Helper()
	ns := numbers(got)
	want := make([]int, 0, to-from)
	for i := from; i < to; i++ {
		want = append(want, i)
	}
	if !k.Unordered && !reflect.DeepEqual(ns, want) {
		t.Fatalf("read records %v, want %v in order", ns, want)
	}
	if len(ns) != len(want) {
		t.Fatalf("read %d records %v, want %d: %v", len(ns), ns, len(want), want)
	}
	byN := map[int]*pipeline.Record{}
	for _, r := range got {
		n, _ := number(r)
		if byN[n] != nil {
			t.Fatalf("record %d read twice", n)
		}
		byN[n] = r
	}
	for _, i := range want {
		r := byN[i]
		if r == nil {
			t.Fatalf("record %d missing: read %v", i, ns)
		}
		if g, w := normal(t, r.Map()), normal(t, k.Record(i)); !reflect.DeepEqual(g, w) {
			t.Fatalf("record %d: read\n%s\nwant\n%s", i, js(g), js(w))
		}
	}
}

func js(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// roundTrip: records written in two batches come back with their fields,
// in order.
func roundTrip(t *testing.T, k Kind) {
	ep := k.Setup(t)
	var in pipeline.Input
	if k.Streaming {
		in = ep.NewInput(t, nil)
		defer closeInput(t, in)
	}
	out := ep.NewOutput(t)
	write(t, out, records(k, 0, 5))
	write(t, out, records(k, 5, 10))
	if err := out.Close(); err != nil {
		t.Fatalf("closing the output: %v", err)
	}
	if !k.Streaming {
		in = ep.NewInput(t, nil)
		defer closeInput(t, in)
	}
	r := reader{t: t, k: k, in: in}
	got := r.read(span(0, 10))
	got = append(got, r.drain()...)
	check(t, k, got, 0, 10)
}

// idle: with nothing to read, a streaming input's Next returns no records
// in time, again and again; a finite one ends.
func idle(t *testing.T, k Kind) {
	ep := k.Setup(t)
	if !k.Streaming {
		// A finite input over an endpoint its output wrote nothing to.
		in := ep.NewInput(t, nil)
		defer closeInput(t, in)
		recs, err := in.Next(context.Background())
		if !errors.Is(err, io.EOF) || len(recs) > 0 {
			t.Fatalf("next on nothing: %d records, %v; want io.EOF", len(recs), err)
		}
		return
	}
	in := ep.NewInput(t, nil)
	defer closeInput(t, in)
	r := reader{t: t, k: k, in: in}
	for range 3 {
		recs, err := r.next(context.Background())
		if err != nil || len(recs) > 0 {
			t.Fatalf("next on nothing: %d records, %v; want none and no error", len(recs), err)
		}
	}
}

// cancel: the end of the context ends Next, whether it ended before the
// call or during it.
func cancel(t *testing.T, k Kind) {
	ep := k.Setup(t)
	in := ep.NewInput(t, nil)
	defer closeInput(t, in)
	ctx, stop := context.WithCancel(context.Background())
	stop()
	if _, err := in.Next(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("next with a cancelled context: %v, want context.Canceled", err)
	}
	ctx, stop = context.WithCancel(context.Background())
	defer stop()
	timer := time.AfterFunc(100*time.Millisecond, stop)
	defer timer.Stop()
	start := time.Now()
	for {
		_, err := in.Next(ctx)
		if errors.Is(err, context.Canceled) {
			break
		}
		if err != nil {
			t.Fatalf("next cancelled while waiting: %v, want context.Canceled", err)
		}
		if time.Since(start) > IdleWait {
			t.Fatalf("next went on %v after its context was cancelled", time.Since(start).Round(time.Millisecond))
		}
	}
	ctx, stop = context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer stop()
	start = time.Now()
	for {
		_, err := in.Next(ctx)
		if errors.Is(err, context.DeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatalf("next past its deadline: %v, want context.DeadlineExceeded", err)
		}
		if time.Since(start) > IdleWait {
			t.Fatalf("next went on %v after its deadline", time.Since(start).Round(time.Millisecond))
		}
	}
}

// redelivery: after a commit in the middle, a new input gets the records
// after it (at least once) and not those up to it; after a commit of the
// last, a new input gets nothing.
func redelivery(t *testing.T, k Kind) {
	ep := k.Setup(t)
	var in pipeline.Input
	if k.Streaming {
		in = ep.NewInput(t, nil)
	}
	out := ep.NewOutput(t)
	write(t, out, records(k, 0, 10))
	if err := out.Close(); err != nil {
		t.Fatalf("closing the output: %v", err)
	}
	if !k.Streaming {
		in = ep.NewInput(t, nil)
	}
	r := reader{t: t, k: k, in: in}
	got := r.read(span(0, 10))
	check(t, k, got, 0, 10)
	ctx := context.Background()
	pos := got[3].Position()
	if err := in.Commit(ctx, pos); err != nil {
		t.Fatalf("commit: %v", err)
	}
	// The runner may commit the same position again (a flush of records
	// a processor emitted on its own): that is harmless.
	if err := in.Commit(ctx, pos); err != nil {
		t.Fatalf("second commit of the same position: %v", err)
	}
	closeInput(t, in)

	in = ep.NewInput(t, pos)
	r = reader{t: t, k: k, in: in}
	got = r.read(span(4, 10))
	got = append(got, r.drain()...)
	if ns := numbers(got); len(ns) > 0 && ns[0] < 4 {
		t.Fatalf("after committing record 3, a new input read %v: committed records again", ns)
	}
	check(t, k, got, 4, 10)
	last := got[len(got)-1].Position()
	if err := in.Commit(ctx, last); err != nil {
		t.Fatalf("commit: %v", err)
	}
	closeInput(t, in)

	in = ep.NewInput(t, last)
	defer closeInput(t, in)
	r = reader{t: t, k: k, in: in}
	if got := r.drain(); len(got) > 0 {
		t.Fatalf("after committing every record, a new input read %v", numbers(got))
	}
}

// many: more records than one Next returns, written in several batches
// and read committing as the runner does, all come back in order.
func many(t *testing.T, k Kind) {
	const n, per = 600, 200
	ep := k.Setup(t)
	var in pipeline.Input
	if k.Streaming {
		in = ep.NewInput(t, nil)
		defer closeInput(t, in)
	}
	out := ep.NewOutput(t)
	for i := 0; i < n; i += per {
		write(t, out, records(k, i, i+per))
	}
	if err := out.Close(); err != nil {
		t.Fatalf("closing the output: %v", err)
	}
	if !k.Streaming {
		in = ep.NewInput(t, nil)
		defer closeInput(t, in)
	}
	r := reader{t: t, k: k, in: in, commit: true}
	got := r.read(span(0, n))
	got = append(got, r.drain()...)
	check(t, k, got, 0, n)
}
