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
