package busbench

import (
	"context"
	"testing"
	"time"

	"github.com/junctionhq/junction/bus"
)

// TestSmoke runs every measured path once at a tiny size, so that the
// benchmarks and the pushe2e command keep working; it asserts
// correctness only, never speed.
func TestSmoke(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	smokePublish(ctx, t)

	var got []E2EResult
	err := RunPushE2E(ctx, t.TempDir(), E2EOptions{
		Messages: 300, Batch: 50, LatencyFor: 300 * time.Millisecond, Rate: 300, Timeout: 10 * time.Second,
	}, func(r E2EResult) { got = append(got, r) })
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 {
		t.Fatalf("got %d results, want 4: %+v", len(got), got)
	}
	for _, r := range got {
		if r.Rate <= 0 || r.P99ms <= 0 || r.Messages == 0 {
			t.Errorf("empty result: %+v", r)
		}
	}
}

func smokePublish(ctx context.Context, t *testing.T) {
	env, err := StartEnv(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer env.Close()

	// Raw publishes land in the topic the bus created.
	subject, err := env.RawTopic(ctx, "smoke.raw")
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := env.NATS.JS.PublishMsg(ctx, rawMsg(subject, Payload())); err != nil {
			t.Fatal(err)
		}
	}
	ti, err := env.Bus.GetTopic(ctx, "smoke.raw")
	if err != nil {
		t.Fatal(err)
	}
	if ti.Stats.Messages != 3 {
		t.Fatalf("raw topic holds %d messages, want 3", ti.Stats.Messages)
	}
	res, err := env.Bus.Publish(ctx, "smoke.junction", bus.Message{Data: Payload()}, bus.Message{Data: Payload()})
	if err != nil || len(res) != 2 || res[1].Sequence != 2 {
		t.Fatalf("publish: %v %+v", err, res)
	}
}
