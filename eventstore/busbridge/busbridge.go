// Package busbridge connects eventstore.Bridge to Junction's message bus:
// a Publisher that publishes events as bus messages, and checkpoints in a
// JetStream key-value bucket.
package busbridge

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/junctionhq/junction/bus"
	"github.com/junctionhq/junction/eventstore"
	"github.com/junctionhq/junction/resilience"
)

// Source is the CloudEvents source of bridged events.
const Source = "junction/eventstore"

// CloudEvents extension attributes of a bridged event (extension names are
// lower-case letters and digits).
const (
	ExtStreamVersion = "streamversion" // the event's version in its stream
	ExtPosition      = "position"      // the event's global position
	ExtMetadata      = "metadata"      // the event's metadata JSON, when it has any
)

// Message is e as a bus message. Its ID is the event ID, so the bus's
// deduplication drops a repeated publish of one event, and its key is the
// stream, so delivery ordered by key keeps each stream's order.
func Message(e eventstore.Event) bus.Message {
	m := bus.Message{
		ID:              e.ID,
		Source:          Source,
		Type:            e.Type,
		Subject:         e.Stream,
		Key:             e.Stream,
		Time:            e.Time,
		DataContentType: "application/json",
		Data:            e.Data,
		Extensions: map[string]string{
			ExtStreamVersion: strconv.FormatUint(e.Version, 10),
			ExtPosition:      strconv.FormatUint(e.Position, 10),
		},
	}
	if len(e.Metadata) > 0 {
		// Compact JSON has no line breaks or surrounding space, which an
		// attribute value may not hold.
		var b bytes.Buffer
		if json.Compact(&b, e.Metadata) == nil && b.String() != "null" {
			m.Extensions[ExtMetadata] = b.String()
		}
	}
	return m
}

// Publisher publishes events to a *bus.Bus.
type Publisher struct {
	bus *bus.Bus
}

var _ eventstore.Publisher = (*Publisher)(nil)

// NewPublisher returns a Publisher on b.
func NewPublisher(b *bus.Bus) *Publisher { return &Publisher{bus: b} }

// PublishEvent implements eventstore.Publisher. An event the bus refuses
// as invalid or too large is a permanent error: publishing it again
// cannot succeed. Anything else (the topic missing while topics are not
// created automatically, JetStream unavailable) may pass, so the bridge
// retries it.
func (p *Publisher) PublishEvent(ctx context.Context, topic string, e eventstore.Event) error {
	res, err := p.bus.Publish(ctx, topic, Message(e))
	if errors.Is(err, bus.ErrInvalid) || errors.Is(err, bus.ErrTooLarge) {
		return resilience.Permanent(err)
	}
	if err != nil {
		return err
	}
	if len(res) == 1 && res[0].Error != nil {
		return res[0].Error
	}
	return nil
}

// KVCheckpoints keeps bridge checkpoints in a JetStream key-value bucket,
// under the base64url encoding of the bridge name. A checkpoint never
// moves back: when several nodes run one bridge, the one behind cannot
// undo the progress of the one ahead.
type KVCheckpoints struct {
	kv jetstream.KeyValue
}

var _ eventstore.Checkpoints = (*KVCheckpoints)(nil)

// NewKVCheckpoints stores checkpoints in kv.
func NewKVCheckpoints(kv jetstream.KeyValue) *KVCheckpoints { return &KVCheckpoints{kv: kv} }

func key(name string) string { return base64.RawURLEncoding.EncodeToString([]byte(name)) }

// Load implements eventstore.Checkpoints.
func (c *KVCheckpoints) Load(ctx context.Context, name string) (uint64, bool, error) {
	pos, _, ok, err := c.get(ctx, name)
	return pos, ok, err
}

func (c *KVCheckpoints) get(ctx context.Context, name string) (pos, rev uint64, ok bool, err error) {
	e, err := c.kv.Get(ctx, key(name))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, 0, false, nil
	}
	if err != nil {
		return 0, 0, false, fmt.Errorf("loading checkpoint %s: %w", name, err)
	}
	pos, err = strconv.ParseUint(string(e.Value()), 10, 64)
	if err != nil {
		return 0, 0, false, fmt.Errorf("checkpoint %s: %w", name, err)
	}
	return pos, e.Revision(), true, nil
}

// Save implements eventstore.Checkpoints; it keeps a stored position that
// is ahead of pos.
func (c *KVCheckpoints) Save(ctx context.Context, name string, pos uint64) error {
	val := []byte(strconv.FormatUint(pos, 10))
	for {
		cur, rev, ok, err := c.get(ctx, name)
		switch {
		case err != nil:
			return err
		case ok && cur >= pos:
			return nil
		case ok:
			_, err = c.kv.Update(ctx, key(name), val, rev)
		default:
			_, err = c.kv.Create(ctx, key(name), val)
		}
		if err == nil {
			return nil
		}
		// Another node saved in between: compare again.
		if !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return fmt.Errorf("saving checkpoint %s: %w", name, err)
		}
	}
}
