package expr

import (
	"errors"
	"reflect"
	"testing"
	"time"
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

func TestEvalNative(t *testing.T) {
	ts := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	vars := map[string]any{"event": map[string]any{"data": map[string]any{"total": 12.5, "items": []any{"a", "b"}}, "time": ts}, "row": map[string]any{}}
	for _, tc := range []struct {
		src  string
		want any
	}{
		{`null`, nil},
		{`true`, true},
		{`1 + 2`, int64(3)},
		{`2u`, uint64(2)},
		{`event.data.total * 2.0`, 25.0},
		{`"x" + "y"`, "xy"},
		{`b"ab"`, []byte("ab")},
		{`event.time`, ts},
		{`duration("1s")`, time.Second},
		{`event.data.items`, []any{"a", "b"}},
		{`{"n": 1, "l": [true, null]}`, map[string]any{"n": int64(1), "l": []any{true, nil}}},
		{`{1: "one"}`, map[string]any{"1": "one"}},
		{`row.?total.orValue(0.0) + 1.0`, 1.0},
	} {
		p, err := Compile(tc.src)
		if err != nil {
			t.Fatalf("%s: %v", tc.src, err)
		}
		got, err := p.Eval(vars)
		if err != nil {
			t.Fatalf("%s: %v", tc.src, err)
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s = %#v, want %#v", tc.src, got, tc.want)
		}
	}
	p, _ := Compile(`event.data.missing`)
	if _, err := p.Eval(vars); err == nil {
		t.Error("a missing key evaluated without error")
	}
}
