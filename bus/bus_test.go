package bus_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/junctionhq/junction/client"
	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/internal/testutil"
)

// eachSubstrate runs the test on the embedded JetStream and on the
// machine's own NATS server through nats.url: the same suite, both ways.
func eachSubstrate(t *testing.T, f func(t *testing.T, sub testutil.Substrate)) {
	for _, s := range []testutil.Substrate{testutil.Embedded, testutil.External} {
		t.Run(string(s), func(t *testing.T) {
			t.Parallel()
			f(t, s)
		})
	}
}

func start(t *testing.T, sub testutil.Substrate) *testutil.Node {
	return testutil.Start(t, testutil.Config(t, sub))
}

// delivery is one webhook call as received.
type delivery struct {
	at      time.Time
	header  http.Header
	body    string
	attempt string
}

// webhook records deliveries; respond decides each answer.
type webhook struct {
	*httptest.Server
	mu      sync.Mutex
	got     []delivery
	respond func(d delivery, n int) int
}

func newWebhook(t *testing.T, respond func(d delivery, n int) int) *webhook {
	w := &webhook{respond: respond}
	w.Server = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		d := delivery{at: time.Now(), header: r.Header.Clone(), body: string(b), attempt: r.Header.Get("Junction-Delivery")}
		w.mu.Lock()
		w.got = append(w.got, d)
		n := len(w.got)
		w.mu.Unlock()
		code := http.StatusNoContent
		if w.respond != nil {
			code = w.respond(d, n)
		}
		rw.WriteHeader(code)
	}))
	t.Cleanup(w.Close)
	return w
}

func (w *webhook) deliveries() []delivery {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]delivery(nil), w.got...)
}

func (w *webhook) count() int { return len(w.deliveries()) }

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

func apiErr(t *testing.T, err error) *client.Error {
	t.Helper()
	var e *client.Error
	if !errors.As(err, &e) {
		t.Fatalf("want an API error, got %v", err)
	}
	return e
}

func TestPublishModes(t *testing.T) {
	eachSubstrate(t, func(t *testing.T, sub testutil.Substrate) {
		n := start(t, sub)
		base := n.URL + "/v1/topics/orders/messages"

		// Binary mode.
		st, _, body := testutil.Do(t, "POST", base, map[string]string{
			"ce-id": "b-1", "ce-type": "order.created", "ce-source": "/shop", "ce-partitionkey": "o-1",
			"ce-traceext": "x", "Content-Type": "application/json"}, `{"total":10}`)
		if st != 202 || !strings.Contains(body, `"id":"b-1"`) || !strings.Contains(body, `"duplicate":false`) {
			t.Fatalf("binary publish: %d %s", st, body)
		}
		// The same id again inside the window is a duplicate, stored once.
		st, _, body = testutil.Do(t, "POST", base, map[string]string{"ce-id": "b-1", "Content-Type": "application/json"}, `{"total":10}`)
		if st != 202 || !strings.Contains(body, `"duplicate":true`) {
			t.Fatalf("duplicate publish: %d %s", st, body)
		}
		// Structured mode.
		st, _, body = testutil.Do(t, "POST", base, map[string]string{"Content-Type": "application/cloudevents+json"},
			`{"specversion":"1.0","id":"s-1","type":"order.paid","source":"/shop","data":{"total":11}}`)
		if st != 202 || !strings.Contains(body, `"id":"s-1"`) {
			t.Fatalf("structured publish: %d %s", st, body)
		}
		// Batch mode: results per item, duplicates flagged.
		st, _, body = testutil.Do(t, "POST", base, map[string]string{"Content-Type": "application/cloudevents-batch+json"},
			`[{"id":"k-1","type":"t","source":"/s","data":1},{"id":"k-2","type":"t","source":"/s","data":2},{"id":"b-1","type":"t","source":"/s"}]`)
		var rs []client.PublishResult
		if st != 202 || json.Unmarshal([]byte(body), &rs) != nil || len(rs) != 3 || rs[0].Duplicate || !rs[2].Duplicate || rs[1].Sequence == 0 {
			t.Fatalf("batch publish: %d %s", st, body)
		}
		ti, err := n.Client.GetTopic(ctx(t), "orders")
		if err != nil || ti.Stats.Messages != 4 {
			t.Fatalf("topic holds %+v (err %v), want 4 messages", ti.Stats, err)
		}

		// Everything read back has its attributes.
		var got []client.Message
		c, cancel := context.WithTimeout(ctx(t), 10*time.Second)
		defer cancel()
		_ = n.Client.Tail(c, "orders", "all", func(m client.Message) error {
			got = append(got, m)
			if len(got) == 4 {
				cancel()
			}
			return nil
		})
		if len(got) != 4 {
			t.Fatalf("tail returned %d messages", len(got))
		}
		if m := got[0]; m.ID != "b-1" || m.Type != "order.created" || m.Source != "/shop" || m.Key != "o-1" ||
			string(m.Data) != `{"total":10}` || m.Headers["ce-traceext"] != "x" {
			t.Fatalf("binary message read back as %+v", m)
		}
		if m := got[1]; m.ID != "s-1" || string(m.Data) != `{"total":11}` {
			t.Fatalf("structured message read back as %+v", m)
		}
	})
}

func TestPublishRejectsBadInputAndStoresNothing(t *testing.T) {
	eachSubstrate(t, func(t *testing.T, sub testutil.Substrate) {
		cfg := testutil.Config(t, sub)
		cfg.Bus.MaxMessageBytes = 1024
		n := testutil.Start(t, cfg)
		base := n.URL + "/v1/topics/limits/messages"
		if _, err := n.Client.PutTopic(ctx(t), "limits", client.Topic{}); err != nil {
			t.Fatal(err)
		}
		cases := []struct {
			name   string
			hdr    map[string]string
			body   string
			status int
			code   string
		}{
			{"binary over limit", map[string]string{"Content-Type": "text/plain"}, strings.Repeat("x", 1025), 413, "payload_too_large"},
			{"batch item over limit", map[string]string{"Content-Type": "application/cloudevents-batch+json"},
				`[{"id":"a","data":"ok"},{"id":"b","data":"` + strings.Repeat("x", 1100) + `"}]`, 413, "payload_too_large"},
			{"batch with a bad item", map[string]string{"Content-Type": "application/cloudevents-batch+json"},
				`[{"id":"a","data":1},{"id":"b","time":"yesterday"}]`, 422, "validation_failed"},
			{"malformed structured", map[string]string{"Content-Type": "application/cloudevents+json"}, `{"id":`, 422, "validation_failed"},
			{"bad specversion", map[string]string{"ce-specversion": "0.3"}, `x`, 422, "validation_failed"},
			{"empty batch", map[string]string{"Content-Type": "application/cloudevents-batch+json"}, `[]`, 422, "validation_failed"},
		}
		for _, c := range cases {
			st, h, body := testutil.Do(t, "POST", base, c.hdr, c.body)
			if st != c.status || !strings.Contains(body, `"code":"`+c.code+`"`) || !strings.HasPrefix(h.Get("Content-Type"), "application/problem+json") {
				t.Errorf("%s: got %d %s %s", c.name, st, h.Get("Content-Type"), body)
			}
		}
		st, _, body := testutil.Do(t, "POST", n.URL+"/v1/topics/bad~name/messages", nil, "x")
		if st != 422 {
			t.Errorf("bad topic name: %d %s", st, body)
		}
		ti, err := n.Client.GetTopic(ctx(t), "limits")
		if err != nil || ti.Stats.Messages != 0 {
			t.Fatalf("rejected input stored something: %+v %v", ti.Stats, err)
		}
	})
}

func TestAutoCreateCanBeTurnedOff(t *testing.T) {
	cfg := testutil.Config(t, testutil.Embedded)
	cfg.Bus.AutoCreateTopics = false
	n := testutil.Start(t, cfg)
	_, err := n.Client.Publish(ctx(t), "nowhere", client.Event{Data: []byte("x")})
	if e := apiErr(t, err); e.Status != 404 || e.Code != "topic_not_found" {
		t.Fatalf("got %v", e)
	}
	if _, err := n.Client.PutTopic(ctx(t), "somewhere", client.Topic{MaxAge: "1h", MaxMsgs: 10}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Client.Publish(ctx(t), "somewhere", client.Event{Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
}

func TestTopicRetentionAndStats(t *testing.T) {
	eachSubstrate(t, func(t *testing.T, sub testutil.Substrate) {
		n := start(t, sub)
		ti, err := n.Client.PutTopic(ctx(t), "capped", client.Topic{MaxMsgs: 3, MaxAge: "1h"})
		if err != nil || ti.Config.MaxMsgs != 3 || ti.Config.MaxAge != "1h0m0s" {
			t.Fatalf("put topic: %+v %v", ti, err)
		}
		for i := range 5 {
			if _, err := n.Client.Publish(ctx(t), "capped", client.Event{Data: fmt.Appendf(nil, "%d", i)}); err != nil {
				t.Fatal(err)
			}
		}
		ti, err = n.Client.GetTopic(ctx(t), "capped")
		if err != nil || ti.Stats.Messages != 3 || ti.Stats.FirstSequence != 3 || ti.Stats.LastSequence != 5 {
			t.Fatalf("retention not applied: %+v %v", ti.Stats, err)
		}
		ts, err := n.Client.ListTopics(ctx(t))
		if err != nil || len(ts) != 1 || ts[0].Name != "capped" {
			t.Fatalf("list: %+v %v", ts, err)
		}
		if err := n.Client.DeleteTopic(ctx(t), "capped"); err != nil {
			t.Fatal(err)
		}
		if _, err := n.Client.GetTopic(ctx(t), "capped"); apiErr(t, err).Code != "topic_not_found" {
			t.Fatalf("deleted topic still there: %v", err)
		}
		if _, err := n.Client.PutTopic(ctx(t), "bad", client.Topic{MaxMsgs: -1}); apiErr(t, err).Status != 422 {
			t.Fatalf("negative max_msgs accepted: %v", err)
		}
	})
}

func contextWithTimeout(t *testing.T, d time.Duration) (context.Context, context.CancelFunc) {
	c, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return c, cancel
}

type (
	junctionSub  = config.Subscription
	junctionPush = config.Push
)

func TestTopicSubscriptionCountAndRefusedSettings(t *testing.T) {
	n := start(t, testutil.Embedded)
	if _, err := n.Client.PutSubscription(ctx(t), "one", client.Subscription{Topic: "counted"}); err != nil {
		t.Fatal(err)
	}
	// An open tail is not a subscription.
	c, cancel := contextWithTimeout(t, 30*time.Second)
	tailing := make(chan struct{})
	go func() {
		_ = n.Client.Tail(c, "counted", "all", func(client.Message) error { close(tailing); return nil })
	}()
	if _, err := n.Client.Publish(ctx(t), "counted", client.Event{Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	<-tailing
	ti, err := n.Client.GetTopic(ctx(t), "counted")
	if err != nil || ti.Stats.Subscriptions != 1 {
		t.Fatalf("subscriptions %+v %v", ti.Stats, err)
	}
	cancel()
	// Three replicas on a single embedded server is the request's fault.
	if _, err := n.Client.PutTopic(ctx(t), "replicated", client.Topic{Replicas: 3}); apiErr(t, err).Status != 422 {
		t.Fatalf("replicas 3: %v", err)
	}
	// A rejected publish does not auto-create its topic.
	st, _, _ := testutil.Do(t, "POST", n.URL+"/v1/topics/ghost/messages", map[string]string{"ce-specversion": "0.3"}, "x")
	if _, err := n.Client.GetTopic(ctx(t), "ghost"); st != 422 || apiErr(t, err).Status != 404 {
		t.Fatalf("rejected publish created its topic (status %d, %v)", st, err)
	}
}
