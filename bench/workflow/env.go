package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/junctionhq/junction"
	"github.com/junctionhq/junction/bus"
	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/workflow"
)

// Workflow is the measured workflow's name; Topic is where its publish
// step (and the direct baseline) publishes.
const (
	Workflow = "bench"
	Topic    = "bench-wf"
)

// workflowYAML declares the measured workflow: call the service, publish
// its answer, set a value. SERVICE is replaced by the service's URL.
const workflowYAML = `
workflows:
  bench:
    steps:
      - id: call
        call: { url: "SERVICE", path: /things, method: POST, body: "{{ input }}" }
      - id: pub
        needs: [call]
        publish: { topic: bench-wf, data: "{{ steps.call.output }}" }
      - id: set
        needs: [pub]
        set: { done: "true" }
`

// Env is an embedded Junction node declaring the measured workflow, and
// the URL of the HTTP service its call step (and the baseline) calls.
type Env struct {
	Node    *junction.Node
	Service string
	// HTTP is the baseline's client: http.DefaultClient, whose transport
	// is the one the engine's url calls use.
	HTTP   *http.Client
	cancel context.CancelFunc
	done   chan error
}

var prefixSeq atomic.Int64

// Config returns the node's config: the built-in defaults with a data
// dir, an API on a free loopback port, a NATS prefix of its own and the
// workflow calling service.
func Config(dir, service string) (*config.Config, error) {
	yaml := bytes.ReplaceAll([]byte(workflowYAML), []byte("SERVICE"), []byte(service))
	parsed, err := config.Parse("bench.yaml", yaml, func(string) (string, bool) { return "", false })
	if err != nil {
		return nil, err
	}
	cfg := config.Default()
	cfg.DataDir = dir
	cfg.API.Listen = "127.0.0.1:0"
	cfg.ShutdownTimeout = config.Duration(10 * time.Second)
	cfg.NATS.Prefix = fmt.Sprintf("wfbench%d_%d", os.Getpid(), prefixSeq.Add(1))
	cfg.Workflows = parsed.Workflows
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// StartEnv starts the node with its data under dir; its logger discards.
func StartEnv(ctx context.Context, dir, service string) (*Env, error) {
	cfg, err := Config(dir, service)
	if err != nil {
		return nil, err
	}
	nctx, cancel := context.WithCancel(context.Background())
	n, err := junction.New(nctx, cfg, junction.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		cancel()
		return nil, err
	}
	e := &Env{Node: n, Service: service, HTTP: http.DefaultClient, cancel: cancel, done: make(chan error, 1)}
	go func() { e.done <- n.Run(nctx) }()
	return e, nil
}

// Close stops the node and waits for it.
func (e *Env) Close() error {
	http.DefaultClient.CloseIdleConnections()
	e.cancel()
	select {
	case err := <-e.done:
		return err
	case <-time.After(30 * time.Second):
		return errors.New("the node did not stop within 30 s")
	}
}

// Input is the input of run (or iteration) i.
func Input(i int) json.RawMessage {
	return fmt.Appendf(nil, `{"order":%d,"item":"widget","qty":3}`, i)
}

// Direct makes the workflow's three operations from Go: POST the input to
// the service and decode its JSON answer, publish that answer to Topic
// through the node's bus, compute the set step's value.
func (e *Env) Direct(ctx context.Context, input json.RawMessage) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.Service+"/things", bytes.NewReader(input))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.HTTP.Do(req)
	if err != nil {
		return err
	}
	raw, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		return fmt.Errorf("service answered %s", resp.Status)
	}
	var out any
	if err := json.Unmarshal(raw, &out); err != nil {
		return err
	}
	data, err := json.Marshal(out)
	if err != nil {
		return err
	}
	res, err := e.Node.Bus().Publish(ctx, Topic, bus.Message{Data: data, DataContentType: "application/json"})
	if err != nil {
		return err
	}
	if res[0].Error != nil {
		return errors.New(res[0].Error.Detail)
	}
	set := map[string]any{"done": true}
	if set["done"] != true {
		return errors.New("unreachable")
	}
	return nil
}

// Published is the number of messages Topic holds (0 before the first).
func (e *Env) Published(ctx context.Context) (uint64, error) {
	t, err := e.Node.Bus().GetTopic(ctx, Topic)
	if errors.Is(err, bus.ErrTopicNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return t.Stats.Messages, nil
}

// RunWorkflow starts one run of the workflow and waits for it to end; an
// error unless it completed. It returns the run's duration as its history
// records it: from its start to its end event.
func (e *Env) RunWorkflow(ctx context.Context, input json.RawMessage) (time.Duration, error) {
	eng := e.Node.Workflows()
	r, created, err := eng.StartRun(ctx, Workflow, input, workflow.StartOptions{})
	if err != nil {
		return 0, fmt.Errorf("start: %w", err)
	}
	if !created {
		return 0, fmt.Errorf("start: run %s was not created", r.ID)
	}
	id := r.ID
	r, err = eng.Wait(ctx, id)
	if err != nil {
		return 0, fmt.Errorf("run %s: wait: %w", id, err)
	}
	if r.Status != workflow.StatusCompleted {
		return 0, fmt.Errorf("run %s ended %s: %s", id, r.Status, r.Error)
	}
	if r.EndedAt == nil {
		return 0, fmt.Errorf("run %s completed without an end time", id)
	}
	return r.EndedAt.Sub(r.StartedAt), nil
}

// Result is one measured phase.
type Result struct {
	Label       string  `json:"label,omitempty"`
	Phase       string  `json:"phase"`
	Ops         int     `json:"ops"`
	Failed      int     `json:"failed"`
	Concurrency int     `json:"concurrency"`
	Seconds     float64 `json:"seconds"`
	Rate        float64 `json:"ops_per_s"`
	P50ms       float64 `json:"p50_ms"`
	P99ms       float64 `json:"p99_ms"`
	Maxms       float64 `json:"max_ms"`
	// CPUus is this process's CPU (node, driver) per operation; ServiceCPUus
	// the HTTP service's, when it runs in a process of its own.
	CPUus        float64 `json:"cpu_us_per_op"`
	ServiceCPUus float64 `json:"service_cpu_us_per_op,omitempty"`
	// OtherCores is the machine's busy time during the phase minus that of
	// this process and the service, in cores: work not part of the run.
	OtherCores float64 `json:"other_cores"`
	// Recorded*ms are, for runs, the duration their histories record
	// (from the start event to the end event), without the StartRun call
	// before and the wake-up of Wait after.
	RecordedP50ms float64 `json:"recorded_p50_ms,omitempty"`
	RecordedP99ms float64 `json:"recorded_p99_ms,omitempty"`
	// Errors holds the first few failures.
	Errors []string `json:"errors,omitempty"`
}

// ProgressEvery, when positive, makes Measure print a line at this
// interval: operations completed, and the rate and CPU per operation
// since the previous line (to see a rate that drifts or stalls).
var ProgressEvery time.Duration

// Measure runs op n times in all from c workers, each op bounded by
// timeout, and returns the rate and the latency of each op, and the
// percentiles of the durations op returns if it returns any. servicePID,
// if not 0, is the service's process, whose CPU is counted apart.
func Measure(ctx context.Context, phase string, n, c int, timeout time.Duration, servicePID int,
	op func(ctx context.Context, i int) (time.Duration, error)) Result {
	lat := make([]time.Duration, n)
	inner := make([]time.Duration, n)
	var next, done atomic.Int64
	var failed atomic.Int64
	var mu sync.Mutex
	var errs []string
	cpu0, svc0, busy0 := selfCPU(), procCPU(servicePID), machineBusy()
	start := time.Now()
	stopProgress := make(chan struct{})
	if ProgressEvery > 0 {
		go progress(phase, n, &done, stopProgress)
	}
	defer close(stopProgress)
	var wg sync.WaitGroup
	for range c {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				octx, cancel := context.WithTimeout(ctx, timeout)
				t := time.Now()
				d, err := op(octx, i)
				lat[i], inner[i] = time.Since(t), d
				cancel()
				done.Add(1)
				if err != nil {
					failed.Add(1)
					mu.Lock()
					if len(errs) < 5 {
						errs = append(errs, err.Error())
					}
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	wall := time.Since(start)
	cpu, svc, busy := selfCPU()-cpu0, procCPU(servicePID)-svc0, machineBusy()-busy0
	slices.Sort(lat)
	slices.Sort(inner)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	r := Result{
		Phase: phase, Ops: n, Failed: int(failed.Load()), Concurrency: c, Seconds: wall.Seconds(),
		Rate: float64(n) / wall.Seconds(), P50ms: ms(lat[(n-1)/2]), P99ms: ms(lat[(n*99+99)/100-1]), Maxms: ms(lat[n-1]),
		CPUus: float64(cpu.Microseconds()) / float64(n), Errors: errs,
	}
	if inner[n-1] > 0 {
		r.RecordedP50ms, r.RecordedP99ms = ms(inner[(n-1)/2]), ms(inner[(n*99+99)/100-1])
	}
	if servicePID != 0 {
		r.ServiceCPUus = float64(svc.Microseconds()) / float64(n)
	}
	if busy > 0 {
		r.OtherCores = max(0, (busy-cpu-svc).Seconds()/wall.Seconds())
	}
	return r
}

func progress(phase string, n int, done *atomic.Int64, stop chan struct{}) {
	t := time.NewTicker(ProgressEvery)
	defer t.Stop()
	last, lastCPU, lastAt := int64(0), selfCPU(), time.Now()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			d, cpu := done.Load(), selfCPU()
			rate, us := 0.0, 0.0
			if d > last {
				rate = float64(d-last) / now.Sub(lastAt).Seconds()
				us = float64((cpu - lastCPU).Microseconds()) / float64(d-last)
			}
			fmt.Printf("  %s: %d/%d, %.0f ops/s and %.0f CPU us/op over the last %s\n", phase, d, n, rate, us, ProgressEvery)
			last, lastCPU, lastAt = d, cpu, now
		}
	}
}

// selfCPU is this process's user+system CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
