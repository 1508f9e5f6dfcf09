package pipeline

import (
	"context"
	"fmt"

	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/expr"
)

func init() {
	processors["switch"] = func(_ context.Context, _ *Env, cfg *config.PipelineProcess) (Processor, error) {
		return newSwitcher(cfg.Switch)
	}
}

// switcher routes each record to the output of the first case whose
// condition holds (Record.Route = the case's index plus one); a record
// no case accepts keeps its route (0: the pipeline's output).
//
// The runner sends records to outputs only once they leave the last
// processor: a routed record still goes through the processors after the
// switch, which keep its route unless they make new records (split,
// window) or drop it (filter). A switch is best placed last.
type switcher struct {
	conds []*expr.Program
	outs  []*config.PipelineOutput
}

func newSwitcher(cases []*config.SwitchRoute) (*switcher, error) {
	if len(cases) == 0 {
		return nil, fmt.Errorf("switch: needs cases")
	}
	s := &switcher{}
	for i, c := range cases {
		if c == nil || c.Output == nil {
			return nil, fmt.Errorf("switch: case %d: needs an output", i)
		}
		p, err := expr.CompileBool(c.When)
		if err != nil {
			return nil, fmt.Errorf("switch: case %d: when: %w", i, err)
		}
		s.conds = append(s.conds, p)
		s.outs = append(s.outs, c.Output)
	}
	return s, nil
}

// Outputs returns the cases' outputs, in order.
func (s *switcher) Outputs() []*config.PipelineOutput { return s.outs }

func (s *switcher) Process(_ context.Context, r *Record) ([]*Record, error) {
	vars := map[string]any{"row": r.vars()}
	for i, c := range s.conds {
		ok, err := c.EvalBool(vars)
		if err != nil {
			return nil, fmt.Errorf("%w: switch: case %d: %v", ErrRecord, i, err)
		}
		if ok {
			r.Route = i + 1
			break
		}
	}
	return []*Record{r}, nil
}
