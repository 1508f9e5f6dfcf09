package pipeline

import (
	"bufio"
	"context"

	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"

	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/internal/sqldb"
)

// sqlOutput writes records as rows, each batch in one transaction:
// insert, or upsert on the key. SQLite runs one prepared statement per
// row; PostgreSQL inserts with COPY and upserts with multi-row INSERT
// ... ON CONFLICT (see sqlcopy.go); MySQL and MariaDB use multi-row
// INSERT [... ON DUPLICATE KEY UPDATE].
type sqlOutput struct {
	db      *sqldb.DB
	cfg     *config.SQLOutput
	columns []string
	stmt    string
	// pg are the column types for COPY; nil when the table has a column
	// COPY cannot encode (then inserts are multi-row INSERTs).
	pg       *pgColumns
	prepared bool
}

func newSQLOutput(db *sqldb.DB, cfg *config.SQLOutput) *sqlOutput {
	return &sqlOutput{db: db, cfg: cfg, columns: cfg.Columns}
}

func (o *sqlOutput) prepare(ctx context.Context, first *Record) error {
	if o.columns == nil {
		o.columns = sortedKeys(first.Map())
	}
	ph := make([]string, len(o.columns))
	for i := range ph {
		if o.db.Dialect == "postgres" {
			ph[i] = fmt.Sprintf("$%d", i+1)
		} else {
			ph[i] = "?"
		}
	}
	o.stmt = fmt.Sprintf("INSERT INTO %s (%s) VALUES (%s)", o.cfg.Table, strings.Join(o.columns, ", "), strings.Join(ph, ", ")) + o.upsertClause()
	if o.db.Dialect == "postgres" && o.cfg.Mode != "upsert" {
		err := withPgx(ctx, o.db.DB, func(c *pgx.Conn) error {
			pc, err := pgColumnTypes(ctx, c, o.cfg.Table, o.columns)
			if err == nil && pc.copyable() {
				o.pg = pc
			}
			return err
		})
		if err != nil {
			return fmt.Errorf("%s: %w", o.cfg.Table, err)
		}
	}
	o.prepared = true
	return nil
}

func sqlValue(v any) any {
	switch x := v.(type) {
	case map[string]any, []any:
		b, _ := json.Marshal(x)
		return string(b)
	}
	return v
}

func (o *sqlOutput) Write(ctx context.Context, recs []*Record) error {
	if len(recs) == 0 {
		return nil
	}
	if !o.prepared {
		if err := o.prepare(ctx, recs[0]); err != nil {
			return err
		}
	}
	switch {
	case o.pg != nil:
		return o.pgCopy(ctx, recs)
	case o.db.Dialect == "postgres" || o.db.Dialect == "mysql":
		return o.writeMulti(ctx, recs)
	}
	tx, err := o.db.DB.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	st, err := tx.PrepareContext(ctx, o.stmt)
	if err != nil {
		return fmt.Errorf("%s: %w", o.cfg.Table, err)
	}
	defer st.Close()
	args := make([]any, len(o.columns))
	// SQLite's driver watches a cancellable context with a goroutine per
	// statement (a third of the cost of a row); the rows of one batch
	// are bounded work, so they run without one, and ctx is checked
	// between them.
	rowCtx := context.WithoutCancel(ctx)
	for n, r := range recs {
		if n%256 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		for i, c := range o.columns {
			args[i] = sqlValue(r.Value(c))
		}
		if _, err := st.ExecContext(rowCtx, args...); err != nil {
			return fmt.Errorf("%s: %w", o.cfg.Table, err)
		}
	}
	return tx.Commit()
}

func (o *sqlOutput) Close() error { return nil }

// fileOutput appends JSON lines or CSV rows to a file, rotating it by
// size.
type fileOutput struct {
	mu      sync.Mutex
	kind    string
	cfg     *config.FileOutput
	f       *os.File
	w       *bufio.Writer
	csv     *csv.Writer
	size    int64
	columns []string
	seq     int
	enc     jsonLine
}

func newFileOutput(kind string, cfg *config.FileOutput) *fileOutput {
	return &fileOutput{kind: kind, cfg: cfg, columns: cfg.Columns}
}

func (o *fileOutput) open() error {
	if err := os.MkdirAll(filepath.Dir(o.cfg.Path), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(o.cfg.Path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	o.f, o.size, o.w = f, st.Size(), bufio.NewWriterSize(f, 256<<10)
	if o.kind == "csv" {
		o.csv = csv.NewWriter(o.w)
		if o.size == 0 && o.columns != nil {
			_ = o.csv.Write(o.columns)
		}
	}
	return nil
}

type countingWriter struct {
	w io.Writer
	n *int64
}

func (c countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	*c.n += int64(n)
	return n, err
}

func (o *fileOutput) Write(_ context.Context, recs []*Record) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.f == nil {
		if o.kind == "csv" && o.columns == nil && len(recs) > 0 {
			o.columns = sortedKeys(recs[0].Map())
		}
		if err := o.open(); err != nil {
			return err
		}
	}
	cw := countingWriter{o.w, &o.size}
	row := make([]string, len(o.columns))
	for _, r := range recs {
		if o.kind == "jsonl" {
			b, err := o.enc.encode(recordJSON(r))
			if err != nil {
				return err
			}
			if _, err := cw.Write(b); err != nil {
				return err
			}
			continue
		}
		for i, c := range o.columns {
			row[i] = text(r.Value(c))
		}
		if err := o.csv.Write(row); err != nil {
			return err
		}
	}
	if o.csv != nil {
		o.csv.Flush()
		if err := o.csv.Error(); err != nil {
			return err
		}
	}
	if err := o.w.Flush(); err != nil {
		return err
	}
	if err := o.f.Sync(); err != nil {
		return err
	}
	if o.kind == "csv" {
		if st, err := o.f.Stat(); err == nil {
			o.size = st.Size()
		}
	}
	if o.cfg.RotateBytes > 0 && o.size >= o.cfg.RotateBytes {
		return o.rotate()
	}
	return nil
}

// rotate renames the full file PATH.N (the next free N) and starts a new
// one at the next write.
func (o *fileOutput) rotate() error {
	if err := o.f.Close(); err != nil {
		return err
	}
	o.f = nil
	for {
		o.seq++
		next := fmt.Sprintf("%s.%d", o.cfg.Path, o.seq)
		if _, err := os.Stat(next); os.IsNotExist(err) {
			return os.Rename(o.cfg.Path, next)
		}
	}
}

// recordJSON is a record as a dead letter or a JSON line shows it: its
// fields, and its error when it has one.
func recordJSON(r *Record) map[string]any {
	if r.Err == nil {
		return r.Map()
	}
	return map[string]any{"record": r.Map(), "error": r.Err.Error()}
}

func text(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case map[string]any, []any:
		b, _ := json.Marshal(x)
		return string(b)
	}
	return fmt.Sprint(v)
}

func (o *fileOutput) Close() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.f == nil {
		return nil
	}
	return o.f.Close()
}

// writerOutput writes JSON lines to a writer (stdout).
type writerOutput struct {
	mu sync.Mutex
	w  io.Writer
}

func (o *writerOutput) Write(_ context.Context, recs []*Record) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	bw := bufio.NewWriter(o.w)
	enc := json.NewEncoder(bw)
	for _, r := range recs {
		if err := enc.Encode(recordJSON(r)); err != nil {
			return err
		}
	}
	return bw.Flush()
}

func (o *writerOutput) Close() error { return nil }
