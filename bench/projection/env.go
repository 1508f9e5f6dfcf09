// Package projbench measures how fast projections apply events to SQL
// views (SQLite and PostgreSQL), beside a hand-written Go program that
// reads the same events and writes the same rows with the same batch size,
// in the same run. docs/PERFORMANCE.md ("Projections") gives the figures.
package projbench

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"sync/atomic"

	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/eventstore"
	"github.com/junctionhq/junction/internal/sqldb"

	_ "github.com/jackc/pgx/v5/stdlib" // registers "pgx"
)

const (
	// Accounts is the number of streams (and view rows) the events go to.
	Accounts = 1000
	// Batch is the events per transaction of both the projection and the
	// hand-written program, and the events per append when filling.
	Batch = 500
	// DefaultEvents is the log length applied per run, unless
	// JUNCTION_BENCH_EVENTS says otherwise.
	DefaultEvents = 200_000
	// PostgresAddr is the PostgreSQL server the postgres runs use.
	PostgresAddr = "127.0.0.1:5432"
	postgresDSN  = "postgres://postgres@" + PostgresAddr + "/test?sslmode=disable"
)

// Events is the log length: JUNCTION_BENCH_EVENTS if set, else
// DefaultEvents, rounded down to a multiple of Batch.
func Events() int {
	n := DefaultEvents
	if v, err := strconv.Atoi(os.Getenv("JUNCTION_BENCH_EVENTS")); err == nil && v > 0 {
		n = v
	}
	return max(Batch, n/Batch*Batch)
}

// Fill appends n Deposited events spread over Accounts streams and
// returns the position of the last.
func Fill(ctx context.Context, s eventstore.Store, n int) (uint64, error) {
	var last uint64
	for i := 0; i < n; i += 100 {
		evs := make([]eventstore.EventData, 100)
		for j := range evs {
			evs[j] = eventstore.EventData{Type: "Deposited", Data: fmt.Appendf(nil, `{"amount":%d.5,"note":"bench"}`, (i+j)%10)}
		}
		r, err := s.Append(ctx, fmt.Sprintf("acct-%d", (i/100)%Accounts), eventstore.Any, evs)
		if err != nil {
			return 0, err
		}
		last = r.Position
	}
	return last, nil
}

// Projections are the two measured shapes: "set" writes values taken
// from the event alone; "counter" also reads the current row (n + 1,
// sum + amount), which costs one extra query per event.
func Projections(kind, table string) map[string]*config.Projection {
	up := map[string]string{"id": "event.stream", "n": "int(event.version) + 1", "sum": "double(event.data.amount)"}
	if kind == "counter" {
		up = map[string]string{"id": "event.stream", "n": "row.?n.orValue(0) + 1", "sum": "row.?sum.orValue(0.0) + double(event.data.amount)"}
	}
	return map[string]*config.Projection{table: {
		From:      config.ProjectionSource{Categories: []string{"acct"}},
		Table:     config.ProjectionTable{Columns: map[string]string{"id": "text", "n": "integer", "sum": "real"}, Key: "id"},
		Handlers:  map[string]*config.ProjectionHandler{"Deposited": {Upsert: up}},
		BatchSize: Batch,
	}}
}

var schemaSeq atomic.Int64

// OpenDB opens a fresh view database: SQLite in dir, or a new schema of
// the PostgreSQL server (and a function that drops it).
func OpenDB(ctx context.Context, kind, dir string) (*sqldb.DB, func(), error) {
	if kind == "sqlite" {
		db, err := sqldb.Open(ctx, "", dir)
		if err != nil {
			return nil, nil, err
		}
		return db, func() { db.Close() }, nil
	}
	schema := fmt.Sprintf("projbench_%d_%d", os.Getpid(), schemaSeq.Add(1))
	admin, err := sql.Open("pgx", postgresDSN)
	if err != nil {
		return nil, nil, err
	}
	if _, err := admin.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
		admin.Close()
		return nil, nil, err
	}
	db, err := sqldb.Open(ctx, postgresDSN+"&search_path="+schema, dir)
	if err != nil {
		admin.Close()
		return nil, nil, err
	}
	return db, func() {
		db.Close()
		admin.ExecContext(context.Background(), "DROP SCHEMA "+schema+" CASCADE")
		admin.Close()
	}, nil
}

// HandWritten is the baseline: read the log in pages and write the rows
// in transactions of Batch events with one prepared statement, as a Go
// program written for this one view would. "set" upserts values from the
// event; "counter" lets SQL add to the row (n = n + 1), so it needs no
// read: the cheapest way a program can keep a counter.
func HandWritten(ctx context.Context, s eventstore.Store, db *sqldb.DB, kind, table string) (int, error) {
	if _, err := db.ExecContext(ctx, `CREATE TABLE `+table+` (id TEXT PRIMARY KEY, n BIGINT, sum DOUBLE PRECISION)`); err != nil {
		return 0, err
	}
	ph := func(i int) string {
		if db.Dialect == "postgres" {
			return "$" + strconv.Itoa(i)
		}
		return "?" + strconv.Itoa(i)
	}
	q := `INSERT INTO ` + table + ` (id, n, sum) VALUES (` + ph(1) + `, ` + ph(2) + `, ` + ph(3) + `) ON CONFLICT (id) DO UPDATE SET n = excluded.n, sum = excluded.sum`
	if kind == "counter" {
		q = `INSERT INTO ` + table + ` AS t (id, n, sum) VALUES (` + ph(1) + `, 1, ` + ph(2) + `) ON CONFLICT (id) DO UPDATE SET n = t.n + 1, sum = t.sum + excluded.sum`
	}
	applied := 0
	for from := uint64(0); ; {
		es, err := s.ReadAll(ctx, eventstore.ReadAllOptions{From: from, Limit: Batch, Categories: []string{"acct"}, Types: []string{"Deposited"}})
		if err != nil {
			return applied, err
		}
		if len(es) == 0 {
			return applied, nil
		}
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return applied, err
		}
		stmt, err := tx.PrepareContext(ctx, q)
		if err != nil {
			tx.Rollback()
			return applied, err
		}
		for _, e := range es {
			amount, err := amountOf(e.Data)
			if err != nil {
				tx.Rollback()
				return applied, err
			}
			args := []any{e.Stream, int64(e.Version) + 1, amount}
			if kind == "counter" {
				args = []any{e.Stream, amount}
			}
			if _, err := stmt.ExecContext(ctx, args...); err != nil {
				tx.Rollback()
				return applied, err
			}
		}
		if err := tx.Commit(); err != nil {
			return applied, err
		}
		applied += len(es)
		from = es[len(es)-1].Position + 1
	}
}

func amountOf(data []byte) (float64, error) {
	var d struct {
		Amount float64 `json:"amount"`
	}
	err := json.Unmarshal(data, &d)
	return d.Amount, err
}
