package workflow

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/eventstore"
)

// FuzzHistory feeds arbitrary histories (event types and payloads, as a
// corrupted or foreign stream could hold) to fold and decide: they must
// return an error or a decision, never panic, and a decision must only
// name steps the workflow declares.
func FuzzHistory(f *testing.F) {
	f.Add(`[["RunStarted",{"workflow":"w","input":{"n":1}}],["StepStarted",{"step":"a","attempt":1}],["StepCompleted",{"step":"a","attempt":1,"output":{"x":1}}]]`)
	f.Add(`[["RunStarted",{"workflow":"w"}],["StepFailed",{"step":"a","attempt":1,"error":"x"}],["RunUnwinding",{"reason":"r"}],["CompensationStarted",{"step":"a","attempt":1}]]`)
	f.Add(`[["RunStarted",{"workflow":"nope"}],["SignalReceived",{"signal":"go","data":7}],["CancelRequested",{}]]`)
	f.Add(`[["StepCompleted",{"step":"zz","signal_index":99}]]`)
	f.Add(`[["RunStarted",{"workflow":"w","timeout_at":"2000-01-01T00:00:00Z"}],["StepStarted",{"step":"b","attempt":3,"deadline":"2000-01-01T00:00:00Z"}]]`)
	w := &config.Workflow{Steps: []*config.Step{
		{ID: "a", StepAction: config.StepAction{Call: &config.CallAction{URL: "http://x", Body: "{{ input }}"}},
			Compensate: &config.StepAction{Publish: &config.PublishAction{Topic: "t"}}},
		{ID: "b", Needs: []string{"a"}, StepAction: config.StepAction{Wait: &config.WaitAction{Signal: "go"}}},
		{ID: "c", Needs: []string{"b"}, When: "input.n > 0.0", StepAction: config.StepAction{Set: map[string]string{"x": "steps.a.output"}}},
	}}
	d, err := Compile("w", w)
	if err != nil {
		f.Fatal(err)
	}
	defs := func(name string) *Definition {
		if name == "w" {
			return d
		}
		return nil
	}
	f.Fuzz(func(t *testing.T, src string) {
		var raw [][2]json.RawMessage
		if json.Unmarshal([]byte(src), &raw) != nil {
			return
		}
		evs := make([]eventstore.Event, len(raw))
		for i, r := range raw {
			var typ string
			_ = json.Unmarshal(r[0], &typ)
			evs[i] = eventstore.Event{Stream: Stream("r"), Version: uint64(i), Type: typ, Data: r[1], Time: time.Unix(int64(i), 0)}
		}
		r, def, err := fold("r", evs, defs)
		if err != nil {
			return
		}
		dec := decide(def, r, time.Unix(1e9, 0))
		for _, ex := range dec.execs {
			if def == nil || def.stepDef(ex.step) == nil {
				t.Fatalf("execution of undeclared step %q", ex.step)
			}
		}
		_ = wake(def, r)
	})
}
