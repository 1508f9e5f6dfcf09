package expr

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"
)

// withoutFast returns p evaluating through CEL only.
func withoutFast(p *Program) *Program {
	q := *p
	q.fast = nil
	return &q
}

// sameValue is reflect.DeepEqual, except that NaN equals NaN and -0.0
// differs from 0.0, also inside maps and lists.
func sameValue(a, b any) bool {
	switch x := a.(type) {
	case float64:
		y, ok := b.(float64)
		if !ok {
			return false
		}
		if math.IsNaN(x) || math.IsNaN(y) {
			return math.IsNaN(x) && math.IsNaN(y)
		}
		return x == y && math.Signbit(x) == math.Signbit(y)
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, v := range x {
			w, ok := y[k]
			if !ok || !sameValue(v, w) {
				return false
			}
		}
		return true
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !sameValue(x[i], y[i]) {
				return false
			}
		}
		return true
	}
	return reflect.DeepEqual(a, b)
}

// checkSame evaluates p with and without the fast path through every
// method and reports any difference in value or error. It returns whether
// the fast path produced the result.
func checkSame(t *testing.T, p *Program, vars map[string]any) bool {
	t.Helper()
	slow := withoutFast(p)
	desc := func() string { return fmt.Sprintf("%s with %#v", p.src, vars) }

	fv, fast := any(nil), false
	if p.fast != nil {
		fv, fast = p.fast(vars)
	}
	want, werr := slow.Eval(vars)
	if fast {
		if werr != nil {
			t.Errorf("%s: fast path yields %#v, CEL fails: %v", desc(), fv, werr)
		} else if !sameValue(fv, want) {
			t.Errorf("%s: fast path yields %#v (%T), CEL %#v (%T)", desc(), fv, fv, want, want)
		}
	}

	got, gerr := p.Eval(vars)
	if !sameValue(got, want) || fmt.Sprint(gerr) != fmt.Sprint(werr) {
		t.Errorf("%s: Eval = %#v, %v; CEL %#v, %v", desc(), got, gerr, want, werr)
	}
	gb, gerr := p.EvalBool(vars)
	wb, werr := slow.EvalBool(vars)
	if gb != wb || fmt.Sprint(gerr) != fmt.Sprint(werr) {
		t.Errorf("%s: EvalBool = %v, %v; CEL %v, %v", desc(), gb, gerr, wb, werr)
	}
	if !isPlain(want) {
		return fast // CEL renders maps in no fixed order
	}
	gs, gerr := p.EvalString(vars)
	ws, werr := slow.EvalString(vars)
	if gs != ws || fmt.Sprint(gerr) != fmt.Sprint(werr) {
		t.Errorf("%s: EvalString = %q, %v; CEL %q, %v", desc(), gs, gerr, ws, werr)
	}
	return fast
}

// missing marks a key left out of a variable map.
type missingKey struct{}

var missing = missingKey{}

// fieldValues are the values the table test puts in row.x and row.y: the
// plain ones the fast path handles and others it must leave to CEL.
var fieldValues = []any{
	missing, nil, true, false,
	int64(0), int64(1), int64(-1), int64(7), int64(math.MaxInt64), int64(math.MinInt64),
	0.0, math.Copysign(0, -1), 0.1, 1.5, 12.5, -3.0, 1e21, 1e-7, 123456789.0, math.NaN(), math.Inf(1), math.Inf(-1),
	"", "paid", "a", "b", "x",
	int(3), int32(3), float32(1.5), uint64(3), uint(3),
	[]any{int64(1)}, map[string]any{"y": 1.0, "x": "a"}, map[string]string{"y": "s"}, map[string]any{},
	time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), json.Number("1"), []byte("x"),
	func() any { return int64(1) },
}

// mapFields is a row in Fields form, as a pipeline's CSV records are.
type mapFields map[string]any

func (m mapFields) Field(name string) (any, bool) { v, ok := m[name]; return v, ok }
func (m mapFields) Map() map[string]any           { return m }

func rowVars(x, y any) map[string]any {
	row := map[string]any{"k": "x", "kk": "y"}
	if x != missing {
		row["x"] = x
	}
	if y != missing {
		row["y"] = y
	}
	return map[string]any{"row": row, "event": map[string]any{"data": map[string]any{"total": x}}}
}

func TestFastPathMatchesCEL(t *testing.T) {
	// Whether an expression has a fast path, and whether that path can
	// answer at all (a constant error never can).
	const (
		none = iota
		fast
		fastNever
	)
	cases := []struct {
		src  string
		want int
	}{
		{`row.x`, fast},
		{`row.y`, fast},
		{`row`, fast},
		{`row.x.y`, fast},
		{`event.data.total`, fast},
		{`row["x"]`, fast},
		{`row[row.k]`, fast},
		{`row[row.x]`, fast},
		{`row.x[row.kk]`, fast},
		{`row.x > 0.0`, fast},
		{`row.x > 0`, fast},
		{`row.x >= row.y`, fast},
		{`row.x < row.y`, fast},
		{`row.x <= row.y`, fast},
		{`row.x > row.y`, fast},
		{`row.x == row.y`, fast},
		{`row.x != row.y`, fast},
		{`row.x == null`, fast},
		{`row.x != null`, fast},
		{`row.x == "paid"`, fast},
		{`row.x == 1`, fast},
		{`row.x == 1.0`, fast},
		{`row.x == true`, fast},
		{`row.x + row.y`, fast},
		{`row.x - row.y`, fast},
		{`row.x * row.y`, fast},
		{`row.x / row.y`, fast},
		{`row.x % row.y`, fast},
		{`row.x * 0.92`, fast},
		{`row.x + 1`, fast},
		{`row.x + "-" + row.y`, fast},
		{`-row.x`, fast},
		{`!row.x`, fast},
		{`row.x && row.y`, fast},
		{`row.x || row.y`, fast},
		{`row.x ? row.y : "no"`, fast},
		{`(row.x == row.y ? row : event).x`, fast},
		{`row.x == "paid" && row.y >= 10.0`, fast},
		{`row.x > 0 || row.y > 0.0`, fast},
		{`row.x * 0.92 + row.y * 0.08`, fast},
		{`row.x / 2 + row.x % 2`, fast},
		{`1 + 2`, fast},
		{`null`, fast},
		{`-(-9223372036854775807 - 1)`, fastNever},
		{`9223372036854775807 + 1`, fastNever},
		{`1 / 0`, fastNever},
		{`1.0 / 0.0`, fast},
		{`0.0 / 0.0`, fast},
		{`-0.0`, fast},
		{`"a" < "b"`, fast},
		// Outside the subset: the whole expression goes to CEL.
		{`size(row.x)`, none},
		{`row.x.startsWith("a")`, none},
		{`has(row.x)`, none},
		{`row.?x.orValue(0)`, none},
		{`[row.x, row.y]`, none},
		{`{"a": row.x}`, none},
		{`row.x in [1, 2]`, none},
		{`2u`, none},
		{`b"x"`, none},
		{`int(row.x)`, none},
		{`row.x.all(v, v > 0)`, none},
	}
	for _, c := range cases {
		p, err := Compile(c.src)
		if err != nil {
			t.Fatalf("%s: %v", c.src, err)
		}
		if (p.fast != nil) != (c.want != none) {
			t.Errorf("%s: fast path present = %v", c.src, p.fast != nil)
			continue
		}
		hits := 0
		for _, x := range fieldValues {
			for _, y := range fieldValues {
				if checkSame(t, p, rowVars(x, y)) {
					hits++
				}
				// The same row in Fields form: the same answers.
				vars := rowVars(x, y)
				vars["row"] = mapFields(vars["row"].(map[string]any))
				checkSame(t, p, vars)
			}
		}
		for _, vars := range []map[string]any{nil, {}, {"row": nil}, {"row": map[string]string{"x": "a"}}, {"row": map[string]any{}}} {
			if checkSame(t, p, vars) {
				hits++
			}
		}
		if c.want == fast && hits == 0 {
			t.Errorf("%s: the fast path never produced a result", c.src)
		}
	}
}

// TestFastPathTaken: the shapes pipelines use are evaluated without CEL.
func TestFastPathTaken(t *testing.T) {
	row := map[string]any{"amount": 12.5, "sku": "A-1", "key": "k", "ts": "2026-01-02T03:04:05Z", "status": "paid", "a": int64(2), "b": int64(3), "n": nil}
	vars := map[string]any{"row": row, "event": map[string]any{"data": map[string]any{"total": 7.5}}}
	for _, c := range []struct {
		src  string
		want any
	}{
		{`row.amount > 0.0`, true},
		{`row.amount * 0.92`, 12.5 * 0.92},
		{`row.sku`, "A-1"},
		{`row.key`, "k"},
		{`row.ts`, "2026-01-02T03:04:05Z"},
		{`event.data.total`, 7.5},
		{`row.a + row.b`, int64(5)},
		{`row.status == "paid" && row.amount >= 10.0`, true},
		{`row.n == null`, true},
		{`row.n`, nil},
		{`row["sku"]`, "A-1"},
	} {
		p, err := Compile(c.src)
		if err != nil {
			t.Fatal(err)
		}
		if p.fast == nil {
			t.Errorf("%s: no fast path", c.src)
			continue
		}
		got, ok := p.fast(vars)
		if !ok || !sameValue(got, c.want) {
			t.Errorf("%s: fast path = %#v, %v; want %#v", c.src, got, ok, c.want)
		}
		checkSame(t, p, vars)
		if strings.Contains(c.src, "[") {
			continue // an index of a Fields value is left to CEL
		}
		fv := map[string]any{"row": mapFields(row), "event": vars["event"]}
		if got, ok := p.fast(fv); !ok || !sameValue(got, c.want) {
			t.Errorf("%s on Fields: fast path = %#v, %v; want %#v", c.src, got, ok, c.want)
		}
		checkSame(t, p, fv)
	}
}

// TestFastPathCostLimit: CEL charges some string operations by length, so
// in a program with a cost limit long strings must stay CEL's to refuse.
func TestFastPathCostLimit(t *testing.T) {
	long := strings.Repeat("x", 6_000_000)
	longer := strings.Repeat("y", 12_000_000)
	for _, c := range []struct {
		src     string
		x, y    string
		refused bool // CEL stops it at the limit
	}{
		{`row.x + "z"`, longer, "", true},
		{`row.x == row.y`, longer, longer + "z", true},
		{`row.x + row.y`, long, long, false},
		{`row.x < row.y`, longer, longer, false},
	} {
		p, err := Compile(c.src)
		if err != nil {
			t.Fatal(err)
		}
		if p.fast == nil {
			t.Fatalf("%s: no fast path", c.src)
		}
		vars := rowVars(c.x, c.y)
		if checkSame(t, p, vars) {
			t.Errorf("%s: the fast path took operands longer than its bound", c.src)
		}
		if _, err := p.Eval(vars); c.refused && (err == nil || !strings.Contains(err.Error(), "cost")) {
			t.Errorf("%s: %v, want the cost limit", c.src, err)
		}
		if !checkSame(t, p, rowVars("a", "b")) {
			t.Errorf("%s: short strings not on the fast path", c.src)
		}
	}
}

// TestFastPathRandom checks random expressions built from the subset the
// fast path covers (and a little beyond) against CEL, on rows with edge
// values.
func TestFastPathRandom(t *testing.T) {
	atoms := []string{
		`row.a`, `row.a2`, `row.b`, `row.b2`, `row.c`, `row.c2`, `row.d`, `row.z`, `row.i`, `row.f`,
		`row.m.a`, `row.m.c`, `row["c"]`, `row[row.c]`, `row.missing`, `row.m`, `event.data.b`, `row`,
		`0`, `1`, `-1`, `7`, `9223372036854775807`, `-9223372036854775808`,
		`0.0`, `-0.0`, `1.5`, `0.92`, `1e308`, `""`, `"a"`, `"paid"`, `true`, `false`, `null`,
	}
	binary := []string{"+", "-", "*", "/", "%", "==", "!=", "<", "<=", ">", ">=", "&&", "||"}
	rng := rand.New(rand.NewPCG(1, 2))
	var gen func(depth int) string
	gen = func(depth int) string {
		if depth == 0 || rng.IntN(4) == 0 {
			return atoms[rng.IntN(len(atoms))]
		}
		switch rng.IntN(10) {
		case 0:
			return "-" + gen(depth-1)
		case 1:
			return "!" + gen(depth-1)
		case 2:
			return "(" + gen(depth-1) + " ? " + gen(depth-1) + " : " + gen(depth-1) + ")"
		}
		return "(" + gen(depth-1) + " " + binary[rng.IntN(len(binary))] + " " + gen(depth-1) + ")"
	}
	rows := []map[string]any{
		{"a": int64(3), "a2": int64(2), "b": 12.5, "b2": 0.92, "c": "paid", "c2": "a", "d": true},
		{"a": int64(math.MaxInt64), "a2": int64(-1), "b": math.NaN(), "b2": math.Copysign(0, -1), "c": "", "c2": "c", "d": false},
		{"a": int64(math.MinInt64), "a2": int64(0), "b": math.Inf(1), "b2": 0.0, "c": "a", "c2": "a", "d": true},
		{"a": int64(-7), "a2": int64(-7), "b": 1e21, "b2": 1e21, "c": "z", "c2": "", "d": false},
	}
	compiled, hits := 0, 0
	for range 4000 {
		src := gen(4)
		p, err := Compile(src)
		if err != nil || p.fast == nil {
			continue
		}
		compiled++
		for _, r := range rows {
			row := maps.Clone(r)
			row["z"], row["i"], row["f"] = nil, int(row["a"].(int64)), float32(row["b"].(float64))
			row["m"] = map[string]any{"a": row["a"], "c": row["c"]}
			if checkSame(t, p, map[string]any{"row": row, "event": map[string]any{"data": row}}) {
				hits++
			}
		}
	}
	t.Logf("%d expressions on the fast path, %d evaluations answered by it", compiled, hits)
	// Most random expressions fail on some row (overflow, a missing key,
	// mixed numbers), but far from all of them.
	if hits < compiled {
		t.Errorf("the fast path answered only %d of %d evaluations", hits, len(rows)*compiled)
	}
}

// FuzzFastPath compiles arbitrary expressions over a row of scalar fields
// and checks that whenever the fast path answers, CEL gives the same.
func FuzzFastPath(f *testing.F) {
	f.Add(`row.a + row.a2`, int64(1), int64(2), 1.5, 2.5, "a", "b", true)
	f.Add(`row.b > 0.0 && row.c == "paid"`, int64(0), int64(0), 12.5, 0.0, "paid", "", false)
	f.Add(`row.a * row.a2 - row.i`, int64(math.MaxInt64), int64(-1), 0.0, 0.0, "", "", false)
	f.Add(`row.m.c + row.c2`, int64(0), int64(0), math.NaN(), math.Inf(1), "x", "y", true)
	f.Add(`row.d ? row.b / row.b2 : -row.a`, int64(math.MinInt64), int64(0), 1.0, 0.0, "", "", true)
	f.Add(`row.z == null || row.a % row.a2 != 0`, int64(7), int64(0), -0.0, 1e21, "", "", false)
	f.Fuzz(func(t *testing.T, src string, a, a2 int64, b, b2 float64, c, c2 string, d bool) {
		p, err := Compile(src)
		if err != nil || p.fast == nil {
			return
		}
		m := map[string]any{"a": a, "b": b, "c": c}
		row := map[string]any{"a": a, "a2": a2, "b": b, "b2": b2, "c": c, "c2": c2, "d": d, "z": nil, "i": int(a), "f": float32(b), "m": m}
		vars := map[string]any{"row": row, "event": map[string]any{"data": m}}
		checkSame(t, p, vars)
	})
}

// BenchmarkEval compares the fast path with CEL on the per-record shapes
// of filters and mappings.
func BenchmarkEval(b *testing.B) {
	vars := map[string]any{"row": map[string]any{"amount": 12.5, "sku": "A-1", "qty": int64(3)}}
	for _, c := range []struct {
		name, src string
		boolean   bool
	}{
		{"filter", `row.amount > 0.0`, true},
		{"map", `row.amount * 0.92`, false},
		{"select", `row.sku`, false},
	} {
		p, err := Compile(c.src)
		if err != nil {
			b.Fatal(err)
		}
		if p.fast == nil {
			b.Fatalf("%s: no fast path", c.src)
		}
		for _, mode := range []struct {
			name string
			p    *Program
		}{{"fast", p}, {"cel", withoutFast(p)}} {
			b.Run(c.name+"/"+mode.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					var err error
					if c.boolean {
						_, err = mode.p.EvalBool(vars)
					} else {
						_, err = mode.p.Eval(vars)
					}
					if err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
