package pipeline_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/internal/natsembed"
	"github.com/junctionhq/junction/internal/sqldb"
	"github.com/junctionhq/junction/internal/testutil"
	"github.com/junctionhq/junction/pipeline"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// env is an embedded JetStream and a SQLite database in a temp dir.
func env(t *testing.T) pipeline.Env {
	t.Helper()
	dir := t.TempDir()
	nc, err := natsembed.Start(context.Background(), natsembed.Options{DataDir: dir, Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	db, err := sqldb.Open(context.Background(), "", dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return pipeline.Env{DB: db, JS: nc.JS, Prefix: "t", Logger: testutil.Logger(t),
		Open: func(ctx context.Context, dsn string) (*sqldb.DB, error) { return sqldb.Open(ctx, dsn, dir) }}
}

// pipelines parses the pipelines of a config document.
func pipelines(t *testing.T, yaml string) map[string]*config.Pipeline {
	t.Helper()
	c, err := config.Parse("t.yaml", []byte(yaml), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return c.Pipelines
}

func manager(t *testing.T, e pipeline.Env, yaml string) *pipeline.Manager {
	t.Helper()
	m, err := pipeline.New(ctxT(t), pipeline.Options{Pipelines: pipelines(t, yaml), Env: e})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Stop(context.Background()) })
	return m
}

func writeFile(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestCSVToSQLite: typed CSV columns through filter and map into SQLite;
// a bad row goes to the dead letter with its error, and the run's
// summary counts everything.
func TestCSVToSQLite(t *testing.T) {
	e := env(t)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "sales-1.csv"), "sku,amount,day\na,10.5,2026-01-01\nb,-1,2026-01-01\nc,x,2026-01-02\n")
	writeFile(t, filepath.Join(dir, "sales-2.csv"), "sku,amount,day\nd,4,2026-01-03\n")
	if _, err := e.DB.ExecContext(ctxT(t), `CREATE TABLE sales (sku TEXT PRIMARY KEY, amount_eur REAL, day TEXT)`); err != nil {
		t.Fatal(err)
	}
	m := manager(t, e, `
pipelines:
  sales:
    input: { csv: { path: "`+dir+`/sales-*.csv", columns: { amount: real } } }
    processors:
      - filter: row.amount > 0.0
      - map: { sku: row.sku, amount_eur: row.amount * 2.0, day: row.day }
    batch: { count: 2 }
    output: { sql: { table: sales, mode: upsert, key: [sku] } }
    dead_letter: { jsonl: { path: "`+dir+`/rejects.jsonl" } }
`)
	s, err := m.Run(ctxT(t), "sales", nil)
	if err != nil || s.Status != "completed" {
		t.Fatalf("run: %+v %v", s, err)
	}
	want := pipeline.Counters{Read: 4, Written: 2, Filtered: 1, Failed: 1, DeadLettered: 1}
	if s.Counters != want {
		t.Errorf("counters %+v, want %+v", s.Counters, want)
	}
	var n int
	var total float64
	if err := e.DB.QueryRowContext(ctxT(t), `SELECT count(*), sum(amount_eur) FROM sales`).Scan(&n, &total); err != nil || n != 2 || total != 29 {
		t.Errorf("table: %d rows, total %v, %v", n, total, err)
	}
	rejects, _ := os.ReadFile(filepath.Join(dir, "rejects.jsonl"))
	if !strings.Contains(string(rejects), `"error":"column amount: `) || !strings.Contains(string(rejects), `c,x,2026-01-02`) {
		t.Errorf("dead letter: %s", rejects)
	}
	// Upsert makes a second run of the same files change nothing.
	if s, err := m.Run(ctxT(t), "sales", nil); err != nil || s.Written != 2 {
		t.Fatalf("second run: %+v %v", s, err)
	}
	if err := e.DB.QueryRowContext(ctxT(t), `SELECT count(*) FROM sales`).Scan(&n); err != nil || n != 2 {
		t.Errorf("after the second run: %d rows", n)
	}
	got, err := m.Get(ctxT(t), "sales", s.RunID)
	if err != nil || got.Status != "completed" || got.Read != 4 {
		t.Errorf("stored summary: %+v %v", got, err)
	}
}

// TestInterruptedRunResumes: a run stopped in the middle resumes from its
// last batch, so every record is written once (the output is an insert
// into a table with a primary key: a record written twice would fail).
func TestInterruptedRunResumes(t *testing.T) {
	e := env(t)
	dir := t.TempDir()
	var b strings.Builder
	b.WriteString("id,v\n")
	for i := range 20000 {
		fmt.Fprintf(&b, "%d,%d\n", i, i%7)
	}
	writeFile(t, filepath.Join(dir, "big.csv"), b.String())
	if _, err := e.DB.ExecContext(ctxT(t), `CREATE TABLE big (id INTEGER PRIMARY KEY, v INTEGER)`); err != nil {
		t.Fatal(err)
	}
	cfg := `
pipelines:
  big:
    input: { csv: { path: "` + dir + `/big.csv", columns: { id: integer, v: integer } } }
    batch: { count: 100 }
    output: { sql: { table: big } }
`
	m1, err := pipeline.New(ctxT(t), pipeline.Options{Pipelines: pipelines(t, cfg), Env: e})
	if err != nil {
		t.Fatal(err)
	}
	s, err := m1.Start(ctxT(t), "big", nil)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, "a few batches written", func() bool {
		g, _ := m1.Get(ctxT(t), "big", s.RunID)
		return g.Written >= 2000
	})
	m1.Stop(ctxT(t)) // as a node stopping: the run keeps its checkpoint
	g, _ := m1.Get(ctxT(t), "big", s.RunID)
	if g.Status != "interrupted" || g.Written >= 20000 {
		t.Fatalf("after stop: %+v", g)
	}
	m2 := manager(t, e, cfg)
	s2, err := m2.Run(ctxT(t), "big", nil)
	if err != nil || s2.Status != "completed" || !s2.Resumed || s2.RunID != s.RunID {
		t.Fatalf("resumed run: %+v %v", s2, err)
	}
	var n int
	if err := e.DB.QueryRowContext(ctxT(t), `SELECT count(*) FROM big`).Scan(&n); err != nil || n != 20000 {
		t.Errorf("%d rows after the resumed run, want 20000 (%v)", n, err)
	}
	if s2.Read != 20000 || s2.Written != 20000 {
		t.Errorf("resumed counters %+v", s2.Counters)
	}
	t.Logf("interrupted after %d records; the resumed run completed the 20000", g.Written)
}

// TestScheduledAndStreamingPipelines: a pipeline on a schedule runs at
// each fire time; a streaming one runs until the manager stops.
func TestScheduledAndStreamingPipelines(t *testing.T) {
	e := env(t)
	dir := t.TempDir()
	m := manager(t, e, `
pipelines:
  ticks:
    schedule: "@every 1s"
    input: { generate: { count: 3, fields: { n: input.n } } }
    output: { jsonl: { path: "`+dir+`/ticks.jsonl" } }
  forever:
    stream: true
    input: { generate: { fields: { n: input.n } } }
    batch: { count: 1000 }
    output: { jsonl: { path: "`+dir+`/forever.jsonl" } }
`)
	m.Launch()
	lines := func(f string) int {
		b, _ := os.ReadFile(filepath.Join(dir, f))
		return strings.Count(string(b), "\n")
	}
	testutil.Eventually(t, 20*time.Second, "two scheduled runs and a streaming one under way", func() bool {
		return lines("ticks.jsonl") >= 6 && lines("forever.jsonl") >= 5000
	})
	var st pipeline.Status
	for _, s := range m.Statuses(ctxT(t)) {
		if s.Name == "forever" {
			st = s
		}
	}
	if st.Running == nil || st.Running.Status != "running" {
		t.Errorf("the streaming pipeline: %+v", st)
	}
	m.Stop(ctxT(t))
	if n := lines("ticks.jsonl"); n%3 != 0 {
		t.Errorf("%d records from whole runs of 3", n)
	}
}

// TestInterruptedWindowRunResumes: a run stopped while its windows hold
// records resumes with those windows as they were at its last batch, so
// the aggregates written (an upsert keyed by window) are those of one
// uninterrupted run: none of the records absorbed before the stop is
// lost with the node, and none is counted twice. With few keys the
// windows' state goes inside the checkpoint; with many, it passes what a
// checkpoint holds and goes to the state bucket.
func TestInterruptedWindowRunResumes(t *testing.T) {
	for _, tt := range []struct {
		name           string
		n, keys, perTs int // records, keys, records per second of event time
		rate           int
		bucket         bool // the state goes to the bucket
	}{
		{name: "state in the checkpoint", n: 6000, keys: 5, perTs: 10, rate: 2000},
		{name: "state in the bucket", n: 60000, keys: 20000, perTs: 1000, rate: 30000, bucket: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			testInterruptedWindowRun(t, tt.n, tt.keys, tt.perTs, tt.rate, tt.bucket)
		})
	}
}

func testInterruptedWindowRun(t *testing.T, n, keys, perTs, rate int, bucket bool) {
	e := env(t)
	dir := t.TempDir()
	type agg struct{ n, sum int }
	want := map[string]*agg{} // key/minute -> aggregate
	var b strings.Builder
	b.WriteString("id,k,ts,v\n")
	for i := range n {
		ts := i / perTs
		if i%7 == 3 && ts >= 3 {
			ts -= 3 // out of order, within the allowed lateness
		}
		k := fmt.Sprintf("k%d", i%keys)
		fmt.Fprintf(&b, "%d,%s,%d,%d\n", i, k, ts, i%11)
		w := fmt.Sprintf("%s/%03d", k, ts/60)
		if want[w] == nil {
			want[w] = &agg{}
		}
		want[w].n++
		want[w].sum += i % 11
	}
	writeFile(t, filepath.Join(dir, "events.csv"), b.String())
	if _, err := e.DB.ExecContext(ctxT(t), `CREATE TABLE agg (key TEXT, window_start TEXT, n INTEGER, total INTEGER, PRIMARY KEY (key, window_start))`); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`
pipelines:
  agg:
    input: { csv: { path: "%s/events.csv", columns: { ts: integer, v: integer } } }
    processors:
      - rate_limit: %d
      - window:
          key: row.k
          time: timestamp(row.ts)
          size: 1m
          allowed_lateness: 5s
          aggregates: { n: count, total: "sum(row.v)" }
    batch: { count: 1000, period: 50ms }
    output: { sql: { table: agg, mode: upsert, key: [key, window_start], columns: [key, window_start, n, total] } }
`, dir, rate)
	m1, err := pipeline.New(ctxT(t), pipeline.Options{Pipelines: pipelines(t, cfg), Env: e})
	if err != nil {
		t.Fatal(err)
	}
	s, err := m1.Start(ctxT(t), "agg", nil)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, "half the records read", func() bool {
		g, _ := m1.Get(ctxT(t), "agg", s.RunID)
		return g.Read >= int64(n/2)
	})
	m1.Stop(ctxT(t))
	g, _ := m1.Get(ctxT(t), "agg", s.RunID)
	if g.Status != "interrupted" || g.Read >= int64(n) {
		t.Fatalf("after stop: %+v", g)
	}
	objects := func() int {
		obs, err := e.JS.ObjectStore(ctxT(t), "t_pipeline_state")
		if err != nil {
			return 0
		}
		l, _ := obs.List(ctxT(t))
		return len(l)
	}
	if got := objects() > 0; got != bucket {
		t.Errorf("state objects saved: %v, want %v", got, bucket)
	}
	m2 := manager(t, e, cfg)
	s2, err := m2.Run(ctxT(t), "agg", nil)
	if err != nil || s2.Status != "completed" || !s2.Resumed {
		t.Fatalf("resumed run: %+v %v", s2, err)
	}
	if o := objects(); o != 0 {
		t.Errorf("%d state objects left after the run completed", o)
	}
	rows, err := e.DB.QueryContext(ctxT(t), `SELECT key, window_start, n, total FROM agg`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	got := map[string]agg{}
	for rows.Next() {
		var k, start string
		var a agg
		if err := rows.Scan(&k, &start, &a.n, &a.sum); err != nil {
			t.Fatal(err)
		}
		at, err := time.Parse(time.RFC3339, start)
		if err != nil {
			t.Fatalf("window_start %q: %v", start, err)
		}
		got[fmt.Sprintf("%s/%03d", k, at.Unix()/60)] = a
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Errorf("%d windows written, want %d", len(got), len(want))
	}
	bad := 0
	for w, a := range want {
		if got[w] != *a {
			if bad++; bad <= 5 {
				t.Errorf("window %s: %+v, want %+v", w, got[w], *a)
			}
		}
	}
	if bad > 5 {
		t.Errorf("... %d windows wrong in all", bad)
	}
	if s2.Read != int64(n) {
		t.Errorf("resumed counters %+v, want %d read", s2.Counters, n)
	}
	t.Logf("interrupted after %d records read; the resumed run completed the %d", g.Read, n)
}
