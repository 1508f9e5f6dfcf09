package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/junctionhq/junction/config"
)

// TopicInfo is a topic's settings and current state.
type TopicInfo struct {
	Name   string       `json:"name"`
	Config config.Topic `json:"config"`
	Stats  TopicStats   `json:"stats"`
}

// TopicStats is what a topic holds now.
type TopicStats struct {
	Messages      uint64    `json:"messages"`
	Bytes         uint64    `json:"bytes"`
	FirstSequence uint64    `json:"first_sequence"`
	LastSequence  uint64    `json:"last_sequence"`
	FirstTime     time.Time `json:"first_time,omitzero"`
	LastTime      time.Time `json:"last_time,omitzero"`
	Subscriptions int       `json:"subscriptions"`
}

func (b *Bus) streamConfig(topic string, t config.Topic) jetstream.StreamConfig {
	dedup := t.DedupWindow.D()
	if dedup == 0 {
		dedup = b.cfg.DedupWindow.D()
	}
	if dedup == 0 {
		dedup = 2 * time.Minute
	}
	if t.MaxAge > 0 && dedup > t.MaxAge.D() {
		dedup = t.MaxAge.D() // JetStream requires the window to fit the retention
	}
	sc := jetstream.StreamConfig{
		Name:        b.streamName(topic),
		Description: "junction topic " + topic,
		Subjects:    []string{b.subjectBase(topic) + ".>"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Discard:     jetstream.DiscardOld,
		MaxAge:      t.MaxAge.D(),
		MaxBytes:    -1,
		MaxMsgs:     -1,
		Replicas:    max(t.Replicas, 1),
		Duplicates:  dedup,
		AllowDirect: true,
	}
	if t.MaxBytes > 0 {
		sc.MaxBytes = t.MaxBytes
	}
	if t.MaxMsgs > 0 {
		sc.MaxMsgs = t.MaxMsgs
	}
	return sc
}

// errReplicasNotSupported is JetStream's "replicas > 1 not supported in
// non-clustered mode", which it reports with status 500 although the
// request is at fault.
const errReplicasNotSupported jetstream.ErrorCode = 10074

// PutTopic creates or updates a topic.
func (b *Bus) PutTopic(ctx context.Context, topic string, t config.Topic) (*TopicInfo, error) {
	if err := checkTopicName(topic); err != nil {
		return nil, err
	}
	if is := t.Check(); len(is) > 0 {
		return nil, invalid("%s: %s", is[0].Field, is[0].Msg)
	}
	ctx, cancel := waitCtx(ctx)
	defer cancel()
	s, err := b.js.CreateOrUpdateStream(ctx, b.streamConfig(topic, t))
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && (apiErr.Code < 500 || apiErr.ErrorCode == errReplicasNotSupported) {
		// JetStream refused the settings (say, more replicas than the
		// cluster has servers): the request is at fault, not the node.
		return nil, invalid("topic %s: %s", topic, apiErr.Description)
	}
	if err != nil {
		return nil, fmt.Errorf("topic %s: %w", topic, err)
	}
	b.known.Store(topic, struct{}{})
	return b.topicInfo(ctx, s)
}

// EnsureTopic creates topic with default retention if it does not exist.
func (b *Bus) EnsureTopic(ctx context.Context, topic string) error {
	if _, ok := b.known.Load(topic); ok {
		return nil
	}
	if err := checkTopicName(topic); err != nil {
		return err
	}
	ctx, cancel := waitCtx(ctx)
	defer cancel()
	_, err := b.js.Stream(ctx, b.streamName(topic))
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		_, err = b.js.CreateStream(ctx, b.streamConfig(topic, config.Topic{}))
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			err = nil // another node or request created it first
		}
	}
	if err != nil {
		return fmt.Errorf("topic %s: %w", topic, err)
	}
	b.known.Store(topic, struct{}{})
	return nil
}

// topicExists checks (and caches) that a topic exists; with autoCreate it
// creates it instead of failing.
func (b *Bus) topicExists(ctx context.Context, topic string, autoCreate bool) error {
	if _, ok := b.known.Load(topic); ok {
		return nil
	}
	if autoCreate {
		return b.EnsureTopic(ctx, topic)
	}
	if err := checkTopicName(topic); err != nil {
		return err
	}
	ctx, cancel := waitCtx(ctx)
	defer cancel()
	if _, err := b.js.Stream(ctx, b.streamName(topic)); err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return notFoundTopic(topic)
		}
		return err
	}
	b.known.Store(topic, struct{}{})
	return nil
}

// GetTopic returns a topic's settings and stats.
func (b *Bus) GetTopic(ctx context.Context, topic string) (*TopicInfo, error) {
	if err := checkTopicName(topic); err != nil {
		return nil, err
	}
	ctx, cancel := waitCtx(ctx)
	defer cancel()
	s, err := b.js.Stream(ctx, b.streamName(topic))
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, notFoundTopic(topic)
	}
	if err != nil {
		return nil, err
	}
	return b.topicInfo(ctx, s)
}

func (b *Bus) topicInfo(ctx context.Context, s jetstream.Stream) (*TopicInfo, error) {
	si, err := s.Info(ctx)
	if err != nil {
		return nil, err
	}
	ti := b.topicInfoFrom(si)
	if ti.Stats.Subscriptions, err = b.countSubscriptions(ctx, s); err != nil {
		return nil, err
	}
	return ti, nil
}

// countSubscriptions counts a topic's durable consumers. The stream's own
// consumer count would include the ephemeral consumers of open tails.
func (b *Bus) countSubscriptions(ctx context.Context, s jetstream.Stream) (int, error) {
	n := 0
	l := s.ListConsumers(ctx)
	for ci := range l.Info() {
		if ci.Config.Durable != "" {
			n++
		}
	}
	return n, l.Err()
}

func (b *Bus) topicInfoFrom(si *jetstream.StreamInfo) *TopicInfo {
	c := si.Config
	ti := &TopicInfo{Name: b.topicOfStream(c.Name)}
	ti.Config.MaxAge = config.Duration(c.MaxAge)
	ti.Config.Replicas = c.Replicas
	ti.Config.DedupWindow = config.Duration(c.Duplicates)
	if c.MaxBytes > 0 {
		ti.Config.MaxBytes = c.MaxBytes
	}
	if c.MaxMsgs > 0 {
		ti.Config.MaxMsgs = c.MaxMsgs
	}
	st := si.State
	ti.Stats = TopicStats{Messages: st.Msgs, Bytes: st.Bytes, FirstSequence: st.FirstSeq, LastSequence: st.LastSeq}
	if st.Msgs > 0 {
		ti.Stats.FirstTime, ti.Stats.LastTime = st.FirstTime, st.LastTime
	}
	return ti
}

// ListTopics returns every topic of this bus.
func (b *Bus) ListTopics(ctx context.Context) ([]TopicInfo, error) {
	ctx, cancel := waitCtx(ctx)
	defer cancel()
	out := []TopicInfo{}
	l := b.js.ListStreams(ctx, jetstream.WithStreamListSubject(b.pfx+".t.>"))
	for si := range l.Info() {
		if b.topicOfStream(si.Config.Name) != "" {
			out = append(out, *b.topicInfoFrom(si))
		}
	}
	if err := l.Err(); err != nil {
		return nil, err
	}
	for i := range out {
		s, err := b.js.Stream(ctx, b.streamName(out[i].Name))
		if err != nil {
			continue // deleted meanwhile
		}
		if out[i].Stats.Subscriptions, err = b.countSubscriptions(ctx, s); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// DeleteTopic removes a topic with its messages and subscriptions.
func (b *Bus) DeleteTopic(ctx context.Context, topic string) error {
	if err := checkTopicName(topic); err != nil {
		return err
	}
	ctx, cancel := waitCtx(ctx)
	defer cancel()
	b.known.Delete(topic)
	err := b.js.DeleteStream(ctx, b.streamName(topic))
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return notFoundTopic(topic)
	}
	if err != nil {
		return err
	}
	// Subscriptions of the topic lost their consumers with the stream.
	subs, err := b.ListSubscriptions(ctx)
	if err != nil {
		return err
	}
	for _, s := range subs {
		if s.Config.Topic == topic {
			if err := b.subsKV.Delete(ctx, s.Name); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
				return err
			}
		}
	}
	return nil
}
