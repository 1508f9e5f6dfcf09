package junction_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/junctionhq/junction/client"
	"github.com/junctionhq/junction/internal/sqldb"
	"github.com/junctionhq/junction/internal/testutil"
)

// A pipeline run killed with -9 resumes from its last batch when the
// node restarts; with an upsert output, the table is then exactly what
// one run would have made.
func TestPipelineRunResumesAfterKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	data := t.TempDir()
	const rows = 200_000
	csvPath := filepath.Join(data, "items.csv")
	f, err := os.Create(csvPath)
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(f)
	fmt.Fprintln(w, "id,v")
	for i := range rows {
		fmt.Fprintf(w, "%d,%d\n", i, i%97)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	dbPath := filepath.Join(data, "items.db")
	db, err := sqldb.Open(context.Background(), "sqlite:"+dbPath, data)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`CREATE TABLE items (id INTEGER PRIMARY KEY, v INTEGER, doubled INTEGER)`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	cfg := writeConfig(t, data, `
pipelines:
  items:
    input: { csv: { path: "`+csvPath+`", columns: { id: integer, v: integer } } }
    processors:
      - set: { doubled: row.v * 2 }
    batch: { count: 200 }
    output: { sql: { database: "sqlite:`+dbPath+`", table: items, mode: upsert, key: [id] } }
`)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := testutil.StartProcess(t, nil, "serve", "-c", cfg)
	c := client.New(p.URL)
	r, err := c.StartPipelineRun(ctx, "items", 0)
	if err != nil {
		t.Fatal(err)
	}
	var written int64
	testutil.Eventually(t, 60*time.Second, "the run under way", func() bool {
		g, err := c.GetPipelineRun(ctx, "items", r.RunID, 0)
		if err == nil {
			written = g.Written
		}
		return written >= 20_000
	})
	kill9(t, ctx, p)
	if written >= rows {
		t.Fatalf("the run ended before the kill (%d written)", written)
	}
	p2 := testutil.StartProcess(t, nil, "serve", "-c", cfg)
	c2 := client.New(p2.URL)
	r2, err := c2.StartPipelineRun(ctx, "items", 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if r2.Status != "completed" || !r2.Resumed || r2.RunID != r.RunID || r2.Read != rows {
		t.Fatalf("after the restart: %+v", r2)
	}
	db, err = sqldb.Open(context.Background(), "sqlite:"+dbPath, data)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n, sum, bad int64
	if err := db.QueryRow(`SELECT count(*), sum(v), sum(doubled != 2 * v) FROM items`).Scan(&n, &sum, &bad); err != nil {
		t.Fatal(err)
	}
	var want int64
	for i := range rows {
		want += int64(i % 97)
	}
	if n != rows || sum != want || bad != 0 {
		t.Errorf("table: %d rows, sum %d (want %d rows, sum %d), %d wrong", n, sum, rows, want, bad)
	}
	t.Logf("killed with %d of %d rows written; the resumed run completed them (read %d in all)", written, rows, r2.Read)
}

// A windowed aggregation killed with -9 resumes from its last batch with
// the windows as they were then, so the aggregates in its upsert table
// are those of one uninterrupted run: the records its windows had
// absorbed and acknowledged are not lost with the process.
func TestPipelineWindowResumesAfterKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	data := t.TempDir()
	const rows, keys = 200_000, 50
	type agg struct{ n, sum int64 }
	want := map[string]agg{}
	csvPath := filepath.Join(data, "events.csv")
	f, err := os.Create(csvPath)
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(f)
	fmt.Fprintln(w, "k,ts,v")
	for i := range rows {
		k, ts := fmt.Sprintf("k%d", i%keys), i/100
		fmt.Fprintf(w, "%s,%d,%d\n", k, ts, i%13)
		win := fmt.Sprintf("%s/%d", k, ts/60)
		a := want[win]
		a.n++
		a.sum += int64(i % 13)
		want[win] = a
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	dbPath := filepath.Join(data, "agg.db")
	db, err := sqldb.Open(context.Background(), "sqlite:"+dbPath, data)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`CREATE TABLE agg (key TEXT, window_start TEXT, n INTEGER, total INTEGER, PRIMARY KEY (key, window_start))`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	cfg := writeConfig(t, data, `
pipelines:
  agg:
    input: { csv: { path: "`+csvPath+`", columns: { ts: integer, v: integer } } }
    processors:
      - rate_limit: 50000
      - window:
          key: row.k
          time: timestamp(row.ts)
          size: 1m
          aggregates: { n: count, total: "sum(row.v)" }
    batch: { count: 500, period: 50ms }
    output: { sql: { database: "sqlite:`+dbPath+`", table: agg, mode: upsert, key: [key, window_start], columns: [key, window_start, n, total] } }
`)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := testutil.StartProcess(t, nil, "serve", "-c", cfg)
	c := client.New(p.URL)
	r, err := c.StartPipelineRun(ctx, "agg", 0)
	if err != nil {
		t.Fatal(err)
	}
	var read int64
	testutil.Eventually(t, 60*time.Second, "the run under way", func() bool {
		g, err := c.GetPipelineRun(ctx, "agg", r.RunID, 0)
		if err == nil {
			read = g.Read
		}
		return read >= 80_000
	})
	kill9(t, ctx, p)
	if read >= rows {
		t.Fatalf("the run ended before the kill (%d read)", read)
	}
	p2 := testutil.StartProcess(t, nil, "serve", "-c", cfg)
	c2 := client.New(p2.URL)
	r2, err := c2.StartPipelineRun(ctx, "agg", 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if r2.Status != "completed" || !r2.Resumed || r2.RunID != r.RunID {
		t.Fatalf("after the restart: %+v", r2)
	}
	db, err = sqldb.Open(context.Background(), "sqlite:"+dbPath, data)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rs, err := db.Query(`SELECT key, window_start, n, total FROM agg`)
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	got := map[string]agg{}
	for rs.Next() {
		var k, start string
		var a agg
		if err := rs.Scan(&k, &start, &a.n, &a.sum); err != nil {
			t.Fatal(err)
		}
		at, err := time.Parse(time.RFC3339, start)
		if err != nil {
			t.Fatalf("window_start %q: %v", start, err)
		}
		got[fmt.Sprintf("%s/%d", k, at.Unix()/60)] = a
	}
	if err := rs.Err(); err != nil {
		t.Fatal(err)
	}
	bad := 0
	for win, a := range want {
		if got[win] != a {
			if bad++; bad <= 5 {
				t.Errorf("window %s: %+v, want %+v", win, got[win], a)
			}
		}
	}
	if bad > 0 || len(got) != len(want) {
		t.Fatalf("%d of %d windows wrong; %d written", bad, len(want), len(got))
	}
	t.Logf("killed with %d of %d records read; the resumed run completed the %d windows", read, rows, len(want))
}
