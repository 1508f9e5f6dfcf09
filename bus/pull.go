package bus

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/junctionhq/junction/internal/problem"
)

// pullState caches what a pull needs, per subscription.
type pullState struct {
	sub  *compiled
	cons jetstream.Consumer
}

// subscription returns the compiled subscription and its consumer.
func (b *Bus) pullTarget(ctx context.Context, name string) (*pullState, error) {
	b.mu.Lock()
	c := b.compiled[name]
	b.mu.Unlock()
	if v, ok := b.pulls.Load(name); ok && (c == nil || v.(*pullState).sub == c) {
		return v.(*pullState), nil
	}
	if c == nil {
		s, err := b.loadSub(ctx, name)
		if err != nil {
			return nil, err
		}
		if c, err = compile(name, s); err != nil {
			return nil, err
		}
	}
	cons, err := b.js.Consumer(ctx, b.streamName(c.cfg.Topic), name)
	if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, notFoundSub(name)
	}
	if err != nil {
		return nil, err
	}
	ps := &pullState{sub: c, cons: cons}
	b.pulls.Store(name, ps)
	return ps, nil
}

// Pull fetches up to max messages for a pull subscription, waiting up to
// wait for the first one. Several pullers of one subscription compete:
// each message goes to one of them (a work queue) and must be settled by
// its ack_id before ack_wait ends, or it is delivered again.
func (b *Bus) Pull(ctx context.Context, name string, maxMsgs int, wait time.Duration) ([]WireMessage, error) {
	if maxMsgs < 1 || maxMsgs > 1000 {
		return nil, invalid("max must be between 1 and 1000")
	}
	if wait < 0 || wait > 5*time.Minute {
		return nil, invalid("wait must be between 0s and 5m")
	}
	ps, err := b.pullTarget(ctx, name)
	if err != nil {
		return nil, err
	}
	if ps.sub.cfg.Push != nil {
		return nil, problem.New(problem.CodeConflict, "subscription %q uses push delivery; pull is for subscriptions without push", name)
	}
	out := make([]WireMessage, 0, maxMsgs)
	deadline := time.Now().Add(wait)
	for {
		// Take what is there now; when nothing is, wait for one message
		// only, so a puller gets work as soon as any exists instead of
		// waiting for a full batch.
		batch, err := ps.cons.FetchNoWait(maxMsgs - len(out))
		if err != nil {
			b.pulls.Delete(name) // the consumer may be gone: look it up afresh next time
			return out, err
		}
		got := b.collect(ps.sub, batch, &out)
		switch {
		case len(out) > 0:
			return out, nil
		case got > 0:
			continue // all fetched were filtered out: look again
		}
		left := time.Until(deadline)
		if left < 10*time.Millisecond {
			return out, nil
		}
		wctx, cancel := context.WithTimeout(ctx, left)
		batch, err = ps.cons.Fetch(1, jetstream.FetchContext(wctx))
		if err != nil {
			cancel()
			if ctx.Err() != nil {
				return out, nil // the puller went away
			}
			return out, err
		}
		b.collect(ps.sub, batch, &out)
		cancel()
		if len(out) == maxMsgs {
			return out, nil
		}
	}
}

// collect drains a fetch batch into out and returns how many messages the
// batch held (delivered or skipped).
func (b *Bus) collect(s *compiled, batch jetstream.MessageBatch, out *[]WireMessage) int {
	n := 0
	for msg := range batch.Messages() {
		n++
		m, ok := b.receive(s, msg)
		if !ok {
			continue
		}
		w := m.Wire()
		w.AckID = base64.RawURLEncoding.EncodeToString([]byte(msg.Reply()))
		*out = append(*out, w)
	}
	return n
}

// ackRef is a decoded ack_id: the JetStream ack subject of one delivery.
type ackRef struct {
	subject    string
	stream     string
	consumer   string
	deliveries int
	seq        uint64
}

// parseAckID decodes and checks an ack_id against the subscription's
// stream and consumer, so an ack_id of one subscription can never settle
// another's message.
func (b *Bus) parseAckID(s *compiled, id string) (ackRef, error) {
	raw, err := base64.RawURLEncoding.DecodeString(id)
	bad := fmt.Errorf("%w: %w", ErrInvalid, problem.New(problem.CodeBadAckID, "ack_id %.40q is not a delivery of subscription %q", id, s.name))
	if err != nil {
		return ackRef{}, bad
	}
	subj := string(raw)
	tok := strings.Split(subj, ".")
	if len(tok) < 9 || tok[0] != "$JS" || tok[1] != "ACK" {
		return ackRef{}, bad
	}
	off := 2 // v1: $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>...
	if len(tok) >= 11 {
		off = 4 // v2: $JS.ACK.<domain>.<account>.<stream>.<consumer>...
	}
	r := ackRef{subject: subj, stream: tok[off], consumer: tok[off+1]}
	if r.stream != b.streamName(s.cfg.Topic) || r.consumer != s.name {
		return ackRef{}, bad
	}
	d, err1 := strconv.Atoi(tok[off+2])
	seq, err2 := strconv.ParseUint(tok[off+3], 10, 64)
	if err1 != nil || err2 != nil {
		return ackRef{}, bad
	}
	r.deliveries, r.seq = d, seq
	return r, nil
}

// Settle kinds for pull deliveries.
const (
	SettleAck    = "ack"
	SettleNack   = "nack"
	SettleReject = "reject"
)

// Settle acknowledges, negatively acknowledges (redeliver after delay) or
// rejects (dead-letter now) pulled messages by ack_id. Every id is checked
// before any is settled. Acks wait for the server's confirmation, so a
// 200 means JetStream recorded them.
func (b *Bus) Settle(ctx context.Context, name, kind string, ids []string, delay time.Duration) error {
	if len(ids) == 0 {
		return invalid("ack_ids must hold at least one id")
	}
	ps, err := b.pullTarget(ctx, name)
	if err != nil {
		return err
	}
	refs := make([]ackRef, len(ids))
	for i, id := range ids {
		if refs[i], err = b.parseAckID(ps.sub, id); err != nil {
			return err
		}
	}
	ctx, cancel := waitCtx(ctx)
	defer cancel()
	for _, r := range refs {
		var body string
		switch kind {
		case SettleAck:
			body = "+ACK"
		case SettleNack:
			body = "-NAK"
			if delay > 0 {
				body = fmt.Sprintf(`-NAK {"delay":%d}`, delay.Nanoseconds())
			}
		case SettleReject:
			if err := b.rejectOne(ctx, ps.sub, r); err != nil {
				return err
			}
			body = "+TERM"
		default:
			return invalid("unknown settle kind %q", kind)
		}
		if _, err := b.nc.RequestWithContext(ctx, r.subject, []byte(body)); err != nil {
			return fmt.Errorf("settling %s: %w", kind, err)
		}
		if kind == SettleAck {
			b.met.delivered.WithLabelValues(name, "pull").Inc()
		}
	}
	return nil
}

func (b *Bus) rejectOne(ctx context.Context, s *compiled, r ackRef) error {
	raw, err := b.js.Stream(ctx, b.streamName(s.cfg.Topic))
	if err != nil {
		return err
	}
	sm, err := raw.GetMsg(ctx, r.seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil // already gone (retention): nothing to dead-letter
	}
	if err != nil {
		return err
	}
	m := fromNATS(sm.Header, sm.Data)
	m.Topic, m.Sequence, m.Deliveries, m.Published = s.cfg.Topic, r.seq, r.deliveries, sm.Time
	return b.publishDeadLetter(ctx, s, &m, sm.Header, sm.Data, "rejected")
}
