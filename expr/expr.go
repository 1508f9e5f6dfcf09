// Package expr is the one CEL environment Junction uses everywhere an
// expression appears in config or API input (subscription filters now;
// routes, pipelines, workflows and projections share it). Programs are
// compiled once, when the config or API object is accepted, so a syntax or
// type error is reported up front and evaluation is cheap.
package expr

import (
	"errors"
	"fmt"
	"sync"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"
)

// Variables every expression may use. They are all dynamically typed maps
// so that one environment serves every component.
var variables = []string{"event", "message", "row", "input", "steps", "request"}

var (
	envOnce sync.Once
	env     *cel.Env
	envErr  error
)

func baseEnv() (*cel.Env, error) {
	envOnce.Do(func() {
		opts := make([]cel.EnvOption, 0, len(variables))
		for _, v := range variables {
			opts = append(opts, cel.Variable(v, cel.DynType))
		}
		env, envErr = cel.NewEnv(opts...)
	})
	return env, envErr
}

// Program is a compiled expression, safe for concurrent use.
type Program struct {
	src string
	prg cel.Program
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
	prg, err := e.Program(ast, cel.EvalOptions(cel.OptOptimize), cel.CostLimit(1_000_000))
	if err != nil {
		return nil, fmt.Errorf("invalid expression: %w", err)
	}
	return &Program{src: src, prg: prg}, nil
}

// ErrNotBool is returned when a dynamically typed expression yields a
// non-boolean value.
var ErrNotBool = errors.New("expression did not yield a bool")

// EvalBool evaluates p with vars (missing variables are errors).
func (p *Program) EvalBool(vars map[string]any) (bool, error) {
	out, _, err := p.prg.Eval(vars)
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
	out, _, err := p.prg.Eval(vars)
	if err != nil {
		return "", fmt.Errorf("evaluating %q: %w", p.src, err)
	}
	if s, ok := out.(types.String); ok {
		return string(s), nil
	}
	return fmt.Sprint(out.Value()), nil
}
