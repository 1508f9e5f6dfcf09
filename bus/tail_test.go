package bus_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/junctionhq/junction"
	"github.com/junctionhq/junction/client"
	"github.com/junctionhq/junction/internal/testutil"
	"github.com/junctionhq/junction/observe"
)

// sse reads server-sent events from a raw HTTP response.
type sse struct {
	resp *http.Response
	sc   *bufio.Scanner
}

func openSSE(t *testing.T, url string, hdr map[string]string) *sse {
	t.Helper()
	c, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(c, "GET", url, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); resp.Body.Close() })
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("tail: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return &sse{resp: resp, sc: bufio.NewScanner(resp.Body)}
}

// next returns the next event's id and data.
func (s *sse) next(t *testing.T) (id string, m client.Message) {
	t.Helper()
	var data string
	for s.sc.Scan() {
		line := s.sc.Text()
		switch {
		case strings.HasPrefix(line, "id: "):
			id = line[4:]
		case strings.HasPrefix(line, "data: "):
			data = line[6:]
		case line == "" && data != "":
			if err := json.Unmarshal([]byte(data), &m); err != nil {
				t.Fatalf("bad event %q: %v", data, err)
			}
			return id, m
		}
	}
	t.Fatalf("stream ended: %v", s.sc.Err())
	return
}

func TestTailReplaysThenFollowsLive(t *testing.T) {
	eachSubstrate(t, func(t *testing.T, sub testutil.Substrate) {
		n := start(t, sub)
		for i := 1; i <= 3; i++ {
			if _, err := n.Client.Publish(ctx(t), "feed", client.Event{Data: fmt.Appendf(nil, `{"n":%d}`, i)}); err != nil {
				t.Fatal(err)
			}
		}
		s := openSSE(t, n.URL+"/v1/topics/feed/tail?from=seq:2", nil)
		for _, want := range []string{"2", "3"} {
			if id, m := s.next(t); id != want || fmt.Sprint(m.Sequence) != want || string(m.Data) != `{"n":`+want+`}` {
				t.Fatalf("replay: id %s %+v", id, m)
			}
		}
		if _, err := n.Client.Publish(ctx(t), "feed", client.Event{Data: []byte(`{"n":4}`)}); err != nil {
			t.Fatal(err)
		}
		if id, m := s.next(t); id != "4" || string(m.Data) != `{"n":4}` {
			t.Fatalf("live: id %s %+v", id, m)
		}
		// A reconnecting EventSource resumes after Last-Event-ID.
		r := openSSE(t, n.URL+"/v1/topics/feed/tail?from=all", map[string]string{"Last-Event-ID": "3"})
		if id, _ := r.next(t); id != "4" {
			t.Fatalf("resume got id %s, want 4", id)
		}
		st, _, body := testutil.Do(t, "GET", n.URL+"/v1/topics/feed/tail?from=later", nil, "")
		if st != 422 {
			t.Fatalf("bad from: %d %s", st, body)
		}
		st, _, _ = testutil.Do(t, "GET", n.URL+"/v1/topics/missing/tail", nil, "")
		if st != 404 {
			t.Fatalf("missing topic tail: %d", st)
		}
	})
}

func TestSubscriptionsSurviveRestartAndConfigDeclares(t *testing.T) {
	hook := newWebhook(t, nil)
	cfg := testutil.Config(t, testutil.Embedded)
	cfg.Subscriptions = map[string]*junctionSub{
		"declared": {Topic: "events", Push: &junctionPush{URL: hook.URL + "/declared"}},
	}
	n := testutil.Start(t, cfg)
	if _, err := n.Client.PutSubscription(ctx(t), "dynamic", client.Subscription{Topic: "events", Push: &client.Push{URL: hook.URL + "/dynamic"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Client.PutSubscription(ctx(t), "puller", client.Subscription{Topic: "events"}); err != nil {
		t.Fatal(err)
	}
	n.Stop(t)

	n2 := testutil.Start(t, cfg)
	if _, err := n2.Client.Publish(ctx(t), "events", client.Event{ID: "after-restart", Data: []byte("{}")}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "both push subscriptions deliver", func() bool { return hook.count() == 2 })
	ms, err := n2.Client.Pull(ctx(t), "puller", 10, 5*time.Second)
	if err != nil || len(ms) != 1 || ms[0].ID != "after-restart" {
		t.Fatalf("pull after restart: %+v %v", ms, err)
	}
	paths := map[string]bool{}
	for _, d := range hook.deliveries() {
		paths[d.header.Get("Junction-Subscription")] = true
	}
	if !paths["declared"] || !paths["dynamic"] {
		t.Fatalf("deliveries from %v", paths)
	}
}

// A webhook slower than the publisher must not make Junction buffer the
// backlog in memory: JetStream holds it, and the node keeps at most
// max_in_flight messages.
func TestSlowConsumerMemoryStaysBounded(t *testing.T) {
	const maxInFlight, total, size = 8, 1500, 16 << 10 // 24 MB of payload
	reg := observe.NewRegistry()
	cfg := testutil.Config(t, testutil.External) // keep the store out of this process's heap
	n := testutil.Start(t, cfg, junction.WithRegistry(reg))
	var concurrent, peak atomic.Int64
	release := make(chan struct{})
	hook := newWebhook(t, nil)
	hook.respond = func(delivery, int) int {
		c := concurrent.Add(1)
		for p := peak.Load(); c > p && !peak.CompareAndSwap(p, c); p = peak.Load() {
		}
		<-release
		concurrent.Add(-1)
		return 200
	}
	if _, err := n.Client.PutSubscription(ctx(t), "slow", client.Subscription{
		Topic: "bulk", Push: &client.Push{URL: hook.URL, Timeout: "30s"}, MaxInFlight: maxInFlight, AckWait: "60s",
	}); err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	runtime.GC() // twice: sync.Pool victims survive one collection
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	payload := strings.Repeat("x", size)
	for i := 0; i < total; i += 100 {
		var evs []client.Event
		for j := range 100 {
			evs = append(evs, client.Event{ID: fmt.Sprint(i + j), ContentType: "text/plain", Data: []byte(payload)})
		}
		if _, err := n.Client.PublishBatch(ctx(t), "bulk", evs); err != nil {
			t.Fatal(err)
		}
	}
	// With every webhook call blocked, the dispatcher holds what it has.
	testutil.Eventually(t, 10*time.Second, "webhook saturated", func() bool { return concurrent.Load() == maxInFlight })
	runtime.GC()
	runtime.GC()
	var during runtime.MemStats
	runtime.ReadMemStats(&during)
	buffered := gauge(t, reg, "junction_bus_push_buffered")
	if buffered > maxInFlight {
		t.Errorf("%v messages buffered, want at most %d", buffered, maxInFlight)
	}
	growth := int64(during.HeapAlloc) - int64(before.HeapAlloc)
	if growth > 8<<20 {
		t.Errorf("live heap grew by %d MB while %d MB waited for a slow consumer", growth>>20, total*size>>20)
	}
	var once sync.Once
	stop := func() { once.Do(func() { close(release) }) }
	t.Cleanup(stop)
	stop()
	testutil.Eventually(t, 60*time.Second, "backlog delivered", func() bool { return hook.count() >= total })
	if p := peak.Load(); p > maxInFlight {
		t.Errorf("peak concurrency %d exceeds max_in_flight %d", p, maxInFlight)
	}
	t.Logf("payload %d MB, live heap growth %d KB, peak concurrency %d", total*size>>20, growth>>10, peak.Load())
}

func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetGauge().GetValue()
			}
		}
	}
	return sum
}
