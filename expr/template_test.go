package expr

import (
	"errors"
	"reflect"
	"testing"
)

func TestTemplate(t *testing.T) {
	vars := map[string]any{"input": map[string]any{"id": 42.0, "items": []any{"a", "b"}, "name": "ada"}}
	for _, tc := range []struct {
		src  string
		want any
	}{
		{"plain text", "plain text"},
		{"", ""},
		{"{{ input.items }}", []any{"a", "b"}},
		{"{{input.id}}", 42.0},
		{"/orders/{{ int(input.id) }}/items", "/orders/42/items"},
		{"{{ input.name }}-{{ input.name }}", "ada-ada"},
		{`{{ {"order": input.id} }}`, map[string]any{"order": 42.0}},
	} {
		tpl, err := CompileTemplate(tc.src)
		if err != nil {
			t.Fatalf("%q: %v", tc.src, err)
		}
		got, err := tpl.Eval(vars)
		if err != nil {
			t.Fatalf("%q: %v", tc.src, err)
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%q = %#v, want %#v", tc.src, got, tc.want)
		}
	}
	for _, bad := range []string{"{{ input.id", "a }} b", "{{ }}", "{{ input. }}", "}} {{ x }}"} {
		if _, err := CompileTemplate(bad); err == nil {
			t.Errorf("%q compiled", bad)
		} else if !errors.Is(err, ErrTemplate) && bad != "{{ input. }}" {
			t.Errorf("%q: %v is not ErrTemplate", bad, err)
		}
	}
}

// FuzzTemplate parses arbitrary text: no panic, and a template without
// {{ and }} renders as itself.
func FuzzTemplate(f *testing.F) {
	for _, s := range []string{"", "x", "{{ 1 }}", "a{{b}}c", "{{", "}}", "{{ {'a': 1} }}", "{{}}{{}}"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tpl, err := CompileTemplate(s)
		if err != nil {
			return
		}
		out, err := tpl.Eval(map[string]any{"input": map[string]any{}})
		if len(tpl.Programs()) == 0 && (err != nil || out != s) {
			t.Fatalf("%q rendered as %v, %v", s, out, err)
		}
	})
}
