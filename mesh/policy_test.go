package mesh_test

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/internal/testutil"
	"github.com/junctionhq/junction/mesh"
)

// problemBody is the part of an application/problem+json answer the
// tests look at.
type problemBody struct {
	Status int    `json:"status"`
	Code   string `json:"code"`
	Detail string `json:"detail"`
	Errors []struct {
		Field   string `json:"field"`
		Message string `json:"message"`
	} `json:"errors"`
}

// problemOf decodes an error answer, failing the test unless it is
// problem+json with the given status and code.
func problemOf(t *testing.T, st int, h http.Header, body string, wantStatus int, wantCode string) problemBody {
	t.Helper()
	var p problemBody
	if ct := h.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("status %d, Content-Type %q, want application/problem+json: %s", st, ct, body)
	}
	if err := json.Unmarshal([]byte(body), &p); err != nil {
		t.Fatalf("problem body: %v: %s", err, body)
	}
	if st != wantStatus || p.Status != wantStatus || p.Code != wantCode {
		t.Fatalf("got %d %q (body status %d), want %d %q: %s", st, p.Code, p.Status, wantStatus, wantCode, body)
	}
	return p
}

// refusal checks an answer that the mesh gave itself (not the service):
// problem+json with the status and code, marked by the Junction-Error
// header.
func refusal(t *testing.T, st int, h http.Header, body string, wantStatus int, wantCode string) problemBody {
	t.Helper()
	p := problemOf(t, st, h, body, wantStatus, wantCode)
	if got := h.Get(mesh.ErrorHeader); got != wantCode {
		t.Errorf("%s = %q, want %q", mesh.ErrorHeader, got, wantCode)
	}
	return p
}

var httpc = &http.Client{Timeout: 20 * time.Second}

// node starts a node like nodeWith, and before it stops drops the
// clients' idle connections to it: a connection dialled but never used
// would hold up the node's graceful shutdown for seconds.
func node(t *testing.T, mutate func(*config.Config)) *testutil.Node {
	n := nodeWith(t, mutate)
	t.Cleanup(func() {
		httpc.CloseIdleConnections()
		http.DefaultClient.CloseIdleConnections()
	})
	return n
}

// call sends one request with a bounded wait; it returns the status,
// headers, body and how long the answer took.
func call(t *testing.T, method, url string, hdr map[string]string, body string) (int, http.Header, string, time.Duration) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	start := time.Now()
	resp, err := httpc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, url, err)
	}
	return resp.StatusCode, resp.Header, string(b), time.Since(start)
}

// retryAfter returns the Retry-After header in seconds, failing the test
// when it is missing or not a positive number.
func retryAfter(t *testing.T, h http.Header) int {
	t.Helper()
	v, err := strconv.Atoi(h.Get("Retry-After"))
	if err != nil || v < 1 {
		t.Fatalf("Retry-After = %q, want a positive number of seconds", h.Get("Retry-After"))
	}
	return v
}

// metric sums the series of name in the node's /metrics whose labels
// include the given ones; ok is false when there is none.
func metric(t *testing.T, n *testutil.Node, name string, labels map[string]string) (sum float64, ok bool) {
	t.Helper()
	st, _, text := testutil.Do(t, "GET", n.URL+"/metrics", nil, "")
	if st != 200 {
		t.Fatalf("GET /metrics: %d", st)
	}
	for _, line := range strings.Split(text, "\n") {
		rest, found := strings.CutPrefix(line, name+"{")
		if !found {
			continue
		}
		ls, val, found := strings.Cut(rest, "} ")
		if !found {
			continue
		}
		have := map[string]string{}
		for _, kv := range strings.Split(ls, `",`) {
			k, v, _ := strings.Cut(kv, `="`)
			have[k] = strings.TrimSuffix(v, `"`)
		}
		match := true
		for k, v := range labels {
			if have[k] != v {
				match = false
			}
		}
		if !match {
			continue
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		sum, ok = sum+f, true
	}
	return sum, ok
}

func instanceOf(t *testing.T, n *testutil.Node, service, url string) mesh.InstanceInfo {
	t.Helper()
	for _, in := range services(t, n)[service].Instances {
		if in.URL == url {
			return in
		}
	}
	t.Fatalf("service %s has no instance %s", service, url)
	return mesh.InstanceInfo{}
}

// closedURL is the address of a server that is gone: connections to it
// are refused.
func closedURL(t *testing.T) string {
	s := httptest.NewServer(http.NotFoundHandler())
	u := s.URL
	s.Close()
	return u
}

func TestBulkheadShedsTheCallBeyondTheLimit(t *testing.T) {
	arrived := make(chan struct{}, 10)
	release := make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	blocking := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, "done")
	}))
	t.Cleanup(blocking.Close)
	t.Cleanup(free) // before Close, which waits for the handlers
	n := node(t, func(c *config.Config) {
		c.Services = map[string]*config.Service{"narrow": svc("two", blocking.URL)}
		c.Policies = map[string]*config.Policy{"two": {MaxConcurrent: 2}}
	})
	url := n.URL + "/v1/invoke/narrow/work"

	type result struct {
		st   int
		body string
	}
	results := make(chan result, 2)
	for range 2 {
		go func() {
			resp, err := httpc.Get(url)
			if err != nil {
				results <- result{st: -1, body: err.Error()}
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			results <- result{resp.StatusCode, string(b)}
		}()
	}
	for i := range 2 {
		select {
		case <-arrived:
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d of 2 calls reached the backend", i)
		}
	}
	// Both slots are taken: the third call is shed at once, while the
	// backend still holds the other two.
	st, h, body, took := call(t, "GET", url, nil, "")
	refusal(t, st, h, body, 503, "concurrency_limit")
	retryAfter(t, h)
	if took > time.Second {
		t.Errorf("the shed call took %s; it must not wait for a slot", took)
	}
	select {
	case <-arrived:
		t.Fatal("the shed call reached the backend")
	default:
	}
	if v, _ := metric(t, n, "junction_mesh_rejected_total", map[string]string{"service": "narrow", "reason": "concurrency_limit"}); v != 1 {
		t.Errorf("rejected_total{reason=concurrency_limit} = %v, want 1", v)
	}
	if in := services(t, n)["narrow"].InFlight; in != 2 {
		t.Errorf("in_flight = %d, want 2", in)
	}

	free()
	for range 2 {
		if r := <-results; r.st != 200 || r.body != "done" {
			t.Errorf("a call within the limit got %d %s", r.st, r.body)
		}
	}
	// The slots come back when the calls end.
	testutil.Eventually(t, 5*time.Second, "the bulkhead to drain", func() bool { return services(t, n)["narrow"].InFlight == 0 })
	if st, _, body, _ := call(t, "GET", url, nil, ""); st != 200 {
		t.Errorf("after the calls ended: %d %s", st, body)
	}
}

func TestServiceBreakerOpensWhenEveryInstanceFails(t *testing.T) {
	bs := []*backend{newBackend(t, "a"), newBackend(t, "b")}
	for _, b := range bs {
		b.set(500, 0)
	}
	const minRequests = 10
	n := node(t, func(c *config.Config) {
		s := svc("fragile", bs[0].URL, bs[1].URL)
		// Passive ejection would take the instances out first; this test
		// is about the service's breaker.
		s.Outlier.ConsecutiveFailures = 1000
		c.Services = map[string]*config.Service{"down": s}
		c.Policies = map[string]*config.Policy{"fragile": {
			Retry: &config.Retry{Attempts: 1},
			CircuitBreaker: &config.CircuitBreaker{FailureRatio: 0.5, MinRequests: minRequests,
				OpenFor: config.Duration(time.Minute)},
		}}
	})
	url := n.URL + "/v1/invoke/down/x"
	hits := func() int64 { return bs[0].hits.Load() + bs[1].hits.Load() }

	passed := 0
	for {
		st, h, body, _ := call(t, "GET", url, nil, "")
		if st == 500 {
			passed++ // the backend's own answer passes through
			if passed > minRequests+2 {
				t.Fatalf("%d failed calls and the service breaker is still closed", passed)
			}
			continue
		}
		refusal(t, st, h, body, 503, "circuit_open")
		break
	}
	// A response can reach the caller an instant before the call's
	// outcome is recorded, so the next sequential call may still pass.
	if passed < minRequests {
		t.Fatalf("the breaker opened after %d failures, before min_requests %d", passed, minRequests)
	}
	if got := hits(); got != int64(passed) {
		t.Errorf("the backends got %d calls, the caller saw %d answers", got, passed)
	}
	if s := services(t, n)["down"]; s.Breaker != "open" {
		t.Errorf("service breaker %q, want open", s.Breaker)
	}

	before := hits()
	for range 5 {
		st, h, body, took := call(t, "GET", url, nil, "")
		refusal(t, st, h, body, 503, "circuit_open")
		if ra := retryAfter(t, h); ra > 60 {
			t.Errorf("Retry-After %d, beyond open_for (1m)", ra)
		}
		if took > time.Second {
			t.Errorf("a call refused by the open breaker took %s", took)
		}
	}
	if d := hits() - before; d != 0 {
		t.Errorf("the backends got %d calls while the service breaker was open", d)
	}
	if v, _ := metric(t, n, "junction_mesh_rejected_total", map[string]string{"service": "down", "reason": "circuit_open"}); v < 5 {
		t.Errorf("rejected_total{reason=circuit_open} = %v, want at least 5", v)
	}
}

func TestTimeouts(t *testing.T) {
	b := newBackend(t, "slow")
	b.set(0, 2*time.Second)
	const policyTimeout = 300 * time.Millisecond
	n := node(t, func(c *config.Config) {
		c.Services = map[string]*config.Service{"slow": svc("quick", b.URL)}
		c.Policies = map[string]*config.Policy{"quick": {Timeout: config.Duration(policyTimeout)}}
	})
	url := n.URL + "/v1/invoke/slow/x"

	cases := []struct {
		name     string
		header   string        // Junction-Timeout from the caller
		deadline time.Duration // the one that applies
	}{
		{"policy timeout", "", policyTimeout},
		{"a shorter caller deadline wins", "100ms", 100 * time.Millisecond},
		{"a longer caller deadline does not extend the policy", "10s", policyTimeout},
		{"an invalid caller deadline is ignored", "soon", policyTimeout},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var hdr map[string]string
			if c.header != "" {
				hdr = map[string]string{mesh.TimeoutHeader: c.header}
			}
			hits := b.hits.Load()
			st, h, body, took := call(t, "GET", url, hdr, "")
			refusal(t, st, h, body, 504, "timeout")
			if took < c.deadline || took > c.deadline+700*time.Millisecond {
				t.Errorf("answered after %s, want soon after %s (the backend takes 2s)", took, c.deadline)
			}
			if d := b.hits.Load() - hits; d != 1 {
				t.Errorf("the backend got %d calls; a timeout is not retried", d)
			}
			// The backend learns how long it has: at most what is left.
			seen, err := time.ParseDuration(b.header().Get(mesh.TimeoutHeader))
			if err != nil || seen <= 0 || seen > c.deadline {
				t.Errorf("the backend saw %s %q, want a positive duration up to %s", mesh.TimeoutHeader, b.header().Get(mesh.TimeoutHeader), c.deadline)
			}
		})
	}
}

func TestRetries(t *testing.T) {
	plain, opted := newBackend(t, "plain"), newBackend(t, "opted")
	plain.set(500, 0)
	opted.set(500, 0)
	bad, good := newBackend(t, "bad"), newBackend(t, "good")
	bad.set(503, 0)
	rrBad, rrGood := newBackend(t, "rr-bad"), newBackend(t, "rr-good")
	rrBad.set(503, 0)
	live := newBackend(t, "live")
	dead := closedURL(t)
	n := node(t, func(c *config.Config) {
		half := svc("", dead, live.URL)
		half.Balancer = "round_robin"
		// Keep the dead instance in rotation, so that calls keep finding it.
		half.Outlier.ConsecutiveFailures = 1000
		// Round robin without ejection sends every other call to the
		// failing instance first; p2c soon avoids it.
		rr := svc("", rrBad.URL, rrGood.URL)
		rr.Balancer = "round_robin"
		rr.Outlier.ConsecutiveFailures = 1000
		c.Services = map[string]*config.Service{
			"plain":    svc("", plain.URL),
			"opted":    svc("opted", opted.URL),
			"mixed":    svc("", bad.URL, good.URL),
			"mixed-rr": rr,
			"half":     half,
		}
		c.Policies = map[string]*config.Policy{"opted": {Retry: &config.Retry{NonIdempotent: true}}}
	})
	inv := n.URL + "/v1/invoke/"

	t.Run("a POST answered 500 is not sent again by default", func(t *testing.T) {
		st, _, _, _ := call(t, "POST", inv+"plain/orders", nil, `{"n":1}`)
		if st != 500 || plain.hits.Load() != 1 {
			t.Errorf("got %d after %d calls to the backend, want 500 after 1", st, plain.hits.Load())
		}
		// The same failure on a GET is retried (attempts 3, one instance).
		st, _, _, _ = call(t, "GET", inv+"plain/orders", nil, "")
		if st != 500 || plain.hits.Load() != 4 {
			t.Errorf("GET: got %d after %d calls in all, want 500 after 1+3", st, plain.hits.Load())
		}
	})

	t.Run("non_idempotent retries a POST", func(t *testing.T) {
		st, _, _, _ := call(t, "POST", inv+"opted/orders", nil, `{"n":1}`)
		if st != 500 || opted.hits.Load() != 3 {
			t.Errorf("got %d after %d calls to the backend, want 500 after 3 (retry.attempts)", st, opted.hits.Load())
		}
	})

	for _, c := range []struct {
		service   string
		bad, good *backend
		minBad    int64 // calls the failing instance must have had
	}{
		{"mixed", bad, good, 1},
		{"mixed-rr", rrBad, rrGood, 10},
	} {
		t.Run("a GET goes to the instance that works/"+c.service, func(t *testing.T) {
			for i := range 60 {
				if st, _, body, _ := call(t, "GET", inv+c.service+"/x", nil, ""); st != 200 {
					t.Fatalf("call %d: %d %s", i, st, body)
				}
			}
			if c.good.hits.Load() != 60 {
				t.Errorf("the healthy instance got %d calls, want all 60", c.good.hits.Load())
			}
			if c.bad.hits.Load() < c.minBad {
				t.Errorf("the failing instance was tried %d times, want at least %d: the retry path was hardly exercised", c.bad.hits.Load(), c.minBad)
			}
			t.Logf("failing instance tried %d times", c.bad.hits.Load())
		})
	}

	t.Run("a refused connection is retried for any method", func(t *testing.T) {
		for i := range 20 {
			// POST bodies stream (they are never kept for a replay), the
			// last one well beyond what the transport could buffer.
			sent := fmt.Sprintf("order %d %s", i, strings.Repeat("x", 100*i))
			if i == 19 {
				sent += strings.Repeat("0123456789abcdef", 1<<18) // 4 MiB
			}
			st, _, body, _ := call(t, "POST", inv+"half/orders", map[string]string{"Content-Type": "text/plain"}, sent)
			if st != 200 {
				t.Fatalf("POST %d: %d %s", i, st, body)
			}
			var got map[string]string
			if err := json.Unmarshal([]byte(body), &got); err != nil || got["body"] != sent || got["method"] != "POST" {
				t.Fatalf("POST %d: the backend got %q by %s, want %q", i, got["body"], got["method"], sent)
			}
		}
		if live.hits.Load() != 20 {
			t.Errorf("the live instance got %d calls, want 20", live.hits.Load())
		}
		// Round robin sent some of the calls to the dead instance first.
		if v, _ := metric(t, n, "junction_mesh_retries_total", map[string]string{"service": "half"}); v < 5 {
			t.Errorf("retries_total{service=half} = %v; the dead instance was hardly tried", v)
		}
	})
}

func TestRetryBudgetCapsRetries(t *testing.T) {
	b := newBackend(t, "failing")
	b.set(503, 0)
	const (
		ratio    = 0.2
		floor    = 10.0             // retries per second any service may make (the mesh's setting)
		window   = 10 * time.Second // the budget's sliding window
		requests = 500
		attempts = 3
	)
	n := node(t, func(c *config.Config) {
		c.Services = map[string]*config.Service{"flaky": svc("budgeted", b.URL)}
		c.Policies = map[string]*config.Policy{"budgeted": {
			Retry: &config.Retry{Attempts: attempts, Budget: ratio,
				Backoff: config.Duration(time.Millisecond), MaxBackoff: config.Duration(time.Millisecond)},
			// Only the budget may limit the retries here.
			CircuitBreaker: &config.CircuitBreaker{Disabled: true},
		}}
	})
	url := n.URL + "/v1/invoke/flaky/x"
	start := time.Now()
	for i := range requests {
		if st, _, body, _ := call(t, "GET", url, nil, ""); st != 503 {
			t.Fatalf("call %d: %d %s", i, st, body)
		}
	}
	elapsed := time.Since(start)
	hits := float64(b.hits.Load())
	// The budget allows, within its sliding window, ratio retries per
	// first attempt plus a floor of 10/s over the window: floor*window
	// retries, available at once rather than earned second by second. The
	// window forgets one second at a time, so each 9s of the run brings
	// another floor, and a window may count the first attempts of the
	// previous one too.
	windows := 1 + math.Floor(elapsed.Seconds()/(window.Seconds()-1))
	bound := requests + ratio*requests*min(windows, 2) + floor*window.Seconds()*windows + 2
	t.Logf("%d calls in %s: %.0f backend hits (bound %.0f, without a budget %d)", requests, elapsed.Round(time.Millisecond), hits, bound, requests*attempts)
	if hits < requests {
		t.Fatalf("the backend got %.0f calls for %d requests", hits, requests)
	}
	if hits > bound {
		t.Errorf("the backend got %.0f calls for %d requests, more than the budget allows (%.0f)", hits, requests, bound)
	}
	if hits >= 2*requests {
		t.Errorf("retries doubled the load: %.0f calls for %d requests", hits, requests)
	}
	if v, _ := metric(t, n, "junction_mesh_rejected_total", map[string]string{"service": "flaky", "reason": "retry_budget"}); v <= 0 {
		t.Errorf("rejected_total{reason=retry_budget} = %v, want > 0", v)
	}
	if v, _ := metric(t, n, "junction_mesh_retries_total", map[string]string{"service": "flaky"}); v != hits-requests {
		t.Errorf("retries_total = %v, the backend saw %.0f retries", v, hits-requests)
	}
}

func TestRoundRobinFollowsWeights(t *testing.T) {
	light, heavy := newBackend(t, "light"), newBackend(t, "heavy")
	n := node(t, func(c *config.Config) {
		c.Services = map[string]*config.Service{"rr": {Balancer: "round_robin", Instances: []config.Instance{
			{URL: light.URL, Weight: 1}, {URL: heavy.URL, Weight: 3},
		}}}
	})
	const calls = 400
	if got := load(t, n.URL+"/v1/invoke/rr/x", calls, 1); got[200] != calls {
		t.Fatalf("%v", got)
	}
	share := float64(heavy.hits.Load()) / calls
	if math.Abs(share-0.75) > 0.03 || light.hits.Load()+heavy.hits.Load() != calls {
		t.Errorf("weights 1 and 3: shares %d/%d, want 25%%/75%% ±3%%", light.hits.Load(), heavy.hits.Load())
	}
}

func TestConsistentHashKeepsUsersOnTheirInstance(t *testing.T) {
	bs := map[string]*backend{}
	var urls []string
	for _, name := range []string{"a", "b", "c"} {
		bs[name] = newBackend(t, name)
		urls = append(urls, bs[name].URL)
	}
	n := node(t, func(c *config.Config) {
		s := svc("", urls...)
		s.Balancer, s.HashKey = "consistent_hash", `request.headers["x-user"]`
		c.Services = map[string]*config.Service{"carts": s}
	})
	users := make([]string, 50)
	for i := range users {
		users[i] = fmt.Sprintf("user-%d", i)
	}
	// where asks for each user's cart a few times and returns the one
	// instance that served each user.
	where := func(t *testing.T) map[string]string {
		t.Helper()
		out := map[string]string{}
		for round := range 3 {
			for _, u := range users {
				st, h, body, _ := call(t, "GET", n.URL+"/v1/invoke/carts/cart", map[string]string{"X-User": u}, "")
				if st != 200 {
					t.Fatalf("%s: %d %s", u, st, body)
				}
				got := h.Get("X-Backend")
				if prev, ok := out[u]; ok && prev != got {
					t.Fatalf("round %d: %s went to %s, before to %s", round, u, got, prev)
				}
				out[u] = got
			}
		}
		return out
	}
	before := where(t)
	per := map[string][]string{}
	for u, b := range before {
		per[b] = append(per[b], u)
	}
	if len(per) != 3 {
		t.Fatalf("50 users went to %d instances, want all 3: %v", len(per), per)
	}
	for b, us := range per {
		t.Logf("%s serves %d users", b, len(us))
	}

	// Stop the instance that serves a's users: they move, nobody else does.
	bs["a"].CloseClientConnections()
	bs["a"].Close()
	after := where(t)
	for _, u := range users {
		switch {
		case before[u] == "a" && after[u] == "a":
			t.Errorf("%s is still served by the stopped instance", u)
		case before[u] != "a" && after[u] != before[u]:
			t.Errorf("%s moved from %s to %s although %s is still up", u, before[u], after[u], before[u])
		}
	}
}

func TestMeshMetrics(t *testing.T) {
	a, b := newBackend(t, "a"), newBackend(t, "b")
	b.set(404, 0)
	n := node(t, func(c *config.Config) {
		c.Services = map[string]*config.Service{"metered": svc("", a.URL), "missing": svc("", b.URL)}
	})
	for range 7 {
		if st, _, body, _ := call(t, "GET", n.URL+"/v1/invoke/metered/x", nil, ""); st != 200 {
			t.Fatalf("%d %s", st, body)
		}
	}
	for range 2 {
		if st, _, _, _ := call(t, "GET", n.URL+"/v1/invoke/missing/x", nil, ""); st != 404 {
			t.Fatalf("%d", st)
		}
	}
	id := instanceOf(t, n, "metered", a.URL).ID
	// A call is counted when its response body is done with, which can be
	// an instant after the caller has it.
	testutil.Eventually(t, 5*time.Second, "the calls to be counted", func() bool {
		v, _ := metric(t, n, "junction_mesh_requests_total", map[string]string{"service": "metered", "code": "200"})
		w, _ := metric(t, n, "junction_mesh_requests_total", map[string]string{"service": "missing", "code": "404"})
		return v == 7 && w == 2
	})
	if v, _ := metric(t, n, "junction_mesh_instance_requests_total", map[string]string{"service": "metered", "instance": id, "code": "200"}); v != 7 {
		t.Errorf("instance_requests_total{instance=%q} = %v, want 7", id, v)
	}
	if _, ok := metric(t, n, "junction_mesh_request_duration_seconds_count", map[string]string{"service": "metered"}); !ok {
		t.Errorf("no request duration histogram for the service")
	}
	if v, ok := metric(t, n, "junction_mesh_instance_healthy", map[string]string{"service": "metered", "instance": id}); !ok || v != 1 {
		t.Errorf("instance_healthy = %v (present %v), want 1", v, ok)
	}
}

func TestRegistrationErrors(t *testing.T) {
	b := newBackend(t, "static")
	n := node(t, func(c *config.Config) {
		c.Services = map[string]*config.Service{"fixed": svc("", b.URL)}
	})
	staticID := instanceOf(t, n, "fixed", b.URL).ID
	inst := n.URL + "/v1/services/%s/instances/%s"
	cases := []struct {
		name, method, path, body string
		status                   int
		code                     string
		field                    string // in errors[] (422 only)
	}{
		{"not a URL", "PUT", fmt.Sprintf(inst, "reg", "i1"), `{"url":"not a url"}`, 422, "validation_failed", "url"},
		{"not http", "PUT", fmt.Sprintf(inst, "reg", "i1"), `{"url":"ftp://127.0.0.1:21"}`, 422, "validation_failed", "url"},
		{"a query in the URL", "PUT", fmt.Sprintf(inst, "reg", "i1"), `{"url":"http://127.0.0.1:80/?a=1"}`, 422, "validation_failed", "url"},
		{"missing URL", "PUT", fmt.Sprintf(inst, "reg", "i1"), `{"ttl":"10s"}`, 422, "validation_failed", "url"},
		{"TTL below 1s", "PUT", fmt.Sprintf(inst, "reg", "i1"), `{"url":"http://127.0.0.1:80","ttl":"0.5s"}`, 422, "validation_failed", "ttl"},
		{"TTL above 24h", "PUT", fmt.Sprintf(inst, "reg", "i1"), `{"url":"http://127.0.0.1:80","ttl":"25h"}`, 422, "validation_failed", "ttl"},
		{"weight", "PUT", fmt.Sprintf(inst, "reg", "i1"), `{"url":"http://127.0.0.1:80","weight":5000}`, 422, "validation_failed", "weight"},
		{"bad instance id", "PUT", fmt.Sprintf(inst, "reg", "a.b"), `{"url":"http://127.0.0.1:80"}`, 422, "validation_failed", "id"},
		{"unknown field", "PUT", fmt.Sprintf(inst, "reg", "i1"), `{"url":"http://127.0.0.1:80","colour":"red"}`, 422, "validation_failed", "colour"},
		{"malformed JSON", "PUT", fmt.Sprintf(inst, "reg", "i1"), `{"url":`, 400, "bad_json", ""},
		{"no body", "PUT", fmt.Sprintf(inst, "reg", "i1"), ``, 400, "bad_json", ""},
		{"re-registering a static instance", "PUT", fmt.Sprintf(inst, "fixed", staticID), fmt.Sprintf(`{"url":%q}`, b.URL), 409, "conflict", ""},
		{"deregistering a static instance", "DELETE", fmt.Sprintf(inst, "fixed", staticID), "", 409, "conflict", ""},
		{"deregistering an unknown instance", "DELETE", fmt.Sprintf(inst, "fixed", "nope"), "", 404, "instance_not_found", ""},
		{"deregistering from an unknown service", "DELETE", fmt.Sprintf(inst, "nope", "i1"), "", 404, "service_not_found", ""},
		{"unknown service", "GET", n.URL + "/v1/services/nope", "", 404, "service_not_found", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st, h, body, _ := call(t, c.method, c.path, map[string]string{"Content-Type": "application/json"}, c.body)
			p := problemOf(t, st, h, body, c.status, c.code)
			if c.field == "" {
				return
			}
			found := false
			for _, e := range p.Errors {
				found = found || (e.Field == c.field && e.Message != "")
			}
			if !found {
				t.Errorf("errors[] = %+v, want one for %q", p.Errors, c.field)
			}
		})
	}
	// None of them changed the registry.
	ss := services(t, n)
	if _, ok := ss["reg"]; ok || len(ss["fixed"].Instances) != 1 {
		t.Errorf("failed requests changed the registry: %+v", ss)
	}
	// And a valid registration goes through, so the cases above failed
	// for their own reason.
	if st, _, body, _ := call(t, "PUT", fmt.Sprintf(inst, "reg", "i1"), nil, fmt.Sprintf(`{"url":%q,"ttl":"1m"}`, b.URL)); st != 201 {
		t.Fatalf("valid registration: %d %s", st, body)
	}
	// Registering again is a heartbeat: 200.
	if st, _, body, _ := call(t, "PUT", fmt.Sprintf(inst, "reg", "i1"), nil, fmt.Sprintf(`{"url":%q,"ttl":"1m"}`, b.URL)); st != 200 {
		t.Fatalf("heartbeat: %d %s", st, body)
	}
	if st, _, body, _ := call(t, "DELETE", fmt.Sprintf(inst, "reg", "i1"), nil, ""); st != 204 {
		t.Fatalf("deregistration: %d %s", st, body)
	}
}

func TestInvokeForwardsThePathAfterTheService(t *testing.T) {
	b := newBackend(t, "a")
	n := node(t, func(c *config.Config) {
		c.Services = map[string]*config.Service{"orders": svc("", b.URL)}
	})
	cases := []struct {
		path          string // after the node's URL
		wantPath, raw string // what the backend sees
	}{
		{"/v1/invoke/orders/items/42", "/items/42", ""},
		{"/v1/invoke/orders/items/a%2Fb", "/items/a/b", "/items/a%2Fb"},
		{"/v1/invoke/orders/", "/", ""},
		{"/v1/invoke/orders", "/", ""},
		// Escaping that the router undoes names the same service; the
		// path sent on is still only what follows it.
		{"/v1/invoke/ord%65rs/items", "/items", ""},
		{"/v1/invoke/ord%65rs/a%2Fb", "/a/b", "/a%2Fb"},
		{"/v1/%69nvoke/orders/items", "/items", ""},
	}
	for _, c := range cases {
		t.Run(c.path, func(t *testing.T) {
			st, _, body, _ := call(t, "GET", n.URL+c.path+"?q=1", nil, "")
			if st != 200 {
				t.Fatalf("%d %s", st, body)
			}
			var got map[string]string
			if err := json.Unmarshal([]byte(body), &got); err != nil {
				t.Fatal(err)
			}
			if got["path"] != c.wantPath || got["raw_path"] != c.raw || got["query"] != "q=1" {
				t.Errorf("the backend got path %q (raw %q, query %q), want %q (raw %q, query q=1)", got["path"], got["raw_path"], got["query"], c.wantPath, c.raw)
			}
		})
	}
}

// When a failure leaves no instance to retry on (it opened the breaker of
// the only one), the caller gets that failure as the service answered it.
func TestLastAnswerPassesThroughWhenNoInstanceIsLeft(t *testing.T) {
	b := newBackend(t, "only")
	b.set(500, 0)
	n := node(t, func(c *config.Config) {
		s := svc("touchy", b.URL)
		s.Outlier.ConsecutiveFailures = 1000
		c.Services = map[string]*config.Service{"one": s}
		c.Policies = map[string]*config.Policy{"touchy": {
			Retry: &config.Retry{Attempts: 3, Backoff: config.Duration(time.Millisecond)},
			// The instance's breaker opens at its second failure, within
			// the first call; the service's sees one failed call.
			CircuitBreaker: &config.CircuitBreaker{FailureRatio: 0.5, MinRequests: 2, OpenFor: config.Duration(time.Minute)},
		}}
	})
	st, h, body, _ := call(t, "GET", n.URL+"/v1/invoke/one/x", nil, "")
	if st != 500 || h.Get("X-Backend") != "only" || !strings.Contains(body, `"backend":"only"`) || h.Get(mesh.ErrorHeader) != "" {
		t.Errorf("got %d %s (%s %q), want the backend's own 500", st, body, mesh.ErrorHeader, h.Get(mesh.ErrorHeader))
	}
	if got := b.hits.Load(); got != 2 {
		t.Errorf("the backend got %d calls, want 2 (its breaker opened at the second)", got)
	}
	if in := instanceOf(t, n, "one", b.URL); in.Breaker != "open" {
		t.Errorf("instance breaker %q, want open", in.Breaker)
	}
	// Now nothing is available: the mesh says so itself.
	st, h, body, _ = call(t, "GET", n.URL+"/v1/invoke/one/x", nil, "")
	refusal(t, st, h, body, 503, "no_instance_available")
	retryAfter(t, h)
}

// Every instance half-open with its probes out: the call is refused at
// once with 503 circuit_open, and like every overload answer it says when
// to come back.
func TestHalfOpenInstancesRefuseWithRetryAfter(t *testing.T) {
	var hits, held atomic.Int64
	var holding atomic.Bool
	hold := make(chan struct{})
	var once sync.Once
	release := func() { once.Do(func() { close(hold) }) }
	b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if holding.Load() {
			held.Add(1)
			select {
			case <-hold:
			case <-r.Context().Done():
			}
		}
		w.WriteHeader(500)
	}))
	t.Cleanup(b.Close)
	t.Cleanup(release)
	// Within open_for of turning half-open, a probe that has not reported
	// is still out (after it, it is presumed lost and another goes).
	const openFor = 500 * time.Millisecond
	n := node(t, func(c *config.Config) {
		s := svc("probing", b.URL)
		s.Outlier.ConsecutiveFailures = 1000
		c.Services = map[string]*config.Service{"one": s}
		c.Policies = map[string]*config.Policy{"probing": {
			Retry: &config.Retry{Attempts: 3, Backoff: config.Duration(time.Millisecond)},
			// The first call's two attempts open the instance's breaker;
			// the service's, with one failed call, stays closed.
			CircuitBreaker: &config.CircuitBreaker{FailureRatio: 0.5, MinRequests: 2,
				OpenFor: config.Duration(openFor), HalfOpenRequests: 1},
		}}
	})
	url := n.URL + "/v1/invoke/one/x"
	if st, _, body, _ := call(t, "GET", url, nil, ""); st != 500 {
		t.Fatalf("first call: %d %s", st, body)
	}
	testutil.Eventually(t, 5*time.Second, "the instance breaker to turn half_open", func() bool {
		return instanceOf(t, n, "one", b.URL).Breaker == "half_open"
	})
	// The probe is held by the backend while the next call comes.
	holding.Store(true)
	probe := make(chan int, 1)
	go func() {
		resp, err := httpc.Get(url)
		if err != nil {
			probe <- -1
			return
		}
		resp.Body.Close()
		probe <- resp.StatusCode
	}()
	testutil.Eventually(t, 5*time.Second, "the probe to reach the backend", func() bool { return held.Load() == 1 })
	st, h, body, took := call(t, "GET", url, nil, "")
	release()
	refusal(t, st, h, body, 503, "circuit_open")
	retryAfter(t, h)
	if took > time.Second {
		t.Errorf("refused after %s, want at once", took)
	}
	if got := hits.Load(); got != 3 {
		t.Errorf("the backend got %d calls, want 3 (two, then the probe)", got)
	}
	if st := <-probe; st != 500 {
		t.Errorf("probe: %d", st)
	}
}
