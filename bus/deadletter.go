package bus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// accept decides whether subscription s should see a message: replays
// addressed to another subscription and messages its filter rejects are
// skipped (acknowledged without delivery). A filter that fails to evaluate
// (say, a missing field) counts as "no match"; use has() for optional
// fields.
func (b *Bus) accept(s *compiled, subject string, m *Message) bool {
	if i := strings.Index(subject, ".rp."); i >= 0 && subject[i+4:] != s.name {
		return false
	}
	if s.filter == nil {
		return true
	}
	ok, err := s.filter.EvalBool(m.celVars())
	if err != nil {
		b.log.Debug("filter did not evaluate; skipping message", "subscription", s.name, "seq", m.Sequence, "err", err)
	}
	if !ok {
		b.met.filtered.WithLabelValues(s.name).Inc()
	}
	return ok
}

// receive decodes a delivery for subscription s and decides whether it
// goes to the subscriber. Messages the subscription skips are acknowledged
// here, and one delivered more than max_deliver times (its ack_wait kept
// expiring, or Junction crashed mid-delivery) is dead-lettered.
func (b *Bus) receive(s *compiled, msg jetstream.Msg) (*Message, bool) {
	meta, err := msg.Metadata()
	if err != nil {
		_ = msg.Term() // not a JetStream delivery: nothing to redeliver
		return nil, false
	}
	m := fromNATS(msg.Headers(), msg.Data())
	m.Topic, m.Sequence, m.Deliveries, m.Published = s.cfg.Topic, meta.Sequence.Stream, int(meta.NumDelivered), meta.Timestamp
	if !b.accept(s, msg.Subject(), &m) {
		_ = msg.Ack()
		return nil, false
	}
	if m.Deliveries > s.cfg.MaxDeliver {
		b.deadLetter(msg, &m, s, "max_deliver exceeded (not acknowledged within ack_wait)")
		return nil, false
	}
	return &m, true
}

// deadLetter moves a delivered message to the subscription's dead-letter
// topic and terminates it. If the dead-letter publish fails the message
// is handed back for a later retry: it is never dropped.
func (b *Bus) deadLetter(msg jetstream.Msg, m *Message, s *compiled, reason string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.publishDeadLetter(ctx, s, m, msg.Headers(), msg.Data(), reason); err != nil {
		b.log.Error("dead-letter publish failed; message will be retried", "subscription", s.name, "seq", m.Sequence, "err", err)
		_ = msg.NakWithDelay(backoffFor(s.cfg.Backoff, m.Deliveries))
		return
	}
	_ = msg.Term()
}

func (b *Bus) publishDeadLetter(ctx context.Context, s *compiled, m *Message, hdr nats.Header, data []byte, reason string) error {
	h := nats.Header{}
	for k, v := range hdr {
		h[k] = v
	}
	h.Set("ce-id", m.ID)
	// Deduplicated by source position and store time, so a crash between
	// publish and terminate cannot dead-letter one message twice, while a
	// recreated topic reusing the sequence is never mistaken for it.
	h.Set(hdrMsgID, "dl:"+s.name+":"+strconv.FormatUint(m.Sequence, 10)+":"+strconv.FormatInt(m.Published.UnixNano(), 36))
	h.Set(hdrDLReason, reason)
	h.Set(hdrDLSub, s.name)
	h.Set(hdrDLTopic, s.cfg.Topic)
	h.Set(hdrDLSeq, strconv.FormatUint(m.Sequence, 10))
	h.Set(hdrDLDeliv, strconv.Itoa(m.Deliveries))
	h.Del(hdrReplayFor)
	if err := b.EnsureTopic(ctx, s.cfg.DeadLetterTopic); err != nil {
		return err
	}
	if _, err := b.js.PublishMsg(ctx, &nats.Msg{Subject: b.dlSubject(s.cfg.DeadLetterTopic, s.name), Header: h, Data: data}); err != nil {
		return err
	}
	b.met.deadLettered.WithLabelValues(s.name).Inc()
	b.log.Warn("message dead-lettered", "subscription", s.name, "topic", s.cfg.Topic, "seq", m.Sequence,
		"id", m.ID, "deliveries", m.Deliveries, "reason", reason, "dead_letter_topic", s.cfg.DeadLetterTopic)
	return nil
}

// ReplayDeadLetters re-delivers up to max (0 = all) of a subscription's
// dead letters to that subscription only, oldest first, and removes them
// from the dead-letter topic. It returns how many were replayed.
func (b *Bus) ReplayDeadLetters(ctx context.Context, name string, limit int) (int, error) {
	s, err := b.loadSub(ctx, name)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	st, err := b.js.Stream(ctx, b.streamName(s.DeadLetterTopic))
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	subj := b.dlSubject(s.DeadLetterTopic, name)
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(subj))
	if err != nil {
		return 0, err
	}
	total := int(info.State.Subjects[subj])
	if limit > 0 && limit < total {
		total = limit
	}
	if total == 0 {
		return 0, nil
	}
	if err := b.topicExists(ctx, s.Topic, false); err != nil {
		return 0, err
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subj}})
	if err != nil {
		return 0, err
	}
	n := 0
	for n < total {
		batch, err := cons.Fetch(min(total-n, 256), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return n, err
		}
		got := 0
		for msg := range batch.Messages() {
			got++
			meta, err := msg.Metadata()
			if err != nil {
				return n, err
			}
			h := nats.Header{}
			for k, v := range msg.Headers() {
				h[k] = v
			}
			for _, k := range []string{hdrDLReason, hdrDLSub, hdrDLTopic, hdrDLSeq, hdrDLDeliv} {
				h.Del(k)
			}
			h.Set(hdrMsgID, "rp:"+name+":"+strconv.FormatUint(meta.Sequence.Stream, 10)+":"+strconv.FormatInt(meta.Timestamp.UnixNano(), 36))
			h.Set(hdrReplayFor, name)
			if _, err := b.js.PublishMsg(ctx, &nats.Msg{Subject: b.replaySubject(s.Topic, name), Header: h, Data: msg.Data()}); err != nil {
				return n, fmt.Errorf("replaying dead letter %d: %w", meta.Sequence.Stream, err)
			}
			if err := st.DeleteMsg(ctx, meta.Sequence.Stream); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
				return n, fmt.Errorf("removing replayed dead letter %d: %w", meta.Sequence.Stream, err)
			}
			n++
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return n, err
		}
		if got == 0 {
			break
		}
	}
	b.log.Info("dead letters replayed", "subscription", name, "count", n)
	return n, nil
}
