package busbench

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/junctionhq/junction/bus"
)

// rawIDs numbers the Nats-Msg-Id of raw publishes across every benchmark
// round of the process, so that no raw message is ever a duplicate.
var rawIDs atomic.Uint64

// rawMsg is what the raw baseline publishes: the same payload with only a
// Nats-Msg-Id header, so JetStream does the same deduplication work as for
// a Junction message (whose ce-* and traceparent headers it lacks).
func rawMsg(subject string, payload []byte) *nats.Msg {
	id := "r-" + runID + "-" + strconv.FormatUint(rawIDs.Add(1), 10)
	return &nats.Msg{Subject: subject, Header: nats.Header{"Nats-Msg-Id": []string{id}}, Data: payload}
}

// BenchmarkPublish compares bus.Bus.Publish with raw JetStream publishing
// on the same embedded server and connection, one publisher goroutine
// each. b.N counts messages in every variant, so ns/op and allocs/op are
// per message, batches included; msg/s is reported beside them.
func BenchmarkPublish(b *testing.B) {
	ctx := context.Background()
	env, err := StartEnv(ctx, b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer env.Close()
	const jTopic, rTopic = "bench.publish.junction", "bench.publish.raw"
	if err := env.Bus.EnsureTopic(ctx, jTopic); err != nil {
		b.Fatal(err)
	}
	subject, err := env.RawTopic(ctx, rTopic)
	if err != nil {
		b.Fatal(err)
	}
	js := env.NATS.JS
	payload := Payload()

	b.Run("junction/sync", func(b *testing.B) {
		b.ReportAllocs()
		cpu0 := ProcessCPU()
		for range b.N {
			res, err := env.Bus.Publish(ctx, jTopic, bus.Message{Data: payload})
			if err != nil || res[0].Error != nil || res[0].Duplicate {
				b.Fatalf("publish: %v %+v", err, res)
			}
		}
		reportRate(b, cpu0)
	})
	b.Run("raw/sync", func(b *testing.B) {
		b.ReportAllocs()
		cpu0 := ProcessCPU()
		for range b.N {
			ack, err := js.PublishMsg(ctx, rawMsg(subject, payload))
			if err != nil || ack.Duplicate {
				b.Fatalf("publish: %v %+v", err, ack)
			}
		}
		reportRate(b, cpu0)
	})
	b.Run("junction/batch100", func(b *testing.B) {
		b.ReportAllocs()
		cpu0 := ProcessCPU()
		msgs := make([]bus.Message, 100)
		for i := 0; i < b.N; i += len(msgs) {
			batch := msgs[:min(len(msgs), b.N-i)]
			for j := range batch {
				batch[j] = bus.Message{Data: payload}
			}
			res, err := env.Bus.Publish(ctx, jTopic, batch...)
			if err != nil {
				b.Fatal(err)
			}
			for _, r := range res {
				if r.Error != nil || r.Duplicate {
					b.Fatalf("publish: %+v", r)
				}
			}
		}
		reportRate(b, cpu0)
	})
	b.Run("junction/batch100x4", func(b *testing.B) {
		// Four callers at once, each publishing batches of 100: shows
		// whether a single caller's limit is CPU or the wait for each
		// batch's acknowledgements.
		b.ReportAllocs()
		cpu0 := ProcessCPU()
		const callers = 4
		var wg sync.WaitGroup
		var failed atomic.Value
		for c := range callers {
			n := b.N / callers
			if c == 0 {
				n += b.N % callers
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				msgs := make([]bus.Message, 100)
				for i := 0; i < n; i += len(msgs) {
					batch := msgs[:min(len(msgs), n-i)]
					for j := range batch {
						batch[j] = bus.Message{Data: payload}
					}
					res, err := env.Bus.Publish(ctx, jTopic, batch...)
					if err != nil {
						failed.Store(err)
						return
					}
					for _, r := range res {
						if r.Error != nil || r.Duplicate {
							failed.Store(fmt.Errorf("publish: %+v", r))
							return
						}
					}
				}
			}()
		}
		wg.Wait()
		if err := failed.Load(); err != nil {
			b.Fatal(err)
		}
		reportRate(b, cpu0)
	})
	b.Run("raw/async100", func(b *testing.B) {
		// The same shape as a Junction batch: 100 sent, then 100 acks awaited.
		b.ReportAllocs()
		cpu0 := ProcessCPU()
		futs := make([]jetstream.PubAckFuture, 100)
		for i := 0; i < b.N; i += len(futs) {
			batch := futs[:min(len(futs), b.N-i)]
			for j := range batch {
				f, err := js.PublishMsgAsync(rawMsg(subject, payload))
				if err != nil {
					b.Fatal(err)
				}
				batch[j] = f
			}
			for _, f := range batch {
				waitAck(b, f)
			}
		}
		reportRate(b, cpu0)
	})
	b.Run("raw/async", func(b *testing.B) {
		// Pipelined: messages sent back to back, each ack checked once
		// 4000 newer messages are out (the client's default limit of
		// unacknowledged async publishes), the rest at the end. Only the
		// newest 4000 futures are kept, so the heap stays small.
		// The server sometimes stops acknowledging for more than the
		// client's default 200ms stall wait; a publisher that means to
		// pipeline waits longer.
		b.ReportAllocs()
		cpu0 := ProcessCPU()
		const window = 4000
		futs := make([]jetstream.PubAckFuture, 0, window)
		head := 0
		for range b.N {
			f, err := js.PublishMsgAsync(rawMsg(subject, payload), jetstream.WithStallWait(30*time.Second))
			if err != nil {
				b.Fatal(err)
			}
			if len(futs) < window {
				futs = append(futs, f)
				continue
			}
			waitAck(b, futs[head])
			futs[head] = f
			head = (head + 1) % window
		}
		for _, f := range futs {
			waitAck(b, f)
		}
		reportRate(b, cpu0)
	})
}

func waitAck(b *testing.B, f jetstream.PubAckFuture) {
	select {
	case ack := <-f.Ok():
		if ack.Duplicate {
			b.Fatalf("duplicate: %+v", ack)
		}
	case err := <-f.Err():
		b.Fatal(err)
	case <-time.After(30 * time.Second):
		b.Fatal("ack did not arrive within 30s")
	}
}

// reportRate adds msg/s and the process's CPU time per message (publisher
// and embedded server together); b.N counts messages, so ns/op is per
// message. cpu0 is ProcessCPU at the start.
func reportRate(b *testing.B, cpu0 time.Duration) {
	if el := b.Elapsed(); el > 0 {
		b.ReportMetric(float64(b.N)/el.Seconds(), "msg/s")
	}
	b.ReportMetric(float64((ProcessCPU()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/msg")
}
