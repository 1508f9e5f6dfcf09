package pipeline_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/junctionhq/junction/bus"
	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/eventstore"
	esjs "github.com/junctionhq/junction/eventstore/jetstream"
	"github.com/junctionhq/junction/internal/natsembed"
	"github.com/junctionhq/junction/internal/testutil"
	"github.com/junctionhq/junction/pipeline"
)

// connBusEnv is connEnv with a bus and an event store.
func connBusEnv(t *testing.T, name string) *pipeline.Env {
	t.Helper()
	e := connEnv(t, name)
	nc, err := natsembed.Start(context.Background(), natsembed.Options{DataDir: t.TempDir(), Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ctx := connCtx(t)
	e.JS = nc.JS
	if _, err := nc.JS.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: e.Prefix + "_pipelines", History: 1}); err != nil {
		t.Fatal(err)
	}
	b, err := bus.New(ctx, bus.Options{NC: nc.NC, JS: nc.JS, Prefix: e.Prefix, Config: config.Default().Bus, Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Stop(context.Background()) })
	e.Bus = b
	if e.Events, err = esjs.Open(ctx, nc.JS, e.Prefix+"_es"); err != nil {
		t.Fatal(err)
	}
	return e
}

// TestTopicRoundTrip: the topic output publishes records, the topic
// input reads them through its durable subscription; what is committed
// is acknowledged, and what was handed out but not committed comes
// back to the next input at once.
func TestTopicRoundTrip(t *testing.T) {
	e := connBusEnv(t, "topics")
	ctx := connCtx(t)
	in := connInput(t, e, &config.PipelineInput{Topic: &config.TopicInput{Topic: "orders", Start: "all"}}, nil)
	out, err := pipeline.ConnBuildOutput(ctx, e, &config.PipelineOutput{Topic: &config.TopicOut{Topic: "orders", Key: "row.id"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := out.Write(ctx, connRecs(map[string]any{"id": "a", "n": 1.0}, map[string]any{"id": "b", "n": 2.0}, map[string]any{"id": "c", "n": 3.0})); err != nil {
		t.Fatal(err)
	}
	var got []*pipeline.Record
	for i := 0; i < 20 && len(got) < 3; i++ {
		recs, err := in.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, recs...)
	}
	if s := connField(got, "id"); s != "a,b,c" || got[2].Fields["n"] != 3.0 {
		t.Fatalf("read %s", s)
	}
	if err := in.Commit(ctx, got[0].Pos); err != nil {
		t.Fatal(err)
	}
	if err := in.Close(); err != nil {
		t.Fatal(err)
	}
	in2 := connInput(t, e, &config.PipelineInput{Topic: &config.TopicInput{Topic: "orders", Start: "all"}}, nil)
	var again []*pipeline.Record
	for i := 0; i < 20 && len(again) < 2; i++ {
		recs, err := in2.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		again = append(again, recs...)
	}
	if s := connField(again, "id"); s != "b,c" {
		t.Fatalf("handed back %s", s)
	}
	if err := in2.Commit(ctx, again[1].Pos); err != nil {
		t.Fatal(err)
	}
	if recs, err := in2.Next(ctx); err != nil || len(recs) != 0 {
		t.Fatalf("after all were acknowledged: %d records, %v", len(recs), err)
	}
}

// TestEventsInput: the global log as records, filtered by category and
// type, in pages; a run ends at the end of the log, the next starts
// after the last committed event, and a resumed run after its position.
func TestEventsInput(t *testing.T) {
	e := connBusEnv(t, "events")
	ctx := connCtx(t)
	appendN := func(stream, typ string, n int) {
		var evs []eventstore.EventData
		for i := range n {
			d, _ := json.Marshal(map[string]any{"i": i})
			evs = append(evs, eventstore.EventData{Type: typ, Data: d, Metadata: []byte(`{"by":"test"}`)})
		}
		if _, err := e.Events.Append(ctx, stream, eventstore.Any, evs); err != nil {
			t.Fatal(err)
		}
	}
	appendN("order-1", "placed", 1500)
	appendN("user-1", "created", 3)
	appendN("order-2", "shipped", 2)
	cfg := &config.PipelineInput{Events: &config.EventsInput{Categories: []string{"order"}}}
	in := connInput(t, e, cfg, nil)
	var pages []int
	var all []*pipeline.Record
	for {
		recs, err := in.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		pages = append(pages, len(recs))
		all = append(all, recs...)
		if err := in.Commit(ctx, recs[len(recs)-1].Pos); err != nil {
			t.Fatal(err)
		}
	}
	if len(all) != 1502 || len(pages) < 2 || pages[0] != 1000 {
		t.Fatalf("%d records in pages %v", len(all), pages)
	}
	f := all[1500].Fields
	if f["stream"] != "order-2" || f["type"] != "shipped" || f["version"] != int64(0) || f["data"].(map[string]any)["i"] != 0.0 ||
		f["metadata"].(map[string]any)["by"] != "test" || f["id"] == "" || f["time"] == "" {
		t.Fatalf("record %#v", f)
	}
	appendN("order-3", "placed", 1)
	if got := connDrain(t, connInput(t, e, cfg, nil)); connField(got, "stream") != "order-3" {
		t.Fatalf("next run: %s", connField(got, "stream"))
	}
	// Resume after the 1000th order event.
	typed := &config.PipelineInput{Events: &config.EventsInput{Types: []string{"shipped", "created"}}}
	e.Pipeline = "events_typed"
	if got := connDrain(t, connInput(t, e, typed, all[999].Pos)); connField(got, "type") != "created,created,created,shipped,shipped" {
		t.Fatalf("resumed: %s", connField(got, "type"))
	}
}
