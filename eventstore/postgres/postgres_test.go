package postgres_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers "pgx"

	"github.com/junctionhq/junction/eventstore"
	"github.com/junctionhq/junction/eventstore/eventstoretest"
	"github.com/junctionhq/junction/eventstore/postgres"
	"github.com/junctionhq/junction/internal/testutil"
)

const (
	addr = "127.0.0.1:5432"
	dsn  = "postgres://postgres@" + addr + "/test?sslmode=disable"
)

var schemaSeq atomic.Int64

func TestConformance(t *testing.T) {
	testutil.RequireService(t, "PostgreSQL", addr)
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	db.SetMaxOpenConns(24)
	if err := db.PingContext(context.Background()); err != nil {
		t.Fatalf("PostgreSQL at %s: %v", addr, err)
	}
	eventstoretest.Run(t, func(t *testing.T) eventstoretest.Opener {
		schema := fmt.Sprintf("es_%d_%d", os.Getpid(), schemaSeq.Add(1))
		ctx := context.Background()
		t.Cleanup(func() {
			if _, err := db.ExecContext(ctx, `DROP SCHEMA IF EXISTS `+schema+` CASCADE`); err != nil {
				t.Errorf("dropping schema %s: %v", schema, err)
			}
		})
		return func(t *testing.T, now func() time.Time) eventstore.Store {
			s, err := postgres.Open(ctx, db, schema, postgres.WithClock(now))
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
	})
}

func TestOpenTwice(t *testing.T) {
	testutil.RequireService(t, "PostgreSQL", addr)
	ctx := context.Background()
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	schema := fmt.Sprintf("es_%d_reopen", os.Getpid())
	defer db.ExecContext(ctx, `DROP SCHEMA IF EXISTS `+schema+` CASCADE`)
	s, err := postgres.Open(ctx, db, schema)
	if err != nil {
		t.Fatal(err)
	}
	r1, err := s.Append(ctx, "a-1", eventstore.NoStream, []eventstore.EventData{{Type: "E", Data: []byte(`{}`)}})
	if err != nil {
		t.Fatal(err)
	}
	s2, err := postgres.Open(ctx, db, schema)
	if err != nil {
		t.Fatalf("reopening: %v", err)
	}
	r2, err := s2.Append(ctx, "a-1", 0, []eventstore.EventData{{Type: "E", Data: []byte(`{}`)}})
	if err != nil || r2.FirstVersion != 1 || r2.Position <= r1.Position {
		t.Fatalf("append after reopen: %+v, %v", r2, err)
	}
}

// Appends keep using the indexes as the table grows: a plan cached while
// the table was small must not turn every append into a full scan.
func TestAppendsDoNotScanEvents(t *testing.T) {
	testutil.RequireService(t, "PostgreSQL", addr)
	ctx := context.Background()
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1) // one session: the one whose plans are cached
	schema := fmt.Sprintf("es_%d_%d", os.Getpid(), schemaSeq.Add(1))
	defer db.ExecContext(ctx, `DROP SCHEMA IF EXISTS `+schema+` CASCADE`)
	s, err := postgres.Open(ctx, db, schema)
	if err != nil {
		t.Fatal(err)
	}
	one := func(stream string) {
		if _, err := s.Append(ctx, stream, eventstore.Any, []eventstore.EventData{{Type: "X", Data: []byte(`{}`)}}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 10 { // plans made while the table is nearly empty
		one(fmt.Sprintf("a-%d", i))
	}
	for b := range 100 {
		evs := make([]eventstore.EventData, 100)
		for j := range evs {
			evs[j] = eventstore.EventData{Type: "X", Data: []byte(`{}`)}
		}
		if _, err := s.Append(ctx, fmt.Sprintf("b-%d", b), eventstore.Any, evs); err != nil {
			t.Fatal(err)
		}
	}
	scans := func() int64 {
		var n int64
		// This session's counts reach the statistics when it flushes them
		// (at most once a second unless forced), then a fresh snapshot
		// shows them.
		for _, q := range []string{`SELECT pg_stat_force_next_flush()`, `SELECT 1`, `SELECT pg_stat_clear_snapshot()`} {
			if _, err := db.ExecContext(ctx, q); err != nil {
				t.Fatal(err)
			}
		}
		if err := db.QueryRowContext(ctx, `SELECT seq_scan FROM pg_stat_user_tables WHERE schemaname = $1 AND relname = 'events'`, schema).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := scans()
	for i := range 50 {
		one(fmt.Sprintf("c-%d", i))
	}
	if n := scans() - before; n > 0 {
		t.Errorf("50 appends scanned the events table %d times", n)
	}
}
