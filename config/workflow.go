package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/robfig/cron/v3"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/junctionhq/junction/expr"
)

// Workflow is a durable orchestration: steps joined by needs into a DAG,
// independent branches running in parallel, completed steps compensated
// in reverse order when a later one fails for good (a saga).
type Workflow struct {
	// Input is the JSON Schema a run's input must match.
	Input any `yaml:"input"`
	// Timeout bounds a whole run; a run past it is cancelled and
	// compensated.
	Timeout Duration `yaml:"timeout"`
	// Output is CEL over input and steps: the run's result.
	Output string  `yaml:"output"`
	Steps  []*Step `yaml:"steps"`
	// Schedules start runs on cron schedules.
	Schedules []*Schedule `yaml:"schedules"`
	// Triggers start a run for each bus message a filter accepts.
	Triggers []*Trigger `yaml:"triggers"`
}

// Schedule starts runs at the times of a cron expression.
type Schedule struct {
	// Cron is five fields (minute hour day month weekday), or a
	// descriptor such as @hourly or @every 90s; CRON_TZ=Zone may lead.
	Cron string `yaml:"cron"`
	// Overlap is what a fire time does while the schedule's previous run
	// is still going: skip (the default) drops it, buffer_one starts one
	// run when the previous ends (further fire times are dropped), allow
	// starts it at once.
	Overlap string `yaml:"overlap"`
	// CatchUp is how far back fire times missed while no node ran are
	// still started (under the overlap policy), oldest first; 0 starts
	// none of them.
	CatchUp Duration `yaml:"catch_up"`
	// Input is the runs' input: a template over schedule (time, the fire
	// time in RFC 3339; workflow; index, the schedule's place in the
	// list).
	Input string `yaml:"input"`
}

// Trigger starts a run for each message of Topic that Filter accepts.
type Trigger struct {
	Topic string `yaml:"topic"`
	// Filter is CEL over message; empty accepts every message.
	Filter string `yaml:"filter"`
	// Input is a template over message; default the message's data.
	Input string `yaml:"input"`
}

// Overlap policies of a schedule.
const (
	OverlapSkip      = "skip"
	OverlapBufferOne = "buffer_one"
	OverlapAllow     = "allow"
)

// Step is one step: exactly one action, when its needs have completed
// (or been skipped).
type Step struct {
	ID    string   `yaml:"id"`
	Needs []string `yaml:"needs"`
	// When is CEL over input and steps: the step runs only when it holds,
	// and is skipped otherwise.
	When    string     `yaml:"when"`
	Retry   *StepRetry `yaml:"retry"`
	Timeout Duration   `yaml:"timeout"`
	// Compensate undoes the step's effect when the saga unwinds: a call,
	// publish or append.
	Compensate *StepAction `yaml:"compensate"`

	StepAction `yaml:",inline"`
}

// StepAction is what a step does: exactly one field is set.
type StepAction struct {
	Call    *CallAction    `yaml:"call"`
	Publish *PublishAction `yaml:"publish"`
	Append  *AppendAction  `yaml:"append"`
	Wait    *WaitAction    `yaml:"wait"`
	// Sleep waits this long, durably: the timer survives restarts.
	Sleep Duration `yaml:"sleep"`
	// Until waits for a time: a template yielding a timestamp or RFC 3339
	// text.
	Until string `yaml:"until"`
	// Switch picks the value of the first case whose when holds (a case
	// without when is the default); later steps test steps.<id>.output.
	Switch []SwitchCase `yaml:"switch"`
	// Foreach runs an action once per item of a list.
	Foreach *ForeachAction `yaml:"foreach"`
	// Set computes values: name -> CEL; the step's output is the map.
	Set map[string]string `yaml:"set"`
	// Workflow starts a child run and waits for its outcome.
	Workflow *ChildAction `yaml:"workflow"`
}

// CallAction calls a service through the mesh (under the service's
// policy: balancing, breaker, timeout) or a URL; the step's retry policy
// and timeout apply to both. URL, path, headers and body are templates.
type CallAction struct {
	Service string            `yaml:"service"`
	URL     string            `yaml:"url"`
	Method  string            `yaml:"method"` // default POST with a body, else GET
	Path    string            `yaml:"path"`
	Headers map[string]string `yaml:"headers"`
	Body    string            `yaml:"body"`
}

// PublishAction publishes a message; Data and Key are templates.
type PublishAction struct {
	Topic string `yaml:"topic"`
	Type  string `yaml:"type"`
	Data  string `yaml:"data"`
	Key   string `yaml:"key"`
}

// AppendAction appends an event; Stream and Data are templates.
type AppendAction struct {
	Stream string `yaml:"stream"`
	Type   string `yaml:"type"`
	Data   string `yaml:"data"`
}

// WaitAction waits for a signal sent to the run, or for a bus message
// that its filter accepts, at most Timeout (then the step fails).
type WaitAction struct {
	Signal  string       `yaml:"signal"`
	Message *WaitMessage `yaml:"message"`
	Timeout Duration     `yaml:"timeout"`
}

// WaitMessage selects the message a wait step waits for: CEL over message
// and input and steps.
type WaitMessage struct {
	Topic  string `yaml:"topic"`
	Filter string `yaml:"filter"`
}

// SwitchCase is one branch of a switch.
type SwitchCase struct {
	When  string `yaml:"when"`
	Value string `yaml:"value"`
}

// ForeachAction runs Do for each item of Items (CEL yielding a list), at
// most Concurrency at a time; the item is item in Do's expressions.
type ForeachAction struct {
	Items       string      `yaml:"items"`
	Concurrency int         `yaml:"concurrency"`
	Do          *StepAction `yaml:"do"`
}

// ChildAction starts a run of another workflow; Input is a template.
type ChildAction struct {
	Name  string `yaml:"name"`
	Input string `yaml:"input"`
}

// StepRetry is a step's retry policy: Attempts in all, the delay growing
// from Backoff by Multiplier up to MaxBackoff.
type StepRetry struct {
	Attempts   int      `yaml:"attempts"`
	Backoff    Duration `yaml:"backoff"`
	Multiplier float64  `yaml:"multiplier"`
	MaxBackoff Duration `yaml:"max_backoff"`
}

// Kind names the action.
func (a *StepAction) Kind() string {
	kinds := a.kinds()
	if len(kinds) == 1 {
		return kinds[0]
	}
	return ""
}

func (a *StepAction) kinds() []string {
	var k []string
	add := func(set bool, name string) {
		if set {
			k = append(k, name)
		}
	}
	add(a.Call != nil, "call")
	add(a.Publish != nil, "publish")
	add(a.Append != nil, "append")
	add(a.Wait != nil, "wait")
	add(a.Sleep != 0, "sleep")
	add(a.Until != "", "until")
	add(a.Switch != nil, "switch")
	add(a.Foreach != nil, "foreach")
	add(a.Set != nil, "set")
	add(a.Workflow != nil, "workflow")
	return k
}

// DefaultStepRetry is a step's retry policy unless it sets its own.
func DefaultStepRetry() StepRetry {
	return StepRetry{Attempts: 3, Backoff: Duration(1e9), Multiplier: 2, MaxBackoff: Duration(60e9)}
}

// Normalize fills defaults.
func (s *Step) Normalize() {
	d := DefaultStepRetry()
	if s.Retry == nil {
		s.Retry = &d
		return
	}
	if s.Retry.Attempts == 0 {
		s.Retry.Attempts = d.Attempts
	}
	if s.Retry.Backoff == 0 {
		s.Retry.Backoff = d.Backoff
	}
	if s.Retry.Multiplier == 0 {
		s.Retry.Multiplier = d.Multiplier
	}
	if s.Retry.MaxBackoff == 0 {
		s.Retry.MaxBackoff = d.MaxBackoff
	}
}

var (
	stepIDRe  = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)
	stepRefRe = regexp.MustCompile(`\bsteps\s*\.\s*([a-z][a-z0-9_]*)`)
)

// exprCheck compiles an expression field and records which steps it
// reads.
type exprCheck struct {
	is   *[]issue
	refs map[string]bool
}

func (c exprCheck) cel(field, src string, boolean bool) {
	if src == "" {
		return
	}
	var err error
	if boolean {
		_, err = expr.CompileBool(src)
	} else {
		_, err = expr.Compile(src)
	}
	if err != nil {
		line, col, msg := exprError(err)
		*c.is = append(*c.is, issue{Issue{field, field[strings.LastIndex(field, ".")+1:] + ": " + msg}, line, col})
		return
	}
	c.note(src)
}

func (c exprCheck) template(field, src string) {
	if src == "" {
		return
	}
	if _, err := expr.CompileTemplate(src); err != nil {
		msg := err.Error()
		if inner := errors.Unwrap(err); inner != nil && !errors.Is(err, expr.ErrTemplate) {
			_, _, m := exprError(inner)
			msg = strings.SplitN(msg, ": ", 2)[0] + ": " + m // "in {{ x }}: <the CEL error>"
		}
		*c.is = append(*c.is, issue{Issue: Issue{field, msg}})
		return
	}
	c.note(src)
}

func (c exprCheck) note(src string) {
	for _, m := range stepRefRe.FindAllStringSubmatch(src, -1) {
		c.refs[m[1]] = true
	}
}

func (a *StepAction) check(c exprCheck, path string, services map[string]*Service, workflows map[string]*Workflow) {
	add := func(f, format string, args ...any) {
		*c.is = append(*c.is, issue{Issue: Issue{path + f, fmt.Sprintf(format, args...)}})
	}
	switch kinds := a.kinds(); len(kinds) {
	case 0:
		add("", "a step needs an action: call, publish, append, wait, sleep, until, switch, foreach, set or workflow")
		return
	case 1:
	default:
		add("", "a step has one action, this one has %s", strings.Join(kinds, " and "))
		return
	}
	switch {
	case a.Call != nil:
		k := a.Call
		if (k.Service == "") == (k.URL == "") {
			add("call", "call needs exactly one of service and url")
		}
		if k.Service != "" && !ValidServiceName(k.Service) {
			add("call.service", "invalid service name %q", k.Service)
		}
		if k.Method != "" && !httpMethods[strings.ToUpper(k.Method)] {
			add("call.method", "unknown HTTP method %q", k.Method)
		}
		c.template(path+"call.url", k.URL)
		c.template(path+"call.path", k.Path)
		c.template(path+"call.body", k.Body)
		for h, v := range k.Headers {
			c.template(path+"call.headers."+h, v)
		}
	case a.Publish != nil:
		if !ValidTopicName(a.Publish.Topic) {
			add("publish.topic", "publish needs a valid topic, got %q", a.Publish.Topic)
		}
		c.template(path+"publish.data", a.Publish.Data)
		c.template(path+"publish.key", a.Publish.Key)
	case a.Append != nil:
		if a.Append.Stream == "" || a.Append.Type == "" {
			add("append", "append needs a stream and a type")
		}
		c.template(path+"append.stream", a.Append.Stream)
		c.template(path+"append.data", a.Append.Data)
	case a.Wait != nil:
		w := a.Wait
		if (w.Signal == "") == (w.Message == nil) {
			add("wait", "wait needs exactly one of signal and message")
		}
		if w.Signal != "" && !ValidSubscriptionName(w.Signal) {
			add("wait.signal", "invalid signal name %q: use letters, digits, '_' and '-'", w.Signal)
		}
		if m := w.Message; m != nil {
			if !ValidTopicName(m.Topic) {
				add("wait.message.topic", "wait.message needs a valid topic, got %q", m.Topic)
			}
			c.cel(path+"wait.message.filter", m.Filter, true)
		}
		if w.Timeout < 0 {
			add("wait.timeout", "timeout must not be negative")
		}
	case a.Sleep != 0:
		if a.Sleep < 0 {
			add("sleep", "sleep must be positive")
		}
	case a.Until != "":
		c.template(path+"until", a.Until)
	case a.Switch != nil:
		if len(a.Switch) == 0 {
			add("switch", "switch needs at least one case")
		}
		for i, sc := range a.Switch {
			c.cel(fmt.Sprintf("%sswitch[%d].when", path, i), sc.When, true)
			if sc.When == "" && i != len(a.Switch)-1 {
				add(fmt.Sprintf("switch[%d]", i), "only the last case may omit when (it is the default)")
			}
		}
	case a.Foreach != nil:
		f := a.Foreach
		if f.Items == "" {
			add("foreach.items", "foreach needs items: CEL yielding a list")
		}
		c.cel(path+"foreach.items", f.Items, false)
		if f.Concurrency < 0 || f.Concurrency > 1000 {
			add("foreach.concurrency", "concurrency must be between 1 and 1000")
		}
		if f.Do == nil {
			add("foreach.do", "foreach needs do: the action run for each item")
		} else if k := f.Do.Kind(); k != "call" && k != "publish" && k != "append" {
			add("foreach.do", "foreach does a call, publish or append, not %s", k)
		} else {
			f.Do.check(c, path+"foreach.do.", services, workflows)
		}
	case a.Set != nil:
		for _, k := range sortedNames(a.Set) {
			if !ValidIdent(k) {
				add("set."+k, "invalid name %q: use lower-case letters, digits and '_'", k)
			}
			c.cel(path+"set."+k, a.Set[k], false)
		}
	case a.Workflow != nil:
		if _, ok := workflows[a.Workflow.Name]; !ok {
			add("workflow.name", "no workflow %q is declared", a.Workflow.Name)
		}
		c.template(path+"workflow.input", a.Workflow.Input)
	}
}

func (w *Workflow) check(name string, services map[string]*Service, workflows map[string]*Workflow) []issue {
	var is []issue
	add := func(f, format string, args ...any) {
		is = append(is, issue{Issue: Issue{f, fmt.Sprintf(format, args...)}})
	}
	if len(w.Steps) == 0 {
		add("steps", "a workflow needs steps")
	}
	if w.Timeout < 0 {
		add("timeout", "timeout must not be negative")
	}
	if w.Input != nil {
		if err := compileSchema(w.Input); err != nil {
			// The validator explains in an indented tree; its first leaf
			// (a line that is not "... failed") is the precise reason.
			lines := strings.Split(strings.TrimSpace(err.Error()), "\n")
			reason := lines[len(lines)-1]
			for _, l := range lines[1:] {
				if !strings.HasSuffix(l, "failed") {
					reason = l
					break
				}
			}
			add("input", "input is not a valid JSON Schema: %s", strings.TrimLeft(reason, " -"))
		}
	}
	index := map[string]int{}
	for i, s := range w.Steps {
		if s == nil {
			add(fmt.Sprintf("steps[%d]", i), "empty step")
			continue
		}
		s.Normalize()
		if !stepIDRe.MatchString(s.ID) {
			add(fmt.Sprintf("steps[%d].id", i), "step id %q: use lower-case letters, digits and '_', starting with a letter", s.ID)
		} else if j, dup := index[s.ID]; dup {
			add(fmt.Sprintf("steps[%d].id", i), "step id %q is also steps[%d]'s", s.ID, j)
		} else {
			index[s.ID] = i
		}
	}
	reads := make([]map[string]bool, len(w.Steps))
	for i, s := range w.Steps {
		if s == nil {
			continue
		}
		p := fmt.Sprintf("steps[%d]", i)
		c := exprCheck{is: &is, refs: map[string]bool{}}
		for j, n := range s.Needs {
			if _, ok := index[n]; !ok {
				add(fmt.Sprintf("%s.needs[%d]", p, j), "step %s needs %q, which is not a step of %s", s.ID, n, name)
			} else if n == s.ID {
				add(fmt.Sprintf("%s.needs[%d]", p, j), "step %s needs itself", s.ID)
			}
		}
		c.cel(p+".when", s.When, true)
		s.StepAction.check(c, p+".", services, workflows)
		if s.Compensate != nil {
			switch s.Compensate.Kind() {
			case "call", "publish", "append":
				// A compensation runs after its step, so it may read the
				// step's own output.
				cc := exprCheck{is: &is, refs: map[string]bool{}}
				s.Compensate.check(cc, p+".compensate.", services, workflows)
				for ref := range cc.refs {
					if ref != s.ID {
						c.refs[ref] = true
					}
				}
			default:
				add(p+".compensate", "compensate is a call, publish or append")
			}
		}
		if r := s.Retry; r.Attempts < 1 || r.Attempts > 100 || r.Backoff < 0 || r.Multiplier < 1 || r.MaxBackoff < r.Backoff {
			add(p+".retry", "retry needs 1..100 attempts, a backoff >= 0, a multiplier >= 1 and max_backoff >= backoff")
		}
		if s.Timeout < 0 {
			add(p+".timeout", "timeout must not be negative")
		}
		reads[i] = c.refs
	}
	if cycle := findCycle(w.Steps, index); cycle != nil {
		add(fmt.Sprintf("steps[%d].needs", index[cycle[0]]), "the needs of %s form a cycle: %s", name, strings.Join(cycle, " -> "))
	} else {
		// A step may read only steps that have surely run before it: its
		// ancestors through needs.
		for i, s := range w.Steps {
			if s == nil || reads[i] == nil || index[s.ID] != i {
				continue
			}
			anc := ancestors(w.Steps, index, s.ID)
			for _, ref := range sortedNames(reads[i]) {
				switch _, ok := index[ref]; {
				case !ok:
					add(fmt.Sprintf("steps[%d]", i), "step %s reads steps.%s, which is not a step of %s", s.ID, ref, name)
				case !anc[ref]:
					add(fmt.Sprintf("steps[%d].needs", i), "step %s reads steps.%s but does not need it: add %s to its needs", s.ID, ref, ref)
				}
			}
		}
	}
	for i, sc := range w.Schedules {
		p := fmt.Sprintf("schedules[%d]", i)
		if sc == nil {
			add(p, "empty schedule: it needs cron")
			continue
		}
		if _, err := ParseCron(sc.Cron); err != nil {
			add(p+".cron", "invalid cron %q: %v", sc.Cron, err)
		}
		switch sc.Overlap {
		case "":
			sc.Overlap = OverlapSkip
		case OverlapSkip, OverlapBufferOne, OverlapAllow:
		default:
			add(p+".overlap", "overlap is skip, buffer_one or allow, not %q", sc.Overlap)
		}
		if sc.CatchUp < 0 {
			add(p+".catch_up", "catch_up must not be negative")
		}
		tc := exprCheck{is: &is, refs: map[string]bool{}}
		tc.template(p+".input", sc.Input)
	}
	for i, tr := range w.Triggers {
		p := fmt.Sprintf("triggers[%d]", i)
		if tr == nil || !ValidTopicName(tr.Topic) {
			add(p+".topic", "a trigger needs a valid topic")
			continue
		}
		tc := exprCheck{is: &is, refs: map[string]bool{}}
		tc.cel(p+".filter", tr.Filter, true)
		tc.template(p+".input", tr.Input)
	}
	oc := exprCheck{is: &is, refs: map[string]bool{}}
	oc.cel("output", w.Output, false)
	for _, ref := range sortedNames(oc.refs) {
		if _, ok := index[ref]; !ok {
			add("output", "output reads steps.%s, which is not a step of %s", ref, name)
		}
	}
	return is
}

var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// ParseCron parses a schedule's cron expression.
func ParseCron(spec string) (cron.Schedule, error) {
	if strings.TrimSpace(spec) == "" {
		return nil, errors.New("empty")
	}
	return cronParser.Parse(spec)
}

// findCycle returns the steps of one cycle of needs, or nil.
func findCycle(steps []*Step, index map[string]int) []string {
	state := map[string]int{} // 1 visiting, 2 done
	var stack []string
	var visit func(id string) []string
	visit = func(id string) []string {
		switch state[id] {
		case 1:
			i := slices.Index(stack, id)
			return append(append([]string(nil), stack[i:]...), id)
		case 2:
			return nil
		}
		state[id] = 1
		stack = append(stack, id)
		if s := steps[index[id]]; s != nil {
			for _, n := range s.Needs {
				if _, ok := index[n]; ok {
					if c := visit(n); c != nil {
						return c
					}
				}
			}
		}
		stack = stack[:len(stack)-1]
		state[id] = 2
		return nil
	}
	for _, s := range steps {
		if s == nil {
			continue
		}
		if _, ok := index[s.ID]; ok {
			if c := visit(s.ID); c != nil {
				return c
			}
		}
	}
	return nil
}

// ancestors returns every step id reachable from id through needs.
func ancestors(steps []*Step, index map[string]int, id string) map[string]bool {
	out := map[string]bool{}
	var walk func(string)
	walk = func(id string) {
		s := steps[index[id]]
		if s == nil {
			return
		}
		for _, n := range s.Needs {
			if _, ok := index[n]; ok && !out[n] {
				out[n] = true
				walk(n)
			}
		}
	}
	walk(id)
	return out
}

// compileSchema checks that v (decoded YAML) is a JSON Schema.
func compileSchema(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	doc, err := jsonschema.UnmarshalJSON(strings.NewReader(string(b)))
	if err != nil {
		return err
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("urn:junction:input", doc); err != nil {
		return err
	}
	_, err = c.Compile("urn:junction:input")
	return err
}

func (c *Config) validateWorkflows() []issue {
	var is []issue
	for _, name := range sortedNames(c.Workflows) {
		p := "workflows." + name
		if !ValidIdent(name) {
			is = append(is, issue{Issue: Issue{p, fmt.Sprintf("invalid workflow name %q: use lower-case letters, digits and '_'", name)}})
		}
		w := c.Workflows[name]
		if w == nil {
			is = append(is, issue{Issue: Issue{p, fmt.Sprintf("workflow %q is empty: it needs steps", name)}})
			continue
		}
		for _, x := range w.check(name, c.Services, c.Workflows) {
			x.Field = p + "." + x.Field
			is = append(is, x)
		}
	}
	if cycle := childCycle(c.Workflows); cycle != nil {
		is = append(is, issue{Issue: Issue{"workflows." + cycle[0], "workflows start each other in a cycle: " + strings.Join(cycle, " -> ")}})
	}
	return is
}

// childCycle returns workflows that start each other in a cycle, or nil.
func childCycle(ws map[string]*Workflow) []string {
	children := func(w *Workflow) []string {
		var out []string
		var walk func(a *StepAction)
		walk = func(a *StepAction) {
			if a == nil {
				return
			}
			if a.Workflow != nil {
				out = append(out, a.Workflow.Name)
			}
			if a.Foreach != nil {
				walk(a.Foreach.Do)
			}
		}
		for _, s := range w.Steps {
			if s != nil {
				walk(&s.StepAction)
			}
		}
		return out
	}
	state := map[string]int{}
	var stack []string
	var visit func(string) []string
	visit = func(n string) []string {
		switch state[n] {
		case 1:
			i := slices.Index(stack, n)
			return append(append([]string(nil), stack[i:]...), n)
		case 2:
			return nil
		}
		w := ws[n]
		if w == nil {
			return nil
		}
		state[n] = 1
		stack = append(stack, n)
		for _, ch := range children(w) {
			if c := visit(ch); c != nil {
				return c
			}
		}
		stack = stack[:len(stack)-1]
		state[n] = 2
		return nil
	}
	for _, n := range sortedNames(ws) {
		if c := visit(n); c != nil {
			return c
		}
	}
	return nil
}
