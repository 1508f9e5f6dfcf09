package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/junctionhq/junction/bus"
	"github.com/junctionhq/junction/config"
)

// The stream phase: messages pre-published to inTopic, each a JSON
// object {id, sku, amount, day}, through a map (amount to euros) into an
// output topic of each side and round, read through a durable pull
// subscription of its own from the first message. A side is done when
// its output topic holds every message.

const inTopic = "bench-in"

// streamPull bounds one pull's wait, as the pipeline's topic input does.
const streamPull = 500 * time.Millisecond

// sale is an input message's data; saleEUR an output message's (the
// fields in the order the pipeline's JSON has them: sorted).
type (
	sale struct {
		ID     int64   `json:"id"`
		SKU    string  `json:"sku"`
		Amount float64 `json:"amount"`
		Day    string  `json:"day"`
	}
	saleEUR struct {
		AmountEUR float64 `json:"amount_eur"`
		Day       string  `json:"day"`
		ID        int64   `json:"id"`
		SKU       string  `json:"sku"`
	}
)

func streamOut(side string, round int) string { return fmt.Sprintf("out-%s-%d", side, round) }

func (e *env) streamPhase() *phase {
	n := e.o.messages
	p := &phase{name: "stream", records: n}
	p.prepare = func(ctx context.Context) error {
		if _, err := e.bus.PutTopic(ctx, inTopic, config.Topic{}); err != nil {
			return err
		}
		msgs := make([]bus.Message, 0, 1000)
		for i := range n {
			amount := float64(i%1000) + 0.25
			b, _ := json.Marshal(sale{ID: int64(i), SKU: fmt.Sprintf("sku-%d", i%5000), Amount: amount, Day: fmt.Sprintf("2026-01-%02d", 1+i%28)})
			msgs = append(msgs, bus.Message{Type: "bench.sale", Data: b, DataContentType: "application/json"})
			if len(msgs) == cap(msgs) || i == n-1 {
				if err := publish(ctx, e.bus, inTopic, msgs); err != nil {
					return err
				}
				msgs = msgs[:0]
			}
		}
		p.what = fmt.Sprintf("%d messages pre-published to topic %s, through map into a topic of each side (pull %d at a time, publish a batch, then ack)", n, inTopic, min(e.o.batch, 1000))
		return nil
	}
	p.direct = func(ctx context.Context, round int) error {
		return directStream(ctx, e.bus, fmt.Sprintf("bench-direct-%d", round), streamOut("direct", round), n, e.o.batch)
	}
	p.pipe = func(ctx context.Context, round int) error {
		name := fmt.Sprintf("stream_%d", round)
		out := streamOut("pipeline", round)
		pl := &config.Pipeline{
			Input:      &config.PipelineInput{Topic: &config.TopicInput{Topic: inTopic, Start: "all"}},
			Processors: []*config.PipelineProcess{{Map: map[string]string{"id": "row.id", "sku": "row.sku", "amount_eur": "row.amount * 0.92", "day": "row.day"}}},
			Batch:      config.PipelineBatch{Count: e.o.batch},
			Output:     &config.PipelineOutput{Topic: &config.TopicOut{Topic: out}},
		}
		m, err := e.manager(ctx, name, pl, e.db)
		if err != nil {
			return err
		}
		defer m.Stop(context.Background())
		s, err := m.Start(ctx, name, nil)
		if err != nil {
			return err
		}
		return e.awaitTopic(ctx, out, n, func() error {
			cur, err := m.Get(ctx, name, s.RunID)
			if err != nil {
				return err
			}
			if cur.Status != "running" {
				return fmt.Errorf("the run ended (%s: %s) before the output topic held %d messages", cur.Status, cur.Error, n)
			}
			return nil
		})
	}
	p.verify = func(ctx context.Context, round int) error {
		// Same count, and the same data in the first and last message.
		for _, seq := range []uint64{1, uint64(n)} {
			var data [2][]byte
			for i, side := range []string{"direct", "pipeline"} {
				st, err := e.nc.JS.Stream(ctx, prefix+"_T_"+streamOut(side, round))
				if err != nil {
					return err
				}
				info, err := st.Info(ctx)
				if err != nil {
					return err
				}
				if info.State.Msgs != uint64(n) {
					return fmt.Errorf("%s's output topic holds %d messages, want %d", side, info.State.Msgs, n)
				}
				m, err := st.GetMsg(ctx, seq)
				if err != nil {
					return err
				}
				data[i] = m.Data
			}
			if !bytes.Equal(data[0], data[1]) {
				return fmt.Errorf("message %d differs: direct %s, pipeline %s", seq, data[0], data[1])
			}
		}
		return nil
	}
	return p
}

// publish publishes msgs to topic and checks every result.
func publish(ctx context.Context, b *bus.Bus, topic string, msgs []bus.Message) error {
	res, err := b.Publish(ctx, topic, msgs...)
	if err != nil {
		return err
	}
	for _, r := range res {
		if r.Error != nil {
			return fmt.Errorf("publish to %s: %s", topic, r.Error.Detail)
		}
	}
	return nil
}

// awaitTopic returns once topic holds n messages, checking alive between
// looks.
func (e *env) awaitTopic(ctx context.Context, topic string, n int, alive func() error) error {
	deadline := time.Now().Add(10 * time.Minute)
	for {
		if info, err := e.bus.GetTopic(ctx, topic); err == nil && info.Stats.Messages >= uint64(n) {
			return nil
		}
		if err := alive(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("topic %s does not hold %d messages after 10 minutes", topic, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// directStream is the hand-written program: a durable pull subscription
// on the input topic from its first message; pull up to batch messages,
// decode each, convert the amount, encode it, publish the batch to the
// output topic, then acknowledge the batch's messages.
func directStream(ctx context.Context, b *bus.Bus, sub, out string, n, batch int) error {
	if _, err := b.PutSubscription(ctx, sub, config.Subscription{Topic: inTopic, Start: "all"}); err != nil {
		return err
	}
	msgs := make([]bus.Message, 0, batch)
	ids := make([]string, 0, batch)
	flush := func() error {
		for start := 0; start < len(msgs); start += 1000 {
			if err := publish(ctx, b, out, msgs[start:min(len(msgs), start+1000)]); err != nil {
				return err
			}
		}
		for start := 0; start < len(ids); start += 1000 {
			if err := b.Settle(ctx, sub, bus.SettleAck, ids[start:min(len(ids), start+1000)], 0); err != nil {
				return err
			}
		}
		msgs, ids = msgs[:0], ids[:0]
		return nil
	}
	for done := 0; done < n; {
		got, err := b.Pull(ctx, sub, min(1000, batch-len(msgs)), streamPull)
		if err != nil {
			return err
		}
		for _, m := range got {
			var s sale
			if err := json.Unmarshal(m.Data, &s); err != nil {
				return err
			}
			data, err := json.Marshal(saleEUR{AmountEUR: s.Amount * 0.92, Day: s.Day, ID: s.ID, SKU: s.SKU})
			if err != nil {
				return err
			}
			msgs = append(msgs, bus.Message{Type: "junction.pipeline.record", Data: data, DataContentType: "application/json"})
			ids = append(ids, m.AckID)
		}
		if len(msgs) >= batch || len(got) == 0 && len(msgs) > 0 {
			done += len(msgs)
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return nil
}
