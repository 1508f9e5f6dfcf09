package expr

import (
	"math"
	"slices"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/operators"
	"cel.dev/cel-go/common/types"
)

// The fast path evaluates the small expressions that dominate per-record
// work (row.amount > 0.0, row.amount * 0.92, row.sku) as a tree of Go
// closures over the variables, without CEL's activation and value boxing.
//
// It is only ever a shortcut: a closure that meets anything it does not
// evaluate exactly as CEL would (a missing key, a value of another Go
// type, an overflow, an error CEL would report or absorb) answers "not
// handled" and the caller evaluates the real CEL program instead. So the
// values it yields are the ones CEL and Native would yield, and every
// error still comes from CEL.
//
// Values inside the tree are plain Go values as found in the variables or
// computed. Only nil, bool, int64, float64 and string are operated on or
// returned: those are the Go values that CEL converts and Native converts
// back unchanged. Anything else (an int, a float32, a list, a time) is
// left to CEL. A map[string]any is only ever used to select from.

// fastFn evaluates an expression on vars; ok is false when the result must
// come from CEL instead.
type fastFn func(vars map[string]any) (v any, ok bool)

// maxLimitedString bounds, in a program that has a cost limit, the string
// lengths CEL charges for: both operands of a concatenation, the shorter
// of a comparison. With the bound the evaluation stays below the limit,
// so CEL would not stop it either; longer operands are left to CEL.
const maxLimitedString = 4096

// fastPath translates a checked expression to closures, or returns nil when
// it uses anything outside the subset. limited says the program enforces
// costLimit.
func fastPath(checked *cel.Ast, limited bool) fastFn {
	b := &fastBuilder{limited: limited}
	n, ok := b.build(checked.NativeRep().Expr())
	if !ok {
		return nil
	}
	// Every node costs CEL at most a constant plus a tenth of the length
	// of its (bounded) string operands; beyond this many nodes the bound
	// no longer keeps a limited program under the limit.
	if limited && b.nodes*(3+maxLimitedString/5) > costLimit {
		return nil
	}
	if n.plain {
		return n.fn
	}
	f := n.fn
	return func(vars map[string]any) (any, bool) {
		v, ok := f(vars)
		if !ok || !isPlain(v) {
			return nil, false
		}
		return v, true
	}
}

// isPlain reports whether v is a Go value that CEL and Native give back
// unchanged.
func isPlain(v any) bool {
	switch v.(type) {
	case nil, bool, int64, float64, string:
		return true
	}
	return false
}

// fastBuilder translates one expression.
type fastBuilder struct {
	limited bool // the program enforces costLimit
	nodes   int  // translated so far
}

// fastNode is a translated subexpression. plain says fn only ever yields
// plain values (see isPlain); a variable or a selected field can be any
// Go value.
type fastNode struct {
	fn    fastFn
	plain bool
}

func (b *fastBuilder) build(e ast.Expr) (fastNode, bool) {
	b.nodes++
	switch e.Kind() {
	case ast.IdentKind:
		name := e.AsIdent()
		if !slices.Contains(variables, name) {
			return fastNode{}, false
		}
		return fastNode{fn: func(vars map[string]any) (any, bool) {
			v, ok := vars[name]
			return v, ok
		}}, true
	case ast.SelectKind:
		return b.buildSelect(e.AsSelect())
	case ast.LiteralKind:
		var c any
		switch v := e.AsLiteral().(type) {
		case types.Null:
			c = nil
		case types.Bool:
			c = bool(v)
		case types.Int:
			c = int64(v)
		case types.Double:
			c = float64(v)
		case types.String:
			c = string(v)
		default:
			return fastNode{}, false
		}
		return fastNode{fn: func(map[string]any) (any, bool) { return c, true }, plain: true}, true
	case ast.CallKind:
		return b.buildCall(e.AsCall())
	}
	return fastNode{}, false
}

func (b *fastBuilder) buildSelect(s ast.SelectExpr) (fastNode, bool) {
	if s.IsTestOnly() {
		return fastNode{}, false
	}
	field := s.FieldName()
	// A field of a variable is the common case; looking the variable up
	// directly saves a call.
	if op := s.Operand(); op.Kind() == ast.IdentKind && slices.Contains(variables, op.AsIdent()) {
		b.nodes++
		name := op.AsIdent()
		return fastNode{fn: func(vars map[string]any) (any, bool) {
			switch m := vars[name].(type) {
			case map[string]any:
				v, ok := m[field]
				return v, ok
			case Fields:
				return m.Field(field)
			}
			return nil, false
		}}, true
	}
	op, ok := b.build(s.Operand())
	if !ok || op.plain {
		return fastNode{}, false
	}
	f := op.fn
	return fastNode{fn: func(vars map[string]any) (any, bool) {
		x, ok := f(vars)
		if !ok {
			return nil, false
		}
		m, ok := x.(map[string]any)
		if !ok {
			return nil, false
		}
		v, ok := m[field]
		return v, ok
	}}, true
}

func (b *fastBuilder) buildCall(c ast.CallExpr) (fastNode, bool) {
	if c.IsMemberFunction() {
		return fastNode{}, false
	}
	args := make([]fastFn, len(c.Args()))
	for i, a := range c.Args() {
		n, ok := b.build(a)
		if !ok {
			return fastNode{}, false
		}
		args[i] = n.fn
	}
	name := c.FunctionName()
	if len(args) == 1 {
		switch name {
		case operators.LogicalNot:
			return plainNode(fastNot(args[0])), true
		case operators.Negate:
			return plainNode(fastNegate(args[0])), true
		}
		return fastNode{}, false
	}
	if len(args) == 3 && name == operators.Conditional {
		return fastNode{fn: fastConditional(args[0], args[1], args[2])}, true
	}
	if len(args) != 2 {
		return fastNode{}, false
	}
	l, r := args[0], args[1]
	switch name {
	case operators.LogicalAnd:
		return plainNode(fastLogical(l, r, false)), true
	case operators.LogicalOr:
		return plainNode(fastLogical(l, r, true)), true
	case operators.Equals:
		return plainNode(fastEquals(l, r, false, b.limited)), true
	case operators.NotEquals:
		return plainNode(fastEquals(l, r, true, b.limited)), true
	case operators.Less, operators.LessEquals, operators.Greater, operators.GreaterEquals:
		return plainNode(fastCompare(name, l, r, b.limited)), true
	case operators.Add, operators.Subtract, operators.Multiply, operators.Divide, operators.Modulo:
		return plainNode(fastArith(name, l, r, b.limited)), true
	case operators.Index:
		return fastNode{fn: fastIndex(l, r)}, true
	}
	return fastNode{}, false
}

func plainNode(f fastFn) fastNode { return fastNode{fn: f, plain: true} }

func fastNot(x fastFn) fastFn {
	return func(vars map[string]any) (any, bool) {
		v, ok := x(vars)
		if b, isBool := v.(bool); ok && isBool {
			return !b, true
		}
		return nil, false
	}
}

func fastNegate(x fastFn) fastFn {
	return func(vars map[string]any) (any, bool) {
		v, ok := x(vars)
		if !ok {
			return nil, false
		}
		switch n := v.(type) {
		case int64:
			if n != math.MinInt64 { // CEL reports the overflow
				return -n, true
			}
		case float64:
			return -n, true
		}
		return nil, false
	}
}

// fastConditional evaluates c ? t : f. CEL evaluates only the chosen
// branch and reports a non-bool condition as an error.
func fastConditional(c, t, f fastFn) fastFn {
	return func(vars map[string]any) (any, bool) {
		v, ok := c(vars)
		cond, isBool := v.(bool)
		if !ok || !isBool {
			return nil, false
		}
		if cond {
			return t(vars)
		}
		return f(vars)
	}
}

// fastLogical evaluates && (or false) and || (or true). A left operand
// equal to the short-circuit value decides, as in CEL. Anything but two
// bools otherwise goes to CEL, whose rules for absorbing errors and
// non-bools on either side then apply unchanged.
func fastLogical(l, r fastFn, or bool) fastFn {
	return func(vars map[string]any) (any, bool) {
		v, ok := l(vars)
		a, isBool := v.(bool)
		if !ok || !isBool {
			return nil, false
		}
		if a == or {
			return a, true
		}
		v, ok = r(vars)
		b, isBool := v.(bool)
		if !ok || !isBool {
			return nil, false
		}
		return b, true
	}
}

// fastEquals follows CEL's heterogeneous equality for plain values: null
// equals only null, values of different kinds are unequal, NaN equals
// nothing. An int compared with a double is left to CEL.
func fastEquals(l, r fastFn, negate, limited bool) fastFn {
	return func(vars map[string]any) (any, bool) {
		a, b, ok := operands(l, r, vars)
		if !ok {
			return nil, false
		}
		eq, ok := plainEqual(a, b, limited)
		if !ok {
			return nil, false
		}
		return eq != negate, true
	}
}

// plainEqual is CEL's a == b for plain values; ok is false for anything
// else, and for an int and a double.
func plainEqual(a, b any, limited bool) (eq, ok bool) {
	if !isPlain(a) || !isPlain(b) {
		return false, false
	}
	switch x := a.(type) {
	case nil:
		return b == nil, true
	case bool:
		y, same := b.(bool)
		return same && x == y, true
	case string:
		y, same := b.(string)
		if same && limited && min(len(x), len(y)) > maxLimitedString {
			return false, false
		}
		return same && x == y, true
	case int64:
		switch y := b.(type) {
		case int64:
			return x == y, true
		case float64:
			return false, false
		}
		return false, true
	case float64:
		switch y := b.(type) {
		case float64:
			return x == y, true // false for NaN, as in CEL
		case int64:
			return false, false
		}
		return false, true
	}
	return false, false
}

// The ordering operators, as fastCompare passes them to ordered.
const (
	cmpLess = iota
	cmpLessEq
	cmpGreater
	cmpGreaterEq
)

// fastCompare orders two ints, two doubles or two strings. Go's
// comparisons are false whenever a NaN is involved, and so are CEL's.
func fastCompare(name string, l, r fastFn, limited bool) fastFn {
	var op int
	switch name {
	case operators.LessEquals:
		op = cmpLessEq
	case operators.Greater:
		op = cmpGreater
	case operators.GreaterEquals:
		op = cmpGreaterEq
	}
	return func(vars map[string]any) (any, bool) {
		a, b, ok := operands(l, r, vars)
		if !ok {
			return nil, false
		}
		switch x := a.(type) {
		case float64:
			if y, ok := b.(float64); ok {
				return ordered(op, x, y), true
			}
		case int64:
			if y, ok := b.(int64); ok {
				return ordered(op, x, y), true
			}
		case string:
			if y, ok := b.(string); ok && (!limited || min(len(x), len(y)) <= maxLimitedString) {
				return ordered(op, x, y), true
			}
		}
		return nil, false
	}
}

func ordered[T int64 | float64 | string](op int, x, y T) bool {
	switch op {
	case cmpLess:
		return x < y
	case cmpLessEq:
		return x <= y
	case cmpGreater:
		return x > y
	default:
		return x >= y
	}
}

// fastArith computes + - * / % on two ints (CEL reports overflow and
// division by zero, so those go to CEL), on two doubles (IEEE, no %) and
// + on two strings.
func fastArith(name string, l, r fastFn, limited bool) fastFn {
	var intOp func(x, y int64) (int64, bool)
	var floatOp func(x, y float64) float64
	concat := false
	switch name {
	case operators.Add:
		intOp, floatOp, concat = addInt, func(x, y float64) float64 { return x + y }, true
	case operators.Subtract:
		intOp, floatOp = subInt, func(x, y float64) float64 { return x - y }
	case operators.Multiply:
		intOp, floatOp = mulInt, func(x, y float64) float64 { return x * y }
	case operators.Divide:
		intOp, floatOp = divInt, func(x, y float64) float64 { return x / y }
	case operators.Modulo:
		intOp = modInt
	}
	return func(vars map[string]any) (any, bool) {
		a, b, ok := operands(l, r, vars)
		if !ok {
			return nil, false
		}
		switch x := a.(type) {
		case float64:
			if y, ok := b.(float64); ok && floatOp != nil {
				return floatOp(x, y), true
			}
		case int64:
			if y, ok := b.(int64); ok {
				if z, ok := intOp(x, y); ok {
					return z, true
				}
			}
		case string:
			if y, ok := b.(string); ok && concat && (!limited || len(x) <= maxLimitedString && len(y) <= maxLimitedString) {
				return x + y, true
			}
		}
		return nil, false
	}
}

// The int operations fail where CEL reports an error.

func addInt(x, y int64) (int64, bool) {
	if (y > 0 && x > math.MaxInt64-y) || (y < 0 && x < math.MinInt64-y) {
		return 0, false
	}
	return x + y, true
}

func subInt(x, y int64) (int64, bool) {
	if (y < 0 && x > math.MaxInt64+y) || (y > 0 && x < math.MinInt64+y) {
		return 0, false
	}
	return x - y, true
}

func mulInt(x, y int64) (int64, bool) {
	if (x == -1 && y == math.MinInt64) || (y == -1 && x == math.MinInt64) ||
		(x > 0 && y > 0 && x > math.MaxInt64/y) ||
		(x > 0 && y < 0 && y < math.MinInt64/x) ||
		(x < 0 && y > 0 && x < math.MinInt64/y) ||
		(x < 0 && y < 0 && y < math.MaxInt64/x) {
		return 0, false
	}
	return x * y, true
}

func divInt(x, y int64) (int64, bool) {
	if y == 0 || (x == math.MinInt64 && y == -1) {
		return 0, false
	}
	return x / y, true
}

func modInt(x, y int64) (int64, bool) {
	if y == 0 || (x == math.MinInt64 && y == -1) {
		return 0, false
	}
	return x % y, true
}

// fastIndex looks a string key up in a map, as a field selection does:
// row["order id"].
func fastIndex(m, k fastFn) fastFn {
	return func(vars map[string]any) (any, bool) {
		x, ok := m(vars)
		if !ok {
			return nil, false
		}
		mm, ok := x.(map[string]any)
		if !ok {
			return nil, false
		}
		y, ok := k(vars)
		if !ok {
			return nil, false
		}
		key, ok := y.(string)
		if !ok {
			return nil, false
		}
		v, ok := mm[key]
		return v, ok
	}
}

// operands evaluates the two operands of a binary operator.
func operands(l, r fastFn, vars map[string]any) (a, b any, ok bool) {
	if a, ok = l(vars); !ok {
		return nil, nil, false
	}
	if b, ok = r(vars); !ok {
		return nil, nil, false
	}
	return a, b, true
}
