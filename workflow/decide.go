package workflow

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// pending is an event decided but not yet appended.
type pending struct {
	typ string
	rec record
}

// execution is an attempt (of a step, or of its compensation) that the
// engine must carry out after the decision is appended.
type execution struct {
	step     string
	attempt  int
	comp     bool
	cancel   bool // tell a child run to cancel (the parent is unwinding)
	deadline time.Time
}

// outcome is the result of an execution, to be recorded.
type outcome struct {
	execution
	output    json.RawMessage
	err       error
	permanent bool // the error is not worth retrying
	pending   bool // the attempt goes on elsewhere (a child run): nothing to record
}

type decision struct {
	events []pending
	execs  []execution
}

// decider computes, from a run's state and the time, what happens next.
// It applies each event it decides to the run as it goes, so that one
// decision can chain (a set step enables the next step, which starts).
type decider struct {
	d   *Definition
	r   *Run
	now time.Time
	out decision
}

func (x *decider) emit(typ string, rec record) {
	x.r.apply(typ, &rec, x.now)
	x.out.events = append(x.out.events, pending{typ, rec})
}

// decide records outcomes (those that still apply: the attempt is the
// step's current one and has none yet) and decides what follows.
func decide(d *Definition, r *Run, now time.Time, outs ...outcome) decision {
	x := &decider{d: d, r: r, now: now}
	if r.Terminal() {
		return x.out
	}
	if d == nil {
		x.emit(evRunFailed, record{Error: fmt.Sprintf("workflow %q is not declared on this node", r.Workflow)})
		return x.out
	}
	for _, o := range outs {
		x.record(o)
	}
	if !r.unwinding {
		switch {
		case r.cancel != "":
			x.unwind(r.cancel)
		case r.TimeoutAt != nil && !now.Before(*r.TimeoutAt):
			x.unwind(fmt.Sprintf("the run timed out after %v", d.Timeout))
		default:
			x.advance()
		}
	}
	if r.unwinding {
		x.compensate()
	}
	return x.out
}

// record applies one execution's outcome.
func (x *decider) record(o outcome) {
	if o.pending || o.cancel {
		return
	}
	sd := x.d.stepDef(o.step)
	s := x.r.steps[o.step]
	if sd == nil || s == nil {
		return
	}
	if o.comp {
		c := s.Compensation
		if c == nil || c.Status != CompRunning || c.Attempts != o.attempt {
			return
		}
		if o.err == nil {
			x.emit(evCompCompleted, record{Step: o.step, Attempt: o.attempt})
		} else {
			x.failComp(sd, o.attempt, o.err.Error(), !o.permanent)
		}
		return
	}
	if s.Status != StepRunning || s.Attempts != o.attempt {
		return
	}
	if o.err == nil {
		x.emit(evStepCompleted, record{Step: o.step, Attempt: o.attempt, Output: o.output})
		return
	}
	x.fail(sd, o.attempt, o.err.Error(), !o.permanent && !x.r.unwinding)
}

func (d *Definition) stepDef(id string) *stepDef {
	i, ok := d.index[id]
	if !ok {
		return nil
	}
	return d.steps[i]
}

// fail records a failed attempt: a retry at the policy's delay while
// attempts remain and the error is worth retrying, else for good.
func (x *decider) fail(sd *stepDef, attempt int, msg string, retry bool) {
	rec := record{Step: sd.id, Attempt: attempt, Error: msg}
	if retry && attempt < sd.retry.Attempts {
		rec.RetryAt = tp(x.now.Add(backoff(sd.retry, attempt)))
	}
	x.emit(evStepFailed, rec)
}

func (x *decider) failComp(sd *stepDef, attempt int, msg string, retry bool) {
	rec := record{Step: sd.id, Attempt: attempt, Error: msg}
	if retry && attempt < sd.retry.Attempts {
		rec.RetryAt = tp(x.now.Add(backoff(sd.retry, attempt)))
	}
	x.emit(evCompFailed, rec)
}

func (x *decider) unwind(reason string) {
	x.emit(evUnwindStarted, record{Reason: reason})
}

// needsMet reports whether every need of sd has completed or been
// skipped.
func (x *decider) needsMet(sd *stepDef) bool {
	for _, n := range sd.needs {
		switch x.r.steps[n].Status {
		case StepCompleted, StepSkipped:
		default:
			return false
		}
	}
	return true
}

// advance starts every step that can start, completes those the engine
// completes itself (set, switch, timers, signals), and ends the run when
// every step is done, or unwinds it when one failed for good.
func (x *decider) advance() {
	for progress := true; progress; {
		progress = false
		for _, sd := range x.d.steps {
			if x.step(sd) {
				progress = true
			}
		}
	}
	done := true
	for _, sd := range x.d.steps {
		s := x.r.steps[sd.id]
		switch s.Status {
		case StepFailed:
			x.unwind(fmt.Sprintf("step %s failed: %s", sd.id, s.Error))
			return
		case StepCompleted, StepSkipped:
		default:
			done = false
		}
	}
	if !done {
		return
	}
	var out any
	if x.d.output != nil {
		v, err := x.d.output.Eval(x.r.vars())
		if err != nil {
			x.emit(evRunFailed, record{Error: "output: " + err.Error()})
			return
		}
		out = v
	}
	raw, err := json.Marshal(out)
	if err != nil {
		x.emit(evRunFailed, record{Error: "output: " + err.Error()})
		return
	}
	x.emit(evRunCompleted, record{Output: raw})
}

// step moves one step forward if it can; it reports whether it did.
func (x *decider) step(sd *stepDef) bool {
	s := x.r.steps[sd.id]
	switch s.Status {
	case StepPending:
		if !x.needsMet(sd) {
			return false
		}
		if sd.when != nil {
			ok, err := sd.when.EvalBool(x.r.vars())
			if err != nil {
				x.emit(evStepFailed, record{Step: sd.id, Attempt: 1, Error: "when: " + err.Error()})
				return true
			}
			if !ok {
				x.emit(evStepSkipped, record{Step: sd.id, Reason: "when is false"})
				return true
			}
		}
		x.start(sd, 1)
		return true
	case StepRetrying:
		if s.RetryAt != nil && x.now.Before(*s.RetryAt) {
			return false
		}
		x.start(sd, s.Attempts+1)
		return true
	case StepRunning:
		return x.check(sd, s)
	}
	return false
}

// start begins attempt n of sd: engine-run kinds complete (or start a
// timer) at once; the others are claimed and executed.
func (x *decider) start(sd *stepDef, n int) {
	a := sd.act
	if a.executes() {
		rec := record{Step: sd.id, Attempt: n}
		var dl time.Time
		if t := sd.attemptTimeout(); t > 0 {
			dl = x.now.Add(t)
			rec.Deadline = &dl
		}
		x.emit(evStepStarted, rec)
		x.out.execs = append(x.out.execs, execution{step: sd.id, attempt: n, deadline: dl})
		return
	}
	vars := x.r.vars()
	switch a.kind {
	case KindSet:
		m := make(map[string]any, len(a.set))
		for _, p := range a.set {
			v, err := p.prg.Eval(vars)
			if err != nil {
				x.fail(sd, n, fmt.Sprintf("set %s: %v", p.name, err), false)
				return
			}
			m[p.name] = v
		}
		x.complete(sd, n, m)
	case KindSwitch:
		for _, c := range a.cases {
			if c.when != nil {
				ok, err := c.when.EvalBool(vars)
				if err != nil {
					x.fail(sd, n, err.Error(), false)
					return
				}
				if !ok {
					continue
				}
			}
			var v any
			if c.value != nil {
				var err error
				if v, err = c.value.Eval(vars); err != nil {
					x.fail(sd, n, err.Error(), false)
					return
				}
			}
			x.complete(sd, n, v)
			return
		}
		x.complete(sd, n, nil) // no case holds and there is no default
	case KindSleep:
		x.emit(evStepStarted, record{Step: sd.id, Attempt: n, FireAt: tp(x.now.Add(a.sleep))})
	case KindUntil:
		at, err := untilTime(a, vars)
		if err != nil {
			x.fail(sd, n, "until: "+err.Error(), false)
			return
		}
		x.emit(evStepStarted, record{Step: sd.id, Attempt: n, FireAt: &at})
	case KindWait:
		rec := record{Step: sd.id, Attempt: n}
		if t := a.wait.Timeout.D(); t > 0 {
			rec.Deadline = tp(x.now.Add(t))
		}
		x.emit(evStepStarted, rec)
		if a.wait.Message != nil {
			// Register the waiter, so that messages reach it.
			x.out.execs = append(x.out.execs, execution{step: sd.id, attempt: n, deadline: deref(rec.Deadline)})
		}
	}
}

func (x *decider) complete(sd *stepDef, n int, v any) {
	raw, err := json.Marshal(v)
	if err != nil {
		x.fail(sd, n, err.Error(), false)
		return
	}
	x.emit(evStepCompleted, record{Step: sd.id, Attempt: n, Output: raw})
}

// check completes or fails a running step whose timer, signal or
// deadline has come.
func (x *decider) check(sd *stepDef, s *Step) bool {
	switch sd.act.kind {
	case KindSleep, KindUntil:
		if !s.fireAt.IsZero() && !x.now.Before(s.fireAt) {
			x.emit(evStepCompleted, record{Step: sd.id, Attempt: s.Attempts, Output: json.RawMessage("null")})
			return true
		}
		return false
	case KindWait:
		if name := sd.act.wait.Signal; name != "" {
			for i, sg := range x.r.signals {
				if sg.name == name && !sg.consumed {
					out := sg.data
					if len(out) == 0 {
						out = json.RawMessage("null")
					}
					x.emit(evStepCompleted, record{Step: sd.id, Attempt: s.Attempts, Output: out, SignalN: i + 1})
					return true
				}
			}
		}
		if !s.deadline.IsZero() && !x.now.Before(s.deadline) {
			what := "signal " + sd.act.wait.Signal
			if sd.act.wait.Message != nil {
				what = "a message on " + sd.act.wait.Message.Topic
			}
			x.fail(sd, s.Attempts, fmt.Sprintf("timed out after %v waiting for %s", sd.act.wait.Timeout.D(), what), false)
			return true
		}
		return false
	}
	if !s.deadline.IsZero() && !x.now.Before(s.deadline) {
		x.fail(sd, s.Attempts, fmt.Sprintf("attempt %d timed out after %v", s.Attempts, sd.attemptTimeout()), true)
		return true
	}
	return false
}

// compensate unwinds a failed or cancelled run: it abandons waits and
// timers, lets attempts in flight finish (their effects must be undone
// too), then runs the compensations of completed steps one at a time in
// reverse order of completion, and ends the run. A compensation that
// fails for good does not stop the others: the run then ends failed,
// naming each.
func (x *decider) compensate() {
	busy := false
	for _, sd := range x.d.steps {
		s := x.r.steps[sd.id]
		switch {
		case s.Status == StepRetrying, s.Status == StepRunning && !sd.act.executes():
			x.emit(evStepAbandoned, record{Step: sd.id, Reason: "the run is unwinding"})
		case s.Status == StepRunning:
			if !s.deadline.IsZero() && !x.now.Before(s.deadline) {
				x.fail(sd, s.Attempts, fmt.Sprintf("attempt %d timed out after %v", s.Attempts, sd.attemptTimeout()), false)
				continue
			}
			if sd.act.kind == KindWorkflow {
				x.out.execs = append(x.out.execs, execution{step: sd.id, attempt: s.Attempts, cancel: true})
			}
			busy = true
		}
	}
	if busy {
		return
	}
	compensated := false
	var failed []string
	for i := len(x.r.completed) - 1; i >= 0; i-- {
		id := x.r.completed[i]
		sd := x.d.stepDef(id)
		if sd == nil || sd.comp == nil {
			continue
		}
		compensated = true
		c := x.r.steps[id].Compensation
		switch {
		case c == nil:
			x.startComp(sd, 1)
			return
		case c.Status == CompRunning:
			if !c.deadline.IsZero() && !x.now.Before(c.deadline) {
				x.failComp(sd, c.Attempts, fmt.Sprintf("compensation attempt %d timed out", c.Attempts), true)
				x.compensate()
			}
			return
		case c.Status == CompRetrying:
			if c.RetryAt == nil || !x.now.Before(*c.RetryAt) {
				x.startComp(sd, c.Attempts+1)
			}
			return
		case c.Status == CompFailed:
			// Undo what can still be undone; the run fails at the end.
			failed = append(failed, fmt.Sprintf("the compensation of step %s failed: %s", id, c.Error))
		}
	}
	reason := x.r.Error
	switch {
	case len(failed) > 0:
		x.emit(evRunFailed, record{Error: reason + "; then " + strings.Join(failed, "; ")})
	case compensated:
		x.emit(evRunCompensated, record{Error: reason})
	case x.r.cancel != "":
		x.emit(evRunCancelled, record{Error: reason})
	default:
		x.emit(evRunFailed, record{Error: reason})
	}
}

func (x *decider) startComp(sd *stepDef, n int) {
	rec := record{Step: sd.id, Attempt: n}
	t := sd.timeout
	if t <= 0 {
		t = DefaultCallTimeout
		if sd.comp.kind != KindCall {
			t = DefaultQuickTimeout
		}
	}
	dl := x.now.Add(t)
	rec.Deadline = &dl
	x.emit(evCompStarted, rec)
	x.out.execs = append(x.out.execs, execution{step: sd.id, attempt: n, comp: true, deadline: dl})
}

// wake is when the run next needs attention on its own: the earliest
// timer, retry or deadline; the zero time when only an outside event
// (a signal, a child run) can move it.
func wake(d *Definition, r *Run) time.Time {
	if r.Terminal() {
		return time.Time{}
	}
	var w time.Time
	at := func(t time.Time) {
		if !t.IsZero() && (w.IsZero() || t.Before(w)) {
			w = t
		}
	}
	for _, s := range r.Steps {
		switch s.Status {
		case StepRunning:
			at(s.deadline)
			at(s.fireAt)
		case StepRetrying:
			at(deref(s.RetryAt))
		}
		if c := s.Compensation; c != nil {
			switch c.Status {
			case CompRunning:
				at(c.deadline)
			case CompRetrying:
				at(deref(c.RetryAt))
			}
		}
	}
	if !r.unwinding {
		at(deref(r.TimeoutAt))
	}
	return w
}

// untilTime evaluates an until template: a timestamp, or RFC 3339 text.
func untilTime(a *action, vars map[string]any) (time.Time, error) {
	v, err := a.until.Eval(vars)
	if err != nil {
		return time.Time{}, err
	}
	switch t := v.(type) {
	case time.Time:
		return t, nil
	case string:
		return time.Parse(time.RFC3339Nano, t)
	}
	return time.Time{}, fmt.Errorf("until yields %T, want a timestamp or RFC 3339 text", v)
}
