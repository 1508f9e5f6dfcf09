package projbench

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/junctionhq/junction/eventstore"
	esjetstream "github.com/junctionhq/junction/eventstore/jetstream"
	"github.com/junctionhq/junction/internal/natsembed"
	"github.com/junctionhq/junction/internal/sqldb"
	"github.com/junctionhq/junction/internal/testutil"
	"github.com/junctionhq/junction/projection"
)

func openStore(tb testing.TB) eventstore.Store {
	tb.Helper()
	c, err := natsembed.Start(context.Background(), natsembed.Options{DataDir: tb.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(c.Close)
	s, err := esjetstream.Open(context.Background(), c.JS, "pb")
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// project applies the whole log to a fresh view and returns when the view
// has caught up with last.
func project(ctx context.Context, tb testing.TB, s eventstore.Store, db *sqldb.DB, kind, table string, last uint64) *projection.Manager {
	m, err := projection.New(ctx, projection.Options{Store: s, Projections: Projections(kind, table), DB: db, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		tb.Fatal(err)
	}
	m.Start(ctx)
	p, _ := m.Get(table)
	wctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	if err := p.WaitFor(wctx, last); err != nil {
		tb.Fatal(err)
	}
	return m
}

// BenchmarkApply measures events applied per second into a fresh view,
// by a projection and by the hand-written program, on SQLite and
// PostgreSQL, over one log of Events() events in an embedded JetStream
// event store. One op is one whole apply of the log.
func BenchmarkApply(b *testing.B) {
	ctx := context.Background()
	s := openStore(b)
	n := Events()
	last, err := Fill(ctx, s, n)
	if err != nil {
		b.Fatal(err)
	}
	for _, dbKind := range []string{"sqlite", "postgres"} {
		if dbKind == "postgres" {
			testutil.RequireService(b, "PostgreSQL", PostgresAddr)
		}
		for _, kind := range []string{"set", "counter"} {
			for _, who := range []string{"projection", "handwritten"} {
				b.Run(fmt.Sprintf("%s/%s/%s", dbKind, kind, who), func(b *testing.B) {
					var elapsed time.Duration
					for i := 0; i < b.N; i++ {
						b.StopTimer()
						db, drop, err := OpenDB(ctx, dbKind, b.TempDir())
						if err != nil {
							b.Fatal(err)
						}
						table := fmt.Sprintf("v_%s_%d", kind, i)
						b.StartTimer()
						start := time.Now()
						if who == "projection" {
							m := project(ctx, b, s, db, kind, table, last)
							elapsed += time.Since(start)
							b.StopTimer()
							m.Close()
						} else {
							if got, err := HandWritten(ctx, s, db, kind, table); err != nil || got != n {
								b.Fatalf("hand-written applied %d of %d: %v", got, n, err)
							}
							elapsed += time.Since(start)
							b.StopTimer()
						}
						drop()
						b.StartTimer()
					}
					b.ReportMetric(float64(n*b.N)/elapsed.Seconds(), "events/s")
				})
			}
		}
	}
}
