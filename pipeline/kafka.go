package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/expr"
)

// Helpers shared by the broker connectors (Kafka, RabbitMQ, MQTT, Redis).

// brokerWait is how long a broker input's Next waits for a first message
// before returning no records, so that the runner can flush a batch whose
// period has passed.
const brokerWait = 500 * time.Millisecond

// decodeMessage turns a message body into a record's fields: a JSON
// object is the record; any other JSON value, or bytes that are not JSON,
// is {"value": ...} (the bytes as text).
func decodeMessage(b []byte) map[string]any {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return map[string]any{"value": string(b)}
	}
	if m, ok := v.(map[string]any); ok {
		return m
	}
	return map[string]any{"value": v}
}

// encodeMessage is a record's fields as a message body: a JSON object.
func encodeMessage(r *Record) ([]byte, error) {
	b, err := json.Marshal(r.Map())
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRecord, err)
	}
	return b, nil
}

// defaultGroup is the consumer group (queue consumer, durable name) of a
// pipeline that names none.
func defaultGroup(env *Env) string {
	if env == nil || env.Pipeline == "" {
		return "junction"
	}
	return "junction-" + env.Pipeline
}

func init() {
	inputs["kafka"] = func(ctx context.Context, env *Env, cfg *config.PipelineInput, _ json.RawMessage) (Input, error) {
		return newKafkaInput(ctx, cfg.Kafka, defaultGroup(env))
	}
	outputs["kafka"] = func(ctx context.Context, _ *Env, cfg *config.PipelineOutput) (Output, error) {
		return newKafkaOutput(ctx, cfg.Kafka)
	}
}

// kafkaPos is the position after a record: for each partition read so
// far, the offset to resume from (the record's offset plus one) and the
// leader epoch of the record.
type kafkaPos map[int32][2]int64 // partition -> {offset, epoch}

// kafkaInput consumes a topic in a consumer group, committing offsets
// only when told: a restart (or a rebalance) resumes from the last
// committed offsets, so uncommitted records are read again.
type kafkaInput struct {
	cl    *kgo.Client
	topic string
	mu    sync.Mutex
	next  map[int32][2]int64 // the offsets after the records handed out
}

func newKafkaInput(ctx context.Context, cfg *config.KafkaConn, group string) (*kafkaInput, error) {
	if cfg.Group != "" {
		group = cfg.Group
	}
	in := &kafkaInput{topic: cfg.Topic, next: map[int32][2]int64{}}
	forget := func(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
		in.mu.Lock()
		defer in.mu.Unlock()
		for _, p := range lost[cfg.Topic] {
			delete(in.next, p)
		}
	}
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(cfg.Topic),
		kgo.DisableAutoCommit(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(brokerWait),
		kgo.OnPartitionsRevoked(forget),
		kgo.OnPartitionsLost(forget),
	)
	if err != nil {
		return nil, fmt.Errorf("kafka: %w", err)
	}
	if err := pingKafka(ctx, cl); err != nil {
		cl.Close()
		return nil, err
	}
	in.cl = cl
	return in, nil
}

// pingKafka checks that a broker answers, so that a wrong address fails
// the run at its start rather than leaving it waiting.
func pingKafka(ctx context.Context, cl *kgo.Client) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := cl.Ping(ctx); err != nil {
		return fmt.Errorf("kafka: %w", err)
	}
	return nil
}

func (in *kafkaInput) Next(ctx context.Context) ([]*Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, brokerWait)
	defer cancel()
	fs := in.cl.PollRecords(pctx, batchRecords)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if fs.IsClientClosed() {
		return nil, errors.New("kafka: the client is closed")
	}
	for _, fe := range fs.Errors() {
		if errors.Is(fe.Err, context.DeadlineExceeded) || errors.Is(fe.Err, context.Canceled) {
			continue
		}
		return nil, fmt.Errorf("kafka: topic %s partition %d: %w", fe.Topic, fe.Partition, fe.Err)
	}
	var out []*Record
	in.mu.Lock()
	defer in.mu.Unlock()
	fs.EachRecord(func(r *kgo.Record) {
		in.next[r.Partition] = [2]int64{r.Offset + 1, int64(r.LeaderEpoch)}
		pos, _ := json.Marshal(in.posJSON())
		out = append(out, &Record{Fields: decodeMessage(r.Value), Pos: pos})
	})
	return out, nil
}

// posJSON is the current offsets with partitions as object keys.
func (in *kafkaInput) posJSON() map[string][2]int64 {
	m := make(map[string][2]int64, len(in.next))
	for p, o := range in.next {
		m[strconv.Itoa(int(p))] = o
	}
	return m
}

func (in *kafkaInput) Commit(ctx context.Context, pos json.RawMessage) error {
	var m map[string][2]int64
	if err := json.Unmarshal(pos, &m); err != nil {
		return fmt.Errorf("kafka: position %s: %w", pos, err)
	}
	offsets := map[int32]kgo.EpochOffset{}
	for p, o := range m {
		n, err := strconv.ParseInt(p, 10, 32)
		if err != nil {
			return fmt.Errorf("kafka: position %s: %w", pos, err)
		}
		offsets[int32(n)] = kgo.EpochOffset{Offset: o[0], Epoch: int32(o[1])}
	}
	var cerr error
	in.cl.CommitOffsetsSync(ctx, map[string]map[int32]kgo.EpochOffset{in.topic: offsets},
		func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
			if err != nil {
				cerr = err
				return
			}
			for _, t := range resp.Topics {
				for _, p := range t.Partitions {
					if err := kerr.ErrorForCode(p.ErrorCode); err != nil && cerr == nil {
						cerr = fmt.Errorf("partition %d: %w", p.Partition, err)
					}
				}
			}
		})
	if cerr != nil {
		return fmt.Errorf("kafka: commit: %w", cerr)
	}
	return nil
}

func (in *kafkaInput) Close() error {
	in.cl.Close()
	return nil
}

// kafkaOutput produces each record as a message whose value is the
// record's JSON and whose key, when configured, is a CEL expression over
// the record (row).
type kafkaOutput struct {
	cl  *kgo.Client
	key *expr.Program
}

func newKafkaOutput(ctx context.Context, cfg *config.KafkaConn) (*kafkaOutput, error) {
	o := &kafkaOutput{}
	if cfg.Key != "" {
		var err error
		if o.key, err = expr.Compile(cfg.Key); err != nil {
			return nil, fmt.Errorf("kafka key: %w", err)
		}
	}
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.DefaultProduceTopic(cfg.Topic),
		kgo.RequiredAcks(kgo.AllISRAcks()),
	)
	if err != nil {
		return nil, fmt.Errorf("kafka: %w", err)
	}
	if err := pingKafka(ctx, cl); err != nil {
		cl.Close()
		return nil, err
	}
	o.cl = cl
	return o, nil
}

func (o *kafkaOutput) Write(ctx context.Context, recs []*Record) error {
	if len(recs) == 0 {
		return nil
	}
	msgs := make([]*kgo.Record, len(recs))
	for i, r := range recs {
		b, err := encodeMessage(r)
		if err != nil {
			return err
		}
		m := &kgo.Record{Value: b}
		if o.key != nil {
			k, err := o.key.EvalString(map[string]any{"row": r.vars()})
			if err != nil {
				return fmt.Errorf("%w: kafka key: %v", ErrRecord, err)
			}
			m.Key = []byte(k)
		}
		msgs[i] = m
	}
	if err := o.cl.ProduceSync(ctx, msgs...).FirstErr(); err != nil {
		return fmt.Errorf("kafka: %w", err)
	}
	return nil
}

func (o *kafkaOutput) Close() error {
	o.cl.Close()
	return nil
}
