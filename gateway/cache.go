package gateway

import (
	"bytes"
	"container/list"
	"fmt"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/internal/httpserver"
)

// Bounds of a response cache.
const (
	defaultCacheEntries = 10000
	// maxCacheBody is the largest body kept; larger responses stream
	// through uncached.
	maxCacheBody = 1 << 20
	// defaultCacheBytes bounds the bodies one route's cache keeps, so
	// many distinct URLs (a query parameter that varies) cannot grow it
	// to entries × maxCacheBody.
	defaultCacheBytes = 64 << 20
	// maxCacheVariants bounds the variants kept of one URL (responses
	// that Vary on a header taking many values), so that finding one
	// stays cheap.
	maxCacheVariants = 32
)

// newCache caches GET and HEAD responses.
func newCache(cfg *config.GatewayCache) (middleware, error) {
	c, err := newResponseCache(cfg, time.Now)
	if err != nil {
		return nil, err
	}
	return c.middleware, nil
}

// responseCache is one route's shared HTTP cache (RFC 9111), in memory.
//
// A response is stored when a GET gets one of the statuses cacheable by
// default with a Cache-Control that allows a shared cache to store it,
// and no Set-Cookie (which must never reach another client). Its
// freshness is s-maxage, max-age or Expires, capped by the route's TTL;
// without any, it is the TTL, unless the request carried credentials (an
// Authorization header or an identity the gateway authenticated) and
// the response is not marked public. A response to a request with
// credentials is only ever stored when public, s-maxage or
// must-revalidate allows it (RFC 9111 section 3.5).
//
// The key is the host, path and query, so HEAD is answered from the entry
// of GET, and within a URL the request's values of the headers the
// response's Vary names. Entries are served with Age and X-Cache, answer
// If-None-Match with 304, and are dropped least recently used first
// beyond max_entries. Stale entries are not revalidated: the next request
// fetches a fresh one. A successful unsafe request (POST, PUT, PATCH,
// DELETE) drops the entries of its URL. Concurrent misses of one URL
// each go to the backend.
type responseCache struct {
	ttl        time.Duration
	maxEntries int
	maxBody    int
	now        func() time.Time

	maxBytes int

	mu    sync.Mutex
	bytes int                        // the bodies' bytes kept
	lru   list.List                  // of *cacheEntry, most recently used first
	byURL map[string][]*list.Element // the variants of a URL, oldest first
}

// cacheEntry is one stored response.
type cacheEntry struct {
	url      string
	vary     []string // canonical header names
	varyVals []string // the request's values of vary
	status   int
	header   http.Header
	body     []byte
	etag     string
	stored   time.Time
	age      time.Duration // its age when stored (the Age it came with)
	expires  time.Time
}

func newResponseCache(cfg *config.GatewayCache, now func() time.Time) (*responseCache, error) {
	if cfg.TTL <= 0 {
		return nil, fmt.Errorf("cache.ttl must be positive, got %s", cfg.TTL.D())
	}
	if cfg.MaxEntries < 0 {
		return nil, fmt.Errorf("cache.max_entries must not be negative, got %d", cfg.MaxEntries)
	}
	n := cfg.MaxEntries
	if n == 0 {
		n = defaultCacheEntries
	}
	return &responseCache{ttl: cfg.TTL.D(), maxEntries: n, maxBody: maxCacheBody, maxBytes: defaultCacheBytes, now: now,
		byURL: map[string][]*list.Element{}}, nil
}

// cacheURL is the key of r's URL: the host, path and query.
func cacheURL(r *http.Request) string {
	return strings.ToLower(r.Host) + " " + r.URL.EscapedPath() + "?" + r.URL.RawQuery
}

// varyValue is r's value of a header named by Vary, absent and empty
// kept apart.
func varyValue(r *http.Request, name string) string {
	vs := r.Header.Values(name)
	if len(vs) == 0 {
		return ""
	}
	return "=" + strings.Join(vs, ",")
}

func (c *responseCache) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "" {
			next.ServeHTTP(w, r) // a protocol switch (WebSocket) is no response to keep
			return
		}
		switch r.Method {
		case http.MethodGet, http.MethodHead:
		case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
			sw := &httpserver.StatusWriter{ResponseWriter: w}
			next.ServeHTTP(sw, r)
			if sw.Code() < 400 {
				c.invalidate(cacheURL(r))
			}
			return
		default:
			next.ServeHTTP(w, r)
			return
		}
		now := c.now()
		cc := parseCacheControl(r.Header.Values("Cache-Control"))
		_, noStore := cc["no-store"]
		_, noCache := cc["no-cache"]
		if len(cc) == 0 && strings.Contains(strings.ToLower(r.Header.Get("Pragma")), "no-cache") {
			noCache = true
		}
		maxAge := time.Duration(-1)
		if v, ok := cc["max-age"]; ok {
			if s, err := strconv.ParseInt(v, 10, 64); err == nil && s >= 0 {
				maxAge = time.Duration(min(s, 1<<32)) * time.Second
			}
		}
		key := cacheURL(r)
		if !noCache && !noStore {
			if e := c.lookup(key, r, now, maxAge); e != nil {
				c.serve(w, r, e, now)
				return
			}
		}
		cw := &cacheWriter{ResponseWriter: w, c: c, r: r, key: key, now: now, noStore: noStore,
			inm: r.Header.Values("If-None-Match"), hdr: http.Header{}}
		if len(cw.inm) > 0 && r.Method == http.MethodGet {
			// The cache answers If-None-Match itself, so that the backend
			// sends a full response it can store.
			r2 := r.WithContext(r.Context())
			r2.Header = r.Header.Clone()
			r2.Header.Del("If-None-Match")
			r = r2
		}
		next.ServeHTTP(cw, r)
		cw.finish()
	})
}

// lookup finds the fresh entry of key matching r.
func (c *responseCache) lookup(key string, r *http.Request, now time.Time, maxAge time.Duration) *cacheEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, el := range slices.Backward(c.byURL[key]) {
		e := el.Value.(*cacheEntry)
		if !e.matches(r) {
			continue
		}
		if !now.Before(e.expires) {
			c.remove(el)
			return nil
		}
		if maxAge >= 0 && e.ageAt(now) > maxAge {
			return nil
		}
		c.lru.MoveToFront(el)
		return e
	}
	return nil
}

func (e *cacheEntry) matches(r *http.Request) bool {
	for i, name := range e.vary {
		if varyValue(r, name) != e.varyVals[i] {
			return false
		}
	}
	return true
}

func (e *cacheEntry) ageAt(now time.Time) time.Duration {
	return e.age + max(0, now.Sub(e.stored))
}

// put stores e, replacing the variant it matches, and drops the least
// recently used entries beyond the bound.
func (c *responseCache) put(e *cacheEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, el := range c.byURL[e.url] {
		if old := el.Value.(*cacheEntry); slices.Equal(old.vary, e.vary) && slices.Equal(old.varyVals, e.varyVals) {
			c.remove(el)
			break
		}
	}
	if vs := c.byURL[e.url]; len(vs) >= maxCacheVariants {
		c.remove(vs[0])
	}
	c.byURL[e.url] = append(c.byURL[e.url], c.lru.PushFront(e))
	c.bytes += len(e.body)
	for c.lru.Len() > c.maxEntries || c.bytes > c.maxBytes && c.lru.Len() > 1 {
		c.remove(c.lru.Back())
	}
}

// remove drops one entry; c.mu is held.
func (c *responseCache) remove(el *list.Element) {
	e := el.Value.(*cacheEntry)
	c.lru.Remove(el)
	c.bytes -= len(e.body)
	vs := slices.DeleteFunc(c.byURL[e.url], func(x *list.Element) bool { return x == el })
	if len(vs) == 0 {
		delete(c.byURL, e.url)
	} else {
		c.byURL[e.url] = vs
	}
}

// invalidate drops every variant of key.
func (c *responseCache) invalidate(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, el := range slices.Clone(c.byURL[key]) {
		c.remove(el)
	}
}

// len is the number of entries (for tests).
func (c *responseCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}

// addHeader adds src to dst, as a backend writing into dst would have.
func addHeader(dst, src http.Header) {
	for k, vs := range src {
		for _, v := range vs {
			dst.Add(k, v)
		}
	}
}

// serve answers r from e.
func (c *responseCache) serve(w http.ResponseWriter, r *http.Request, e *cacheEntry, now time.Time) {
	h := w.Header()
	addHeader(h, e.header)
	h.Set("Age", strconv.FormatInt(int64(e.ageAt(now)/time.Second), 10))
	h.Set("X-Cache", "HIT")
	if e.status/100 == 2 && e.etag != "" && etagMatch(r.Header.Values("If-None-Match"), e.etag) {
		h.Del("Content-Length")
		w.WriteHeader(http.StatusNotModified)
		return
	}
	if e.status != http.StatusNoContent {
		h.Set("Content-Length", strconv.Itoa(len(e.body)))
	}
	w.WriteHeader(e.status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(e.body)
	}
}

// storable reports for how long a response to r with code and h may be
// kept, or ok false.
func (c *responseCache) storable(r *http.Request, code int, h http.Header, now time.Time) (life time.Duration, ok bool) {
	switch code {
	case http.StatusOK, http.StatusNonAuthoritativeInfo, http.StatusNoContent, http.StatusMovedPermanently,
		http.StatusNotFound, http.StatusGone:
	default:
		return 0, false
	}
	if r.Method != http.MethodGet {
		return 0, false // HEAD has no body to keep
	}
	for _, v := range h.Values("Vary") {
		for name := range strings.SplitSeq(v, ",") {
			if strings.TrimSpace(name) == "*" {
				return 0, false
			}
		}
	}
	if len(h.Values("Set-Cookie")) > 0 {
		return 0, false
	}
	if mt, _, _ := mime.ParseMediaType(h.Get("Content-Type")); mt == "text/event-stream" {
		return 0, false
	}
	cc := parseCacheControl(h.Values("Cache-Control"))
	for _, d := range []string{"no-store", "private", "no-cache"} {
		if _, ok := cc[d]; ok {
			return 0, false
		}
	}
	_, public := cc["public"]
	_, mustRevalidate := cc["must-revalidate"]
	sMaxAge, hasSMaxAge := cc["s-maxage"]
	credentials := r.Header.Get("Authorization") != "" || r.Header.Get("Cookie") != "" || identity(r) != nil
	if credentials && !public && !hasSMaxAge && !mustRevalidate {
		return 0, false
	}
	life = c.ttl
	seconds := func(v string) time.Duration {
		s, err := strconv.ParseInt(v, 10, 64)
		if err != nil || s < 0 {
			return 0
		}
		return time.Duration(min(s, 1<<32)) * time.Second
	}
	switch maxAge, hasMaxAge := cc["max-age"]; {
	case hasSMaxAge:
		life = min(life, seconds(sMaxAge))
	case hasMaxAge:
		life = min(life, seconds(maxAge))
	case h.Get("Expires") != "":
		exp, err := http.ParseTime(h.Get("Expires"))
		if err != nil {
			return 0, false // an invalid Expires means already expired
		}
		base := now
		if d, err := http.ParseTime(h.Get("Date")); err == nil {
			base = d
		}
		life = min(life, exp.Sub(base))
	}
	if life <= 0 {
		return 0, false
	}
	return life, true
}

// cacheWriter passes a response through to the client while keeping a
// copy to store.
type cacheWriter struct {
	http.ResponseWriter
	c       *responseCache
	r       *http.Request
	key     string
	now     time.Time
	noStore bool
	inm     []string // the request's If-None-Match

	hdr         http.Header // the backend's header, kept apart from the client's
	code        int         // 0 before the header
	life        time.Duration
	store       bool // still keeping the body
	notModified bool // the client got 304: the body is not sent
	body        bytes.Buffer
}

func (cw *cacheWriter) Header() http.Header { return cw.hdr }

func (cw *cacheWriter) Unwrap() http.ResponseWriter { return cw.ResponseWriter }

func (cw *cacheWriter) WriteHeader(code int) {
	if cw.code != 0 {
		return
	}
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		cw.ResponseWriter.WriteHeader(code)
		return
	}
	cw.code = code
	if !cw.noStore {
		cw.life, cw.store = cw.c.storable(cw.r, code, cw.hdr, cw.now)
	}
	h := cw.ResponseWriter.Header()
	addHeader(h, cw.hdr)
	h.Set("X-Cache", "MISS")
	if code/100 == 2 && len(cw.inm) > 0 && cw.r.Method == http.MethodGet {
		if et := cw.hdr.Get("Etag"); et != "" && etagMatch(cw.inm, et) {
			cw.notModified = true
			h.Del("Content-Length")
			cw.ResponseWriter.WriteHeader(http.StatusNotModified)
			return
		}
	}
	cw.ResponseWriter.WriteHeader(code)
}

func (cw *cacheWriter) Write(p []byte) (int, error) {
	if cw.code == 0 {
		cw.WriteHeader(http.StatusOK)
	}
	if cw.store {
		if cw.body.Len()+len(p) > cw.c.maxBody {
			cw.store = false
			cw.body = bytes.Buffer{}
		} else {
			cw.body.Write(p)
		}
	}
	if cw.notModified {
		return len(p), nil
	}
	return cw.ResponseWriter.Write(p)
}

func (cw *cacheWriter) Flush() {
	if cw.code == 0 {
		cw.WriteHeader(http.StatusOK)
	}
	if f, ok := cw.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// finish stores the response once the backend is done with it.
func (cw *cacheWriter) finish() {
	if cw.code == 0 {
		// The backend wrote nothing: nothing to keep, whatever the
		// server answers for it.
		cw.WriteHeader(http.StatusOK)
		cw.store = false
	}
	if !cw.store || cw.r.Context().Err() != nil {
		return
	}
	if cw.hdr.Get("Junction-Error") != "" || cw.hdr.Get(CompletedHeader) == "false" {
		return // Junction's own refusals and partial aggregates are not answers to keep
	}
	if cl := cw.hdr.Get("Content-Length"); cl != "" && cl != strconv.Itoa(cw.body.Len()) {
		return // cut short
	}
	h := cw.hdr.Clone()
	age := time.Duration(0)
	if a, err := strconv.ParseInt(h.Get("Age"), 10, 64); err == nil && a > 0 {
		age = time.Duration(min(a, 1<<32)) * time.Second
	}
	if age >= cw.life {
		return
	}
	h.Del("Age")
	h.Del(RequestIDHeader) // of the request that filled the entry
	e := &cacheEntry{url: cw.key, status: cw.code, header: h, body: bytes.Clone(cw.body.Bytes()),
		etag: h.Get("Etag"), stored: cw.now, age: age, expires: cw.now.Add(cw.life - age)}
	for _, v := range h.Values("Vary") {
		for name := range strings.SplitSeq(v, ",") {
			if name = strings.TrimSpace(name); name != "" {
				name = http.CanonicalHeaderKey(name)
				if !slices.Contains(e.vary, name) {
					e.vary = append(e.vary, name)
				}
			}
		}
	}
	for _, name := range e.vary {
		e.varyVals = append(e.varyVals, varyValue(cw.r, name))
	}
	cw.c.put(e)
}

// parseCacheControl returns the directives of Cache-Control, names in
// lower case, values unquoted.
func parseCacheControl(values []string) map[string]string {
	var m map[string]string
	for _, v := range values {
		for part := range strings.SplitSeq(v, ",") {
			name, val, _ := strings.Cut(strings.TrimSpace(part), "=")
			name = strings.ToLower(strings.TrimSpace(name))
			if name == "" {
				continue
			}
			if m == nil {
				m = map[string]string{}
			}
			m[name] = strings.Trim(strings.TrimSpace(val), `"`)
		}
	}
	return m
}

// etagMatch reports whether If-None-Match (its field values) matches
// etag by the weak comparison (RFC 9110 section 8.8.3.2).
func etagMatch(inm []string, etag string) bool {
	want := strings.TrimPrefix(etag, "W/")
	for _, v := range inm {
		for v != "" {
			v = strings.TrimLeft(v, " \t,")
			switch {
			case v == "":
			case v[0] == '*':
				return true
			default:
				s := strings.TrimPrefix(v, "W/")
				if s == "" || s[0] != '"' {
					return false
				}
				end := strings.IndexByte(s[1:], '"')
				if end < 0 {
					return false
				}
				if s[:end+2] == want {
					return true
				}
				v = s[end+2:]
			}
		}
	}
	return false
}
