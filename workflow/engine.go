package workflow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/junctionhq/junction/bus"
	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/eventstore"
	"github.com/junctionhq/junction/observe"
)

// Publisher publishes messages for publish steps (the node's bus).
type Publisher interface {
	Publish(ctx context.Context, topic string, msgs ...bus.Message) ([]bus.PublishResult, error)
}

// Options configure an Engine.
type Options struct {
	Store  eventstore.Store
	JS     jetstream.JetStream
	Prefix string
	// Workflows are the validated definitions from the config.
	Workflows map[string]*config.Workflow
	Bus       Publisher
	// Messages feeds the workflows' message triggers (the bus).
	Messages MessageSource
	// Services carries calls to services by name (http://inventory/...):
	// the mesh, with its load balancing and policies.
	Services http.RoundTripper
	// HTTP carries calls to URLs; when nil, Go's default transport
	// keeping up to 256 idle connections per host.
	HTTP http.RoundTripper
	// MaxConcurrent bounds the runs this node works on at once.
	MaxConcurrent int
	Logger        *slog.Logger
	Registerer    prometheus.Registerer
	Tracer        trace.Tracer
}

// Task delivery: a task held longer than ackWait without a heartbeat is
// handed to another node.
const (
	ackWait   = 30 * time.Second
	heartbeat = ackWait / 3
)

// Engine runs workflows on one node; every node sharing the JetStream
// and the event store shares the runs.
type Engine struct {
	o        Options
	defs     map[string]*Definition
	log      *slog.Logger
	met      *metrics
	tracer   trace.Tracer
	stream   jetstream.Stream
	cons     jetstream.Consumer
	subjBase string
	services *http.Client
	urls     *http.Client

	mu       sync.Mutex
	it       jetstream.MessagesContext
	ctx      context.Context // the engine's lifetime: ends when it stops
	cancel   context.CancelFunc
	sem      chan struct{}
	wg       sync.WaitGroup
	stopping atomic.Bool
	started  bool

	schedKV jetstream.KeyValue
	waitKV  jetstream.KeyValue

	cache runCache

	wmu     sync.Mutex
	waiters map[string]map[chan *Run]bool // run id -> callers of Wait on this node
}

// New compiles the workflows and prepares the task queue.
func New(ctx context.Context, o Options) (*Engine, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Tracer == nil {
		o.Tracer = noop.NewTracerProvider().Tracer("")
	}
	if o.MaxConcurrent <= 0 {
		o.MaxConcurrent = 1000
	}
	if o.HTTP == nil {
		// Many runs call the same few hosts at once: Go's default of two
		// idle connections per host would open a new connection for
		// most calls (measured: a fifth of the engine's throughput).
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = 256
		o.HTTP = t
	}
	e := &Engine{o: o, defs: map[string]*Definition{}, log: o.Logger.With("component", "workflow"), tracer: o.Tracer,
		subjBase: o.Prefix + ".wf.run.", sem: make(chan struct{}, o.MaxConcurrent),
		services: &http.Client{Transport: o.Services}, urls: &http.Client{Transport: o.HTTP}}
	e.ctx, e.cancel = context.WithCancel(context.Background())
	for _, name := range slices.Sorted(maps.Keys(o.Workflows)) {
		d, err := Compile(name, o.Workflows[name])
		if err != nil {
			return nil, err
		}
		e.defs[name] = d
	}
	e.met = newMetrics(o.Registerer)
	var err error
	name := o.Prefix + "_wf_tasks"
	e.stream, err = o.JS.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: name, Subjects: []string{e.subjBase + "*"}, Retention: jetstream.WorkQueuePolicy,
		Storage: jetstream.FileStorage, Duplicates: 2 * time.Minute,
		Description: "Junction workflow tasks: one subject per run",
	})
	if err != nil {
		return nil, fmt.Errorf("workflow task stream: %w", err)
	}
	e.cons, err = e.stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable: "workers", AckPolicy: jetstream.AckExplicitPolicy, AckWait: ackWait,
		MaxDeliver: -1, MaxAckPending: 100_000, DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("workflow task consumer: %w", err)
	}
	return e, nil
}

// Definition returns the compiled workflow name, nil when not declared.
func (e *Engine) Definition(name string) *Definition { return e.defs[name] }

// Workflows returns the declared workflows' names.
func (e *Engine) Workflows() []string { return slices.Sorted(maps.Keys(e.defs)) }

// Start begins taking tasks.
func (e *Engine) Start(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.started {
		return nil
	}
	it, err := e.cons.Messages(jetstream.PullMaxMessages(min(256, e.o.MaxConcurrent)), jetstream.PullHeartbeat(time.Second))
	if err != nil {
		return fmt.Errorf("workflow tasks: %w", err)
	}
	e.it, e.started = it, true
	e.wg.Add(1)
	go e.loop(it)
	if err := e.startTriggers(ctx); err != nil {
		return err
	}
	if err := e.startWaits(ctx); err != nil {
		return err
	}
	return e.startSchedules(ctx)
}

// Stop stops taking tasks and waits, until ctx ends, for the runs being
// worked on to reach a point where they wait; then it abandons the rest,
// whose tasks go to another node (attempts cut short are retried after
// their deadline).
func (e *Engine) Stop(ctx context.Context) error {
	e.stopping.Store(true)
	e.mu.Lock()
	if e.it != nil {
		e.it.Drain()
	}
	e.mu.Unlock()
	done := make(chan struct{})
	go func() { e.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		e.cancel()
		<-done
	}
	e.cancel()
	return nil
}

func (e *Engine) loop(it jetstream.MessagesContext) {
	defer e.wg.Done()
	for {
		msg, err := it.Next()
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			return
		}
		if err != nil {
			if !e.stopping.Load() {
				e.log.Debug("task fetch", "err", err)
			}
			continue
		}
		if e.stopping.Load() {
			_ = msg.Nak()
			continue
		}
		e.sem <- struct{}{}
		e.wg.Add(1)
		go func() {
			defer func() { <-e.sem; e.wg.Done() }()
			e.handle(msg)
		}()
	}
}

// handle works on the run a task names until nothing is left to do now,
// then settles the task: done when the run has ended, or back with a
// delay until the run's next timer.
func (e *Engine) handle(msg jetstream.Msg) {
	id := strings.TrimPrefix(msg.Subject(), e.subjBase)
	e.met.active.Inc()
	defer e.met.active.Dec()
	stop := make(chan struct{})
	go func() {
		t := time.NewTicker(heartbeat)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				_ = msg.InProgress()
			}
		}
	}()
	w := e.newWork(id)
	if cr, ok := e.cache.checkout(id); ok {
		w.run, w.def, w.cached = cr.run, cr.def, true
	}
	err := w.process(e.ctx)
	e.cache.checkin(id, w.run, w.def)
	close(stop)
	if e.ctx.Err() != nil {
		_ = msg.Nak() // stopping: another node (or the next start) takes it
		return
	}
	if errors.Is(err, ErrRunNotFound) {
		e.log.Warn("task for a run without history: dropped", "run", id)
		_ = msg.Term()
		return
	}
	if err != nil {
		e.log.Warn("run: will retry", "run", id, "err", err)
		_ = msg.NakWithDelay(time.Second)
		return
	}
	r := w.run
	if r.Terminal() {
		if r.Parent != nil {
			if err := e.notifyParent(e.ctx, r); err != nil {
				e.log.Warn("child run: telling its parent failed; will retry", "run", id, "parent", r.Parent.Run, "err", err)
				_ = msg.NakWithDelay(time.Second)
				return
			}
		}
		_ = msg.Ack()
		return
	}
	at := wake(w.def, r)
	if at.IsZero() {
		_ = msg.Ack() // only an outside event moves it now, and that brings a task
		return
	}
	// Several tasks of a run may exist (a signal brings one while another
	// waits for a timer); the newest carries the run. An older one that
	// set no new timer steps aside.
	if meta, err := msg.Metadata(); err == nil {
		if last, err := e.stream.GetLastMsgForSubject(e.ctx, msg.Subject()); err == nil && last.Sequence > meta.Sequence.Stream {
			if w.timers {
				if err := e.poke(e.ctx, id); err != nil {
					_ = msg.NakWithDelay(time.Second)
					return
				}
			}
			_ = msg.Ack()
			return
		}
	}
	_ = msg.NakWithDelay(max(time.Until(at), time.Millisecond))
}

// poke publishes a task for run id, so that a node works on it now.
func (e *Engine) poke(ctx context.Context, id string) error {
	_, err := e.o.JS.PublishMsg(ctx, &nats.Msg{Subject: e.subjBase + id})
	return err
}

// StartOptions are the optional parts of a start.
type StartOptions struct {
	// IdempotencyKey makes the start repeatable: the same key for the
	// same workflow returns the run it first started.
	IdempotencyKey string
	// Trigger says what started the run (api, gateway, schedule, ...).
	Trigger string
	// ID, when set, is the run's id (a schedule derives it from the fire
	// time, so two nodes firing the same time start one run).
	ID     string
	Parent *ParentRef
	// Trace is the W3C traceparent the run's steps continue.
	Trace string
}

var idSpace = uuid.MustParse("6c1f6c2e-5a57-4f43-9a4b-7f3c8f0b6a11")

// StartRun starts a run of workflow name with input (JSON; empty means
// null). It returns the run and whether this call created it: false when
// an idempotency key (or ID) names a run that exists.
func (e *Engine) StartRun(ctx context.Context, name string, input json.RawMessage, o StartOptions) (*Run, bool, error) {
	if e.stopping.Load() {
		return nil, false, ErrStopped
	}
	d := e.defs[name]
	if d == nil {
		return nil, false, fmt.Errorf("%w: %q", ErrWorkflowNotFound, name)
	}
	if len(input) == 0 {
		input = json.RawMessage("null")
	}
	var in any
	if err := json.Unmarshal(input, &in); err != nil {
		return nil, false, fmt.Errorf("%w: %v", ErrInvalidInput, err)
	}
	if err := d.ValidateInput(in); err != nil {
		return nil, false, err
	}
	id := o.ID
	switch {
	case id != "":
	case o.IdempotencyKey != "":
		id = uuid.NewSHA1(idSpace, []byte(name+"\x00"+o.IdempotencyKey)).String()
	default:
		id = uuid.Must(uuid.NewV7()).String()
	}
	rec := record{Workflow: name, Input: input, Parent: o.Parent, Key: o.IdempotencyKey, Trigger: o.Trigger, Trace: o.Trace}
	if rec.Trace == "" {
		rec.Trace = traceparent(ctx)
	}
	now := time.Now()
	if d.Timeout > 0 {
		rec.TimeoutAt = tp(now.Add(d.Timeout))
	}
	data, err := json.Marshal(rec)
	if err != nil {
		return nil, false, err
	}
	res, err := e.o.Store.Append(ctx, Stream(id), eventstore.NoStream, []eventstore.EventData{{Type: evRunStarted, Data: data}})
	if errors.Is(err, eventstore.ErrWrongVersion) {
		r, gerr := e.Get(ctx, id)
		if gerr != nil {
			return nil, false, gerr
		}
		if r.Workflow != name {
			return nil, false, fmt.Errorf("%w: it started run %s of workflow %s", ErrKeyReused, id, r.Workflow)
		}
		return r, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("start run: %w", err)
	}
	fresh := func() *Run {
		r := newRun(id, d)
		r.apply(evRunStarted, &rec, now)
		r.Version = int64(res.LastVersion)
		return r
	}
	out := fresh()              // the caller's
	e.cache.put(id, fresh(), d) // the engine's, before the task exists, so a turn finds it
	if err := e.poke(ctx, id); err != nil {
		// The run is recorded; a task is all it lacks. Recover (at start)
		// pokes every unfinished run, so it is not lost; say so.
		e.log.Warn("run started but its task was not queued; it continues after a restart or a signal", "run", id, "err", err)
	}
	e.met.started.WithLabelValues(name).Inc()
	return out, true, nil
}

// Get folds run id's history into its state.
func (e *Engine) Get(ctx context.Context, id string) (*Run, error) {
	r, _, err := e.load(ctx, id)
	return r, err
}

func (e *Engine) load(ctx context.Context, id string) (*Run, *Definition, error) {
	if !validRunID(id) {
		return nil, nil, fmt.Errorf("%w: %q", ErrRunNotFound, id)
	}
	evs, err := e.o.Store.ReadStream(ctx, Stream(id), eventstore.ReadOptions{})
	if errors.Is(err, eventstore.ErrStreamNotFound) || errors.Is(err, eventstore.ErrStreamDeleted) {
		return nil, nil, fmt.Errorf("%w: %s", ErrRunNotFound, id)
	}
	if err != nil {
		return nil, nil, err
	}
	return fold(id, evs, func(name string) *Definition { return e.defs[name] })
}

// validRunID accepts what a subject token and a stream name both allow.
func validRunID(id string) bool {
	if id == "" || len(id) > 100 {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// HistoryEvent is one event of a run's history as the API shows it.
type HistoryEvent struct {
	Version uint64          `json:"version"`
	Type    string          `json:"type"`
	Time    time.Time       `json:"time"`
	Data    json.RawMessage `json:"data"`
}

// History returns run id's events.
func (e *Engine) History(ctx context.Context, id string) ([]HistoryEvent, error) {
	if !validRunID(id) {
		return nil, fmt.Errorf("%w: %q", ErrRunNotFound, id)
	}
	evs, err := e.o.Store.ReadStream(ctx, Stream(id), eventstore.ReadOptions{})
	if errors.Is(err, eventstore.ErrStreamNotFound) || errors.Is(err, eventstore.ErrStreamDeleted) {
		return nil, fmt.Errorf("%w: %s", ErrRunNotFound, id)
	}
	if err != nil {
		return nil, err
	}
	out := make([]HistoryEvent, len(evs))
	for i, ev := range evs {
		out[i] = HistoryEvent{Version: ev.Version, Type: ev.Type, Time: ev.Time, Data: ev.Data}
	}
	return out, nil
}

// Signal delivers signal name (with JSON data) to run id: a wait step
// for it completes with the data as its output; a signal no step waits
// for yet is kept until one does. A non-empty key makes a resend of the
// same signal count once.
func (e *Engine) Signal(ctx context.Context, id, name string, data json.RawMessage, key string) error {
	if !config.ValidSubscriptionName(name) {
		return fmt.Errorf("%w: invalid signal name %q: use letters, digits, '_' and '-'", ErrInvalidInput, name)
	}
	if len(data) > 0 && !json.Valid(data) {
		return fmt.Errorf("%w: the signal's data is not JSON", ErrInvalidInput)
	}
	evID := ""
	if key != "" {
		evID = effectID(id + "/signal/" + name + "/" + key)
	}
	return e.external(ctx, id, evID, evSignalReceived, record{Signal: name, Data: data})
}

// Cancel asks run id to stop: it unwinds, compensating its completed
// steps.
func (e *Engine) Cancel(ctx context.Context, id, reason string) error {
	return e.external(ctx, id, "", evCancelRequested, record{Reason: reason})
}

// external appends an outside event to a running run and pokes it.
func (e *Engine) external(ctx context.Context, id, evID, typ string, rec record) error {
	r, err := e.Get(ctx, id)
	if err != nil {
		return err
	}
	if r.Terminal() {
		return fmt.Errorf("%w: run %s is %s", ErrRunEnded, id, r.Status)
	}
	data, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if _, err := e.o.Store.Append(ctx, Stream(id), eventstore.StreamExists, []eventstore.EventData{{ID: evID, Type: typ, Data: data}}); err != nil {
		return err
	}
	return e.poke(ctx, id)
}

// notifyParent records a finished child run as the outcome of its
// parent's step, and pokes the parent.
func (e *Engine) notifyParent(ctx context.Context, child *Run) error {
	ref := child.Parent
	o := outcome{execution: execution{step: ref.Step, attempt: ref.Attempt}}
	if child.Status == StatusCompleted {
		raw, err := json.Marshal(child.Output)
		if err != nil {
			return err
		}
		o.output = raw
	} else {
		o.err = &StepError{Msg: fmt.Sprintf("child run %s of %s ended %s: %s", child.ID, child.Workflow, child.Status, child.Error), Permanent: true}
		o.permanent = true
	}
	w := e.newWork(ref.Run)
	if err := w.record(ctx, o); err != nil {
		return err
	}
	return e.poke(ctx, ref.Run)
}

// Wait returns run id once it has ended, or its state when ctx ends
// first (with ctx's error). A run that ends on this node hands its final
// state to Wait at once; one that ends on another node is seen by
// polling its history.
func (e *Engine) Wait(ctx context.Context, id string) (*Run, error) {
	ch := make(chan *Run, 1)
	e.wmu.Lock()
	if e.waiters == nil {
		e.waiters = map[string]map[chan *Run]bool{}
	}
	if e.waiters[id] == nil {
		e.waiters[id] = map[chan *Run]bool{}
	}
	e.waiters[id][ch] = true
	e.wmu.Unlock()
	defer func() {
		e.wmu.Lock()
		if m := e.waiters[id]; m != nil {
			delete(m, ch)
			if len(m) == 0 {
				delete(e.waiters, id)
			}
		}
		e.wmu.Unlock()
	}()
	delay := 20 * time.Millisecond
	var r *Run
	if e.cache.local(id) {
		delay = 200 * time.Millisecond // its end will most likely be handed over
	} else {
		var err error
		if r, err = e.Get(ctx, id); err != nil || r.Terminal() {
			return r, err
		}
	}
	for {
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			if r == nil {
				r, _ = e.Get(context.WithoutCancel(ctx), id)
			}
			return r, ctx.Err()
		case ended := <-ch:
			t.Stop()
			return ended, nil
		case <-t.C:
		}
		var err error
		if r, err = e.Get(ctx, id); err != nil || r.Terminal() {
			return r, err
		}
		delay = min(delay*2, time.Second)
	}
}

// ended hands the final state of run id to the callers of Wait on this
// node (each its own copy).
func (e *Engine) ended(id string, r *Run) {
	e.wmu.Lock()
	for ch := range e.waiters[id] {
		out := *r
		ch <- &out
	}
	delete(e.waiters, id)
	e.wmu.Unlock()
}

func traceparent(ctx context.Context) string {
	c := propagation.MapCarrier{}
	observe.Propagator.Inject(ctx, c)
	return c["traceparent"]
}

// StartFromGateway starts a run for a gateway route (gateway.Runs); the
// error is a problem document.
func (e *Engine) StartFromGateway(ctx context.Context, workflow string, input []byte, key, trace string) (string, string, bool, error) {
	r, created, err := e.StartRun(ctx, workflow, input, StartOptions{IdempotencyKey: key, Trigger: "gateway", Trace: trace})
	if err != nil {
		return "", "", false, Problem(err)
	}
	return r.ID, r.Status, !created, nil
}
