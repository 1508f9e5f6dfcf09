package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/junctionhq/junction/config"
)

// Errors of the manager's operations.
var (
	ErrNotFound = errors.New("pipeline not found")
	ErrRunning  = errors.New("pipeline is running")
	ErrNoRun    = errors.New("run not found")
)

// Options configure a Manager.
type Options struct {
	Pipelines map[string]*config.Pipeline
	// NodeID names this node in run claims; a node that restarts with
	// the same id takes its interrupted runs back at once (another node
	// waits until their checkpoint is stale). Default: a random id.
	NodeID     string
	Env        Env
	Registerer prometheus.Registerer
}

// Manager runs the declared pipelines: batch runs on demand, resuming
// an interrupted one, and keeps their summaries.
type Manager struct {
	o   Options
	log *slog.Logger
	kv  jetstream.KeyValue // checkpoints and summaries
	// obs holds processors' state too large for a checkpoint (opened
	// when first needed).
	obsMu sync.Mutex
	obs   jetstream.ObjectStore
	met   *metrics
	mu    sync.Mutex
	runs  map[string]*liveRun // pipeline -> its run in progress
	node  string
	ctx   context.Context
	stop  context.CancelFunc
	wg    sync.WaitGroup
}

type liveRun struct {
	mu      sync.Mutex
	summary Summary
	done    chan struct{}
	cancel  context.CancelFunc
}

func (l *liveRun) snapshot() Summary {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.summary
}

// checkpoint is a run's state in the KV bucket while it runs (and after
// it was interrupted). Node and Beat say which node runs it, and when it
// last said so: a checkpoint whose beat is older than staleAfter belongs
// to a run that was interrupted (its node stopped or died), which the
// next run resumes.
type checkpoint struct {
	RunID    string          `json:"run_id"`
	Started  time.Time       `json:"started"`
	Pos      json.RawMessage `json:"pos,omitempty"`
	Counters Counters        `json:"counters"`
	Node     string          `json:"node,omitempty"`
	Beat     time.Time       `json:"beat,omitzero"`
	// State is the Stateful processors' state as of Pos, by processor
	// index; StateObject names the object holding it instead when it is
	// large (see putState).
	State       map[int][]byte `json:"state,omitempty"`
	StateObject string         `json:"state_object,omitempty"`
}

// A running run's checkpoint is written at every batch and at least
// every beatEvery; one not written for staleAfter is an interrupted run.
const (
	beatEvery  = 5 * time.Second
	staleAfter = 20 * time.Second
)

// New prepares the pipelines' bucket; nothing runs until asked.
func New(ctx context.Context, o Options) (*Manager, error) {
	if o.Env.Logger == nil {
		o.Env.Logger = slog.Default()
	}
	m := &Manager{o: o, log: o.Env.Logger.With("component", "pipeline"), runs: map[string]*liveRun{}, met: newMetrics(o.Registerer), node: o.NodeID}
	if m.node == "" {
		m.node = uuid.NewString()
	}
	m.ctx, m.stop = context.WithCancel(context.Background())
	if len(o.Pipelines) == 0 {
		return m, nil
	}
	var err error
	if m.kv, err = o.Env.JS.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: o.Env.Prefix + "_pipelines", History: 1, Description: "Junction pipelines: checkpoints of runs in progress, and run summaries",
	}); err != nil {
		return nil, fmt.Errorf("pipelines bucket: %w", err)
	}
	return m, nil
}

// Names returns the declared pipelines.
func (m *Manager) Names() []string { return slices.Sorted(maps.Keys(m.o.Pipelines)) }

// Config returns pipeline name's declaration.
func (m *Manager) Config(name string) (*config.Pipeline, error) {
	p := m.o.Pipelines[name]
	if p == nil {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	return p, nil
}

// Stop cancels the runs in progress (each keeps its checkpoint, and the
// next run resumes from it) and waits for them until ctx ends.
func (m *Manager) Stop(ctx context.Context) {
	m.stop()
	done := make(chan struct{})
	go func() { m.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// Start begins a run of pipeline name in the background, resuming the
// interrupted one if there is one, and returns its summary so far.
// report, when set, receives progress after each batch.
func (m *Manager) Start(ctx context.Context, name string, report func(Progress)) (Summary, error) {
	p, err := m.Config(name)
	if err != nil {
		return Summary{}, err
	}
	m.mu.Lock()
	if l := m.runs[name]; l != nil {
		m.mu.Unlock()
		return l.snapshot(), fmt.Errorf("%w: run %s", ErrRunning, l.snapshot().RunID)
	}
	l := &liveRun{done: make(chan struct{})}
	m.runs[name] = l
	m.mu.Unlock()
	ck, err := m.claim(ctx, name)
	if err != nil {
		m.forget(name, l)
		return Summary{}, err
	}
	resumed := ck.Pos != nil || ck.Counters != (Counters{})
	l.summary = Summary{Pipeline: name, RunID: ck.RunID, Status: "running", Counters: ck.Counters, Started: ck.Started, Resumed: resumed}
	rctx, cancel := context.WithCancel(m.ctx)
	l.cancel = cancel
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer cancel()
		m.execute(rctx, name, p, ck, l, report)
	}()
	return l.snapshot(), nil
}

func (m *Manager) forget(name string, l *liveRun) {
	m.mu.Lock()
	if m.runs[name] == l {
		delete(m.runs, name)
	}
	m.mu.Unlock()
}

// Run runs pipeline name to its end (see Start) and returns its summary.
func (m *Manager) Run(ctx context.Context, name string, report func(Progress)) (Summary, error) {
	s, err := m.Start(ctx, name, report)
	if err != nil {
		return s, err
	}
	return m.Wait(ctx, name, s.RunID)
}

// Wait waits for run id of pipeline name to end, or ctx.
func (m *Manager) Wait(ctx context.Context, name, id string) (Summary, error) {
	m.mu.Lock()
	l := m.runs[name]
	m.mu.Unlock()
	if l != nil && l.snapshot().RunID == id {
		select {
		case <-l.done:
		case <-ctx.Done():
			return l.snapshot(), ctx.Err()
		}
	}
	return m.Get(ctx, name, id)
}

func (m *Manager) execute(ctx context.Context, name string, p *config.Pipeline, ck *checkpoint, l *liveRun, report func(Progress)) {
	env := m.o.Env
	env.Pipeline, env.Stream = name, p.Stream
	start := time.Now()
	var ckMu sync.Mutex // the checkpoint is saved by batches and by the beat
	beatDone := make(chan struct{})
	go func() {
		t := time.NewTicker(beatEvery)
		defer t.Stop()
		for {
			select {
			case <-beatDone:
				return
			case <-t.C:
				ckMu.Lock()
				_ = m.saveCheckpoint(ctx, name, ck)
				ckMu.Unlock()
			}
		}
	}()
	err := func() (err error) {
		in, err := buildInput(ctx, &env, p.Input, ck.Pos)
		if err != nil {
			return fmt.Errorf("input: %w", err)
		}
		defer in.Close()
		r := &runner{in: in, batch: p.Batch, c: ck.Counters, start: start}
		var closers []func() error
		defer func() {
			for _, c := range closers {
				if cerr := c(); err == nil && cerr != nil {
					err = cerr
				}
			}
		}()
		out, err := buildOutput(ctx, &env, p.Output)
		if err != nil {
			return fmt.Errorf("output: %w", err)
		}
		closers = append(closers, out.Close)
		r.outs = []Output{out}
		for i, pc := range p.Processors {
			pr, err := buildProcessor(ctx, &env, pc)
			if err != nil {
				return fmt.Errorf("processors[%d]: %w", i, err)
			}
			if c, ok := pr.(Closer); ok {
				closers = append(closers, c.Close)
			}
			if rt, ok := pr.(Router); ok {
				if r.base == nil {
					r.base = map[int]int{}
				}
				r.base[i] = len(r.outs)
				for _, oc := range rt.Outputs() {
					o, err := buildOutput(ctx, &env, oc)
					if err != nil {
						return fmt.Errorf("processors[%d]: output: %w", i, err)
					}
					closers = append(closers, o.Close)
					r.outs = append(r.outs, o)
				}
			}
			r.procs = append(r.procs, pr)
		}
		if p.DeadLetter != nil {
			if r.dead, err = buildOutput(ctx, &env, p.DeadLetter); err != nil {
				return fmt.Errorf("dead_letter: %w", err)
			}
			closers = append(closers, r.dead.Close)
		}
		states, err := m.getState(ctx, ck)
		if err != nil {
			return err
		}
		if err := restoreStates(r.procs, states); err != nil {
			return err
		}
		prev := ck.Counters
		r.save = func(ctx context.Context, pos json.RawMessage, c Counters, states map[int][]byte) error {
			m.met.add(name, prev, c)
			prev = c
			l.mu.Lock()
			l.summary.Counters = c
			l.mu.Unlock()
			ckMu.Lock()
			defer ckMu.Unlock()
			// ck changes only once saved: the checkpoint left when a run
			// stops is written from it, and must not pair a new position
			// with the state of an older one.
			next := *ck
			next.Pos, next.Counters = pos, c
			if err := m.putState(ctx, name, &next, states); err != nil {
				return err
			}
			if err := m.saveCheckpoint(ctx, name, &next); err != nil {
				return err
			}
			*ck = next
			return nil
		}
		r.report = func(pr Progress) {
			l.mu.Lock()
			l.summary.Counters = pr.Counters
			if pr.Total > 0 {
				l.summary.Progress = &InputProgress{Done: pr.Done, Total: pr.Total, Unit: pr.Unit}
			}
			l.mu.Unlock()
			if report != nil {
				report(pr)
			}
		}
		return r.run(ctx)
	}()
	close(beatDone)
	ckMu.Lock() // no beat may write the checkpoint after it is cleared
	defer ckMu.Unlock()
	l.mu.Lock()
	s := &l.summary
	s.Ended = time.Now().UTC()
	d := s.Ended.Sub(s.Started)
	s.Duration = d.Round(time.Millisecond).String()
	if d > 0 {
		s.Rate = float64(s.Read) / d.Seconds()
	}
	switch {
	case err == nil:
		s.Status = "completed"
	case m.ctx.Err() != nil:
		// Stopping: the checkpoint stays, and the next run resumes it.
		s.Status, s.Error = "interrupted", "the node stopped; the next run resumes from the last batch"
	default:
		s.Status, s.Error = "failed", err.Error()
	}
	final := *s
	l.mu.Unlock()
	m.met.runs.WithLabelValues(name, final.Status).Inc()
	bg, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := m.saveSummary(bg, final); err != nil {
		m.log.Warn("pipeline: saving the run's summary", "pipeline", name, "err", err)
	}
	if final.Status == "interrupted" {
		// Released: the next run, on any node, resumes it at once.
		ck.Node, ck.Beat = "", time.Time{}
		b, _ := json.Marshal(ck)
		if _, err := m.kv.Put(bg, "ck."+name, b); err != nil {
			m.log.Warn("pipeline: releasing the checkpoint", "pipeline", name, "err", err)
		}
	} else {
		// A failed run is not resumed: the next run starts over.
		if err := m.kv.Delete(bg, "ck."+name); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			m.log.Warn("pipeline: clearing the checkpoint", "pipeline", name, "err", err)
		}
		if err := m.dropState(bg, name, ck); err != nil {
			m.log.Warn("pipeline: deleting the run's state", "pipeline", name, "err", err)
		}
	}
	m.log.Info("pipeline run ended", "pipeline", name, "run", final.RunID, "status", final.Status,
		"read", final.Read, "written", final.Written, "failed", final.Failed, "dead_lettered", final.DeadLettered, "duration", final.Duration, "error", final.Error)
	m.forget(name, l)
	close(l.done)
}

// claim makes this node the runner of pipeline name's next run: a new
// one, or the interrupted one, whose checkpoint it takes over. Two nodes
// claiming at once (a schedule firing on both) race on the key's
// revision, and one gets ErrRunning.
func (m *Manager) claim(ctx context.Context, name string) (*checkpoint, error) {
	key := "ck." + name
	now := time.Now().UTC()
	e, err := m.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		ck := &checkpoint{RunID: uuid.Must(uuid.NewV7()).String(), Started: now, Node: m.node, Beat: now}
		b, _ := json.Marshal(ck)
		if _, err := m.kv.Create(ctx, key, b); err != nil {
			if errors.Is(err, jetstream.ErrKeyExists) {
				return nil, fmt.Errorf("%w: another node started a run of %s just now", ErrRunning, name)
			}
			return nil, err
		}
		return ck, nil
	}
	if err != nil {
		return nil, err
	}
	var ck checkpoint
	if err := json.Unmarshal(e.Value(), &ck); err != nil {
		return nil, fmt.Errorf("checkpoint of %s: %w", name, err)
	}
	if ck.Node != m.node && now.Sub(ck.Beat) < staleAfter {
		return nil, fmt.Errorf("%w: run %s on another node", ErrRunning, ck.RunID)
	}
	ck.Node, ck.Beat = m.node, now
	b, _ := json.Marshal(ck)
	if _, err := m.kv.Update(ctx, key, b, e.Revision()); err != nil {
		return nil, fmt.Errorf("%w: another node resumed run %s just now", ErrRunning, ck.RunID)
	}
	return &ck, nil
}

func (m *Manager) saveCheckpoint(ctx context.Context, name string, ck *checkpoint) error {
	ck.Beat = time.Now().UTC()
	b, err := json.Marshal(ck)
	if err != nil {
		return err
	}
	_, err = m.kv.Put(ctx, "ck."+name, b)
	return err
}

func (m *Manager) saveSummary(ctx context.Context, s Summary) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	if _, err := m.kv.Put(ctx, "run."+s.Pipeline+"."+s.RunID, b); err != nil {
		return err
	}
	_, err = m.kv.Put(ctx, "last."+s.Pipeline, b)
	return err
}

// Get returns the summary of run id of pipeline name: live while it
// runs.
func (m *Manager) Get(ctx context.Context, name, id string) (Summary, error) {
	if _, err := m.Config(name); err != nil {
		return Summary{}, err
	}
	m.mu.Lock()
	l := m.runs[name]
	m.mu.Unlock()
	if l != nil {
		if s := l.snapshot(); s.RunID == id {
			return s, nil
		}
	}
	e, err := m.kv.Get(ctx, "run."+name+"."+id)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrInvalidKey) {
		return Summary{}, fmt.Errorf("%w: %s has no run %q", ErrNoRun, name, id)
	}
	if err != nil {
		return Summary{}, err
	}
	var s Summary
	return s, json.Unmarshal(e.Value(), &s)
}

// Status is a pipeline's declaration and state.
type Status struct {
	Name     string   `json:"name"`
	Input    string   `json:"input"`
	Output   string   `json:"output"`
	Schedule string   `json:"schedule,omitempty"`
	Stream   bool     `json:"stream,omitempty"`
	Running  *Summary `json:"running,omitempty"`
	LastRun  *Summary `json:"last_run,omitempty"`
}

// Statuses returns every pipeline's status.
func (m *Manager) Statuses(ctx context.Context) []Status {
	var out []Status
	for _, name := range m.Names() {
		p := m.o.Pipelines[name]
		st := Status{Name: name, Input: p.Input.Kind(), Output: p.Output.Kind(), Schedule: p.Schedule, Stream: p.Stream}
		m.mu.Lock()
		l := m.runs[name]
		m.mu.Unlock()
		if l != nil {
			s := l.snapshot()
			st.Running = &s
		}
		if e, err := m.kv.Get(ctx, "last."+name); err == nil {
			var s Summary
			if json.Unmarshal(e.Value(), &s) == nil {
				st.LastRun = &s
			}
		}
		out = append(out, st)
	}
	return out
}
