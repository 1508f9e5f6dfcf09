package bus

import (
	"context"
	"errors"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// Tail calls fn for every message of topic from a start position (new,
// all, seq:N, time:RFC3339), then for each new one live, until ctx ends,
// fn fails, or the bus stops. Nothing is acknowledged: a tail is a read-only
// view for stream processing and debugging. Replays addressed to one
// subscription are not shown; dead letters landing on the topic are.
func (b *Bus) Tail(ctx context.Context, topic, from string, fn func(*Message) error) error {
	policy, seq, t, err := deliverFrom(from)
	if err != nil {
		return err
	}
	if err := b.topicExists(ctx, topic, false); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-b.closing:
			cancel()
		case <-ctx.Done():
		}
	}()
	st, err := b.js.Stream(ctx, b.streamName(topic))
	if err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return notFoundTopic(topic)
		}
		return err
	}
	occ := jetstream.OrderedConsumerConfig{FilterSubjects: []string{b.subjectBase(topic) + ".>"},
		DeliverPolicy: policy, OptStartSeq: seq, OptStartTime: t}
	cons, err := st.OrderedConsumer(ctx, occ)
	if err != nil {
		return err
	}
	it, err := cons.Messages()
	if err != nil {
		return err
	}
	defer it.Stop()
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return nil
			}
			return err
		}
		if strings.Contains(msg.Subject(), ".rp.") {
			continue
		}
		meta, err := msg.Metadata()
		if err != nil {
			continue
		}
		m := fromNATS(msg.Headers(), msg.Data())
		m.Topic, m.Sequence, m.Published = topic, meta.Sequence.Stream, meta.Timestamp
		if err := fn(&m); err != nil {
			return err
		}
	}
}
