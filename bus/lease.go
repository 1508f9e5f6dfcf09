package bus

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/junctionhq/junction/config"
)

// Delivery leases. Unordered push delivery runs on every node: the nodes
// compete on the durable consumer and share the load. Ordered delivery
// cannot: two nodes would each run a lane for the same key. So an
// ordered_by_key subscription is dispatched by the one node holding its
// lease in a KV bucket whose entries expire after leaseTTL unless renewed.
// A node that stops releases the lease at once; one that dies loses it
// when it expires, and another node takes over.
const (
	leaseTTL   = 10 * time.Second
	leaseRenew = leaseTTL / 4
)

// leader holds or waits for a subscription's lease and runs its
// dispatcher while it holds it.
type leader struct {
	b     *Bus
	c     *compiled
	stopc chan context.Context
	done  chan struct{}
}

func (b *Bus) startLeader(c *compiled) *leader {
	l := &leader{b: b, c: c, stopc: make(chan context.Context, 1), done: make(chan struct{})}
	go l.run()
	return l
}

func (l *leader) config() config.Subscription { return l.c.cfg }

func (l *leader) stop(ctx context.Context) {
	select {
	case l.stopc <- ctx:
	default:
	}
	<-l.done
}

func (l *leader) run() {
	defer close(l.done)
	b, key := l.b, l.c.name
	var d *dispatcher
	var rev uint64
	t := time.NewTicker(leaseRenew)
	defer t.Stop()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), leaseRenew)
		if d == nil {
			if r, err := b.leaseKV.Create(ctx, key, []byte(b.nodeID)); err == nil {
				rev = r
				if d, err = b.startDispatcher(l.c); err != nil {
					b.log.Error("starting ordered push delivery", "subscription", key, "err", err)
					_ = b.leaseKV.Delete(ctx, key, jetstream.LastRevision(rev))
					d, rev = nil, 0
				} else {
					b.log.Info("holding the delivery lease", "subscription", key)
				}
			}
		} else if r, err := b.leaseKV.Update(ctx, key, []byte(b.nodeID), rev); err == nil {
			rev = r
		} else {
			// Lost (expired and taken by another node) or unreachable:
			// stop at once rather than risk two nodes serving one key.
			b.log.Warn("lost the delivery lease; ordered delivery stops on this node", "subscription", key, "err", err)
			d.stop(ctx)
			d, rev = nil, 0
		}
		cancel()
		select {
		case sctx := <-l.stopc:
			if d != nil {
				d.stop(sctx)
				dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_ = b.leaseKV.Delete(dctx, key, jetstream.LastRevision(rev))
				cancel()
			}
			return
		case <-t.C:
		}
	}
}
