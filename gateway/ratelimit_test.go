package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/junctionhq/junction/config"
)

// mwClock is a clock that moves only when told.
type mwClock struct {
	mu sync.Mutex
	t  time.Time
}

func newMWClock() *mwClock { return &mwClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *mwClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *mwClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// okHandler answers 200 "ok".
var okHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok")) })

// limitedReq builds a request from ip, with headers and an identity.
func limitedReq(ip string, hdr map[string]string, id *Identity) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/orders", nil)
	r.RemoteAddr = ip + ":4321"
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	if id != nil {
		r = withIdentity(r, id)
	}
	return r
}

func newTestLimiter(t *testing.T, cfg *config.GatewayRateLimit, store BucketStore, clk *mwClock) http.Handler {
	t.Helper()
	rl, err := newRateLimiter(cfg, store, clk.now)
	if err != nil {
		t.Fatal(err)
	}
	rl.log = slog.New(slog.DiscardHandler)
	return rl.middleware(okHandler)
}

// countAllowed sends n requests and counts the 200s.
func countAllowed(h http.Handler, n int, req func() *http.Request) int {
	ok := 0
	for range n {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req())
		if w.Code == http.StatusOK {
			ok++
		}
	}
	return ok
}

func TestRateLimitLocalCounts(t *testing.T) {
	for _, tc := range []struct {
		name    string
		rps     float64
		burst   int
		first   int           // requests at the start
		wantA   int           // of which allowed
		advance time.Duration // then the clock moves
		second  int
		wantB   int
	}{
		{"burst then refill", 10, 5, 8, 5, 300 * time.Millisecond, 5, 3},
		{"default burst is ceil rps", 2.5, 0, 5, 3, time.Second, 5, 2},
		{"slow rate default burst 1", 0.5, 0, 3, 1, time.Second, 2, 0},
		{"slow rate refills after interval", 0.5, 0, 3, 1, 2 * time.Second, 2, 1},
		{"refill caps at burst", 100, 3, 3, 3, time.Hour, 10, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := newMWClock()
			h := newTestLimiter(t, &config.GatewayRateLimit{RPS: tc.rps, Burst: tc.burst}, nil, clk)
			req := func() *http.Request { return limitedReq("10.0.0.1", nil, nil) }
			if got := countAllowed(h, tc.first, req); got != tc.wantA {
				t.Fatalf("first: allowed %d, want %d", got, tc.wantA)
			}
			clk.advance(tc.advance)
			if got := countAllowed(h, tc.second, req); got != tc.wantB {
				t.Fatalf("after %s: allowed %d, want %d", tc.advance, got, tc.wantB)
			}
		})
	}
}

func TestRateLimitKeys(t *testing.T) {
	for _, tc := range []struct {
		name string
		key  string
		reqs []*http.Request // each sent 3 times; burst is 2
		want []int           // allowed per request
	}{
		{"ip by default", "", []*http.Request{
			limitedReq("10.0.0.1", nil, nil), limitedReq("10.0.0.2", nil, nil), limitedReq("10.0.0.1", nil, nil),
		}, []int{2, 2, 0}},
		{"by header", `request.headers["x-tenant"]`, []*http.Request{
			limitedReq("10.0.0.1", map[string]string{"X-Tenant": "a"}, nil),
			limitedReq("10.0.0.1", map[string]string{"X-Tenant": "b"}, nil),
			limitedReq("10.0.0.2", map[string]string{"X-Tenant": "a"}, nil),
		}, []int{2, 2, 0}},
		{"missing header falls back to the ip", `request.headers["x-tenant"]`, []*http.Request{
			limitedReq("10.0.0.1", nil, nil),
			limitedReq("10.0.0.1", map[string]string{"X-Tenant": "10.0.0.1"}, nil), // the same text: the same bucket
			limitedReq("10.0.0.2", nil, nil),
		}, []int{2, 0, 2}},
		{"by claims", `request.claims.sub`, []*http.Request{
			limitedReq("10.0.0.1", nil, &Identity{Claims: map[string]any{"sub": "alice"}}),
			limitedReq("10.0.0.2", nil, &Identity{Claims: map[string]any{"sub": "alice"}}),
			limitedReq("10.0.0.1", nil, &Identity{Claims: map[string]any{"sub": "bob"}}),
		}, []int{2, 0, 2}},
		{"by api key name", `"key:" + request.key`, []*http.Request{
			limitedReq("10.0.0.1", nil, &Identity{KeyName: "shop"}),
			limitedReq("10.0.0.2", nil, &Identity{KeyName: "shop"}),
			limitedReq("10.0.0.2", nil, &Identity{KeyName: "erp"}),
		}, []int{2, 0, 2}},
		{"non-string key rendered as text", `size(request.path)`, []*http.Request{
			limitedReq("10.0.0.1", nil, nil), limitedReq("10.0.0.2", nil, nil),
		}, []int{2, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := newMWClock()
			h := newTestLimiter(t, &config.GatewayRateLimit{RPS: 1, Burst: 2, Key: tc.key}, nil, clk)
			for i, r := range tc.reqs {
				if got := countAllowed(h, 3, func() *http.Request { return r }); got != tc.want[i] {
					t.Fatalf("request %d: allowed %d, want %d", i, got, tc.want[i])
				}
			}
		})
	}
}

func TestRateLimitHeaders(t *testing.T) {
	clk := newMWClock()
	h := newTestLimiter(t, &config.GatewayRateLimit{RPS: 0.5, Burst: 3}, nil, clk)
	type want struct {
		code              int
		remaining, reset  string
		retryAfter        string
		advanceAfterwards time.Duration
	}
	for i, w := range []want{
		{200, "2", "2", "", 0},
		{200, "1", "2", "", 0},
		{200, "0", "2", "", 0},
		{429, "0", "2", "2", 500 * time.Millisecond},
		{429, "0", "2", "2", time.Second}, // 1.5 s to go: rounded up
		{429, "0", "1", "1", 600 * time.Millisecond},
		{200, "0", "2", "", 0}, // 0.05 token left: 1.9 s to the next, rounded up
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, limitedReq("10.0.0.1", nil, nil))
		hd := rec.Header()
		if rec.Code != w.code || hd.Get("RateLimit-Limit") != "3" || hd.Get("RateLimit-Remaining") != w.remaining ||
			hd.Get("RateLimit-Reset") != w.reset || hd.Get("Retry-After") != w.retryAfter {
			t.Fatalf("request %d: %d limit=%q remaining=%q reset=%q retry-after=%q, want %+v", i, rec.Code,
				hd.Get("RateLimit-Limit"), hd.Get("RateLimit-Remaining"), hd.Get("RateLimit-Reset"), hd.Get("Retry-After"), w)
		}
		if rec.Code == http.StatusTooManyRequests {
			var p struct {
				Code   string `json:"code"`
				Status int    `json:"status"`
			}
			if ct := hd.Get("Content-Type"); ct != "application/problem+json" {
				t.Fatalf("content type %q", ct)
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil || p.Code != "too_many_requests" || p.Status != 429 {
				t.Fatalf("problem %s (%v)", rec.Body, err)
			}
		}
		clk.advance(w.advanceAfterwards)
	}
}

func TestRateLimitRetryAfterAtLeastOne(t *testing.T) {
	clk := newMWClock()
	h := newTestLimiter(t, &config.GatewayRateLimit{RPS: 1000, Burst: 1}, nil, clk)
	countAllowed(h, 1, func() *http.Request { return limitedReq("10.0.0.1", nil, nil) })
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, limitedReq("10.0.0.1", nil, nil))
	if rec.Code != 429 || rec.Header().Get("Retry-After") != "1" || rec.Header().Get("RateLimit-Reset") != "1" {
		t.Fatalf("%d retry-after %q reset %q", rec.Code, rec.Header().Get("Retry-After"), rec.Header().Get("RateLimit-Reset"))
	}
}

func TestRateLimitConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  config.GatewayRateLimit
	}{
		{"zero rps", config.GatewayRateLimit{RPS: 0}},
		{"bad key", config.GatewayRateLimit{RPS: 1, Key: "request.("}},
		{"bad scope", config.GatewayRateLimit{RPS: 1, Scope: "cluster"}},
		{"global without a store", config.GatewayRateLimit{RPS: 1, Scope: "global"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := newRateLimit(&tc.cfg, nil); err == nil {
				t.Fatal("no error")
			}
		})
	}
}

func TestRateLimitLocalBucketsBounded(t *testing.T) {
	clk := newMWClock()
	lb := newLocalBuckets(160) // 10 per shard
	for i := range 1000 {
		lb.take("k"+strconv.Itoa(i), 1, 1, clk.now())
	}
	if n := lb.len(); n > 160 {
		t.Fatalf("%d buckets kept, want at most 160", n)
	}
	// Buckets idle for a minute (and refilled) go as soon as their shard
	// is used again.
	clk.advance(bucketIdle)
	lb.take("fresh", 1, 1, clk.now())
	s := lb.shardOf("fresh")
	s.mu.Lock()
	n := len(s.m)
	s.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d buckets in the shard after the idle ones went, want 1", n)
	}
}

func TestRateLimitIdleBucketsKeptUntilRefilled(t *testing.T) {
	clk := newMWClock()
	lb := newLocalBuckets(16)
	// 1 token per 100 s: after a minute the bucket is still empty and
	// must not be forgotten.
	if ok, _, _ := lb.take("slow", 0.01, 1, clk.now()); !ok {
		t.Fatal("first take refused")
	}
	clk.advance(bucketIdle + time.Second)
	if ok, _, _ := lb.take("slow", 0.01, 1, clk.now()); ok {
		t.Fatal("take allowed before the bucket refilled")
	}
}

// failingStore is a BucketStore that is down.
type failingStore struct{ calls int }

func (f *failingStore) Take(context.Context, string, float64, int) (bool, int, time.Duration, error) {
	f.calls++
	return false, 0, 0, errors.New("nats: timeout")
}

func TestRateLimitGlobalFailsOpen(t *testing.T) {
	clk := newMWClock()
	store := &failingStore{}
	h := newTestLimiter(t, &config.GatewayRateLimit{RPS: 1, Burst: 1, Scope: "global"}, store, clk)
	if got := countAllowed(h, 5, func() *http.Request { return limitedReq("10.0.0.1", nil, nil) }); got != 5 || store.calls != 5 {
		t.Fatalf("allowed %d of 5 with the store down (%d calls)", got, store.calls)
	}
}

// countingHandler counts the records logged.
type countingHandler struct {
	slog.Handler
	n *atomic.Int64
}

func (h countingHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h countingHandler) Handle(context.Context, slog.Record) error { h.n.Add(1); return nil }

func TestRateLimitStoreErrorsLoggedOncePerMinute(t *testing.T) {
	clk := newMWClock()
	rl, err := newRateLimiter(&config.GatewayRateLimit{RPS: 1, Scope: "global"}, &failingStore{}, clk.now)
	if err != nil {
		t.Fatal(err)
	}
	var logged atomic.Int64
	rl.log = slog.New(countingHandler{Handler: slog.DiscardHandler, n: &logged})
	h := rl.middleware(okHandler)
	req := func() *http.Request { return limitedReq("10.0.0.1", nil, nil) }
	for _, step := range []struct {
		advance time.Duration
		want    int64
	}{{0, 1}, {30 * time.Second, 1}, {30 * time.Second, 2}, {time.Second, 2}} {
		clk.advance(step.advance)
		countAllowed(h, 3, req)
		if got := logged.Load(); got != step.want {
			t.Fatalf("after %s: %d warnings, want %d", step.advance, got, step.want)
		}
	}
}
