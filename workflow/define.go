// Package workflow runs durable workflows: steps joined by needs into a
// DAG, executed across nodes, recorded in an event stream per run, and
// undone in reverse order when a later step fails for good (a saga).
//
// A run's history (stream wfrun-<id>) is the only truth: the engine folds
// it into a Run, decides what to do next (decide, a pure function of the
// definition, the run and the time), appends that decision with the
// history's version as the expected version, and only then acts. So a
// step attempt is executed by the one node whose StepStarted append won,
// and an outcome is recorded once, whatever nodes crash or race.
//
// Work reaches nodes as task messages on a JetStream work queue, one
// subject per run: the node holding a run's task executes its steps and
// settles the task when the run ends, or hands it back with a delay equal
// to the run's next timer (sleep, retry, timeout).
package workflow

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/expr"
)

// Step kinds.
const (
	KindCall     = "call"
	KindPublish  = "publish"
	KindAppend   = "append"
	KindWait     = "wait"
	KindSleep    = "sleep"
	KindUntil    = "until"
	KindSwitch   = "switch"
	KindForeach  = "foreach"
	KindSet      = "set"
	KindWorkflow = "workflow"
)

// Default attempt timeouts of steps that act on something; an attempt
// that has no outcome by then (its node died, or it hangs) is failed and
// retried.
const (
	DefaultCallTimeout  = 30 * time.Second
	DefaultQuickTimeout = 10 * time.Second // publish, append
)

// Definition is a compiled workflow.
type Definition struct {
	Name    string
	Timeout time.Duration
	schema  *jsonschema.Schema
	output  *expr.Program
	steps   []*stepDef
	index   map[string]int
}

type stepDef struct {
	id      string
	needs   []string
	when    *expr.Program
	retry   config.StepRetry
	timeout time.Duration
	act     *action
	comp    *action
}

type action struct {
	kind    string
	call    *callDef
	publish *publishDef
	append  *appendDef
	wait    *config.WaitAction
	waitMsg *expr.Program
	sleep   time.Duration
	until   *expr.Template
	cases   []switchCase
	foreach *foreachDef
	set     []namedProgram
	child   *childDef
}

type callDef struct {
	service string
	url     *expr.Template
	method  string
	path    *expr.Template
	headers map[string]*expr.Template
	body    *expr.Template
}

type publishDef struct {
	topic, typ string
	data, key  *expr.Template
}

type appendDef struct {
	stream *expr.Template
	typ    string
	data   *expr.Template
}

type switchCase struct {
	when  *expr.Program
	value *expr.Template
}

type foreachDef struct {
	items       *expr.Program
	concurrency int
	do          *action
}

type namedProgram struct {
	name string
	prg  *expr.Program
}

type childDef struct {
	name  string
	input *expr.Template
}

// Compile builds the runnable form of a validated workflow.
func Compile(name string, w *config.Workflow) (*Definition, error) {
	d := &Definition{Name: name, Timeout: w.Timeout.D(), index: map[string]int{}}
	var err error
	if w.Input != nil {
		if d.schema, err = compileSchema(w.Input); err != nil {
			return nil, fmt.Errorf("workflow %s: input: %w", name, err)
		}
	}
	if w.Output != "" {
		if d.output, err = expr.Compile(w.Output); err != nil {
			return nil, fmt.Errorf("workflow %s: output: %w", name, err)
		}
	}
	for i, s := range w.Steps {
		s.Normalize()
		sd := &stepDef{id: s.ID, needs: s.Needs, retry: *s.Retry, timeout: s.Timeout.D()}
		if s.When != "" {
			if sd.when, err = expr.CompileBool(s.When); err != nil {
				return nil, fmt.Errorf("workflow %s: step %s: when: %w", name, s.ID, err)
			}
		}
		if sd.act, err = compileAction(&s.StepAction); err != nil {
			return nil, fmt.Errorf("workflow %s: step %s: %w", name, s.ID, err)
		}
		if s.Compensate != nil {
			if sd.comp, err = compileAction(s.Compensate); err != nil {
				return nil, fmt.Errorf("workflow %s: step %s: compensate: %w", name, s.ID, err)
			}
		}
		d.steps = append(d.steps, sd)
		d.index[s.ID] = i
	}
	return d, nil
}

// Steps returns the ids of the steps in declaration order.
func (d *Definition) Steps() []string {
	out := make([]string, len(d.steps))
	for i, s := range d.steps {
		out[i] = s.id
	}
	return out
}

// ValidateInput checks a run's input against the workflow's schema.
func (d *Definition) ValidateInput(input any) error {
	if d.schema == nil {
		return nil
	}
	if err := d.schema.Validate(input); err != nil {
		return fmt.Errorf("%w: %s", ErrInvalidInput, firstLeaf(err))
	}
	return nil
}

// firstLeaf returns the most precise line of a validation error.
func firstLeaf(err error) string {
	lines := strings.Split(strings.TrimSpace(err.Error()), "\n")
	for _, l := range lines[1:] {
		if l = strings.TrimLeft(l, " -"); l != "" && !strings.HasSuffix(l, "failed") {
			return l
		}
	}
	return lines[len(lines)-1]
}

func compileSchema(v any) (*jsonschema.Schema, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	doc, err := jsonschema.UnmarshalJSON(strings.NewReader(string(b)))
	if err != nil {
		return nil, err
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("urn:junction:input", doc); err != nil {
		return nil, err
	}
	return c.Compile("urn:junction:input")
}

func template(s string) (*expr.Template, error) {
	if s == "" {
		return nil, nil
	}
	return expr.CompileTemplate(s)
}

func compileAction(a *config.StepAction) (*action, error) {
	out := &action{kind: a.Kind()}
	var err error
	switch out.kind {
	case KindCall:
		c := a.Call
		cd := &callDef{service: c.Service, method: strings.ToUpper(c.Method), headers: map[string]*expr.Template{}}
		if cd.url, err = template(c.URL); err != nil {
			return nil, err
		}
		if cd.path, err = template(c.Path); err != nil {
			return nil, err
		}
		if cd.body, err = template(c.Body); err != nil {
			return nil, err
		}
		for h, v := range c.Headers {
			if cd.headers[h], err = template(v); err != nil {
				return nil, err
			}
		}
		if cd.method == "" {
			cd.method = "GET"
			if cd.body != nil {
				cd.method = "POST"
			}
		}
		out.call = cd
	case KindPublish:
		p := &publishDef{topic: a.Publish.Topic, typ: a.Publish.Type}
		if p.data, err = template(a.Publish.Data); err != nil {
			return nil, err
		}
		if p.key, err = template(a.Publish.Key); err != nil {
			return nil, err
		}
		out.publish = p
	case KindAppend:
		p := &appendDef{typ: a.Append.Type}
		if p.stream, err = template(a.Append.Stream); err != nil {
			return nil, err
		}
		if p.data, err = template(a.Append.Data); err != nil {
			return nil, err
		}
		out.append = p
	case KindWait:
		out.wait = a.Wait
		if m := a.Wait.Message; m != nil && m.Filter != "" {
			if out.waitMsg, err = expr.CompileBool(m.Filter); err != nil {
				return nil, err
			}
		}
	case KindSleep:
		out.sleep = a.Sleep.D()
	case KindUntil:
		if out.until, err = template(a.Until); err != nil {
			return nil, err
		}
	case KindSwitch:
		for _, c := range a.Switch {
			var sc switchCase
			if c.When != "" {
				if sc.when, err = expr.CompileBool(c.When); err != nil {
					return nil, err
				}
			}
			if sc.value, err = template(c.Value); err != nil {
				return nil, err
			}
			out.cases = append(out.cases, sc)
		}
	case KindForeach:
		f := &foreachDef{concurrency: a.Foreach.Concurrency}
		if f.concurrency <= 0 {
			f.concurrency = 10
		}
		if f.items, err = expr.Compile(a.Foreach.Items); err != nil {
			return nil, err
		}
		if f.do, err = compileAction(a.Foreach.Do); err != nil {
			return nil, err
		}
		out.foreach = f
	case KindSet:
		for _, k := range sortedKeys(a.Set) {
			p, err := expr.Compile(a.Set[k])
			if err != nil {
				return nil, err
			}
			out.set = append(out.set, namedProgram{k, p})
		}
	case KindWorkflow:
		out.child = &childDef{name: a.Workflow.Name}
		if out.child.input, err = template(a.Workflow.Input); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("a step needs exactly one action")
	}
	return out, nil
}

// executes reports whether the action acts outside the engine, so that
// an attempt is claimed, executed by one node and given a deadline.
func (a *action) executes() bool {
	switch a.kind {
	case KindCall, KindPublish, KindAppend, KindForeach, KindWorkflow:
		return true
	}
	return false
}

// attemptTimeout is the deadline of an attempt of s: its timeout, else a
// default for the kind (none for a child run, which ends on its own).
func (s *stepDef) attemptTimeout() time.Duration {
	if s.timeout > 0 {
		return s.timeout
	}
	switch s.act.kind {
	case KindCall, KindForeach:
		return DefaultCallTimeout
	case KindPublish, KindAppend:
		return DefaultQuickTimeout
	}
	return 0
}

// backoff is the delay before attempt+1 after attempt failed.
func backoff(r config.StepRetry, attempt int) time.Duration {
	d := float64(r.Backoff.D())
	for i := 1; i < attempt; i++ {
		d *= r.Multiplier
		if d >= float64(r.MaxBackoff.D()) {
			return r.MaxBackoff.D()
		}
	}
	return time.Duration(d)
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }
