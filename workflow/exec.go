package workflow

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/junctionhq/junction/bus"
	"github.com/junctionhq/junction/eventstore"
	"github.com/junctionhq/junction/expr"
	"github.com/junctionhq/junction/observe"
)

// maxResponse bounds the body of a call's answer kept as its output.
const maxResponse = 10 << 20

// execute carries out one attempt and returns its outcome.
func (e *Engine) execute(ctx context.Context, d *Definition, r *Run, vars map[string]any, ex execution) outcome {
	o := outcome{execution: ex}
	sd := d.stepDef(ex.step)
	if ex.cancel {
		child := childID(r.ID, ex.step, ex.attempt)
		if err := e.Cancel(ctx, child, "the parent run is unwinding"); err != nil && !errors.Is(err, ErrRunEnded) && !errors.Is(err, ErrRunNotFound) {
			e.log.Debug("cancelling a child run", "run", child, "err", err)
		}
		return o
	}
	a, what := sd.act, "step"
	if ex.comp {
		a, what = sd.comp, "compensation"
	}
	if !ex.deadline.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, ex.deadline)
		defer cancel()
	}
	// Steps continue the trace of the request that started the run.
	ctx = observe.Propagator.Extract(ctx, propagation.MapCarrier{"traceparent": r.trace})
	ctx, span := e.tracer.Start(ctx, "workflow "+what+" "+r.Workflow+"."+ex.step, trace.WithAttributes(
		attribute.String("junction.workflow", r.Workflow), attribute.String("junction.run_id", r.ID),
		attribute.String("junction.step", ex.step), attribute.Int("junction.attempt", ex.attempt),
		attribute.String("junction.step.kind", a.kind)))
	defer span.End()
	start := time.Now()
	key := r.ID + "/" + ex.step
	if ex.comp {
		key += "/compensate"
	}
	c := call{e: e, run: r, step: ex.step, attempt: ex.attempt, key: key}
	out, err := c.act(ctx, a, vars)
	e.met.stepTime.WithLabelValues(r.Workflow, a.kind).Observe(time.Since(start).Seconds())
	if errors.Is(err, errPending) {
		o.pending = true
		return o
	}
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
		var se *StepError
		o.err, o.permanent = err, errors.As(err, &se) && se.Permanent
		if ctx.Err() == context.DeadlineExceeded {
			o.err = fmt.Errorf("attempt %d timed out: %w", ex.attempt, err)
		}
		return o
	}
	raw, err := json.Marshal(out)
	if err != nil {
		o.err, o.permanent = err, true
		return o
	}
	o.output = raw
	return o
}

// errPending says the attempt goes on elsewhere: a child run reports its
// own outcome.
var errPending = errors.New("pending")

// call is the context of one action: which run and step it serves, and
// the idempotency key its effects carry.
type call struct {
	e       *Engine
	run     *Run
	step    string
	attempt int
	key     string
}

func permanent(format string, args ...any) error {
	return &StepError{Msg: fmt.Sprintf(format, args...), Permanent: true}
}

func render(t *expr.Template, vars map[string]any) (any, error) {
	if t == nil {
		return nil, nil
	}
	v, err := t.Eval(vars)
	if err != nil {
		return nil, permanent("%v", err)
	}
	return v, nil
}

func renderText(t *expr.Template, vars map[string]any) (string, error) {
	v, err := render(t, vars)
	if err != nil || v == nil {
		return "", err
	}
	if s, ok := v.(string); ok {
		return s, nil
	}
	b, err := json.Marshal(v)
	return string(b), err
}

// body renders a template as a request body: text as it is, other
// values as JSON.
func body(t *expr.Template, vars map[string]any) ([]byte, error) {
	v, err := render(t, vars)
	if err != nil || t == nil {
		return nil, err
	}
	if s, ok := v.(string); ok {
		return []byte(s), nil
	}
	return json.Marshal(v)
}

func (c call) act(ctx context.Context, a *action, vars map[string]any) (any, error) {
	switch a.kind {
	case KindCall:
		return c.call(ctx, a.call, vars)
	case KindPublish:
		return c.publish(ctx, a.publish, vars)
	case KindAppend:
		return c.append(ctx, a.append, vars)
	case KindForeach:
		return c.foreach(ctx, a.foreach, vars)
	case KindWorkflow:
		return nil, c.child(ctx, a.child, vars)
	case KindWait:
		return nil, c.e.addWaiter(ctx, c.run, c.step, c.attempt, a.wait.Message.Topic)
	}
	return nil, permanent("a %s cannot be executed here", a.kind)
}

func (c call) call(ctx context.Context, k *callDef, vars map[string]any) (any, error) {
	path, err := renderText(k.path, vars)
	if err != nil {
		return nil, err
	}
	client, target := c.e.services, "http://"+k.service
	if k.url != nil {
		client = c.e.urls
		if target, err = renderText(k.url, vars); err != nil {
			return nil, err
		}
	}
	if path != "" && !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	b, err := body(k.body, vars)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, k.method, strings.TrimSuffix(target, "/")+path, bytes.NewReader(b))
	if err != nil {
		return nil, permanent("call: %v", err)
	}
	if b != nil {
		req.Header.Set("Content-Type", "application/json")
		if !json.Valid(b) {
			req.Header.Set("Content-Type", "text/plain; charset=utf-8")
		}
	}
	for h, t := range k.headers {
		v, err := renderText(t, vars)
		if err != nil {
			return nil, err
		}
		req.Header.Set(h, v)
	}
	req.Header.Set("Idempotency-Key", c.key)
	req.Header.Set("Junction-Run-Id", c.run.ID)
	req.Header.Set("Junction-Attempt", strconv.Itoa(c.attempt))
	observe.Propagator.Inject(ctx, propagation.HeaderCarrier(req.Header))
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("call %s %s: %w", k.method, req.URL.Redacted(), err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	if err != nil {
		return nil, fmt.Errorf("call %s %s: reading the answer: %w", k.method, req.URL.Redacted(), err)
	}
	if len(raw) > maxResponse {
		return nil, permanent("call %s %s: the answer is larger than %d bytes", k.method, req.URL.Redacted(), maxResponse)
	}
	if resp.StatusCode >= 300 {
		msg := fmt.Sprintf("call %s %s: %s: %s", k.method, req.URL.Redacted(), resp.Status, snippet(raw))
		switch {
		case resp.StatusCode == 408 || resp.StatusCode == 429 || resp.StatusCode >= 500:
			return nil, &StepError{Msg: msg}
		default:
			return nil, &StepError{Msg: msg, Permanent: true}
		}
	}
	var out any
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil, nil
	}
	if json.Unmarshal(raw, &out) != nil {
		return string(raw), nil // not JSON: the text is the output
	}
	return out, nil
}

func snippet(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

// effectID names an effect of a logical step, the same on every attempt,
// so a retried publish or append is stored once.
func effectID(key string) string { return uuid.NewSHA1(idSpace, []byte(key)).String() }

func (c call) publish(ctx context.Context, p *publishDef, vars map[string]any) (any, error) {
	if c.e.o.Bus == nil {
		return nil, permanent("publish: this node has no bus")
	}
	data, err := body(p.data, vars)
	if err != nil {
		return nil, err
	}
	key, err := renderText(p.key, vars)
	if err != nil {
		return nil, err
	}
	typ := p.typ
	if typ == "" {
		typ = "junction.workflow." + c.run.Workflow + "." + c.step
	}
	m := bus.Message{ID: effectID(c.key), Source: "junction/workflow/" + c.run.Workflow, Type: typ, Key: key,
		Data: data, DataContentType: "application/json", Extensions: map[string]string{"runid": strings.ReplaceAll(c.run.ID, "-", "")}}
	if data != nil && !json.Valid(data) {
		m.DataContentType = "text/plain"
	}
	res, err := c.e.o.Bus.Publish(ctx, p.topic, m)
	if err != nil {
		return nil, fmt.Errorf("publish to %s: %w", p.topic, err)
	}
	if r := res[0]; r.Error != nil {
		return nil, fmt.Errorf("publish to %s: %s", p.topic, r.Error.Detail)
	}
	return map[string]any{"id": res[0].ID, "sequence": res[0].Sequence, "duplicate": res[0].Duplicate}, nil
}

func (c call) append(ctx context.Context, p *appendDef, vars map[string]any) (any, error) {
	stream, err := renderText(p.stream, vars)
	if err != nil {
		return nil, err
	}
	data, err := body(p.data, vars)
	if err != nil {
		return nil, err
	}
	if data == nil {
		data = []byte("null")
	}
	if !json.Valid(data) {
		return nil, permanent("append: data is not JSON: %s", snippet(data))
	}
	res, err := c.e.o.Store.Append(ctx, stream, eventstore.Any, []eventstore.EventData{{ID: effectID(c.key), Type: p.typ, Data: data}})
	if errors.Is(err, eventstore.ErrInvalid) {
		return nil, permanent("append to %s: %v", stream, err)
	}
	if err != nil {
		return nil, fmt.Errorf("append to %s: %w", stream, err)
	}
	return map[string]any{"stream": stream, "first_version": res.FirstVersion, "last_version": res.LastVersion, "position": res.Position}, nil
}

func (c call) foreach(ctx context.Context, f *foreachDef, vars map[string]any) (any, error) {
	v, err := f.items.Eval(vars)
	if err != nil {
		return nil, permanent("foreach items: %v", err)
	}
	items, ok := v.([]any)
	if !ok {
		return nil, permanent("foreach items yields %T, want a list", v)
	}
	outs := make([]any, len(items))
	errs := make([]error, len(items))
	sem := make(chan struct{}, f.concurrency)
	var wg sync.WaitGroup
	for i, item := range items {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			iv := maps.Clone(vars)
			iv["item"] = item
			ic := c
			ic.key = c.key + "/" + strconv.Itoa(i)
			outs[i], errs[i] = ic.act(ctx, f.do, iv)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			var se *StepError
			if errors.As(err, &se) && se.Permanent {
				return nil, permanent("item %d: %v", i, err)
			}
			return nil, fmt.Errorf("item %d: %w", i, err)
		}
	}
	return outs, nil
}

// childID names the child run an attempt of a workflow step starts, so a
// repeated start of the same attempt finds the same run.
func childID(run, step string, attempt int) string {
	return uuid.NewSHA1(idSpace, []byte(run+"/"+step+"/"+strconv.Itoa(attempt))).String()
}

func (c call) child(ctx context.Context, k *childDef, vars map[string]any) error {
	in, err := render(k.input, vars)
	if err != nil {
		return err
	}
	raw, err := json.Marshal(in)
	if err != nil {
		return permanent("workflow input: %v", err)
	}
	id := childID(c.run.ID, c.step, c.attempt)
	r, _, err := c.e.StartRun(ctx, k.name, raw, StartOptions{ID: id, Trigger: "workflow",
		Parent: &ParentRef{Run: c.run.ID, Step: c.step, Attempt: c.attempt}, Trace: traceparent(ctx)})
	if errors.Is(err, ErrInvalidInput) || errors.Is(err, ErrWorkflowNotFound) {
		return permanent("start %s: %v", k.name, err)
	}
	if err != nil {
		return fmt.Errorf("start %s: %w", k.name, err)
	}
	if r.Terminal() {
		// Started before, and ended before this attempt was recorded as
		// waiting: tell the parent now.
		if err := c.e.notifyParent(ctx, r); err != nil {
			return err
		}
	}
	return errPending
}
