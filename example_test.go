package junction_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/junctionhq/junction"
	"github.com/junctionhq/junction/bus"
	"github.com/junctionhq/junction/config"
)

// A Go program embeds Junction: the node runs in-process with its own
// embedded NATS JetStream, and the program publishes through the bus
// directly, without HTTP.
func Example() {
	dir, _ := os.MkdirTemp("", "junction-example-")
	defer os.RemoveAll(dir)
	cfg := config.Default()
	cfg.DataDir = dir
	cfg.API.Listen = "127.0.0.1:0"

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	node, err := junction.New(ctx, cfg, junction.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		fmt.Println(err)
		return
	}
	done := make(chan error)
	go func() { done <- node.Run(ctx) }()

	res, err := node.Bus().Publish(ctx, "orders",
		bus.Message{ID: "order-1", Type: "order.created", DataContentType: "application/json", Data: []byte(`{"total":12.5}`)},
		bus.Message{ID: "order-1", Type: "order.created", Data: []byte(`{"total":12.5}`)}, // same id: deduplicated
	)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, r := range res {
		fmt.Printf("%s sequence=%d duplicate=%v\n", r.ID, r.Sequence, r.Duplicate)
	}
	cancel()
	<-done
	// Output:
	// order-1 sequence=1 duplicate=false
	// order-1 sequence=1 duplicate=true
}
