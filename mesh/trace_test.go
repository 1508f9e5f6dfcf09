package mesh_test

import (
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/junctionhq/junction"
	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/internal/testutil"
)

// The spans chain caller → API → invoke attempt → service, and a retried
// call shows one attempt span per try.
func TestSpansAcrossInvoke(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	bad, good := newBackend(t, "bad"), newBackend(t, "good")
	bad.set(503, 0)
	cfg := testutil.Config(t, testutil.Embedded)
	cfg.Services = map[string]*config.Service{"orders": svc("", bad.URL, good.URL)}
	// Round robin starts with the first instance by id: bad, then good.
	cfg.Services["orders"].Balancer = "round_robin"
	cfg.Services["orders"].Instances[0].ID, cfg.Services["orders"].Instances[1].ID = "a-bad", "b-good"
	n := testutil.Start(t, cfg, junction.WithTracerProvider(tp))
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	st, _, body := testutil.Do(t, "GET", n.URL+"/v1/invoke/orders/x", map[string]string{
		"traceparent": "00-" + traceID + "-00f067aa0ba902b7-01"}, "")
	if st != 200 {
		t.Fatalf("invoke: %d %s", st, body)
	}
	var api sdktrace.ReadOnlySpan
	var attempts []sdktrace.ReadOnlySpan
	testutil.Eventually(t, 5*time.Second, "spans", func() bool {
		attempts = attempts[:0]
		for _, s := range rec.Ended() {
			switch s.Name() {
			case "GET /v1/invoke/{service}/{path...}":
				api = s
			case "invoke orders":
				attempts = append(attempts, s)
			}
		}
		return api != nil && len(attempts) == 2
	})
	if api.Parent().SpanID().String() != "00f067aa0ba902b7" || api.SpanContext().TraceID().String() != traceID {
		t.Errorf("API span parent %s trace %s", api.Parent().SpanID(), api.SpanContext().TraceID())
	}
	for _, a := range attempts {
		if a.Parent().SpanID() != api.SpanContext().SpanID() {
			t.Errorf("attempt span's parent is %s, not the API span", a.Parent().SpanID())
		}
	}
	last := attempts[len(attempts)-1]
	want := "00-" + traceID + "-" + last.SpanContext().SpanID().String() + "-01"
	if got := good.header().Get("traceparent"); got != want {
		t.Errorf("service saw traceparent %q, want %q (its attempt span)", got, want)
	}
}
