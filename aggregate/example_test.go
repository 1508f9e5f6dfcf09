package aggregate_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/junctionhq/junction/aggregate"
	"github.com/junctionhq/junction/eventstore"
	esjetstream "github.com/junctionhq/junction/eventstore/jetstream"
	"github.com/junctionhq/junction/internal/natsembed"
)

// Cart is the state of a shopping cart stream.
type Cart struct {
	Items map[string]int `json:"items"`
}

func applyCart(c Cart, e eventstore.Event) (Cart, error) {
	var item struct {
		SKU string `json:"sku"`
	}
	if err := json.Unmarshal(e.Data, &item); err != nil {
		return c, err
	}
	// Copy rather than change the map in place: Apply must not modify
	// the state it is given.
	items := make(map[string]int, len(c.Items)+1)
	for k, v := range c.Items {
		items[k] = v
	}
	switch e.Type {
	case "ItemAdded":
		items[item.SKU]++
	case "ItemRemoved":
		items[item.SKU]--
	}
	return Cart{Items: items}, nil
}

var errNotInCart = errors.New("not in the cart")

func removeItem(sku string) func(Cart) ([]eventstore.EventData, error) {
	return func(c Cart) ([]eventstore.EventData, error) {
		if c.Items[sku] == 0 {
			return nil, fmt.Errorf("removing %s: %w", sku, errNotInCart)
		}
		return []eventstore.EventData{{Type: "ItemRemoved", Data: fmt.Appendf(nil, `{"sku":%q}`, sku)}}, nil
	}
}

func addItem(sku string) func(Cart) ([]eventstore.EventData, error) {
	return func(Cart) ([]eventstore.EventData, error) {
		return []eventstore.EventData{{Type: "ItemAdded", Data: fmt.Appendf(nil, `{"sku":%q}`, sku)}}, nil
	}
}

func Example() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "aggregate-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	nc, err := natsembed.Start(ctx, natsembed.Options{DataDir: dir, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	store, err := esjetstream.Open(ctx, nc.JS, "shop")
	if err != nil {
		log.Fatal(err)
	}
	kv, err := nc.JS.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "shop_snapshots", History: 1})
	if err != nil {
		log.Fatal(err)
	}

	carts := &aggregate.Aggregate[Cart]{
		Store:         store,
		Snapshots:     aggregate.NewKVSnapshots(kv),
		Initial:       func() Cart { return Cart{Items: map[string]int{}} },
		Apply:         applyCart,
		SnapshotEvery: 2,
	}
	for _, cmd := range []func(Cart) ([]eventstore.EventData, error){
		addItem("apple"), addItem("pear"), addItem("apple"), removeItem("pear"), removeItem("plum"),
	} {
		if _, err := carts.Execute(ctx, "cart-7", cmd); err != nil {
			fmt.Println("rejected:", err)
		}
	}
	cart, version, err := carts.Load(ctx, "cart-7")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("version", version, "apples", cart.Items["apple"], "pears", cart.Items["pear"])
	// Output:
	// rejected: removing plum: not in the cart
	// version 3 apples 2 pears 0
}
