package pipeline

import (
	"container/list"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/expr"
)

func init() {
	processors["enrich"] = func(_ context.Context, env *Env, cfg *config.PipelineProcess) (Processor, error) {
		return newEnricher(env, cfg.Enrich)
	}
}

// Defaults of enrich.
const (
	enrichDefaultCache = time.Minute
	enrichCacheEntries = 10_000
	enrichTimeout      = 30 * time.Second
	enrichAttempts     = 3
	enrichMaxBody      = 16 << 20
)

// enrichBackoff is the wait before each retry of a call (tests shorten
// it).
var enrichBackoff = []time.Duration{200 * time.Millisecond, time.Second}

// enricher GETs a service (through the mesh: http://service/path) or a
// URL (url + path) per record, the path a template over row, and puts the
// JSON answer under Into (default enrichment).
//
// Answers are cached by URL for Cache (default 1m; a negative duration
// turns the cache off), at most 10,000 of them, the least recently used
// going first. Only successful answers are cached.
//
// Failures: a 4xx answer (but 408 and 429) refuses the record, which
// goes to the dead letter with the status and the start of the answer; a
// 408, 429 or 5xx answer, a connection error or a timeout (30s a call)
// is retried twice, after 200ms and 1s, and then ends the run (an error
// that is not the record's: the service is failing, and the run resumes
// from its last batch when started again). An answer that is not JSON
// refuses the record.
type enricher struct {
	client  *http.Client
	base    string // http://service or the URL
	path    *expr.Template
	into    string
	ttl     time.Duration // <= 0: no cache
	cache   *enrichCache
	backoff []time.Duration
}

func newEnricher(env *Env, e *config.EnrichProcess) (*enricher, error) {
	if e == nil {
		return nil, fmt.Errorf("enrich: no configuration")
	}
	p := &enricher{into: e.Into, ttl: e.Cache.D(), backoff: enrichBackoff}
	if p.into == "" {
		p.into = "enrichment"
	}
	if p.ttl == 0 {
		p.ttl = enrichDefaultCache
	}
	if p.ttl > 0 {
		p.cache = newEnrichCache(enrichCacheEntries)
	}
	var rt http.RoundTripper
	switch {
	case e.Service != "" && e.URL != "":
		return nil, fmt.Errorf("enrich: calls a service or a url, not both")
	case e.Service != "":
		if env.Services == nil {
			return nil, fmt.Errorf("enrich: service %s: the node has no service mesh", e.Service)
		}
		rt, p.base = env.Services, "http://"+e.Service
	case e.URL != "":
		if u, err := url.Parse(e.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("enrich: url must be an absolute http(s) URL, got %q", e.URL)
		}
		rt, p.base = env.HTTP, strings.TrimSuffix(e.URL, "/")
		if rt == nil {
			rt = http.DefaultTransport
		}
	default:
		return nil, fmt.Errorf("enrich: needs service or url")
	}
	p.client = &http.Client{Transport: rt, Timeout: enrichTimeout}
	var err error
	if p.path, err = expr.CompileTemplate(e.Path); err != nil {
		return nil, fmt.Errorf("enrich: path: %w", err)
	}
	return p, nil
}

func (p *enricher) Process(ctx context.Context, r *Record) ([]*Record, error) {
	v, err := p.path.Eval(map[string]any{"row": r.vars()})
	if err != nil {
		return nil, fmt.Errorf("%w: enrich: path: %v", ErrRecord, err)
	}
	path, ok := v.(string)
	if !ok {
		path = fmt.Sprint(v)
	}
	if path != "" && !strings.HasPrefix(path, "/") && !strings.HasPrefix(path, "?") {
		path = "/" + path
	}
	target := p.base + path
	if _, err := url.Parse(target); err != nil {
		return nil, fmt.Errorf("%w: enrich: invalid URL %q: %v", ErrRecord, target, err)
	}
	body, ok := p.cache.get(target, time.Now())
	if !ok {
		if body, err = p.fetch(ctx, target); err != nil {
			return nil, err
		}
		if p.cache != nil {
			p.cache.put(target, body, time.Now().Add(p.ttl))
		}
	}
	var ans any
	if len(body) > 0 {
		// Decoded afresh for each record: records do not share maps.
		if err := json.Unmarshal(body, &ans); err != nil {
			return nil, fmt.Errorf("%w: enrich: %s answered something that is not JSON: %v", ErrRecord, target, err)
		}
	}
	src := r.Map()
	fields := make(map[string]any, len(src)+1)
	for k, x := range src {
		fields[k] = x
	}
	fields[p.into] = ans
	r.Fields = fields
	return []*Record{r}, nil
}

// fetch GETs target, retrying what may pass on its own.
func (p *enricher) fetch(ctx context.Context, target string) ([]byte, error) {
	for attempt := 0; ; attempt++ {
		body, retry, err := p.get(ctx, target)
		if err == nil || !retry || attempt >= len(p.backoff) || ctx.Err() != nil {
			return body, err
		}
		t := time.NewTimer(p.backoff[attempt])
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

// get makes one call; retry says whether its failure may pass.
func (p *enricher) get(ctx context.Context, target string) (body []byte, retry bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return nil, false, fmt.Errorf("%w: enrich: %v", ErrRecord, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := p.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, false, ctx.Err()
		}
		return nil, true, fmt.Errorf("enrich: GET %s: %w", target, err)
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(io.LimitReader(resp.Body, enrichMaxBody+1))
	if err != nil {
		return nil, true, fmt.Errorf("enrich: GET %s: reading the answer: %w", target, err)
	}
	switch c := resp.StatusCode; {
	case c >= 200 && c < 300:
		if len(body) > enrichMaxBody {
			return nil, false, fmt.Errorf("%w: enrich: GET %s: the answer exceeds %d bytes", ErrRecord, target, enrichMaxBody)
		}
		return body, false, nil
	case c == http.StatusRequestTimeout || c == http.StatusTooManyRequests || c >= 500:
		return nil, true, fmt.Errorf("enrich: GET %s: %s%s", target, resp.Status, enrichSnippet(body))
	default:
		return nil, false, fmt.Errorf("%w: enrich: GET %s: %s%s", ErrRecord, target, resp.Status, enrichSnippet(body))
	}
}

// enrichSnippet is the start of an answer, for an error message.
func enrichSnippet(b []byte) string {
	s := strings.Join(strings.Fields(string(b)), " ")
	if s == "" {
		return ""
	}
	if r := []rune(s); len(r) > 200 {
		s = string(r[:200]) + "..."
	}
	return ": " + s
}

// enrichCache is an LRU cache of answers with an expiry each.
type enrichCache struct {
	mu    sync.Mutex
	max   int
	order *list.List // most recently used first
	items map[string]*list.Element
}

type enrichEntry struct {
	key     string
	body    []byte
	expires time.Time
}

func newEnrichCache(max int) *enrichCache {
	return &enrichCache{max: max, order: list.New(), items: map[string]*list.Element{}}
}

func (c *enrichCache) get(key string, now time.Time) ([]byte, bool) {
	if c == nil {
		return nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	el := c.items[key]
	if el == nil {
		return nil, false
	}
	e := el.Value.(*enrichEntry)
	if !now.Before(e.expires) {
		c.order.Remove(el)
		delete(c.items, key)
		return nil, false
	}
	c.order.MoveToFront(el)
	return e.body, true
}

func (c *enrichCache) put(key string, body []byte, expires time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el := c.items[key]; el != nil {
		e := el.Value.(*enrichEntry)
		e.body, e.expires = body, expires
		c.order.MoveToFront(el)
		return
	}
	c.items[key] = c.order.PushFront(&enrichEntry{key, body, expires})
	for c.order.Len() > c.max {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.items, last.Value.(*enrichEntry).key)
	}
}
