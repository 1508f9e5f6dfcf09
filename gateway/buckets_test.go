package gateway

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/internal/natsembed"
)

// testKV starts an embedded JetStream and returns a fresh bucket.
func testKV(t *testing.T) jetstream.KeyValue {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	c, err := natsembed.Start(ctx, natsembed.Options{DataDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	kv, err := c.JS.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "ratelimits", History: 1, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// kvStore is a store over kv reading clk, as one node's.
func kvStore(kv jetstream.KeyValue, clk *mwClock) *kvBuckets {
	b := NewKVBuckets(kv).(*kvBuckets)
	b.now = clk.now
	return b
}

func TestBucketsKVKey(t *testing.T) {
	for _, key := range []string{"10.0.0.1", "::1", "a b/c*>.", "ünïcode", "", strings.Repeat("x", 1000)} {
		k := kvKey(key)
		if k == "" || len(k) > maxKVKeyLen {
			t.Fatalf("%q: key %q", key, k)
		}
		for _, r := range k {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_=.", r)) {
				t.Fatalf("%q: key %q has %q", key, k, r)
			}
		}
	}
	if kvKey("a") == kvKey("b") || kvKey(strings.Repeat("x", 1000)) == kvKey(strings.Repeat("x", 1001)) {
		t.Fatal("distinct keys collide")
	}
}

func TestBucketsGCRA(t *testing.T) {
	kv := testKV(t)
	clk := newMWClock()
	b := kvStore(kv, clk)
	ctx := context.Background()
	type step struct {
		advance   time.Duration
		ok        bool
		remaining int
		next      time.Duration
	}
	// 2 tokens per second (one per 500 ms), burst 3.
	for i, s := range []step{
		{0, true, 2, 500 * time.Millisecond},
		{0, true, 1, 500 * time.Millisecond},
		{0, true, 0, 500 * time.Millisecond},
		{0, false, 0, 500 * time.Millisecond},
		{200 * time.Millisecond, false, 0, 300 * time.Millisecond},
		{300 * time.Millisecond, true, 0, 500 * time.Millisecond},
		{time.Hour, true, 2, 500 * time.Millisecond}, // refilled, no more than burst
	} {
		clk.advance(s.advance)
		ok, rem, next, err := b.Take(ctx, "10.0.0.1", 2, 3)
		if err != nil {
			t.Fatal(err)
		}
		if ok != s.ok || rem != s.remaining || next != s.next {
			t.Fatalf("step %d: ok=%v remaining=%d next=%s, want %+v", i, ok, rem, next, s)
		}
	}
	// Another key has its own bucket.
	if ok, rem, _, err := b.Take(ctx, "10.0.0.2", 2, 3); err != nil || !ok || rem != 2 {
		t.Fatalf("other key: ok=%v remaining=%d err=%v", ok, rem, err)
	}
}

// TestBucketsSharedByNodes runs two rate limits, as on two nodes, over
// one bucket: together they allow burst requests, not burst each.
func TestBucketsSharedByNodes(t *testing.T) {
	kv := testKV(t)
	clk := newMWClock()
	cfg := &config.GatewayRateLimit{RPS: 1, Burst: 5, Scope: "global", Key: `request.headers["x-user"]`}
	a := newTestLimiter(t, cfg, kvStore(kv, clk), clk)
	b := newTestLimiter(t, cfg, kvStore(kv, clk), clk)
	req := func() *http.Request { return limitedReq("10.0.0.1", map[string]string{"X-User": "alice"}, nil) }
	allowed := 0
	for i := range 12 {
		h := a
		if i%2 == 1 {
			h = b
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req())
		if rec.Code == http.StatusOK {
			allowed++
		} else if rec.Header().Get("Retry-After") != "1" {
			t.Fatalf("refused without Retry-After 1: %v", rec.Header())
		}
	}
	if allowed != 5 {
		t.Fatalf("two nodes allowed %d, want 5 in total", allowed)
	}
	// A second later each node sees the one token that came.
	clk.advance(time.Second)
	if got := countAllowed(b, 3, req); got != 1 {
		t.Fatalf("after a second: allowed %d, want 1", got)
	}
	// Another user is unaffected.
	if got := countAllowed(a, 6, func() *http.Request {
		return limitedReq("10.0.0.1", map[string]string{"X-User": "bob"}, nil)
	}); got != 5 {
		t.Fatalf("bob: allowed %d, want 5", got)
	}
}

func TestBucketsConcurrentTakers(t *testing.T) {
	kv := testKV(t)
	clk := newMWClock()
	const burst = 10
	stores := []*kvBuckets{kvStore(kv, clk), kvStore(kv, clk), kvStore(kv, clk)}
	var allowed atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := stores[g%len(stores)]
			for range 4 {
				ok, _, _, err := s.Take(context.Background(), "hot", 1, burst)
				if err != nil {
					errs <- err
					return
				}
				if ok {
					allowed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := allowed.Load(); n > burst || n == 0 {
		t.Fatalf("concurrent takers got %d tokens, want at most %d (and some)", n, burst)
	}
	// Whatever contention left unused is still there, and no more.
	rest := 0
	for range 2 * burst {
		if ok, _, _, _ := stores[0].Take(context.Background(), "hot", 1, burst); ok {
			rest++
		}
	}
	if total := int(allowed.Load()) + rest; total != burst {
		t.Fatalf("%d tokens taken in all at a frozen clock, want exactly %d", total, burst)
	}
}
