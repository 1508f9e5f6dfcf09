package bus_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/junctionhq/junction"
	"github.com/junctionhq/junction/client"
	"github.com/junctionhq/junction/internal/testutil"
)

func TestPushDeliveryFilterAndTraceContext(t *testing.T) {
	eachSubstrate(t, func(t *testing.T, sub testutil.Substrate) {
		n := start(t, sub)
		hook := newWebhook(t, nil)
		_, err := n.Client.PutSubscription(ctx(t), "billing", client.Subscription{
			Topic: "orders", Filter: `event.type == "order.created" && event.data.total > 5`,
			Push: &client.Push{URL: hook.URL + "/events", Headers: map[string]string{"X-Custom": "yes"}},
		})
		if err != nil {
			t.Fatal(err)
		}
		const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
		pub := func(id, typ, data string) {
			st, _, body := testutil.Do(t, "POST", n.URL+"/v1/topics/orders/messages", map[string]string{
				"ce-id": id, "ce-type": typ, "ce-source": "/shop", "Content-Type": "application/json",
				"traceparent": "00-" + traceID + "-00f067aa0ba902b7-01"}, data)
			if st != 202 {
				t.Fatalf("publish: %d %s", st, body)
			}
		}
		pub("m1", "order.created", `{"total":10}`)
		pub("m2", "order.cancelled", `{"total":10}`) // filtered by type
		pub("m3", "order.created", `{"total":1}`)    // filtered by data
		pub("m4", "order.created", `{"total":7}`)
		testutil.Eventually(t, 10*time.Second, "two deliveries", func() bool { return hook.count() >= 2 })
		si, err := n.Client.GetSubscription(ctx(t), "billing")
		if err != nil {
			t.Fatal(err)
		}
		testutil.Eventually(t, 10*time.Second, "all settled", func() bool {
			si, _ = n.Client.GetSubscription(ctx(t), "billing")
			return si.Stats.Pending == 0 && si.Stats.InFlight == 0
		})
		ds := hook.deliveries()
		if len(ds) != 2 {
			t.Fatalf("got %d deliveries, want 2 (filter)", len(ds))
		}
		// Unordered delivery runs calls in parallel: compare by id.
		sort.Slice(ds, func(i, j int) bool { return ds[i].header.Get("ce-id") < ds[j].header.Get("ce-id") })
		for i, want := range []string{"m1", "m4"} {
			d := ds[i]
			if d.header.Get("ce-id") != want || d.header.Get("ce-type") != "order.created" || d.header.Get("ce-source") != "/shop" ||
				d.header.Get("ce-specversion") != "1.0" || d.header.Get("Content-Type") != "application/json" ||
				d.header.Get("X-Custom") != "yes" || d.header.Get("Junction-Subscription") != "billing" || d.attempt != "1" {
				t.Errorf("delivery %d headers: %v", i, d.header)
			}
			// Tracing is off by default: the caller's trace context
			// passes through unchanged.
			if tp := d.header.Get("traceparent"); tp != "00-"+traceID+"-00f067aa0ba902b7-01" {
				t.Errorf("delivery %d traceparent %q: want the publisher's", i, tp)
			}
		}
		if ds[0].body != `{"total":10}` {
			t.Errorf("body %q", ds[0].body)
		}
	})
}

func TestPushStatusClassification(t *testing.T) {
	eachSubstrate(t, func(t *testing.T, sub testutil.Substrate) {
		n := start(t, sub)
		cases := []struct {
			status     int
			deliveries int // before dead-lettering, with max_deliver 3
		}{
			{500, 3}, {503, 3}, {408, 3}, {429, 3}, {400, 1}, {404, 1}, {422, 1},
		}
		hooks := map[int]*webhook{}
		for _, c := range cases {
			hooks[c.status] = newWebhook(t, func(delivery, int) int { return c.status })
			name := fmt.Sprintf("s%d", c.status)
			if _, err := n.Client.PutSubscription(ctx(t), name, client.Subscription{
				Topic: "t" + strconv.Itoa(c.status), Push: &client.Push{URL: hooks[c.status].URL},
				MaxDeliver: 3, Backoff: []string{"50ms", "100ms"},
			}); err != nil {
				t.Fatal(err)
			}
			if _, err := n.Client.Publish(ctx(t), "t"+strconv.Itoa(c.status), client.Event{ID: "x", Data: []byte(`{}`)}); err != nil {
				t.Fatal(err)
			}
		}
		for _, c := range cases {
			name := fmt.Sprintf("s%d", c.status)
			testutil.Eventually(t, 15*time.Second, name+" dead-lettered", func() bool {
				si, err := n.Client.GetSubscription(ctx(t), name)
				return err == nil && si.Stats.DeadLettered == 1
			})
			if got := hooks[c.status].count(); got != c.deliveries {
				t.Errorf("status %d: %d deliveries, want %d", c.status, got, c.deliveries)
			}
		}
	})
}

func TestPushRetryBackoffDeadLetterAndReplay(t *testing.T) {
	eachSubstrate(t, func(t *testing.T, sub testutil.Substrate) {
		n := start(t, sub)
		var healthy atomic.Bool
		hook := newWebhook(t, func(delivery, int) int {
			if healthy.Load() {
				return 200
			}
			return 500
		})
		if _, err := n.Client.PutSubscription(ctx(t), "mailer", client.Subscription{
			Topic: "mail", Push: &client.Push{URL: hook.URL}, MaxDeliver: 3, Backoff: []string{"200ms", "400ms"},
			DeadLetterTopic: "mail.failed",
		}); err != nil {
			t.Fatal(err)
		}
		if _, err := n.Client.Publish(ctx(t), "mail", client.Event{ID: "mail-1", Type: "mail.send", Data: []byte(`{"to":"a@b"}`)}); err != nil {
			t.Fatal(err)
		}
		testutil.Eventually(t, 15*time.Second, "dead letter", func() bool {
			si, _ := n.Client.GetSubscription(ctx(t), "mailer")
			return si != nil && si.Stats.DeadLettered == 1
		})
		ds := hook.deliveries()
		if len(ds) != 3 {
			t.Fatalf("%d deliveries, want 3", len(ds))
		}
		for i, min := range []time.Duration{200 * time.Millisecond, 400 * time.Millisecond} {
			if gap := ds[i+1].at.Sub(ds[i].at); gap < min {
				t.Errorf("retry %d came after %s, want at least %s", i+1, gap, min)
			}
			if ds[i+1].attempt != strconv.Itoa(i+2) {
				t.Errorf("retry %d has Junction-Delivery %q", i+1, ds[i+1].attempt)
			}
		}
		// The dead letter keeps the event and says why.
		var dl []client.Message
		c, cancel := contextWithTimeout(t, 10*time.Second)
		_ = n.Client.Tail(c, "mail.failed", "all", func(m client.Message) error { dl = append(dl, m); cancel(); return nil })
		if len(dl) != 1 || dl[0].ID != "mail-1" || dl[0].Type != "mail.send" ||
			!strings.Contains(dl[0].Headers["junction-dead-letter-reason"], "http_500") ||
			dl[0].Headers["junction-dead-letter-subscription"] != "mailer" || string(dl[0].Data) != `{"to":"a@b"}` {
			t.Fatalf("dead letter: %+v", dl)
		}
		// Replay goes to this subscription only, once the webhook is fixed.
		other := newWebhook(t, nil)
		if _, err := n.Client.PutSubscription(ctx(t), "audit", client.Subscription{Topic: "mail", Push: &client.Push{URL: other.URL}, Start: "all"}); err != nil {
			t.Fatal(err)
		}
		testutil.Eventually(t, 10*time.Second, "audit sees the original", func() bool { return other.count() == 1 })
		healthy.Store(true)
		got, err := n.Client.ReplayDeadLetters(ctx(t), "mailer", 0)
		if err != nil || got != 1 {
			t.Fatalf("replay: %d %v", got, err)
		}
		testutil.Eventually(t, 10*time.Second, "replayed delivery", func() bool { return hook.count() == 4 })
		if d := hook.deliveries()[3]; d.header.Get("ce-id") != "mail-1" || d.body != `{"to":"a@b"}` {
			t.Fatalf("replayed delivery: %v %q", d.header, d.body)
		}
		si, _ := n.Client.GetSubscription(ctx(t), "mailer")
		if si.Stats.DeadLettered != 0 {
			t.Errorf("dead letters after replay: %d", si.Stats.DeadLettered)
		}
		if again, _ := n.Client.ReplayDeadLetters(ctx(t), "mailer", 0); again != 0 {
			t.Errorf("second replay re-sent %d", again)
		}
		// The other subscription did not get the replay.
		testutil.Eventually(t, 10*time.Second, "audit settled", func() bool {
			si, _ := n.Client.GetSubscription(ctx(t), "audit")
			return si.Stats.Pending == 0 && si.Stats.InFlight == 0
		})
		if other.count() != 1 {
			t.Errorf("replay leaked to another subscription: %d deliveries", other.count())
		}
	})
}

func TestOrderedByKey(t *testing.T) {
	eachSubstrate(t, func(t *testing.T, sub testutil.Substrate) {
		n := start(t, sub)
		const keys, perKey = 4, 15
		var mu sync.Mutex
		inflight := map[string]int{}
		seen := map[string][]int{}
		failedOnce := map[string]bool{}
		var maxAll, all, violations int
		hook := newWebhook(t, nil)
		hook.respond = func(d delivery, _ int) int {
			key := d.header.Get("ce-partitionkey")
			var v struct{ N int }
			_ = json.Unmarshal([]byte(d.body), &v)
			mu.Lock()
			inflight[key]++
			all++
			if inflight[key] > 1 {
				violations++
			}
			maxAll = max(maxAll, all)
			fail := v.N == 5 && !failedOnce[key]
			if fail {
				failedOnce[key] = true
			}
			mu.Unlock()
			time.Sleep(5 * time.Millisecond) // hold the call so overlap is observable
			mu.Lock()
			inflight[key]--
			all--
			if !fail {
				seen[key] = append(seen[key], v.N)
			}
			mu.Unlock()
			if fail {
				return 503
			}
			return 200
		}
		if _, err := n.Client.PutSubscription(ctx(t), "ledger", client.Subscription{
			Topic: "accounts", Push: &client.Push{URL: hook.URL}, OrderedByKey: true, MaxInFlight: 16, Backoff: []string{"50ms"},
		}); err != nil {
			t.Fatal(err)
		}
		var evs []client.Event
		for i := range perKey {
			for k := range keys {
				evs = append(evs, client.Event{Key: fmt.Sprintf("acct-%d", k), Data: fmt.Appendf(nil, `{"n":%d}`, i)})
			}
		}
		if _, err := n.Client.PublishBatch(ctx(t), "accounts", evs); err != nil {
			t.Fatal(err)
		}
		testutil.Eventually(t, 20*time.Second, "all delivered", func() bool {
			mu.Lock()
			defer mu.Unlock()
			total := 0
			for _, s := range seen {
				total += len(s)
			}
			return total == keys*perKey
		})
		mu.Lock()
		defer mu.Unlock()
		if violations > 0 {
			t.Errorf("%d times a key had two deliveries in flight", violations)
		}
		if maxAll < 2 {
			t.Errorf("different keys never ran in parallel (max concurrency %d)", maxAll)
		}
		for k, s := range seen {
			for i, v := range s {
				if v != i {
					t.Fatalf("key %s delivered out of order: %v", k, s)
				}
			}
		}
	})
}

// A webhook slower than ack_wait is told "in progress", not called again
// in parallel.
func TestSlowWebhookIsNotDeliveredTwice(t *testing.T) {
	n := start(t, testutil.Embedded)
	release := make(chan struct{})
	hook := newWebhook(t, func(delivery, int) int { <-release; return 200 })
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	if _, err := n.Client.PutSubscription(ctx(t), "slow", client.Subscription{
		Topic: "slowt", Push: &client.Push{URL: hook.URL, Timeout: "10s"}, AckWait: "1s",
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Client.Publish(ctx(t), "slowt", client.Event{Data: []byte("{}")}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "first call", func() bool { return hook.count() == 1 })
	// Three ack_waits pass while the call runs.
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if c := hook.count(); c != 1 {
			t.Fatalf("webhook called %d times during one slow call", c)
		}
		time.Sleep(50 * time.Millisecond)
	}
	close(release)
	testutil.Eventually(t, 10*time.Second, "acknowledged", func() bool {
		si, _ := n.Client.GetSubscription(ctx(t), "slow")
		return si.Stats.InFlight == 0 && si.Stats.Pending == 0
	})
	if c := hook.count(); c != 1 {
		t.Fatalf("webhook called %d times", c)
	}
}

// With tracing on, each hop records a span: the API request, the publish
// (its child) and the delivery (the publish's child), and the webhook gets
// the delivery span as its parent.
func TestSpansAcrossPublishAndDelivery(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	n := testutil.Start(t, testutil.Config(t, testutil.Embedded), junction.WithTracerProvider(tp))
	hook := newWebhook(t, nil)
	if _, err := n.Client.PutSubscription(ctx(t), "traced", client.Subscription{Topic: "spans", Push: &client.Push{URL: hook.URL}}); err != nil {
		t.Fatal(err)
	}
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	st, _, body := testutil.Do(t, "POST", n.URL+"/v1/topics/spans/messages", map[string]string{
		"traceparent": "00-" + traceID + "-00f067aa0ba902b7-01"}, "x")
	if st != 202 {
		t.Fatalf("publish: %d %s", st, body)
	}
	testutil.Eventually(t, 10*time.Second, "delivery", func() bool { return hook.count() == 1 })
	byName := map[string]sdktrace.ReadOnlySpan{}
	testutil.Eventually(t, 10*time.Second, "three spans", func() bool {
		for _, s := range rec.Ended() {
			byName[s.Name()] = s
		}
		return byName["POST /v1/topics/{topic}/messages"] != nil && byName["publish spans"] != nil && byName["deliver traced"] != nil
	})
	api, pub, del := byName["POST /v1/topics/{topic}/messages"], byName["publish spans"], byName["deliver traced"]
	if api.Parent().SpanID().String() != "00f067aa0ba902b7" || api.SpanContext().TraceID().String() != traceID {
		t.Errorf("API span parent %s trace %s", api.Parent().SpanID(), api.SpanContext().TraceID())
	}
	if pub.Parent().SpanID() != api.SpanContext().SpanID() || del.Parent().SpanID() != pub.SpanContext().SpanID() {
		t.Errorf("span chain broken: publish parent %s (api %s), deliver parent %s (publish %s)",
			pub.Parent().SpanID(), api.SpanContext().SpanID(), del.Parent().SpanID(), pub.SpanContext().SpanID())
	}
	want := "00-" + traceID + "-" + del.SpanContext().SpanID().String() + "-01"
	if got := hook.deliveries()[0].header.Get("traceparent"); got != want {
		t.Errorf("webhook traceparent %q, want %q", got, want)
	}
}

// recordedLog keeps the messages of a node's log.
type recordedLog struct {
	mu   sync.Mutex
	msgs []string
}

func (l *recordedLog) Enabled(context.Context, slog.Level) bool { return true }
func (l *recordedLog) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.msgs = append(l.msgs, r.Message)
	return nil
}
func (l *recordedLog) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *recordedLog) WithGroup(string) slog.Handler      { return l }

func (l *recordedLog) count(msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, m := range l.msgs {
		if m == msg {
			n++
		}
	}
	return n
}

// TestPutSubscriptionStartsOneDispatcher: a new push subscription is
// reconciled twice on the node that creates it (by the call itself and
// by the KV watch); the two must not both start delivery, as the one
// then stopped hands back what it fetched and spends a delivery that
// the endpoint never sees.
func TestPutSubscriptionStartsOneDispatcher(t *testing.T) {
	eachSubstrate(t, func(t *testing.T, sub testutil.Substrate) {
		log := &recordedLog{}
		n := testutil.Start(t, testutil.Config(t, sub), junction.WithLogger(slog.New(log)))
		hook := newWebhook(t, nil)
		const subs = 20
		for i := range subs {
			name := fmt.Sprintf("one%d", i)
			if _, err := n.Client.PutSubscription(ctx(t), name, client.Subscription{Topic: name, Push: &client.Push{URL: hook.URL}}); err != nil {
				t.Fatal(err)
			}
			if _, err := n.Client.Publish(ctx(t), name, client.Event{ID: "x", Data: []byte(`{}`)}); err != nil {
				t.Fatal(err)
			}
		}
		testutil.Eventually(t, 15*time.Second, "every message delivered", func() bool { return hook.count() >= subs })
		if started, stopped := log.count("push delivery started"), log.count("push delivery stopped"); started != subs || stopped != 0 {
			t.Errorf("%d dispatchers started and %d stopped for %d new subscriptions", started, stopped, subs)
		}
		if got := hook.count(); got != subs {
			t.Errorf("%d deliveries, want %d", got, subs)
		}
	})
}
