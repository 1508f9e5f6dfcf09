package eventstoretest

import (
	"context"
	"errors"
	"math"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/junctionhq/junction/eventstore"
)

// clock is a store clock the test sets; unset, it is the wall clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.t.IsZero() {
		return time.Now()
	}
	return c.t
}

func (c *clock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// waitPast waits until the wall clock is past at, so that events appended
// next are stamped strictly later than an event stamped at.
func waitPast(t *testing.T, at time.Time) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !time.Now().After(at.Add(time.Millisecond)) {
		if time.Now().After(deadline) {
			t.Fatalf("the clock did not pass %v", at)
		}
		runtime.Gosched()
	}
}

// appendEach appends n events to stream one append each, so that each is a
// commit of its own in every backend.
func appendEach(t *testing.T, s eventstore.Store, stream string, n int) {
	t.Helper()
	for i := range n {
		mustAppend(t, s, stream, eventstore.Any, []eventstore.EventData{ev("E", i)})
	}
}

func setRetention(t *testing.T, s eventstore.Store, stream string, r eventstore.Retention) {
	t.Helper()
	if err := s.SetRetention(ctxT(t), stream, r); err != nil {
		t.Fatalf("set retention of %s: %v", stream, err)
	}
	if got, err := s.GetRetention(ctxT(t), stream); err != nil || got != r {
		t.Fatalf("retention of %s: %+v, %v; want %+v", stream, got, err, r)
	}
}

// expectRead checks the versions ReadStream returns.
func expectRead(t *testing.T, s eventstore.Store, stream string, o eventstore.ReadOptions, want ...uint64) {
	t.Helper()
	got, err := s.ReadStream(ctxT(t), stream, o)
	if err != nil {
		t.Fatalf("read %s %+v: %v", stream, o, err)
	}
	if !slices.Equal(versions(got), want) {
		t.Fatalf("read %s %+v: versions %v, want %v", stream, o, versions(got), want)
	}
}

// expectLog checks the versions of stream's events in the global log.
func expectLog(t *testing.T, s eventstore.Store, stream string, want ...uint64) {
	t.Helper()
	all, err := s.ReadAll(ctxT(t), eventstore.ReadAllOptions{Categories: []string{eventstore.Category(stream)}})
	if err != nil {
		t.Fatal(err)
	}
	var got []uint64
	for i, e := range all {
		if i > 0 && e.Position <= all[i-1].Position {
			t.Fatalf("position %d after %d", e.Position, all[i-1].Position)
		}
		if e.Stream == stream {
			got = append(got, e.Version)
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("global log holds versions %v of %s, want %v", got, stream, want)
	}
}

func expectVersionError(t *testing.T, s eventstore.Store, stream string, exp eventstore.ExpectedVersion, current int64) {
	t.Helper()
	var ve *eventstore.VersionError
	if _, err := s.Append(ctxT(t), stream, exp, evs("E", 1)); !errors.As(err, &ve) || ve.Current != current {
		t.Fatalf("append to %s expecting %v: %v, want a VersionError with current %d", stream, exp, err, current)
	}
}

func testRetentionMaxCount(t *testing.T, open Opener) {
	s := open(t, time.Now)
	appendEach(t, s, "keep-1", 10)
	setRetention(t, s, "keep-1", eventstore.Retention{MaxCount: 3})
	end := uint64(math.MaxUint64)
	cases := []struct {
		name string
		o    eventstore.ReadOptions
		want []uint64
	}{
		{"forward", eventstore.ReadOptions{}, []uint64{7, 8, 9}},
		{"backward", eventstore.ReadOptions{From: end, Backward: true}, []uint64{9, 8, 7}},
		{"forward from expired", eventstore.ReadOptions{From: 2, Limit: 2}, []uint64{7, 8}},
		{"forward from kept", eventstore.ReadOptions{From: 8}, []uint64{8, 9}},
		{"backward from kept", eventstore.ReadOptions{From: 8, Backward: true}, []uint64{8, 7}},
		{"backward from expired", eventstore.ReadOptions{From: 5, Backward: true}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { expectRead(t, s, "keep-1", c.o, c.want...) })
	}
	expectLog(t, s, "keep-1", 7, 8, 9)

	// Versions are not renumbered: checks see the true last version.
	expectVersionError(t, s, "keep-1", 6, 9)
	expectVersionError(t, s, "keep-1", eventstore.NoStream, 9)
	if r := mustAppend(t, s, "keep-1", 9, evs("E", 1)); r.FirstVersion != 10 {
		t.Fatalf("append after truncation: %+v, want version 10", r)
	}
	expectRead(t, s, "keep-1", eventstore.ReadOptions{}, 8, 9, 10)
	expectLog(t, s, "keep-1", 8, 9, 10)

	// The retention is stored: a store opened again applies it.
	s2 := open(t, time.Now)
	if r, err := s2.GetRetention(ctxT(t), "keep-1"); err != nil || r != (eventstore.Retention{MaxCount: 3}) {
		t.Fatalf("retention after reopening: %+v, %v", r, err)
	}
	if r := mustAppend(t, s2, "keep-1", 10, evs("E", 1)); r.FirstVersion != 11 {
		t.Fatalf("append after reopening: %+v, want version 11", r)
	}
	expectRead(t, s2, "keep-1", eventstore.ReadOptions{From: end, Backward: true}, 11, 10, 9)
	expectRead(t, s, "keep-1", eventstore.ReadOptions{}, 9, 10, 11)
	expectLog(t, s2, "keep-1", 9, 10, 11)
}

// testRetentionMaxAge moves the store's clock rather than waiting for
// events to age.
func testRetentionMaxAge(t *testing.T, open Opener) {
	clk := &clock{}
	s := open(t, clk.Now)
	ctx := ctxT(t)
	appendEach(t, s, "age-1", 4)
	setRetention(t, s, "age-1", eventstore.Retention{MaxAge: time.Hour})
	old, err := s.ReadStream(ctx, "age-1", eventstore.ReadOptions{})
	if err != nil || len(old) != 4 {
		t.Fatalf("read before expiry: %v, %v", versions(old), err)
	}
	waitPast(t, old[3].Time)
	appendEach(t, s, "age-1", 2)

	// An hour after the old events, only the new ones are within an hour.
	clk.set(old[3].Time.Add(time.Hour + time.Microsecond))
	expectRead(t, s, "age-1", eventstore.ReadOptions{}, 4, 5)
	expectRead(t, s, "age-1", eventstore.ReadOptions{From: math.MaxUint64, Backward: true}, 5, 4)
	expectRead(t, s, "age-1", eventstore.ReadOptions{Limit: 1}, 4)
	if r := mustAppend(t, s, "age-1", 5, evs("E", 1)); r.FirstVersion != 6 {
		t.Fatalf("append: %+v, want version 6", r)
	}
	expectLog(t, s, "age-1", 4, 5, 6)

	// When every event has expired, the stream reads as empty, not as
	// missing, and its versions go on.
	clk.set(time.Now().Add(2 * time.Hour))
	expectRead(t, s, "age-1", eventstore.ReadOptions{})
	expectRead(t, s, "age-1", eventstore.ReadOptions{From: math.MaxUint64, Backward: true})
	expectVersionError(t, s, "age-1", eventstore.NoStream, 6)
	r7 := mustAppend(t, s, "age-1", 6, evs("E", 1))
	if r7.FirstVersion != 7 {
		t.Fatalf("append to an expired stream: %+v, want version 7", r7)
	}
	expectRead(t, s, "age-1", eventstore.ReadOptions{})
	expectLog(t, s, "age-1")

	// The newest events of the log are gone, but their positions are
	// never given out again: a reader past them would miss new events.
	s2 := open(t, clk.Now)
	expectRead(t, s2, "age-1", eventstore.ReadOptions{})
	clk.set(time.Time{})
	if r := mustAppend(t, s2, "age-1", 7, evs("E", 1)); r.FirstVersion != 8 || r.Position <= r7.Position {
		t.Fatalf("append after reopening: %+v, want version 8 after position %d", r, r7.Position)
	}
	expectRead(t, s2, "age-1", eventstore.ReadOptions{}, 8)
	expectLog(t, s2, "age-1", 8)
}

func testRetentionBeforeStream(t *testing.T, open Opener) {
	s := open(t, time.Now)
	setRetention(t, s, "pre-1", eventstore.Retention{MaxCount: 2})
	if _, err := s.ReadStream(ctxT(t), "pre-1", eventstore.ReadOptions{}); !errors.Is(err, eventstore.ErrStreamNotFound) {
		t.Fatalf("read a stream with only a retention: %v, want ErrStreamNotFound", err)
	}
	first := []eventstore.EventData{{ID: "pre-first", Type: "E", Data: []byte(`{}`)}}
	if r := mustAppend(t, s, "pre-1", eventstore.NoStream, first); r.FirstVersion != 0 {
		t.Fatalf("first append: %+v", r)
	}
	appendEach(t, s, "pre-1", 4)
	expectRead(t, s, "pre-1", eventstore.ReadOptions{}, 3, 4)
	expectLog(t, s, "pre-1", 3, 4)

	// The id of a scavenged event is forgotten with it.
	if r := mustAppend(t, s, "pre-1", eventstore.Any, first); r.FirstVersion != 5 {
		t.Fatalf("append of a scavenged event's id: %+v, want a new event at version 5", r)
	}
	expectRead(t, s, "pre-1", eventstore.ReadOptions{}, 4, 5)
	s2 := open(t, time.Now)
	if r, err := s2.GetRetention(ctxT(t), "pre-1"); err != nil || r.MaxCount != 2 {
		t.Fatalf("retention after reopening: %+v, %v", r, err)
	}
}

func testRetentionScavenge(t *testing.T, open Opener) {
	s := open(t, time.Now)
	appendEach(t, s, "scav-1", 6)
	appendEach(t, s, "scav-2", 2)
	expectLog(t, s, "scav-1", 0, 1, 2, 3, 4, 5)
	setRetention(t, s, "scav-1", eventstore.Retention{MaxCount: 2})
	expectLog(t, s, "scav-1", 4, 5)
	expectLog(t, s, "scav-2", 0, 1)

	// An append of several events is read partly, and leaves the log
	// once all of them are outside the retention.
	mustAppend(t, s, "scav-1", eventstore.Any, evs("B", 5))
	expectRead(t, s, "scav-1", eventstore.ReadOptions{}, 9, 10)
	appendEach(t, s, "scav-1", 2)
	expectRead(t, s, "scav-1", eventstore.ReadOptions{}, 11, 12)
	expectLog(t, s, "scav-1", 11, 12)

	// Removing the retention brings nothing back.
	setRetention(t, s, "scav-1", eventstore.Retention{})
	appendEach(t, s, "scav-1", 1)
	expectRead(t, s, "scav-1", eventstore.ReadOptions{}, 11, 12, 13)
	expectLog(t, s, "scav-1", 11, 12, 13)
	expectLog(t, s, "scav-2", 0, 1)
}

func testRetentionDelete(t *testing.T, open Opener) {
	s := open(t, time.Now)
	ctx := ctxT(t)
	appendEach(t, s, "gone-1", 4)
	if err := s.Delete(ctx, "gone-1"); err != nil {
		t.Fatal(err)
	}
	setRetention(t, s, "gone-1", eventstore.Retention{MaxCount: 2})
	if _, err := s.ReadStream(ctx, "gone-1", eventstore.ReadOptions{}); !errors.Is(err, eventstore.ErrStreamDeleted) {
		t.Fatalf("read a deleted stream with a retention: %v, want ErrStreamDeleted", err)
	}
	if r := mustAppend(t, s, "gone-1", eventstore.NoStream, evs("E", 1)); r.FirstVersion != 4 {
		t.Fatalf("append after delete: %+v, want version 4", r)
	}
	expectRead(t, s, "gone-1", eventstore.ReadOptions{}, 4)
	appendEach(t, s, "gone-1", 2)
	expectRead(t, s, "gone-1", eventstore.ReadOptions{}, 5, 6)
	expectLog(t, s, "gone-1", 5, 6)

	if err := s.Delete(ctx, "gone-1"); err != nil {
		t.Fatal(err)
	}
	setRetention(t, s, "gone-1", eventstore.Retention{MaxCount: 1})
	if _, err := s.ReadStream(ctx, "gone-1", eventstore.ReadOptions{}); !errors.Is(err, eventstore.ErrStreamDeleted) {
		t.Fatalf("read after the second delete: %v, want ErrStreamDeleted", err)
	}
	expectVersionError(t, s, "gone-1", 6, -1)
	if r := mustAppend(t, s, "gone-1", eventstore.Any, evs("E", 1)); r.FirstVersion != 7 {
		t.Fatalf("append after the second delete: %+v, want version 7", r)
	}
	expectRead(t, s, "gone-1", eventstore.ReadOptions{}, 7)
	expectLog(t, s, "gone-1", 7)
}

func testRetentionInvalid(t *testing.T, open Opener) {
	s := open(t, time.Now)
	ctx := context.Background()
	cases := []struct {
		name   string
		stream string
		r      eventstore.Retention
	}{
		{"reserved stream", "$all", eventstore.Retention{MaxCount: 1}},
		{"stream with space", "a b", eventstore.Retention{MaxCount: 1}},
		{"negative age", "ok-1", eventstore.Retention{MaxAge: -time.Second}},
		{"count beyond int64", "ok-1", eventstore.Retention{MaxCount: math.MaxInt64 + 1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := s.SetRetention(ctx, c.stream, c.r); !errors.Is(err, eventstore.ErrInvalid) {
				t.Errorf("set retention: %v, want ErrInvalid", err)
			}
		})
	}
	if _, err := s.GetRetention(ctx, "$all"); !errors.Is(err, eventstore.ErrInvalid) {
		t.Errorf("get retention of $all: %v, want ErrInvalid", err)
	}
	if r, err := s.GetRetention(ctx, "none-1"); err != nil || !r.IsZero() {
		t.Errorf("retention of a stream without one: %+v, %v", r, err)
	}
}

// testTwoStores appends through two stores on the same storage, as two
// processes would: whatever one store remembers of a stream, the other's
// appends are seen and every check is made on the stored state.
func testTwoStores(t *testing.T, open Opener) {
	s1, s2 := open(t, time.Now), open(t, time.Now)
	mustAppend(t, s1, "two-1", eventstore.NoStream, evs("E", 2))
	mustAppend(t, s2, "two-1", 1, evs("E", 1))
	mustAppend(t, s1, "two-1", 2, evs("E", 1))
	mustAppend(t, s1, "two-1", 3, evs("E", 1))
	if r := mustAppend(t, s2, "two-1", 4, evs("E", 1)); r.FirstVersion != 5 {
		t.Fatalf("append after the other store's: %+v, want version 5", r)
	}
	if r := mustAppend(t, s1, "two-1", eventstore.Any, evs("E", 1)); r.FirstVersion != 6 {
		t.Fatalf("append with any: %+v, want version 6", r)
	}
	expectVersionError(t, s2, "two-1", 5, 6)
	expectVersionError(t, s2, "two-1", eventstore.NoStream, 6)
	if err := s1.Delete(ctxT(t), "two-1"); err != nil {
		t.Fatal(err)
	}
	expectVersionError(t, s2, "two-1", 6, -1)
	expectVersionError(t, s2, "two-1", eventstore.StreamExists, -1)
	if r := mustAppend(t, s2, "two-1", eventstore.NoStream, evs("E", 1)); r.FirstVersion != 7 {
		t.Fatalf("append after the other store's delete: %+v, want version 7", r)
	}
	if r := mustAppend(t, s1, "two-1", 7, evs("E", 1)); r.FirstVersion != 8 {
		t.Fatalf("append after the other store restarted the stream: %+v, want version 8", r)
	}
	expectRead(t, s2, "two-1", eventstore.ReadOptions{}, 7, 8)
	expectLog(t, s1, "two-1", 0, 1, 2, 3, 4, 5, 6, 7, 8)
}
