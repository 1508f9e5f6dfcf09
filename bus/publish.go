package bus

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/junctionhq/junction/internal/problem"
	"github.com/junctionhq/junction/observe"
)

// PublishResult is the outcome of one published message.
type PublishResult struct {
	ID        string           `json:"id"`
	Sequence  uint64           `json:"sequence,omitempty"`
	Duplicate bool             `json:"duplicate"`
	Error     *problem.Problem `json:"error,omitempty"`
}

// natsCarrier lets the W3C propagator read and write NATS headers.
func natsCarrier(h nats.Header) propagation.HeaderCarrier { return propagation.HeaderCarrier(h) }

// Publish stores msgs on topic. One message is published synchronously; a
// batch is pipelined (all sent, then all acknowledgements awaited) and its
// results say per message what was stored, deduplicated or failed. The
// batch is validated as a whole first: an invalid or oversized message
// fails the call and nothing is stored.
func (b *Bus) Publish(ctx context.Context, topic string, msgs ...Message) ([]PublishResult, error) {
	if len(msgs) == 0 {
		return nil, invalid("nothing to publish")
	}
	if len(msgs) > b.cfg.MaxBatch {
		return nil, fmt.Errorf("%w: %w", ErrTooLarge, problem.New(problem.CodeTooLarge, "a batch holds at most %d messages, got %d", b.cfg.MaxBatch, len(msgs)))
	}
	// Validate everything before touching the topic: a rejected request
	// must leave no trace, not even an auto-created topic. (topicExists
	// checks the name, unless the topic is already known.)
	now := time.Now()
	for i := range msgs {
		m := &msgs[i]
		m.fill(topic, now)
		if err := m.validate(); err != nil {
			return nil, invalid("message %d: %v", i, err)
		}
		if len(m.Data) > int(b.cfg.MaxMessageBytes) {
			return nil, fmt.Errorf("%w: %w", ErrTooLarge, problem.New(problem.CodeTooLarge,
				"message %d: data is %d bytes, the limit is %d (bus.max_message_bytes)", i, len(m.Data), b.cfg.MaxMessageBytes))
		}
	}
	if err := b.topicExists(ctx, topic, b.cfg.AutoCreateTopics); err != nil {
		return nil, err
	}
	ctx, span := b.tracer.Start(ctx, "publish "+topic, trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(attribute.String("messaging.destination.name", topic), attribute.Int("messaging.batch.message_count", len(msgs))))
	defer span.End()

	subject := b.msgSubject(topic)
	nms := make([]*nats.Msg, len(msgs))
	for i := range msgs {
		nm := msgs[i].toNATS(subject)
		observe.Propagator.Inject(ctx, natsCarrier(nm.Header))
		nms[i] = nm
	}
	res, err := b.publishNATS(ctx, nms)
	if errors.Is(err, jetstream.ErrNoStreamResponse) {
		// The stream vanished (deleted by another node); forget it, let
		// auto-create decide, and try once more.
		b.known.Delete(topic)
		if err = b.topicExists(ctx, topic, b.cfg.AutoCreateTopics); err == nil {
			res, err = b.publishNATS(ctx, nms)
		}
	}
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
		return nil, err
	}
	var dup int
	for _, r := range res {
		if r.Duplicate {
			dup++
		}
	}
	b.met.published.WithLabelValues(topic).Add(float64(len(res) - dup))
	if dup > 0 {
		b.met.duplicates.WithLabelValues(topic).Add(float64(dup))
	}
	return res, nil
}

func (b *Bus) publishNATS(ctx context.Context, nms []*nats.Msg) ([]PublishResult, error) {
	res := make([]PublishResult, len(nms))
	if len(nms) == 1 {
		ack, err := b.js.PublishMsg(ctx, nms[0])
		if err != nil {
			return nil, publishErr(err)
		}
		res[0] = PublishResult{ID: nms[0].Header.Get(hdrMsgID), Sequence: ack.Sequence, Duplicate: ack.Duplicate}
		return res, nil
	}
	futs := make([]jetstream.PubAckFuture, len(nms))
	for i, nm := range nms {
		f, err := b.js.PublishMsgAsync(nm)
		if err != nil {
			if i == 0 {
				return nil, publishErr(err)
			}
			res[i] = PublishResult{ID: nm.Header.Get(hdrMsgID), Error: problem.From(publishErr(err))}
			continue
		}
		futs[i] = f
	}
	for i, f := range futs {
		if f == nil {
			continue
		}
		res[i].ID = nms[i].Header.Get(hdrMsgID)
		select {
		case ack := <-f.Ok():
			res[i].Sequence, res[i].Duplicate = ack.Sequence, ack.Duplicate
		case err := <-f.Err():
			if errors.Is(err, jetstream.ErrNoStreamResponse) && i == 0 {
				return nil, err
			}
			res[i].Error = problem.From(publishErr(err))
		case <-ctx.Done():
			res[i].Error = problem.From(publishErr(ctx.Err()))
		}
	}
	return res, nil
}

// publishErr maps JetStream publish failures to wire problems.
func publishErr(err error) error {
	var apiErr *jetstream.APIError
	switch {
	case errors.Is(err, jetstream.ErrNoStreamResponse):
		return err
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		p := problem.New(problem.CodeUnavailable, "publish timed out: %v", err)
		p.RetryAfter = time.Second
		return fmt.Errorf("%w: %w", err, p)
	case errors.As(err, &apiErr):
		return fmt.Errorf("%w: %w", err, problem.New(problem.CodeUnavailable, "publish refused: %s", apiErr.Description))
	}
	p := problem.New(problem.CodeUnavailable, "publish failed: %v", err)
	p.RetryAfter = time.Second
	return fmt.Errorf("%w: %w", err, p)
}

// statusOf picks the HTTP status for a batch response: 202 when all were
// stored, 207 when some failed.
func statusOf(res []PublishResult) int {
	for _, r := range res {
		if r.Error != nil {
			return http.StatusMultiStatus
		}
	}
	return http.StatusAccepted
}
