package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/junctionhq/junction/bus"
	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/eventstore"
	"github.com/junctionhq/junction/expr"
)

// Junction's own connectors: topics of the bus, and the event store's
// global log.

func init() {
	inputs["topic"] = func(ctx context.Context, env *Env, cfg *config.PipelineInput, _ json.RawMessage) (Input, error) {
		return newTopicInput(ctx, env, cfg.Topic)
	}
	outputs["topic"] = func(_ context.Context, env *Env, cfg *config.PipelineOutput) (Output, error) {
		return newTopicOutput(env, cfg.Topic)
	}
	inputs["events"] = func(ctx context.Context, env *Env, cfg *config.PipelineInput, resume json.RawMessage) (Input, error) {
		return newEventsInput(ctx, env, cfg.Events, resume)
	}
}

// TopicSubscription names the durable subscription a pipeline's topic
// input reads through.
func TopicSubscription(pipeline string) string { return "junction-pl-" + pipeline }

// topicInput reads a topic through a durable pull subscription. A record
// is the message's data when that is a JSON object, else {"data": the
// data}. Messages are acknowledged once committed; those handed out but
// not committed when the input closes are handed back at once (nack),
// so the subscription is the position: the input never ends, and has
// nothing to resume from but the subscription.
type topicInput struct {
	bus     *bus.Bus
	sub     string
	n       int64
	pending []topicAck // handed out, not committed, in order
}

type topicAck struct {
	n  int64
	id string
}

// topicPull bounds one Pull's wait, so that the runner flushes and ticks
// meanwhile.
const topicPull = 500 * time.Millisecond

func newTopicInput(ctx context.Context, env *Env, cfg *config.TopicInput) (*topicInput, error) {
	if env.Bus == nil {
		return nil, errors.New("topic input: the node has no bus")
	}
	name := TopicSubscription(env.Pipeline)
	if _, err := env.Bus.PutSubscription(ctx, name, config.Subscription{Topic: cfg.Topic, Filter: cfg.Filter, Start: cfg.Start}); err != nil {
		return nil, fmt.Errorf("topic input: subscription %s: %w", name, err)
	}
	return &topicInput{bus: env.Bus, sub: name}, nil
}

func (in *topicInput) Next(ctx context.Context) ([]*Record, error) {
	msgs, err := in.bus.Pull(ctx, in.sub, 1000, topicPull)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("topic input: %w", err)
	}
	out := make([]*Record, 0, len(msgs))
	for _, m := range msgs {
		in.n++
		in.pending = append(in.pending, topicAck{in.n, m.AckID})
		rec := &Record{Pos: json.RawMessage(strconv.FormatInt(in.n, 10))}
		var v any
		switch {
		case len(m.Data) > 0 && json.Unmarshal(m.Data, &v) == nil:
		case m.DataBase64 != "":
			v = m.DataBase64
		}
		if obj, ok := v.(map[string]any); ok {
			rec.Fields = obj
		} else {
			rec.Fields = map[string]any{"data": v}
		}
		out = append(out, rec)
	}
	return out, nil
}

// Commit acknowledges the messages handed out up to pos.
func (in *topicInput) Commit(ctx context.Context, pos json.RawMessage) error {
	n, err := strconv.ParseInt(string(pos), 10, 64)
	if err != nil {
		return fmt.Errorf("topic input: position %s: %w", pos, err)
	}
	i := 0
	for i < len(in.pending) && in.pending[i].n <= n {
		i++
	}
	if i == 0 {
		return nil
	}
	for start := 0; start < i; start += 1000 {
		ids := make([]string, 0, min(1000, i-start))
		for _, a := range in.pending[start:min(i, start+1000)] {
			ids = append(ids, a.id)
		}
		if err := in.bus.Settle(ctx, in.sub, bus.SettleAck, ids, 0); err != nil {
			return fmt.Errorf("topic input: acknowledging: %w", err)
		}
	}
	in.pending = in.pending[i:]
	return nil
}

// Close hands back the messages not committed.
func (in *topicInput) Close() error {
	if len(in.pending) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ids := make([]string, 0, len(in.pending))
	for _, a := range in.pending {
		ids = append(ids, a.id)
	}
	in.pending = nil
	for start := 0; start < len(ids); start += 1000 {
		if err := in.bus.Settle(ctx, in.sub, bus.SettleNack, ids[start:min(len(ids), start+1000)], 0); err != nil {
			return fmt.Errorf("topic input: handing back: %w", err)
		}
	}
	return nil
}

// topicOutput publishes each record as a message: its data the record's
// JSON, its type Type (junction.pipeline.record by default), its
// ordering key Key (CEL over row) when set.
type topicOutput struct {
	bus   *bus.Bus
	cfg   *config.TopicOut
	typ   string
	key   *expr.Program
	batch int
}

func newTopicOutput(env *Env, cfg *config.TopicOut) (*topicOutput, error) {
	if env.Bus == nil {
		return nil, errors.New("topic output: the node has no bus")
	}
	o := &topicOutput{bus: env.Bus, cfg: cfg, typ: cfg.Type, batch: 1000}
	if o.typ == "" {
		o.typ = "junction.pipeline.record"
	}
	if cfg.Key != "" {
		var err error
		if o.key, err = expr.Compile(cfg.Key); err != nil {
			return nil, fmt.Errorf("key: %w", err)
		}
	}
	return o, nil
}

func (o *topicOutput) Write(ctx context.Context, recs []*Record) error {
	msgs := make([]bus.Message, 0, len(recs))
	for _, r := range recs {
		b, err := json.Marshal(r.Map())
		if err != nil {
			return fmt.Errorf("%w: %v", ErrRecord, err)
		}
		m := bus.Message{Type: o.typ, Data: b, DataContentType: "application/json"}
		if o.key != nil {
			if m.Key, err = o.key.EvalString(map[string]any{"row": r.vars()}); err != nil {
				return fmt.Errorf("%w: key: %v", ErrRecord, err)
			}
		}
		msgs = append(msgs, m)
	}
	for start := 0; start < len(msgs); start += o.batch {
		res, err := o.bus.Publish(ctx, o.cfg.Topic, msgs[start:min(len(msgs), start+o.batch)]...)
		if err != nil {
			return fmt.Errorf("topic %s: %w", o.cfg.Topic, err)
		}
		for _, r := range res {
			if r.Error != nil {
				return fmt.Errorf("topic %s: %s", o.cfg.Topic, r.Error.Detail)
			}
		}
	}
	return nil
}

func (o *topicOutput) Close() error { return nil }

// eventsInput reads the event store's global log from a position, in
// pages; a run ends at the end of the log. A record is the event:
// stream, type, id, version, position, time, data and metadata (decoded
// JSON). The position of the last committed event is kept (in the
// pipelines' KV bucket, key hw.PIPELINE) and the next run starts after
// it; a resumed run starts after its last committed batch.
type eventsInput struct {
	store eventstore.Store
	cfg   *config.EventsInput
	from  uint64
	kv    jetstream.KeyValue
	key   string
	saved uint64
	done  bool
}

// eventsPage is how many events one read takes.
const eventsPage = 1000

func newEventsInput(ctx context.Context, env *Env, cfg *config.EventsInput, resume json.RawMessage) (*eventsInput, error) {
	if env.Events == nil {
		return nil, errors.New("events input: the node has no event store")
	}
	in := &eventsInput{store: env.Events, cfg: cfg, key: "hw." + env.Pipeline}
	var last *uint64
	if env.JS != nil {
		var err error
		if in.kv, err = env.JS.KeyValue(ctx, env.Prefix+"_pipelines"); err != nil {
			return nil, fmt.Errorf("events input: pipelines bucket: %w", err)
		}
		e, err := in.kv.Get(ctx, in.key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return nil, fmt.Errorf("events input: position: %w", err)
		default:
			p, err := strconv.ParseUint(string(e.Value()), 10, 64)
			if err != nil {
				return nil, fmt.Errorf("events input: position %q: %w", e.Value(), err)
			}
			last, in.saved = &p, p
		}
	}
	if len(resume) > 0 {
		p, err := strconv.ParseUint(string(resume), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("resume position: %w", err)
		}
		last = &p
	}
	if last != nil {
		in.from = *last + 1
	}
	return in, nil
}

func (in *eventsInput) Next(ctx context.Context) ([]*Record, error) {
	if in.done {
		return nil, io.EOF
	}
	evs, err := in.store.ReadAll(ctx, eventstore.ReadAllOptions{From: in.from, Limit: eventsPage, Categories: in.cfg.Categories, Types: in.cfg.Types})
	if err != nil {
		return nil, fmt.Errorf("events input: %w", err)
	}
	if len(evs) == 0 {
		in.done = true
		return nil, io.EOF
	}
	out := make([]*Record, len(evs))
	for i, e := range evs {
		out[i] = &Record{Fields: map[string]any{
			"stream":   e.Stream,
			"type":     e.Type,
			"id":       e.ID,
			"version":  int64(e.Version),
			"position": int64(e.Position),
			"time":     e.Time.UTC().Format(time.RFC3339Nano),
			"data":     decodeJSON(e.Data),
			"metadata": decodeJSON(e.Metadata),
		}, Pos: json.RawMessage(strconv.FormatUint(e.Position, 10))}
	}
	in.from = evs[len(evs)-1].Position + 1
	return out, nil
}

// decodeJSON decodes an event's data; what is not JSON stays text.
func decodeJSON(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return string(b)
	}
	return v
}

// Commit keeps pos as where the next run starts after.
func (in *eventsInput) Commit(ctx context.Context, pos json.RawMessage) error {
	if in.kv == nil {
		return nil
	}
	p, err := strconv.ParseUint(string(pos), 10, 64)
	if err != nil {
		return fmt.Errorf("events input: position %s: %w", pos, err)
	}
	if p == in.saved {
		return nil
	}
	if _, err := in.kv.Put(ctx, in.key, []byte(strconv.FormatUint(p, 10))); err != nil {
		return fmt.Errorf("events input: storing the position: %w", err)
	}
	in.saved = p
	return nil
}

func (in *eventsInput) Close() error { return nil }
