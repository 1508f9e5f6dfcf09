package mesh_test

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
	"sync/atomic"
	"testing"
	"time"

	jclient "github.com/junctionhq/junction/client"
	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/internal/testutil"
	"github.com/junctionhq/junction/mesh"
)

// backend is a real HTTP server standing for one service instance.
type backend struct {
	*httptest.Server
	name     string
	hits     atomic.Int64
	inflight atomic.Int64
	mu       sync.Mutex
	status   int           // answer status (0 = 200)
	delay    time.Duration // before answering
	last     http.Header
}

func newBackend(t *testing.T, name string) *backend {
	b := &backend{name: name}
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			b.mu.Lock()
			st := b.status
			b.mu.Unlock()
			if st >= 500 {
				w.WriteHeader(st)
			}
			return
		}
		b.hits.Add(1)
		b.inflight.Add(1)
		defer b.inflight.Add(-1)
		b.mu.Lock()
		st, d := b.status, b.delay
		b.last = r.Header.Clone()
		b.mu.Unlock()
		if d > 0 {
			select {
			case <-time.After(d):
			case <-r.Context().Done():
				return
			}
		}
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Backend", b.name)
		w.Header().Set("Content-Type", "application/json")
		if st != 0 {
			w.WriteHeader(st)
		}
		_ = json.NewEncoder(w).Encode(map[string]any{
			"backend": b.name, "method": r.Method, "path": r.URL.Path, "raw_path": r.URL.RawPath,
			"query": r.URL.RawQuery, "body": string(body),
		})
	}))
	t.Cleanup(b.Close)
	return b
}

func (b *backend) set(status int, delay time.Duration) {
	b.mu.Lock()
	b.status, b.delay = status, delay
	b.mu.Unlock()
}

func (b *backend) header() http.Header {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.last
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func nodeWith(t *testing.T, mutate func(*config.Config)) *testutil.Node {
	cfg := testutil.Config(t, testutil.Embedded)
	if mutate != nil {
		mutate(cfg)
	}
	return testutil.Start(t, cfg)
}

func svc(policy string, urls ...string) *config.Service {
	s := &config.Service{Policy: policy}
	for _, u := range urls {
		s.Instances = append(s.Instances, config.Instance{URL: u})
	}
	return s
}

func services(t *testing.T, n *testutil.Node) map[string]mesh.ServiceInfo {
	st, _, body := testutil.Do(t, "GET", n.URL+"/v1/services", nil, "")
	if st != 200 {
		t.Fatalf("GET /v1/services: %d %s", st, body)
	}
	var ss []mesh.ServiceInfo
	if err := json.Unmarshal([]byte(body), &ss); err != nil {
		t.Fatal(err)
	}
	out := map[string]mesh.ServiceInfo{}
	for _, s := range ss {
		out[s.Name] = s
	}
	return out
}

func TestInvokePassesThrough(t *testing.T) {
	b := newBackend(t, "a")
	n := nodeWith(t, func(c *config.Config) {
		c.API.Token = "secret"
		c.Services = map[string]*config.Service{"orders": svc("", b.URL)}
	})
	auth := map[string]string{"Authorization": "Bearer secret"}
	hdr := map[string]string{
		"Authorization": "Bearer secret", "Content-Type": "text/plain", "X-Custom": "v",
		"Connection": "X-Hop", "X-Hop": "drop me", "X-Forwarded-For": "10.1.1.1",
		"traceparent":      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		mesh.TimeoutHeader: "2s", mesh.CallerHeader: "forged",
	}
	st, h, body := testutil.Do(t, "PUT", n.URL+"/v1/invoke/orders/items/a%2Fb?x=1&y=2", hdr, "hello")
	if st != 200 || h.Get("X-Backend") != "a" {
		t.Fatalf("invoke: %d %s", st, body)
	}
	var got map[string]string
	_ = json.Unmarshal([]byte(body), &got)
	want := map[string]string{"method": "PUT", "path": "/items/a/b", "raw_path": "/items/a%2Fb", "query": "x=1&y=2", "body": "hello"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	bh := b.header()
	switch {
	case bh.Get("Authorization") != "":
		t.Errorf("the API token reached the service")
	case bh.Get("X-Custom") != "v":
		t.Errorf("X-Custom lost")
	case bh.Get("X-Hop") != "":
		t.Errorf("a hop-by-hop header (named in Connection) was forwarded")
	case bh.Get("X-Forwarded-For") != "10.1.1.1, 127.0.0.1":
		t.Errorf("X-Forwarded-For = %q", bh.Get("X-Forwarded-For"))
	case bh.Get("X-Forwarded-Proto") != "http" || bh.Get("X-Forwarded-Host") == "":
		t.Errorf("X-Forwarded-Proto/Host = %q %q", bh.Get("X-Forwarded-Proto"), bh.Get("X-Forwarded-Host"))
	case !strings.Contains(bh.Get("traceparent"), "4bf92f3577b34da6a3ce929d0e0e4736"):
		t.Errorf("traceparent = %q", bh.Get("traceparent"))
	case bh.Get(mesh.CallerHeader) != "":
		t.Errorf("a caller identity from outside was forwarded")
	}
	if d, err := time.ParseDuration(bh.Get(mesh.TimeoutHeader)); err != nil || d > 2*time.Second || d < time.Second {
		t.Errorf("%s = %q, want a little under 2s", mesh.TimeoutHeader, bh.Get(mesh.TimeoutHeader))
	}
	// The service's root, with or without the trailing slash.
	for _, p := range []string{"/v1/invoke/orders", "/v1/invoke/orders/"} {
		st, _, body := testutil.Do(t, "GET", n.URL+p, auth, "")
		if st != 200 || !strings.Contains(body, `"path":"/"`) {
			t.Errorf("GET %s: %d %s", p, st, body)
		}
	}
	// A status passes through as it is, and so does a 404 from the app.
	b.set(404, 0)
	if st, _, _ := testutil.Do(t, "GET", n.URL+"/v1/invoke/orders/x", auth, ""); st != 404 {
		t.Errorf("404 from the app came back as %d", st)
	}
	// Unknown service: problem+json.
	st, h, body = testutil.Do(t, "GET", n.URL+"/v1/invoke/nope/x", auth, "")
	if st != 404 || !strings.Contains(body, `"service_not_found"`) || h.Get("Content-Type") != "application/problem+json" {
		t.Errorf("unknown service: %d %s", st, body)
	}
}

func TestRegistrationExpiresAndIsSharedAcrossNodes(t *testing.T) {
	testutil.RequireService(t, "NATS", strings.TrimPrefix(testutil.ExternalNATSURL(), "nats://"))
	b := newBackend(t, "dyn")
	cfg1 := testutil.Config(t, testutil.External)
	n1 := testutil.Start(t, cfg1)
	cfg2 := testutil.Config(t, testutil.External)
	cfg2.NATS.Prefix = cfg1.NATS.Prefix
	n2 := testutil.Start(t, cfg2)
	n2.KeepNATS = true

	st, _, body := testutil.Do(t, "PUT", n1.URL+"/v1/services/billing/instances/b1", nil,
		fmt.Sprintf(`{"url":%q,"ttl":"1s","metadata":{"zone":"a"}}`, b.URL))
	if st != 201 {
		t.Fatalf("register: %d %s", st, body)
	}
	// The other node sees it through the registry and can call it.
	testutil.Eventually(t, 5*time.Second, "node 2 sees the registration", func() bool {
		return len(services(t, n2)["billing"].Instances) == 1
	})
	if st, _, body := testutil.Do(t, "GET", n2.URL+"/v1/invoke/billing/ping", nil, ""); st != 200 {
		t.Fatalf("invoke via node 2: %d %s", st, body)
	}
	// Heartbeats keep it alive past its TTL...
	for range 6 {
		time.Sleep(300 * time.Millisecond) // the heartbeat period itself
		if st, _, body := testutil.Do(t, "PUT", n1.URL+"/v1/services/billing/instances/b1", nil, fmt.Sprintf(`{"url":%q,"ttl":"1s"}`, b.URL)); st != 200 {
			t.Fatalf("heartbeat: %d %s", st, body)
		}
	}
	if len(services(t, n2)["billing"].Instances) != 1 {
		t.Fatal("the registration expired despite heartbeats")
	}
	// ...and without them it expires on both nodes.
	stopped := time.Now()
	testutil.Eventually(t, 5*time.Second, "expiry on both nodes", func() bool {
		_, ok1 := services(t, n1)["billing"]
		_, ok2 := services(t, n2)["billing"]
		return !ok1 && !ok2
	})
	if el := time.Since(stopped); el < 500*time.Millisecond {
		t.Errorf("expired %s after the last heartbeat, before its 1s TTL", el)
	}
	st, _, body = testutil.Do(t, "GET", n2.URL+"/v1/invoke/billing/ping", nil, "")
	if st != 404 || !strings.Contains(body, "service_not_found") {
		t.Errorf("after expiry: %d %s", st, body)
	}
}

// load sends n GETs from c concurrent callers and returns the statuses.
func load(t *testing.T, url string, n, c int) map[int]int {
	var mu sync.Mutex
	got := map[int]int{}
	var wg sync.WaitGroup
	next := atomic.Int64{}
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				st := 0
				if resp, err := http.Get(url); err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					st = resp.StatusCode
				}
				mu.Lock()
				got[st]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return got
}

func TestStoppedInstanceLosesTrafficWithoutFailedRequests(t *testing.T) {
	bs := []*backend{newBackend(t, "a"), newBackend(t, "b"), newBackend(t, "c")}
	const interval = 100 * time.Millisecond
	n := nodeWith(t, func(c *config.Config) {
		s := svc("", bs[0].URL, bs[1].URL, bs[2].URL)
		s.Health = &config.Health{Path: "/healthz", Interval: config.Duration(interval)}
		c.Services = map[string]*config.Service{"stock": s}
	})
	url := n.URL + "/v1/invoke/stock/items"
	if got := load(t, url, 300, 6); got[200] != 300 {
		t.Fatalf("before: %v", got)
	}
	// Stop b while callers keep going: every request must still succeed
	// (connection failures are retried on another instance).
	done := make(chan map[int]int)
	go func() { done <- load(t, url, 1500, 6) }()
	bs[1].CloseClientConnections()
	bs[1].Close()
	stopped := time.Now()
	testutil.Eventually(t, 5*time.Second, "b marked unhealthy", func() bool {
		for _, in := range services(t, n)["stock"].Instances {
			if in.URL == bs[1].URL {
				return in.Health == mesh.HealthUnhealthy
			}
		}
		return false
	})
	took := time.Since(stopped)
	got := <-done
	if got[200] != 1500 {
		t.Fatalf("requests failed while an instance stopped: %v", got)
	}
	// Two failed checks (the unhealthy threshold) one interval apart,
	// plus scheduling slack.
	if took > 4*interval+time.Second {
		t.Errorf("b was marked unhealthy only after %s", took)
	}
	t.Logf("b marked unhealthy %s after it stopped", took.Round(time.Millisecond))
	before := bs[0].hits.Load() + bs[2].hits.Load()
	if got := load(t, url, 200, 4); got[200] != 200 {
		t.Fatalf("after: %v", got)
	}
	if d := bs[0].hits.Load() + bs[2].hits.Load() - before; d != 200 {
		t.Errorf("a and c served %d of 200 after b left", d)
	}
}

func TestFailingInstanceTripsItsBreaker(t *testing.T) {
	bs := []*backend{newBackend(t, "a"), newBackend(t, "b")}
	bs[1].set(500, 0)
	n := nodeWith(t, func(c *config.Config) {
		s := svc("strict", bs[0].URL, bs[1].URL)
		// No passive ejection here: this test is about the breaker. Round
		// robin makes sure b gets its share of first attempts.
		s.Outlier.ConsecutiveFailures = 1000
		s.Balancer = "round_robin"
		c.Services = map[string]*config.Service{"pay": s}
		c.Policies = map[string]*config.Policy{"strict": {CircuitBreaker: &config.CircuitBreaker{
			FailureRatio: 0.5, MinRequests: 10, OpenFor: config.Duration(time.Minute)}}}
	})
	got := load(t, n.URL+"/v1/invoke/pay/x", 200, 4)
	if got[200] != 200 {
		t.Fatalf("idempotent calls failed although a healthy instance was there: %v", got)
	}
	var b mesh.InstanceInfo
	for _, in := range services(t, n)["pay"].Instances {
		if in.URL == bs[1].URL {
			b = in
		}
	}
	if b.Breaker != "open" || b.Available {
		t.Fatalf("b's breaker is %q (available %v), want open", b.Breaker, b.Available)
	}
	// With its breaker open, b gets nothing more.
	hits := bs[1].hits.Load()
	load(t, n.URL+"/v1/invoke/pay/x", 100, 4)
	if d := bs[1].hits.Load() - hits; d != 0 {
		t.Errorf("b got %d calls with its breaker open", d)
	}
	if hits > 40 {
		t.Errorf("b got %d calls before its breaker opened (min_requests 10)", hits)
	}
	// The service's own breaker saw only successes (the retries worked).
	if s := services(t, n)["pay"]; s.Breaker != "closed" {
		t.Errorf("service breaker %q", s.Breaker)
	}
}

func TestSlowInstanceGetsASmallShare(t *testing.T) {
	bs := []*backend{newBackend(t, "a"), newBackend(t, "b"), newBackend(t, "slow")}
	bs[2].set(0, 30*time.Millisecond)
	n := nodeWith(t, func(c *config.Config) {
		c.Services = map[string]*config.Service{"search": svc("", bs[0].URL, bs[1].URL, bs[2].URL)}
	})
	got := load(t, n.URL+"/v1/invoke/search/q", 1500, 6)
	if got[200] != 1500 {
		t.Fatalf("%v", got)
	}
	slow := bs[2].hits.Load()
	share := float64(slow) / 1500
	t.Logf("slow instance share %.3f (%d of 1500); fast: %d, %d", share, slow, bs[0].hits.Load(), bs[1].hits.Load())
	// Round robin would give it a third; under the race detector on a
	// busy machine fast calls slow down too, so the margin is generous.
	if share > 0.12 {
		t.Errorf("the slow instance got %.1f%% of calls; round robin would give 33%%", share*100)
	}
}

// The Go client covers the registry and invocation, and tells Junction's
// refusals from a service's own error answers.
func TestGoClient(t *testing.T) {
	b := newBackend(t, "a")
	n := nodeWith(t, nil)
	c := n.Client
	in, err := c.Register(ctx(t), "billing", "b1", jclient.Registration{URL: b.URL, TTL: "1m", Weight: 2})
	if err != nil || in.ID != "b1" || in.Weight != 2 || in.Source != "registered" {
		t.Fatalf("register: %+v %v", in, err)
	}
	resp, err := c.Invoke(ctx(t), "POST", "billing", "/charges", nil, strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"path":"/charges"`) {
		t.Fatalf("invoke: %d %s", resp.StatusCode, body)
	}
	// The service's own 404 is an answer, not an error...
	b.set(404, 0)
	resp, err = c.Invoke(ctx(t), "GET", "billing", "/nope", nil, nil)
	if err != nil || resp.StatusCode != 404 {
		t.Fatalf("service 404: %v %v", resp, err)
	}
	resp.Body.Close()
	// ...while Junction's refusal is an *Error with its code.
	_, err = c.Invoke(ctx(t), "GET", "nosuch", "/", nil, nil)
	var ce *jclient.Error
	if !errors.As(err, &ce) || ce.Code != "service_not_found" || ce.Status != 404 {
		t.Fatalf("unknown service: %v", err)
	}
	ss, err := c.ListServices(ctx(t))
	if err != nil || len(ss) != 1 || ss[0].Name != "billing" || ss[0].Instances[0].ExpiresAt == nil {
		t.Fatalf("list: %+v %v", ss, err)
	}
	if err := c.Deregister(ctx(t), "billing", "b1"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetService(ctx(t), "billing"); !errors.As(err, &ce) || ce.Code != "service_not_found" {
		t.Fatalf("after deregistration: %v", err)
	}
}
