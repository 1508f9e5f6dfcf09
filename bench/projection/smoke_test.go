package projbench

import (
	"context"
	"fmt"
	"testing"

	"github.com/junctionhq/junction/internal/testutil"
	"github.com/junctionhq/junction/projection"
)

// TestSmoke runs both measured paths once at a small size and checks that
// the projection and the hand-written program produce the same rows; it
// asserts correctness only, never speed.
func TestSmoke(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	const n = 3 * Batch
	last, err := Fill(ctx, s, n)
	if err != nil {
		t.Fatal(err)
	}
	for _, dbKind := range []string{"sqlite", "postgres"} {
		if dbKind == "postgres" {
			testutil.RequireService(t, "PostgreSQL", PostgresAddr)
		}
		for _, kind := range []string{"set", "counter"} {
			t.Run(dbKind+"/"+kind, func(t *testing.T) {
				db, drop, err := OpenDB(ctx, dbKind, t.TempDir())
				if err != nil {
					t.Fatal(err)
				}
				defer drop()
				m := project(ctx, t, s, db, kind, "v_"+kind, last)
				defer m.Close()
				if got, err := HandWritten(ctx, s, db, kind, "h_"+kind); err != nil || got != n {
					t.Fatalf("hand-written applied %d of %d: %v", got, n, err)
				}
				p, _ := m.Get("v_" + kind)
				page, err := p.List(ctx, projection.Query{Limit: 1000})
				if err != nil {
					t.Fatal(err)
				}
				rows := map[string]string{}
				for _, r := range page.Rows {
					rows[r["id"].(string)] = fmt.Sprint(r["n"], "/", r["sum"])
				}
				hrows, err := db.QueryContext(ctx, "SELECT id, n, sum FROM h_"+kind)
				if err != nil {
					t.Fatal(err)
				}
				defer hrows.Close()
				count := 0
				for hrows.Next() {
					var id string
					var c int64
					var sum float64
					if err := hrows.Scan(&id, &c, &sum); err != nil {
						t.Fatal(err)
					}
					if want := fmt.Sprint(c, "/", sum); rows[id] != want {
						t.Errorf("%s: projection %s, hand-written %s", id, rows[id], want)
					}
					count++
				}
				if count != len(rows) || count == 0 {
					t.Errorf("projection has %d rows, hand-written %d", len(rows), count)
				}
			})
		}
	}
}
