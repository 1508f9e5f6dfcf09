// Package eventstoretest is the conformance suite every event store backend
// must pass.
package eventstoretest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/junctionhq/junction/eventstore"
)

// Opener opens a store on the storage one test was given. Each call
// returns a new store on that same storage, which sees everything earlier
// ones wrote, as a store opened after a restart does. now is the store's
// clock, the one retention's MaxAge is measured against.
type Opener func(t *testing.T, now func() time.Time) eventstore.Store

// Run runs the suite; newStore returns an Opener on fresh, empty storage
// for one test. The suite closes the stores it opens.
func Run(t *testing.T, newStore func(t *testing.T) Opener) {
	opener := func(t *testing.T) Opener {
		o := newStore(t)
		return func(t *testing.T, now func() time.Time) eventstore.Store {
			t.Helper()
			s := o(t, now)
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Errorf("close: %v", err)
				}
			})
			return s
		}
	}
	open := func(t *testing.T) eventstore.Store { return opener(t)(t, time.Now) }
	tests := []struct {
		name string
		fn   func(t *testing.T, s eventstore.Store)
	}{
		{"AppendAndRead", testAppendAndRead},
		{"ReadRanges", testReadRanges},
		{"ReadMissing", testReadMissing},
		{"ExpectedVersion", testExpectedVersion},
		{"Invalid", testInvalid},
		{"AtomicAppend", testAtomic},
		{"Idempotent", testIdempotent},
		{"IDReused", testIDReused},
		{"ReadAll", testReadAll},
		{"Delete", testDelete},
		{"ConcurrentAppend", testConcurrentAppend},
		{"ReadAllWhileWriting", testReadAllWhileWriting},
		{"Follow", testFollow},
		{"FollowStream", testFollowStream},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open(t)) })
	}
	retention := []struct {
		name string
		fn   func(t *testing.T, open Opener)
	}{
		{"RetentionMaxCount", testRetentionMaxCount},
		{"RetentionMaxAge", testRetentionMaxAge},
		{"RetentionBeforeStream", testRetentionBeforeStream},
		{"RetentionScavenge", testRetentionScavenge},
		{"RetentionDelete", testRetentionDelete},
		{"RetentionInvalid", testRetentionInvalid},
		{"TwoStores", testTwoStores},
	}
	for _, tc := range retention {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, opener(t)) })
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func ev(typ string, n int) eventstore.EventData {
	return eventstore.EventData{Type: typ, Data: fmt.Appendf(nil, `{"n":%d}`, n)}
}

func evs(typ string, n int) []eventstore.EventData {
	out := make([]eventstore.EventData, n)
	for i := range out {
		out[i] = ev(typ, i)
	}
	return out
}

func mustAppend(t *testing.T, s eventstore.Store, stream string, exp eventstore.ExpectedVersion, e []eventstore.EventData) eventstore.AppendResult {
	t.Helper()
	r, err := s.Append(ctxT(t), stream, exp, e)
	if err != nil {
		t.Fatalf("append %s: %v", stream, err)
	}
	return r
}

func versions(e []eventstore.Event) []uint64 {
	out := make([]uint64, len(e))
	for i := range e {
		out[i] = e[i].Version
	}
	return out
}

func testAppendAndRead(t *testing.T, s eventstore.Store) {
	ctx := ctxT(t)
	in := []eventstore.EventData{
		{ID: "a1", Type: "Created", Data: []byte(`{"name": "x", "b": [1, 2]}`), Metadata: []byte(`{"user":"u1"}`)},
		{Type: "Renamed", Data: []byte(`{"name":"y"}`)},
	}
	before := time.Now().Add(-time.Minute)
	r := mustAppend(t, s, "order-1", eventstore.NoStream, in)
	if r.FirstVersion != 0 || r.LastVersion != 1 || r.Position == 0 {
		t.Fatalf("result %+v", r)
	}
	got, err := s.ReadStream(ctx, "order-1", eventstore.ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("read %d events", len(got))
	}
	for i, e := range got {
		if e.Stream != "order-1" || e.Version != uint64(i) || e.Type != in[i].Type || !bytes.Equal(e.Data, in[i].Data) || !bytes.Equal(e.Metadata, in[i].Metadata) {
			t.Errorf("event %d: %+v", i, e)
		}
		if e.Time.Before(before) || e.Time.After(time.Now().Add(time.Minute)) {
			t.Errorf("event %d: time %v", i, e.Time)
		}
	}
	if got[0].ID != "a1" || got[1].ID == "" {
		t.Errorf("ids %q %q", got[0].ID, got[1].ID)
	}
	if got[1].Metadata != nil {
		t.Errorf("nil metadata read as %q", got[1].Metadata)
	}
	if got[1].Position != r.Position || got[0].Position >= got[1].Position {
		t.Errorf("positions %d %d, result %d", got[0].Position, got[1].Position, r.Position)
	}
	r2 := mustAppend(t, s, "order-1", 1, evs("More", 1))
	if r2.FirstVersion != 2 || r2.LastVersion != 2 || r2.Position <= r.Position {
		t.Errorf("second result %+v after %+v", r2, r)
	}
}

func testReadRanges(t *testing.T, s eventstore.Store) {
	ctx := ctxT(t)
	mustAppend(t, s, "acct-1", eventstore.NoStream, evs("E", 10))
	seq := func(from, to int) []uint64 { // inclusive, either direction
		var out []uint64
		for v := from; ; {
			out = append(out, uint64(v))
			if v == to {
				return out
			}
			if from < to {
				v++
			} else {
				v--
			}
		}
	}
	cases := []struct {
		name string
		o    eventstore.ReadOptions
		want []uint64
	}{
		{"all forward", eventstore.ReadOptions{}, seq(0, 9)},
		{"from", eventstore.ReadOptions{From: 4}, seq(4, 9)},
		{"from and limit", eventstore.ReadOptions{From: 2, Limit: 3}, seq(2, 4)},
		{"limit beyond end", eventstore.ReadOptions{From: 8, Limit: 5}, seq(8, 9)},
		{"past the end", eventstore.ReadOptions{From: 10}, nil},
		{"backward from end", eventstore.ReadOptions{From: math.MaxUint64, Backward: true}, seq(9, 0)},
		{"backward from end limit", eventstore.ReadOptions{From: math.MaxUint64, Limit: 3, Backward: true}, seq(9, 7)},
		{"backward from", eventstore.ReadOptions{From: 5, Backward: true}, seq(5, 0)},
		{"backward from limit", eventstore.ReadOptions{From: 5, Limit: 2, Backward: true}, seq(5, 4)},
		{"backward from beyond end", eventstore.ReadOptions{From: 100, Limit: 1, Backward: true}, seq(9, 9)},
		{"backward from zero", eventstore.ReadOptions{From: 0, Backward: true}, seq(0, 0)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := s.ReadStream(ctx, "acct-1", c.o)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(versions(got), c.want) {
				t.Errorf("versions %v, want %v", versions(got), c.want)
			}
			for _, e := range got {
				if !bytes.Equal(e.Data, fmt.Appendf(nil, `{"n":%d}`, e.Version)) {
					t.Errorf("version %d has data %s", e.Version, e.Data)
				}
			}
		})
	}
}

func testReadMissing(t *testing.T, s eventstore.Store) {
	_, err := s.ReadStream(ctxT(t), "nothing-here", eventstore.ReadOptions{})
	if !errors.Is(err, eventstore.ErrStreamNotFound) {
		t.Errorf("read missing stream: %v", err)
	}
	if err := s.Delete(ctxT(t), "nothing-here"); !errors.Is(err, eventstore.ErrStreamNotFound) {
		t.Errorf("delete missing stream: %v", err)
	}
}

func testExpectedVersion(t *testing.T, s eventstore.Store) {
	ctx := ctxT(t)
	// "existing" has versions 0..2 before each case.
	cases := []struct {
		name     string
		existing bool
		expected eventstore.ExpectedVersion
		ok       bool
		current  int64
	}{
		{"any on new", false, eventstore.Any, true, -1},
		{"any on existing", true, eventstore.Any, true, 2},
		{"no_stream on new", false, eventstore.NoStream, true, -1},
		{"no_stream on existing", true, eventstore.NoStream, false, 2},
		{"exists on new", false, eventstore.StreamExists, false, -1},
		{"exists on existing", true, eventstore.StreamExists, true, 2},
		{"exact right", true, 2, true, 2},
		{"exact behind", true, 1, false, 2},
		{"exact ahead", true, 3, false, 2},
		{"exact zero on new", false, 0, false, -1},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			stream := fmt.Sprintf("ev-%d", i)
			if c.existing {
				mustAppend(t, s, stream, eventstore.NoStream, evs("E", 3))
			}
			r, err := s.Append(ctx, stream, c.expected, evs("F", 2))
			if c.ok {
				if err != nil {
					t.Fatalf("append: %v", err)
				}
				if want := uint64(c.current + 1); r.FirstVersion != want || r.LastVersion != want+1 {
					t.Errorf("result %+v, want first version %d", r, want)
				}
				return
			}
			var ve *eventstore.VersionError
			if !errors.Is(err, eventstore.ErrWrongVersion) || !errors.As(err, &ve) {
				t.Fatalf("append: %v, want a VersionError", err)
			}
			if ve.Current != c.current || ve.Expected != c.expected || ve.Stream != stream {
				t.Errorf("VersionError %+v, want current %d", ve, c.current)
			}
			got, err := s.ReadStream(ctx, stream, eventstore.ReadOptions{})
			if c.existing {
				if err != nil || len(got) != 3 {
					t.Errorf("after failed append: %d events, %v", len(got), err)
				}
			} else if !errors.Is(err, eventstore.ErrStreamNotFound) {
				t.Errorf("after failed append to new stream: %v", err)
			}
		})
	}
}

func testInvalid(t *testing.T, s eventstore.Store) {
	ctx := ctxT(t)
	long := string(bytes.Repeat([]byte("a"), 201))
	cases := []struct {
		name   string
		stream string
		events []eventstore.EventData
	}{
		{"no events", "ok-1", nil},
		{"empty stream name", "", evs("E", 1)},
		{"stream name with $", "$all", evs("E", 1)},
		{"stream name with space", "a b", evs("E", 1)},
		{"stream name with slash", "a/b", evs("E", 1)},
		{"stream name too long", long, evs("E", 1)},
		{"missing type", "ok-1", []eventstore.EventData{{Data: []byte(`{}`)}}},
		{"data not json", "ok-1", []eventstore.EventData{{Type: "E", Data: []byte(`{`)}}},
		{"metadata not json", "ok-1", []eventstore.EventData{{Type: "E", Data: []byte(`{}`), Metadata: []byte(`nope`)}}},
		{"duplicate id in batch", "ok-1", []eventstore.EventData{{ID: "x", Type: "E", Data: []byte(`1`)}, {ID: "x", Type: "E", Data: []byte(`2`)}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := s.Append(ctx, c.stream, eventstore.Any, c.events); !errors.Is(err, eventstore.ErrInvalid) {
				t.Errorf("append: %v, want ErrInvalid", err)
			}
		})
	}
	if all, err := s.ReadAll(ctx, eventstore.ReadAllOptions{}); err != nil || len(all) != 0 {
		t.Errorf("invalid appends wrote %d events (%v)", len(all), err)
	}
	if !eventstore.ValidStreamName("Order-1_a.b:c") || eventstore.ValidStreamName(long) || !eventstore.ValidStreamName(long[1:]) {
		t.Error("ValidStreamName")
	}
}

func testAtomic(t *testing.T, s eventstore.Store) {
	ctx := ctxT(t)
	mustAppend(t, s, "other-1", eventstore.NoStream, []eventstore.EventData{{ID: "taken", Type: "E", Data: []byte(`{}`)}})
	// The third event's id exists in another stream, so the whole append
	// must fail and leave nothing behind.
	batch := evs("E", 5)
	batch[2].ID = "taken"
	if _, err := s.Append(ctx, "atom-1", eventstore.Any, batch); err == nil {
		t.Fatal("append with a reused id succeeded")
	}
	if _, err := s.ReadStream(ctx, "atom-1", eventstore.ReadOptions{}); !errors.Is(err, eventstore.ErrStreamNotFound) {
		t.Errorf("after failed append: %v", err)
	}
	r := mustAppend(t, s, "atom-1", eventstore.NoStream, evs("E", 250))
	if r.FirstVersion != 0 || r.LastVersion != 249 {
		t.Errorf("result %+v", r)
	}
	all, err := s.ReadAll(ctx, eventstore.ReadAllOptions{Categories: []string{"atom"}})
	if err != nil || len(all) != 250 || all[249].Position != r.Position {
		t.Fatalf("read all: %d events, %v", len(all), err)
	}
	for i := 1; i < len(all); i++ {
		if all[i].Position <= all[i-1].Position || all[i].Version != uint64(i) {
			t.Fatalf("event %d: version %d position %d after %d", i, all[i].Version, all[i].Position, all[i-1].Position)
		}
	}
}

func testIdempotent(t *testing.T, s eventstore.Store) {
	ctx := ctxT(t)
	mustAppend(t, s, "idem-1", eventstore.NoStream, evs("First", 1))
	batch := []eventstore.EventData{
		{ID: "i1", Type: "E", Data: []byte(`1`)},
		{ID: "i2", Type: "E", Data: []byte(`2`)},
	}
	r1 := mustAppend(t, s, "idem-1", 0, batch)
	mustAppend(t, s, "idem-1", 2, evs("Later", 1))
	for _, exp := range []eventstore.ExpectedVersion{0, eventstore.Any, eventstore.NoStream, 7} {
		r2, err := s.Append(ctx, "idem-1", exp, batch)
		if err != nil || r2 != r1 {
			t.Errorf("retry with expected %v: %+v, %v; want %+v", exp, r2, err, r1)
		}
	}
	got, err := s.ReadStream(ctx, "idem-1", eventstore.ReadOptions{})
	if err != nil || len(got) != 4 {
		t.Errorf("stream has %d events (%v), want 4", len(got), err)
	}
	// A single-event retry is also a retry.
	r3, err := s.Append(ctx, "idem-1", eventstore.Any, batch[1:])
	if err != nil || r3.FirstVersion != 2 || r3.LastVersion != 2 || r3.Position != r1.Position {
		t.Errorf("retry of the second event: %+v, %v", r3, err)
	}
}

func testIDReused(t *testing.T, s eventstore.Store) {
	ctx := ctxT(t)
	mustAppend(t, s, "reuse-1", eventstore.NoStream, []eventstore.EventData{
		{ID: "r1", Type: "E", Data: []byte(`1`)},
		{ID: "r2", Type: "E", Data: []byte(`2`)},
		{ID: "r3", Type: "E", Data: []byte(`3`)},
	})
	cases := []struct {
		name   string
		stream string
		ids    []string
	}{
		{"some new", "reuse-1", []string{"r1", "new"}},
		{"other order", "reuse-1", []string{"r2", "r1"}},
		{"not consecutive", "reuse-1", []string{"r1", "r3"}},
		{"other stream", "reuse-2", []string{"r1", "r2"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var batch []eventstore.EventData
			for _, id := range c.ids {
				batch = append(batch, eventstore.EventData{ID: id, Type: "E", Data: []byte(`0`)})
			}
			if _, err := s.Append(ctx, c.stream, eventstore.Any, batch); !errors.Is(err, eventstore.ErrInvalid) {
				t.Errorf("append: %v, want ErrInvalid", err)
			}
		})
	}
	if all, _ := s.ReadAll(ctx, eventstore.ReadAllOptions{}); len(all) != 3 {
		t.Errorf("log has %d events, want 3", len(all))
	}
}

func testReadAll(t *testing.T, s eventstore.Store) {
	ctx := ctxT(t)
	type w struct {
		stream, typ string
	}
	writes := []w{{"order-1", "Placed"}, {"user-1", "Joined"}, {"order-2", "Placed"}, {"order-1", "Paid"}, {"invoice", "Issued"}, {"user-1", "Left"}, {"order-x-y", "Placed"}}
	var results []eventstore.AppendResult
	for i, x := range writes {
		results = append(results, mustAppend(t, s, x.stream, eventstore.Any, []eventstore.EventData{ev(x.typ, i)}))
	}
	all, err := s.ReadAll(ctx, eventstore.ReadAllOptions{})
	if err != nil || len(all) != len(writes) {
		t.Fatalf("read all: %d, %v", len(all), err)
	}
	for i, e := range all {
		if e.Stream != writes[i].stream || e.Type != writes[i].typ || e.Position != results[i].Position {
			t.Errorf("event %d: %s %s @%d, want %v @%d", i, e.Stream, e.Type, e.Position, writes[i], results[i].Position)
		}
		if i > 0 && e.Position <= all[i-1].Position {
			t.Errorf("position %d after %d", e.Position, all[i-1].Position)
		}
	}
	idx := func(e []eventstore.Event) []int {
		var out []int
		for _, x := range e {
			out = append(out, slices.IndexFunc(all, func(a eventstore.Event) bool { return a.Position == x.Position }))
		}
		return out
	}
	cases := []struct {
		name string
		o    eventstore.ReadAllOptions
		want []int
	}{
		{"from first", eventstore.ReadAllOptions{From: all[0].Position}, []int{0, 1, 2, 3, 4, 5, 6}},
		{"from middle", eventstore.ReadAllOptions{From: all[3].Position}, []int{3, 4, 5, 6}},
		{"from after end", eventstore.ReadAllOptions{From: all[6].Position + 1}, nil},
		{"limit", eventstore.ReadAllOptions{Limit: 2}, []int{0, 1}},
		{"from and limit", eventstore.ReadAllOptions{From: all[2].Position, Limit: 3}, []int{2, 3, 4}},
		{"category", eventstore.ReadAllOptions{Categories: []string{"order"}}, []int{0, 2, 3, 6}},
		{"category without dash", eventstore.ReadAllOptions{Categories: []string{"invoice"}}, []int{4}},
		{"categories", eventstore.ReadAllOptions{Categories: []string{"user", "invoice"}}, []int{1, 4, 5}},
		{"unknown category", eventstore.ReadAllOptions{Categories: []string{"ord"}}, nil},
		{"type", eventstore.ReadAllOptions{Types: []string{"Placed"}}, []int{0, 2, 6}},
		{"types", eventstore.ReadAllOptions{Types: []string{"Paid", "Left"}}, []int{3, 5}},
		{"category and type", eventstore.ReadAllOptions{Categories: []string{"order"}, Types: []string{"Paid", "Joined"}}, []int{3}},
		{"filter with limit", eventstore.ReadAllOptions{Categories: []string{"order"}, Limit: 2, From: all[1].Position}, []int{2, 3}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := s.ReadAll(ctx, c.o)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(idx(got), c.want) {
				t.Errorf("got events %v, want %v", idx(got), c.want)
			}
		})
	}
	if eventstore.Category("order-x-y") != "order" || eventstore.Category("invoice") != "invoice" {
		t.Error("Category")
	}
}

func testDelete(t *testing.T, s eventstore.Store) {
	ctx := ctxT(t)
	mustAppend(t, s, "cart-1", eventstore.NoStream, evs("E", 3))
	if err := s.Delete(ctx, "cart-1"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "cart-1"); err != nil {
		t.Errorf("second delete: %v", err)
	}
	if _, err := s.ReadStream(ctx, "cart-1", eventstore.ReadOptions{}); !errors.Is(err, eventstore.ErrStreamDeleted) {
		t.Errorf("read deleted: %v", err)
	}
	var ve *eventstore.VersionError
	if _, err := s.Append(ctx, "cart-1", 2, evs("E", 1)); !errors.As(err, &ve) || ve.Current != -1 {
		t.Errorf("exact version on deleted stream: %v", err)
	}
	if _, err := s.Append(ctx, "cart-1", eventstore.StreamExists, evs("E", 1)); !errors.As(err, &ve) || ve.Current != -1 {
		t.Errorf("exists on deleted stream: %v", err)
	}
	r := mustAppend(t, s, "cart-1", eventstore.NoStream, evs("Again", 2))
	if r.FirstVersion != 3 || r.LastVersion != 4 {
		t.Errorf("re-append result %+v, want versions 3..4", r)
	}
	got, err := s.ReadStream(ctx, "cart-1", eventstore.ReadOptions{})
	if err != nil || !slices.Equal(versions(got), []uint64{3, 4}) {
		t.Errorf("read re-started stream: %v, %v", versions(got), err)
	}
	got, err = s.ReadStream(ctx, "cart-1", eventstore.ReadOptions{From: math.MaxUint64, Backward: true})
	if err != nil || !slices.Equal(versions(got), []uint64{4, 3}) {
		t.Errorf("read re-started stream backward: %v, %v", versions(got), err)
	}
	mustAppend(t, s, "cart-1", 4, evs("More", 1))
	// Any also restarts a deleted stream.
	if err := s.Delete(ctx, "cart-1"); err != nil {
		t.Fatal(err)
	}
	r = mustAppend(t, s, "cart-1", eventstore.Any, evs("Again", 1))
	if r.FirstVersion != 6 {
		t.Errorf("append with any after delete: %+v", r)
	}
	if got, err := s.ReadStream(ctx, "cart-1", eventstore.ReadOptions{}); err != nil || !slices.Equal(versions(got), []uint64{6}) {
		t.Errorf("read: %v, %v", versions(got), err)
	}
}

func testConcurrentAppend(t *testing.T, s eventstore.Store) {
	ctx := ctxT(t)
	const writers, each = 20, 10
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			expected := eventstore.NoStream
			for n := 0; n < each; {
				_, err := s.Append(ctx, "race-1", expected, []eventstore.EventData{{
					ID: fmt.Sprintf("g%d-n%d", g, n), Type: "E", Data: fmt.Appendf(nil, `{"g":%d,"n":%d}`, g, n),
				}})
				var ve *eventstore.VersionError
				switch {
				case err == nil:
					n++
					// Let the next append learn the version from a conflict
					// or from winning: assume we are still last.
					if expected == eventstore.NoStream {
						expected = 0
					} else {
						expected++
					}
				case errors.As(err, &ve):
					expected = eventstore.ExpectedVersion(ve.Current)
					if ve.Current < 0 {
						expected = eventstore.NoStream
					}
				default:
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	got, err := s.ReadStream(ctx, "race-1", eventstore.ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != writers*each {
		t.Fatalf("%d events, want %d", len(got), writers*each)
	}
	seen := map[string]bool{}
	for i, e := range got {
		if e.Version != uint64(i) {
			t.Fatalf("event %d has version %d", i, e.Version)
		}
		if i > 0 && e.Position <= got[i-1].Position {
			t.Fatalf("version %d at position %d after %d", i, e.Position, got[i-1].Position)
		}
		if seen[string(e.Data)] {
			t.Fatalf("%s written twice", e.Data)
		}
		seen[string(e.Data)] = true
	}
	for g := range writers {
		for n := range each {
			if !seen[fmt.Sprintf(`{"g":%d,"n":%d}`, g, n)] {
				t.Errorf("writer %d event %d missing", g, n)
			}
		}
	}
}

func testReadAllWhileWriting(t *testing.T, s eventstore.Store) {
	ctx := ctxT(t)
	const writers, each = 4, 40
	done := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range each {
				// Mix single and multi-event appends over a few streams.
				batch := []eventstore.EventData{ev("E", n)}
				if n%3 == 0 {
					batch = append(batch, ev("F", n))
				}
				if _, err := s.Append(ctx, fmt.Sprintf("w%d-%d", g, n%3), eventstore.Any, batch); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	go func() { wg.Wait(); close(done) }()

	var seen []eventstore.Event
	var next uint64
	read := func() {
		got, err := s.ReadAll(ctx, eventstore.ReadAllOptions{From: next, Limit: 17})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range got {
			if e.Position < next {
				t.Fatalf("position %d below %d already passed", e.Position, next)
			}
			seen = append(seen, e)
			next = e.Position + 1
		}
	}
	for finished := false; !finished; {
		select {
		case <-done:
			finished = true
		default:
		}
		read()
	}
	for { // drain what was committed after the last read
		n := len(seen)
		read()
		if len(seen) == n {
			break
		}
	}
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	final, err := s.ReadAll(ctx, eventstore.ReadAllOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(final) != len(seen) {
		t.Fatalf("incremental reads saw %d events, the final log has %d", len(seen), len(final))
	}
	for i := range final {
		if final[i].Position != seen[i].Position || final[i].ID != seen[i].ID {
			t.Fatalf("event %d: read %d/%s, log has %d/%s", i, seen[i].Position, seen[i].ID, final[i].Position, final[i].ID)
		}
	}
	if want := writers * (each + (each+2)/3); len(final) != want {
		t.Errorf("log has %d events, want %d", len(final), want)
	}
}

var errEnough = errors.New("enough events")

// follow runs eventstore.FollowAll from o until it has seen n events,
// checking that positions strictly increase and no event comes twice.
func follow(ctx context.Context, s eventstore.Store, o eventstore.ReadAllOptions, n int) ([]eventstore.Event, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var got []eventstore.Event
	ids := map[string]bool{}
	err := eventstore.FollowAll(ctx, s, o, func(e eventstore.Event) error {
		if len(got) > 0 && e.Position <= got[len(got)-1].Position {
			return fmt.Errorf("position %d after %d", e.Position, got[len(got)-1].Position)
		}
		if ids[e.ID] {
			return fmt.Errorf("event %s delivered twice", e.ID)
		}
		ids[e.ID] = true
		got = append(got, e)
		if len(got) == n {
			return errEnough
		}
		return nil
	})
	if !errors.Is(err, errEnough) {
		return got, fmt.Errorf("following from %d: %v after %d of %d events", o.From, err, len(got), n)
	}
	return got, nil
}

func mustFollow(t *testing.T, ctx context.Context, s eventstore.Store, o eventstore.ReadAllOptions, n int) []eventstore.Event {
	t.Helper()
	got, err := follow(ctx, s, o, n)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

type followed struct {
	got []eventstore.Event
	err error
}

func testFollow(t *testing.T, s eventstore.Store) {
	ctx := ctxT(t)
	const writers, each = 3, 100
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	result := make(chan followed, 1)
	go func() {
		got, err := follow(ctx, s, eventstore.ReadAllOptions{}, writers*each)
		result <- followed{got, err}
	}()
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < each; {
				// Appends of 1 to 4 events over a few streams.
				var batch []eventstore.EventData
				for k := 0; k <= n%4 && n < each; k++ {
					batch = append(batch, eventstore.EventData{ID: fmt.Sprintf("f%d-%d", g, n), Type: "E", Data: []byte(`{}`)})
					n++
				}
				if _, err := s.Append(ctx, fmt.Sprintf("fol%d-%d", g, n%3), eventstore.Any, batch); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	f := <-result
	if f.err != nil {
		t.Fatal(f.err)
	}
	got := f.got
	log, err := s.ReadAll(ctx, eventstore.ReadAllOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(log) != len(got) {
		t.Fatalf("followed %d events, the log has %d", len(got), len(log))
	}
	for i := range log {
		if log[i].Position != got[i].Position || log[i].ID != got[i].ID {
			t.Fatalf("event %d: followed %d/%s, log has %d/%s", i, got[i].Position, got[i].ID, log[i].Position, log[i].ID)
		}
	}
	for g := range writers {
		for n := range each {
			if !slices.ContainsFunc(got, func(e eventstore.Event) bool { return e.ID == fmt.Sprintf("f%d-%d", g, n) }) {
				t.Errorf("event f%d-%d not followed", g, n)
			}
		}
	}

	// Following from a middle position starts there, then goes on live.
	mid := got[len(got)/2]
	tail := make(chan followed, 1)
	go func() {
		got, err := follow(ctx, s, eventstore.ReadAllOptions{From: mid.Position}, len(got)-len(got)/2+1)
		tail <- followed{got, err}
	}()
	r := mustAppend(t, s, "fol-live", eventstore.Any, []eventstore.EventData{{ID: "live", Type: "E", Data: []byte(`{}`)}})
	f = <-tail
	if f.err != nil {
		t.Fatal(f.err)
	}
	rest := f.got
	if rest[0].ID != mid.ID {
		t.Fatalf("following from position %d started at %d/%s", mid.Position, rest[0].Position, rest[0].ID)
	}
	if last := rest[len(rest)-1]; last.ID != "live" || last.Position != r.Position {
		t.Fatalf("last event followed: %d/%s, want the live append at %d", last.Position, last.ID, r.Position)
	}

	// Filters apply while following.
	typed := mustFollow(t, ctx, s, eventstore.ReadAllOptions{Categories: []string{"fol"}, Types: []string{"E"}}, 1)
	if typed[0].Stream != "fol-live" {
		t.Fatalf("category fol: followed %s", typed[0].Stream)
	}
}

func testFollowStream(t *testing.T, s eventstore.Store) {
	ctx, cancel := context.WithTimeout(ctxT(t), 30*time.Second)
	defer cancel()
	mustAppend(t, s, "fs-1", eventstore.NoStream, evs("E", 5))
	mustAppend(t, s, "fs-2", eventstore.NoStream, evs("E", 2))
	res := make(chan followed, 1)
	seen := make(chan struct{}, 10)
	go func() {
		var got []eventstore.Event
		err := eventstore.FollowStream(ctx, s, "fs-1", 3, func(e eventstore.Event) error {
			got = append(got, e)
			seen <- struct{}{}
			return nil
		})
		res <- followed{got, err}
	}()
	wait := func(n int) {
		t.Helper()
		for range n {
			select {
			case <-seen:
			case r := <-res:
				t.Fatalf("follow ended early: %v after %v", r.err, versions(r.got))
			}
		}
	}
	wait(2)
	mustAppend(t, s, "fs-1", 4, evs("F", 2))
	mustAppend(t, s, "fs-2", eventstore.Any, evs("F", 1))
	wait(2)
	if err := s.Delete(ctx, "fs-1"); err != nil {
		t.Fatal(err)
	}
	r := <-res
	if !errors.Is(r.err, eventstore.ErrStreamDeleted) {
		t.Fatalf("follow ended with %v, want ErrStreamDeleted", r.err)
	}
	if v := versions(r.got); !slices.Equal(v, []uint64{3, 4, 5, 6}) {
		t.Fatalf("followed versions %v, want [3 4 5 6]", v)
	}
	for _, e := range r.got {
		if e.Stream != "fs-1" {
			t.Fatalf("followed an event of %s", e.Stream)
		}
	}
	err := eventstore.FollowStream(ctx, s, "fs-1", 0, func(eventstore.Event) error { return nil })
	if !errors.Is(err, eventstore.ErrStreamDeleted) {
		t.Fatalf("following a deleted stream: %v, want ErrStreamDeleted", err)
	}

	// A stream that does not exist yet is waited for.
	first := make(chan error, 1)
	go func() {
		first <- eventstore.FollowStream(ctx, s, "fs-3", 0, func(e eventstore.Event) error {
			if e.Version != 0 {
				return fmt.Errorf("first event has version %d", e.Version)
			}
			return errEnough
		})
	}()
	time.Sleep(2 * eventstore.PollInterval)
	mustAppend(t, s, "fs-3", eventstore.NoStream, evs("E", 1))
	if err := <-first; !errors.Is(err, errEnough) {
		t.Fatalf("following a new stream: %v", err)
	}
}
