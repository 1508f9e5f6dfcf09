package pipeline

import (
	"context"
	"errors"
	"fmt"

	"github.com/junctionhq/junction/config"
)

// Processed is what a pipeline's processors made of some records: the
// records for each output (0 is the pipeline's output, i the i-th of its
// switch routes), and the refused ones with their errors.
type Processed struct {
	Outputs map[int][]map[string]any
	Dead    []DeadRecord
}

// DeadRecord is a refused record and why.
type DeadRecord struct {
	Record map[string]any `json:"record"`
	Error  string         `json:"error"`
}

// Process runs records through pipeline p's processors, as a run would
// (including what processors hold until the end, such as open windows),
// without its input or output: the engine of `junction pipeline test`.
func Process(ctx context.Context, env *Env, p *config.Pipeline, input []map[string]any) (*Processed, error) {
	r := &runner{}
	routes := 1 // the switch routes are numbered from 1, in processor order
	for i, pc := range p.Processors {
		pr, err := buildProcessor(ctx, env, pc)
		if err != nil {
			return nil, fmt.Errorf("processors[%d]: %w", i, err)
		}
		if c, ok := pr.(Closer); ok {
			defer c.Close()
		}
		if rt, ok := pr.(Router); ok {
			if r.base == nil {
				r.base = map[int]int{}
			}
			r.base[i] = routes
			routes += len(rt.Outputs())
		}
		r.procs = append(r.procs, pr)
	}
	out := &Processed{Outputs: map[int][]map[string]any{}}
	take := func(recs []*Record, err error, rec *Record) error {
		if err != nil {
			if !errors.Is(err, ErrRecord) {
				return err
			}
			out.Dead = append(out.Dead, DeadRecord{Record: rec.Map(), Error: err.Error()})
			return nil
		}
		for _, x := range recs {
			out.Outputs[x.Route] = append(out.Outputs[x.Route], x.Map())
		}
		return nil
	}
	for _, f := range input {
		rec := &Record{Fields: f}
		recs, err := r.process(ctx, rec, 0)
		if err := take(recs, err, rec); err != nil {
			return nil, err
		}
	}
	for i, pr := range r.procs {
		e, ok := pr.(Ender)
		if !ok {
			continue
		}
		held, err := e.End(ctx)
		if err != nil {
			return nil, err
		}
		for _, h := range held {
			recs, err := r.process(ctx, h, i+1)
			if err := take(recs, err, h); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}
