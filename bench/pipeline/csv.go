package main

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/csv"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/internal/sqldb"
)

// The csv and pg phases: rows of sku,amount,day, of which the filter
// keeps those with a positive amount (nine in ten) and the map converts
// the amount to euros, into a table (sku, amount_eur, day).

func (e *env) csvPhase(name string, db *sqldb.DB) *phase {
	path := filepath.Join(e.dir, "sales.csv")
	// PostgreSQL tables are named after the process, so that runs sharing
	// a database do not meet.
	direct, pipe := "bench_direct_sales", "bench_pipeline_sales"
	if db.Dialect == "postgres" {
		direct, pipe = fmt.Sprintf("%s_%d", direct, os.Getpid()), fmt.Sprintf("%s_%d", pipe, os.Getpid())
	}
	realType := "REAL"
	if db.Dialect == "postgres" {
		realType = "DOUBLE PRECISION"
	}
	kept := 0
	reset := func(ctx context.Context) error {
		for _, t := range []string{direct, pipe} {
			if _, err := db.ExecContext(ctx, "DROP TABLE IF EXISTS "+t); err != nil {
				return err
			}
			if _, err := db.ExecContext(ctx, "CREATE TABLE "+t+" (sku TEXT, amount_eur "+realType+", day TEXT)"); err != nil {
				return err
			}
		}
		return nil
	}
	p := &phase{name: name, records: e.o.rows}
	p.prepare = func(ctx context.Context) error {
		if _, err := os.Stat(path); os.IsNotExist(err) {
			if err := generateSales(path, e.o.rows); err != nil {
				return err
			}
		}
		st, err := os.Stat(path)
		if err != nil {
			return err
		}
		how := "one prepared INSERT per row, a transaction per batch"
		if db.Dialect == "postgres" {
			var v string
			if err := db.QueryRowContext(ctx, "SHOW server_version").Scan(&v); err != nil {
				return err
			}
			how = "PostgreSQL " + v + ", COPY (pgx CopyFrom) per batch"
		}
		p.what = fmt.Sprintf("%d rows (%.1f MB of CSV) through filter + map into %s, %s", e.o.rows, float64(st.Size())/1e6, db.Dialect, how)
		return nil
	}
	p.direct = func(ctx context.Context, _ int) error {
		if err := reset(ctx); err != nil {
			return err
		}
		var err error
		if db.Dialect == "postgres" {
			kept, err = directPgCopy(ctx, db, path, direct, e.o.batch)
		} else {
			kept, err = directSQL(ctx, db, path, direct, e.o.batch)
		}
		return err
	}
	p.pipe = func(ctx context.Context, round int) error {
		pl := &config.Pipeline{
			Input: &config.PipelineInput{CSV: &config.FileInput{Path: path, Columns: map[string]string{"amount": "real"}}},
			Processors: []*config.PipelineProcess{
				{Filter: "row.amount > 0.0"},
				{Map: map[string]string{"sku": "row.sku", "amount_eur": "row.amount * 0.92", "day": "row.day"}},
			},
			Batch:  config.PipelineBatch{Count: e.o.batch, Period: config.Duration(time.Hour)},
			Output: &config.PipelineOutput{SQL: &config.SQLOutput{Table: pipe, Mode: "insert"}},
		}
		s, err := e.runBatch(ctx, fmt.Sprintf("%s_%d", name, round), pl, db)
		if err != nil {
			return err
		}
		if s.Written != int64(kept) || s.Read != int64(e.o.rows) {
			return fmt.Errorf("read %d, wrote %d rows; the direct program read %d and wrote %d", s.Read, s.Written, e.o.rows, kept)
		}
		return nil
	}
	p.verify = func(ctx context.Context, _ int) error {
		var nd, np int
		var sd, sp float64
		q := "SELECT COUNT(*), COALESCE(SUM(amount_eur), 0) FROM "
		if err := db.QueryRowContext(ctx, q+direct).Scan(&nd, &sd); err != nil {
			return err
		}
		if err := db.QueryRowContext(ctx, q+pipe).Scan(&np, &sp); err != nil {
			return err
		}
		if nd != np || nd != kept || fmt.Sprintf("%.2f", sd) != fmt.Sprintf("%.2f", sp) {
			return fmt.Errorf("tables differ: direct %d rows (sum %.2f), pipeline %d rows (sum %.2f)", nd, sd, np, sp)
		}
		if db.Dialect == "postgres" {
			for _, t := range []string{direct, pipe} {
				_, _ = db.ExecContext(ctx, "DROP TABLE IF EXISTS "+t)
			}
		}
		return nil
	}
	return p
}

// generateSales writes rows of sku,amount,day; one in ten has a negative
// amount, which the filter drops.
func generateSales(path string, rows int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	fmt.Fprintln(w, "sku,amount,day")
	for i := range rows {
		amount := float64(i%1000) + 0.25
		if i%10 == 0 {
			amount = -amount
		}
		fmt.Fprintf(w, "sku-%d,%.2f,2026-01-%02d\n", i%5000, amount, 1+i%28)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	return f.Close()
}

// saleRows reads the CSV file, filters and maps each row, and hands the
// rows kept to row: the part both hand-written programs share.
func saleRows(path string, row func(sku string, amountEUR float64, day string) error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	r := csv.NewReader(bufio.NewReaderSize(f, 256<<10))
	r.ReuseRecord = true
	if _, err := r.Read(); err != nil {
		return err
	}
	for {
		rec, err := r.Read()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		amount, err := strconv.ParseFloat(rec[1], 64)
		if err != nil || amount <= 0 {
			continue
		}
		if err := row(rec[0], amount*0.92, rec[2]); err != nil {
			return err
		}
	}
}

// directSQL is the hand-written program for SQLite: parse, filter, map,
// insert in transactions of batch rows with one prepared statement.
func directSQL(ctx context.Context, db *sqldb.DB, path, table string, batch int) (int, error) {
	q := "INSERT INTO " + table + " (sku, amount_eur, day) VALUES (?, ?, ?)"
	var tx *sql.Tx
	var st *sql.Stmt
	n, inTx := 0, 0
	commit := func() error {
		if tx == nil {
			return nil
		}
		st.Close()
		err := tx.Commit()
		tx, inTx = nil, 0
		return err
	}
	err := saleRows(path, func(sku string, amount float64, day string) error {
		if tx == nil {
			var err error
			if tx, err = db.BeginTx(ctx, nil); err != nil {
				return err
			}
			if st, err = tx.PrepareContext(ctx, q); err != nil {
				return err
			}
		}
		if _, err := st.ExecContext(ctx, sku, amount, day); err != nil {
			return err
		}
		n++
		if inTx++; inTx == batch {
			return commit()
		}
		return nil
	})
	if err != nil {
		if tx != nil {
			_ = tx.Rollback()
		}
		return n, err
	}
	return n, commit()
}

// directPgCopy is the hand-written program for PostgreSQL: parse,
// filter, map, and COPY batch rows at a time (pgx CopyFrom on one of
// db's connections).
func directPgCopy(ctx context.Context, db *sqldb.DB, path, table string, batch int) (int, error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	n := 0
	err = conn.Raw(func(dc any) error {
		sc, ok := dc.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("not a pgx connection: %T", dc)
		}
		c := sc.Conn()
		cols := []string{"sku", "amount_eur", "day"}
		rows := make([][]any, 0, batch)
		flush := func() error {
			if len(rows) == 0 {
				return nil
			}
			if _, err := c.CopyFrom(ctx, pgx.Identifier{table}, cols, pgx.CopyFromRows(rows)); err != nil {
				return err
			}
			rows = rows[:0]
			return nil
		}
		err := saleRows(path, func(sku string, amount float64, day string) error {
			rows = append(rows, []any{sku, amount, day})
			n++
			if len(rows) == batch {
				return flush()
			}
			return nil
		})
		if err != nil {
			return err
		}
		return flush()
	})
	return n, err
}
