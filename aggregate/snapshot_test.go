package aggregate_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/junctionhq/junction/aggregate"
)

// TestSnapshots runs one suite against every Snapshots implementation.
func TestSnapshots(t *testing.T) {
	impls := []struct {
		name string
		open func(t *testing.T) aggregate.Snapshots
	}{
		{"kv", func(t *testing.T) aggregate.Snapshots { return kvSnapshots(t, embedded(t)) }},
		{"sqlite", func(t *testing.T) aggregate.Snapshots {
			s, err := aggregate.NewSQLSnapshots(ctxT(t), sqliteDB(t), aggregate.DialectSQLite, "snapshots")
			if err != nil {
				t.Fatal(err)
			}
			return s
		}},
		{"postgres", func(t *testing.T) aggregate.Snapshots {
			db := postgresDB(t)
			table := unique("snapshots")
			s, err := aggregate.NewSQLSnapshots(ctxT(t), db, aggregate.DialectPostgres, table)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if _, err := db.ExecContext(context.Background(), `DROP TABLE IF EXISTS `+table); err != nil {
					t.Errorf("dropping %s: %v", table, err)
				}
			})
			return s
		}},
	}
	for _, impl := range impls {
		t.Run(impl.name, func(t *testing.T) {
			t.Parallel()
			snapshotSuite(t, impl.open(t))
		})
	}
}

func snapshotSuite(t *testing.T, s aggregate.Snapshots) {
	ctx := ctxT(t)
	at := time.Date(2026, 3, 4, 5, 6, 7, 123456789, time.UTC)
	snap := func(stream string, v uint64, state string) aggregate.Snapshot {
		return aggregate.Snapshot{Stream: stream, Version: v, State: []byte(state), Time: at.Add(time.Duration(v) * time.Second)}
	}
	// Stream names with characters that are not safe as keys or paths.
	const stream = "acct:eu.west-42"

	if _, ok, err := s.Load(ctx, stream); ok || err != nil {
		t.Fatalf("load before any save: %v, %v", ok, err)
	}
	steps := []struct {
		name string
		save aggregate.Snapshot
		want aggregate.Snapshot
	}{
		{"first", snap(stream, 3, `{"balance":3}`), snap(stream, 3, `{"balance":3}`)},
		{"older is ignored", snap(stream, 2, `{"balance":2}`), snap(stream, 3, `{"balance":3}`)},
		{"same version keeps the stored one", snap(stream, 3, `{"balance":-1}`), snap(stream, 3, `{"balance":3}`)},
		{"newer replaces", snap(stream, 9, `{"balance":9}`), snap(stream, 9, `{"balance":9}`)},
		{"version 0 of another stream", snap("acct:eu.west-43", 0, `{}`), snap(stream, 9, `{"balance":9}`)},
	}
	for _, st := range steps {
		if err := s.Save(ctx, st.save); err != nil {
			t.Fatalf("%s: save: %v", st.name, err)
		}
		got, ok, err := s.Load(ctx, stream)
		if err != nil || !ok {
			t.Fatalf("%s: load: %v, %v", st.name, ok, err)
		}
		if got.Stream != st.want.Stream || got.Version != st.want.Version || string(got.State) != string(st.want.State) || !got.Time.Equal(st.want.Time) {
			t.Fatalf("%s: loaded %+v (state %s), want %+v (state %s)", st.name, got, got.State, st.want, st.want.State)
		}
	}
	if got, ok, err := s.Load(ctx, "acct:eu.west-43"); err != nil || !ok || got.Version != 0 || string(got.State) != `{}` {
		t.Fatalf("other stream: %+v, %v, %v", got, ok, err)
	}
	if err := s.Save(ctx, snap("bad-1", 1, `{not json`)); err == nil {
		t.Fatal("saving a state that is not JSON succeeded")
	}

	// Racing writers: whatever the order, the newest version stays.
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for v := range 20 {
		wg.Go(func() {
			errs <- s.Save(ctx, snap("race-1", uint64(v), fmt.Sprintf(`{"v":%d}`, v)))
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("racing save: %v", err)
		}
	}
	if got, _, err := s.Load(ctx, "race-1"); err != nil || got.Version != 19 || string(got.State) != `{"v":19}` {
		t.Fatalf("after racing saves: %+v (state %s), %v", got, got.State, err)
	}
}

func TestSQLSnapshotsRejects(t *testing.T) {
	db := sqliteDB(t)
	tests := []struct {
		dialect, table string
		want           error
	}{
		{aggregate.DialectSQLite, "snap; DROP TABLE x", aggregate.ErrBadTable},
		{aggregate.DialectSQLite, "", aggregate.ErrBadTable},
		{aggregate.DialectSQLite, "1snap", aggregate.ErrBadTable},
		{"mysql", "snapshots", nil},
	}
	for _, tc := range tests {
		_, err := aggregate.NewSQLSnapshots(ctxT(t), db, tc.dialect, tc.table)
		if err == nil || tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("NewSQLSnapshots(%q, %q) = %v, want %v", tc.dialect, tc.table, err, tc.want)
		}
	}
	// Creating it twice is fine: the table is only created when missing.
	for range 2 {
		if _, err := aggregate.NewSQLSnapshots(ctxT(t), db, aggregate.DialectSQLite, "main.snapshots"); err != nil {
			t.Fatal(err)
		}
	}
}
