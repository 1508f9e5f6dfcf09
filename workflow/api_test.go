package workflow_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/junctionhq/junction/internal/testutil"
	"github.com/junctionhq/junction/workflow"
)

const apiConfig = `
workflows:
  checkout:
    input:
      type: object
      required: [order]
      properties: { order: { type: string } }
    output: '{"order": input.order}'
    steps:
      - { id: s, set: { x: input.order } }
  gate:
    steps:
      - { id: w, wait: { signal: go } }
gateway:
  routes:
    - path: /checkout
      methods: [POST]
      workflow: checkout
`

func TestGatewayRouteStartsRuns(t *testing.T) {
	n := node(t, apiConfig, nil)
	url := "http://" + n.GatewayAddr() + "/checkout"
	st, h, body := testutil.Do(t, "POST", url, map[string]string{"Idempotency-Key": "cart-1", "Content-Type": "application/json"}, `{"order":"o-1"}`)
	var started struct{ RunID, Status string }
	_ = json.Unmarshal([]byte(strings.ReplaceAll(body, "run_id", "runid")), &started)
	if st != 202 || started.RunID == "" || h.Get("Location") != "/v1/runs/"+started.RunID {
		t.Fatalf("start: %d %v %s", st, h, body)
	}
	r := finish(t, n, started.RunID)
	if r.Status != workflow.StatusCompleted || r.Trigger != "gateway" || r.Output.(map[string]any)["order"] != "o-1" {
		t.Fatalf("run: %s", dump(r))
	}
	st, h, body2 := testutil.Do(t, "POST", url, map[string]string{"Idempotency-Key": "cart-1"}, `{"order":"o-1"}`)
	if st != 202 || h.Get("Idempotent-Replayed") != "true" || !strings.Contains(body2, started.RunID) || !strings.Contains(body2, `"completed"`) {
		t.Errorf("replayed start: %d %v %s", st, h, body2)
	}
	for _, tc := range []struct {
		body, code string
		status     int
	}{
		{`{"order":`, "bad_json", 400},
		{`{"order":7}`, "validation_failed", 422},
	} {
		st, _, b := testutil.Do(t, "POST", url, nil, tc.body)
		if st != tc.status || !strings.Contains(b, tc.code) {
			t.Errorf("body %s: %d %s, want %d %s", tc.body, st, b, tc.status, tc.code)
		}
	}
}

func TestRunsAPI(t *testing.T) {
	n := node(t, apiConfig, nil)
	api := n.URL + "/v1"
	// Start with wait: the run ends within it, so the answer is the run.
	st, h, body := testutil.Do(t, "POST", api+"/workflows/checkout/runs?wait=10s", map[string]string{"Idempotency-Key": "k1"}, `{"order":"a"}`)
	var run workflow.Run
	if err := json.Unmarshal([]byte(body), &run); err != nil || st != 200 || run.Status != workflow.StatusCompleted || h.Get("Location") == "" {
		t.Fatalf("start and wait: %d %s", st, body)
	}
	st, _, body = testutil.Do(t, "POST", api+"/workflows/gate/runs", nil, "")
	var gate struct {
		RunID string `json:"run_id"`
	}
	_ = json.Unmarshal([]byte(body), &gate)
	if st != 202 || gate.RunID == "" {
		t.Fatalf("start gate: %d %s", st, body)
	}
	waitStep(t, n, gate.RunID, "w", workflow.StepRunning)
	cases := []struct {
		method, path, body string
		status             int
		code               string
	}{
		{"POST", "/workflows/nope/runs", "", 404, "workflow_not_found"},
		{"POST", "/workflows/checkout/runs", `{"order":1}`, 422, "validation_failed"},
		{"POST", "/workflows/checkout/runs", `{`, 400, "bad_json"},
		{"POST", "/workflows/checkout/runs?wait=soon", `{}`, 400, "bad_request"},
		{"GET", "/runs/nope", "", 404, "run_not_found"},
		{"GET", "/runs/a.b", "", 404, "run_not_found"},
		{"GET", "/runs/nope/history", "", 404, "run_not_found"},
		{"POST", "/runs/" + run.ID + "/signals/go", "", 409, "run_ended"},
		{"POST", "/runs/" + run.ID + "/cancel", "", 409, "run_ended"},
		{"POST", "/runs/" + gate.RunID + "/signals/bad%20name", "", 422, "validation_failed"},
		{"POST", "/runs/" + gate.RunID + "/signals/go", "{x", 400, "bad_json"},
		{"GET", "/runs?limit=0", "", 400, "bad_request"},
		{"GET", "/runs?status=running&limit=5", "", 200, gate.RunID},
		{"GET", "/runs/" + run.ID + "/history", "", 200, `"RunCompleted"`},
		{"GET", "/runs/" + gate.RunID + "?wait=50ms", "", 202, `"running"`},
		{"POST", "/runs/" + gate.RunID + "/signals/go", `{"ok":true}`, 202, "go"},
		{"GET", "/runs/" + gate.RunID + "?wait=10s", "", 200, `"completed"`},
		{"GET", "/workflows", "", 200, `"checkout"`},
	}
	for _, c := range cases {
		var st int
		var b string
		if c.status == 200 && strings.HasPrefix(c.path, "/runs?") {
			// The list is a view: it lags the histories a little.
			testutil.Eventually(t, 10*time.Second, "the runs view", func() bool {
				st, _, b = testutil.Do(t, c.method, api+c.path, nil, c.body)
				return strings.Contains(b, c.code)
			})
		} else {
			st, _, b = testutil.Do(t, c.method, api+c.path, nil, c.body)
		}
		if st != c.status || !strings.Contains(b, c.code) {
			t.Errorf("%s %s: %d %s, want %d with %s", c.method, c.path, st, b, c.status, c.code)
		}
	}
}
