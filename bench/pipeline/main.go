// Command pipeline measures the pipeline engine against minimal
// hand-written Go programs doing the same work with the same batch size,
// in the same process and run. Four phases, each a pipeline run beside its
// hand-written twin:
//
//   - csv: a generated CSV file through a filter and a map into a SQLite
//     table (one transaction of batch rows at a time);
//   - pg: the same into a PostgreSQL table (-dsn); the pipeline's output
//     inserts with COPY, and so does the hand-written program (pgx
//     CopyFrom, batch rows at a time);
//   - stream: messages pre-published to a topic through a map into
//     another topic, measured until the output topic holds them all;
//   - window: generated records with event times through a tumbling
//     window (count and sum per key and minute) into a JSON lines file.
//
// Every phase checks that both sides produced the same result (row
// counts, message counts, identical output files). docs/PERFORMANCE.md
// ("Pipelines") gives the figures; bench/run-pipeline.sh runs it.
//
//	go run ./bench/pipeline [-phases csv,stream,window] [-dsn postgres://...] [-rounds 2]
//	go run ./bench/pipeline report < output.txt   # RESULT lines to a Markdown table
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/junctionhq/junction/bus"
	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/internal/natsembed"
	"github.com/junctionhq/junction/internal/sqldb"
	"github.com/junctionhq/junction/pipeline"
)

// Phases, in the order a round runs them.
var allPhases = []string{"csv", "pg", "stream", "window"}

type options struct {
	phases     []string
	rows       int // csv and pg: rows of the CSV file
	messages   int // stream
	records    int // window
	keys       int // window
	batch      int
	rounds     int
	dsn        string
	cpuprofile string
	json       bool
	label      string
	out        io.Writer
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "report" {
		if err := reportMarkdown(os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "pipeline report:", err)
			os.Exit(1)
		}
		return
	}
	var o options
	phases := flag.String("phases", "", "phases to run, comma-separated, of csv, pg, stream, window (default: csv, stream, window, and pg when -dsn is set)")
	flag.IntVar(&o.rows, "rows", 1_000_000, "csv and pg: rows of the generated CSV file")
	flag.IntVar(&o.messages, "messages", 200_000, "stream: messages pre-published to the input topic")
	flag.IntVar(&o.records, "records", 1_000_000, "window: records with event times")
	flag.IntVar(&o.keys, "keys", 1000, "window: distinct keys")
	flag.IntVar(&o.batch, "batch", 1000, "records per batch (transaction, COPY, publish, file write), for both sides")
	flag.IntVar(&o.rounds, "rounds", 2, "rounds of every phase")
	flag.StringVar(&o.dsn, "dsn", "", "pg: the PostgreSQL database (postgres://...)")
	flag.StringVar(&o.cpuprofile, "cpuprofile", "", "write a CPU profile of each phase's pipeline side in round 1 to this file (PHASE in the name is replaced by the phase; with several phases and no PHASE, -PHASE is added before the extension)")
	flag.BoolVar(&o.json, "json", false, "also print one RESULT line of JSON per side and phase (for the report subcommand)")
	flag.StringVar(&o.label, "label", "", "names this run in its RESULT lines")
	flag.Parse()
	o.phases = parsePhases(*phases, o.dsn)
	o.out = os.Stdout
	if err := o.check(); err != nil {
		fmt.Fprintln(os.Stderr, "pipeline bench:", err)
		os.Exit(2)
	}
	if err := run(context.Background(), o); err != nil {
		fmt.Fprintln(os.Stderr, "pipeline bench:", err)
		os.Exit(1)
	}
}

func parsePhases(s, dsn string) []string {
	if strings.TrimSpace(s) == "" {
		if dsn != "" {
			return slices.Clone(allPhases)
		}
		return []string{"csv", "stream", "window"}
	}
	var out []string
	for p := range strings.SplitSeq(s, ",") {
		if p = strings.TrimSpace(p); p != "" && !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	// Rounds run the phases in a fixed order.
	slices.SortFunc(out, func(a, b string) int { return slices.Index(allPhases, a) - slices.Index(allPhases, b) })
	return out
}

func (o *options) check() error {
	for _, p := range o.phases {
		if !slices.Contains(allPhases, p) {
			return fmt.Errorf("unknown phase %q (want %s)", p, strings.Join(allPhases, ", "))
		}
	}
	switch {
	case len(o.phases) == 0:
		return errors.New("no phase to run")
	case slices.Contains(o.phases, "pg") && !strings.HasPrefix(o.dsn, "postgres"):
		return errors.New("the pg phase needs -dsn postgres://...")
	case o.rows < 1 || o.messages < 1 || o.records < 1 || o.keys < 1 || o.batch < 1 || o.rounds < 1:
		return errors.New("-rows, -messages, -records, -keys, -batch and -rounds must be positive")
	}
	return nil
}

// Result is one side of one phase of one round.
type Result struct {
	Label string `json:"label,omitempty"`
	Round int    `json:"round"`
	Phase string `json:"phase"`
	// Side is direct (the hand-written program) or pipeline.
	Side    string  `json:"side"`
	Records int     `json:"records"`
	Seconds float64 `json:"seconds"`
	Rate    float64 `json:"rate"`
	// CPUus is this process's CPU time (user and system) per input
	// record, in microseconds; PostgreSQL's server is not included.
	CPUus float64 `json:"cpu_us"`
	Batch int     `json:"batch"`
}

// env is what the phases share: a scratch dir, the embedded NATS with a
// bus on it (assembled as a node assembles them), and a SQLite database.
type env struct {
	o   options
	dir string
	nc  *natsembed.Conn
	bus *bus.Bus
	db  *sqldb.DB // SQLite
	pg  *sqldb.DB // nil unless the pg phase runs
	log *slog.Logger
}

// prefix is the NATS prefix of the benchmark's topics and buckets.
const prefix = "plbench"

func startEnv(ctx context.Context, o options) (*env, error) {
	dir, err := os.MkdirTemp("", "junction-pipeline-bench")
	if err != nil {
		return nil, err
	}
	e := &env{o: o, dir: dir, log: slog.New(slog.DiscardHandler)}
	if e.db, err = sqldb.Open(ctx, "", dir); err != nil {
		e.close()
		return nil, err
	}
	if slices.Contains(o.phases, "pg") {
		if e.pg, err = sqldb.Open(ctx, o.dsn, dir); err != nil {
			e.close()
			return nil, fmt.Errorf("pg: %w", err)
		}
	}
	if e.nc, err = natsembed.Start(ctx, natsembed.Options{DataDir: dir, Logger: e.log}); err != nil {
		e.close()
		return nil, err
	}
	if e.bus, err = bus.New(ctx, bus.Options{NC: e.nc.NC, JS: e.nc.JS, Prefix: prefix, Config: config.Default().Bus, Logger: e.log}); err != nil {
		e.close()
		return nil, err
	}
	if err := e.bus.Start(ctx); err != nil {
		e.close()
		return nil, err
	}
	return e, nil
}

func (e *env) close() {
	if e.bus != nil {
		_ = e.bus.Stop(context.Background())
	}
	if e.nc != nil {
		e.nc.Close()
	}
	if e.pg != nil {
		e.pg.Close()
	}
	if e.db != nil {
		e.db.Close()
	}
	os.RemoveAll(e.dir)
}

// manager returns a pipeline manager of one pipeline, with the node's
// environment: its bus, its JetStream (checkpoints) and db.
func (e *env) manager(ctx context.Context, name string, p *config.Pipeline, db *sqldb.DB) (*pipeline.Manager, error) {
	cfg := config.Default()
	cfg.DataDir = e.dir
	cfg.Pipelines = map[string]*config.Pipeline{name: p}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return pipeline.New(ctx, pipeline.Options{Pipelines: cfg.Pipelines, Env: pipeline.Env{
		DB: db, JS: e.nc.JS, Prefix: prefix, Bus: e.bus, Logger: e.log, Stdout: io.Discard,
		Open: func(ctx context.Context, dsn string) (*sqldb.DB, error) { return sqldb.Open(ctx, dsn, e.dir) },
	}})
}

// runBatch runs pipeline p (a run that ends) and checks it completed.
func (e *env) runBatch(ctx context.Context, name string, p *config.Pipeline, db *sqldb.DB) (pipeline.Summary, error) {
	m, err := e.manager(ctx, name, p, db)
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

// phase is one phase's pair of sides. prepare runs once, before the
// rounds; direct and pipe run in every round and return how many input
// records they handled; verify compares their results.
type phase struct {
	name    string
	what    string
	records int
	prepare func(ctx context.Context) error
	direct  func(ctx context.Context, round int) error
	pipe    func(ctx context.Context, round int) error
	verify  func(ctx context.Context, round int) error
}

func run(ctx context.Context, o options) error {
	e, err := startEnv(ctx, o)
	if err != nil {
		return err
	}
	defer e.close()
	fmt.Fprintf(o.out, "pipeline bench: phases %s, batches of %d, %d round(s), GOMAXPROCS %d\n", strings.Join(o.phases, ","), o.batch, o.rounds, runtime.GOMAXPROCS(0))
	var phases []*phase
	for _, name := range o.phases {
		var p *phase
		switch name {
		case "csv":
			p = e.csvPhase("csv", e.db)
		case "pg":
			p = e.csvPhase("pg", e.pg)
		case "stream":
			p = e.streamPhase()
		case "window":
			p = e.windowPhase()
		}
		if err := p.prepare(ctx); err != nil {
			return fmt.Errorf("%s: preparing: %w", name, err)
		}
		fmt.Fprintf(o.out, "%s: %s\n", name, p.what)
		phases = append(phases, p)
	}
	for round := 1; round <= o.rounds; round++ {
		for _, p := range phases {
			d, err := e.measure(ctx, p, round, "direct", p.direct)
			if err != nil {
				return err
			}
			pl, err := e.measure(ctx, p, round, "pipeline", p.pipe)
			if err != nil {
				return err
			}
			if err := p.verify(ctx, round); err != nil {
				return fmt.Errorf("round %d %s: %w", round, p.name, err)
			}
			fmt.Fprintf(o.out, "round %d %-6s direct %9.0f rec/s (%7.3fs, %5.2f µs CPU/rec)  pipeline %9.0f rec/s (%7.3fs, %5.2f µs CPU/rec)  ratio %.2fx\n",
				round, p.name, d.Rate, d.Seconds, d.CPUus, pl.Rate, pl.Seconds, pl.CPUus, pl.Rate/d.Rate)
			for _, r := range []Result{d, pl} {
				if o.json {
					b, _ := json.Marshal(r)
					fmt.Fprintf(o.out, "RESULT pipeline %s\n", b)
				}
			}
		}
	}
	return nil
}

// measure runs one side of a phase, under the CPU profiler for the
// pipeline side of round 1 when asked.
func (e *env) measure(ctx context.Context, p *phase, round int, side string, f func(context.Context, int) error) (Result, error) {
	runtime.GC()
	var prof *os.File
	if side == "pipeline" && round == 1 && e.o.cpuprofile != "" {
		path := profilePath(e.o.cpuprofile, p.name, len(e.o.phases) > 1)
		var err error
		if prof, err = os.Create(path); err != nil {
			return Result{}, err
		}
		if err := pprof.StartCPUProfile(prof); err != nil {
			prof.Close()
			return Result{}, err
		}
	}
	cpu0, start := processCPU(), time.Now()
	err := f(ctx, round)
	d, cpu := time.Since(start), processCPU()-cpu0
	if prof != nil {
		pprof.StopCPUProfile()
		prof.Close()
	}
	if err != nil {
		return Result{}, fmt.Errorf("round %d %s %s: %w", round, p.name, side, err)
	}
	return Result{Label: e.o.label, Round: round, Phase: p.name, Side: side, Records: p.records, Seconds: d.Seconds(),
		Rate: float64(p.records) / d.Seconds(), CPUus: float64(cpu.Microseconds()) / float64(p.records), Batch: e.o.batch}, nil
}

func profilePath(path, phase string, several bool) string {
	if strings.Contains(path, "PHASE") {
		return strings.ReplaceAll(path, "PHASE", phase)
	}
	if !several {
		return path
	}
	ext := filepath.Ext(path)
	return strings.TrimSuffix(path, ext) + "-" + phase + ext
}

// processCPU is the CPU time (user and system) this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
