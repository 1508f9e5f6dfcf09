package pipeline

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/junctionhq/junction/config"
)

func TestSwitch(t *testing.T) {
	big, eu := &config.PipelineOutput{Stdout: &struct{}{}}, &config.PipelineOutput{JSONL: &config.FileOutput{Path: "eu.jsonl"}}
	s, err := newSwitcher([]*config.SwitchRoute{{When: "row.amount > 100.0", Output: big}, {When: "row.region == 'eu'", Output: eu}})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Outputs(); !slices.Equal(got, []*config.PipelineOutput{big, eu}) {
		t.Fatalf("Outputs() = %v", got)
	}
	tests := []struct {
		name      string
		fields    map[string]any
		wantRoute int
		wantErr   bool
	}{
		{"first case", map[string]any{"amount": 500.0, "region": "us"}, 1, false},
		{"first case that holds wins", map[string]any{"amount": 500.0, "region": "eu"}, 1, false},
		{"second case", map[string]any{"amount": 5.0, "region": "eu"}, 2, false},
		{"no case: the pipeline's output", map[string]any{"amount": 5.0, "region": "us"}, 0, false},
		{"a failing condition refuses the record", map[string]any{"region": "eu"}, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &Record{Fields: tt.fields}
			out, err := s.Process(context.Background(), r)
			if tt.wantErr {
				if !errors.Is(err, ErrRecord) {
					t.Fatalf("error %v, want a record error", err)
				}
				return
			}
			if err != nil || len(out) != 1 || out[0] != r {
				t.Fatalf("out %v, %v", out, err)
			}
			if r.Route != tt.wantRoute {
				t.Fatalf("route %d, want %d", r.Route, tt.wantRoute)
			}
		})
	}
	for _, bad := range [][]*config.SwitchRoute{
		nil,
		{{When: "true"}},
		{{When: "row.", Output: big}},
		{{When: "'text'", Output: big}},
	} {
		if _, err := newSwitcher(bad); err == nil {
			t.Errorf("%v: built", bad)
		}
	}
}

// TestSwitchInRun routes through the runner to the switch's outputs.
func TestSwitchInRun(t *testing.T) {
	s, err := newSwitcher([]*config.SwitchRoute{{When: "row.n in [0.0, 3.0]", Output: &config.PipelineOutput{Stdout: &struct{}{}}}})
	if err != nil {
		t.Fatal(err)
	}
	var in winInput
	for i := range 6 {
		in.recs = append(in.recs, &Record{Fields: map[string]any{"n": float64(i)}})
	}
	main, threes := &winOutput{}, &winOutput{}
	r := &runner{in: &in, procs: []Processor{s}, outs: []Output{main, threes}, start: time.Now()}
	if err := r.run(context.Background()); err != nil {
		t.Fatal(err)
	}
	show := func(o *winOutput) string {
		var b strings.Builder
		for _, r := range o.recs {
			fmt.Fprint(&b, r.Fields["n"])
		}
		return b.String()
	}
	if show(main) != "1245" || show(threes) != "03" {
		t.Fatalf("main %s, threes %s", show(main), show(threes))
	}
}
