package gateway

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/junctionhq/junction/config"
)

// cacheOrigin is a backend behind a cache that counts its calls and
// answers what its fields say.
type cacheOrigin struct {
	mu      sync.Mutex
	calls   int
	status  int
	body    string
	header  map[string]string
	lastINM string // the If-None-Match it got
}

func (o *cacheOrigin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.calls++
	o.lastINM = r.Header.Get("If-None-Match")
	for k, v := range o.header {
		w.Header().Set(k, v)
	}
	if o.status != 0 {
		w.WriteHeader(o.status)
	}
	if r.Method != http.MethodHead {
		_, _ = io.WriteString(w, o.body)
	}
}

func (o *cacheOrigin) set(body string, header map[string]string) {
	o.mu.Lock()
	o.body, o.header = body, header
	o.mu.Unlock()
}

type cacheTest struct {
	t   *testing.T
	clk *mwClock
	c   *responseCache
	o   *cacheOrigin
	h   http.Handler
}

func newCacheTest(t *testing.T, cfg config.GatewayCache, body string, header map[string]string) *cacheTest {
	t.Helper()
	clk := newMWClock()
	c, err := newResponseCache(&cfg, clk.now)
	if err != nil {
		t.Fatal(err)
	}
	o := &cacheOrigin{body: body, header: header}
	return &cacheTest{t: t, clk: clk, c: c, o: o, h: c.middleware(o)}
}

// do sends a request and returns the response.
func (ct *cacheTest) do(method, target string, hdr map[string]string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, nil)
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	ct.h.ServeHTTP(w, r)
	return w
}

// expect checks a response's X-Cache, status and body and the backend's
// calls so far.
func (ct *cacheTest) expect(w *httptest.ResponseRecorder, xcache string, code int, body string, calls int) {
	ct.t.Helper()
	if got := w.Header().Get("X-Cache"); got != xcache || w.Code != code || w.Body.String() != body || ct.o.calls != calls {
		ct.t.Fatalf("X-Cache %q code %d body %q calls %d, want %q %d %q %d", got, w.Code, w.Body.String(), ct.o.calls, xcache, code, body, calls)
	}
}

func ttl(d time.Duration) config.GatewayCache { return config.GatewayCache{TTL: config.Duration(d)} }

func TestCacheHitMissAndAge(t *testing.T) {
	ct := newCacheTest(t, ttl(time.Minute), "orders", map[string]string{"Content-Type": "text/plain", "X-Request-Id": "first"})
	ct.expect(ct.do("GET", "/orders?page=1", nil), "MISS", 200, "orders", 1)
	ct.clk.advance(5 * time.Second)
	w := ct.do("GET", "/orders?page=1", nil)
	ct.expect(w, "HIT", 200, "orders", 1)
	if w.Header().Get("Age") != "5" || w.Header().Get("Content-Type") != "text/plain" || w.Header().Get("Content-Length") != "6" {
		t.Fatalf("hit header %v", w.Header())
	}
	if w.Header().Get("X-Request-Id") != "" {
		t.Fatalf("request id of the filling request replayed: %v", w.Header())
	}
	// HEAD is answered from the GET entry.
	w = ct.do("HEAD", "/orders?page=1", nil)
	ct.expect(w, "HIT", 200, "", 1)
	if w.Header().Get("Content-Length") != "6" {
		t.Fatalf("HEAD header %v", w.Header())
	}
	// Another query, another host: other entries.
	ct.expect(ct.do("GET", "/orders?page=2", nil), "MISS", 200, "orders", 2)
	ct.expect(ct.do("GET", "http://other.example/orders?page=1", nil), "MISS", 200, "orders", 3)
	// The route's TTL bounds a response without freshness of its own.
	ct.clk.advance(55 * time.Second)
	ct.expect(ct.do("GET", "/orders?page=1", nil), "MISS", 200, "orders", 4)
}

func TestCacheHeadMissNotStored(t *testing.T) {
	ct := newCacheTest(t, ttl(time.Minute), "orders", nil)
	ct.expect(ct.do("HEAD", "/orders", nil), "MISS", 200, "", 1)
	ct.expect(ct.do("GET", "/orders", nil), "MISS", 200, "orders", 2)
	ct.expect(ct.do("GET", "/orders", nil), "HIT", 200, "orders", 2)
}

func TestCacheStorable(t *testing.T) {
	for _, tc := range []struct {
		name    string
		status  int
		header  map[string]string
		request map[string]string
		stored  bool
	}{
		{"plain 200", 200, nil, nil, true},
		{"404", 404, nil, nil, true},
		{"410", 410, nil, nil, true},
		{"301", 301, map[string]string{"Location": "/new"}, nil, true},
		{"500", 500, nil, nil, false},
		{"302", 302, map[string]string{"Location": "/new"}, nil, false},
		{"no-store", 200, map[string]string{"Cache-Control": "no-store"}, nil, false},
		{"private", 200, map[string]string{"Cache-Control": "private, max-age=60"}, nil, false},
		{"no-cache", 200, map[string]string{"Cache-Control": "no-cache"}, nil, false},
		{"max-age=0", 200, map[string]string{"Cache-Control": "max-age=0"}, nil, false},
		{"set-cookie", 200, map[string]string{"Set-Cookie": "sid=1"}, nil, false},
		{"set-cookie even public", 200, map[string]string{"Set-Cookie": "sid=1", "Cache-Control": "public"}, nil, false},
		{"vary star", 200, map[string]string{"Vary": "*"}, nil, false},
		{"authorization", 200, nil, map[string]string{"Authorization": "Bearer x"}, false},
		{"authorization with max-age only", 200, map[string]string{"Cache-Control": "max-age=60"}, map[string]string{"Authorization": "Bearer x"}, false},
		{"authorization public", 200, map[string]string{"Cache-Control": "public"}, map[string]string{"Authorization": "Bearer x"}, true},
		{"authorization s-maxage", 200, map[string]string{"Cache-Control": "s-maxage=30"}, map[string]string{"Authorization": "Bearer x"}, true},
		{"request no-store", 200, nil, map[string]string{"Cache-Control": "no-store"}, false},
		{"expires in the past", 200, map[string]string{"Expires": "Thu, 01 Jan 1970 00:00:00 GMT"}, nil, false},
		{"invalid expires", 200, map[string]string{"Expires": "0"}, nil, false},
		{"age beyond max-age", 200, map[string]string{"Cache-Control": "max-age=60", "Age": "60"}, nil, false},
		{"event stream", 200, map[string]string{"Content-Type": "text/event-stream"}, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ct := newCacheTest(t, ttl(time.Minute), "x", tc.header)
			ct.o.status = tc.status
			ct.do("GET", "/a", tc.request)
			if got := ct.c.len() == 1; got != tc.stored {
				t.Fatalf("stored %v, want %v", got, tc.stored)
			}
			if tc.stored {
				w := ct.do("GET", "/a", tc.request)
				ct.expect(w, "HIT", tc.status, "x", 1)
			}
		})
	}
}

func TestCacheAuthenticatedIdentity(t *testing.T) {
	ct := newCacheTest(t, ttl(time.Minute), "mine", nil)
	r := withIdentity(httptest.NewRequest("GET", "/me", nil), &Identity{KeyName: "shop"})
	ct.h.ServeHTTP(httptest.NewRecorder(), r)
	if ct.c.len() != 0 {
		t.Fatal("response to an authenticated request stored without public")
	}
}

func TestCacheFreshness(t *testing.T) {
	for _, tc := range []struct {
		name   string
		ttl    time.Duration
		header map[string]string
		fresh  time.Duration // still a hit just before, a miss at
	}{
		{"max-age", time.Hour, map[string]string{"Cache-Control": "max-age=10"}, 10 * time.Second},
		{"ttl caps max-age", 30 * time.Second, map[string]string{"Cache-Control": "public, max-age=3600"}, 30 * time.Second},
		{"s-maxage wins", time.Hour, map[string]string{"Cache-Control": "max-age=100, s-maxage=5"}, 5 * time.Second},
		{"age counts", time.Hour, map[string]string{"Cache-Control": "max-age=10", "Age": "4"}, 6 * time.Second},
		{"expires", time.Hour, map[string]string{"Date": "Fri, 02 Jan 2026 03:04:05 GMT", "Expires": "Fri, 02 Jan 2026 03:04:25 GMT"}, 20 * time.Second},
		{"ttl alone", 15 * time.Second, nil, 15 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ct := newCacheTest(t, ttl(tc.ttl), "x", tc.header)
			ct.expect(ct.do("GET", "/a", nil), "MISS", 200, "x", 1)
			ct.clk.advance(tc.fresh - time.Millisecond)
			ct.expect(ct.do("GET", "/a", nil), "HIT", 200, "x", 1)
			ct.clk.advance(time.Millisecond)
			ct.expect(ct.do("GET", "/a", nil), "MISS", 200, "x", 2)
		})
	}
}

func TestCacheAgeHeaderIncludesInitialAge(t *testing.T) {
	ct := newCacheTest(t, ttl(time.Hour), "x", map[string]string{"Cache-Control": "max-age=100", "Age": "40"})
	ct.do("GET", "/a", nil)
	ct.clk.advance(2 * time.Second)
	if w := ct.do("GET", "/a", nil); w.Header().Get("Age") != "42" || len(w.Header().Values("Age")) != 1 {
		t.Fatalf("Age %q", w.Header().Values("Age"))
	}
}

func TestCacheVary(t *testing.T) {
	ct := newCacheTest(t, ttl(time.Minute), "hello", map[string]string{"Vary": "Accept-Language"})
	en := map[string]string{"Accept-Language": "en"}
	fr := map[string]string{"Accept-Language": "fr"}
	ct.expect(ct.do("GET", "/a", en), "MISS", 200, "hello", 1)
	ct.expect(ct.do("GET", "/a", en), "HIT", 200, "hello", 1)
	ct.o.set("bonjour", map[string]string{"Vary": "Accept-Language"})
	ct.expect(ct.do("GET", "/a", fr), "MISS", 200, "bonjour", 2)
	ct.expect(ct.do("GET", "/a", fr), "HIT", 200, "bonjour", 2)
	ct.expect(ct.do("GET", "/a", en), "HIT", 200, "hello", 2)
	ct.expect(ct.do("GET", "/a", nil), "MISS", 200, "bonjour", 3) // absent is a value of its own
	ct.expect(ct.do("GET", "/a", map[string]string{"Accept-Language": ""}), "MISS", 200, "bonjour", 4)
	if n := ct.c.len(); n != 4 {
		t.Fatalf("%d variants, want 4", n)
	}
}

func TestCacheRequestDirectives(t *testing.T) {
	ct := newCacheTest(t, ttl(time.Minute), "v1", nil)
	ct.expect(ct.do("GET", "/a", nil), "MISS", 200, "v1", 1)
	ct.o.set("v2", nil)
	// no-cache skips the entry but refreshes it.
	ct.expect(ct.do("GET", "/a", map[string]string{"Cache-Control": "no-cache"}), "MISS", 200, "v2", 2)
	ct.expect(ct.do("GET", "/a", nil), "HIT", 200, "v2", 2)
	ct.o.set("v3", nil)
	ct.expect(ct.do("GET", "/a", map[string]string{"Pragma": "no-cache"}), "MISS", 200, "v3", 3)
	ct.clk.advance(10 * time.Second)
	// max-age bounds the age the client accepts.
	ct.expect(ct.do("GET", "/a", map[string]string{"Cache-Control": "max-age=10"}), "HIT", 200, "v3", 3)
	ct.o.set("v4", nil)
	ct.expect(ct.do("GET", "/a", map[string]string{"Cache-Control": "max-age=9"}), "MISS", 200, "v4", 4)
	// no-store neither reads nor writes.
	ct.o.set("v5", nil)
	ct.expect(ct.do("GET", "/a", map[string]string{"Cache-Control": "no-store"}), "MISS", 200, "v5", 5)
	ct.expect(ct.do("GET", "/a", nil), "HIT", 200, "v4", 5)
}

func TestCacheETag(t *testing.T) {
	ct := newCacheTest(t, ttl(time.Minute), "body", map[string]string{"ETag": `"abc"`, "Content-Type": "text/plain"})
	// A miss with a matching If-None-Match: the backend is asked for the
	// full response (stored), the client gets 304.
	w := ct.do("GET", "/a", map[string]string{"If-None-Match": `"abc"`})
	ct.expect(w, "MISS", 304, "", 1)
	if ct.o.lastINM != "" {
		t.Fatalf("If-None-Match reached the backend: %q", ct.o.lastINM)
	}
	if ct.c.len() != 1 {
		t.Fatal("full response not stored")
	}
	for _, tc := range []struct {
		inm  string
		code int
		body string
	}{
		{`"abc"`, 304, ""},
		{`W/"abc"`, 304, ""}, // weak comparison
		{`"x", "abc"`, 304, ""},
		{`*`, 304, ""},
		{`"abd"`, 200, "body"},
		{`W/"ab"`, 200, "body"},
		{"", 200, "body"},
	} {
		w := ct.do("GET", "/a", map[string]string{"If-None-Match": tc.inm})
		ct.expect(w, "HIT", tc.code, tc.body, 1)
		if w.Header().Get("Etag") != `"abc"` {
			t.Fatalf("%s: ETag %q", tc.inm, w.Header().Get("Etag"))
		}
		if tc.code == 304 && w.Header().Get("Content-Length") != "" {
			t.Fatalf("304 with Content-Length %q", w.Header().Get("Content-Length"))
		}
	}
	// An uncacheable response with an ETag is answered 304 too.
	ct2 := newCacheTest(t, ttl(time.Minute), "secret", map[string]string{"ETag": `W/"s1"`, "Cache-Control": "private"})
	ct2.expect(ct2.do("GET", "/me", map[string]string{"If-None-Match": `"s1"`}), "MISS", 304, "", 1)
	ct2.expect(ct2.do("GET", "/me", map[string]string{"If-None-Match": `"s2"`}), "MISS", 200, "secret", 2)
	if ct2.c.len() != 0 {
		t.Fatal("private response stored")
	}
}

func TestCacheSizeBound(t *testing.T) {
	ct := newCacheTest(t, ttl(time.Minute), "", nil)
	ct.c.maxBody = 100
	ct.o.set(strings.Repeat("a", 100), nil)
	ct.expect(ct.do("GET", "/fits", nil), "MISS", 200, strings.Repeat("a", 100), 1)
	ct.o.set(strings.Repeat("b", 101), nil)
	ct.expect(ct.do("GET", "/big", nil), "MISS", 200, strings.Repeat("b", 101), 2)
	ct.expect(ct.do("GET", "/big", nil), "MISS", 200, strings.Repeat("b", 101), 3)
	ct.expect(ct.do("GET", "/fits", nil), "HIT", 200, strings.Repeat("a", 100), 3)
	if n := ct.c.len(); n != 1 {
		t.Fatalf("%d entries, want 1", n)
	}
}

func TestCacheTruncatedNotStored(t *testing.T) {
	ct := newCacheTest(t, ttl(time.Minute), "short", map[string]string{"Content-Length": "10"})
	ct.do("GET", "/a", nil)
	if ct.c.len() != 0 {
		t.Fatal("truncated response stored")
	}
}

func TestCacheLRU(t *testing.T) {
	ct := newCacheTest(t, config.GatewayCache{TTL: config.Duration(time.Minute), MaxEntries: 2}, "x", nil)
	ct.expect(ct.do("GET", "/a", nil), "MISS", 200, "x", 1)
	ct.expect(ct.do("GET", "/b", nil), "MISS", 200, "x", 2)
	ct.expect(ct.do("GET", "/a", nil), "HIT", 200, "x", 2)  // /a is now the most recent
	ct.expect(ct.do("GET", "/c", nil), "MISS", 200, "x", 3) // evicts /b
	ct.expect(ct.do("GET", "/a", nil), "HIT", 200, "x", 3)
	ct.expect(ct.do("GET", "/c", nil), "HIT", 200, "x", 3)
	ct.expect(ct.do("GET", "/b", nil), "MISS", 200, "x", 4)
	if n := ct.c.len(); n != 2 {
		t.Fatalf("%d entries, want 2", n)
	}
}

func TestCacheVariantsBounded(t *testing.T) {
	ct := newCacheTest(t, ttl(time.Minute), "x", map[string]string{"Vary": "User-Agent"})
	for i := range 2 * maxCacheVariants {
		ct.do("GET", "/a", map[string]string{"User-Agent": "ua" + strconv.Itoa(i)})
	}
	if n := ct.c.len(); n != maxCacheVariants {
		t.Fatalf("%d variants kept, want %d", n, maxCacheVariants)
	}
	ct.expect(ct.do("GET", "/a", map[string]string{"User-Agent": "ua" + strconv.Itoa(2*maxCacheVariants-1)}), "HIT", 200, "x", 2*maxCacheVariants)
}

func TestCacheUnsafeMethodInvalidates(t *testing.T) {
	ct := newCacheTest(t, ttl(time.Minute), "v1", nil)
	ct.do("GET", "/a", nil)
	ct.o.set("v2", nil)
	ct.expect(ct.do("POST", "/a", nil), "", 200, "v2", 2)
	ct.expect(ct.do("GET", "/a", nil), "MISS", 200, "v2", 3)
	// A failed unsafe request leaves the entry.
	ct.o.status = 500
	ct.do("DELETE", "/a", nil)
	ct.o.status = 0
	ct.expect(ct.do("GET", "/a", nil), "HIT", 200, "v2", 4)
}

// TestCacheEventStreamNotBuffered checks that an event stream reaches the
// client while the handler still runs, and is not stored.
func TestCacheEventStreamNotBuffered(t *testing.T) {
	c, err := newResponseCache(&config.GatewayCache{TTL: config.Duration(time.Minute)}, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	next := make(chan struct{})
	srv := httptest.NewServer(c.middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "public, max-age=60")
		for i := range 3 {
			_, _ = io.WriteString(w, "data: "+strconv.Itoa(i)+"\n\n")
			w.(http.Flusher).Flush()
			select {
			case <-next:
			case <-r.Context().Done():
				return
			}
		}
	})))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(resp.Body)
	for i := range 3 {
		line, err := br.ReadString('\n')
		if err != nil || line != "data: "+strconv.Itoa(i)+"\n" {
			t.Fatalf("event %d: %q %v", i, line, err)
		}
		_, _ = br.ReadString('\n')
		next <- struct{}{}
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if c.len() != 0 {
		t.Fatal("event stream stored")
	}
}

// TestCacheConcurrent runs hits, misses and evictions at once (for the
// race detector).
func TestCacheConcurrent(t *testing.T) {
	ct := newCacheTest(t, config.GatewayCache{TTL: config.Duration(time.Minute), MaxEntries: 8}, "x", nil)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				w := ct.do("GET", "/p"+strconv.Itoa((g+i)%12), nil)
				if w.Code != 200 || w.Body.String() != "x" {
					t.Errorf("%d %q", w.Code, w.Body.String())
					return
				}
			}
		}()
	}
	wg.Wait()
	if n := ct.c.len(); n > 8 {
		t.Fatalf("%d entries, want at most 8", n)
	}
}

func TestCacheWithGzip(t *testing.T) {
	big := strings.Repeat("compress me ", 200)
	ct := newCacheTest(t, ttl(time.Minute), big, map[string]string{"Content-Type": "text/plain"})
	ct.h = ct.c.middleware(newGzip()(ct.o))
	gz := map[string]string{"Accept-Encoding": "gzip"}
	w := ct.do("GET", "/a", gz)
	if w.Header().Get("Content-Encoding") != "gzip" || w.Header().Get("X-Cache") != "MISS" {
		t.Fatalf("first %v", w.Header())
	}
	zipped := w.Body.String()
	w = ct.do("GET", "/a", gz)
	if w.Header().Get("Content-Encoding") != "gzip" || w.Header().Get("X-Cache") != "HIT" || w.Body.String() != zipped {
		t.Fatalf("second %v", w.Header())
	}
	// A client without gzip gets its own variant.
	w = ct.do("GET", "/a", nil)
	if w.Header().Get("Content-Encoding") != "" || w.Header().Get("X-Cache") != "MISS" || w.Body.String() != big {
		t.Fatalf("plain %v", w.Header())
	}
}

// The bodies kept are bounded in bytes, not only in entries: URLs that
// differ only by a query parameter cannot fill memory.
func TestCacheByteBudget(t *testing.T) {
	c, err := newResponseCache(&config.GatewayCache{TTL: config.Duration(time.Minute)}, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	c.maxBytes = 10 << 10
	body := make([]byte, 1<<10)
	for i := range 50 {
		c.put(&cacheEntry{url: fmt.Sprintf("h /big?x=%d", i), status: 200, header: http.Header{}, body: body, stored: time.Now()})
	}
	c.mu.Lock()
	n, b := c.lru.Len(), c.bytes
	c.mu.Unlock()
	if n != 10 || b != 10<<10 {
		t.Errorf("kept %d entries, %d bytes; want 10 entries of 1 KiB", n, b)
	}
}
