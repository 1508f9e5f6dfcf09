package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/junctionhq/junction/workflow"
)

// testEnv starts the node with an in-process service that answers as
// nullhttp does.
func testEnv(t testing.TB) *Env {
	t.Helper()
	svc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write([]byte(`{"id":"00000000-0000-0000-0000-000000000000","sequence":1,"duplicate":false}`))
	}))
	t.Cleanup(svc.Close)
	env, err := StartEnv(context.Background(), t.TempDir(), svc.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.Close(); err != nil {
			t.Error(err)
		}
	})
	return env
}

// TestSmoke runs both phases at a tiny size and checks that every run
// completed with the three steps; it asserts correctness only, never
// speed.
func TestSmoke(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	env := testEnv(t)
	for _, p := range []struct {
		name string
		op   func(context.Context, []byte) (time.Duration, error)
	}{{"direct", func(ctx context.Context, in []byte) (time.Duration, error) { return 0, env.Direct(ctx, in) }},
		{"workflow", func(ctx context.Context, in []byte) (time.Duration, error) { return env.RunWorkflow(ctx, in) }}} {
		r := Measure(ctx, p.name, 20, 4, 20*time.Second, 0, func(ctx context.Context, i int) (time.Duration, error) {
			return p.op(ctx, Input(i))
		})
		if r.Failed > 0 || r.Rate <= 0 || r.Maxms <= 0 || (p.name == "workflow") != (r.RecordedP50ms > 0) {
			t.Fatalf("%s: %+v", p.name, r)
		}
	}
	eng := env.Node.Workflows()
	r, _, err := eng.StartRun(ctx, Workflow, Input(1), workflow.StartOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r, err = eng.Wait(ctx, r.ID); err != nil || r.Status != workflow.StatusCompleted {
		t.Fatalf("run: %v, %+v", err, r)
	}
	if len(r.Steps) != 3 {
		t.Fatalf("%d steps, want 3: %+v", len(r.Steps), r.Steps)
	}
	for _, s := range r.Steps {
		if s.Status != workflow.StatusCompleted || s.Attempts != 1 {
			t.Fatalf("step %s: %s after %d attempts (%s)", s.ID, s.Status, s.Attempts, s.Error)
		}
	}
	if n, err := env.Published(ctx); err != nil || n != 41 {
		t.Fatalf("%d messages published, want 41 (%v)", n, err)
	}
	h, err := eng.History(ctx, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range h {
		t.Logf("%d %s %s", ev.Version, ev.Type, ev.Data)
	}
}

// BenchmarkRun measures one run at a time, end to end: StartRun, then
// Wait until it has completed.
func BenchmarkRun(b *testing.B) {
	env := testEnv(b)
	ctx := context.Background()
	b.ResetTimer()
	for i := range b.N {
		if _, err := env.RunWorkflow(ctx, Input(i)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "runs/s")
}

// BenchmarkDirect measures the same three operations made from Go, one
// at a time.
func BenchmarkDirect(b *testing.B) {
	env := testEnv(b)
	ctx := context.Background()
	b.ResetTimer()
	for i := range b.N {
		if err := env.Direct(ctx, Input(i)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}
