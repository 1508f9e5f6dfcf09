package projection_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/eventstore"
	esjetstream "github.com/junctionhq/junction/eventstore/jetstream"
	"github.com/junctionhq/junction/internal/natsembed"
	"github.com/junctionhq/junction/internal/sqldb"
	"github.com/junctionhq/junction/internal/testutil"
	"github.com/junctionhq/junction/projection"
)

const pgAddr = "127.0.0.1:5432"

var schemaSeq atomic.Int64

// newStore is an event store on an embedded JetStream in a temp dir.
func newStore(t testing.TB) eventstore.Store {
	t.Helper()
	ctx := context.Background()
	c, err := natsembed.Start(ctx, natsembed.Options{DataDir: t.TempDir(), Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	s, err := esjetstream.Open(ctx, c.JS, "pt")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// dbs are the two view databases every behaviour is checked on.
var dbs = []string{"sqlite", "postgres"}

// newDB opens a view database: SQLite in a temp dir, or a fresh schema of
// the machine's PostgreSQL (dropped afterwards).
func newDB(t testing.TB, kind string) (*sqldb.DB, func(ctx context.Context, dsn string) (*sqldb.DB, error)) {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	open := func(ctx context.Context, dsn string) (*sqldb.DB, error) { return sqldb.Open(ctx, dsn, dir) }
	if kind == "sqlite" {
		db, err := sqldb.Open(ctx, "", dir)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db, open
	}
	testutil.RequireService(t, "PostgreSQL", pgAddr)
	schema := fmt.Sprintf("views_%d_%d", os.Getpid(), schemaSeq.Add(1))
	admin, err := sqldb.Open(ctx, "postgres://postgres@"+pgAddr+"/test?sslmode=disable", dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		admin.ExecContext(context.Background(), "DROP SCHEMA "+schema+" CASCADE")
		admin.Close()
	})
	db, err := sqldb.Open(ctx, "postgres://postgres@"+pgAddr+"/test?sslmode=disable&search_path="+schema, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db, open
}

// ordersConfig is the order-summary projection the docs describe.
func ordersConfig(t testing.TB) map[string]*config.Projection {
	t.Helper()
	yaml := `
projections:
  order_summary:
    from: { categories: [order] }
    table:
      columns: { id: text, customer: text, status: text, total: real, items: integer, placed_at: timestamp, lines: json, paid: boolean, payments: integer }
      key: id
      indexes: [status, customer]
    handlers:
      OrderPlaced:
        upsert:
          id: event.stream
          customer: event.data.customer
          status: "'placed'"
          total: double(event.data.total)
          items: size(event.data.lines)
          lines: event.data.lines
          placed_at: event.time
          paid: "false"
      OrderPaid:
        update:
          id: event.stream
          status: "'paid'"
          paid: "true"
          payments: row.?payments.orValue(0) + 1
      OrderCancelled: { delete: { id: event.stream } }
    batch_size: 50
`
	cfg, err := config.Parse("test.yaml", []byte(yaml), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Projections
}

func start(t testing.TB, store eventstore.Store, db *sqldb.DB, open func(context.Context, string) (*sqldb.DB, error), ps map[string]*config.Projection) *projection.Manager {
	t.Helper()
	m, err := projection.New(context.Background(), projection.Options{Store: store, Projections: ps, DB: db, Open: open, Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	m.Start(context.Background())
	t.Cleanup(m.Close)
	return m
}

func appendEv(t testing.TB, s eventstore.Store, stream, typ string, data any) eventstore.AppendResult {
	t.Helper()
	b, _ := json.Marshal(data)
	r, err := s.Append(context.Background(), stream, eventstore.Any, []eventstore.EventData{{Type: typ, Data: b}})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func waitFor(t testing.TB, m *projection.Manager, name string, pos uint64) {
	t.Helper()
	p, err := m.Get(name)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := p.WaitFor(ctx, pos); err != nil {
		t.Fatalf("waiting for position %d: %v (status %+v)", pos, err, p.Status(context.Background()))
	}
}

// order is what the test expects a row to hold.
type order struct {
	customer string
	total    float64
	items    int
	paid     bool
	payments int
}

// placeOrders appends n orders (every third paid twice, every fifth
// cancelled) and returns what the view must then hold and the last
// position.
func placeOrders(t testing.TB, s eventstore.Store, from, n int) (map[string]*order, uint64) {
	t.Helper()
	want := map[string]*order{}
	var last uint64
	for i := from; i < from+n; i++ {
		id := fmt.Sprintf("order-%04d", i)
		o := &order{customer: fmt.Sprintf("c%d", i%7), total: float64(i) + 0.5, items: 1 + i%3}
		lines := make([]map[string]any, o.items)
		for j := range lines {
			lines[j] = map[string]any{"sku": fmt.Sprintf("sku-%d", j), "qty": j + 1}
		}
		last = appendEv(t, s, id, "OrderPlaced", map[string]any{"customer": o.customer, "total": o.total, "lines": lines}).Position
		appendEv(t, s, fmt.Sprintf("stock-%d", i), "StockReserved", map[string]any{"sku": "x"}) // another category
		if i%3 == 0 {
			appendEv(t, s, id, "OrderPaid", map[string]any{})
			last = appendEv(t, s, id, "OrderPaid", map[string]any{}).Position
			o.paid, o.payments = true, 2
		}
		if i%5 == 0 {
			last = appendEv(t, s, id, "OrderCancelled", map[string]any{}).Position
			continue
		}
		want[id] = o
	}
	return want, last
}

// allRows reads every page of q.
func allRows(t testing.TB, p *projection.Projection, q projection.Query) []map[string]any {
	t.Helper()
	var all []map[string]any
	for pages := 0; ; pages++ {
		page, err := p.List(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, page.Rows...)
		if q.Cursor = page.Next; q.Cursor == "" {
			return all
		}
		if pages > 10000 {
			t.Fatal("pagination does not end")
		}
	}
}

func checkRows(t *testing.T, p *projection.Projection, want map[string]*order) {
	t.Helper()
	all := allRows(t, p, projection.Query{Limit: 7})
	if len(all) != len(want) {
		t.Fatalf("view has %d rows, want %d", len(all), len(want))
	}
	for i, r := range all {
		id := r["id"].(string)
		if i > 0 && all[i-1]["id"].(string) >= id {
			t.Fatalf("rows out of key order at %d: %v then %v", i, all[i-1]["id"], id)
		}
		o := want[id]
		if o == nil {
			t.Fatalf("unexpected row %v", r)
		}
		payments, _ := r["payments"].(int64)
		if r["customer"] != o.customer || r["total"] != o.total || r["items"] != int64(o.items) || r["paid"] != o.paid || payments != int64(o.payments) {
			t.Errorf("row %s = %v, want %+v", id, r, *o)
		}
		if lines, ok := r["lines"].([]any); !ok || len(lines) != o.items {
			t.Errorf("row %s lines = %#v", id, r["lines"])
		}
		if _, err := time.Parse(time.RFC3339Nano, r["placed_at"].(string)); err != nil {
			t.Errorf("row %s placed_at: %v", id, err)
		}
	}
}

func TestOrdersView(t *testing.T) {
	for _, kind := range dbs {
		t.Run(kind, func(t *testing.T) {
			store := newStore(t)
			db, open := newDB(t, kind)
			m := start(t, store, db, open, ordersConfig(t))
			want, last := placeOrders(t, store, 0, 60)
			waitFor(t, m, "order_summary", last)
			p, _ := m.Get("order_summary")
			checkRows(t, p, want)

			row, err := p.Get(context.Background(), "order-0003")
			if err != nil {
				t.Fatal(err)
			}
			if row["status"] != "paid" || row["payments"] != int64(2) {
				t.Errorf("order-0003 = %v", row)
			}
			if _, err := p.Get(context.Background(), "order-0005"); !errors.Is(err, projection.ErrRowNotFound) {
				t.Errorf("cancelled order: err = %v, want ErrRowNotFound", err)
			}

			// Filters and a descending order on a non-key column, paged.
			var got []float64
			for _, r := range allRows(t, p, projection.Query{Filters: map[string]string{"status": "paid", "customer": "c3"}, Order: "-total", Limit: 2}) {
				got = append(got, r["total"].(float64))
			}
			var exp []float64
			for _, o := range want {
				if o.paid && o.customer == "c3" {
					exp = append(exp, o.total)
				}
			}
			sort.Sort(sort.Reverse(sort.Float64Slice(exp)))
			if fmt.Sprint(got) != fmt.Sprint(exp) {
				t.Errorf("paid orders of c3 by -total = %v, want %v", got, exp)
			}
			st := p.Status(context.Background())
			if st.State != projection.StateRunning || st.LagSeconds != 0 || st.Position < last {
				t.Errorf("status = %+v", st)
			}
		})
	}
}

// Rows whose order column is null come last in both directions, and
// paging across them neither repeats nor drops a row.
func TestOrderNulls(t *testing.T) {
	for _, kind := range dbs {
		t.Run(kind, func(t *testing.T) {
			store := newStore(t)
			db, open := newDB(t, kind)
			ps := map[string]*config.Projection{"people": {
				Table:    config.ProjectionTable{Columns: map[string]string{"id": "integer", "age": "integer"}, Key: "id"},
				Handlers: map[string]*config.ProjectionHandler{"Seen": {Upsert: map[string]string{"id": "event.data.id", "age": "event.data.age"}}},
			}}
			m := start(t, store, db, open, ps)
			var last uint64
			for i := 1; i <= 9; i++ {
				var age any
				if i%3 != 0 {
					age = 40 - i%4
				}
				last = appendEv(t, store, "person-x", "Seen", map[string]any{"id": i, "age": age}).Position
			}
			waitFor(t, m, "people", last)
			p, _ := m.Get("people")
			for _, order := range []string{"age", "-age"} {
				var ids []int64
				for _, r := range allRows(t, p, projection.Query{Order: order, Limit: 2}) {
					ids = append(ids, r["id"].(int64))
				}
				want := map[string]string{"age": "[7 2 1 5 4 8 3 6 9]", "-age": "[8 4 5 1 2 7 9 6 3]"}[order]
				if fmt.Sprint(ids) != want {
					t.Errorf("order=%s: ids %v, want %s", order, ids, want)
				}
			}
			if _, err := p.List(context.Background(), projection.Query{Order: "age", Cursor: "bm9wZQ"}); !errors.Is(err, projection.ErrInvalid) {
				t.Errorf("garbage cursor: %v", err)
			}
		})
	}
}
