package workflow_test

import (
	"bufio"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/internal/testutil"
	"github.com/junctionhq/junction/workflow"
)

// stepAttempts reads a node's count of recorded step outcomes from its
// /metrics.
func stepAttempts(t *testing.T, n *testutil.Node) float64 {
	t.Helper()
	resp, err := http.Get(n.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	total := 0.0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if l := sc.Text(); strings.HasPrefix(l, "junction_workflow_step_attempts_total{") {
			v, _ := strconv.ParseFloat(l[strings.LastIndexByte(l, ' ')+1:], 64)
			total += v
		}
	}
	return total
}

// TestTwoNodesShareRuns: two nodes on one NATS (the machine's) share the
// task queue and the event store: runs started on one node are worked
// on by both, and every run completes once.
func TestTwoNodesShareRuns(t *testing.T) {
	var calls atomic.Int64
	svc := service(t, func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		fmt.Fprint(w, `{"ok":true}`)
	})
	parsed, err := config.Parse("t.yaml", []byte(`
workflows:
  shared:
    steps:
      - { id: a, call: { url: "`+svc+`", path: /a } }
      - { id: b, needs: [a], call: { url: "`+svc+`", path: /b } }
      - { id: c, needs: [b], set: { done: "true" } }
`), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	c1 := testutil.Config(t, testutil.External)
	c1.Workflows = parsed.Workflows
	n1 := testutil.Start(t, c1)
	c2 := testutil.Config(t, testutil.External)
	c2.NATS.Prefix, c2.Workflows = c1.NATS.Prefix, parsed.Workflows
	n2 := testutil.Start(t, c2)
	// n2 stops first (cleanups run last-in first-out): it must leave the
	// shared streams to n1, which removes them when it stops.
	n2.KeepNATS = true
	const runs = 300
	ids := make([]string, runs)
	for i := range ids {
		r, _, err := n1.Workflows().StartRun(ctxT(t), "shared", nil, workflow.StartOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = r.ID
	}
	for _, id := range ids {
		if r := finish(t, n2, id); r.Status != workflow.StatusCompleted {
			t.Fatalf("run %s: %s", id, dump(r))
		}
	}
	a1, a2 := stepAttempts(t, n1), stepAttempts(t, n2)
	if a1+a2 != 3*runs || a1 == 0 || a2 == 0 {
		t.Errorf("step outcomes recorded: %v on node 1, %v on node 2; want %d in all, shared", a1, a2, 3*runs)
	}
	if c := calls.Load(); c < 2*runs {
		t.Errorf("%d calls for %d runs", c, runs)
	}
	t.Logf("node 1 recorded %v step outcomes, node 2 %v", a1, a2)
}
