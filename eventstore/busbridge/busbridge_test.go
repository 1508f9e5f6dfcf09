package busbridge_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/junctionhq/junction/bus"
	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/eventstore"
	"github.com/junctionhq/junction/eventstore/busbridge"
	esjetstream "github.com/junctionhq/junction/eventstore/jetstream"
	"github.com/junctionhq/junction/internal/natsembed"
	"github.com/junctionhq/junction/internal/testutil"
)

const sub = "order-events"

type env struct {
	js    jetstream.JetStream
	store eventstore.Store
	bus   *bus.Bus
	kv    jetstream.KeyValue
	cps   *busbridge.KVCheckpoints
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// setup starts an embedded JetStream holding an event store, a bus with a
// pull subscription to topic orders, and a checkpoint bucket.
func setup(t *testing.T) *env {
	t.Helper()
	ctx := ctxT(t)
	c, err := natsembed.Start(ctx, natsembed.Options{DataDir: t.TempDir(), Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	store, err := esjetstream.Open(ctx, c.JS, "es")
	if err != nil {
		t.Fatal(err)
	}
	b, err := bus.New(ctx, bus.Options{NC: c.NC, JS: c.JS, Prefix: "jt", Config: config.Default().Bus, Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Stop(context.Background()) })
	if _, err := b.PutSubscription(ctx, sub, config.Subscription{Topic: "orders", Start: "all"}); err != nil {
		t.Fatal(err)
	}
	kv, err := c.JS.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "bridges", History: 1})
	if err != nil {
		t.Fatal(err)
	}
	return &env{js: c.JS, store: store, bus: b, kv: kv, cps: busbridge.NewKVCheckpoints(kv)}
}

func (e *env) bridge(t *testing.T) *eventstore.Bridge {
	return &eventstore.Bridge{
		Name: "orders-to-bus", Store: e.store, Categories: []string{"order"}, Topic: "orders",
		Publisher: busbridge.NewPublisher(e.bus), Checkpoints: e.cps, Log: testutil.Logger(t),
	}
}

// run runs b (a bridge, or a leased one) until the returned stop is
// called.
func run(t *testing.T, b interface{ Run(context.Context) error }) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != context.Canceled {
			t.Errorf("bridge ended with %v, want context.Canceled", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

func (e *env) append(t *testing.T, stream, typ string, metadata string) {
	t.Helper()
	ed := eventstore.EventData{Type: typ, Data: fmt.Appendf(nil, `{"stream":%q,"type":%q}`, stream, typ)}
	if metadata != "" {
		ed.Metadata = []byte(metadata)
	}
	if _, err := e.store.Append(ctxT(t), stream, eventstore.Any, []eventstore.EventData{ed}); err != nil {
		t.Fatal(err)
	}
}

// pull pulls and acknowledges n messages of the subscription.
func (e *env) pull(t *testing.T, n int) []bus.WireMessage {
	t.Helper()
	ctx := ctxT(t)
	var got []bus.WireMessage
	deadline := time.Now().Add(20 * time.Second)
	for len(got) < n && time.Now().Before(deadline) {
		ms, err := e.bus.Pull(ctx, sub, n-len(got), time.Second)
		if err != nil {
			t.Fatal(err)
		}
		ids := make([]string, len(ms))
		for i, m := range ms {
			ids[i] = m.AckID
		}
		if len(ids) > 0 {
			if err := e.bus.Settle(ctx, sub, bus.SettleAck, ids, 0); err != nil {
				t.Fatal(err)
			}
		}
		got = append(got, ms...)
	}
	if len(got) != n {
		t.Fatalf("pulled %d messages, want %d", len(got), n)
	}
	return got
}

// checkNoMore asserts the subscription holds no more messages.
func (e *env) checkNoMore(t *testing.T) {
	t.Helper()
	if ms, err := e.bus.Pull(ctxT(t), sub, 10, 0); err != nil || len(ms) != 0 {
		t.Fatalf("more messages: %d (%v)", len(ms), err)
	}
}

// checkMessages compares pulled messages with the order events from
// position from on.
func (e *env) checkMessages(t *testing.T, got []bus.WireMessage, from uint64) {
	t.Helper()
	want, err := e.store.ReadAll(ctxT(t), eventstore.ReadAllOptions{From: from, Categories: []string{"order"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("got %d messages, want %d", len(got), len(want))
	}
	for i, w := range want {
		g := got[i]
		if g.ID != w.ID || g.Type != w.Type || g.Subject != w.Stream || g.Key != w.Stream || g.Source != busbridge.Source ||
			!g.Time.Equal(w.Time) || string(g.Data) != string(w.Data) ||
			g.Headers["ce-streamversion"] != strconv.FormatUint(w.Version, 10) || g.Headers["ce-position"] != strconv.FormatUint(w.Position, 10) {
			t.Errorf("message %d: %+v, want event %+v", i, g, w)
		}
		if want := string(w.Metadata); g.Headers["ce-metadata"] != want {
			t.Errorf("message %d: metadata %q, want %q", i, g.Headers["ce-metadata"], want)
		}
	}
}

// waitCheckpoint waits until the bridge saved the position of the last
// order event.
func (e *env) waitCheckpoint(t *testing.T) uint64 {
	t.Helper()
	last, err := e.store.ReadAll(ctxT(t), eventstore.ReadAllOptions{Categories: []string{"order"}})
	if err != nil || len(last) == 0 {
		t.Fatalf("reading order events: %v", err)
	}
	want := last[len(last)-1].Position
	testutil.Eventually(t, 10*time.Second, "the checkpoint", func() bool {
		p, ok, err := e.cps.Load(ctxT(t), "orders-to-bus")
		return err == nil && ok && p == want
	})
	return want
}

func (e *env) topicMessages(t *testing.T) uint64 {
	t.Helper()
	ti, err := e.bus.GetTopic(ctxT(t), "orders")
	if err != nil {
		t.Fatal(err)
	}
	return ti.Stats.Messages
}

func TestBridgeToBus(t *testing.T) {
	e := setup(t)
	e.append(t, "order-1", "OrderPlaced", `{"user":"ann"}`)
	e.append(t, "stock-1", "StockReserved", "")
	e.append(t, "order-1", "OrderPaid", "")
	e.append(t, "order-2", "OrderPlaced", "")
	e.append(t, "stock-2", "StockReleased", "")

	stop := run(t, e.bridge(t))
	got := e.pull(t, 3)
	e.checkMessages(t, got, 0)
	// A live event, appended while the bridge runs.
	e.append(t, "order-1", "OrderShipped", "")
	e.checkMessages(t, append(got, e.pull(t, 1)...), 0)
	pos := e.waitCheckpoint(t)
	stop()

	// Appended while the bridge is down: delivered after the restart, and
	// nothing before them again.
	e.append(t, "order-3", "OrderPlaced", "")
	e.append(t, "stock-1", "StockReleased", "")
	e.append(t, "order-2", "OrderCancelled", "")
	stop = run(t, e.bridge(t))
	e.checkMessages(t, e.pull(t, 2), pos+1)
	e.waitCheckpoint(t)
	stop()
	e.checkNoMore(t)
	if n := e.topicMessages(t); n != 6 {
		t.Fatalf("topic holds %d messages, want the 6 order events", n)
	}

	// Lose the checkpoint: the bridge publishes everything again, and the
	// bus drops every repeat by its message id.
	if err := e.kv.Delete(ctxT(t), "b3JkZXJzLXRvLWJ1cw"); err != nil { // base64url("orders-to-bus")
		t.Fatal(err)
	}
	if _, ok, _ := e.cps.Load(ctxT(t), "orders-to-bus"); ok {
		t.Fatal("the checkpoint is still there")
	}
	stop = run(t, e.bridge(t))
	e.waitCheckpoint(t)
	stop()
	e.checkNoMore(t)
	if n := e.topicMessages(t); n != 6 {
		t.Fatalf("after publishing again, topic holds %d messages, want 6", n)
	}
}

func TestKVCheckpoints(t *testing.T) {
	e := setup(t)
	ctx := ctxT(t)
	const name = "a.b:c d" // not a valid key as it is
	if _, ok, err := e.cps.Load(ctx, name); ok || err != nil {
		t.Fatalf("load before save: %v, %v", ok, err)
	}
	steps := []struct {
		save, want uint64
	}{{5, 5}, {9, 9}, {7, 9}, {9, 9}, {10, 10}}
	for _, s := range steps {
		if err := e.cps.Save(ctx, name, s.save); err != nil {
			t.Fatal(err)
		}
		if p, ok, err := e.cps.Load(ctx, name); err != nil || !ok || p != s.want {
			t.Fatalf("after saving %d: %d, %v, %v; want %d", s.save, p, ok, err, s.want)
		}
	}
}

func TestMessage(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	tests := []struct {
		name     string
		metadata string
		want     string // the metadata extension, "" for none
	}{
		{"no metadata", "", ""},
		{"null metadata", "null", ""},
		{"compacted", "{\n  \"user\": \"ann\"\n}", `{"user":"ann"}`},
	}
	for _, tc := range tests {
		e := eventstore.Event{Stream: "order-1", Version: 4, Position: 77, ID: "id-1", Type: "OrderPlaced",
			Data: []byte(`{"a":1}`), Metadata: []byte(tc.metadata), Time: at}
		m := busbridge.Message(e)
		if m.ID != "id-1" || m.Type != "OrderPlaced" || m.Subject != "order-1" || m.Key != "order-1" || m.Source != busbridge.Source ||
			!m.Time.Equal(at) || string(m.Data) != `{"a":1}` || m.Extensions["streamversion"] != "4" || m.Extensions["position"] != "77" ||
			m.Extensions["metadata"] != tc.want {
			t.Errorf("%s: %+v", tc.name, m)
		}
	}
}

// counting counts the events a node publishes.
type counting struct {
	eventstore.Publisher
	n *atomic.Int64
}

func (c counting) PublishEvent(ctx context.Context, topic string, e eventstore.Event) error {
	c.n.Add(1)
	return c.Publisher.PublishEvent(ctx, topic, e)
}

// Two nodes run one leased bridge: one publishes, and the other takes
// over when it stops, from its checkpoint.
func TestLeased(t *testing.T) {
	e := setup(t)
	lkv, err := e.js.CreateKeyValue(ctxT(t), jetstream.KeyValueConfig{Bucket: "bridge_leases", History: 1, TTL: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	// The checkpoint bucket has no TTL: a lease there would never expire.
	if err := (&busbridge.Leased{Bridge: e.bridge(t), KV: e.kv}).Run(ctxT(t)); !errors.Is(err, busbridge.ErrNoTTL) {
		t.Fatalf("lease in a bucket without TTL: %v", err)
	}

	var counts [2]atomic.Int64
	stops := make([]func(), 2)
	for i := range stops {
		b := e.bridge(t)
		b.Publisher = counting{b.Publisher, &counts[i]}
		stops[i] = run(t, &busbridge.Leased{Bridge: b, KV: lkv, Node: fmt.Sprint("node-", i)})
	}
	e.append(t, "order-1", "OrderPlaced", "")
	e.append(t, "order-2", "OrderPlaced", "")
	e.append(t, "order-1", "OrderPaid", "")
	e.checkMessages(t, e.pull(t, 3), 0)
	pos := e.waitCheckpoint(t)
	leader := 0
	if counts[1].Load() > 0 {
		leader = 1
	}
	if a, b := counts[leader].Load(), counts[1-leader].Load(); a != 3 || b != 0 {
		t.Fatalf("nodes published %d and %d events, want 3 and 0", a, b)
	}

	stops[leader]()
	e.append(t, "order-2", "OrderPaid", "")
	e.append(t, "order-3", "OrderPlaced", "")
	e.checkMessages(t, e.pull(t, 2), pos+1)
	e.waitCheckpoint(t)
	if n := counts[1-leader].Load(); n != 2 {
		t.Fatalf("the node taking over published %d events, want 2", n)
	}
	e.checkNoMore(t)
	if n := e.topicMessages(t); n != 5 {
		t.Fatalf("topic holds %d messages, want 5", n)
	}
}
