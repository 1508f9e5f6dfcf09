package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/junctionhq/junction/config"
)

func init() {
	inputs["rabbitmq"] = func(_ context.Context, env *Env, cfg *config.PipelineInput, _ json.RawMessage) (Input, error) {
		return newRabbitInput(cfg.RabbitMQ, defaultGroup(env))
	}
	outputs["rabbitmq"] = func(_ context.Context, _ *Env, cfg *config.PipelineOutput) (Output, error) {
		return newRabbitOutput(cfg.RabbitMQ)
	}
}

// rabbitPrefetch is how many unacknowledged messages a RabbitMQ input
// holds at most: more than a default batch, so that a batch fills
// without waiting for its period.
const rabbitPrefetch = 2 * batchRecords

// rabbitInput consumes a queue with manual acknowledgement: Commit acks
// every delivery up to the position, and what is not acked when the
// channel closes goes back to the queue.
type rabbitInput struct {
	conn  *amqp.Connection
	ch    *amqp.Channel
	dels  <-chan amqp.Delivery
	acked uint64 // the highest delivery tag acknowledged
}

func dialRabbit(url string) (*amqp.Connection, *amqp.Channel, error) {
	conn, err := amqp.DialConfig(url, amqp.Config{Dial: amqp.DefaultDial(10 * time.Second), Properties: amqp.Table{"connection_name": "junction"}})
	if err != nil {
		return nil, nil, fmt.Errorf("rabbitmq: %w", err)
	}
	ch, err := conn.Channel()
	if err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("rabbitmq: %w", err)
	}
	return conn, ch, nil
}

func newRabbitInput(cfg *config.RabbitMQConn, consumer string) (*rabbitInput, error) {
	conn, ch, err := dialRabbit(cfg.URL)
	if err != nil {
		return nil, err
	}
	if err := ch.Qos(rabbitPrefetch, 0, false); err != nil {
		conn.Close()
		return nil, fmt.Errorf("rabbitmq: %w", err)
	}
	// A consumer tag is unique per channel; the pipeline's name makes the
	// consumer recognizable in the broker's management tools.
	dels, err := ch.Consume(cfg.Queue, consumer+"-"+strconv.FormatInt(time.Now().UnixNano(), 36), false, false, false, false, nil)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("rabbitmq: queue %s: %w", cfg.Queue, err)
	}
	return &rabbitInput{conn: conn, ch: ch, dels: dels}, nil
}

func (in *rabbitInput) Next(ctx context.Context) ([]*Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	t := time.NewTimer(brokerWait)
	defer t.Stop()
	var out []*Record
	add := func(d amqp.Delivery, ok bool) error {
		if !ok {
			return errors.New("rabbitmq: the channel closed")
		}
		out = append(out, &Record{Fields: decodeMessage(d.Body), Pos: json.RawMessage(strconv.FormatUint(d.DeliveryTag, 10))})
		return nil
	}
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-t.C:
		return nil, nil
	case d, ok := <-in.dels:
		if err := add(d, ok); err != nil {
			return nil, err
		}
	}
	for len(out) < batchRecords {
		select {
		case d, ok := <-in.dels:
			if err := add(d, ok); err != nil {
				return out, nil // the records read so far; the next call fails
			}
		default:
			return out, nil
		}
	}
	return out, nil
}

func (in *rabbitInput) Commit(_ context.Context, pos json.RawMessage) error {
	tag, err := strconv.ParseUint(string(pos), 10, 64)
	if err != nil {
		return fmt.Errorf("rabbitmq: position %s: %w", pos, err)
	}
	if tag <= in.acked {
		return nil // acknowledging a tag twice would close the channel
	}
	if err := in.ch.Ack(tag, true); err != nil {
		return fmt.Errorf("rabbitmq: ack: %w", err)
	}
	in.acked = tag
	return nil
}

func (in *rabbitInput) Close() error {
	return in.conn.Close()
}

// rabbitOutput publishes each record as a persistent JSON message to an
// exchange with a routing key (the default exchange routes to the queue
// the key names), waiting for the broker's confirms; a message that no
// queue takes fails the write.
type rabbitOutput struct {
	mu       sync.Mutex
	conn     *amqp.Connection
	ch       *amqp.Channel
	exchange string
	key      string
	returns  chan amqp.Return
	closed   chan *amqp.Error
}

func newRabbitOutput(cfg *config.RabbitMQConn) (*rabbitOutput, error) {
	conn, ch, err := dialRabbit(cfg.URL)
	if err != nil {
		return nil, err
	}
	if err := ch.Confirm(false); err != nil {
		conn.Close()
		return nil, fmt.Errorf("rabbitmq: confirm mode: %w", err)
	}
	key := cfg.RoutingKey
	if key == "" && cfg.Exchange == "" {
		key = cfg.Queue
	}
	o := &rabbitOutput{conn: conn, ch: ch, exchange: cfg.Exchange, key: key}
	o.returns = ch.NotifyReturn(make(chan amqp.Return, rabbitPrefetch))
	o.closed = ch.NotifyClose(make(chan *amqp.Error, 1))
	return o, nil
}

func (o *rabbitOutput) Write(ctx context.Context, recs []*Record) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.drainReturns()
	confirms := make([]*amqp.DeferredConfirmation, 0, len(recs))
	for _, r := range recs {
		b, err := encodeMessage(r)
		if err != nil {
			return err
		}
		dc, err := o.ch.PublishWithDeferredConfirmWithContext(ctx, o.exchange, o.key, true, false, amqp.Publishing{
			ContentType: "application/json", DeliveryMode: amqp.Persistent, Timestamp: time.Now(), Body: b,
		})
		if err != nil {
			return fmt.Errorf("rabbitmq: publish: %w", err)
		}
		confirms = append(confirms, dc)
	}
	returned, nacked := 0, 0
	for _, dc := range confirms {
	wait:
		for {
			select {
			case <-dc.Done():
				break wait
			case <-o.returns:
				returned++
			case <-ctx.Done():
				return ctx.Err()
			case e := <-o.closed:
				if e != nil {
					return fmt.Errorf("rabbitmq: the channel closed: %w", e)
				}
				return errors.New("rabbitmq: the channel closed")
			}
		}
		if !dc.Acked() {
			nacked++
		}
	}
	// The broker returns an unroutable message before confirming it.
	returned += o.drainReturns()
	switch {
	case nacked > 0:
		return fmt.Errorf("rabbitmq: the broker refused %d of %d messages", nacked, len(recs))
	case returned > 0:
		return fmt.Errorf("rabbitmq: %d of %d messages reached no queue (exchange %q, routing key %q)", returned, len(recs), o.exchange, o.key)
	}
	return nil
}

func (o *rabbitOutput) drainReturns() (n int) {
	for {
		select {
		case <-o.returns:
			n++
		default:
			return n
		}
	}
}

func (o *rabbitOutput) Close() error {
	return o.conn.Close()
}
