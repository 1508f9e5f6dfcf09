package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"

	"github.com/junctionhq/junction/config"
)

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }

// generator makes records from CEL over input.n, the record number.
type generator struct {
	count  int64 // 0: no end
	fields []named
	n      int64
}

func newGenerator(g *config.GenerateInput, resume json.RawMessage) (*generator, error) {
	fs, err := compileFields(g.Fields)
	if err != nil {
		return nil, err
	}
	gen := &generator{count: int64(g.Count), fields: fs}
	if len(resume) > 0 {
		if gen.n, err = strconv.ParseInt(string(resume), 10, 64); err != nil {
			return nil, fmt.Errorf("resume position: %w", err)
		}
	}
	return gen, nil
}

func (g *generator) Next(ctx context.Context) ([]*Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if g.count > 0 && g.n >= g.count {
		return nil, io.EOF
	}
	out := make([]*Record, 0, batchRecords)
	for len(out) < batchRecords && (g.count == 0 || g.n < g.count) {
		g.n++
		vars := map[string]any{"input": map[string]any{"n": g.n}}
		m := make(map[string]any, len(g.fields))
		for _, f := range g.fields {
			v, err := f.prg.Eval(vars)
			if err != nil {
				return nil, fmt.Errorf("generate %s: %w", f.name, err)
			}
			m[f.name] = v
		}
		out = append(out, &Record{Fields: m, Pos: json.RawMessage(strconv.FormatInt(g.n, 10))})
	}
	return out, nil
}

func (g *generator) progress() (done, total int64, unit string) {
	return g.n, g.count, "records"
}

func (g *generator) Commit(context.Context, json.RawMessage) error { return nil }
func (g *generator) Close() error                                  { return nil }
