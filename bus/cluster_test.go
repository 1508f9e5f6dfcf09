package bus_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/junctionhq/junction/client"
	"github.com/junctionhq/junction/internal/testutil"
)

// twoNodes starts two nodes on the machine's NATS with one prefix: one
// deployment of two nodes.
func twoNodes(t *testing.T) (a, b *testutil.Node) {
	cfgA := testutil.Config(t, testutil.External)
	a = testutil.Start(t, cfgA)
	cfgB := testutil.Config(t, testutil.External)
	cfgB.NATS.Prefix = cfgA.NATS.Prefix
	return a, testutil.Start(t, cfgB)
}

// Two nodes on one NATS cluster share everything: a subscription made on
// one is served by both, each message is pushed once, and pulls on either
// node drain one work queue.
func TestTwoNodesShareSubscriptions(t *testing.T) {
	a, b := twoNodes(t)

	var mu sync.Mutex
	seen := map[string]int{}
	hook := newWebhook(t, nil)
	hook.respond = func(d delivery, _ int) int {
		mu.Lock()
		seen[d.header.Get("ce-id")]++
		mu.Unlock()
		return 200
	}
	if _, err := a.Client.PutSubscription(ctx(t), "shared-push", client.Subscription{Topic: "orders", Push: &client.Push{URL: hook.URL}}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Client.PutSubscription(ctx(t), "shared-pull", client.Subscription{Topic: "orders"}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "node B to see both subscriptions", func() bool {
		ss, err := b.Client.ListSubscriptions(ctx(t))
		return err == nil && len(ss) == 2
	})
	const total = 200
	for i := 0; i < total; i += 50 {
		var evs []client.Event
		for j := range 50 {
			evs = append(evs, client.Event{ID: fmt.Sprintf("o-%d", i+j), Data: []byte("{}"), ContentType: "application/json"})
		}
		// Alternate the publishing node.
		pub := a
		if i%100 == 0 {
			pub = b
		}
		if _, err := pub.Client.PublishBatch(ctx(t), "orders", evs); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 20*time.Second, "all pushed", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) == total
	})
	pulled := map[string]int{}
	for i := 0; ; i++ {
		n := []*testutil.Node{a, b}[i%2]
		ms, err := n.Client.Pull(ctx(t), "shared-pull", 60, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if len(ms) == 0 {
			break
		}
		var ids []string
		for _, m := range ms {
			pulled[m.ID]++
			ids = append(ids, m.AckID)
		}
		// Ack through the other node: ack ids work anywhere.
		other := b
		if n == b {
			other = a
		}
		if len(ids) > 0 {
			if err := other.Client.Ack(ctx(t), "shared-pull", ids...); err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(pulled) != total {
		t.Fatalf("pulled %d distinct of %d", len(pulled), total)
	}
	for id, c := range pulled {
		if c != 1 {
			t.Errorf("%s pulled %d times", id, c)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for id, c := range seen {
		if c != 1 {
			t.Errorf("%s pushed %d times", id, c)
		}
	}
	// Deleting on B stops delivery on A too.
	if err := b.Client.DeleteSubscription(ctx(t), "shared-push"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Client.Publish(ctx(t), "orders", client.Event{ID: "after-delete", Data: []byte("{}")}); err != nil {
		t.Fatal(err)
	}
	ms, err := a.Client.Pull(ctx(t), "shared-pull", 100, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, m := range ms {
		found = found || m.ID == "after-delete"
	}
	if !found {
		t.Fatalf("the later message never reached the pull subscription")
	}
	if seen["after-delete"] != 0 {
		t.Fatal("a deleted subscription still delivered")
	}
}

// An ordered subscription is served by one node at a time (the holder of
// its lease), so two nodes never run the same key at once; when that node
// stops, the other takes over.
func TestOrderedByKeyAcrossNodes(t *testing.T) {
	a, b := twoNodes(t)

	var mu sync.Mutex
	inflight := map[string]int{}
	seen := map[string][]int{}
	violations := 0
	hook := newWebhook(t, nil)
	hook.respond = func(d delivery, _ int) int {
		key := d.header.Get("ce-partitionkey")
		var n int
		fmt.Sscanf(d.body, "%d", &n)
		mu.Lock()
		if inflight[key]++; inflight[key] > 1 {
			violations++
		}
		mu.Unlock()
		time.Sleep(2 * time.Millisecond) // hold the call so overlap would show
		mu.Lock()
		inflight[key]--
		seen[key] = append(seen[key], n)
		mu.Unlock()
		return 200
	}
	if _, err := a.Client.PutSubscription(ctx(t), "ledger", client.Subscription{
		Topic: "accounts", Push: &client.Push{URL: hook.URL}, OrderedByKey: true, MaxInFlight: 16,
	}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "node B to see the subscription", func() bool {
		_, err := b.Client.GetSubscription(ctx(t), "ledger")
		return err == nil
	})
	publish := func(from, to int) {
		var evs []client.Event
		for i := from; i < to; i++ {
			for k := range 3 {
				evs = append(evs, client.Event{Key: fmt.Sprintf("k%d", k), ContentType: "text/plain", Data: fmt.Appendf(nil, "%d", i)})
			}
		}
		if _, err := b.Client.PublishBatch(ctx(t), "accounts", evs); err != nil {
			t.Fatal(err)
		}
	}
	delivered := func(n int) func() bool {
		return func() bool {
			mu.Lock()
			defer mu.Unlock()
			total := 0
			for _, s := range seen {
				total += len(s)
			}
			return total >= n
		}
	}
	publish(0, 20)
	testutil.Eventually(t, 20*time.Second, "first 60 delivered", delivered(60))
	a.KeepNATS = true // B goes on with the same streams
	a.Stop(t)         // if A held the lease, B takes it over
	publish(20, 40)
	testutil.Eventually(t, 30*time.Second, "all 120 delivered", delivered(120))
	mu.Lock()
	defer mu.Unlock()
	if violations > 0 {
		t.Errorf("%d times a key had two deliveries in flight", violations)
	}
	for k, s := range seen {
		for i, v := range s {
			if v != i {
				t.Fatalf("key %s delivered out of order or twice: %v", k, s)
			}
		}
	}
}
