package aggregate_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers "pgx"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/junctionhq/junction/aggregate"
	"github.com/junctionhq/junction/eventstore"
	esjetstream "github.com/junctionhq/junction/eventstore/jetstream"
	"github.com/junctionhq/junction/eventstore/postgres"
	"github.com/junctionhq/junction/internal/natsembed"
	"github.com/junctionhq/junction/internal/sqldb"
	"github.com/junctionhq/junction/internal/testutil"
)

const (
	pgAddr = "127.0.0.1:5432"
	pgDSN  = "postgres://postgres@" + pgAddr + "/test?sslmode=disable"
)

var seq atomic.Int64

// unique returns a name no other test of this process uses, and no other
// process either, for objects in the shared PostgreSQL database.
func unique(prefix string) string {
	return fmt.Sprintf("%s_%d_%d", prefix, os.Getpid(), seq.Add(1))
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// embedded starts an in-process JetStream for the test.
func embedded(t *testing.T) jetstream.JetStream {
	t.Helper()
	c, err := natsembed.Start(context.Background(), natsembed.Options{DataDir: t.TempDir(), Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c.JS
}

func kvSnapshots(t *testing.T, js jetstream.JetStream) *aggregate.KVSnapshots {
	t.Helper()
	kv, err := js.CreateKeyValue(ctxT(t), jetstream.KeyValueConfig{Bucket: "snapshots", History: 1})
	if err != nil {
		t.Fatal(err)
	}
	return aggregate.NewKVSnapshots(kv)
}

// postgresDB connects to the test database, skipping the test when it is
// not running (failing it when JUNCTION_REQUIRE_SERVICES=1).
func postgresDB(t *testing.T) *sql.DB {
	t.Helper()
	testutil.RequireService(t, "PostgreSQL", pgAddr)
	db, err := sql.Open("pgx", pgDSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// pgSchema creates a schema of its own for the test and drops it after.
func pgSchema(t *testing.T, db *sql.DB) string {
	t.Helper()
	schema := unique("agg")
	if _, err := db.ExecContext(ctxT(t), `CREATE SCHEMA `+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := db.ExecContext(context.Background(), `DROP SCHEMA IF EXISTS `+schema+` CASCADE`); err != nil {
			t.Errorf("dropping schema %s: %v", schema, err)
		}
	})
	return schema
}

func sqliteDB(t *testing.T) *sql.DB {
	t.Helper()
	db, err := sqldb.Open(ctxT(t), "", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db.DB
}

// backend is an event store with a snapshot store beside it, as a node
// would pair them.
type backend struct {
	name string
	open func(t *testing.T) (eventstore.Store, aggregate.Snapshots)
}

var backends = []backend{
	{"jetstream", func(t *testing.T) (eventstore.Store, aggregate.Snapshots) {
		js := embedded(t)
		s, err := esjetstream.Open(ctxT(t), js, "es")
		if err != nil {
			t.Fatal(err)
		}
		return s, kvSnapshots(t, js)
	}},
	{"postgres", func(t *testing.T) (eventstore.Store, aggregate.Snapshots) {
		db := postgresDB(t)
		schema := pgSchema(t, db)
		s, err := postgres.Open(ctxT(t), db, schema)
		if err != nil {
			t.Fatal(err)
		}
		snaps, err := aggregate.NewSQLSnapshots(ctxT(t), db, aggregate.DialectPostgres, schema+".snapshots")
		if err != nil {
			t.Fatal(err)
		}
		return s, snaps
	}},
}

// eachBackend runs f on every event store backend.
func eachBackend(t *testing.T, f func(t *testing.T, s eventstore.Store, snaps aggregate.Snapshots)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			s, snaps := b.open(t)
			t.Cleanup(func() { s.Close() })
			f(t, s, snaps)
		})
	}
}
