package gateway_test

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/junctionhq/junction/client"
	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/internal/testutil"
)

// backend is a service instance that echoes what it got.
func backend(t *testing.T, name string) *httptest.Server {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]string{
			"instance": name, "method": r.Method, "path": r.URL.EscapedPath(), "query": r.URL.RawQuery,
			"body": string(b), "request_id": r.Header.Get("X-Request-Id"), "forwarded_for": r.Header.Get("X-Forwarded-For"),
		})
	}))
	t.Cleanup(s.Close)
	return s
}

func gatewayNode(t *testing.T, routes []*config.GatewayRoute) (*testutil.Node, string) {
	cfg := testutil.Config(t, testutil.Embedded)
	cfg.Services = map[string]*config.Service{
		"orders": {Balancer: "round_robin", Instances: []config.Instance{{URL: backend(t, "o1").URL}, {URL: backend(t, "o2").URL}}},
	}
	cfg.Gateway = config.Gateway{Listen: "127.0.0.1:0", Routes: routes}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	n := testutil.Start(t, cfg)
	return n, "http://" + n.Node.GatewayAddr()
}

func get(t *testing.T, method, url string, hdr map[string]string, body string) (int, http.Header, map[string]any, string) {
	t.Helper()
	code, h, b := testutil.Do(t, method, url, hdr, body)
	var m map[string]any
	json.Unmarshal([]byte(b), &m)
	return code, h, m, b
}

func TestRoutesEndToEnd(t *testing.T) {
	n, gw := gatewayNode(t, []*config.GatewayRoute{
		{Path: "/api/orders/{id}", Methods: []string{"GET"}, Service: "orders", Rewrite: "/v2/orders/{id}"},
		{Path: "/api/orders/{rest...}", Service: "orders"},
		{Path: "/api/orders", Methods: []string{"POST"}, Publish: &config.GatewayPublish{Topic: "orders.requested", Type: "order.requested"}},
		{Path: "/health", Static: &config.GatewayStatic{Body: "ok\n", Headers: map[string]string{"Cache-Control": "no-store"}}},
		{Path: "/old/{id}", Redirect: &config.GatewayRedirect{URL: "/api/orders/{id}", Status: 308}},
		{Path: "/api/orders/{id}", Methods: []string{"GET"}, Headers: map[string]string{"X-Api-Version": "1"}, Static: &config.GatewayStatic{Status: 410, Body: "v1 is gone"}},
		{Path: "/api/orders/{id}", Methods: []string{"GET"}, When: `request.query.preview == "true"`, Static: &config.GatewayStatic{Body: "preview"}},
		{Path: "/legacy/{rest...}", URL: []string{backend(t, "legacy").URL}, Rewrite: "/{rest...}"},
	})
	if code, _, m, body := get(t, "GET", gw+"/legacy/a/b?q=1", nil, ""); code != 200 || m["instance"] != "legacy" || m["path"] != "/a/b" || m["query"] != "q=1" {
		t.Errorf("url route: %d %s", code, body)
	}

	code, h, m, body := get(t, "GET", gw+"/api/orders/a%2Fb?x=1", map[string]string{"X-Request-Id": "req-1"}, "")
	if code != 200 || m["path"] != "/v2/orders/a%2Fb" || m["query"] != "x=1" || m["request_id"] != "req-1" || h.Get("X-Request-Id") != "req-1" || m["forwarded_for"] == "" {
		t.Fatalf("rewrite: %d %s %v", code, body, h)
	}
	code, h, m, _ = get(t, "DELETE", gw+"/api/orders/7/items/3", nil, "")
	if code != 200 || m["path"] != "/api/orders/7/items/3" || m["method"] != "DELETE" || h.Get("X-Request-Id") == "" {
		t.Fatalf("passthrough: %d %v", code, m)
	}
	// The mesh balances between the two instances (round robin here).
	seen := map[any]bool{}
	for range 20 {
		_, _, m, _ := get(t, "GET", gw+"/api/orders/1", nil, "")
		seen[m["instance"]] = true
	}
	if len(seen) != 2 {
		t.Errorf("instances reached: %v", seen)
	}
	if code, _, _, body := get(t, "GET", gw+"/api/orders/1", map[string]string{"X-Api-Version": "1"}, ""); code != 410 || body != "v1 is gone" {
		t.Errorf("header route: %d %q", code, body)
	}
	if code, _, _, body := get(t, "GET", gw+"/api/orders/1?preview=true", nil, ""); code != 200 || body != "preview" {
		t.Errorf("when route: %d %q", code, body)
	}
	if code, h, _, body := get(t, "GET", gw+"/health", nil, ""); code != 200 || body != "ok\n" || h.Get("Cache-Control") != "no-store" {
		t.Errorf("static: %d %q %v", code, body, h)
	}
	req, _ := http.NewRequest("GET", gw+"/old/9", nil)
	resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 308 || resp.Header.Get("Location") != "/api/orders/9" {
		t.Errorf("redirect: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	if code, _, m, _ := get(t, "GET", gw+"/nothing", nil, ""); code != 404 || m["code"] != "route_not_found" {
		t.Errorf("no route: %d %v", code, m)
	}

	// HTTP -> topic: 202 with the message id; the CloudEvent carries the
	// method, path and body.
	ctx := context.Background()
	if _, err := n.Client.PutSubscription(ctx, "fulfilment", client.Subscription{Topic: "orders.requested", Start: "all"}); err != nil {
		t.Fatal(err)
	}
	code, _, m, body = get(t, "POST", gw+"/api/orders", map[string]string{"Content-Type": "application/json", "Idempotency-Key": "ord-77"}, `{"sku":"tea"}`)
	if code != 202 || m["id"] != "ord-77" {
		t.Fatalf("publish: %d %s", code, body)
	}
	msgs, err := n.Client.Pull(ctx, "fulfilment", 10, 5*time.Second)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("pull: %v %v", msgs, err)
	}
	got := msgs[0]
	if got.ID != "ord-77" || got.Type != "order.requested" || got.Headers["ce-httpmethod"] != "POST" || got.Headers["ce-httppath"] != "/api/orders" || string(got.Data) != `{"sku":"tea"}` {
		t.Errorf("published message: %+v", got)
	}
}

// Reloads swap the route table atomically: under a steady load, ten
// reloads lose no request, and the new routes answer afterwards.
func TestReloadUnderLoad(t *testing.T) {
	routes := func(v int) []*config.GatewayRoute {
		rs := []*config.GatewayRoute{
			{Path: "/api/{rest...}", Service: "orders"},
			{Path: "/version", Static: &config.GatewayStatic{Body: fmt.Sprint(v)}},
		}
		for _, r := range rs {
			r.Normalize()
		}
		return rs
	}
	n, gw := gatewayNode(t, routes(0))
	var failed, done atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := http.Get(gw + "/api/x")
				if err != nil || resp.StatusCode != 200 {
					failed.Add(1)
				}
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				done.Add(1)
			}
		}()
	}
	for v := 1; v <= 10; v++ {
		before := done.Load()
		testutil.Eventually(t, 10*time.Second, "requests between reloads", func() bool { return done.Load() >= before+50 })
		if err := n.Node.Gateway().Reload(config.Gateway{Routes: routes(v)}); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if failed.Load() != 0 {
		t.Errorf("%d of %d requests failed across 10 reloads", failed.Load(), done.Load())
	}
	if _, _, _, body := get(t, "GET", gw+"/version", nil, ""); strings.TrimSpace(body) != "10" {
		t.Errorf("after the reloads /version = %q", body)
	}
	t.Logf("%d requests, none failed, across 10 reloads", done.Load())
}

// An aggregate calls its parts at once and merges them; a slow or failing
// part is left out and the answer says it is incomplete.
func TestAggregate(t *testing.T) {
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	}))
	defer slow.Close()
	stock := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"sku":"tea","count":7,"secret":"x","request_id":%q}`, r.Header.Get("X-Request-Id"))
	}))
	defer stock.Close()
	_, gw := gatewayNode(t, []*config.GatewayRoute{
		{Path: "/dash/{id}", Aggregate: map[string]*config.AggregatePart{
			"order": {Service: "orders", Path: "/orders/{id}", Deny: []string{"forwarded_for"}},
			"stock": {URL: stock.URL + "/stock", Root: true, Allow: []string{"sku", "count", "request_id"}},
		}},
		{Path: "/partial", Aggregate: map[string]*config.AggregatePart{
			"order": {Service: "orders", Path: "/orders/1"},
			"slow":  {URL: slow.URL, Timeout: config.Duration(100 * time.Millisecond)},
		}},
		{Path: "/broken", Aggregate: map[string]*config.AggregatePart{
			"slow": {URL: slow.URL, Timeout: config.Duration(50 * time.Millisecond)},
		}},
	})
	code, h, m, body := get(t, "GET", gw+"/dash/42", map[string]string{"X-Request-Id": "agg-1"}, "")
	order, _ := m["order"].(map[string]any)
	if code != 200 || h.Get("Junction-Completed") != "true" || order["path"] != "/orders/42" || order["request_id"] != "agg-1" ||
		order["forwarded_for"] != nil || m["sku"] != "tea" || m["count"] != 7.0 || m["secret"] != nil || m["request_id"] != "agg-1" {
		t.Fatalf("aggregate: %d %v %s", code, h, body)
	}
	code, h, m, body = get(t, "GET", gw+"/partial", nil, "")
	if code != 200 || h.Get("Junction-Completed") != "false" || m["order"] == nil || m["slow"] != nil {
		t.Fatalf("partial: %d %v %s", code, h, body)
	}
	if code, _, m, _ := get(t, "GET", gw+"/broken", nil, ""); code != 502 || m["code"] != "upstream_unreachable" {
		t.Fatalf("all parts failed: %d %v", code, m)
	}
}

// Through a node: a CORS preflight reaches the route of the method it
// asks for; a global rate limit is shared through JetStream; the chain's
// parts work together (API key, rate limit, cache, gzip).
func TestMiddlewareThroughNode(t *testing.T) {
	keyHash := "sha256:" + fmt.Sprintf("%x", sha256.Sum256([]byte("k-0123456789abcdef")))
	_, gw := gatewayNode(t, []*config.GatewayRoute{
		{Path: "/api/orders", Methods: []string{"POST"}, Service: "orders", GatewayMiddleware: config.GatewayMiddleware{
			CORS: &config.GatewayCORS{Origins: []string{"https://shop.example"}, Methods: []string{"POST"}, Headers: []string{"Content-Type"}},
		}},
		{Path: "/api/limited", Service: "orders", GatewayMiddleware: config.GatewayMiddleware{
			Auth:      &config.GatewayAuth{APIKey: &config.APIKeyAuth{Keys: map[string]string{"shop": keyHash}}},
			RateLimit: &config.GatewayRateLimit{Key: "request.key", RPS: 0.001, Burst: 3, Scope: "global"},
		}},
	})
	code, h, _, body := get(t, "OPTIONS", gw+"/api/orders", map[string]string{"Origin": "https://shop.example", "Access-Control-Request-Method": "POST"}, "")
	if code != 204 || h.Get("Access-Control-Allow-Origin") != "https://shop.example" {
		t.Errorf("preflight: %d %v %s", code, h, body)
	}
	if code, _, _, _ := get(t, "GET", gw+"/api/limited", nil, ""); code != 401 {
		t.Errorf("without a key: %d", code)
	}
	key := map[string]string{"X-Api-Key": "k-0123456789abcdef"}
	var codes []int
	for range 5 {
		code, _, m, _ := get(t, "GET", gw+"/api/limited", key, "")
		codes = append(codes, code)
		if code == 200 && m["method"] != "GET" {
			t.Errorf("upstream answer: %v", m)
		}
	}
	if fmt.Sprint(codes) != "[200 200 200 429 429]" {
		t.Errorf("global limit of 3: %v", codes)
	}
}

// A path served for other methods answers 405 with Allow; GET routes
// answer HEAD.
func TestMethodNotAllowedAndHead(t *testing.T) {
	_, gw := gatewayNode(t, []*config.GatewayRoute{
		{Path: "/items/{id}", Methods: []string{"GET"}, Static: &config.GatewayStatic{Body: "item"}},
		{Path: "/items/{id}", Methods: []string{"DELETE"}, Static: &config.GatewayStatic{Status: 204}},
	})
	code, h, m, _ := get(t, "POST", gw+"/items/1", nil, "")
	if code != 405 || h.Get("Allow") != "DELETE, GET, HEAD" || m["code"] != "method_not_allowed" {
		t.Errorf("POST: %d %v %v", code, h.Get("Allow"), m)
	}
	if code, _, _, body := get(t, "HEAD", gw+"/items/1", nil, ""); code != 200 || body != "" {
		t.Errorf("HEAD: %d %q", code, body)
	}
}
