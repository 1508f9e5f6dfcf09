package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/junctionhq/junction/config"
)

func init() {
	inputs["redis"] = func(ctx context.Context, env *Env, cfg *config.PipelineInput, _ json.RawMessage) (Input, error) {
		return newRedisInput(ctx, cfg.Redis, defaultGroup(env))
	}
	outputs["redis"] = func(ctx context.Context, _ *Env, cfg *config.PipelineOutput) (Output, error) {
		return newRedisOutput(ctx, cfg.Redis)
	}
}

// redisDataField is the stream entry field that holds a record's JSON.
const redisDataField = "data"

// redisConsumer is the default consumer name: the same on every start of
// this node, so that a restarted input finds the entries it had read but
// not acknowledged.
func redisConsumer() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "junction"
	}
	return "junction-" + h
}

func redisClient(ctx context.Context, raw string) (*redis.Client, error) {
	opt, err := redis.ParseURL(raw)
	if err != nil {
		return nil, fmt.Errorf("redis: url: %w", err)
	}
	cl := redis.NewClient(opt)
	if err := cl.Ping(ctx).Err(); err != nil {
		cl.Close()
		return nil, fmt.Errorf("redis: %w", err)
	}
	return cl, nil
}

// redisInput reads a stream in a consumer group. It first re-reads the
// entries delivered to its consumer but not acknowledged (a previous run's
// uncommitted records), then new ones; Commit acknowledges (XACK) every
// entry handed out up to the position. A new group starts at the
// beginning of the stream.
type redisInput struct {
	cl       *redis.Client
	stream   string
	group    string
	consumer string
	// from is where the next read starts: an entry ID while the pending
	// entries are re-read, ">" for new entries after that.
	from string
	mu   sync.Mutex
	// unacked are the IDs handed out and not committed, in order.
	unacked []string
}

func newRedisInput(ctx context.Context, cfg *config.RedisConn, group string) (*redisInput, error) {
	cl, err := redisClient(ctx, cfg.URL)
	if err != nil {
		return nil, err
	}
	if cfg.Group != "" {
		group = cfg.Group
	}
	consumer := cfg.Consumer
	if consumer == "" {
		consumer = redisConsumer()
	}
	if err := cl.XGroupCreateMkStream(ctx, cfg.Stream, group, "0").Err(); err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		cl.Close()
		return nil, fmt.Errorf("redis: creating group %s of %s: %w", group, cfg.Stream, err)
	}
	return &redisInput{cl: cl, stream: cfg.Stream, group: group, consumer: consumer, from: "0"}, nil
}

func (in *redisInput) Next(ctx context.Context) ([]*Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	args := &redis.XReadGroupArgs{Group: in.group, Consumer: in.consumer, Streams: []string{in.stream, in.from}, Count: batchRecords}
	if in.from == ">" {
		args.Block = brokerWait
	}
	res, err := in.cl.XReadGroup(ctx, args).Result()
	if ctx.Err() != nil && (err != nil || len(res) == 0) {
		return nil, ctx.Err()
	}
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("redis: reading %s: %w", in.stream, err)
	}
	var msgs []redis.XMessage
	for _, s := range res {
		msgs = append(msgs, s.Messages...)
	}
	if in.from != ">" {
		if len(msgs) == 0 {
			in.from = ">" // the pending entries are all re-read
			return in.Next(ctx)
		}
		in.from = msgs[len(msgs)-1].ID
	}
	out := make([]*Record, 0, len(msgs))
	var gone []string
	in.mu.Lock()
	for _, m := range msgs {
		if m.Values == nil {
			// A pending entry deleted from the stream since: nothing to
			// read again.
			gone = append(gone, m.ID)
			continue
		}
		pos, _ := json.Marshal(m.ID)
		out = append(out, &Record{Fields: redisFields(m.Values), Pos: pos})
		in.unacked = append(in.unacked, m.ID)
	}
	in.mu.Unlock()
	if len(gone) > 0 {
		if err := in.cl.XAck(ctx, in.stream, in.group, gone...).Err(); err != nil {
			return nil, fmt.Errorf("redis: ack: %w", err)
		}
	}
	return out, nil
}

// redisFields is an entry as a record: the JSON of its data field when
// that is its only field (as the redis output writes), else its fields
// as text.
func redisFields(vals map[string]any) map[string]any {
	if len(vals) == 1 {
		if s, ok := vals[redisDataField].(string); ok {
			return decodeMessage([]byte(s))
		}
	}
	return vals
}

func (in *redisInput) Commit(ctx context.Context, pos json.RawMessage) error {
	var id string
	if err := json.Unmarshal(pos, &id); err != nil {
		return fmt.Errorf("redis: position %s: %w", pos, err)
	}
	in.mu.Lock()
	n := -1
	for i, x := range in.unacked {
		if x == id {
			n = i + 1
			break
		}
	}
	var ids []string
	if n > 0 {
		ids = append(ids, in.unacked[:n]...)
	}
	in.mu.Unlock()
	if len(ids) == 0 {
		return nil // committed before
	}
	if err := in.cl.XAck(ctx, in.stream, in.group, ids...).Err(); err != nil {
		return fmt.Errorf("redis: ack: %w", err)
	}
	in.mu.Lock()
	in.unacked = in.unacked[len(ids):]
	in.mu.Unlock()
	return nil
}

func (in *redisInput) Close() error {
	return in.cl.Close()
}

// redisOutput appends each record to the stream as an entry whose data
// field is the record's JSON, a batch in one MULTI/EXEC transaction.
type redisOutput struct {
	cl     *redis.Client
	stream string
}

func newRedisOutput(ctx context.Context, cfg *config.RedisConn) (*redisOutput, error) {
	cl, err := redisClient(ctx, cfg.URL)
	if err != nil {
		return nil, err
	}
	return &redisOutput{cl: cl, stream: cfg.Stream}, nil
}

func (o *redisOutput) Write(ctx context.Context, recs []*Record) error {
	if len(recs) == 0 {
		return nil
	}
	bodies := make([]string, len(recs))
	for i, r := range recs {
		b, err := encodeMessage(r)
		if err != nil {
			return err
		}
		bodies[i] = string(b)
	}
	cmds, err := o.cl.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for _, b := range bodies {
			p.XAdd(ctx, &redis.XAddArgs{Stream: o.stream, Values: []any{redisDataField, b}})
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("redis: appending to %s: %w", o.stream, err)
	}
	for _, c := range cmds {
		if err := c.Err(); err != nil {
			return fmt.Errorf("redis: appending to %s: %w", o.stream, err)
		}
	}
	return nil
}

func (o *redisOutput) Close() error {
	return o.cl.Close()
}
