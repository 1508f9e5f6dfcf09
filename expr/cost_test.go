package expr

import (
	"strings"
	"testing"
)

// TestCostLimit: an expression whose work is bounded by its size runs
// without cost tracking; one that could run away is still stopped.
func TestCostLimit(t *testing.T) {
	cheap, err := Compile("row.amount * 0.92 + 1.0")
	if err != nil {
		t.Fatal(err)
	}
	if v, err := cheap.Eval(map[string]any{"row": map[string]any{"amount": 100.0}}); err != nil || v != 93.0 {
		t.Fatalf("cheap: %v %v", v, err)
	}
	// Nested comprehensions over a list of unknown size: tracked, and a
	// large enough list exceeds the limit.
	heavy, err := Compile("input.xs.all(a, input.xs.all(b, input.xs.all(c, a + b + c >= 0)))")
	if err != nil {
		t.Fatal(err)
	}
	xs := make([]any, 200)
	for i := range xs {
		xs[i] = int64(i)
	}
	_, err = heavy.Eval(map[string]any{"input": map[string]any{"xs": xs}})
	if err == nil || !strings.Contains(err.Error(), "cost") {
		t.Fatalf("a runaway expression was not stopped: %v", err)
	}

}
