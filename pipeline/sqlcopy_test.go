package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/internal/sqldb"
)

// What the connector tests (package pipeline_test) reach inside.

// ConnBuildInput builds an input as a run does.
func ConnBuildInput(ctx context.Context, env *Env, cfg *config.PipelineInput, resume json.RawMessage) (Input, error) {
	return buildInput(ctx, env, cfg, resume)
}

// ConnBuildOutput builds an output as a run does.
func ConnBuildOutput(ctx context.Context, env *Env, cfg *config.PipelineOutput) (Output, error) {
	return buildOutput(ctx, env, cfg)
}

// ConnUsesCopy says whether an SQL output inserts with COPY.
func ConnUsesCopy(o Output) bool {
	if c, ok := o.(*closingOutput); ok {
		o = c.Output
	}
	s, ok := o.(*sqlOutput)
	return ok && s.pg != nil
}

// Measurements of PostgreSQL writes, 1000-row batches:
//
//	go test ./pipeline/ -run '^$' -bench PostgresWrite -benchtime 20x
func BenchmarkPostgresWrite(b *testing.B) {
	batch := func(i int) []*Record {
		out := make([]*Record, 1000)
		for j := range out {
			out[j] = &Record{Fields: map[string]any{"id": int64(i*1000 + j), "name": fmt.Sprint("n", j), "amount": float64(j) / 4, "at": "2026-01-02T03:04:05Z"}}
		}
		return out
	}
	for _, c := range []struct {
		name string
		mode string
		path string
	}{{"insert/copy", "insert", "copy"}, {"insert/prepared", "insert", "prepared"}, {"insert/multirow", "insert", "multi"},
		{"upsert/multirow", "upsert", "multi"}, {"upsert/stage", "upsert", "stage"}, {"upsert/prepared", "upsert", "prepared"}} {
		b.Run(c.name, func(b *testing.B) {
			if c, err := net.DialTimeout("tcp", "127.0.0.1:5432", time.Second); err != nil {
				b.Skip("PostgreSQL is unreachable")
			} else {
				c.Close()
			}
			ctx := context.Background()
			db, err := sqldb.Open(ctx, "postgres://postgres@127.0.0.1:5432/test?sslmode=disable", "")
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			table := fmt.Sprintf("pl_bench_%d", os.Getpid())
			_, _ = db.ExecContext(ctx, "DROP TABLE IF EXISTS "+table)
			if _, err := db.ExecContext(ctx, `CREATE TABLE `+table+` (id bigint PRIMARY KEY, name text, amount double precision, at timestamptz)`); err != nil {
				b.Fatal(err)
			}
			defer db.ExecContext(ctx, "DROP TABLE "+table)
			out := newSQLOutput(db, &config.SQLOutput{Table: table, Mode: c.mode, Key: []string{"id"}})
			if err := out.Write(ctx, batch(-1)); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := range b.N {
				recs := batch(i % 5) // upserts hit existing rows after the first rounds
				if c.mode == "insert" {
					recs = batch(i)
				}
				var err error
				switch c.path {
				case "copy":
					err = out.pgCopy(ctx, recs)
				case "multi":
					err = out.writeMulti(ctx, recs)
				case "prepared":
					err = benchPrepared(ctx, out, recs)
				case "stage":
					err = benchStage(ctx, out, recs)
				}
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func benchPrepared(ctx context.Context, o *sqlOutput, recs []*Record) error {
	tx, err := o.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	st, err := tx.PrepareContext(ctx, o.stmt)
	if err != nil {
		return err
	}
	for _, r := range recs {
		args := make([]any, len(o.columns))
		for i, c := range o.columns {
			args[i] = sqlValue(r.Fields[c])
		}
		if _, err := st.ExecContext(ctx, args...); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// benchStage is the other upsert: COPY into a temporary table, then
// INSERT ... SELECT ... ON CONFLICT.
func benchStage(ctx context.Context, o *sqlOutput, recs []*Record) error {
	return withPgx(ctx, o.db.DB, func(c *pgx.Conn) error {
		pc, err := pgColumnTypes(ctx, c, o.cfg.Table, o.columns)
		if err != nil {
			return err
		}
		tx, err := c.Begin(ctx)
		if err != nil {
			return err
		}
		defer func() { _ = tx.Rollback(ctx) }()
		stage := "stage_" + o.cfg.Table
		if _, err := tx.Exec(ctx, fmt.Sprintf("CREATE TEMP TABLE IF NOT EXISTS %s (LIKE %s) ON COMMIT DELETE ROWS", stage, o.cfg.Table)); err != nil {
			return err
		}
		rows := make([][]any, len(recs))
		for r, rec := range recs {
			rows[r] = make([]any, len(o.columns))
			for i, col := range o.columns {
				if rows[r][i], err = pc.convert(i, rec.Fields[col]); err != nil {
					return err
				}
			}
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{stage}, o.columns, pgx.CopyFromRows(rows)); err != nil {
			return err
		}
		cols := strings.Join(o.columns, ", ")
		if _, err := tx.Exec(ctx, fmt.Sprintf("INSERT INTO %s (%s) SELECT %s FROM %s", o.cfg.Table, cols, cols, stage)+o.upsertClause()); err != nil {
			return err
		}
		return tx.Commit(ctx)
	})
}
