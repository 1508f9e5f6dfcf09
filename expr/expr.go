// Package expr is the one CEL environment Junction uses everywhere an
// expression appears in config or API input (subscription filters now;
// routes, pipelines, workflows and projections share it). Programs are
// compiled once, when the config or API object is accepted, so a syntax or
// type error is reported up front and evaluation is cheap.
package expr

import (
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/cost"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/common/types/traits"
	"cel.dev/cel-go/ext"
)

// Variables every expression may use. They are all dynamically typed maps
// so that one environment serves every component.
var variables = []string{"event", "message", "row", "input", "steps", "request", "item", "schedule"}

var (
	envOnce sync.Once
	env     *cel.Env
	envErr  error
)

func baseEnv() (*cel.Env, error) {
	envOnce.Do(func() {
		// Optional types give maps a safe lookup with a default,
		// row.?total.orValue(0.0), which projection mappings need for
		// a row that does not exist yet.
		// The strings extension (substring, split, lowerAscii, format...)
		// is what mappings and keys most often need beyond the core.
		opts := []cel.EnvOption{cel.OptionalTypes(), ext.Strings()}
		for _, v := range variables {
			opts = append(opts, cel.Variable(v, cel.DynType))
		}
		env, envErr = cel.NewEnv(opts...)
	})
	return env, envErr
}

// Program is a compiled expression, safe for concurrent use.
type Program struct {
	src  string
	prg  cel.Program
	fast fastFn // nil when the expression is outside the fast path's subset
}

// String returns the source text.
func (p *Program) String() string { return p.src }

// CompileBool compiles src and requires that it yields a bool (or dyn,
// which is checked at evaluation time).
func CompileBool(src string) (*Program, error) { return compile(src, cel.BoolType) }

// Compile compiles src for any result type (a hash key, a mapped value).
func Compile(src string) (*Program, error) { return compile(src, nil) }

func compile(src string, want *cel.Type) (*Program, error) {
	e, err := baseEnv()
	if err != nil {
		return nil, err
	}
	ast, iss := e.Compile(src)
	if iss != nil && iss.Err() != nil {
		return nil, fmt.Errorf("invalid expression: %w", iss.Err())
	}
	if t := ast.OutputType(); want != nil && !t.IsAssignableType(want) && t != cel.DynType {
		return nil, fmt.Errorf("expression must yield a %s, it yields %s", want, t)
	}
	// The cost limit stops an expression that would run away (a
	// comprehension over a huge list). Tracking it costs an allocation
	// and a check per step of every evaluation, so it is only set when
	// the expression's static worst case could exceed it: one without
	// comprehensions over unknown sizes is bounded by its own size.
	opts := []cel.ProgramOption{cel.EvalOptions(cel.OptOptimize)}
	limited := false
	if est, err := e.EstimateCost(ast, unknownSizes{}); err != nil || est.Max > costLimit {
		opts = append(opts, cel.CostLimit(costLimit))
		limited = true
	}
	// Most expressions are small enough for plain Go to evaluate them
	// (fast.go); it needs to know whether CEL would be counting cost.
	fast := fastPath(ast, limited)
	prg, err := e.Program(ast, opts...)
	if err != nil {
		return nil, fmt.Errorf("invalid expression: %w", err)
	}
	return &Program{src: src, prg: prg, fast: fast}, nil
}

// costLimit bounds the work of one evaluation (in CEL's cost units).
const costLimit = 1_000_000

// unknownSizes leaves every size and call cost to CEL's defaults, which
// take a list or string of unknown size as unbounded.
type unknownSizes struct{}

func (unknownSizes) EstimateCallCost(string, string, *cost.AstNode, []cost.AstNode) *cost.CallEstimate {
	return nil
}
func (unknownSizes) EstimateSize(cost.AstNode) *cost.SizeEstimate { return nil }

// Fields is a variable's value kept in another form than a map (a
// pipeline record as read from a CSV line, by column): the fast path
// reads the fields it selects, and CEL, which needs a map, is given Map.
type Fields interface {
	Field(name string) (any, bool)
	Map() map[string]any
}

// celVars returns vars with any Fields made a map, for CEL.
func celVars(vars map[string]any) map[string]any {
	var out map[string]any
	for k, v := range vars {
		if f, ok := v.(Fields); ok {
			if out == nil {
				out = maps.Clone(vars)
			}
			out[k] = f.Map()
		}
	}
	if out == nil {
		return vars
	}
	return out
}

// ErrNotBool is returned when a dynamically typed expression yields a
// non-boolean value.
var ErrNotBool = errors.New("expression did not yield a bool")

// EvalBool evaluates p with vars (missing variables are errors).
func (p *Program) EvalBool(vars map[string]any) (bool, error) {
	if p.fast != nil {
		if v, ok := p.fast(vars); ok {
			if b, ok := v.(bool); ok {
				return b, nil
			}
		}
	}
	out, _, err := p.prg.Eval(celVars(vars))
	if err != nil {
		return false, fmt.Errorf("evaluating %q: %w", p.src, err)
	}
	if b, ok := out.(types.Bool); ok {
		return bool(b), nil
	}
	return false, fmt.Errorf("evaluating %q: %w (got %s)", p.src, ErrNotBool, out.Type())
}

// EvalString evaluates p and renders the result as text: strings as they
// are, other values in CEL's own formatting (numbers, bools, bytes).
func (p *Program) EvalString(vars map[string]any) (string, error) {
	if p.fast != nil {
		if v, ok := p.fast(vars); ok {
			switch x := v.(type) {
			case string:
				return x, nil
			case bool, int64, float64:
				// The same text as CEL's value's Value() gives below.
				return fmt.Sprint(x), nil
			}
			// null renders as CEL's NULL_VALUE: left to CEL.
		}
	}
	out, _, err := p.prg.Eval(celVars(vars))
	if err != nil {
		return "", fmt.Errorf("evaluating %q: %w", p.src, err)
	}
	if s, ok := out.(types.String); ok {
		return string(s), nil
	}
	return fmt.Sprint(out.Value()), nil
}

// Eval evaluates p and returns the result as plain Go values: nil, bool,
// int64, uint64, float64, string, []byte, time.Time, time.Duration, []any
// and map[string]any (map keys rendered as text), so callers can encode it
// as JSON or bind it to SQL without knowing CEL's types.
func (p *Program) Eval(vars map[string]any) (any, error) {
	if p.fast != nil {
		if v, ok := p.fast(vars); ok {
			return v, nil
		}
	}
	out, _, err := p.prg.Eval(celVars(vars))
	if err != nil {
		return nil, fmt.Errorf("evaluating %q: %w", p.src, err)
	}
	return Native(out)
}

// Native converts a CEL value to plain Go values as Eval describes.
func Native(v ref.Val) (any, error) {
	switch x := v.(type) {
	case types.Null:
		return nil, nil
	case types.Bool:
		return bool(x), nil
	case types.Int:
		return int64(x), nil
	case types.Uint:
		return uint64(x), nil
	case types.Double:
		return float64(x), nil
	case types.String:
		return string(x), nil
	case types.Bytes:
		return []byte(x), nil
	case types.Timestamp:
		return x.Time, nil
	case types.Duration:
		return x.Duration, nil
	case *types.Err:
		return nil, x
	case traits.Mapper:
		out := make(map[string]any, int(x.Size().(types.Int)))
		for it := x.Iterator(); it.HasNext() == types.True; {
			k := it.Next()
			val, err := Native(x.Get(k))
			if err != nil {
				return nil, err
			}
			ks, ok := k.Value().(string)
			if !ok {
				ks = fmt.Sprint(k.Value())
			}
			out[ks] = val
		}
		return out, nil
	case traits.Lister:
		n := int(x.Size().(types.Int))
		out := make([]any, n)
		for i := 0; i < n; i++ {
			val, err := Native(x.Get(types.Int(i)))
			if err != nil {
				return nil, err
			}
			out[i] = val
		}
		return out, nil
	}
	if o, ok := v.Value().(interface{ HasValue() bool }); ok && !o.HasValue() {
		return nil, nil // an empty optional
	}
	switch x := v.Value().(type) {
	case nil, bool, int64, uint64, float64, string, time.Time, time.Duration:
		return x, nil
	}
	return nil, fmt.Errorf("expression yielded a %s, which has no plain value", v.Type())
}
