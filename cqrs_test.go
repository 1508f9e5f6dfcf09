package junction_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/junctionhq/junction/aggregate"
	"github.com/junctionhq/junction/client"
	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/eventstore"
	"github.com/junctionhq/junction/internal/testutil"
)

// A configured bridge delivers a category's events to a topic's
// subscribers in commit order, other categories staying out; a
// projection's view answers over HTTP; the node's snapshot store serves
// the aggregate helper.
func TestNodeBridgeViewsAndSnapshots(t *testing.T) {
	cfg := testutil.Config(t, testutil.Embedded)
	cfg.EventStore.Bridges = map[string]*config.Bridge{"orders_out": {Categories: []string{"order"}, Topic: "orders"}}
	cfg.Projections = map[string]*config.Projection{"order_status": {
		From:     config.ProjectionSource{Categories: []string{"order"}},
		Table:    config.ProjectionTable{Columns: map[string]string{"id": "text", "status": "text"}, Key: "id"},
		Handlers: map[string]*config.ProjectionHandler{"OrderPlaced": {Upsert: map[string]string{"id": "event.stream", "status": "'placed'"}}, "OrderPaid": {Update: map[string]string{"id": "event.stream", "status": "'paid'"}}},
	}}
	n := testutil.Start(t, cfg)
	c := n.Client
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := c.PutSubscription(ctx, "billing", client.Subscription{Topic: "orders", Start: "all"}); err != nil {
		t.Fatal(err)
	}
	var res client.AppendResult
	for _, a := range []struct{ stream, typ string }{{"order-1", "OrderPlaced"}, {"stock-1", "StockReserved"}, {"order-1", "OrderPaid"}, {"order-2", "OrderPlaced"}} {
		var err error
		if res, err = c.Append(ctx, a.stream, client.ExpectAny, client.EventData{Type: a.typ, Data: []byte(`{}`)}); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	testutil.Eventually(t, 20*time.Second, "three order events on the topic", func() bool {
		msgs, err := c.Pull(ctx, "billing", 10, 100*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			got = append(got, m.Subject+" "+m.Type)
			if err := c.Ack(ctx, "billing", m.AckID); err != nil {
				t.Fatal(err)
			}
		}
		return len(got) >= 3
	})
	if want := "[order-1 OrderPlaced order-1 OrderPaid order-2 OrderPlaced]"; fmtList(got) != want {
		t.Errorf("bridged %v, want %s", got, want)
	}

	row, err := c.GetRow(ctx, "order_status", "order-1", res.Position)
	if err != nil || row["status"] != "paid" {
		t.Fatalf("order-1 = %v, %v", row, err)
	}
	page, err := c.ListRows(ctx, "order_status", client.ViewQuery{Filters: map[string]string{"status": "placed"}})
	if err != nil || len(page.Rows) != 1 || page.Rows[0]["id"] != "order-2" {
		t.Fatalf("placed orders = %+v, %v", page, err)
	}

	type count struct{ N int }
	agg := &aggregate.Aggregate[count]{
		Store: n.Node.Events(), Snapshots: n.Node.Snapshots(), SnapshotEvery: 2,
		Initial: func() count { return count{} },
		Apply:   func(s count, e eventstore.Event) (count, error) { s.N++; return s, nil },
	}
	for range 5 {
		if _, err := agg.Execute(ctx, "counter-1", func(count) ([]eventstore.EventData, error) {
			return []eventstore.EventData{{Type: "Counted", Data: []byte(`{}`)}}, nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	snap, ok, err := n.Node.Snapshots().Load(ctx, "counter-1")
	if err != nil || !ok || snap.Version < 2 {
		t.Fatalf("snapshot = %+v %v %v", snap, ok, err)
	}
	if s, v, err := agg.Load(ctx, "counter-1"); err != nil || s.N != 5 || v != 4 {
		t.Fatalf("load = %+v v%d %v", s, v, err)
	}
}

func fmtList(xs []string) string {
	out := "["
	for i, x := range xs {
		if i > 0 {
			out += " "
		}
		out += x
	}
	return out + "]"
}

// The Go client follows a stream and the global log: the events so far,
// then new ones as they are appended, until its context ends.
func TestClientFollow(t *testing.T) {
	n := testutil.Start(t, testutil.Config(t, testutil.Embedded))
	c := n.Client
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	appendOne := func(stream, typ string) {
		if _, err := c.Append(ctx, stream, client.ExpectAny, client.EventData{Type: typ, Data: []byte(`{}`)}); err != nil {
			t.Fatal(err)
		}
	}
	appendOne("order-1", "OrderPlaced")
	appendOne("stock-1", "StockReserved")
	type got struct {
		mu  sync.Mutex
		evs []string
	}
	var stream, all got
	fctx, stop := context.WithCancel(ctx)
	errs := make(chan error, 2)
	go func() {
		errs <- c.FollowStream(fctx, "order-1", 0, func(e client.StreamEvent) error {
			stream.mu.Lock()
			defer stream.mu.Unlock()
			stream.evs = append(stream.evs, fmt.Sprintf("%s@%d", e.Type, e.Version))
			return nil
		})
	}()
	go func() {
		errs <- c.FollowAll(fctx, client.ReadAllOptions{Categories: []string{"order"}}, func(e client.StreamEvent) error {
			all.mu.Lock()
			defer all.mu.Unlock()
			all.evs = append(all.evs, e.Stream+" "+e.Type)
			return nil
		})
	}()
	appendOne("order-1", "OrderPaid")
	appendOne("order-2", "OrderPlaced")
	count := func(g *got) int { g.mu.Lock(); defer g.mu.Unlock(); return len(g.evs) }
	testutil.Eventually(t, 10*time.Second, "both follows caught up and live", func() bool { return count(&stream) >= 2 && count(&all) >= 3 })
	stop()
	for range 2 {
		if err := <-errs; err != nil {
			t.Errorf("follow ended with %v, want nil on cancel", err)
		}
	}
	if fmt.Sprint(stream.evs) != "[OrderPlaced@0 OrderPaid@1]" || fmt.Sprint(all.evs) != "[order-1 OrderPlaced order-1 OrderPaid order-2 OrderPlaced]" {
		t.Errorf("stream %v, all %v", stream.evs, all.evs)
	}
}
