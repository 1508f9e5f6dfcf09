package junction_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/junctionhq/junction/client"
	"github.com/junctionhq/junction/internal/testutil"
)

// effects is a test service outside the junction process: it counts
// the calls of each run's steps, so it survives the kills.
type effects struct {
	mu    sync.Mutex
	calls map[string]int // run id + " " + path
}

func newEffects(t *testing.T) (*effects, string) {
	e := &effects{calls: map[string]int{}}
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.mu.Lock()
		e.calls[r.Header.Get("Junction-Run-Id")+" "+r.URL.Path]++
		e.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"path":%q}`, r.URL.Path)
	}))
	t.Cleanup(s.Close)
	return e, s.URL
}

func (e *effects) count(run, path string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.calls[run+" "+path]
}

func writeConfig(t *testing.T, data, body string) string {
	p := filepath.Join(data, "junction.yaml")
	if err := os.WriteFile(p, []byte("data_dir: "+data+"\napi: { listen: 127.0.0.1:0 }\n"+body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func kill9(t *testing.T, ctx context.Context, p *testutil.Proc) {
	t.Helper()
	if err := p.Cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if code, _ := p.Wait(ctx); code != -1 {
		t.Fatalf("process exited with %d, want killed", code)
	}
}

// history counts the events of each type (and step) of a run.
func history(t *testing.T, ctx context.Context, c *client.Client, id string) map[string]int {
	t.Helper()
	h, err := c.RunHistory(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, e := range h {
		var d struct{ Step string }
		_ = json.Unmarshal(e.Data, &d)
		out[strings.TrimSpace(e.Type+" "+d.Step)]++
	}
	return out
}

// A durable timer started before kill -9 fires after the restart, once:
// the step after it runs once per run.
func TestWorkflowTimerSpansKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	fx, svc := newEffects(t)
	data := t.TempDir()
	cfg := writeConfig(t, data, `
workflows:
  nap:
    steps:
      - id: sleep
        sleep: 2s
      - id: after
        needs: [sleep]
        call: { url: "`+svc+`", path: /after }
`)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := testutil.StartProcess(t, nil, "serve", "-c", cfg)
	c := client.New(p.URL)
	var ids []string
	for range 5 {
		r, err := c.StartRun(ctx, "nap", nil, client.StartRunOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.RunID)
	}
	for _, id := range ids {
		testutil.Eventually(t, 10*time.Second, "the timer of "+id, func() bool {
			r, err := c.GetRun(ctx, id, 0)
			return err == nil && len(r.Steps) > 0 && r.Steps[0].Status == "running"
		})
	}
	kill9(t, ctx, p)
	killed := time.Now()
	p2 := testutil.StartProcess(t, nil, "serve", "-c", cfg)
	c2 := client.New(p2.URL)
	for _, id := range ids {
		r, err := c2.GetRun(ctx, id, 30*time.Second)
		if err != nil || r.Status != "completed" {
			t.Fatalf("run %s after the restart: %+v %v", id, r, err)
		}
		if r.Steps[0].EndedAt.Before(killed) {
			t.Errorf("run %s: the timer fired before the kill", id)
		}
		if n := fx.count(id, "/after"); n != 1 {
			t.Errorf("run %s: the step after the timer ran %d times", id, n)
		}
		if h := history(t, ctx, c2, id); h["StepCompleted sleep"] != 1 || h["StepStarted sleep"] != 1 {
			t.Errorf("run %s: history %v", id, h)
		}
	}
}

// Runs started while the process is killed with -9 again and again all
// complete after the last restart; every step's effect is observed at
// least once, and each step's outcome is recorded exactly once.
func TestWorkflowRunsSurviveKillLoop(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	fx, svc := newEffects(t)
	data := t.TempDir()
	// Short step timeouts: an attempt claimed by the killed process is
	// retried that soon after its deadline.
	cfg := writeConfig(t, data, `
workflows:
  chain:
    output: '{"n": input.n}'
    steps:
      - { id: a, call: { url: "`+svc+`", path: /a }, timeout: 2s, retry: { attempts: 20, backoff: 100ms, max_backoff: 1s } }
      - { id: b, needs: [a], call: { url: "`+svc+`", path: /b }, timeout: 2s, retry: { attempts: 20, backoff: 100ms, max_backoff: 1s } }
      - { id: c, needs: [a], publish: { topic: chain, data: "{{ input }}" }, timeout: 2s, retry: { attempts: 20, backoff: 100ms, max_backoff: 1s } }
      - { id: d, needs: [b, c], call: { url: "`+svc+`", path: /d }, timeout: 2s, retry: { attempts: 20, backoff: 100ms, max_backoff: 1s } }
      - { id: e, needs: [d], set: { done: "true" } }
`)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var (
		mu      sync.Mutex
		started = map[string]string{} // idempotency key -> run id
		next    atomic.Int64
	)
	// startAll starts runs with keys until the process dies; a start that
	// failed is retried with the same key after the restart.
	startAll := func(c *client.Client, pending chan string) {
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					var key string
					select {
					case key = <-pending:
					default:
						key = fmt.Sprintf("k-%05d", next.Add(1))
					}
					r, err := c.StartRun(ctx, "chain", fmt.Appendf(nil, `{"n":%q}`, key), client.StartRunOptions{IdempotencyKey: key})
					if err != nil {
						pending <- key
						return
					}
					mu.Lock()
					started[key] = r.RunID
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
	}
	pending := make(chan string, 1000)
	p := testutil.StartProcess(t, nil, "serve", "-c", cfg)
	const kills = 4
	for round := range kills {
		c := client.New(p.URL)
		done := make(chan struct{})
		go func() { startAll(c, pending); close(done) }()
		// Kill once runs are well under way: the step counters move.
		before := fx.total()
		testutil.Eventually(t, 30*time.Second, "steps executing", func() bool { return fx.total() >= before+150 })
		kill9(t, ctx, p)
		<-done
		t.Logf("round %d: %d runs started, %d effects observed", round, len(started), fx.total())
		p = testutil.StartProcess(t, nil, "serve", "-c", cfg)
	}
	c := client.New(p.URL)
	// Finish the starts whose answer the kills lost (idempotent by key).
	close(pending)
	for key := range pending {
		r, err := c.StartRun(ctx, "chain", fmt.Appendf(nil, `{"n":%q}`, key), client.StartRunOptions{IdempotencyKey: key})
		if err != nil {
			t.Fatal(err)
		}
		started[key] = r.RunID
	}
	dup := 0
	for key, id := range started {
		r, err := c.GetRun(ctx, id, 60*time.Second)
		if err != nil || r.Status != "completed" {
			t.Fatalf("run %s (%s): %+v %v", id, key, r, err)
		}
		for _, path := range []string{"/a", "/b", "/d"} {
			n := fx.count(id, path)
			if n < 1 {
				t.Errorf("run %s: %s never observed", id, path)
			}
			dup += n - 1
		}
		h := history(t, ctx, c, id)
		for _, step := range []string{"a", "b", "c", "d", "e"} {
			if h["StepCompleted "+step] != 1 {
				t.Errorf("run %s: step %s recorded %d times: %v", id, step, h["StepCompleted "+step], h)
			}
		}
		if h["RunCompleted"] != 1 {
			t.Errorf("run %s: RunCompleted %d times", id, h["RunCompleted"])
		}
	}
	t.Logf("%d runs across %d kill -9: all completed, each outcome recorded once; %d effects repeated by retried attempts", len(started), kills, dup)
}

func (e *effects) total() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, c := range e.calls {
		n += c
	}
	return n
}
