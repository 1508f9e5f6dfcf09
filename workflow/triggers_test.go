package workflow_test

import (
	"strings"
	"testing"
	"time"

	"github.com/junctionhq/junction/bus"
	"github.com/junctionhq/junction/internal/testutil"
	"github.com/junctionhq/junction/projection"
	"github.com/junctionhq/junction/workflow"
)

// runsOf lists the runs of workflow wf from the runs view.
func runsOf(t *testing.T, n *testutil.Node, wf string) []map[string]any {
	t.Helper()
	v, err := n.Views().Get(workflow.RunsView)
	if err != nil {
		t.Fatal(err)
	}
	page, err := v.List(ctxT(t), projection.Query{Filters: map[string]string{"workflow": wf}, Order: "started_at", Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	return page.Rows
}

// settled waits until wf has want runs, none of them running, and no
// more appear for a moment.
func settled(t *testing.T, n *testutil.Node, wf string, want int) []map[string]any {
	t.Helper()
	var rows []map[string]any
	testutil.Eventually(t, 20*time.Second, "runs of "+wf, func() bool {
		rows = runsOf(t, n, wf)
		if len(rows) != want {
			return false
		}
		for _, r := range rows {
			if r["status"] == workflow.StatusRunning {
				return false
			}
		}
		return true
	})
	return rows
}

func TestMessageTriggerStartsOneRunPerAcceptedMessage(t *testing.T) {
	n := node(t, `
workflows:
  on_order:
    output: input.order
    triggers:
      - topic: orders
        filter: message.type == "order.created"
        input: '{{ {"order": message.data.id} }}'
    steps:
      - id: s
        set: { x: input.order }
`, nil)
	ctx := ctxT(t)
	msgs := []bus.Message{
		{ID: "m1", Type: "order.created", Data: []byte(`{"id":"o1"}`), DataContentType: "application/json"},
		{ID: "m2", Type: "order.paid", Data: []byte(`{"id":"o1"}`), DataContentType: "application/json"},
		{ID: "m3", Type: "order.created", Data: []byte(`{"id":"o2"}`), DataContentType: "application/json"},
	}
	if _, err := n.Bus().Publish(ctx, "orders", msgs...); err != nil {
		t.Fatal(err)
	}
	rows := settled(t, n, "on_order", 2)
	var orders []string
	for _, row := range rows {
		r, err := n.Workflows().Get(ctx, row["run_id"].(string))
		if err != nil || r.Status != workflow.StatusCompleted || !strings.HasPrefix(r.Trigger, "message:orders") {
			t.Fatalf("run %v: %v %s", row, err, dump(r))
		}
		orders = append(orders, r.Output.(string))
	}
	if strings.Join(orders, ",") != "o1,o2" {
		t.Errorf("outputs %v", orders)
	}
}

// TestScheduleCatchUpAndOverlap rewinds schedules as if the node had been
// down for five and a half hours: fire times older than catch_up are
// missed, the rest start under the overlap policy.
func TestScheduleCatchUpAndOverlap(t *testing.T) {
	n := node(t, `
workflows:
  quick:
    schedules:
      - { cron: "@every 1h", catch_up: 2h, overlap: allow, input: '{{ {"at": schedule.time} }}' }
    output: input.at
    steps:
      - { id: s, set: { x: "1" } }
  long_skip:
    schedules:
      - { cron: "@every 1h", catch_up: 3h }
    steps:
      - { id: w, wait: { signal: go } }
  long_buffer:
    schedules:
      - { cron: "@every 1h", catch_up: 3h, overlap: buffer_one }
    steps:
      - { id: w, wait: { signal: go } }
`, nil)
	ctx, e := ctxT(t), n.Workflows()
	down := time.Now().Add(-5*time.Hour - 30*time.Minute)
	for _, wf := range []string{"quick", "long_skip", "long_buffer"} {
		testutil.Eventually(t, 10*time.Second, "schedule cursor of "+wf, func() bool {
			return e.RewindSchedule(ctx, wf, 0, down) == nil
		})
	}
	// quick: fire times at -4h30, -3h30, -2h30, -1h30 and -30m; catch_up
	// 2h keeps the last two.
	rows := settled(t, n, "quick", 2)
	for i, want := range []time.Duration{-90 * time.Minute, -30 * time.Minute} {
		at, _ := time.Parse(time.RFC3339, strings.TrimPrefix(rows[i]["trigger"].(string), "schedule:"))
		if d := at.Sub(down.Add(5*time.Hour + 30*time.Minute + want)); d < -2*time.Second || d > 2*time.Second {
			t.Errorf("run %d fired for %v, want about %v ago", i, at, -want)
		}
	}
	// long_skip: three fire times are within 3h; the first starts and
	// waits, the other two are skipped.
	testutil.Eventually(t, 10*time.Second, "long_skip run", func() bool { return len(runsOf(t, n, "long_skip")) == 1 })
	// long_buffer: the first starts, the second is buffered, the third
	// skipped; when the first ends, the buffered one starts.
	var first []map[string]any
	testutil.Eventually(t, 10*time.Second, "long_buffer run", func() bool { first = runsOf(t, n, "long_buffer"); return len(first) == 1 })
	if err := e.Signal(ctx, first[0]["run_id"].(string), "go", nil, ""); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the buffered run", func() bool { return len(runsOf(t, n, "long_buffer")) == 2 })
	if got := len(runsOf(t, n, "long_skip")); got != 1 {
		t.Errorf("long_skip has %d runs, want 1", got)
	}
}

// TestWaitForAMessage: each run waits for the payment of its own order;
// messages for other orders pass it by.
func TestWaitForAMessage(t *testing.T) {
	n := node(t, `
workflows:
  pay:
    output: steps.paid.output.data.amount
    steps:
      - id: paid
        wait:
          message: { topic: payments, filter: 'message.data.order == input.order' }
          timeout: 30s
`, nil)
	ctx, e := ctxT(t), n.Workflows()
	a := start(t, n, "pay", map[string]any{"order": "A"})
	b := start(t, n, "pay", map[string]any{"order": "B"})
	waitStep(t, n, a.ID, "paid", workflow.StepRunning)
	waitStep(t, n, b.ID, "paid", workflow.StepRunning)
	// A wait registers just after its step starts, and sees only later
	// messages: publish until both runs have taken theirs.
	testutil.Eventually(t, 20*time.Second, "both payments taken", func() bool {
		for _, m := range []string{`{"order":"C","amount":1}`, `{"order":"B","amount":20}`, `{"order":"A","amount":10}`} {
			if _, err := n.Bus().Publish(ctx, "payments", bus.Message{Data: []byte(m), DataContentType: "application/json"}); err != nil {
				t.Fatal(err)
			}
		}
		ra, _ := e.Get(ctx, a.ID)
		rb, _ := e.Get(ctx, b.ID)
		return ra.Terminal() && rb.Terminal()
	})
	for id, want := range map[string]float64{a.ID: 10, b.ID: 20} {
		r := finish(t, n, id)
		if r.Status != workflow.StatusCompleted || r.Output != want {
			t.Errorf("run %s: %s", id, dump(r))
		}
	}
}
