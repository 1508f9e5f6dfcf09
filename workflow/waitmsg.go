package workflow

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/junctionhq/junction/bus"
	"github.com/junctionhq/junction/config"
)

// Steps that wait for a bus message: the step's attempt registers a
// waiter (key <topic hash>.<run>.<step>.<attempt>) in a KV bucket; every
// topic that some wait step names has one subscription, pulled by every
// node; each message is checked against the topic's waiters, and the
// first that it matches records it as the step's output. A message
// published before the step starts is not seen.

// waiter is a registered wait step.
type waiter struct {
	Workflow string `json:"workflow"`
}

func topicHash(topic string) string {
	h := sha256.Sum256([]byte(topic))
	return hex.EncodeToString(h[:6])
}

func waitKey(topic, run, step string, attempt int) string {
	return topicHash(topic) + "." + run + "." + step + "." + strconv.Itoa(attempt)
}

// WaitSubscription names the subscription that feeds the wait steps on
// topic.
func WaitSubscription(topic string) string { return "junction-wf-wait-" + topicHash(topic) }

func (e *Engine) addWaiter(ctx context.Context, r *Run, step string, attempt int, topic string) error {
	if e.waitKV == nil {
		return permanent("wait for a message: this node has no bus")
	}
	b, _ := json.Marshal(waiter{Workflow: r.Workflow})
	if _, err := e.waitKV.Put(ctx, waitKey(topic, r.ID, step, attempt), b); err != nil {
		return fmt.Errorf("registering the wait: %w", err)
	}
	return errPending
}

// waitTopics are the topics the declared wait steps name.
func (e *Engine) waitTopics() []string {
	seen := map[string]bool{}
	var out []string
	for _, name := range e.Workflows() {
		for _, s := range e.defs[name].steps {
			if w := s.act.wait; w != nil && w.Message != nil && !seen[w.Message.Topic] {
				seen[w.Message.Topic] = true
				out = append(out, w.Message.Topic)
			}
		}
	}
	return out
}

func (e *Engine) startWaits(ctx context.Context) error {
	topics := e.waitTopics()
	if len(topics) == 0 {
		return nil
	}
	if e.o.Messages == nil {
		return errors.New("wait steps for messages need the bus")
	}
	var err error
	if e.waitKV, err = e.o.JS.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: e.o.Prefix + "_wf_waits", History: 1, Description: "Junction workflow steps waiting for a message",
	}); err != nil {
		return fmt.Errorf("wait bucket: %w", err)
	}
	for _, topic := range topics {
		sub := WaitSubscription(topic)
		if _, err := e.o.Messages.PutSubscription(ctx, sub, config.Subscription{
			Topic: topic, Start: "new", MaxDeliver: 10, AckWait: config.Duration(30 * time.Second),
		}); err != nil {
			return fmt.Errorf("wait steps on %s: %w", topic, err)
		}
		e.wg.Add(1)
		go e.pullWaits(topic, sub)
	}
	return nil
}

func (e *Engine) pullWaits(topic, sub string) {
	defer e.wg.Done()
	log := e.log.With("topic", topic, "subscription", sub)
	for e.ctx.Err() == nil && !e.stopping.Load() {
		msgs, err := e.o.Messages.Pull(e.ctx, sub, 64, 2*time.Second)
		if err != nil {
			if e.ctx.Err() == nil && !e.stopping.Load() {
				log.Warn("wait pull", "err", err)
				sleepCtx(e.ctx, time.Second)
			}
			continue
		}
		var ack, retry []string
		for i := range msgs {
			if err := e.deliverToWaiters(e.ctx, topic, &msgs[i]); err != nil {
				log.Warn("wait steps: a message could not be matched; redelivered later", "message", msgs[i].ID, "err", err)
				retry = append(retry, msgs[i].AckID)
				continue
			}
			ack = append(ack, msgs[i].AckID)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if len(ack) > 0 {
			_ = e.o.Messages.Settle(ctx, sub, "ack", ack, 0)
		}
		if len(retry) > 0 {
			_ = e.o.Messages.Settle(ctx, sub, "nack", retry, time.Second)
		}
		cancel()
	}
}

// deliverToWaiters records m as the output of every waiting step on its
// topic whose filter accepts it.
func (e *Engine) deliverToWaiters(ctx context.Context, topic string, m *bus.WireMessage) error {
	lister, err := e.waitKV.ListKeysFiltered(ctx, topicHash(topic)+".>")
	if err != nil {
		return err
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	mv := messageVars(m)
	raw, err := json.Marshal(mv)
	if err != nil {
		return err
	}
	for _, k := range keys {
		parts := strings.Split(k, ".")
		if len(parts) != 4 {
			continue
		}
		run, step := parts[1], parts[2]
		attempt, _ := strconv.Atoi(parts[3])
		r, d, err := e.load(ctx, run)
		if errors.Is(err, ErrRunNotFound) {
			_ = e.waitKV.Delete(ctx, k)
			continue
		}
		if err != nil {
			return err
		}
		s, sd := r.steps[step], d.stepDef(step)
		if r.Terminal() || s == nil || sd == nil || s.Status != StepRunning || s.Attempts != attempt {
			_ = e.waitKV.Delete(ctx, k) // the wait is over
			continue
		}
		if p := sd.act.waitMsg; p != nil {
			vars := r.vars()
			vars["message"] = mv
			ok, err := p.EvalBool(vars)
			if err != nil || !ok {
				continue
			}
		}
		w := e.newWork(run)
		if err := w.record(ctx, outcome{execution: execution{step: step, attempt: attempt}, output: raw}); err != nil {
			return err
		}
		_ = e.waitKV.Delete(ctx, k)
		if err := e.poke(ctx, run); err != nil {
			return err
		}
	}
	return nil
}
