package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/junctionhq/junction/client"
	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/internal/testutil"
)

const workflowsYAML = `
workflows:
  hello:
    output: '{"greeting": "hello " + input.name}'
    steps:
      - id: s
        set: { n: input.name }
  gate:
    steps:
      - id: w
        wait: { signal: go, timeout: 30s }
      - id: after
        needs: [w]
        set: { got: steps.w.output.v }
`

// workflowNode starts a node that declares the workflows hello and gate.
func workflowNode(t *testing.T) *testutil.Node {
	t.Helper()
	parsed, err := config.Parse("t.yaml", []byte(workflowsYAML), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	cfg := testutil.Config(t, testutil.Embedded)
	cfg.Workflows = parsed.Workflows
	return testutil.Start(t, cfg)
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// compact is raw without insignificant space.
func compact(raw json.RawMessage) string {
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return string(raw)
	}
	return b.String()
}

// startID runs `junction run` without --wait and returns the id printed.
func startID(t *testing.T, n *testutil.Node, stdin string, args ...string) string {
	t.Helper()
	code, out, errs := run(t, stdin, append([]string{"run", "--api", n.URL}, args...)...)
	id := strings.TrimSuffix(out, "\n")
	if code != 0 || errs != "" || id == "" || strings.ContainsAny(id, " \n{") {
		t.Fatalf("run %v: %d %q %q", args, code, out, errs)
	}
	return id
}

// oneErrorLine checks a failed command: exit 1, nothing on stdout unless
// allowed, and one "junction: " line on stderr containing want.
func oneErrorLine(t *testing.T, what string, code int, errs, want string) {
	t.Helper()
	if code != 1 || strings.Count(errs, "\n") != 1 || !strings.HasPrefix(errs, "junction: ") || !strings.Contains(errs, want) {
		t.Errorf("%s: exit %d, stderr %q; want exit 1 and one line containing %q", what, code, errs, want)
	}
}

func TestRunCommand(t *testing.T) {
	n := workflowNode(t)

	// Without --wait: the id alone, of a run that exists.
	id := startID(t, n, "", "hello", `{"name":"ann"}`)
	r, err := n.Client.GetRun(ctxFor(t, 15*time.Second), id, 10*time.Second)
	if err != nil || r.RunID != id || r.Workflow != "hello" || r.Status != client.RunCompleted || string(r.Input) != `{"name":"ann"}` {
		t.Fatalf("run %s: %+v %v", id, r, err)
	}

	// --wait prints the completed run as JSON.
	code, out, errs := run(t, "", "run", "--api", n.URL, "--wait", "hello", `{"name":"ann"}`)
	var got struct {
		RunID  string `json:"run_id"`
		Status string `json:"status"`
		Output struct {
			Greeting string `json:"greeting"`
		} `json:"output"`
		StartedAt time.Time  `json:"started_at"`
		EndedAt   *time.Time `json:"ended_at"`
		Steps     []struct {
			ID     string          `json:"id"`
			Status string          `json:"status"`
			Output json.RawMessage `json:"output"`
		} `json:"steps"`
	}
	if code != 0 || errs != "" || json.Unmarshal([]byte(out), &got) != nil {
		t.Fatalf("run --wait: %d %q %q", code, out, errs)
	}
	if got.RunID == "" || got.RunID == id || got.Status != "completed" || got.Output.Greeting != "hello ann" || got.StartedAt.IsZero() || got.EndedAt == nil ||
		len(got.Steps) != 1 || got.Steps[0].ID != "s" || got.Steps[0].Status != "completed" || compact(got.Steps[0].Output) != `{"n":"ann"}` {
		t.Fatalf("run --wait output: %s", out)
	}
	if !strings.Contains(out, "\n  \"status\": \"completed\",\n") {
		t.Errorf("run --wait output is not indented: %s", out)
	}

	// The input from stdin.
	code, out, errs = run(t, `{"name": "bob"}`+"\n", "run", "--api", n.URL, "--wait", "hello", "-")
	if code != 0 || !strings.Contains(out, `"greeting": "hello bob"`) {
		t.Fatalf("run --wait from stdin: %d %q %q", code, out, errs)
	}

	// No input is a null input: input.name fails the run, which --wait
	// reports with exit 1 after printing the run.
	code, out, errs = run(t, "", "run", "--api", n.URL, "--wait", "hello")
	oneErrorLine(t, "run without input", code, errs, "ended failed")
	if !strings.Contains(out, `"status": "failed"`) || !strings.Contains(out, `"input": null`) {
		t.Errorf("run without input: stdout %q", out)
	}

	// The same idempotency key starts one run.
	id1 := startID(t, n, "", "--idempotency-key", "k", "hello", `{"name":"x"}`)
	id2 := startID(t, n, "", "--idempotency-key", "k", "hello", `{"name":"x"}`)
	if id1 != id2 {
		t.Errorf("idempotency key k: started %s and %s", id1, id2)
	}

	// Failures are one line.
	code, out, errs = run(t, "", "run", "--api", n.URL, "nope", `{}`)
	oneErrorLine(t, "unknown workflow", code, errs, "workflow_not_found")
	if out != "" {
		t.Errorf("unknown workflow: stdout %q", out)
	}
	for _, bad := range [][]string{
		{"run", "--api", n.URL, "hello", "{name: ann}"},
		{"run", "--api", n.URL, "--wait", "hello", ""},
	} {
		code, out, errs := run(t, "", bad...)
		oneErrorLine(t, strings.Join(bad[3:], " "), code, errs, "must be JSON")
		if out != "" {
			t.Errorf("%v: stdout %q", bad, out)
		}
	}
	code, _, errs = run(t, "not json", "run", "--api", n.URL, "hello", "-")
	oneErrorLine(t, "run with bad stdin", code, errs, "must be JSON")
	code, _, errs = run(t, "", "run", "--api", n.URL, "--timeout", "5s", "hello", `{}`)
	oneErrorLine(t, "--timeout without --wait", code, errs, "--wait")
	code, _, errs = run(t, "", "run", "--api", n.URL, "--wait", "--timeout", "0s", "hello", `{}`)
	oneErrorLine(t, "--timeout 0s", code, errs, "--timeout must be positive")
}

// A start whose idempotency key matches an earlier run returns that run,
// marked as a replay.
func TestStartRunReplayed(t *testing.T) {
	n := workflowNode(t)
	ctx := ctxFor(t, 30*time.Second)
	first, err := n.Client.StartRun(ctx, "hello", json.RawMessage(`{"name":"x"}`), client.StartRunOptions{IdempotencyKey: "k"})
	if err != nil || first.Replayed {
		t.Fatalf("first start: %+v %v", first, err)
	}
	if _, err := n.Client.GetRun(ctx, first.RunID, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	again, err := n.Client.StartRun(ctx, "hello", json.RawMessage(`{"name":"x"}`), client.StartRunOptions{IdempotencyKey: "k"})
	if err != nil || again.RunID != first.RunID || !again.Replayed || again.Status != client.RunCompleted {
		t.Errorf("start again with key k: %+v %v; want the completed run %s, replayed", again, err, first.RunID)
	}
}

func TestRunWaitTimesOut(t *testing.T) {
	n := workflowNode(t)
	start := time.Now()
	code, out, errs := run(t, "", "run", "--api", n.URL, "--wait", "--timeout", "300ms", "gate", `{}`)
	oneErrorLine(t, "run --wait of a run that waits longer", code, errs, "did not end within 300ms")
	var r client.Run
	if err := json.Unmarshal([]byte(out), &r); err != nil || r.Status != client.RunRunning || r.RunID == "" {
		t.Fatalf("stdout after the timeout: %q %v", out, err)
	}
	if el := time.Since(start); el < 300*time.Millisecond || el > 10*time.Second {
		t.Errorf("run --wait --timeout 300ms returned after %s", el)
	}
	if err := n.Client.CancelRun(ctxFor(t, 10*time.Second), r.RunID, ""); err != nil {
		t.Fatal(err)
	}
}

func TestSignalAndCancelCommands(t *testing.T) {
	n := workflowNode(t)

	// A signal completes the wait; waiting on the same run (the same
	// idempotency key) then prints its outcome.
	id := startID(t, n, "", "--idempotency-key", "g1", "gate")
	code, out, errs := run(t, "", "signal", "--api", n.URL, id, "go", `{"v": 7.5}`)
	if code != 0 || out != "" || errs != "" {
		t.Fatalf("signal: %d %q %q", code, out, errs)
	}
	code, out, errs = run(t, "", "run", "--api", n.URL, "--wait", "--timeout", "20s", "--idempotency-key", "g1", "gate")
	var done client.Run
	if code != 0 || json.Unmarshal([]byte(out), &done) != nil || done.RunID != id || done.Status != client.RunCompleted || len(done.Steps) != 2 {
		t.Fatalf("run --wait after the signal: %d %q %q", code, out, errs)
	}
	if s := done.Steps[1]; s.ID != "after" || s.Status != "completed" || compact(s.Output) != `{"got":7.5}` {
		t.Errorf("step after: %+v %s", s, s.Output)
	}

	// The data from stdin, with an idempotency key.
	id = startID(t, n, "", "gate")
	code, _, errs = run(t, `{"v":"from stdin"}`, "signal", "--api", n.URL, "--idempotency-key", "s1", id, "go", "-")
	if code != 0 {
		t.Fatalf("signal from stdin: %d %q", code, errs)
	}
	r, err := n.Client.GetRun(ctxFor(t, 15*time.Second), id, 10*time.Second)
	if err != nil || r.Status != client.RunCompleted || string(r.Steps[1].Output) != `{"got":"from stdin"}` {
		t.Fatalf("run signalled from stdin: %+v %v", r, err)
	}

	// Signal failures.
	code, _, errs = run(t, "", "signal", "--api", n.URL, id, "go", `{"v":1.0}`)
	oneErrorLine(t, "signal to an ended run", code, errs, "run_ended")
	code, _, errs = run(t, "", "signal", "--api", n.URL, "nosuchrun", "go")
	oneErrorLine(t, "signal to an unknown run", code, errs, "run_not_found")
	code, _, errs = run(t, "", "signal", "--api", n.URL, id, "go", "{v:1}")
	oneErrorLine(t, "signal with bad data", code, errs, "must be JSON")

	// Cancel ends a waiting run cancelled, with the reason.
	id = startID(t, n, "", "gate")
	code, out, errs = run(t, "", "cancel", "--api", n.URL, "--reason", "not needed", id)
	if code != 0 || out != "" || errs != "" {
		t.Fatalf("cancel: %d %q %q", code, out, errs)
	}
	r, err = n.Client.GetRun(ctxFor(t, 15*time.Second), id, 10*time.Second)
	if err != nil || r.Status != client.RunCancelled || !strings.Contains(r.Error, "not needed") || r.EndedAt == nil {
		t.Fatalf("cancelled run: %+v %v", r, err)
	}
	code, _, errs = run(t, "", "cancel", "--api", n.URL, id)
	oneErrorLine(t, "cancel an ended run", code, errs, "run_ended")
	code, _, errs = run(t, "", "cancel", "--api", n.URL, "nosuchrun")
	oneErrorLine(t, "cancel an unknown run", code, errs, "run_not_found")

	// The history shows the cancellation.
	evs, err := n.Client.RunHistory(ctxFor(t, 10*time.Second), id)
	if err != nil || len(evs) < 3 || evs[0].Type != "RunStarted" || evs[0].Version != 0 || evs[len(evs)-1].Type != "RunCancelled" {
		t.Fatalf("history: %+v %v", evs, err)
	}
	var cancelled bool
	for _, e := range evs {
		cancelled = cancelled || e.Type == "CancelRequested" && strings.Contains(string(e.Data), "not needed")
	}
	if !cancelled {
		t.Errorf("history without the cancel request: %+v", evs)
	}
}

func TestRunsCommand(t *testing.T) {
	n := workflowNode(t)
	ctx := ctxFor(t, time.Minute)
	done, err := n.Client.StartRun(ctx, "hello", json.RawMessage(`{"name":"ann"}`), client.StartRunOptions{Wait: 10 * time.Second})
	if err != nil || done.Status != client.RunCompleted {
		t.Fatalf("start hello: %+v %v", done, err)
	}
	waiting, err := n.Client.StartRun(ctx, "gate", nil, client.StartRunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	failed, err := n.Client.StartRun(ctx, "hello", nil, client.StartRunOptions{Wait: 10 * time.Second})
	if err != nil || failed.Status != client.RunFailed || failed.Error == "" {
		t.Fatalf("start hello without input: %+v %v", failed, err)
	}

	// The list trails the runs: wait until it shows all three as they are.
	testutil.Eventually(t, 10*time.Second, "the runs list to show the three runs", func() bool {
		p, err := n.Client.ListRuns(ctx, client.RunFilter{})
		if err != nil {
			t.Fatalf("ListRuns: %v", err)
		}
		statuses := map[string]string{}
		for _, r := range p.Runs {
			statuses[r.RunID] = r.Status
		}
		return len(p.Runs) == 3 && statuses[done.RunID] == "completed" && statuses[waiting.RunID] == "running" && statuses[failed.RunID] == "failed"
	})
	code, out, errs := run(t, "", "runs", "--api", n.URL)
	if code != 0 || errs != "" {
		t.Fatalf("runs: %d %q %q", code, out, errs)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "RUN ID") || !strings.Contains(lines[0], "WORKFLOW") || !strings.HasSuffix(lines[0], "ERROR") {
		t.Fatalf("runs table: %q", out)
	}
	// Newest first; the columns line up under the header.
	col := strings.Index(lines[0], "STATUS")
	for i, want := range []struct {
		run            *client.Run
		status, suffix string
	}{{failed, "failed", ""}, {waiting, "running", "…"}, {done, "completed", ""}} {
		l := lines[i+1]
		if !strings.HasPrefix(l, want.run.RunID+" ") || !strings.HasPrefix(l[col:], want.status+" ") {
			t.Errorf("runs line %d: %q; want run %s %s", i+1, l, want.run.RunID, want.status)
		}
		fields := strings.Fields(l)
		if len(fields) < 6 {
			t.Errorf("runs line %d has %d fields: %q", i+1, len(fields), l)
			continue
		}
		if _, err := time.ParseInLocation("2006-01-02 15:04:05", fields[3]+" "+fields[4], time.Local); err != nil {
			t.Errorf("runs line %d: STARTED %q: %v", i+1, fields[3]+" "+fields[4], err)
		}
		d := fields[5]
		if want.suffix != "" {
			if !strings.HasSuffix(d, want.suffix) {
				t.Errorf("runs line %d: DURATION %q of a running run lacks %q", i+1, d, want.suffix)
			}
			d = strings.TrimSuffix(d, want.suffix)
		}
		if _, err := time.ParseDuration(d); err != nil {
			t.Errorf("runs line %d: DURATION %q: %v", i+1, fields[5], err)
		}
	}
	if !strings.Contains(lines[1], failed.Error[:min(len(failed.Error), 20)]) {
		t.Errorf("runs: the failed run's line %q lacks its error %q", lines[1], failed.Error)
	}

	// Filters and the JSON page.
	code, out, errs = run(t, "", "runs", "--api", n.URL, "--workflow", "hello", "--status", "completed", "--json")
	var p client.RunPage
	if code != 0 || json.Unmarshal([]byte(out), &p) != nil || len(p.Runs) != 1 || p.Runs[0].RunID != done.RunID ||
		p.Runs[0].Workflow != "hello" || p.Runs[0].Trigger != "api" || p.Runs[0].StartedAt.IsZero() || p.Runs[0].EndedAt == nil || p.NextCursor != "" {
		t.Fatalf("runs --json: %d %q %q", code, out, errs)
	}
	code, out, errs = run(t, "", "runs", "--api", n.URL, "--limit", "1")
	if code != 0 || strings.Count(out, "\n") != 2 || !strings.Contains(out, failed.RunID) || !strings.HasPrefix(errs, "more runs: add --cursor ") {
		t.Fatalf("runs --limit 1: %d %q %q", code, out, errs)
	}
	cursor := strings.TrimSpace(strings.TrimPrefix(errs, "more runs: add --cursor "))
	code, out, _ = run(t, "", "runs", "--api", n.URL, "--limit", "1", "--cursor", cursor)
	if code != 0 || strings.Count(out, "\n") != 2 || !strings.Contains(out, waiting.RunID) {
		t.Fatalf("runs --cursor: %d %q", code, out)
	}
	code, _, errs = run(t, "", "runs", "--api", n.URL, "--limit", "5000")
	oneErrorLine(t, "runs --limit 5000", code, errs, "limit")

	if err := n.Client.CancelRun(ctx, waiting.RunID, ""); err != nil {
		t.Fatal(err)
	}
}

func TestWorkflowsClient(t *testing.T) {
	n := workflowNode(t)
	ws, err := n.Client.Workflows(ctxFor(t, 10*time.Second))
	if err != nil || len(ws) != 2 {
		t.Fatalf("workflows: %+v %v", ws, err)
	}
	byName := map[string]client.WorkflowInfo{}
	for _, w := range ws {
		byName[w.Name] = w
	}
	if g := byName["gate"]; strings.Join(g.Steps, ",") != "w,after" {
		t.Errorf("gate: %+v", g)
	}
	if h := byName["hello"]; strings.Join(h.Steps, ",") != "s" {
		t.Errorf("hello: %+v", h)
	}
	_, err = n.Client.GetRun(ctxFor(t, 10*time.Second), "nosuchrun", 0)
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Code != "run_not_found" || ce.Status != 404 {
		t.Errorf("GetRun of an unknown run: %v", err)
	}
}
