package expr

import (
	"errors"
	"testing"
)

func TestCompileBool(t *testing.T) {
	cases := []struct {
		src string
		ok  bool
	}{
		{`event.type == "a"`, true},
		{`has(event.data.total) && event.data.total > 5`, true},
		{`message.key.startsWith("acct-")`, true},
		{`1 + 2`, false},         // not a bool
		{`event.type ==`, false}, // syntax
		{`unknown.x == 1`, false},
		{`"a"`, false},
	}
	for _, c := range cases {
		_, err := CompileBool(c.src)
		if (err == nil) != c.ok {
			t.Errorf("CompileBool(%q): %v", c.src, err)
		}
	}
}

func TestEvalBool(t *testing.T) {
	vars := func(data map[string]any) map[string]any {
		ev := map[string]any{"type": "order.created", "data": data}
		return map[string]any{"event": ev, "message": ev}
	}
	p, err := CompileBool(`event.type == "order.created" && event.data.total > 5`)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := p.EvalBool(vars(map[string]any{"total": 7})); !ok || err != nil {
		t.Fatalf("match: %v %v", ok, err)
	}
	if ok, err := p.EvalBool(vars(map[string]any{"total": 3})); ok || err != nil {
		t.Fatalf("no match: %v %v", ok, err)
	}
	if _, err := p.EvalBool(vars(map[string]any{})); err == nil {
		t.Fatal("missing field should be an error")
	}
	dyn, _ := CompileBool(`event.data`)
	if _, err := dyn.EvalBool(vars(map[string]any{"x": 1})); !errors.Is(err, ErrNotBool) {
		t.Fatalf("non-bool result: %v", err)
	}
}
