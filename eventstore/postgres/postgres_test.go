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
