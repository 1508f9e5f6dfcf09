package projection_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/internal/testutil"
	"github.com/junctionhq/junction/projection"
)

// counterConfig counts events per account with row-based increments,
// which are not idempotent: applying an event twice shows.
func counterConfig(extra string) map[string]*config.Projection {
	cols := map[string]string{"id": "text", "n": "integer", "sum": "real"}
	up := map[string]string{"id": "event.stream", "n": "row.?n.orValue(0) + 1", "sum": "row.?sum.orValue(0.0) + double(event.data.amount)"}
	if extra != "" {
		cols[extra] = "text"
		up[extra] = "event.type"
	}
	return map[string]*config.Projection{"counts": {
		From:      config.ProjectionSource{Categories: []string{"acct"}},
		Table:     config.ProjectionTable{Columns: cols, Key: "id"},
		Handlers:  map[string]*config.ProjectionHandler{"Deposited": {Upsert: up}},
		BatchSize: 64,
	}}
}

func sumsOf(t *testing.T, p *projection.Projection) map[string]string {
	t.Helper()
	page, err := p.List(context.Background(), projection.Query{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, r := range page.Rows {
		out[r["id"].(string)] = fmt.Sprintf("%v/%v", r["n"], r["sum"])
	}
	return out
}

// Stopping and starting the projections any number of times, mid-stream,
// applies every event exactly once: the checkpoint commits with the rows.
func TestExactlyOnceAcrossRestarts(t *testing.T) {
	for _, kind := range dbs {
		t.Run(kind, func(t *testing.T) {
			store := newStore(t)
			db, open := newDB(t, kind)
			var last uint64
			for round := 0; round < 5; round++ {
				m, err := projection.New(context.Background(), projection.Options{Store: store, Projections: counterConfig(""), DB: db, Open: open, Logger: testutil.Logger(t)})
				if err != nil {
					t.Fatal(err)
				}
				m.Start(context.Background())
				for i := 0; i < 300; i++ {
					last = appendEv(t, store, fmt.Sprintf("acct-%d", i%4), "Deposited", map[string]any{"amount": 1.5}).Position
				}
				m.Close() // mid-apply, most likely: the batch in flight rolls back
			}
			m := start(t, store, db, open, counterConfig(""))
			waitFor(t, m, "counts", last)
			p, _ := m.Get("counts")
			got := sumsOf(t, p)
			for i := 0; i < 4; i++ {
				if w := "375/562.5"; got[fmt.Sprintf("acct-%d", i)] != w {
					t.Errorf("acct-%d = %s, want %s", i, got[fmt.Sprintf("acct-%d", i)], w)
				}
			}
			if st := p.Status(context.Background()); st.Applied != 1500 {
				t.Errorf("applied_events = %d, want 1500", st.Applied)
			}
		})
	}
}

// A rebuild fills a shadow table while the view keeps answering, then
// swaps it in; events appended during the rebuild are in the result.
func TestRebuild(t *testing.T) {
	for _, kind := range dbs {
		t.Run(kind, func(t *testing.T) {
			store := newStore(t)
			db, open := newDB(t, kind)
			m := start(t, store, db, open, counterConfig(""))
			var last uint64
			for i := 0; i < 2000; i++ {
				last = appendEv(t, store, fmt.Sprintf("acct-%d", i%5), "Deposited", map[string]any{"amount": 2}).Position
			}
			waitFor(t, m, "counts", last)
			p, _ := m.Get("counts")
			before := sumsOf(t, p)
			if started, err := m.Rebuild(context.Background(), "counts"); err != nil || !started {
				t.Fatalf("rebuild: %v %v", started, err)
			}
			if again, _ := m.Rebuild(context.Background(), "counts"); again {
				t.Error("a second rebuild started while one runs")
			}
			// The view answers, complete, while the rebuild runs; new
			// events keep landing in it.
			answered := 0
			deadline := time.Now().Add(60 * time.Second)
			for i := 0; ; i++ {
				st := p.Status(context.Background())
				if st.Rebuild == nil {
					break
				}
				if i < 100 {
					last = appendEv(t, store, "acct-9", "Deposited", map[string]any{"amount": 1}).Position
				}
				if got := sumsOf(t, p); got["acct-0"] != before["acct-0"] {
					t.Fatalf("during the rebuild acct-0 = %s, want %s", got["acct-0"], before["acct-0"])
				}
				answered++
				if time.Now().After(deadline) {
					t.Fatal("the rebuild did not end within 60s")
				}
				time.Sleep(5 * time.Millisecond) // pacing the poll, not waiting for an outcome
			}
			waitFor(t, m, "counts", last)
			after := sumsOf(t, p)
			n9 := strings.Split(after["acct-9"], "/")[0]
			delete(after, "acct-9")
			if fmt.Sprint(after) != fmt.Sprint(before) {
				t.Errorf("after the rebuild %v, before %v", after, before)
			}
			var appended int
			fmt.Sscan(n9, &appended)
			if appended < 1 || appended > 100 {
				t.Errorf("acct-9 counted %q events appended during the rebuild", n9)
			}
			st := p.Status(context.Background())
			if st.Applied != uint64(2000+appended) || st.State != projection.StateRunning {
				t.Errorf("status after rebuild = %+v", st)
			}
			t.Logf("the view answered %d reads during the rebuild", answered)
		})
	}
}

// A changed definition rebuilds the view at start; an interrupted rebuild
// resumes at the next.
func TestDefinitionChange(t *testing.T) {
	for _, kind := range dbs {
		t.Run(kind, func(t *testing.T) {
			store := newStore(t)
			db, open := newDB(t, kind)
			m1, err := projection.New(context.Background(), projection.Options{Store: store, Projections: counterConfig(""), DB: db, Open: open})
			if err != nil {
				t.Fatal(err)
			}
			m1.Start(context.Background())
			var last uint64
			for i := 0; i < 500; i++ {
				last = appendEv(t, store, fmt.Sprintf("acct-%d", i%2), "Deposited", map[string]any{"amount": 1}).Position
			}
			waitFor(t, m1, "counts", last)
			m1.Close()

			m2 := start(t, store, db, open, counterConfig("kind"))
			p, _ := m2.Get("counts")
			testutil.Eventually(t, 20*time.Second, "the changed projection rebuilt", func() bool {
				st := p.Status(context.Background())
				return st.State == projection.StateRunning && st.Rebuild == nil
			})
			row, err := p.Get(context.Background(), "acct-1")
			if err != nil {
				t.Fatal(err)
			}
			if row["n"] != int64(250) || row["kind"] != "Deposited" {
				t.Errorf("rebuilt row = %v", row)
			}
		})
	}
}

// on_error: stop parks the projection with the failing event in its
// status and read-your-writes waits fail fast; on_error: skip passes the
// event over and counts it.
func TestOnError(t *testing.T) {
	for _, mode := range []string{"stop", "skip"} {
		t.Run(mode, func(t *testing.T) {
			store := newStore(t)
			db, open := newDB(t, "sqlite")
			cfg := counterConfig("")
			cfg["counts"].OnError = mode
			m := start(t, store, db, open, cfg)
			appendEv(t, store, "acct-1", "Deposited", map[string]any{"amount": 1})
			bad := appendEv(t, store, "acct-1", "Deposited", map[string]any{"amount": "lots"})
			last := appendEv(t, store, "acct-2", "Deposited", map[string]any{"amount": 1}).Position
			p, _ := m.Get("counts")
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			err := p.WaitFor(ctx, last)
			st := p.Status(context.Background())
			if st.LastError == nil || st.LastError.Position != bad.Position || st.LastError.Stream != "acct-1" || !strings.Contains(st.LastError.Message, "sum") {
				t.Fatalf("last_error = %+v", st.LastError)
			}
			got := sumsOf(t, p)
			if mode == "stop" {
				if !errors.Is(err, projection.ErrFailed) || st.State != projection.StateFailed {
					t.Fatalf("wait = %v, state %s", err, st.State)
				}
				if got["acct-1"] != "1/1" || got["acct-2"] != "" || st.Position >= bad.Position {
					t.Errorf("stopped view = %v at %d, want only the first event (stopped at %d)", got, st.Position, bad.Position)
				}
				return
			}
			if err != nil || st.Skipped != 1 || got["acct-1"] != "1/1" || got["acct-2"] != "1/1" {
				t.Errorf("skip: wait %v, status %+v, view %v", err, st, got)
			}
		})
	}
}

// A table of the same name that the projection did not create is not
// taken over.
func TestForeignTable(t *testing.T) {
	store := newStore(t)
	db, open := newDB(t, "sqlite")
	if _, err := db.Exec(`CREATE TABLE counts (id TEXT)`); err != nil {
		t.Fatal(err)
	}
	_, err := projection.New(context.Background(), projection.Options{Store: store, Projections: counterConfig(""), DB: db, Open: open})
	if err == nil || !strings.Contains(err.Error(), "not a view of this projection") {
		t.Fatalf("err = %v", err)
	}
}

// Projections sharing one SQLite database write at the same time without
// tripping over each other's locks: none of them ever has to retry.
func TestProjectionsShareSQLite(t *testing.T) {
	store := newStore(t)
	db, open := newDB(t, "sqlite")
	ps := map[string]*config.Projection{}
	for i := range 4 {
		p := counterConfig("")["counts"]
		p.Table.Name = fmt.Sprintf("counts_%d", i)
		p.BatchSize = 10
		ps[p.Table.Name] = p
	}
	m := start(t, store, db, open, ps)
	var last uint64
	for i := 0; i < 3000; i++ {
		last = appendEv(t, store, fmt.Sprintf("acct-%d", i%7), "Deposited", map[string]any{"amount": 1}).Position
	}
	for name := range ps {
		waitFor(t, m, name, last)
		p, _ := m.Get(name)
		if st := p.Status(context.Background()); st.LastError != nil || st.Applied != 3000 {
			t.Errorf("%s: %+v", name, st)
		}
	}
}
