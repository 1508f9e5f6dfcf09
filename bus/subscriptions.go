package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/expr"
	"github.com/junctionhq/junction/internal/problem"
)

// SubscriptionInfo is a subscription's settings and delivery state.
type SubscriptionInfo struct {
	Name   string              `json:"name"`
	Config config.Subscription `json:"config"`
	Stats  SubscriptionStats   `json:"stats"`
}

// SubscriptionStats counts a subscription's messages.
type SubscriptionStats struct {
	Pending      uint64 `json:"pending"`       // stored, not yet delivered
	InFlight     int    `json:"in_flight"`     // delivered, not yet settled
	Delivered    uint64 `json:"delivered"`     // deliveries made, redeliveries included
	Redelivered  int    `json:"redelivered"`   // in flight after more than one delivery
	DeadLettered uint64 `json:"dead_lettered"` // held in the dead-letter topic for this subscription
}

// ValidationError lists every invalid field of an API object.
func validationError(what string, is []config.Issue) error {
	p := problem.New(problem.CodeValidation, "%s is invalid: %s", what, is[0].Msg)
	for _, i := range is {
		p.Errors = append(p.Errors, problem.FieldError{Field: i.Field, Message: i.Msg})
	}
	return fmt.Errorf("%w: %w", ErrInvalid, p)
}

// PutSubscription creates or updates a subscription and reports whether
// it was created. The start position applies when the subscription is
// created; an update keeps the delivery position it has reached.
func (b *Bus) PutSubscription(ctx context.Context, name string, s config.Subscription) (created bool, err error) {
	if !config.ValidSubscriptionName(name) {
		return false, invalid("invalid subscription name %q: use letters, digits, '_' and '-' (at most 100)", name)
	}
	s.Normalize(name)
	if is := s.Check(); len(is) > 0 {
		return false, validationError("subscription", is)
	}
	ctx, cancel := waitCtx(ctx)
	defer cancel()
	if err := b.topicExists(ctx, s.Topic, b.cfg.AutoCreateTopics); err != nil {
		return false, err
	}
	if err := b.EnsureTopic(ctx, s.DeadLetterTopic); err != nil {
		return false, err
	}
	old, err := b.loadSub(ctx, name)
	switch {
	case errors.Is(err, ErrSubscriptionNotFound):
		created = true
	case err != nil:
		return false, err
	case old.Topic != s.Topic:
		// Moving to another topic means a new consumer on another stream.
		if err := b.js.DeleteConsumer(ctx, b.streamName(old.Topic), name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) && !errors.Is(err, jetstream.ErrStreamNotFound) {
			return false, err
		}
	}
	cc, err := b.consumerConfig(ctx, name, s)
	if err != nil {
		return false, err
	}
	if _, err := b.js.CreateOrUpdateConsumer(ctx, b.streamName(s.Topic), cc); err != nil {
		return false, fmt.Errorf("subscription %s: %w", name, err)
	}
	val, err := json.Marshal(s)
	if err != nil {
		return false, err
	}
	if _, err := b.subsKV.Put(ctx, name, val); err != nil {
		return false, fmt.Errorf("saving subscription %s: %w", name, err)
	}
	if e, err := b.subsKV.Get(ctx, name); err == nil {
		b.reconcile(e) // start delivery here at once; the watch makes it so elsewhere
	}
	return created, nil
}

// consumerConfig maps a subscription to its durable consumer. JetStream's
// own MaxDeliver stays unlimited: Junction counts deliveries itself so that
// an exhausted message is dead-lettered rather than silently parked.
func (b *Bus) consumerConfig(ctx context.Context, name string, s config.Subscription) (jetstream.ConsumerConfig, error) {
	cc := jetstream.ConsumerConfig{
		Durable:       name,
		Description:   "junction subscription " + name,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       s.AckWait.D(),
		MaxDeliver:    -1,
		MaxAckPending: s.MaxInFlight,
		ReplayPolicy:  jetstream.ReplayInstantPolicy,
		MaxWaiting:    512,
	}
	if existing, err := b.js.Consumer(ctx, b.streamName(s.Topic), name); err == nil {
		ci := existing.CachedInfo()
		cc.DeliverPolicy, cc.OptStartSeq, cc.OptStartTime = ci.Config.DeliverPolicy, ci.Config.OptStartSeq, ci.Config.OptStartTime
		return cc, nil
	} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return cc, err
	}
	var err error
	cc.DeliverPolicy, cc.OptStartSeq, cc.OptStartTime, err = deliverFrom(s.Start)
	return cc, err
}

// deliverFrom maps a start position (new, all, seq:N, time:T) to
// JetStream's deliver policy.
func deliverFrom(start string) (jetstream.DeliverPolicy, uint64, *time.Time, error) {
	kind, seq, t, err := config.ParseStart(start)
	if err != nil {
		return 0, 0, nil, invalid("%v", err)
	}
	switch kind {
	case "all":
		return jetstream.DeliverAllPolicy, 0, nil, nil
	case "seq":
		return jetstream.DeliverByStartSequencePolicy, seq, nil, nil
	case "time":
		return jetstream.DeliverByStartTimePolicy, 0, &t, nil
	}
	return jetstream.DeliverNewPolicy, 0, nil, nil
}

func (b *Bus) loadSub(ctx context.Context, name string) (config.Subscription, error) {
	var s config.Subscription
	e, err := b.subsKV.Get(ctx, name)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return s, notFoundSub(name)
	}
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal(e.Value(), &s); err != nil {
		return s, fmt.Errorf("subscription %s is corrupt: %w", name, err)
	}
	return s, nil
}

// GetSubscription returns a subscription with its stats.
func (b *Bus) GetSubscription(ctx context.Context, name string) (*SubscriptionInfo, error) {
	if !config.ValidSubscriptionName(name) {
		return nil, notFoundSub(name)
	}
	ctx, cancel := waitCtx(ctx)
	defer cancel()
	s, err := b.loadSub(ctx, name)
	if err != nil {
		return nil, err
	}
	return b.subInfo(ctx, name, s)
}

func (b *Bus) subInfo(ctx context.Context, name string, s config.Subscription) (*SubscriptionInfo, error) {
	si := &SubscriptionInfo{Name: name, Config: s}
	c, err := b.js.Consumer(ctx, b.streamName(s.Topic), name)
	if err != nil {
		if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
			return si, nil // topic deleted under it: report empty stats
		}
		return nil, err
	}
	ci := c.CachedInfo()
	si.Stats = SubscriptionStats{Pending: ci.NumPending, InFlight: ci.NumAckPending,
		Delivered: ci.Delivered.Consumer, Redelivered: ci.NumRedelivered}
	if st, err := b.js.Stream(ctx, b.streamName(s.DeadLetterTopic)); err == nil {
		subj := b.dlSubject(s.DeadLetterTopic, name)
		if info, err := st.Info(ctx, jetstream.WithSubjectFilter(subj)); err == nil {
			si.Stats.DeadLettered = info.State.Subjects[subj]
		}
	}
	return si, nil
}

// ListSubscriptions returns every subscription with its stats.
func (b *Bus) ListSubscriptions(ctx context.Context) ([]SubscriptionInfo, error) {
	ctx, cancel := waitCtx(ctx)
	defer cancel()
	lister, err := b.subsKV.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	out := []SubscriptionInfo{}
	for k := range lister.Keys() {
		s, err := b.loadSub(ctx, k)
		if err != nil {
			continue // deleted between list and get
		}
		si, err := b.subInfo(ctx, k, s)
		if err != nil {
			return nil, err
		}
		out = append(out, *si)
	}
	return out, nil
}

// DeleteSubscription removes a subscription and its consumer. Its dead
// letters stay in the dead-letter topic.
func (b *Bus) DeleteSubscription(ctx context.Context, name string) error {
	ctx, cancel := waitCtx(ctx)
	defer cancel()
	s, err := b.loadSub(ctx, name)
	if err != nil {
		return err
	}
	if err := b.subsKV.Delete(ctx, name); err != nil {
		return err
	}
	b.stopDispatcher(name)
	if err := b.js.DeleteConsumer(ctx, b.streamName(s.Topic), name); err != nil &&
		!errors.Is(err, jetstream.ErrConsumerNotFound) && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return err
	}
	return nil
}

// compiled is a subscription ready for delivery.
type compiled struct {
	name   string
	cfg    config.Subscription
	filter *expr.Program
}

func compile(name string, s config.Subscription) (*compiled, error) {
	c := &compiled{name: name, cfg: s}
	if s.Filter != "" {
		p, err := expr.CompileBool(s.Filter)
		if err != nil {
			return nil, err
		}
		c.filter = p
	}
	return c, nil
}

// reconcile makes this node's push delivery match a KV entry.
func (b *Bus) reconcile(e jetstream.KeyValueEntry) {
	name := e.Key()
	l, _ := b.reconciling.LoadOrStore(name, &sync.Mutex{})
	mu := l.(*sync.Mutex)
	mu.Lock()
	defer mu.Unlock()
	b.pulls.Delete(name)
	if e.Operation() != jetstream.KeyValuePut {
		b.mu.Lock()
		delete(b.compiled, name)
		b.mu.Unlock()
		b.stopDispatcher(name)
		return
	}
	var s config.Subscription
	if err := json.Unmarshal(e.Value(), &s); err != nil {
		b.log.Error("ignoring corrupt subscription", "subscription", name, "err", err)
		return
	}
	c, err := compile(name, s)
	if err != nil {
		b.log.Error("subscription does not compile", "subscription", name, "err", err)
		return
	}
	b.mu.Lock()
	if old := b.compiled[name]; old == nil || !reflect.DeepEqual(old.cfg, s) {
		b.compiled[name] = c
	}
	select {
	case <-b.closing:
		b.mu.Unlock()
		return
	default:
	}
	cur := b.dispatchers[name]
	if cur != nil && reflect.DeepEqual(cur.config(), s) {
		b.mu.Unlock()
		return
	}
	b.mu.Unlock()
	b.stopDispatcher(name)
	if s.Push == nil {
		return
	}
	var d deliverer
	if s.OrderedByKey {
		d = b.startLeader(c) // one node at a time, or keys lose their order
	} else {
		var err error
		if d, err = b.startDispatcher(c); err != nil {
			b.log.Error("starting push delivery", "subscription", name, "err", err)
			return
		}
	}
	b.mu.Lock()
	stopping := false
	select {
	case <-b.closing:
		stopping = true
	default:
	}
	if old := b.dispatchers[name]; old != nil || stopping {
		// A concurrent reconcile won the race (keep one dispatcher), or
		// the bus began stopping meanwhile.
		b.mu.Unlock()
		d.stop(context.Background())
		return
	}
	b.dispatchers[name] = d
	b.mu.Unlock()
}

func (b *Bus) stopDispatcher(name string) {
	b.mu.Lock()
	d := b.dispatchers[name]
	delete(b.dispatchers, name)
	b.mu.Unlock()
	if d != nil {
		d.stop(context.Background())
	}
}
