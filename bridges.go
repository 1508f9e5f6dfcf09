package junction

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/junctionhq/junction/aggregate"
	"github.com/junctionhq/junction/eventstore"
	"github.com/junctionhq/junction/eventstore/busbridge"
)

// bridgeLeaseTTL is the longest a dead node holds up its bridges before
// another node takes them over.
const bridgeLeaseTTL = 10 * time.Second

// bridges runs the configured event store → bus bridges, each on the one
// node holding its lease.
type bridges struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func (n *Node) startBridges(ctx context.Context) error {
	if len(n.cfg.EventStore.Bridges) == 0 {
		return nil
	}
	pfx := n.cfg.NATS.Prefix
	ckKV, err := n.nats.JS.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: pfx + "_bridges", Description: "Junction event bridge checkpoints", History: 1, Storage: jetstream.FileStorage})
	if err != nil {
		return fmt.Errorf("bridge checkpoints bucket: %w", err)
	}
	leaseKV, err := n.nats.JS.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: pfx + "_bridge_leases", Description: "Junction event bridge leases", History: 1, TTL: bridgeLeaseTTL, Storage: jetstream.FileStorage})
	if err != nil {
		return fmt.Errorf("bridge leases bucket: %w", err)
	}
	bctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	n.bridges = &bridges{cancel: cancel}
	for _, name := range sortedKeys(n.cfg.EventStore.Bridges) {
		c := n.cfg.EventStore.Bridges[name]
		l := &busbridge.Leased{KV: leaseKV, Bridge: &eventstore.Bridge{
			Name: name, Store: n.events, Categories: c.Categories, Types: c.Types, Topic: c.Topic,
			Publisher: busbridge.NewPublisher(n.bus), Checkpoints: busbridge.NewKVCheckpoints(ckKV),
			Log: n.log.With("bridge", name),
		}}
		n.bridges.wg.Add(1)
		go func() {
			defer n.bridges.wg.Done()
			if err := l.Run(bctx); err != nil && !errors.Is(err, context.Canceled) {
				n.log.Error("event bridge stopped", "bridge", name, "topic", c.Topic, "err", err)
			}
		}()
	}
	return nil
}

// stopBridges ends the bridges (each saves its checkpoint and releases its
// lease) before the bus they publish to stops.
func (n *Node) stopBridges() {
	if n.bridges != nil {
		n.bridges.cancel()
		n.bridges.wg.Wait()
	}
}

// openSnapshots keeps aggregate snapshots beside the events: in a
// JetStream bucket, or in the PostgreSQL event store's schema.
func (n *Node) openSnapshots(ctx context.Context) error {
	if n.cfg.EventStore.Backend == "postgres" {
		db := n.db
		if n.eventsDB != nil {
			db = n.eventsDB
		}
		s, err := aggregate.NewSQLSnapshots(ctx, db.DB, aggregate.DialectPostgres, n.cfg.EventStore.Schema+".snapshots")
		if err != nil {
			return fmt.Errorf("snapshots: %w", err)
		}
		n.snapshots = s
		return nil
	}
	kv, err := n.nats.JS.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: n.cfg.NATS.Prefix + "_snapshots", Description: "Junction aggregate snapshots", History: 1, Storage: jetstream.FileStorage})
	if err != nil {
		return fmt.Errorf("snapshots bucket: %w", err)
	}
	n.snapshots = aggregate.NewKVSnapshots(kv)
	return nil
}

// Snapshots is where aggregate.Aggregate keeps snapshots of this node's
// event store.
func (n *Node) Snapshots() aggregate.Snapshots { return n.snapshots }
