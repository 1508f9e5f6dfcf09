package junction_test

import (
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/junctionhq/junction"
	"github.com/junctionhq/junction/internal/httpserver"
	"github.com/junctionhq/junction/internal/natsembed"
	"github.com/junctionhq/junction/internal/testutil"
)

// The routes of the HTTP contract that exist today. Removing one, or
// adding one without documenting it, fails TestOpenAPICoversEveryRoute.
var contract = []string{
	"GET /healthz", "GET /readyz", "GET /metrics", "GET /openapi.json",
	"GET /v1/topics", "PUT /v1/topics/{topic}", "GET /v1/topics/{topic}", "DELETE /v1/topics/{topic}",
	"POST /v1/topics/{topic}/messages", "GET /v1/topics/{topic}/tail",
	"GET /v1/subscriptions", "PUT /v1/subscriptions/{name}", "GET /v1/subscriptions/{name}", "DELETE /v1/subscriptions/{name}",
	"POST /v1/subscriptions/{name}/pull", "POST /v1/subscriptions/{name}/ack", "POST /v1/subscriptions/{name}/nack",
	"POST /v1/subscriptions/{name}/reject", "POST /v1/subscriptions/{name}/dead-letters/replay",
	"GET /v1/services", "GET /v1/services/{service}",
	"PUT /v1/services/{service}/instances/{id}", "DELETE /v1/services/{service}/instances/{id}",
	"ANY /v1/invoke/{service}/{path...}", "ANY /v1/invoke/{service}",
	"POST /v1/streams/{stream}", "GET /v1/streams/{stream}", "DELETE /v1/streams/{stream}", "GET /v1/events",
	"PUT /v1/streams/{stream}/retention", "GET /v1/streams/{stream}/retention",
	"GET /v1/projections", "GET /v1/projections/{name}", "POST /v1/projections/{name}/rebuild",
	"GET /v1/views/{view}/{key}", "GET /v1/views/{view}",
	"GET /v1/workflows", "POST /v1/workflows/{workflow}/runs", "GET /v1/runs", "GET /v1/runs/{id}",
	"GET /v1/runs/{id}/history", "POST /v1/runs/{id}/signals/{signal}", "POST /v1/runs/{id}/cancel",
	"GET /v1/pipelines", "POST /v1/pipelines/{name}/runs", "GET /v1/pipelines/{name}/runs/{id}", "POST /v1/pipelines/{name}/records",
}

func TestOpenAPICoversEveryRoute(t *testing.T) {
	n := testutil.Start(t, testutil.Config(t, testutil.Embedded))
	st, _, body := testutil.Do(t, "GET", n.URL+"/openapi.json", nil, "")
	if st != 200 {
		t.Fatalf("openapi.json: %d", st)
	}
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal([]byte(body), &doc); err != nil || doc.OpenAPI != "3.1.0" {
		t.Fatalf("openapi document: %v %q", err, doc.OpenAPI)
	}
	documented := map[string]bool{}
	for p, ops := range doc.Paths {
		for m, op := range ops {
			documented[strings.ToUpper(m)+" "+p] = true
			var o struct {
				OperationID string         `json:"operationId"`
				Summary     string         `json:"summary"`
				Responses   map[string]any `json:"responses"`
			}
			if err := json.Unmarshal(op, &o); err != nil || o.OperationID == "" || o.Summary == "" || len(o.Responses) < 2 {
				t.Errorf("%s %s: incomplete operation %s", m, p, op)
			}
		}
	}
	mounted := map[string]bool{}
	for _, r := range n.Router().Routes() {
		k := r.Method + " " + r.Path
		mounted[k] = true
		check := k
		if r.Method == httpserver.AnyMethod {
			check = "POST " + r.Path // a proxy route lists every method
		}
		if !documented[check] {
			t.Errorf("mounted route %s is missing from /openapi.json", k)
		}
	}
	for _, k := range contract {
		if !mounted[k] {
			t.Errorf("contract route %s is not mounted", k)
		}
	}
	if len(mounted) != len(contract) {
		t.Errorf("%d routes mounted, %d in the contract list: update the list and the docs", len(mounted), len(contract))
	}
}

func TestProbesMetricsAndErrors(t *testing.T) {
	n := testutil.Start(t, testutil.Config(t, testutil.Embedded))
	st, _, body := testutil.Do(t, "GET", n.URL+"/readyz", nil, "")
	if st != 200 || !strings.Contains(body, `"nats":"ok"`) || !strings.Contains(body, `"sql":"ok"`) {
		t.Fatalf("readyz: %d %s", st, body)
	}
	if st, _, _ := testutil.Do(t, "GET", n.URL+"/healthz", nil, ""); st != 200 {
		t.Fatalf("healthz: %d", st)
	}
	testutil.Do(t, "POST", n.URL+"/v1/topics/m/messages", nil, "x")
	st, _, body = testutil.Do(t, "GET", n.URL+"/metrics", nil, "")
	for _, want := range []string{`junction_bus_published_total{topic="m"} 1`, `junction_api_requests_total{code="202",method="POST",route="/v1/topics/{topic}/messages"} 1`, "go_goroutines"} {
		if st != 200 || !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	cases := []struct {
		method, path string
		status       int
		code         string
	}{
		{"GET", "/v1/nothing", 404, "route_not_found"},
		{"PATCH", "/v1/topics/x", 405, "method_not_allowed"},
		{"GET", "/v1/topics/absent", 404, "topic_not_found"},
		{"GET", "/v1/subscriptions/absent", 404, "subscription_not_found"},
	}
	for _, c := range cases {
		st, h, body := testutil.Do(t, c.method, n.URL+c.path, nil, "")
		if st != c.status || h.Get("Content-Type") != "application/problem+json" || !strings.Contains(body, `"code":"`+c.code+`"`) {
			t.Errorf("%s %s: %d %s %s", c.method, c.path, st, h.Get("Content-Type"), body)
		}
	}
}

func TestTokenRequiredBeyondLoopback(t *testing.T) {
	cfg := testutil.Config(t, testutil.Embedded)
	cfg.API.Listen = "0.0.0.0:0"
	if _, err := junction.New(context.Background(), cfg, junction.WithLogger(testutil.Logger(t))); err == nil || !strings.Contains(err.Error(), "api.token") {
		t.Fatalf("want a refusal without a token, got %v", err)
	}
	cfg.API.Token = "s3cret"
	n := testutil.Start(t, cfg)
	url := strings.Replace(n.URL, "0.0.0.0", "127.0.0.1", 1)
	if st, h, body := testutil.Do(t, "GET", url+"/v1/topics", nil, ""); st != 401 || !strings.Contains(body, `"code":"unauthorized"`) || h.Get("WWW-Authenticate") == "" {
		t.Fatalf("no token: %d %s", st, body)
	}
	if st, _, _ := testutil.Do(t, "GET", url+"/v1/topics", map[string]string{"Authorization": "Bearer wrong"}, ""); st != 401 {
		t.Fatalf("wrong token: %d", st)
	}
	if st, _, _ := testutil.Do(t, "GET", url+"/v1/topics", map[string]string{"Authorization": "Bearer s3cret"}, ""); st != 200 {
		t.Fatalf("right token: %d", st)
	}
	if st, _, _ := testutil.Do(t, "GET", url+"/healthz", nil, ""); st != 200 {
		t.Fatalf("probes stay open: %d", st)
	}
}

// Readiness follows the substrate: an external NATS that goes away makes
// /readyz answer 503 while /healthz stays 200. PostgreSQL serves as the SQL
// database by DSN.
func TestReadinessFollowsNATSAndPostgres(t *testing.T) {
	testutil.RequireService(t, "PostgreSQL", "127.0.0.1:5432")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	ext, err := natsembed.Start(context.Background(), natsembed.Options{DataDir: t.TempDir(), Listen: addr})
	if err != nil {
		t.Fatal(err)
	}
	defer ext.Close()
	cfg := testutil.Config(t, testutil.Embedded)
	cfg.NATS.URL = "nats://" + addr
	cfg.SQL.DSN = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	n := testutil.Start(t, cfg)
	st, _, body := testutil.Do(t, "GET", n.URL+"/readyz", nil, "")
	if st != 200 || !strings.Contains(body, `"sql":"ok"`) {
		t.Fatalf("readyz with external NATS and PostgreSQL: %d %s", st, body)
	}
	ext.Close()
	testutil.Eventually(t, 10*time.Second, "readyz to fail", func() bool {
		st, _, body = testutil.Do(t, "GET", n.URL+"/readyz", nil, "")
		return st == 503
	})
	if !strings.Contains(body, `"code":"unavailable"`) || !strings.Contains(body, "nats") {
		t.Fatalf("not-ready body: %s", body)
	}
	if st, _, _ := testutil.Do(t, "GET", n.URL+"/healthz", nil, ""); st != 200 {
		t.Fatalf("healthz while NATS is down: %d", st)
	}
}

// Start-up failures are errors from New, never panics, and leave nothing
// running (the data dir lock is released).
func TestStartupFailuresAreErrors(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cfg := testutil.Config(t, testutil.Embedded)
	cfg.API.Listen = l.Addr().String()
	if _, err := junction.New(context.Background(), cfg, junction.WithLogger(testutil.Logger(t))); err == nil || !strings.Contains(err.Error(), l.Addr().String()) {
		t.Fatalf("taken port: %v", err)
	}
	cfg.API.Listen = "127.0.0.1:0"
	first := testutil.Start(t, cfg)
	if _, err := junction.New(context.Background(), cfg, junction.WithLogger(testutil.Logger(t))); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("locked data dir: %v", err)
	}
	first.Stop(t)
	again := testutil.Start(t, cfg) // the lock went with the first node
	again.Stop(t)
}
