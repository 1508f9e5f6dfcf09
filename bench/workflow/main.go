// Command workflow measures Junction's workflow engine: runs of a
// three-step workflow (call a local HTTP service, publish its answer, set
// a value) started and awaited from Go, beside the same three operations
// made directly from Go, in the same process and run, at the same
// concurrency. It reports operations per second and the latency of each
// (for a run: from StartRun until Wait returns). docs/PERFORMANCE.md
// ("Workflows") gives the figures; bench/run-workflow.sh runs it.
//
// The HTTP service is a process of its own on loopback: bench/cmd/nullhttp
// (-nullhttp, else beside this binary or on PATH), else this binary
// started again as an equivalent server. The node is embedded: built-in
// defaults, a temporary data dir, the embedded NATS. The run stops by
// itself: every phase is a fixed number of operations, each bounded by
// -timeout, and the whole by -max.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/junctionhq/junction/bench/internal/benchhttp"
)

// serveEnv, set in the environment, makes this binary the HTTP service.
const serveEnv = "JUNCTION_WFBENCH_SERVE"

func main() {
	if os.Getenv(serveEnv) != "" {
		serve()
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "report" {
		if err := reportMarkdown(os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "workflow report:", err)
			os.Exit(1)
		}
		return
	}
	var o options
	flag.IntVar(&o.runs, "runs", 20000, "measured operations per phase (runs, and direct iterations)")
	flag.IntVar(&o.concurrency, "concurrency", 64, "workers per phase, each with one operation in flight")
	flag.IntVar(&o.warmup, "warmup", 500, "unmeasured operations before each phase")
	flag.BoolVar(&o.json, "json", false, "also print one RESULT line of JSON per phase")
	flag.StringVar(&o.cpuprofile, "cpuprofile", "", "write a CPU profile of the measured workflow phase here")
	flag.StringVar(&o.service, "service", "", "URL of a running HTTP service to call (default: start one)")
	flag.StringVar(&o.nullhttp, "nullhttp", "", "the bench/cmd/nullhttp binary to start as the service (default: beside this binary, or on PATH)")
	flag.StringVar(&o.only, "only", "", "run one phase only: direct or workflow")
	flag.StringVar(&o.label, "label", "", "names this run in its RESULT lines (for the report subcommand)")
	flag.IntVar(&o.idle, "idle", 0, "diagnostic: idle connections per host that http.DefaultTransport keeps; the baseline and the engine's url calls share it (0: Go's default, 2)")
	flag.DurationVar(&ProgressEvery, "progress", 0, "print the rate and CPU per operation at this interval during each phase (0: never)")
	flag.DurationVar(&o.timeout, "timeout", 30*time.Second, "bound on each operation")
	flag.DurationVar(&o.max, "max", 15*time.Minute, "bound on the whole run")
	flag.Parse()
	if o.runs < 1 || o.concurrency < 1 || o.warmup < 0 || (o.only != "" && o.only != "direct" && o.only != "workflow") {
		fmt.Fprintln(os.Stderr, "workflow: -runs and -concurrency must be positive, -warmup not negative, -only direct or workflow")
		os.Exit(2)
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "workflow:", err)
		os.Exit(1)
	}
}

type options struct {
	runs, concurrency, warmup int
	json                      bool
	cpuprofile                string
	service, nullhttp, only   string
	label                     string
	idle                      int
	timeout, max              time.Duration
}

func run(o options) error {
	ctx, cancel := context.WithTimeout(context.Background(), o.max)
	defer cancel()
	url, pid, what := o.service, 0, "given"
	if url == "" {
		svc, err := startService(o.nullhttp, o.max)
		if err != nil {
			return err
		}
		defer svc.stop()
		url, pid, what = svc.url, svc.cmd.Process.Pid, svc.what
	}
	if o.idle > 0 {
		http.DefaultTransport.(*http.Transport).MaxIdleConnsPerHost = o.idle
	}
	dir, err := os.MkdirTemp("", "wfbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	env, err := StartEnv(ctx, dir, url)
	if err != nil {
		return fmt.Errorf("starting the node: %w", err)
	}
	defer func() {
		if err := env.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "workflow: stopping the node:", err)
		}
	}()
	idle := "Go's default"
	if o.idle > 0 {
		idle = strconv.Itoa(o.idle)
	}
	fmt.Printf("workflow bench: %d operations per phase, concurrency %d, warm-up %d, service %s (%s), idle connections per host %s, GOMAXPROCS %d\n",
		o.runs, o.concurrency, o.warmup, url, what, idle, runtime.GOMAXPROCS(0))

	phases := []struct {
		name string
		op   func(ctx context.Context, in json.RawMessage) (time.Duration, error)
	}{{"direct", func(ctx context.Context, in json.RawMessage) (time.Duration, error) { return 0, env.Direct(ctx, in) }},
		{"workflow", env.RunWorkflow}}
	var results []Result
	seq := 0 // inputs are numbered across phases and warm-ups, each one unique
	for _, p := range phases {
		if o.only != "" && o.only != p.name {
			continue
		}
		before, err := env.Published(ctx)
		if err != nil {
			return err
		}
		opFrom := func(base int) func(ctx context.Context, i int) (time.Duration, error) {
			return func(ctx context.Context, i int) (time.Duration, error) { return p.op(ctx, Input(base+i)) }
		}
		if o.warmup > 0 {
			w := Measure(ctx, p.name+"-warmup", o.warmup, o.concurrency, o.timeout, pid, opFrom(seq))
			seq += o.warmup
			fmt.Printf("%s warm-up: %d operations in %.1f s, %d failed\n", p.name, w.Ops, w.Seconds, w.Failed)
			if w.Failed > 0 {
				return fmt.Errorf("%s warm-up: %d of %d failed, first: %s", p.name, w.Failed, w.Ops, strings.Join(w.Errors, "; "))
			}
		}
		op := opFrom(seq)
		seq += o.runs
		fmt.Printf("%s: start %s, %s\n", p.name, time.Now().UTC().Format("15:04:05"), busy())
		stopProfile := func() {}
		if p.name == "workflow" && o.cpuprofile != "" {
			f, err := os.Create(o.cpuprofile)
			if err != nil {
				return err
			}
			if err := pprof.StartCPUProfile(f); err != nil {
				f.Close()
				return err
			}
			stopProfile = func() { pprof.StopCPUProfile(); f.Close() }
		}
		r := Measure(ctx, p.name, o.runs, o.concurrency, o.timeout, pid, op)
		r.Label = o.label
		stopProfile()
		fmt.Printf("%s: end %s, %s\n", p.name, time.Now().UTC().Format("15:04:05"), busy())
		// Every operation that succeeded published exactly one message.
		after, err := env.Published(ctx)
		if err != nil {
			return err
		}
		want := uint64(o.warmup + o.runs - r.Failed)
		fmt.Printf("%s: %d messages published to %s, %d expected\n", p.name, after-before, Topic, want)
		if after-before != want {
			r.Failed = max(r.Failed, 1)
			r.Errors = append(r.Errors, fmt.Sprintf("%d messages published to %s, %d expected", after-before, Topic, want))
		}
		results = append(results, r)
		if ctx.Err() != nil {
			break
		}
	}
	report(os.Stdout, results)
	if o.json {
		for _, r := range results {
			b, _ := json.Marshal(r)
			fmt.Printf("RESULT workflow %s\n", b)
		}
	}
	var failed []string
	for _, r := range results {
		if r.Failed > 0 {
			failed = append(failed, fmt.Sprintf("%s: %d of %d failed, first: %s", r.Phase, r.Failed, r.Ops, strings.Join(r.Errors, "; ")))
		}
	}
	if len(failed) > 0 {
		return errors.New(strings.Join(failed, "\n"))
	}
	return ctx.Err()
}

// report prints the table: one row per phase, the ratio to direct.
func report(w io.Writer, rs []Result) {
	var direct float64
	for _, r := range rs {
		if r.Phase == "direct" {
			direct = r.Rate
		}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "phase\tops/s\tp50 ms\tp99 ms\tmax ms\trecorded p50 ms\trecorded p99 ms\tCPU us/op\tservice CPU us/op\tother cores\tfailed\tratio\t")
	for _, r := range rs {
		ratio := ""
		if direct > 0 {
			ratio = fmt.Sprintf("%.2fx", r.Rate/direct)
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%.2f\t%.2f\t%.2f\t%s\t%s\t%.0f\t%.0f\t%.2f\t%d\t%s\t\n",
			r.Phase, r.Rate, r.P50ms, r.P99ms, r.Maxms, opt(r.RecordedP50ms), opt(r.RecordedP99ms),
			r.CPUus, r.ServiceCPUus, r.OtherCores, r.Failed, ratio)
	}
	tw.Flush()
}

// opt prints v, or "-" for none.
func opt(v float64) string {
	if v == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", v)
}

type service struct {
	url, what string
	cmd       *exec.Cmd
}

func (s *service) stop() {
	_ = s.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-done
	}
}

// startService starts the HTTP service in a process of its own: nullhttp
// if found, else this binary in service mode. It returns once the
// service has printed its address.
func startService(nullhttp string, maxRun time.Duration) (*service, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	if nullhttp == "" {
		if p := filepath.Join(filepath.Dir(self), "nullhttp"); isFile(p) {
			nullhttp = p
		} else if p, err := exec.LookPath("nullhttp"); err == nil {
			nullhttp = p
		}
	}
	s := &service{}
	if nullhttp != "" {
		// 202 with a 76-byte JSON body, which the call step decodes.
		s.cmd = exec.Command(nullhttp, "-listen", "127.0.0.1:0", "-max", (maxRun + time.Minute).String())
		s.what = "nullhttp"
	} else {
		s.cmd = exec.Command(self)
		s.cmd.Env = append(os.Environ(), serveEnv+"="+(maxRun+time.Minute).String())
		s.what = "built-in server, nullhttp not found"
	}
	out, err := s.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	s.cmd.Stderr = os.Stderr
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "listening on "); ok {
				addr <- a
				break
			}
		}
		_, _ = io.Copy(io.Discard, out)
	}()
	select {
	case a := <-addr:
		s.url = "http://" + a
		return s, nil
	case <-time.After(30 * time.Second):
		s.stop()
		return nil, fmt.Errorf("the service (%s) did not start within 30 s", s.cmd.Path)
	}
}

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// serve is the service when nullhttp is not at hand: the same answer
// (202, nullhttp's JSON body) with the same server settings.
func serve() {
	maxRun, err := time.ParseDuration(os.Getenv(serveEnv))
	if err != nil {
		maxRun = 10 * time.Minute
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "workflow service:", err)
		os.Exit(1)
	}
	answer := []byte(`{"id":"00000000-0000-0000-0000-000000000000","sequence":1,"duplicate":false}`)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusAccepted)
			_, _ = w.Write(answer)
		}),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
	}
	if err := benchhttp.Serve(l, srv, maxRun); err != nil {
		fmt.Fprintln(os.Stderr, "workflow service:", err)
		os.Exit(1)
	}
}
