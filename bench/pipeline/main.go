// Command pipeline measures the pipeline engine against a hand-written
// Go program doing the same work with the same batch size, in the same
// run: a generated CSV file through a filter and a map into a table.
//
//	go run ./bench/pipeline -rows 1000000 -batch 1000 [-dsn postgres://...]
package main

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/csv"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"time"

	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/internal/natsembed"
	"github.com/junctionhq/junction/internal/sqldb"
	"github.com/junctionhq/junction/pipeline"
)

func main() {
	rows := flag.Int("rows", 1_000_000, "rows in the generated CSV file")
	batch := flag.Int("batch", 1000, "rows per transaction, for both")
	dsn := flag.String("dsn", "", "database (empty: SQLite in a temp dir; postgres://...)")
	rounds := flag.Int("rounds", 2, "rounds of both phases")
	profile := flag.String("cpuprofile", "", "write a CPU profile of the pipeline phases to this file")
	flag.Parse()
	if *profile != "" {
		f, err := os.Create(*profile)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		cpuProfile = f
	}
	if err := run(*rows, *batch, *dsn, *rounds); err != nil {
		fmt.Fprintln(os.Stderr, "pipeline bench:", err)
		os.Exit(1)
	}
}

var cpuProfile *os.File

func run(rows, batch int, dsn string, rounds int) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "junction-pipeline-bench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	csvPath := filepath.Join(dir, "sales.csv")
	if err := generate(csvPath, rows); err != nil {
		return err
	}
	st, _ := os.Stat(csvPath)
	db, err := sqldb.Open(ctx, dsn, dir)
	if err != nil {
		return err
	}
	defer db.Close()
	nc, err := natsembed.Start(ctx, natsembed.Options{DataDir: dir, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	defer nc.Close()
	fmt.Printf("pipeline bench: %d rows (%.1f MB of CSV), batches of %d, database %s\n", rows, float64(st.Size())/1e6, batch, db.Dialect)
	for round := 1; round <= rounds; round++ {
		for _, table := range []string{"direct_sales", "pipeline_sales"} {
			if _, err := db.ExecContext(ctx, "DROP TABLE IF EXISTS "+table); err != nil {
				return err
			}
			if _, err := db.ExecContext(ctx, "CREATE TABLE "+table+" (sku TEXT, amount_eur REAL, day TEXT)"); err != nil {
				return err
			}
		}
		start := time.Now()
		n, err := direct(ctx, db, csvPath, batch)
		if err != nil {
			return fmt.Errorf("direct: %w", err)
		}
		dDirect := time.Since(start)
		start = time.Now()
		if cpuProfile != nil {
			_ = pprof.StartCPUProfile(cpuProfile)
		}
		s, err := viaPipeline(ctx, db, nc, csvPath, batch, round)
		if cpuProfile != nil {
			pprof.StopCPUProfile()
			cpuProfile = nil
		}
		if err != nil {
			return fmt.Errorf("pipeline: %w", err)
		}
		dPipe := time.Since(start)
		if s.Written != int64(n) {
			return fmt.Errorf("pipeline wrote %d rows, direct %d", s.Written, n)
		}
		rd, rp := float64(rows)/dDirect.Seconds(), float64(rows)/dPipe.Seconds()
		fmt.Printf("round %d: direct %.0f rows/s (%v), pipeline %.0f rows/s (%v), ratio %.2fx; %d rows kept by the filter\n",
			round, rd, dDirect.Round(time.Millisecond), rp, dPipe.Round(time.Millisecond), rp/rd, n)
	}
	return nil
}

// generate writes rows of sku,amount,day; one in ten has a negative
// amount, which the filter drops.
func generate(path string, rows int) error {
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

// direct is the hand-written program: parse, filter, map, insert in
// transactions of batch rows with one prepared statement.
func direct(ctx context.Context, db *sqldb.DB, path string, batch int) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	r := csv.NewReader(bufio.NewReaderSize(f, 256<<10))
	r.ReuseRecord = true
	if _, err := r.Read(); err != nil {
		return 0, err
	}
	q := "INSERT INTO direct_sales (sku, amount_eur, day) VALUES (?, ?, ?)"
	if db.Dialect == "postgres" {
		q = "INSERT INTO direct_sales (sku, amount_eur, day) VALUES ($1, $2, $3)"
	}
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
	for {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return n, err
		}
		amount, err := strconv.ParseFloat(rec[1], 64)
		if err != nil {
			continue
		}
		if amount <= 0 {
			continue
		}
		if tx == nil {
			if tx, err = db.BeginTx(ctx, nil); err != nil {
				return n, err
			}
			if st, err = tx.PrepareContext(ctx, q); err != nil {
				return n, err
			}
		}
		if _, err := st.ExecContext(ctx, rec[0], amount*0.92, rec[2]); err != nil {
			return n, err
		}
		n++
		if inTx++; inTx == batch {
			if err := commit(); err != nil {
				return n, err
			}
		}
	}
	return n, commit()
}

func viaPipeline(ctx context.Context, db *sqldb.DB, nc *natsembed.Conn, path string, batch, round int) (pipeline.Summary, error) {
	name := fmt.Sprintf("sales_%d", round)
	p := &config.Pipeline{
		Input: &config.PipelineInput{CSV: &config.FileInput{Path: path, Columns: map[string]string{"amount": "real"}}},
		Processors: []*config.PipelineProcess{
			{Filter: "row.amount > 0.0"},
			{Map: map[string]string{"sku": "row.sku", "amount_eur": "row.amount * 0.92", "day": "row.day"}},
		},
		Batch:  config.PipelineBatch{Count: batch, Period: config.Duration(time.Hour)},
		Output: &config.PipelineOutput{SQL: &config.SQLOutput{Table: "pipeline_sales", Mode: "insert"}},
	}
	cfg := config.Default()
	cfg.Pipelines = map[string]*config.Pipeline{name: p}
	if err := cfg.Validate(); err != nil {
		return pipeline.Summary{}, err
	}
	m, err := pipeline.New(ctx, pipeline.Options{Pipelines: cfg.Pipelines, Env: pipeline.Env{
		DB: db, JS: nc.JS, Prefix: "bench", Logger: slog.New(slog.DiscardHandler)}})
	if err != nil {
		return pipeline.Summary{}, err
	}
	defer m.Stop(ctx)
	s, err := m.Run(ctx, name, nil)
	if err == nil && s.Status != "completed" {
		err = fmt.Errorf("run %s: %s", s.Status, s.Error)
	}
	return s, err
}
