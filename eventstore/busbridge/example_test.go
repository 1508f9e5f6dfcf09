package busbridge_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"os"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/junctionhq/junction/bus"
	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/eventstore"
	"github.com/junctionhq/junction/eventstore/busbridge"
	esjetstream "github.com/junctionhq/junction/eventstore/jetstream"
	"github.com/junctionhq/junction/internal/natsembed"
)

// A bridge publishes the order events of the event store to the bus topic
// orders, where a pull subscription picks them up.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	quiet := slog.New(slog.DiscardHandler)
	dir, err := os.MkdirTemp("", "busbridge-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	nc, err := natsembed.Start(ctx, natsembed.Options{DataDir: dir, Logger: quiet})
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	store, err := esjetstream.Open(ctx, nc.JS, "shop")
	if err != nil {
		log.Fatal(err)
	}
	b, err := bus.New(ctx, bus.Options{NC: nc.NC, JS: nc.JS, Prefix: "shop", Config: config.Default().Bus, Logger: quiet})
	if err != nil {
		log.Fatal(err)
	}
	defer b.Stop(ctx)
	if _, err := b.PutSubscription(ctx, "billing", config.Subscription{Topic: "orders", Start: "all"}); err != nil {
		log.Fatal(err)
	}
	checkpoints, err := nc.JS.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "shop_bridges", History: 1})
	if err != nil {
		log.Fatal(err)
	}

	bridge := &eventstore.Bridge{
		Name:        "orders",
		Store:       store,
		Categories:  []string{"order"},
		Topic:       "orders",
		Publisher:   busbridge.NewPublisher(b),
		Checkpoints: busbridge.NewKVCheckpoints(checkpoints),
		Log:         quiet,
	}
	bctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- bridge.Run(bctx) }()

	for _, a := range []struct{ stream, typ string }{{"order-1", "OrderPlaced"}, {"stock-9", "StockReserved"}, {"order-1", "OrderPaid"}} {
		if _, err := store.Append(ctx, a.stream, eventstore.Any, []eventstore.EventData{{Type: a.typ, Data: []byte(`{}`)}}); err != nil {
			log.Fatal(err)
		}
	}
	for got := 0; got < 2; {
		msgs, err := b.Pull(ctx, "billing", 10, time.Second)
		if err != nil {
			log.Fatal(err)
		}
		for _, m := range msgs {
			fmt.Println(m.Subject, m.Type, "version", m.Headers["ce-streamversion"])
			if err := b.Settle(ctx, "billing", bus.SettleAck, []string{m.AckID}, 0); err != nil {
				log.Fatal(err)
			}
		}
		got += len(msgs)
	}
	stop()
	fmt.Println(<-done)
	// Output:
	// order-1 OrderPlaced version 0
	// order-1 OrderPaid version 1
	// context canceled
}
