package workflow

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/junctionhq/junction/eventstore"
)

// Run statuses.
const (
	StatusRunning      = "running"
	StatusCompensating = "compensating"
	StatusCompleted    = "completed"
	StatusCompensated  = "compensated"
	StatusFailed       = "failed"
	StatusCancelled    = "cancelled"
)

// Step statuses.
const (
	StepPending   = "pending"
	StepRunning   = "running"
	StepRetrying  = "retrying" // failed an attempt; the next starts at retry_at
	StepCompleted = "completed"
	StepFailed    = "failed"
	StepSkipped   = "skipped"
	StepAbandoned = "abandoned" // a wait or timer the unwinding saga no longer needs
)

// Compensation statuses of a step.
const (
	CompRunning   = "running"
	CompRetrying  = "retrying"
	CompCompleted = "completed"
	CompFailed    = "failed"
)

// History event types, in stream wfrun-<run id>.
const (
	evRunStarted       = "RunStarted"
	evStepStarted      = "StepStarted"
	evStepCompleted    = "StepCompleted"
	evStepFailed       = "StepFailed"
	evStepSkipped      = "StepSkipped"
	evStepAbandoned    = "StepAbandoned"
	evSignalReceived   = "SignalReceived"
	evCancelRequested  = "CancelRequested"
	evUnwindStarted    = "RunUnwinding"
	evCompStarted      = "CompensationStarted"
	evCompCompleted    = "CompensationCompleted"
	evCompFailed       = "CompensationFailed"
	evRunCompleted     = "RunCompleted"
	evRunFailed        = "RunFailed"
	evRunCompensated   = "RunCompensated"
	evRunCancelled     = "RunCancelled"
	historyCategory    = "wfrun"
	historyStreamPrefx = historyCategory + "-"
)

// Stream is the event stream that holds run id's history.
func Stream(id string) string { return historyStreamPrefx + id }

// record is the payload of every history event; each type uses some of
// its fields.
type record struct {
	Workflow  string          `json:"workflow,omitempty"`
	Input     json.RawMessage `json:"input,omitempty"`
	Parent    *ParentRef      `json:"parent,omitempty"`
	Key       string          `json:"idempotency_key,omitempty"`
	Trigger   string          `json:"trigger,omitempty"`
	TimeoutAt *time.Time      `json:"timeout_at,omitempty"`
	Trace     string          `json:"traceparent,omitempty"`

	Step     string          `json:"step,omitempty"`
	Attempt  int             `json:"attempt,omitempty"`
	Deadline *time.Time      `json:"deadline,omitempty"`
	FireAt   *time.Time      `json:"fire_at,omitempty"`
	RetryAt  *time.Time      `json:"retry_at,omitempty"`
	Output   json.RawMessage `json:"output,omitempty"`
	Error    string          `json:"error,omitempty"`
	Signal   string          `json:"signal,omitempty"`
	SignalN  int             `json:"signal_index,omitempty"` // 1-based index of the signal a wait consumed
	Data     json.RawMessage `json:"data,omitempty"`
	Reason   string          `json:"reason,omitempty"`
}

// ParentRef names the step of a parent run that a child run reports to.
type ParentRef struct {
	Run     string `json:"run"`
	Step    string `json:"step"`
	Attempt int    `json:"attempt"`
}

// Run is a run's state, folded from its history.
type Run struct {
	ID        string     `json:"run_id"`
	Workflow  string     `json:"workflow"`
	Status    string     `json:"status"`
	Input     any        `json:"input"`
	Output    any        `json:"output,omitempty"`
	Error     string     `json:"error,omitempty"`
	Parent    *ParentRef `json:"parent,omitempty"`
	Trigger   string     `json:"trigger,omitempty"`
	StartedAt time.Time  `json:"started_at"`
	EndedAt   *time.Time `json:"ended_at,omitempty"`
	TimeoutAt *time.Time `json:"timeout_at,omitempty"`
	Steps     []*Step    `json:"steps"`
	// Version is the history's last version.
	Version int64 `json:"version"`

	key       string
	trace     string
	steps     map[string]*Step
	completed []string // step ids in order of completion: compensation runs backward
	signals   []signal
	cancel    string // why the run is to unwind, once it is
	unwinding bool
}

// Step is one step's state in a run.
type Step struct {
	ID        string     `json:"id"`
	Status    string     `json:"status"`
	Attempts  int        `json:"attempts"`
	Output    any        `json:"output,omitempty"`
	Error     string     `json:"error,omitempty"`
	StartedAt *time.Time `json:"started_at,omitempty"`
	EndedAt   *time.Time `json:"ended_at,omitempty"`
	RetryAt   *time.Time `json:"retry_at,omitempty"`
	// FireAt is when a sleep or until step's timer fires.
	FireAt *time.Time `json:"fire_at,omitempty"`
	// Deadline is when the running attempt (or wait) times out.
	Deadline     *time.Time    `json:"deadline,omitempty"`
	Compensation *Compensation `json:"compensation,omitempty"`

	deadline time.Time
	fireAt   time.Time
	raw      json.RawMessage // the output as recorded
}

// Compensation is the state of a step's compensation.
type Compensation struct {
	Status   string     `json:"status"`
	Attempts int        `json:"attempts"`
	Error    string     `json:"error,omitempty"`
	RetryAt  *time.Time `json:"retry_at,omitempty"`

	deadline time.Time
}

type signal struct {
	name     string
	data     json.RawMessage
	consumed bool
}

// Terminal reports whether the run has ended.
func (r *Run) Terminal() bool {
	switch r.Status {
	case StatusCompleted, StatusCompensated, StatusFailed, StatusCancelled:
		return true
	}
	return false
}

// Step returns the state of step id, nil when the workflow has none.
func (r *Run) Step(id string) *Step { return r.steps[id] }

func newRun(id string, d *Definition) *Run {
	r := &Run{ID: id, Version: -1, steps: map[string]*Step{}}
	if d != nil {
		for _, s := range d.steps {
			st := &Step{ID: s.id, Status: StepPending}
			r.Steps = append(r.Steps, st)
			r.steps[s.id] = st
		}
	}
	return r
}

// fold rebuilds a run from its history; defs resolves the workflow named
// by RunStarted.
func fold(id string, events []eventstore.Event, defs func(string) *Definition) (*Run, *Definition, error) {
	if len(events) == 0 || events[0].Type != evRunStarted {
		return nil, nil, fmt.Errorf("%w: run %s has no history", ErrRunNotFound, id)
	}
	var first record
	if err := json.Unmarshal(events[0].Data, &first); err != nil {
		return nil, nil, fmt.Errorf("run %s: %w", id, err)
	}
	d := defs(first.Workflow)
	r := newRun(id, d)
	for _, e := range events {
		var rec record
		if err := json.Unmarshal(e.Data, &rec); err != nil {
			return nil, nil, fmt.Errorf("run %s: event %d: %w", id, e.Version, err)
		}
		r.apply(e.Type, &rec, e.Time)
		r.Version = int64(e.Version)
	}
	return r, d, nil
}

// step returns the state of a step the history names, adding it when the
// definition no longer declares it (the history stays readable).
func (r *Run) step(id string) *Step {
	s := r.steps[id]
	if s == nil {
		s = &Step{ID: id, Status: StepPending}
		r.steps[id] = s
		r.Steps = append(r.Steps, s)
	}
	return s
}

func decodeAny(raw json.RawMessage) any {
	if len(raw) == 0 {
		return nil
	}
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return nil
	}
	return v
}

func tp(t time.Time) *time.Time { return &t }

func deref(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return *t
}

// apply folds one event into the run.
func (r *Run) apply(typ string, e *record, at time.Time) {
	switch typ {
	case evRunStarted:
		r.Workflow, r.Input, r.Parent, r.key, r.Trigger, r.trace = e.Workflow, decodeAny(e.Input), e.Parent, e.Key, e.Trigger, e.Trace
		r.Status, r.StartedAt, r.TimeoutAt = StatusRunning, at, e.TimeoutAt
	case evStepStarted:
		s := r.step(e.Step)
		s.Status, s.Attempts, s.RetryAt, s.Error = StepRunning, e.Attempt, nil, ""
		s.deadline, s.fireAt, s.Deadline, s.FireAt = deref(e.Deadline), deref(e.FireAt), e.Deadline, e.FireAt
		if s.StartedAt == nil {
			s.StartedAt = tp(at)
		}
	case evStepCompleted:
		s := r.step(e.Step)
		s.Status, s.Output, s.raw, s.EndedAt, s.Error, s.RetryAt = StepCompleted, decodeAny(e.Output), e.Output, tp(at), "", nil
		if s.StartedAt == nil {
			s.StartedAt = s.EndedAt // a step the engine completes at once (set, switch)
		}
		if e.Attempt > s.Attempts {
			s.Attempts = e.Attempt
		}
		if e.SignalN > 0 && e.SignalN <= len(r.signals) {
			r.signals[e.SignalN-1].consumed = true
		}
		r.completed = append(r.completed, e.Step)
	case evStepFailed:
		s := r.step(e.Step)
		s.Error, s.RetryAt = e.Error, e.RetryAt
		s.Attempts = max(s.Attempts, e.Attempt)
		if e.RetryAt != nil {
			s.Status = StepRetrying
		} else {
			s.Status, s.EndedAt = StepFailed, tp(at)
		}
	case evStepSkipped:
		s := r.step(e.Step)
		s.Status, s.Error, s.EndedAt = StepSkipped, e.Reason, tp(at)
	case evStepAbandoned:
		s := r.step(e.Step)
		s.Status, s.Error, s.EndedAt = StepAbandoned, e.Reason, tp(at)
	case evSignalReceived:
		r.signals = append(r.signals, signal{name: e.Signal, data: e.Data})
	case evCancelRequested:
		if r.cancel == "" {
			r.cancel = "cancelled: " + e.Reason
			if e.Reason == "" {
				r.cancel = "cancelled"
			}
		}
	case evUnwindStarted:
		r.Status, r.unwinding, r.Error = StatusCompensating, true, e.Reason
	case evCompStarted:
		s := r.step(e.Step)
		if s.Compensation == nil {
			s.Compensation = &Compensation{}
		}
		c := s.Compensation
		c.Status, c.Attempts, c.deadline, c.RetryAt = CompRunning, e.Attempt, deref(e.Deadline), nil
	case evCompCompleted:
		c := r.step(e.Step).Compensation
		if c != nil {
			c.Status, c.Error, c.RetryAt = CompCompleted, "", nil
		}
	case evCompFailed:
		c := r.step(e.Step).Compensation
		if c != nil {
			c.Error, c.RetryAt = e.Error, e.RetryAt
			c.Status = CompFailed
			if e.RetryAt != nil {
				c.Status = CompRetrying
			}
		}
	case evRunCompleted:
		r.Status, r.Output, r.EndedAt = StatusCompleted, decodeAny(e.Output), tp(at)
	case evRunFailed:
		r.Status, r.Error, r.EndedAt = StatusFailed, e.Error, tp(at)
	case evRunCompensated:
		r.Status, r.Error, r.EndedAt = StatusCompensated, e.Error, tp(at)
	case evRunCancelled:
		r.Status, r.Error, r.EndedAt = StatusCancelled, e.Error, tp(at)
	}
}

// vars are the CEL variables of the run's expressions: input, and steps
// as id -> {output, status, attempts, error}.
func (r *Run) vars() map[string]any {
	steps := make(map[string]any, len(r.Steps))
	for _, s := range r.Steps {
		steps[s.ID] = map[string]any{"output": s.Output, "status": s.Status, "attempts": int64(s.Attempts), "error": s.Error}
	}
	return map[string]any{"input": r.Input, "steps": steps}
}
