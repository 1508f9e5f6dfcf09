package pipeline

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/junctionhq/junction/config"
)

// enrichServer answers /customers/{id}: 200 with JSON for ids starting
// with "c", 404 for "missing", 500 for "down" and the first try of
// "flaky" (then 200), 429 for "busy", text for "text"; it counts calls.
func enrichServer(t *testing.T) (*httptest.Server, *atomic.Int64) {
	var calls atomic.Int64
	var flaky atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		id := strings.TrimPrefix(r.URL.Path, "/customers/")
		switch {
		case r.Header.Get("Accept") != "application/json":
			http.Error(w, "want JSON", http.StatusNotAcceptable)
		case id == "missing":
			http.Error(w, `{"error": "no such customer"}`, http.StatusNotFound)
		case id == "down":
			http.Error(w, "database unavailable", http.StatusInternalServerError)
		case id == "busy":
			http.Error(w, "slow down", http.StatusTooManyRequests)
		case id == "flaky" && !flaky.Swap(true):
			http.Error(w, "try again", http.StatusBadGateway)
		case id == "text":
			fmt.Fprint(w, "hello")
		case id == "empty":
			w.WriteHeader(http.StatusNoContent)
		default:
			fmt.Fprintf(w, `{"id": %q, "tier": "gold", "tags": ["a"], "q": %q}`, id, r.URL.RawQuery)
		}
	}))
	t.Cleanup(srv.Close)
	return srv, &calls
}

// enrichMesh carries calls to http://customers/... to the test server,
// as the mesh would.
type enrichMesh struct{ target string }

func (m enrichMesh) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Host != "customers" {
		return nil, fmt.Errorf("no service %q", r.URL.Host)
	}
	r = r.Clone(r.Context())
	r.URL.Scheme, r.URL.Host = "http", strings.TrimPrefix(m.target, "http://")
	return http.DefaultTransport.RoundTrip(r)
}

func newTestEnricher(t *testing.T, env *Env, e config.EnrichProcess) *enricher {
	t.Helper()
	p, err := newEnricher(env, &e)
	if err != nil {
		t.Fatal(err)
	}
	p.backoff = []time.Duration{time.Millisecond, time.Millisecond}
	return p
}

func TestEnrich(t *testing.T) {
	srv, calls := enrichServer(t)
	ctx := context.Background()
	env := &Env{HTTP: http.DefaultTransport, Services: enrichMesh{srv.URL}}
	path := "/customers/{{ row.id }}"
	tests := []struct {
		name      string
		cfg       config.EnrichProcess
		id        string
		want      string // the enriched field, printed
		wantErr   string
		record    bool // the error is the record's (dead letter)
		wantCalls int64
	}{
		{"url", config.EnrichProcess{URL: srv.URL, Path: path}, "c1", "map[id:c1 q: tags:[a] tier:gold]", "", false, 1},
		{"service through the mesh, into a field", config.EnrichProcess{Service: "customers", Path: path, Into: "customer"}, "c2", "map[id:c2 q: tags:[a] tier:gold]", "", false, 1},
		{"a path with a query", config.EnrichProcess{URL: srv.URL + "/", Path: "customers/{{ row.id }}?full=1"}, "c3", "map[id:c3 q:full=1 tags:[a] tier:gold]", "", false, 1},
		{"an empty answer is null", config.EnrichProcess{URL: srv.URL, Path: path}, "empty", "<nil>", "", false, 1},
		{"4xx refuses the record", config.EnrichProcess{URL: srv.URL, Path: path}, "missing", "", "404 Not Found: {\"error\": \"no such customer\"}", true, 1},
		{"not JSON refuses the record", config.EnrichProcess{URL: srv.URL, Path: path}, "text", "", "not JSON", true, 1},
		{"5xx is retried, then ends the run", config.EnrichProcess{URL: srv.URL, Path: path}, "down", "", "500 Internal Server Error: database unavailable", false, 3},
		{"429 is retried, then ends the run", config.EnrichProcess{URL: srv.URL, Path: path}, "busy", "", "429 Too Many Requests", false, 3},
		{"a retry that succeeds", config.EnrichProcess{URL: srv.URL, Path: path}, "flaky", "map[id:flaky q: tags:[a] tier:gold]", "", false, 2},
		{"an unknown service ends the run", config.EnrichProcess{Service: "nope", Path: path}, "c1", "", "no service", false, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newTestEnricher(t, env, tt.cfg)
			before := calls.Load()
			out, err := p.Process(ctx, &Record{Fields: map[string]any{"id": tt.id, "n": 1.0}})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || errors.Is(err, ErrRecord) != tt.record {
					t.Fatalf("error %v, want one with %q (record's: %v)", err, tt.wantErr, tt.record)
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				into := tt.cfg.Into
				if into == "" {
					into = "enrichment"
				}
				if got := fmt.Sprint(out[0].Fields[into]); got != tt.want || out[0].Fields["n"] != 1.0 {
					t.Fatalf("got %v, want %s under %s", out[0].Fields, tt.want, into)
				}
			}
			if tt.cfg.Service != "nope" {
				if n := calls.Load() - before; n != tt.wantCalls {
					t.Fatalf("%d calls, want %d", n, tt.wantCalls)
				}
			}
		})
	}
}

func TestEnrichConnectionError(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	p := newTestEnricher(t, &Env{HTTP: http.DefaultTransport}, config.EnrichProcess{URL: url, Path: "/x"})
	_, err := p.Process(context.Background(), &Record{Fields: map[string]any{}})
	if err == nil || errors.Is(err, ErrRecord) {
		t.Fatalf("error %v, want one that ends the run", err)
	}
}

func TestEnrichCache(t *testing.T) {
	srv, calls := enrichServer(t)
	ctx := context.Background()
	env := &Env{HTTP: http.DefaultTransport}
	run := func(p *enricher, ids ...string) []*Record {
		t.Helper()
		var out []*Record
		for _, id := range ids {
			o, err := p.Process(ctx, &Record{Fields: map[string]any{"id": id}})
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, o...)
		}
		return out
	}
	tests := []struct {
		name      string
		cache     time.Duration
		ids       []string
		wantCalls int64
	}{
		{"cached by URL (default 1m)", 0, []string{"c1", "c2", "c1", "c1", "c2"}, 2},
		{"a negative cache is none", -1, []string{"c1", "c1", "c1"}, 3},
		{"an expired answer is fetched again", time.Nanosecond, []string{"c1", "c1"}, 2},
		{"a retried call is cached once it succeeds", 0, []string{"flaky", "flaky"}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newTestEnricher(t, env, config.EnrichProcess{URL: srv.URL, Path: "/customers/{{ row.id }}", Cache: config.Duration(tt.cache)})
			before := calls.Load()
			run(p, tt.ids...)
			if n := calls.Load() - before; n != tt.wantCalls {
				t.Fatalf("%d calls, want %d", n, tt.wantCalls)
			}
		})
	}

	t.Run("refusals are not cached", func(t *testing.T) {
		p := newTestEnricher(t, env, config.EnrichProcess{URL: srv.URL, Path: "/customers/{{ row.id }}"})
		before := calls.Load()
		for range 2 {
			if _, err := p.Process(ctx, &Record{Fields: map[string]any{"id": "missing"}}); !errors.Is(err, ErrRecord) {
				t.Fatalf("error %v", err)
			}
		}
		if n := calls.Load() - before; n != 2 {
			t.Fatalf("%d calls, want 2", n)
		}
	})

	t.Run("records from the cache do not share maps", func(t *testing.T) {
		p := newTestEnricher(t, env, config.EnrichProcess{URL: srv.URL, Path: "/customers/{{ row.id }}"})
		out := run(p, "c9", "c9")
		out[0].Fields["enrichment"].(map[string]any)["tier"] = "changed"
		if tier := out[1].Fields["enrichment"].(map[string]any)["tier"]; tier != "gold" {
			t.Fatalf("second record's tier %v", tier)
		}
	})

	t.Run("least recently used entries go first", func(t *testing.T) {
		c := newEnrichCache(2)
		now := time.Now()
		later := now.Add(time.Hour)
		c.put("a", []byte("1"), later)
		c.put("b", []byte("2"), later)
		c.get("a", now) // a is now the most recent
		c.put("c", []byte("3"), later)
		if _, ok := c.get("b", now); ok {
			t.Fatal("b kept")
		}
		for _, k := range []string{"a", "c"} {
			if _, ok := c.get(k, now); !ok {
				t.Fatalf("%s evicted", k)
			}
		}
		if _, ok := c.get("a", later); ok {
			t.Fatal("expired entry returned")
		}
		if len(c.items) != 1 || c.order.Len() != 1 {
			t.Fatalf("expired entry kept: %d items", len(c.items))
		}
	})
}

func TestEnrichConfig(t *testing.T) {
	for _, c := range []struct {
		env  *Env
		cfg  config.EnrichProcess
		want string
	}{
		{&Env{}, config.EnrichProcess{}, "needs service or url"},
		{&Env{}, config.EnrichProcess{Service: "a", URL: "http://x"}, "not both"},
		{&Env{}, config.EnrichProcess{Service: "a"}, "no service mesh"},
		{&Env{}, config.EnrichProcess{URL: "ftp://x"}, "absolute http(s) URL"},
		{&Env{}, config.EnrichProcess{URL: "http://x", Path: "/{{ row. }}"}, "path"},
	} {
		if _, err := newEnricher(c.env, &c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want one with %q", c.cfg, err, c.want)
		}
	}
}
