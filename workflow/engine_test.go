package workflow_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/junctionhq/junction/workflow"
)

// recorder is a test service that records the paths it was called on,
// in order, and answers with a JSON object naming the path.
type recorder struct {
	mu    sync.Mutex
	calls []string
	keys  []string
	// fail answers this status for paths with this prefix.
	fail map[string]int
}

func (rc *recorder) handler(w http.ResponseWriter, r *http.Request) {
	_, _ = io.ReadAll(r.Body)
	rc.mu.Lock()
	rc.calls = append(rc.calls, r.Method+" "+r.URL.Path)
	rc.keys = append(rc.keys, r.Header.Get("Idempotency-Key"))
	status := 200
	for p, st := range rc.fail {
		if strings.HasPrefix(r.URL.Path, p) {
			status = st
		}
	}
	rc.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"id":%q}`, strings.TrimPrefix(r.URL.Path, "/"))
}

func (rc *recorder) list() []string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.calls)
}

func TestThreeStepsEndToEnd(t *testing.T) {
	svc := service(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"r1","got":%s,"key":%q}`, b, r.Header.Get("Idempotency-Key"))
	})
	n := node(t, `
workflows:
  three:
    output: '{"call": steps.call.output.id, "set": steps.set.output.x}'
    steps:
      - id: call
        call: { url: "$SVC", path: /things, body: "{{ input }}" }
      - id: pub
        needs: [call]
        publish: { topic: things, data: "{{ steps.call.output }}" }
      - id: set
        needs: [pub]
        set: { x: steps.call.output.got.n + 1.0 }
`, map[string]string{"SVC": svc})
	r := finish(t, n, start(t, n, "three", map[string]any{"n": 41}).ID)
	if r.Status != workflow.StatusCompleted {
		t.Fatalf("status %s: %s", r.Status, dump(r))
	}
	out, _ := json.Marshal(r.Output)
	if string(out) != `{"call":"r1","set":42}` {
		t.Errorf("output %s", out)
	}
	if k := r.Step("call").Output.(map[string]any)["key"]; k != r.ID+"/call" {
		t.Errorf("Idempotency-Key %v, want %s/call", k, r.ID)
	}
	if p := r.Step("pub").Output.(map[string]any); p["sequence"] != 1.0 {
		t.Errorf("publish output %v", p)
	}
}

// TestDAGRunsBranchesInParallel: b and c both need a, and each blocks
// until the other has arrived, so they pass only if they run at the same
// time; d runs after both.
func TestDAGRunsBranchesInParallel(t *testing.T) {
	var mu sync.Mutex
	var order []string
	both := make(chan struct{})
	var arrived atomic.Int32
	svc := service(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		order = append(order, r.URL.Path)
		mu.Unlock()
		if r.URL.Path == "/b" || r.URL.Path == "/c" {
			if arrived.Add(1) == 2 {
				close(both)
			}
			select {
			case <-both:
			case <-time.After(10 * time.Second):
				w.WriteHeader(400) // the branches did not overlap: fail for good
				return
			}
		}
		fmt.Fprintf(w, `{"at":%q}`, r.URL.Path)
	})
	n := node(t, `
workflows:
  dag:
    output: '[steps.b.output.at, steps.c.output.at, steps.d.output.at]'
    steps:
      - { id: d, needs: [b, c], call: { url: "$SVC", path: /d } }
      - { id: b, needs: [a], call: { url: "$SVC", path: /b } }
      - { id: a, call: { url: "$SVC", path: /a } }
      - { id: c, needs: [a], call: { url: "$SVC", path: /c } }
`, map[string]string{"SVC": svc})
	r := finish(t, n, start(t, n, "dag", nil).ID)
	if r.Status != workflow.StatusCompleted {
		t.Fatalf("status %s: %s", r.Status, dump(r))
	}
	mu.Lock()
	defer mu.Unlock()
	if len(order) != 4 || order[0] != "/a" || order[3] != "/d" {
		t.Errorf("call order %v: want /a first and /d last", order)
	}
}

// TestSagaCompensatesInReverseOrderOfCompletion: three steps complete (b
// and c in parallel, in whatever order), the fourth fails for good (400,
// not retried); the compensations run one at a time, last completed
// first, and the run ends compensated.
func TestSagaCompensatesInReverseOrderOfCompletion(t *testing.T) {
	rc := &recorder{fail: map[string]int{"/charge": 402}}
	n := node(t, `
workflows:
  saga:
    steps:
      - id: a
        call: { url: "$SVC", path: /do/a }
        compensate: { call: { url: "$SVC", method: DELETE, path: "/undo/{{ steps.a.output.id }}" } }
      - id: b
        needs: [a]
        call: { url: "$SVC", path: /do/b }
        compensate: { call: { url: "$SVC", method: DELETE, path: /undo/b } }
      - id: c
        needs: [a]
        call: { url: "$SVC", path: /do/c }
        compensate: { call: { url: "$SVC", method: DELETE, path: /undo/c } }
      - id: nothing_to_undo
        needs: [a]
        set: { x: "1" }
      - id: charge
        needs: [b, c, nothing_to_undo]
        call: { url: "$SVC", path: /charge }
        compensate: { call: { url: "$SVC", method: DELETE, path: /undo/charge } }
`, map[string]string{"SVC": service(t, rc.handler)})
	r := finish(t, n, start(t, n, "saga", nil).ID)
	if r.Status != workflow.StatusCompensated || !strings.Contains(r.Error, "step charge failed") || !strings.Contains(r.Error, "402") {
		t.Fatalf("status %s error %q: %s", r.Status, r.Error, dump(r))
	}
	if s := r.Step("charge"); s.Attempts != 1 || s.Status != workflow.StepFailed {
		t.Errorf("charge: %d attempts, %s: a 402 is not retried", s.Attempts, s.Status)
	}
	calls := rc.list()
	var undone []string
	for _, c := range calls {
		if p, ok := strings.CutPrefix(c, "DELETE /undo/"); ok {
			undone = append(undone, p)
		}
	}
	// The order of completion is the history's.
	h, err := n.Workflows().History(ctxT(t), r.ID)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, e := range h {
		var d struct{ Step string }
		_ = json.Unmarshal(e.Data, &d)
		if e.Type == "StepCompleted" && d.Step != "nothing_to_undo" {
			want = append([]string{d.Step}, want...)
		}
	}
	want[len(want)-1] = "do/a" // a's compensation path is built from its output id
	if !slices.Equal(undone, want) {
		t.Errorf("compensations %v, want the reverse of completion %v (calls %v)", undone, want, calls)
	}
	for _, id := range []string{"a", "b", "c"} {
		if c := r.Step(id).Compensation; c == nil || c.Status != workflow.CompCompleted {
			t.Errorf("step %s compensation %+v", id, c)
		}
	}
}

// TestFailedCompensationFailsTheRun: b's compensation fails for good;
// a's still runs, and the run ends failed, naming both failures.
func TestFailedCompensationFailsTheRun(t *testing.T) {
	rc := &recorder{fail: map[string]int{"/charge": 400, "/undo/b": 409}}
	n := node(t, `
workflows:
  saga:
    steps:
      - id: a
        call: { url: "$SVC", path: /do/a }
        compensate: { call: { url: "$SVC", method: DELETE, path: /undo/a } }
      - id: b
        needs: [a]
        call: { url: "$SVC", path: /do/b }
        compensate: { call: { url: "$SVC", method: DELETE, path: /undo/b } }
      - id: charge
        needs: [b]
        call: { url: "$SVC", path: /charge }
`, map[string]string{"SVC": service(t, rc.handler)})
	r := finish(t, n, start(t, n, "saga", nil).ID)
	if r.Status != workflow.StatusFailed || !strings.Contains(r.Error, "compensation of step b failed") || !strings.Contains(r.Error, "step charge failed") {
		t.Fatalf("status %s error %q", r.Status, r.Error)
	}
	if c := r.Step("a").Compensation; c == nil || c.Status != workflow.CompCompleted {
		t.Errorf("a's compensation %+v: it must run after b's failed", c)
	}
	if got := rc.list(); !slices.Equal(got[len(got)-2:], []string{"DELETE /undo/b", "DELETE /undo/a"}) {
		t.Errorf("calls %v", got)
	}
}

func TestRetriesWithBackoffAndOneIdempotencyKey(t *testing.T) {
	var calls atomic.Int32
	var keys sync.Map
	svc := service(t, func(w http.ResponseWriter, r *http.Request) {
		keys.Store(r.Header.Get("Idempotency-Key"), true)
		if calls.Add(1) < 3 {
			w.WriteHeader(503)
			return
		}
		fmt.Fprint(w, `{"ok":true}`)
	})
	n := node(t, `
workflows:
  flaky:
    steps:
      - id: call
        call: { url: "$SVC" }
        retry: { attempts: 3, backoff: 20ms }
`, map[string]string{"SVC": svc})
	began := time.Now()
	r := finish(t, n, start(t, n, "flaky", nil).ID)
	if r.Status != workflow.StatusCompleted || r.Step("call").Attempts != 3 {
		t.Fatalf("status %s attempts %d: %s", r.Status, r.Step("call").Attempts, dump(r))
	}
	if el := time.Since(began); el < 60*time.Millisecond { // 20ms + 40ms of backoff
		t.Errorf("3 attempts took %v: the backoff was not waited", el)
	}
	n2 := 0
	keys.Range(func(any, any) bool { n2++; return true })
	if n2 != 1 {
		t.Errorf("%d distinct Idempotency-Keys over 3 attempts, want 1", n2)
	}
	// Attempts run out: the step fails for good after exactly 3.
	calls.Store(-100)
	r = finish(t, n, start(t, n, "flaky", nil).ID)
	if r.Status != workflow.StatusFailed || r.Step("call").Attempts != 3 {
		t.Fatalf("status %s attempts %d", r.Status, r.Step("call").Attempts)
	}
}

// TestAttemptDeadlineRetries: an attempt that hangs past the step's
// timeout fails and the next attempt runs.
func TestAttemptDeadlineRetries(t *testing.T) {
	var calls atomic.Int32
	svc := service(t, func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			select {
			case <-r.Context().Done():
			case <-time.After(10 * time.Second):
			}
			return
		}
		fmt.Fprint(w, `{"ok":true}`)
	})
	n := node(t, `
workflows:
  slow:
    steps:
      - id: call
        call: { url: "$SVC" }
        timeout: 200ms
        retry: { attempts: 2, backoff: 10ms }
`, map[string]string{"SVC": svc})
	r := finish(t, n, start(t, n, "slow", nil).ID)
	if r.Status != workflow.StatusCompleted || r.Step("call").Attempts != 2 {
		t.Fatalf("status %s attempts %d: %s", r.Status, r.Step("call").Attempts, dump(r))
	}
}

func TestSignalsAndTimers(t *testing.T) {
	n := node(t, `
workflows:
  gate:
    output: '{"first": steps.first.output.v, "second": steps.second.output.v}'
    steps:
      - id: first
        wait: { signal: go, timeout: 20s }
      - id: nap
        needs: [first]
        sleep: 300ms
      - id: second
        needs: [nap]
        wait: { signal: go }
  impatient:
    steps:
      - id: w
        wait: { signal: go, timeout: 200ms }
`, nil)
	ctx := ctxT(t)
	e := n.Workflows()
	r := start(t, n, "gate", nil)
	// Two signals before any wait consumes them: each wait takes one, in
	// order; a resend with the same key counts once.
	for i, v := range []int{1, 1, 2} {
		key := fmt.Sprint(v)
		if err := e.Signal(ctx, r.ID, "go", json.RawMessage(fmt.Sprintf(`{"v":%d}`, v)), key); err != nil {
			t.Fatalf("signal %d: %v", i, err)
		}
	}
	r = finish(t, n, r.ID)
	out, _ := json.Marshal(r.Output)
	if r.Status != workflow.StatusCompleted || string(out) != `{"first":1,"second":2}` {
		t.Fatalf("status %s output %s: %s", r.Status, out, dump(r))
	}
	nap := r.Step("nap")
	if nap.FireAt == nil || nap.EndedAt.Before(*nap.FireAt) || nap.FireAt.Sub(*nap.StartedAt) < 250*time.Millisecond {
		t.Errorf("sleep 300ms: started %v, fires %v, ended %v", nap.StartedAt, nap.FireAt, nap.EndedAt)
	}
	if err := e.Signal(ctx, r.ID, "go", nil, ""); err == nil || !strings.Contains(err.Error(), "ended") {
		t.Errorf("signal to an ended run: %v", err)
	}
	r = finish(t, n, start(t, n, "impatient", nil).ID)
	if r.Status != workflow.StatusFailed || !strings.Contains(r.Error, "timed out") {
		t.Errorf("wait timeout: status %s error %q", r.Status, r.Error)
	}
}

func TestCancelCompensates(t *testing.T) {
	rc := &recorder{}
	n := node(t, `
workflows:
  order:
    steps:
      - id: reserve
        call: { url: "$SVC", path: /reserve }
        compensate: { call: { url: "$SVC", method: DELETE, path: /reserve } }
      - id: approval
        needs: [reserve]
        wait: { signal: approve }
      - id: ship
        needs: [approval]
        call: { url: "$SVC", path: /ship }
`, map[string]string{"SVC": service(t, rc.handler)})
	e := n.Workflows()
	r := start(t, n, "order", nil)
	waitStep(t, n, r.ID, "approval", workflow.StepRunning)
	if err := e.Cancel(ctxT(t), r.ID, "customer changed their mind"); err != nil {
		t.Fatal(err)
	}
	r = finish(t, n, r.ID)
	if r.Status != workflow.StatusCompensated || !strings.Contains(r.Error, "customer changed their mind") {
		t.Fatalf("status %s error %q", r.Status, r.Error)
	}
	if got := rc.list(); !slices.Equal(got, []string{"GET /reserve", "DELETE /reserve"}) {
		t.Errorf("calls %v", got)
	}
	if s := r.Step("approval").Status; s != workflow.StepAbandoned {
		t.Errorf("approval %s, want abandoned", s)
	}
	if s := r.Step("ship").Status; s != workflow.StepPending {
		t.Errorf("ship %s, want pending (never started)", s)
	}
	// A first step failing leaves nothing to compensate: the run fails.
	rc.mu.Lock()
	rc.fail = map[string]int{"/reserve": 400}
	rc.mu.Unlock()
	r = start(t, n, "order", nil)
	if r = finish(t, n, r.ID); r.Status != workflow.StatusFailed {
		t.Errorf("failed first step: %s, want failed (nothing to compensate)", r.Status)
	}
}

func TestCancelWithNothingToUndo(t *testing.T) {
	n := node(t, `
workflows:
  gate:
    steps:
      - id: w
        wait: { signal: go }
`, nil)
	r := start(t, n, "gate", nil)
	waitStep(t, n, r.ID, "w", workflow.StepRunning)
	if err := n.Workflows().Cancel(ctxT(t), r.ID, ""); err != nil {
		t.Fatal(err)
	}
	if r = finish(t, n, r.ID); r.Status != workflow.StatusCancelled || r.Error != "cancelled" {
		t.Errorf("status %s error %q, want cancelled", r.Status, r.Error)
	}
}

func TestRunTimeoutUnwinds(t *testing.T) {
	n := node(t, `
workflows:
  slow:
    timeout: 300ms
    steps:
      - id: w
        wait: { signal: never }
`, nil)
	r := finish(t, n, start(t, n, "slow", nil).ID)
	if r.Status != workflow.StatusFailed || !strings.Contains(r.Error, "timed out") {
		t.Fatalf("status %s error %q", r.Status, r.Error)
	}
}

func TestSwitchForeachWhenAndChildRuns(t *testing.T) {
	n := node(t, `
workflows:
  parent:
    output: '{"route": steps.route.output, "labels": size(steps.labels.output), "child": steps.child.output.total, "skipped": steps.rare.status}'
    steps:
      - id: route
        switch:
          - { when: 'size(input.items) > 10', value: freight }
          - { value: "parcel-{{ size(input.items) }}" }
      - id: rare
        when: input.vip == true
        set: { x: "1" }
      - id: labels
        needs: [route, rare]
        foreach: { items: input.items, concurrency: 2, do: { publish: { topic: labels, data: "{{ item }}" } } }
      - id: child
        needs: [labels]
        workflow: { name: sum, input: '{{ {"xs": input.items} }}' }
  sum:
    output: '{"total": steps.add.output.t}'
    steps:
      - id: add
        set: { t: 'input.xs.map(x, x.n).exists(x, x > 0) ? input.xs[0].n + input.xs[1].n + input.xs[2].n : 0.0' }
`, nil)
	r := finish(t, n, start(t, n, "parent", map[string]any{"items": []any{map[string]any{"n": 1}, map[string]any{"n": 2}, map[string]any{"n": 3}}, "vip": false}).ID)
	out, _ := json.Marshal(r.Output)
	if r.Status != workflow.StatusCompleted || string(out) != `{"child":6,"labels":3,"route":"parcel-3","skipped":"skipped"}` {
		t.Fatalf("status %s output %s: %s", r.Status, out, dump(r))
	}
}

// waitStep waits until step of run id has status.
func waitStep(t *testing.T, n interface {
	Workflows() *workflow.Engine
}, id, step, status string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		r, err := n.Workflows().Get(ctxT(t), id)
		if err == nil && r.Step(step).Status == status {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("step %s of %s never became %s (%v)", step, id, status, dump(r))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestThousandConcurrentRuns starts 1,000 runs at once; every one
// completes, with its own output.
func TestThousandConcurrentRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("1,000 runs")
	}
	var calls atomic.Int64
	svc := service(t, func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Write(b)
	})
	n := node(t, `
workflows:
  many:
    output: steps.twice.output.n
    steps:
      - { id: echo, call: { url: "$SVC", body: "{{ input }}" } }
      - { id: pub, needs: [echo], publish: { topic: many, data: "{{ steps.echo.output }}" } }
      - { id: twice, needs: [pub], set: { n: steps.echo.output.i * 2.0 } }
`, map[string]string{"SVC": svc})
	const runs = 1000
	ids := make([]string, runs)
	var wg sync.WaitGroup
	for i := range runs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, _, err := n.Workflows().StartRun(ctxT(t), "many", fmt.Appendf(nil, `{"i":%d}`, i), workflow.StartOptions{})
			if err != nil {
				t.Error(err)
				return
			}
			ids[i] = r.ID
		}()
	}
	wg.Wait()
	for i, id := range ids {
		r := finish(t, n, id)
		if r.Status != workflow.StatusCompleted || r.Output != float64(2*i) {
			t.Fatalf("run %d: %s", i, dump(r))
		}
	}
	if c := calls.Load(); c < runs {
		t.Errorf("%d calls for %d runs", c, runs)
	}
}
