package bus_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/junctionhq/junction/client"
	"github.com/junctionhq/junction/internal/testutil"
)

func TestPullWorkQueueCompetingConsumers(t *testing.T) {
	eachSubstrate(t, func(t *testing.T, sub testutil.Substrate) {
		n := start(t, sub)
		if _, err := n.Client.PutSubscription(ctx(t), "jobs", client.Subscription{Topic: "work"}); err != nil {
			t.Fatal(err)
		}
		const total, workers = 300, 4
		var evs []client.Event
		for i := range total {
			evs = append(evs, client.Event{ID: fmt.Sprintf("job-%d", i), Data: fmt.Appendf(nil, "%d", i)})
		}
		if _, err := n.Client.PublishBatch(ctx(t), "work", evs); err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		got := map[string]int{}
		perWorker := make([]int, workers)
		var wg sync.WaitGroup
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					msgs, err := n.Client.Pull(ctx(t), "jobs", 7, 200*time.Millisecond)
					if err != nil {
						t.Error(err)
						return
					}
					if len(msgs) == 0 {
						return
					}
					ids := make([]string, len(msgs))
					mu.Lock()
					for i, m := range msgs {
						got[m.ID]++
						ids[i] = m.AckID
					}
					perWorker[w] += len(msgs)
					mu.Unlock()
					if err := n.Client.Ack(ctx(t), "jobs", ids...); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		if len(got) != total {
			t.Fatalf("got %d distinct messages, want %d", len(got), total)
		}
		for id, c := range got {
			if c != 1 {
				t.Errorf("%s delivered %d times", id, c)
			}
		}
		busy := 0
		for _, c := range perWorker {
			if c > 0 {
				busy++
			}
		}
		if busy < 2 {
			t.Errorf("work was not shared: %v", perWorker)
		}
		si, _ := n.Client.GetSubscription(ctx(t), "jobs")
		if si.Stats.Pending != 0 || si.Stats.InFlight != 0 {
			t.Errorf("stats after acking all: %+v", si.Stats)
		}
	})
}

func TestPullNackRejectAndRedelivery(t *testing.T) {
	eachSubstrate(t, func(t *testing.T, sub testutil.Substrate) {
		n := start(t, sub)
		if _, err := n.Client.PutSubscription(ctx(t), "q", client.Subscription{Topic: "tasks", AckWait: "1s", MaxDeliver: 3}); err != nil {
			t.Fatal(err)
		}
		pull1 := func(wait time.Duration) *client.Message {
			t.Helper()
			ms, err := n.Client.Pull(ctx(t), "q", 1, wait)
			if err != nil {
				t.Fatal(err)
			}
			if len(ms) == 0 {
				return nil
			}
			return &ms[0]
		}
		// An empty queue answers after the wait with no messages.
		began := time.Now()
		if m := pull1(300 * time.Millisecond); m != nil || time.Since(began) < 250*time.Millisecond {
			t.Fatalf("empty pull: %v after %s", m, time.Since(began))
		}
		// A waiting puller gets a message as soon as it is published.
		done := make(chan *client.Message)
		go func() { done <- pull1(10 * time.Second) }()
		time.AfterFunc(100*time.Millisecond, func() {
			_, _ = n.Client.Publish(ctx(t), "tasks", client.Event{ID: "t1", Data: []byte("one")})
		})
		m := <-done
		if m == nil || m.ID != "t1" || m.Deliveries != 1 || string(m.Bytes()) != "one" {
			t.Fatalf("waiting pull got %+v", m)
		}
		// Nack with delay: not before the delay, then again with deliveries=2.
		if err := n.Client.Nack(ctx(t), "q", 400*time.Millisecond, m.AckID); err != nil {
			t.Fatal(err)
		}
		nacked := time.Now()
		if again := pull1(0); again != nil {
			t.Fatalf("nacked message came back before its delay: %+v", again)
		}
		m = pull1(5 * time.Second)
		if m == nil || m.ID != "t1" || m.Deliveries != 2 || time.Since(nacked) < 350*time.Millisecond {
			t.Fatalf("after nack: %+v after %s", m, time.Since(nacked))
		}
		// Not acknowledged within ack_wait: delivered again.
		m = pull1(5 * time.Second)
		if m == nil || m.ID != "t1" || m.Deliveries != 3 {
			t.Fatalf("after ack_wait: %+v", m)
		}
		// Ignored past max_deliver: dead-lettered, not handed out again.
		if m = pull1(2500 * time.Millisecond); m != nil {
			t.Fatalf("message past max_deliver handed out: %+v", m)
		}
		testutil.Eventually(t, 5*time.Second, "dead letter", func() bool {
			si, _ := n.Client.GetSubscription(ctx(t), "q")
			return si.Stats.DeadLettered == 1
		})
		// Reject dead-letters at once.
		if _, err := n.Client.Publish(ctx(t), "tasks", client.Event{ID: "t2", Data: []byte("two")}); err != nil {
			t.Fatal(err)
		}
		m = pull1(5 * time.Second)
		if m == nil || m.ID != "t2" {
			t.Fatalf("pull t2: %+v", m)
		}
		if err := n.Client.Reject(ctx(t), "q", m.AckID); err != nil {
			t.Fatal(err)
		}
		si, _ := n.Client.GetSubscription(ctx(t), "q")
		if si.Stats.DeadLettered != 2 || si.Stats.InFlight != 0 {
			t.Fatalf("after reject: %+v", si.Stats)
		}
		var dl []client.Message
		c, cancel := contextWithTimeout(t, 10*time.Second)
		_ = n.Client.Tail(c, "q.dlq", "all", func(m client.Message) error {
			if dl = append(dl, m); len(dl) == 2 {
				cancel()
			}
			return nil
		})
		if len(dl) != 2 || dl[0].ID != "t1" || dl[1].ID != "t2" || dl[1].Headers["junction-dead-letter-reason"] != "rejected" ||
			!strings.Contains(dl[0].Headers["junction-dead-letter-reason"], "max_deliver") {
			t.Fatalf("dead letters: %+v", dl)
		}
	})
}

func TestAckIDsAreCheckedAndSettlingIsValidated(t *testing.T) {
	n := start(t, testutil.Embedded)
	for _, s := range []string{"a", "b"} {
		if _, err := n.Client.PutSubscription(ctx(t), s, client.Subscription{Topic: "shared", Start: "all"}); err != nil {
			t.Fatal(err)
		}
	}
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	if st, _, _ := testutil.Do(t, "POST", n.URL+"/v1/topics/shared/messages", map[string]string{"traceparent": tp}, "x"); st != 202 {
		t.Fatalf("publish: %d", st)
	}
	ms, err := n.Client.Pull(ctx(t), "a", 1, 5*time.Second)
	if err != nil || len(ms) != 1 {
		t.Fatalf("pull: %v %v", ms, err)
	}
	if ms[0].Headers["traceparent"] != tp {
		t.Fatalf("pulled message lacks the publisher's trace context: %v", ms[0].Headers)
	}
	cases := []struct {
		name, sub, body string
		status          int
		code            string
	}{
		{"ack id of another subscription", "b", `{"ack_ids":["` + ms[0].AckID + `"]}`, 400, "invalid_ack_id"},
		{"garbage ack id", "a", `{"ack_ids":["%%%"]}`, 400, "invalid_ack_id"},
		{"forged subject", "a", `{"ack_ids":["JE5PVC5BLkFDSw"]}`, 400, "invalid_ack_id"},
		{"no ids", "a", `{"ack_ids":[]}`, 422, "validation_failed"},
		{"unknown field", "a", `{"ack_ids":["x"],"bogus":1}`, 422, "validation_failed"},
		{"malformed", "a", `{"ack_ids":`, 400, "bad_json"},
		{"unknown subscription", "zzz", `{"ack_ids":["x"]}`, 404, "subscription_not_found"},
	}
	for _, c := range cases {
		st, _, body := testutil.Do(t, "POST", n.URL+"/v1/subscriptions/"+c.sub+"/ack", nil, c.body)
		if st != c.status || !strings.Contains(body, `"code":"`+c.code+`"`) {
			t.Errorf("%s: %d %s", c.name, st, body)
		}
	}
	if err := n.Client.Ack(ctx(t), "a", ms[0].AckID); err != nil {
		t.Fatalf("valid ack: %v", err)
	}
	// Push subscriptions cannot be pulled.
	hook := newWebhook(t, nil)
	if _, err := n.Client.PutSubscription(ctx(t), "p", client.Subscription{Topic: "shared", Push: &client.Push{URL: hook.URL}}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Client.Pull(ctx(t), "p", 1, 0); apiErr(t, err).Status != 409 {
		t.Fatalf("pull of a push subscription: %v", err)
	}
}

func TestSubscriptionStartPositions(t *testing.T) {
	eachSubstrate(t, func(t *testing.T, sub testutil.Substrate) {
		n := start(t, sub)
		var mid time.Time
		for i := 1; i <= 5; i++ {
			if i == 3 {
				mid = time.Now()
			}
			if _, err := n.Client.Publish(ctx(t), "hist", client.Event{Data: fmt.Appendf(nil, "%d", i)}); err != nil {
				t.Fatal(err)
			}
		}
		cases := map[string]int{"all": 5, "seq:3": 3, "time:" + mid.UTC().Format(time.RFC3339Nano): 3, "new": 0}
		i := 0
		for start, want := range cases {
			i++
			name := fmt.Sprintf("s%d", i)
			if _, err := n.Client.PutSubscription(ctx(t), name, client.Subscription{Topic: "hist", Start: start}); err != nil {
				t.Fatal(err)
			}
			ms, err := n.Client.Pull(ctx(t), name, 100, 200*time.Millisecond)
			if err != nil || len(ms) != want {
				t.Errorf("start %s: got %d messages (%v), want %d", start, len(ms), err, want)
				continue
			}
			if want > 0 && string(ms[0].Bytes()) != fmt.Sprint(6-want) {
				t.Errorf("start %s: first message %q", start, ms[0].Bytes())
			}
		}
	})
}

func TestSubscriptionValidation(t *testing.T) {
	n := start(t, testutil.Embedded)
	cases := []struct{ name, body, field string }{
		{"missing topic", `{}`, "topic"},
		{"bad filter", `{"topic":"t","filter":"event.type =="}`, "filter"},
		{"non-bool filter", `{"topic":"t","filter":"1 + 2"}`, "filter"},
		{"bad start", `{"topic":"t","start":"yesterday"}`, "start"},
		{"bad push url", `{"topic":"t","push":{"url":"ftp://x"}}`, "push.url"},
		{"ordered pull", `{"topic":"t","ordered_by_key":true}`, "ordered_by_key"},
		{"tiny ack_wait", `{"topic":"t","ack_wait":"10ms"}`, "ack_wait"},
		{"bad duration", `{"topic":"t","ack_wait":"soon"}`, ""},
		{"same dlq", `{"topic":"t","dead_letter_topic":"t"}`, "dead_letter_topic"},
	}
	for _, c := range cases {
		st, _, body := testutil.Do(t, "PUT", n.URL+"/v1/subscriptions/s1", nil, c.body)
		if st != 422 || !strings.Contains(body, `"code":"validation_failed"`) || (c.field != "" && !strings.Contains(body, `"field":"`+c.field+`"`)) {
			t.Errorf("%s: %d %s", c.name, st, body)
		}
	}
	st, _, body := testutil.Do(t, "PUT", n.URL+"/v1/subscriptions/bad.name", nil, `{"topic":"t"}`)
	if st != 422 {
		t.Errorf("bad name: %d %s", st, body)
	}
	// Create is 201, update 200, and the list shows it.
	st, _, _ = testutil.Do(t, "PUT", n.URL+"/v1/subscriptions/s1", nil, `{"topic":"t"}`)
	st2, _, _ := testutil.Do(t, "PUT", n.URL+"/v1/subscriptions/s1", nil, `{"topic":"t","max_deliver":9}`)
	if st != 201 || st2 != 200 {
		t.Errorf("create %d, update %d", st, st2)
	}
	ss, err := n.Client.ListSubscriptions(ctx(t))
	if err != nil || len(ss) != 1 || ss[0].Config.MaxDeliver != 9 {
		t.Fatalf("list: %+v %v", ss, err)
	}
	if err := n.Client.DeleteSubscription(ctx(t), "s1"); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Client.GetSubscription(ctx(t), "s1"); apiErr(t, err).Code != "subscription_not_found" {
		t.Fatalf("deleted: %v", err)
	}
}
