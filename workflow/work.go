package workflow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/junctionhq/junction/eventstore"
)

// work is one node's turn on one run: it decides, appends, executes the
// attempts it claimed, records their outcomes (deciding again each time)
// and ends when nothing it started is still in flight.
type work struct {
	e      *Engine
	id     string
	mu     sync.Mutex // serializes decisions: one append at a time
	run    *Run
	def    *Definition
	execs  sync.WaitGroup
	timers bool // an append of this turn set a timer (sleep, retry, wait timeout)
	cached bool // run came from the cache and may be stale
}

func (e *Engine) newWork(id string) *work { return &work{e: e, id: id} }

// conflicts bounds how often one decision is retried against a history
// that others keep moving.
const conflicts = 50

// process loads the run and advances it until every attempt it started
// has been recorded.
func (w *work) process(ctx context.Context) error {
	if err := w.decide(ctx); err != nil {
		return err
	}
	w.execs.Wait()
	return nil
}

func (w *work) reload(ctx context.Context) error {
	r, d, err := w.e.load(ctx, w.id)
	if err != nil {
		return err
	}
	w.run, w.def = r, d
	return nil
}

// decide records outs, decides, appends the decision and launches its
// executions, retrying on a concurrent append.
func (w *work) decide(ctx context.Context, outs ...outcome) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.commit(ctx, func() decision { return decide(w.def, w.run, time.Now(), outs...) }, true)
}

// record only records outcomes (for a child run reporting to its parent,
// whose own task does the deciding).
func (w *work) record(ctx context.Context, outs ...outcome) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.commit(ctx, func() decision {
		x := &decider{d: w.def, r: w.run, now: time.Now()}
		if !w.run.Terminal() && w.def != nil {
			for _, o := range outs {
				x.record(o)
			}
		}
		return x.out
	}, false)
}

func (w *work) commit(ctx context.Context, next func() decision, launch bool) error {
	for try := 0; ; try++ {
		if w.run == nil {
			if err := w.reload(ctx); err != nil {
				return err
			}
		}
		version := w.run.Version
		dec := next()
		if len(dec.events) == 0 && w.cached {
			// Nothing to do, by a state that may be stale: read the history.
			w.run, w.cached = nil, false
			continue
		}
		if len(dec.events) == 0 {
			if launch {
				w.launch(ctx, dec.execs) // only cancellations of child runs
			}
			return nil
		}
		evs := make([]eventstore.EventData, len(dec.events))
		for i, p := range dec.events {
			data, err := json.Marshal(p.rec)
			if err != nil {
				return err
			}
			evs[i] = eventstore.EventData{Type: p.typ, Data: data}
		}
		res, err := w.e.o.Store.Append(ctx, Stream(w.id), eventstore.ExpectedVersion(version), evs)
		if err != nil {
			w.run, w.cached = nil, false // the decision was applied to it: start again from the history
			if errors.Is(err, eventstore.ErrWrongVersion) && try < conflicts {
				continue
			}
			return fmt.Errorf("run %s: recording %s: %w", w.id, dec.events[0].typ, err)
		}
		w.run.Version = int64(res.LastVersion)
		w.observe(dec.events)
		if launch {
			w.launch(ctx, dec.execs)
		}
		return nil
	}
}

// observe counts what a committed decision did.
func (w *work) observe(evs []pending) {
	m, name := w.e.met, w.run.Workflow
	for _, p := range evs {
		switch p.typ {
		case evStepStarted:
			if p.rec.FireAt != nil || p.rec.Deadline != nil && w.def.stepDef(p.rec.Step) != nil && !w.def.stepDef(p.rec.Step).act.executes() {
				w.timers = true
			}
		case evStepFailed, evCompFailed:
			if p.rec.RetryAt != nil {
				w.timers = true
			}
			m.steps.WithLabelValues(name, "failed").Inc()
		case evStepCompleted:
			m.steps.WithLabelValues(name, "completed").Inc()
		case evRunCompleted, evRunFailed, evRunCompensated, evRunCancelled:
			r := w.run
			m.finished.WithLabelValues(name, r.Status).Inc()
			m.duration.WithLabelValues(name, r.Status).Observe(time.Since(r.StartedAt).Seconds())
			w.e.log.Debug("run ended", "run", w.id, "workflow", name, "status", r.Status, "error", r.Error)
			w.e.ended(w.id, r)
		}
	}
}

// launch executes attempts, each in its own goroutine; their outcomes
// come back through decide.
func (w *work) launch(ctx context.Context, execs []execution) {
	if len(execs) == 0 {
		return
	}
	snap := w.run.vars() // the state the attempts were decided on
	run := w.run
	for _, ex := range execs {
		w.execs.Add(1)
		go func() {
			defer w.execs.Done()
			o := w.e.execute(ctx, w.def, run, snap, ex)
			if ctx.Err() != nil || o.pending || ex.cancel {
				return // stopping: the attempt's deadline hands it to another node
			}
			if err := w.decide(ctx, o); err != nil {
				w.e.log.Warn("run: recording an outcome failed; the attempt is retried after its deadline",
					"run", w.id, "step", ex.step, "attempt", ex.attempt, "err", err)
			}
		}()
	}
}
