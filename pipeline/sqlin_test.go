package pipeline_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/internal/natsembed"
	"github.com/junctionhq/junction/internal/sqldb"
	"github.com/junctionhq/junction/internal/testutil"
	"github.com/junctionhq/junction/pipeline"
)

const (
	testPostgresDSN = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	testMariaDSN    = "mysql://root@tcp(127.0.0.1:3306)/test"
)

var connTables atomic.Int64

// connTable is a table name unique to this test process.
func connTable(name string) string {
	return fmt.Sprintf("pl_%s_%d_%d", name, os.Getpid(), connTables.Add(1))
}

func connCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// connDB opens PostgreSQL or MariaDB (skipping when it is not there) and
// drops the tables named in drop when the test ends.
func connDB(t testing.TB, dsn string, drop ...*string) *sqldb.DB {
	t.Helper()
	name, addr := "PostgreSQL", "127.0.0.1:5432"
	if strings.HasPrefix(dsn, "mysql:") {
		name, addr = "MariaDB", "127.0.0.1:3306"
	}
	testutil.RequireService(t, name, addr)
	db, err := sqldb.Open(context.Background(), dsn, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, d := range drop {
			_, _ = db.ExecContext(context.Background(), "DROP TABLE IF EXISTS "+*d)
		}
		db.Close()
	})
	return db
}

func connExec(t testing.TB, db *sqldb.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.ExecContext(connCtx(t), q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

func connRecs(fields ...map[string]any) []*pipeline.Record {
	out := make([]*pipeline.Record, len(fields))
	for i, f := range fields {
		out[i] = &pipeline.Record{Fields: f}
	}
	return out
}

var connPrefixes atomic.Int64

// connEnv is an embedded JetStream with the pipelines' bucket and a
// SQLite database in a temp dir, for pipeline name.
func connEnv(t *testing.T, name string) *pipeline.Env {
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
	prefix := fmt.Sprintf("c%d", connPrefixes.Add(1))
	if _, err := nc.JS.CreateOrUpdateKeyValue(connCtx(t), jetstream.KeyValueConfig{Bucket: prefix + "_pipelines", History: 1}); err != nil {
		t.Fatal(err)
	}
	return &pipeline.Env{Pipeline: name, DB: db, JS: nc.JS, Prefix: prefix, Logger: testutil.Logger(t),
		Open: func(ctx context.Context, dsn string) (*sqldb.DB, error) { return sqldb.Open(ctx, dsn, dir) }}
}

func connOutput(t *testing.T, db *sqldb.DB, cfg *config.SQLOutput) pipeline.Output {
	t.Helper()
	out, err := pipeline.ConnBuildOutput(connCtx(t), &pipeline.Env{DB: db}, &config.PipelineOutput{SQL: cfg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { out.Close() })
	return out
}

// TestSQLOutputPostgresCopy: inserts go through COPY, with values
// converted to the columns' types (JSON numbers into integers, RFC 3339
// text into timestamps, maps into jsonb, numbers into text); a failing
// row fails the whole batch and writes nothing.
func TestSQLOutputPostgresCopy(t *testing.T) {
	table := connTable("copy")
	db := connDB(t, testPostgresDSN, &table)
	ctx := connCtx(t)
	connExec(t, db, `CREATE TABLE `+table+` (id bigint PRIMARY KEY, n int, at timestamptz, doc jsonb, amount numeric, label text, ok boolean, day date)`)
	out := connOutput(t, db, &config.SQLOutput{Table: table})
	err := out.Write(ctx, connRecs(
		map[string]any{"id": float64(1), "n": float64(7), "at": "2026-01-02T03:04:05Z", "doc": map[string]any{"a": 1.0}, "amount": 1.25, "label": int64(42), "ok": true, "day": "2026-01-02"},
		map[string]any{"id": int64(2), "n": nil, "at": time.Date(2026, 2, 3, 4, 5, 6, 0, time.UTC), "doc": []any{"x"}, "amount": "3.5", "label": "two", "ok": "false", "day": nil},
	))
	if err != nil {
		t.Fatal(err)
	}
	if !pipeline.ConnUsesCopy(out) {
		t.Fatal("the insert did not use COPY")
	}
	type row struct {
		id     int64
		n      *int64
		at     time.Time
		doc    string
		amount string
		label  string
		ok     bool
	}
	rows, err := db.QueryContext(ctx, `SELECT id, n, at, doc::text, amount::text, label, ok FROM `+table+` ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	var got []row
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.id, &r.n, &r.at, &r.doc, &r.amount, &r.label, &r.ok); err != nil {
			t.Fatal(err)
		}
		got = append(got, r)
	}
	rows.Close()
	if len(got) != 2 || got[0].n == nil || *got[0].n != 7 || !got[0].at.Equal(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)) ||
		got[0].doc != `{"a": 1}` || got[0].amount != "1.25" || got[0].label != "42" || !got[0].ok ||
		got[1].n != nil || got[1].doc != `["x"]` || got[1].amount != "3.5" || got[1].label != "two" || got[1].ok {
		t.Fatalf("rows: %+v", got)
	}
	// A duplicate key fails the batch: nothing of it is stored.
	if err := out.Write(ctx, connRecs(map[string]any{"id": 3}, map[string]any{"id": 1})); err == nil {
		t.Fatal("a duplicate key was accepted")
	}
	var n int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM `+table).Scan(&n); err != nil || n != 2 {
		t.Fatalf("count %d %v", n, err)
	}
	// 2000 rows in one batch.
	var many []*pipeline.Record
	for i := range 2000 {
		many = append(many, &pipeline.Record{Fields: map[string]any{"id": 10 + i, "label": fmt.Sprint("r", i)}})
	}
	if err := out.Write(ctx, many); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM `+table).Scan(&n); err != nil || n != 2002 {
		t.Fatalf("count %d %v", n, err)
	}
}

// TestSQLOutputPostgresUpsert: upserts replace rows on the key; a batch
// holding a key twice keeps its last record.
func TestSQLOutputPostgresUpsert(t *testing.T) {
	table := connTable("upsert")
	db := connDB(t, testPostgresDSN, &table)
	ctx := connCtx(t)
	connExec(t, db, `CREATE TABLE `+table+` (k text, v bigint, note text, PRIMARY KEY (k))`)
	out := connOutput(t, db, &config.SQLOutput{Table: table, Mode: "upsert", Key: []string{"k"}, Columns: []string{"k", "v", "note"}})
	if err := out.Write(ctx, connRecs(map[string]any{"k": "a", "v": 1, "note": "x"}, map[string]any{"k": "b", "v": 2})); err != nil {
		t.Fatal(err)
	}
	if err := out.Write(ctx, connRecs(map[string]any{"k": "a", "v": 10}, map[string]any{"k": "c", "v": 3}, map[string]any{"k": "a", "v": 11, "note": "last"})); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	rows, err := db.QueryContext(ctx, `SELECT k, v, coalesce(note, '') FROM `+table)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var k, note string
		var v int64
		if err := rows.Scan(&k, &v, &note); err != nil {
			t.Fatal(err)
		}
		got[k] = fmt.Sprint(v, note)
	}
	rows.Close()
	if fmt.Sprint(got) != "map[a:11last b:2 c:3]" {
		t.Fatalf("rows %v", got)
	}
}

// TestSQLOutputMariaDB: insert and upsert round trip on MariaDB.
func TestSQLOutputMariaDB(t *testing.T) {
	table := connTable("maria_out")
	db := connDB(t, testMariaDSN, &table)
	if db.Dialect != "mysql" {
		t.Fatalf("dialect %s", db.Dialect)
	}
	ctx := connCtx(t)
	connExec(t, db, `CREATE TABLE `+table+` (id BIGINT PRIMARY KEY, name VARCHAR(50), doc JSON, at DATETIME(3))`)
	ins := connOutput(t, db, &config.SQLOutput{Table: table})
	at := time.Date(2026, 3, 4, 5, 6, 7, 8e6, time.UTC)
	if err := ins.Write(ctx, connRecs(map[string]any{"id": 1, "name": "a", "doc": map[string]any{"x": 1.0}, "at": at},
		map[string]any{"id": 2, "name": "b", "doc": nil, "at": nil})); err != nil {
		t.Fatal(err)
	}
	up := connOutput(t, db, &config.SQLOutput{Table: table, Mode: "upsert", Key: []string{"id"}, Columns: []string{"id", "name"}})
	if err := up.Write(ctx, connRecs(map[string]any{"id": 2, "name": "b2"}, map[string]any{"id": 3, "name": "c"})); err != nil {
		t.Fatal(err)
	}
	rows, err := db.QueryContext(ctx, `SELECT id, name, coalesce(doc, ''), at FROM `+table+` ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var id int64
		var name, doc string
		var tm *time.Time
		if err := rows.Scan(&id, &name, &doc, &tm); err != nil {
			t.Fatal(err)
		}
		s := fmt.Sprint(id, name, doc)
		if tm != nil {
			s += " " + tm.UTC().Format(time.RFC3339Nano)
		}
		got = append(got, s)
	}
	rows.Close()
	if want := `1a{"x":1} 2026-03-04T05:06:07.008Z|2b2|3c`; strings.Join(got, "|") != want {
		t.Fatalf("rows %q, want %q", strings.Join(got, "|"), want)
	}
}

// connDrain reads in to its end, committing each page's last record as
// the runner would, and returns the records.
func connDrain(t *testing.T, in pipeline.Input) []*pipeline.Record {
	t.Helper()
	ctx := connCtx(t)
	var all []*pipeline.Record
	for range 1000 {
		recs, err := in.Next(ctx)
		if errors.Is(err, io.EOF) {
			return all
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) > 0 {
			if err := in.Commit(ctx, recs[len(recs)-1].Pos); err != nil {
				t.Fatal(err)
			}
		}
		all = append(all, recs...)
	}
	t.Fatal("the input did not end")
	return nil
}

func connInput(t *testing.T, e *pipeline.Env, cfg *config.PipelineInput, resume json.RawMessage) pipeline.Input {
	t.Helper()
	in, err := pipeline.ConnBuildInput(connCtx(t), e, cfg, resume)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close() })
	return in
}

func connField(recs []*pipeline.Record, f string) string {
	var out []string
	for _, r := range recs {
		out = append(out, fmt.Sprint(r.Fields[f]))
	}
	return strings.Join(out, ",")
}

// TestSQLInputCursor: with a cursor, a second run reads only the rows
// added since the first completed; on SQLite, PostgreSQL and MariaDB.
func TestSQLInputCursor(t *testing.T) {
	for _, c := range []struct{ name, dsn, cursor string }{
		{"sqlite", "", ":cursor"},
		{"postgres", testPostgresDSN, ":cursor::bigint"},
		{"mariadb", testMariaDSN, ":cursor"},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := connEnv(t, "cursor_"+c.name)
			table := connTable("cursor")
			db := e.DB
			if c.dsn != "" {
				db = connDB(t, c.dsn, &table)
			}
			connExec(t, db, `CREATE TABLE `+table+` (id BIGINT PRIMARY KEY, name VARCHAR(20), at TIMESTAMP NULL)`)
			insert := func(from, to int) {
				for i := from; i <= to; i++ {
					q := `INSERT INTO ` + table + ` (id, name, at) VALUES (?, ?, ?)`
					if c.name == "postgres" {
						q = `INSERT INTO ` + table + ` (id, name, at) VALUES ($1, $2, $3)`
					}
					connExec(t, db, q, i, fmt.Sprint("n", i), time.Date(2026, 1, i, 0, 0, 0, 0, time.UTC))
				}
			}
			insert(1, 5)
			cfg := &config.PipelineInput{SQL: &config.SQLInput{Database: c.dsn, Cursor: "id",
				Query: `SELECT id, name, at FROM ` + table + ` WHERE (` + c.cursor + ` IS NULL OR id > :cursor) ORDER BY id`}}
			got := connDrain(t, connInput(t, e, cfg, nil))
			if s := connField(got, "id"); s != "1,2,3,4,5" {
				t.Fatalf("first run: %s", s)
			}
			if got[0].Fields["name"] != "n1" || got[0].Fields["id"] != int64(1) {
				t.Fatalf("record %#v", got[0].Fields)
			}
			if at, _ := got[0].Fields["at"].(string); !strings.HasPrefix(at, "2026-01-01T00:00:00") {
				t.Fatalf("time %#v", got[0].Fields["at"])
			}
			insert(6, 8)
			if s := connField(connDrain(t, connInput(t, e, cfg, nil)), "id"); s != "6,7,8" {
				t.Fatalf("second run: %s", s)
			}
			if s := connField(connDrain(t, connInput(t, e, cfg, nil)), "id"); s != "" {
				t.Fatalf("third run: %s", s)
			}
		})
	}
}

// TestSQLInputResume: an interrupted run resumes after its last
// committed record, also in the middle of rows sharing a cursor value;
// the high-water mark passes a value only when all its rows are
// committed. Without a cursor, it resumes by row count.
func TestSQLInputResume(t *testing.T) {
	e := connEnv(t, "resume")
	table := connTable("resume")
	connExec(t, e.DB, `CREATE TABLE `+table+` (id INTEGER PRIMARY KEY, grp INTEGER)`)
	for i, g := range []int{1, 2, 2, 2, 3, 4} {
		connExec(t, e.DB, `INSERT INTO `+table+` (id, grp) VALUES (?, ?)`, i+1, g)
	}
	ctx := connCtx(t)
	cfg := &config.PipelineInput{SQL: &config.SQLInput{Cursor: "grp",
		Query: `SELECT id, grp FROM ` + table + ` WHERE (:cursor IS NULL OR grp > :cursor) ORDER BY grp, id`}}
	in := connInput(t, e, cfg, nil)
	recs, err := in.Next(ctx)
	if err != nil || len(recs) != 6 {
		t.Fatalf("%d records, %v", len(recs), err)
	}
	// Committed up to id 3, the second row of grp 2: the run crashes.
	mid := recs[2].Pos
	if err := in.Commit(ctx, mid); err != nil {
		t.Fatal(err)
	}
	in.Close()
	kv, err := e.JS.KeyValue(ctx, e.Prefix+"_pipelines")
	if err != nil {
		t.Fatal(err)
	}
	hw, err := kv.Get(ctx, "hw.resume")
	if err != nil || !strings.Contains(string(hw.Value()), `"v":1`) {
		t.Fatalf("high-water mark %s, %v", hw.Value(), err)
	}
	resumed := connDrain(t, connInput(t, e, cfg, mid))
	if s := connField(resumed, "id"); s != "4,5,6" {
		t.Fatalf("resumed: %s", s)
	}
	if s := connField(connDrain(t, connInput(t, e, cfg, nil)), "id"); s != "" {
		t.Fatalf("next run: %s", s)
	}

	// Without a cursor: by count.
	plain := &config.PipelineInput{SQL: &config.SQLInput{Query: `SELECT id FROM ` + table + ` ORDER BY id`}}
	in = connInput(t, e, plain, nil)
	if recs, err = in.Next(ctx); err != nil {
		t.Fatal(err)
	}
	in.Close()
	if s := connField(connDrain(t, connInput(t, e, plain, recs[3].Pos)), "id"); s != "5,6" {
		t.Fatalf("resumed without a cursor: %s", s)
	}
}

// TestSQLInputPagesAndOrder: rows come in pages of 1000; rows not
// ordered by the cursor fail the run.
func TestSQLInputPagesAndOrder(t *testing.T) {
	e := connEnv(t, "pages")
	table := connTable("pages")
	connExec(t, e.DB, `CREATE TABLE `+table+` (id INTEGER PRIMARY KEY)`)
	connExec(t, e.DB, `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2500) INSERT INTO `+table+` SELECT i FROM n`)
	ctx := connCtx(t)
	in := connInput(t, e, &config.PipelineInput{SQL: &config.SQLInput{Cursor: "id", Query: `SELECT id FROM ` + table + ` WHERE :cursor IS NULL OR id > :cursor ORDER BY id`}}, nil)
	var sizes []int
	for {
		recs, err := in.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, len(recs))
	}
	if fmt.Sprint(sizes) != "[1000 1000 500]" {
		t.Fatalf("pages %v", sizes)
	}
	desc := connInput(t, e, &config.PipelineInput{SQL: &config.SQLInput{Cursor: "id", Query: `SELECT id FROM ` + table + ` WHERE :cursor IS NULL OR id > :cursor ORDER BY id DESC`}}, nil)
	if _, err := desc.Next(ctx); err == nil || !strings.Contains(err.Error(), "ORDER BY id") {
		t.Fatalf("unordered rows: %v", err)
	}
}
