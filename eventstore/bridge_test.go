package eventstore_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/junctionhq/junction/eventstore"
	"github.com/junctionhq/junction/resilience"
)

var quiet = slog.New(slog.DiscardHandler)

// logStore is a global log in memory, enough for a Bridge: it follows it
// by polling ReadAll. Other Store methods are not used.
type logStore struct {
	eventstore.Store
	mu     sync.Mutex
	events []eventstore.Event
	fails  int // how many reads fail from now on
}

// failNext makes the next n reads fail.
func (s *logStore) failNext(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fails = n
}

func (s *logStore) add(stream, typ string) eventstore.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := uint64(len(s.events))
	e := eventstore.Event{Stream: stream, Version: n, Position: n + 1, ID: fmt.Sprint("ev-", n), Type: typ, Data: []byte(`{}`), Time: time.Now()}
	s.events = append(s.events, e)
	return e
}

func (s *logStore) ReadAll(ctx context.Context, o eventstore.ReadAllOptions) ([]eventstore.Event, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fails > 0 {
		s.fails--
		return nil, errors.New("store unavailable")
	}
	var out []eventstore.Event
	for _, e := range s.events {
		if e.Position < o.From ||
			len(o.Categories) > 0 && !slices.Contains(o.Categories, eventstore.Category(e.Stream)) ||
			len(o.Types) > 0 && !slices.Contains(o.Types, e.Type) {
			continue
		}
		out = append(out, e)
		if o.Limit > 0 && len(out) == o.Limit {
			break
		}
	}
	return out, nil
}

// memCheckpoints keeps checkpoints in a map and counts saves.
type memCheckpoints struct {
	mu        sync.Mutex
	pos       map[string]uint64
	saves     int
	failLoads int // how many loads fail
}

func (c *memCheckpoints) Load(_ context.Context, name string) (uint64, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failLoads > 0 {
		c.failLoads--
		return 0, false, errors.New("checkpoints unavailable")
	}
	p, ok := c.pos[name]
	return p, ok, nil
}

func (c *memCheckpoints) Save(_ context.Context, name string, pos uint64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pos == nil {
		c.pos = map[string]uint64{}
	}
	c.pos[name] = pos
	c.saves++
	return nil
}

func (c *memCheckpoints) get(name string) (uint64, bool) {
	p, ok, _ := c.Load(context.Background(), name)
	return p, ok
}

// recorder is a Publisher that records what it published; fail decides
// the outcome of each call (nil: success).
type recorder struct {
	mu    sync.Mutex
	calls int
	got   []eventstore.Event
	fail  func(call int, e eventstore.Event) error
}

func (r *recorder) PublishEvent(_ context.Context, topic string, e eventstore.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if r.fail != nil {
		if err := r.fail(r.calls, e); err != nil {
			return err
		}
	}
	r.got = append(r.got, e)
	return nil
}

func (r *recorder) published() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	ids := make([]string, len(r.got))
	for i, e := range r.got {
		ids[i] = e.ID
	}
	return ids
}

// waitFor polls cond until it holds or a deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// start runs b until stop is called, which returns Run's error; done is
// closed when Run returns by itself.
func start(b *eventstore.Bridge) (stop func() error, done <-chan struct{}) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan struct{})
	var err error
	go func() { err = b.Run(ctx); close(ch) }()
	return func() error { cancel(); <-ch; return err }, ch
}

func ids(es ...eventstore.Event) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.ID
	}
	return out
}

func TestBridgeFiltersAndResumes(t *testing.T) {
	s := &logStore{}
	cps := &memCheckpoints{}
	pub := &recorder{}
	b := &eventstore.Bridge{Log: quiet, Name: "orders", Store: s, Categories: []string{"order"}, Types: []string{"Created", "Paid"},
		Topic: "orders", Publisher: pub, Checkpoints: cps}
	want := []eventstore.Event{s.add("order-1", "Created")}
	s.add("stock-1", "Reserved")
	want = append(want, s.add("order-1", "Paid"))
	s.add("order-1", "Viewed")
	stop, _ := start(b)
	waitFor(t, "the first events", func() bool { return len(pub.published()) == 2 })
	want = append(want, s.add("order-2", "Created"))
	waitFor(t, "a live event", func() bool { return len(pub.published()) == 3 })
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("run: %v, want context.Canceled", err)
	}
	if p, ok := cps.get("orders"); !ok || p != want[2].Position {
		t.Fatalf("checkpoint %d (%v), want %d", p, ok, want[2].Position)
	}

	// While the bridge is down.
	want = append(want, s.add("order-3", "Created"))
	s.add("stock-2", "Created")
	stop, _ = start(b)
	waitFor(t, "the events appended while down", func() bool { return len(pub.published()) == 4 })
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	if got := pub.published(); !slices.Equal(got, ids(want...)) {
		t.Fatalf("published %v, want %v", got, ids(want...))
	}
}

func TestBridgeRetriesPublish(t *testing.T) {
	s := &logStore{}
	e1, e2 := s.add("order-1", "Created"), s.add("order-1", "Paid")
	pub := &recorder{fail: func(call int, _ eventstore.Event) error {
		if call <= 3 {
			return errors.New("bus unavailable")
		}
		return nil
	}}
	b := &eventstore.Bridge{Log: quiet, Name: "orders", Store: s, Topic: "orders", Publisher: pub, Checkpoints: &memCheckpoints{},
		Backoff: resilience.Backoff{Base: time.Millisecond}}
	stop, _ := start(b)
	waitFor(t, "both events", func() bool { return len(pub.published()) == 2 })
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	if got := pub.published(); !slices.Equal(got, ids(e1, e2)) {
		t.Fatalf("published %v, want %v", got, ids(e1, e2))
	}
}

// Failures of the store and of the checkpoints are waited out; the
// bridge goes on after the last event it published.
func TestBridgeRecoversFromStoreFailures(t *testing.T) {
	s := &logStore{}
	want := []eventstore.Event{s.add("order-1", "Created"), s.add("order-1", "Paid")}
	s.failNext(2)
	pub := &recorder{}
	cps := &memCheckpoints{failLoads: 2}
	b := &eventstore.Bridge{Log: quiet, Name: "orders", Store: s, Topic: "orders", Publisher: pub, Checkpoints: cps,
		Backoff: resilience.Backoff{Base: time.Millisecond}}
	stop, _ := start(b)
	waitFor(t, "the first events", func() bool { return len(pub.published()) == 2 })
	s.failNext(3)
	want = append(want, s.add("order-2", "Created"))
	waitFor(t, "the event after the failures", func() bool { return len(pub.published()) == 3 })
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	if got := pub.published(); !slices.Equal(got, ids(want...)) {
		t.Fatalf("published %v, want %v", got, ids(want...))
	}
}

// A bridge waiting to resume after a store failure stops at once when
// its ctx ends.
func TestBridgeStopsWhileWaitingToResume(t *testing.T) {
	s := &logStore{}
	s.failNext(1)
	b := &eventstore.Bridge{Log: quiet, Name: "orders", Store: s, Topic: "orders", Publisher: &recorder{}, Checkpoints: &memCheckpoints{},
		Backoff: resilience.Backoff{Base: time.Hour}}
	stop, _ := start(b)
	waitFor(t, "the failed read", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.fails == 0
	})
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	select {
	case err := <-stopped:
		if !errors.Is(err, context.Canceled) {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the bridge did not stop")
	}
}

// An event that can never be published stops the bridge, with the
// checkpoint on the event before it.
func TestBridgeStopsOnPermanentError(t *testing.T) {
	s := &logStore{}
	e1 := s.add("order-1", "Created")
	s.add("order-1", "Huge")
	s.add("order-1", "Paid")
	tooLarge := errors.New("message too large")
	pub := &recorder{fail: func(_ int, e eventstore.Event) error {
		if e.Type == "Huge" {
			return resilience.Permanent(tooLarge)
		}
		return nil
	}}
	cps := &memCheckpoints{}
	b := &eventstore.Bridge{Log: quiet, Name: "orders", Store: s, Topic: "orders", Publisher: pub, Checkpoints: cps}
	stop, done := start(b)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the bridge did not stop")
	}
	if err := stop(); !errors.Is(err, tooLarge) {
		t.Fatalf("run: %v, want the publish error", err)
	}
	if p, _ := cps.get("orders"); p != e1.Position {
		t.Fatalf("checkpoint %d, want %d", p, e1.Position)
	}
}

// The checkpoint is saved every CheckpointEvery events, and when Run
// returns.
func TestBridgeCheckpointBatches(t *testing.T) {
	s := &logStore{}
	var es []eventstore.Event
	for range 5 {
		es = append(es, s.add("order-1", "E"))
	}
	pub := &recorder{}
	cps := &memCheckpoints{}
	b := &eventstore.Bridge{Log: quiet, Name: "orders", Store: s, Topic: "orders", Publisher: pub, Checkpoints: cps,
		CheckpointEvery: 2, CheckpointInterval: time.Hour}
	stop, _ := start(b)
	waitFor(t, "five events", func() bool { return len(pub.published()) == 5 })
	// The save after the fourth event is made before the fifth is
	// published.
	if p, _ := cps.get("orders"); p != es[3].Position {
		t.Fatalf("checkpoint while running: %d, want %d", p, es[3].Position)
	}
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	if p, _ := cps.get("orders"); p != es[4].Position || cps.saves != 3 {
		t.Fatalf("checkpoint after stop: %d after %d saves, want %d after 3", p, cps.saves, es[4].Position)
	}
}

func TestBridgeInvalid(t *testing.T) {
	s, pub, cps := &logStore{}, &recorder{}, &memCheckpoints{}
	tests := []struct {
		name string
		b    eventstore.Bridge
	}{
		{"no name", eventstore.Bridge{Store: s, Topic: "t", Publisher: pub, Checkpoints: cps}},
		{"no topic", eventstore.Bridge{Name: "b", Store: s, Publisher: pub, Checkpoints: cps}},
		{"no store", eventstore.Bridge{Name: "b", Topic: "t", Publisher: pub, Checkpoints: cps}},
		{"no publisher", eventstore.Bridge{Name: "b", Store: s, Topic: "t", Checkpoints: cps}},
		{"no checkpoints", eventstore.Bridge{Name: "b", Store: s, Topic: "t", Publisher: pub}},
		{"negative batch", eventstore.Bridge{Name: "b", Store: s, Topic: "t", Publisher: pub, Checkpoints: cps, CheckpointEvery: -1}},
	}
	for _, tc := range tests {
		if err := tc.b.Run(context.Background()); !errors.Is(err, eventstore.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", tc.name, err)
		}
	}
}
