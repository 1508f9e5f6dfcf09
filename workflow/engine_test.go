package workflow_test

import (
	"io"
	"net/http"
	"testing"

	"github.com/junctionhq/junction/workflow"
)

func TestSmoke(t *testing.T) {
	svc := service(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"id":"r1","got":` + string(b) + `,"key":"` + r.Header.Get("Idempotency-Key") + `"}`))
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
	r := start(t, n, "three", map[string]any{"n": 41})
	r = finish(t, n, r.ID)
	if r.Status != workflow.StatusCompleted {
		t.Fatalf("status %s: %s", r.Status, dump(r))
	}
	t.Log(dump(r))
}
