package projection_test

import (
	"context"
	"errors"
	"net/url"
	"testing"

	"github.com/junctionhq/junction/internal/problem"
	"github.com/junctionhq/junction/projection"
)

// FuzzViewQuery feeds arbitrary query strings to the views API's parser
// and query builder over a real SQLite view. Whatever the input, the
// answer is rows or a validation error: a database error would mean
// request text reached the SQL.
func FuzzViewQuery(f *testing.F) {
	for _, s := range []string{
		"", "status=paid", "order=-total&limit=2", "customer=c1&order=placed_at", "limit=0", "total=1e308",
		"paid=true&items=3", "order=lines", "cursor=eyJvIjoiIiwiayI6Im9yZGVyLTAwMDEifQ", "placed_at=2026-01-02T03:04:05Z",
		"order=-total&cursor=eyJvIjoiLXRvdGFsIiwidiI6IngiLCJrIjoxfQ", "id=%27%3B+DROP+TABLE+order_summary%3B--",
	} {
		f.Add(s)
	}
	store := newStore(f)
	db, open := newDB(f, "sqlite")
	m := start(f, store, db, open, ordersConfig(f))
	_, last := placeOrders(f, store, 0, 30)
	waitFor(f, m, "order_summary", last)
	view, _ := m.Get("order_summary")
	f.Fuzz(func(t *testing.T, raw string) {
		values, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		qr, err := projection.ParseQuery(values)
		if err != nil {
			var p *problem.Problem
			if !errors.As(err, &p) || p.Code != problem.CodeValidation {
				t.Fatalf("ParseQuery(%q) = %v, want a validation problem", raw, err)
			}
			return
		}
		page, err := view.List(context.Background(), qr)
		if err != nil && !errors.Is(err, projection.ErrInvalid) {
			t.Fatalf("List(%q) = %v, want rows or ErrInvalid", raw, err)
		}
		if err == nil && len(page.Rows) > projection.MaxLimit {
			t.Fatalf("List(%q) returned %d rows", raw, len(page.Rows))
		}
	})
}
