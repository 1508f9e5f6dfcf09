package pipeline

import (
	"maps"
	"testing"
)

// TestRowMatchesMap: a record in row form answers each field as the map
// it becomes does, short lines and repeated column names included.
func TestRowMatchesMap(t *testing.T) {
	for _, tt := range []struct {
		name  string
		names []string
		vals  []any
	}{
		{"full", []string{"a", "b", "c"}, []any{"x", 1.5, nil}},
		{"short", []string{"a", "b", "c"}, []any{"x"}},
		{"empty", []string{"a"}, []any{}},
		{"repeated name", []string{"a", "b", "a"}, []any{1, 2, 3}},
		{"repeated name, short", []string{"a", "b", "a"}, []any{1, 2}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := &Record{row: row{cols: newColumns(tt.names), vals: tt.vals}}
			got := map[string]any{}
			for _, n := range append(tt.names, "missing") {
				if v, ok := r.row.Field(n); ok {
					got[n] = v
				}
				if v, want := r.Value(n), r.row.Map()[n]; v != want {
					t.Errorf("Value(%s) = %v, want %v", n, v, want)
				}
			}
			m := r.Map()
			if !maps.Equal(got, m) {
				t.Errorf("fields %v, map %v", got, m)
			}
			if r.row.cols != nil || r.vars() == nil {
				t.Errorf("after Map the record is still in row form")
			}
		})
	}
}
