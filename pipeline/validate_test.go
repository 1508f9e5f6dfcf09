package pipeline

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestValidate(t *testing.T) {
	// As YAML decodes a schema: maps of strings to values.
	schema := map[string]any{
		"type":     "object",
		"required": []any{"id", "amount"},
		"properties": map[string]any{
			"id":     map[string]any{"type": "string", "minLength": 1},
			"amount": map[string]any{"type": "number", "minimum": 0},
			"count":  map[string]any{"type": "integer"},
			"at":     map[string]any{"type": "string", "format": "date-time"},
			"items":  map[string]any{"type": "array", "items": map[string]any{"type": "object", "required": []any{"sku"}}},
		},
	}
	p, err := newValidator(schema)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		fields map[string]any
		want   []string // the reasons; none: the record passes
	}{
		{"valid", map[string]any{"id": "a", "amount": 2.5}, nil},
		{"integers and timestamps are checked as JSON", map[string]any{"id": "a", "amount": int64(3), "count": int64(4), "at": time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)}, nil},
		{"a double that is whole is an integer", map[string]any{"id": "a", "amount": 1.0, "count": 4.0}, nil},
		{"missing field", map[string]any{"id": "a"}, []string{"at '/': missing property 'amount'"}},
		{"wrong type", map[string]any{"id": "a", "amount": "5"}, []string{"at '/amount': got string, want number"}},
		{"below the minimum", map[string]any{"id": "a", "amount": -1.0}, []string{"at '/amount': minimum: got -1, want 0"}},
		{"every reason, nested", map[string]any{"id": "", "amount": 1.0, "count": 1.5, "items": []any{map[string]any{"sku": "x"}, map[string]any{}}},
			[]string{"at '/id': minLength: got 0, want 1", "at '/count': got number, want integer", "at '/items/1': missing property 'sku'"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := p.Process(context.Background(), &Record{Fields: tt.fields})
			if tt.want == nil {
				if err != nil || len(out) != 1 {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrRecord) {
				t.Fatalf("error %v, want a record error", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans lines: %q", err)
			}
		})
	}
}

func TestValidateSchemaErrors(t *testing.T) {
	for _, s := range []any{
		map[string]any{"type": "objekt"},
		map[string]any{"minimum": "zero"},
		map[string]any{"$ref": "#/nowhere"},
	} {
		if _, err := newValidator(s); err == nil || !strings.Contains(err.Error(), "not a valid JSON Schema") {
			t.Errorf("%v: error %v", s, err)
		}
	}
	// A boolean schema is a schema.
	if _, err := newValidator(true); err != nil {
		t.Error(err)
	}
}
