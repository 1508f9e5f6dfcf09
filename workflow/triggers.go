package workflow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/junctionhq/junction/bus"
	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/expr"
)

// MessageSource is the bus as message triggers use it: a durable
// subscription per trigger, pulled by every node (they compete, so each
// message starts its run on one node).
type MessageSource interface {
	PutSubscription(ctx context.Context, name string, s config.Subscription) (bool, error)
	Pull(ctx context.Context, name string, maxMsgs int, wait time.Duration) ([]bus.WireMessage, error)
	Settle(ctx context.Context, name, kind string, ids []string, delay time.Duration) error
}

type trigger struct {
	workflow string
	index    int
	sub      string
	input    *expr.Template
}

// TriggerSubscription names the subscription of a workflow's i-th trigger.
func TriggerSubscription(workflow string, i int) string {
	return "junction-wf-" + workflow + "-" + strconv.Itoa(i)
}

// startTriggers declares each trigger's subscription and pulls it until
// the engine stops.
func (e *Engine) startTriggers(ctx context.Context) error {
	for _, name := range e.Workflows() {
		for i, tc := range e.o.Workflows[name].Triggers {
			tr := &trigger{workflow: name, index: i, sub: TriggerSubscription(name, i)}
			var err error
			if tc.Input != "" {
				if tr.input, err = expr.CompileTemplate(tc.Input); err != nil {
					return fmt.Errorf("workflow %s: triggers[%d].input: %w", name, i, err)
				}
			}
			if e.o.Messages == nil {
				return fmt.Errorf("workflow %s: triggers need the bus", name)
			}
			// Start at new messages: declaring a trigger does not start a
			// run for every message the topic already holds.
			if _, err := e.o.Messages.PutSubscription(ctx, tr.sub, config.Subscription{
				Topic: tc.Topic, Filter: tc.Filter, Start: "new", MaxDeliver: 10, AckWait: config.Duration(30 * time.Second),
			}); err != nil {
				return fmt.Errorf("workflow %s: trigger on %s: %w", name, tc.Topic, err)
			}
			e.wg.Add(1)
			go e.pullTrigger(tr)
		}
	}
	return nil
}

func (e *Engine) pullTrigger(tr *trigger) {
	defer e.wg.Done()
	log := e.log.With("workflow", tr.workflow, "subscription", tr.sub)
	for e.ctx.Err() == nil && !e.stopping.Load() {
		msgs, err := e.o.Messages.Pull(e.ctx, tr.sub, 64, 2*time.Second)
		if err != nil {
			if e.ctx.Err() == nil && !e.stopping.Load() {
				log.Warn("trigger pull", "err", err)
				sleepCtx(e.ctx, time.Second)
			}
			continue
		}
		var ack, reject, retry []string
		for i := range msgs {
			m := &msgs[i]
			switch err := e.fire(e.ctx, tr, m); {
			case err == nil:
				ack = append(ack, m.AckID)
			case errors.Is(err, ErrInvalidInput) || errors.Is(err, errBadTemplate):
				log.Warn("trigger: the message cannot start a run; dead-lettered", "message", m.ID, "err", err)
				reject = append(reject, m.AckID)
			default:
				log.Warn("trigger: starting a run failed; redelivered later", "message", m.ID, "err", err)
				retry = append(retry, m.AckID)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		for kind, ids := range map[string][]string{"ack": ack, "reject": reject, "nack": retry} {
			if len(ids) > 0 {
				if err := e.o.Messages.Settle(ctx, tr.sub, kind, ids, time.Second); err != nil {
					log.Warn("trigger settle", "kind", kind, "err", err)
				}
			}
		}
		cancel()
	}
}

var errBadTemplate = errors.New("trigger input")

// fire starts the run for one message. The run id derives from the
// message id, so a redelivered message finds the run it started.
func (e *Engine) fire(ctx context.Context, tr *trigger, m *bus.WireMessage) error {
	input := m.Data
	if tr.input != nil {
		v, err := tr.input.Eval(map[string]any{"message": messageVars(m)})
		if err != nil {
			return fmt.Errorf("%w: %v", errBadTemplate, err)
		}
		if input, err = json.Marshal(v); err != nil {
			return fmt.Errorf("%w: %v", errBadTemplate, err)
		}
	}
	if len(input) > 0 && !json.Valid(input) {
		s, _ := json.Marshal(string(input)) // text data: the input is the string
		input = s
	}
	id := uuid.NewSHA1(idSpace, []byte("trigger/"+tr.workflow+"/"+strconv.Itoa(tr.index)+"/"+m.Topic+"/"+m.ID)).String()
	_, _, err := e.StartRun(ctx, tr.workflow, input, StartOptions{ID: id, Trigger: "message:" + m.Topic, Trace: m.Headers["traceparent"]})
	return err
}

// messageVars is the message variable of a trigger's input template, as
// subscription filters see it.
func messageVars(m *bus.WireMessage) map[string]any {
	v := map[string]any{"id": m.ID, "type": m.Type, "source": m.Source, "subject": m.Subject, "key": m.Key,
		"topic": m.Topic, "time": m.Time, "datacontenttype": m.DataContentType, "sequence": m.Sequence}
	var d any
	if len(m.Data) > 0 && json.Unmarshal(m.Data, &d) == nil {
		v["data"] = d
	} else if len(m.Data) > 0 {
		v["data"] = string(m.Data)
	} else {
		v["data"] = nil
	}
	return v
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
