package pipeline

import (
	"context"
	"fmt"

	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/expr"
)

type named struct {
	name string
	prg  *expr.Program
}

func compileFields(m map[string]string) ([]named, error) {
	var out []named
	for _, k := range sortedKeys(m) {
		p, err := expr.Compile(m[k])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k, err)
		}
		out = append(out, named{k, p})
	}
	return out, nil
}

// filter keeps the records its condition accepts. Like every
// processor, one instance serves one run, on one goroutine: it reuses
// its variables map.
type filter struct {
	cond *expr.Program
	vars map[string]any
	one  [1]*Record // the answer (the runner copies it out at once)
}

func (f *filter) Process(_ context.Context, r *Record) ([]*Record, error) {
	f.vars["row"] = r.vars()
	ok, err := f.cond.EvalBool(f.vars)
	if err != nil {
		return nil, fmt.Errorf("%w: filter: %v", ErrRecord, err)
	}
	if !ok {
		return nil, nil
	}
	f.one[0] = r
	return f.one[:], nil
}

// mapper builds a new record (replace) or adds fields to it (set). It
// evaluates every field first, so that a record it refuses keeps its
// fields for the dead letter, then changes the record's map in place:
// a processor owns the record it is given (remove deletes in place
// too), and a new map per record would be most of the processor's cost.
type mapper struct {
	fields  []named
	replace bool
	vars    map[string]any
	vals    []any
	one     [1]*Record
}

func (m *mapper) Process(_ context.Context, r *Record) ([]*Record, error) {
	vars := m.vars
	vars["row"] = r.vars()
	if m.vals == nil {
		m.vals = make([]any, len(m.fields))
	}
	for i, f := range m.fields {
		v, err := f.prg.Eval(vars)
		if err != nil {
			clear(m.vals)
			return nil, fmt.Errorf("%w: %s: %v", ErrRecord, f.name, err)
		}
		m.vals[i] = v
	}
	// A map replaces the fields: the record's own map is reused, cleared
	// (a record still in row form gets a new one); a set adds to them.
	out := r.Fields
	switch {
	case m.replace && out != nil:
		clear(out)
	case !m.replace:
		out = r.Map()
	}
	if out == nil {
		out = make(map[string]any, len(m.fields))
	}
	for i, f := range m.fields {
		out[f.name] = m.vals[i]
	}
	clear(m.vals) // hold no values of past records
	r.Fields, r.row = out, row{}
	m.one[0] = r
	return m.one[:], nil
}

type remover struct {
	fields []string
	one    [1]*Record
}

func (rm *remover) Process(_ context.Context, r *Record) ([]*Record, error) {
	for _, k := range rm.fields {
		delete(r.Map(), k)
	}
	rm.one[0] = r
	return rm.one[:], nil
}

// splitter makes one record per element of a list.
type splitter struct{ list *expr.Program }

func (s splitter) Process(_ context.Context, r *Record) ([]*Record, error) {
	v, err := s.list.Eval(map[string]any{"row": r.vars()})
	if err != nil {
		return nil, fmt.Errorf("%w: split: %v", ErrRecord, err)
	}
	items, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("%w: split yields %T, want a list", ErrRecord, v)
	}
	out := make([]*Record, len(items))
	for i, it := range items {
		m, ok := it.(map[string]any)
		if !ok {
			m = map[string]any{"value": it}
		}
		// Every part carries the position of the whole: it is done with
		// when all are, which the batch's commit ensures.
		out[i] = &Record{Fields: m, Pos: r.Pos, lazy: r.lazy, at: r.at}
	}
	return out, nil
}

func compileProcessor(p *config.PipelineProcess) (Processor, error) {
	switch p.Kind() {
	case "filter":
		c, err := expr.CompileBool(p.Filter)
		return &filter{cond: c, vars: map[string]any{}}, err
	case "map", "set":
		m := p.Map
		if p.Set != nil {
			m = p.Set
		}
		fs, err := compileFields(m)
		return &mapper{fields: fs, replace: p.Map != nil, vars: map[string]any{}}, err
	case "remove":
		return &remover{fields: p.Remove}, nil
	case "split":
		c, err := expr.Compile(p.Split)
		return splitter{c}, err
	}
	return nil, fmt.Errorf("unknown processor %q", p.Kind())
}
