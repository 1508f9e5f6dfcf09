// Command meshload is the load driver of bench/run-mesh.sh and
// bench/run-gateway.sh: it sends GET requests to one URL over loopback and
// measures latency and throughput.
//
//	meshload run    -name N -url U -rate R [-header K:V] ...   fixed rate (open loop)
//	meshload run    -name N -url U -conns C [-header K:V] ...  maximum throughput (closed loop)
//	meshload report -dir D [-targets mesh|gateway]             the table of every run in D
//	meshload wait   -url U [-contains S] [-header K:V]         poll until U answers 200
//	meshload ports  N                                          print N free loopback ports
//	meshload proxy  -listen A -target U                        a bare reverse proxy (reference)
//	meshload token  -secret S -issuer I -audience A            print an HS256 JWT
//
// Both benchmarks measure every path with this one client, headers or
// not, so the client's own cost is the same on every path they compare.
//
// At a fixed rate the requests are sent on a schedule that does not
// depend on the responses (open loop), and each latency is measured from
// the request's scheduled send time, so a slow response cannot hide the
// delay it causes to the requests behind it (coordinated omission). At
// maximum throughput, C workers each keep one request in flight on their
// own keep-alive connection (closed loop). Every run is bounded in time
// and request count and writes one JSON result.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/junctionhq/junction/bench/internal/procstat"

	"github.com/junctionhq/junction/bench/internal/benchhttp"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "run":
		err = runCmd(os.Args[2:])
	case "report":
		err = reportCmd(os.Args[2:])
	case "wait":
		err = waitCmd(os.Args[2:])
	case "ports":
		err = portsCmd(os.Args[2:])
	case "proxy":
		err = proxyCmd(os.Args[2:])
	case "token":
		err = tokenCmd(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "meshload:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: meshload run|report|wait|ports|proxy|token [flags] (meshload CMD -h for the flags)")
	os.Exit(2)
}

// Limits that keep every run bounded.
const (
	maxDuration = 5 * time.Minute
	maxRequests = 1_000_000 // scheduled requests of one fixed-rate run
	maxSamples  = 20_000_000
)

// Result is one run, as written to -out.
type Result struct {
	Name      string  `json:"name"`
	Round     int     `json:"round"`
	URL       string  `json:"url"`
	Mode      string  `json:"mode"` // rate (open loop) or max (closed loop)
	TargetRPS float64 `json:"target_rps,omitempty"`
	Conns     int     `json:"conns"`
	Started   string  `json:"started"`
	Seconds   float64 `json:"seconds"`
	Requests  int     `json:"requests"` // measured requests that succeeded
	Errors    int     `json:"errors"`
	// Unsent counts scheduled requests that were still waiting for a
	// worker when the run ended (fixed rate only); they are errors too.
	Unsent     int     `json:"unsent,omitempty"`
	FirstError string  `json:"first_error,omitempty"`
	RPS        float64 `json:"rps"`
	MeanMs     float64 `json:"mean_ms"`
	P50ms      float64 `json:"p50_ms"`
	P90ms      float64 `json:"p90_ms"`
	P99ms      float64 `json:"p99_ms"`
	P999ms     float64 `json:"p999_ms"`
	MaxMs      float64 `json:"max_ms"`
	// LagP50ms and LagP99ms are how late the driver itself sent requests
	// after their scheduled time (fixed rate only). The latencies above
	// include this lag; it is the driver's share of every figure.
	LagP50ms float64 `json:"lag_p50_ms,omitempty"`
	LagP99ms float64 `json:"lag_p99_ms,omitempty"`
	// CPU is the CPU time of each watched process (and of this driver)
	// over the measured window.
	CPU []ProcCPU `json:"cpu,omitempty"`
	// MachineCores is the CPU the whole machine used during the window
	// (from /proc/stat), OtherCores the part that none of the processes
	// in CPU used: other work on a shared machine.
	MachineCores float64 `json:"machine_cores,omitempty"`
	OtherCores   float64 `json:"other_cores,omitempty"`
	NumCPU       int     `json:"num_cpu"`
}

// ProcCPU is one process's CPU over a run.
type ProcCPU struct {
	Name     string  `json:"name"`
	PID      int     `json:"pid,omitempty"`
	Cores    float64 `json:"cores"`
	USPerReq float64 `json:"us_per_req"`
}

type runOpts struct {
	name, url, out, pids string
	round                int
	rate                 float64
	conns, status        int
	duration, warmup     time.Duration
	timeout, spin        time.Duration
	headers              headerFlag
}

func runCmd(args []string) error {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	var o runOpts
	fs.StringVar(&o.name, "name", "", "label of the path measured (e.g. direct, invoke, sidecar)")
	fs.StringVar(&o.url, "url", "", "URL to GET")
	fs.IntVar(&o.round, "round", 1, "round number, recorded in the result")
	fs.Float64Var(&o.rate, "rate", 0, "requests per second on a fixed schedule (open loop); 0: as fast as -conns workers go (closed loop)")
	fs.IntVar(&o.conns, "conns", 0, "closed loop: concurrent connections (default 32); open loop: most requests in flight (default 256)")
	fs.DurationVar(&o.duration, "duration", 20*time.Second, "measured duration")
	fs.DurationVar(&o.warmup, "warmup", 3*time.Second, "load before the measured duration, not recorded")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Second, "per-request timeout")
	fs.DurationVar(&o.spin, "spin", 50*time.Microsecond, "open loop: busy-wait this last part of each wait for the send time (timer precision)")
	fs.IntVar(&o.status, "status", http.StatusOK, "expected status; any other is an error")
	fs.StringVar(&o.pids, "pids", "", "processes whose CPU to report, as name=pid,name=pid")
	fs.StringVar(&o.out, "out", "", "write the JSON result to this file")
	fs.Var(&o.headers, "header", "request header as Name: value (repeatable)")
	_ = fs.Parse(args)
	if o.url == "" || o.duration <= 0 || o.warmup < 0 || o.rate < 0 {
		fs.Usage()
		os.Exit(2)
	}
	if o.duration+o.warmup > maxDuration {
		return fmt.Errorf("-warmup plus -duration is capped at %s", maxDuration)
	}
	if o.conns == 0 {
		o.conns = 32
		if o.rate > 0 {
			o.conns = 256
		}
	}
	if o.conns < 1 || o.conns > 4096 {
		return errors.New("-conns must be between 1 and 4096")
	}
	if o.rate > 0 && o.rate*(o.duration+o.warmup).Seconds() > maxRequests {
		return fmt.Errorf("-rate times the run's length exceeds %d requests", maxRequests)
	}
	procs, err := parsePIDs(o.pids)
	if err != nil {
		return err
	}
	r, err := run(o, procs)
	if err != nil {
		return err
	}
	printLine(r)
	b, _ := json.Marshal(r)
	if o.out != "" {
		if err := os.WriteFile(o.out, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	if r.Errors > 0 {
		fmt.Fprintf(os.Stderr, "meshload: %s: %d errors, first: %s\n", r.Name, r.Errors, r.FirstError)
	}
	return nil
}

func printLine(r Result) {
	mode := fmt.Sprintf("rate %.0f/s", r.TargetRPS)
	if r.Mode == "max" {
		mode = fmt.Sprintf("max, %d conns", r.Conns)
	}
	fmt.Printf("%-8s %-15s %8d req %4d err in %5.2fs = %8.0f req/s  p50 %6.3f  p90 %6.3f  p99 %6.3f  p99.9 %7.3f  max %7.2f ms",
		r.Name, mode, r.Requests, r.Errors, r.Seconds, r.RPS, r.P50ms, r.P90ms, r.P99ms, r.P999ms, r.MaxMs)
	if r.Mode == "rate" {
		fmt.Printf("  (driver lag p50 %.3f p99 %.3f ms)", r.LagP50ms, r.LagP99ms)
	}
	fmt.Println()
	var cpu []string
	for _, c := range r.CPU {
		cpu = append(cpu, fmt.Sprintf("%s %.0f us/req %.2f cores", c.Name, c.USPerReq, c.Cores))
	}
	if len(cpu) > 0 {
		fmt.Printf("         cpu: %s; machine %.2f cores, other work %.2f\n", strings.Join(cpu, ", "), r.MachineCores, r.OtherCores)
	}
}

type proc struct {
	name string
	pid  int
}

func parsePIDs(s string) ([]proc, error) {
	var ps []proc
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		name, v, ok := strings.Cut(f, "=")
		pid, err := strconv.Atoi(v)
		if !ok || err != nil || pid <= 0 {
			return nil, fmt.Errorf("-pids: %q is not name=pid", f)
		}
		ps = append(ps, proc{name, pid})
	}
	return ps, nil
}

// worker is one goroutine's samples, merged at the end.
type worker struct {
	lat    []time.Duration
	lag    []time.Duration
	reqs   int
	errs   int
	unsent int
	first  error
}

func (w *worker) fail(err error) {
	w.errs++
	if w.first == nil {
		w.first = err
	}
}

func newClient(conns int, timeout time.Duration) *http.Client {
	tr := benchhttp.Transport(conns)
	return &http.Client{Transport: tr, Timeout: timeout}
}

// get sends one request with the headers h and reads the whole answer.
func get(ctx context.Context, c *http.Client, url string, status int, h http.Header) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	for k, vs := range h {
		req.Header[k] = vs
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != status {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

func run(o runOpts, procs []proc) (Result, error) {
	client := newClient(o.conns, o.timeout)
	defer client.Transport.(*http.Transport).CloseIdleConnections()
	// One request before the clock starts: a path that does not work at
	// all fails here, with its error, instead of as a run of errors.
	ctx0, cancel0 := context.WithTimeout(context.Background(), o.timeout)
	err := get(ctx0, client, o.url, o.status, o.headers.h)
	cancel0()
	if err != nil {
		return Result{}, fmt.Errorf("%s: first request: %w", o.url, err)
	}

	start := time.Now().Add(20 * time.Millisecond)
	measureFrom := start.Add(o.warmup)
	end := measureFrom.Add(o.duration)
	// In-flight requests get until end+timeout; nothing outlives that.
	ctx, cancel := context.WithDeadline(context.Background(), end.Add(o.timeout))
	defer cancel()

	var snap0 snapshot
	snapped := make(chan struct{})
	go func() {
		defer close(snapped)
		time.Sleep(time.Until(measureFrom))
		snap0 = takeSnapshot(procs)
	}()
	ws := make([]*worker, o.conns)
	if o.rate > 0 {
		openLoop(ctx, client, o, ws, start, measureFrom, end)
	} else {
		closedLoop(ctx, client, o, ws, measureFrom, end)
	}
	<-snapped
	snap1 := takeSnapshot(procs)
	window := o.duration

	r := Result{
		Name: o.name, Round: o.round, URL: o.url, Mode: "max", Conns: o.conns,
		Started: measureFrom.UTC().Format(time.RFC3339), Seconds: window.Seconds(), NumCPU: runtime.NumCPU(),
	}
	if o.rate > 0 {
		r.Mode, r.TargetRPS = "rate", o.rate
	}
	var lat, lag []time.Duration
	for _, w := range ws {
		r.Requests += w.reqs
		r.Errors += w.errs
		r.Unsent += w.unsent
		if w.first != nil && r.FirstError == "" {
			r.FirstError = w.first.Error()
		}
		lat = append(lat, w.lat...)
		lag = append(lag, w.lag...)
	}
	if r.Requests == 0 {
		return r, fmt.Errorf("%s: no request succeeded (first error: %s)", o.name, r.FirstError)
	}
	r.RPS = float64(r.Requests) / window.Seconds()
	slices.Sort(lat)
	var sum time.Duration
	for _, d := range lat {
		sum += d
	}
	r.MeanMs = ms(sum / time.Duration(len(lat)))
	r.P50ms, r.P90ms, r.P99ms = ms(pct(lat, 50)), ms(pct(lat, 90)), ms(pct(lat, 99))
	r.P999ms, r.MaxMs = ms(pct(lat, 99.9)), ms(lat[len(lat)-1])
	if len(lag) > 0 {
		slices.Sort(lag)
		r.LagP50ms, r.LagP99ms = ms(pct(lag, 50)), ms(pct(lag, 99))
	}
	r.CPU, r.MachineCores, r.OtherCores = snap1.since(snap0, procs, r.Requests)
	return r, nil
}

// pct is the nearest-rank percentile of sorted samples. The epsilon keeps
// float error (99.9/100*1000 = 999.0000000000001) from moving up a rank.
func pct(sorted []time.Duration, p float64) time.Duration {
	i := int(math.Ceil(p/100*float64(len(sorted))-1e-9)) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// job is one scheduled request.
type job struct {
	at   time.Time // scheduled send time
	sent time.Time // when the dispatcher released it
}

// openLoop sends rate requests per second from start to end on a fixed
// schedule. A dispatcher releases each request at its time into a queue
// that never blocks it; o.conns workers send them. A request that waits
// for a free worker waits on the clock: latency runs from the scheduled
// time. Requests still queued at the run's deadline are errors.
func openLoop(ctx context.Context, c *http.Client, o runOpts, ws []*worker, start, measureFrom, end time.Time) {
	total := int(o.rate * end.Sub(start).Seconds())
	queue := make(chan job, total)
	var wg sync.WaitGroup
	for i := range ws {
		w := &worker{}
		ws[i] = w
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range queue {
				measured := !j.at.Before(measureFrom)
				if ctx.Err() != nil {
					if measured {
						w.unsent++
						w.fail(fmt.Errorf("not sent before the run's deadline: %w", ctx.Err()))
					}
					continue
				}
				err := get(ctx, c, o.url, o.status, o.headers.h)
				done := time.Now()
				if !measured {
					continue
				}
				if err != nil {
					w.fail(err)
					continue
				}
				w.reqs++
				w.lat = append(w.lat, done.Sub(j.at))
				w.lag = append(w.lag, j.sent.Sub(j.at))
			}
		}()
	}
	dispatch(queue, total, start, o.rate, o.spin)
	close(queue)
	wg.Wait()
}

// dispatch releases request i at start + i/rate. Go's timers on Linux
// wake up to a millisecond late for short waits, which at 1,000 requests
// per second would be most of the interval; so the dispatcher holds an OS
// thread and sleeps with nanosleep (timer slack 1 ns), then busy-waits
// the last spin of each wait.
func dispatch(queue chan<- job, total int, start time.Time, rate float64, spin time.Duration) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	const prSetTimerslack = 29
	_, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, prSetTimerslack, 1, 0)
	for i := range total {
		at := start.Add(time.Duration(float64(i) * float64(time.Second) / rate))
		if d := time.Until(at) - spin; d > 0 {
			ts := syscall.NsecToTimespec(int64(d))
			_ = syscall.Nanosleep(&ts, nil)
		}
		for time.Now().Before(at) {
		}
		queue <- job{at: at, sent: time.Now()}
	}
}

// closedLoop runs o.conns workers, each sending its next request when the
// previous one is answered, until end.
func closedLoop(ctx context.Context, c *http.Client, o runOpts, ws []*worker, measureFrom, end time.Time) {
	var wg sync.WaitGroup
	for i := range ws {
		w := &worker{lat: make([]time.Duration, 0, 1<<14)}
		ws[i] = w
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				t0 := time.Now()
				if !t0.Before(end) {
					return
				}
				err := get(ctx, c, o.url, o.status, o.headers.h)
				el := time.Since(t0)
				if t0.Before(measureFrom) {
					continue
				}
				if err != nil {
					w.fail(err)
					continue
				}
				w.reqs++
				if len(w.lat) < maxSamples/len(ws) {
					w.lat = append(w.lat, el)
				}
			}
		}()
	}
	wg.Wait()
}

// snapshot is the CPU time of the watched processes, this one and the
// whole machine at one moment.
type snapshot struct {
	at      time.Time
	procs   []time.Duration
	self    time.Duration
	machine time.Duration
}

func takeSnapshot(procs []proc) snapshot {
	s := snapshot{at: time.Now(), self: selfCPU(), machine: machineCPU()}
	for _, p := range procs {
		s.procs = append(s.procs, procstat.ProcCPU(p.pid))
	}
	return s
}

func (s snapshot) since(s0 snapshot, procs []proc, reqs int) (out []ProcCPU, machine, other float64) {
	secs := s.at.Sub(s0.at).Seconds()
	if secs <= 0 || reqs == 0 {
		return nil, 0, 0
	}
	add := func(name string, pid int, d time.Duration) float64 {
		out = append(out, ProcCPU{Name: name, PID: pid, Cores: d.Seconds() / secs, USPerReq: float64(d.Microseconds()) / float64(reqs)})
		return d.Seconds() / secs
	}
	var ours float64
	for i, p := range procs {
		ours += add(p.name, p.pid, s.procs[i]-s0.procs[i])
	}
	ours += add("meshload", os.Getpid(), s.self-s0.self)
	if s.machine > 0 && s0.machine > 0 {
		machine = (s.machine - s0.machine).Seconds() / secs
		other = max(machine-ours, 0)
	}
	return out, machine, other
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// machineCPU is the busy time of all CPUs from the first line of
// /proc/stat (user, nice, system, irq, softirq, steal; in 1/100 s).
func machineCPU() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 9 || f[0] != "cpu" {
		return 0
	}
	var busy int64
	for _, k := range []int{1, 2, 3, 6, 7, 8} {
		v, _ := strconv.ParseInt(f[k], 10, 64)
		busy += v
	}
	return time.Duration(busy) * 10 * time.Millisecond
}

// waitCmd polls a URL until it answers 200 (and holds a string), for the
// script's readiness checks: no fixed sleeps.
func waitCmd(args []string) error {
	fs := flag.NewFlagSet("wait", flag.ExitOnError)
	url := fs.String("url", "", "URL to GET")
	contains := fs.String("contains", "", "the body must hold this string")
	timeout := fs.Duration("timeout", 60*time.Second, "give up after this long")
	var headers headerFlag
	fs.Var(&headers, "header", "request header as Name: value (repeatable)")
	_ = fs.Parse(args)
	if *url == "" {
		fs.Usage()
		os.Exit(2)
	}
	c := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(*timeout)
	var last string
	for {
		req, err := http.NewRequest(http.MethodGet, *url, nil)
		if err != nil {
			return err
		}
		for k, vs := range headers.h {
			req.Header[k] = vs
		}
		resp, err := c.Do(req)
		if err == nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && strings.Contains(string(b), *contains) {
				return nil
			}
			last = fmt.Sprintf("status %d: %.300s", resp.StatusCode, b)
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready within %s (last: %s)", *url, *timeout, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// portsCmd prints n free loopback ports, held open together so they
// differ, then released for the processes that the script starts.
func portsCmd(args []string) error {
	n := 1
	if len(args) > 0 {
		v, err := strconv.Atoi(args[0])
		if err != nil || v < 1 || v > 64 {
			return errors.New("ports: N must be 1 to 64")
		}
		n = v
	}
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		ls = append(ls, l)
		ports = append(ports, strconv.Itoa(l.Addr().(*net.TCPAddr).Port))
	}
	fmt.Println(strings.Join(ports, " "))
	return nil
}

// reportFiles reads every result in dir.
func reportFiles(dir string) ([]Result, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "run-*.json"))
	if err != nil {
		return nil, err
	}
	var rs []Result
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		var r Result
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		rs = append(rs, r)
	}
	if len(rs) == 0 {
		return nil, fmt.Errorf("no run-*.json in %s", dir)
	}
	return rs, nil
}
