package busbridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/junctionhq/junction/eventstore"
)

// Leased runs a bridge on one node at a time. Every node may run the same
// bridge without it (the bus drops the copies by message id), but then
// every node publishes every event; with it, only the node holding the
// bridge's lease does, the others wait to take over. The lease is a key in
// a bucket with a TTL (as the bus's delivery leases): the holder renews it
// every quarter of the TTL and deletes it when it stops, and a holder that
// dies loses it when the TTL ends.
type Leased struct {
	Bridge *eventstore.Bridge
	// KV holds the leases; its bucket must have a TTL (10s is a good
	// one: the longest a dead node holds up its bridges).
	KV jetstream.KeyValue
	// Node names this node in the lease; empty means a random id.
	Node string
}

// ErrNoTTL is returned for a lease bucket without a TTL: a lease in it
// would outlive a node that dies holding it.
var ErrNoTTL = errors.New("lease bucket has no TTL")

// releaseTimeout bounds the delete of a lease after ctx ended.
const releaseTimeout = 5 * time.Second

// Run waits for the lease, runs the bridge while it holds it, and waits
// again if it loses it, until ctx ends (it returns ctx.Err()) or the bridge
// fails (a permanent publish error: it returns it, releasing the lease so
// another node may try).
func (l *Leased) Run(ctx context.Context) error {
	st, err := l.KV.Status(ctx)
	if err != nil {
		return fmt.Errorf("lease bucket: %w", err)
	}
	if st.TTL() <= 0 {
		return fmt.Errorf("bridge %s: %w", l.Bridge.Name, ErrNoTTL)
	}
	renew := st.TTL() / 4
	node := l.Node
	if node == "" {
		node = uuid.NewString()
	}
	log := l.Bridge.Log
	if log == nil {
		log = slog.Default()
	}
	log = log.With("bridge", l.Bridge.Name, "node", node)
	k := key(l.Bridge.Name)
	t := time.NewTicker(renew)
	defer t.Stop()
	for {
		if rev, err := l.KV.Create(ctx, k, []byte(node)); err == nil {
			log.Info("holding the bridge lease")
			if err := l.hold(ctx, log, t, k, node, rev); err != nil || ctx.Err() != nil {
				return err
			}
		} else if !errors.Is(err, jetstream.ErrKeyExists) && ctx.Err() == nil {
			log.Warn("taking the bridge lease", "err", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// hold runs the bridge while renewing the lease at revision rev. It
// returns nil when the lease is lost (the bridge is then stopped), and
// Run's result otherwise, after releasing the lease.
func (l *Leased) hold(ctx context.Context, log *slog.Logger, t *time.Ticker, k, node string, rev uint64) error {
	bctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- l.Bridge.Run(bctx) }()
	for {
		select {
		case err := <-done:
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
			_ = l.KV.Delete(rctx, k, jetstream.LastRevision(rev))
			cancel()
			return err
		case <-t.C:
			r, err := l.KV.Update(ctx, k, []byte(node), rev)
			if err == nil {
				rev = r
				continue
			}
			if ctx.Err() != nil {
				continue // the bridge is stopping; its result comes on done
			}
			// Lost (expired and taken by another node) or unreachable:
			// stop at once rather than publish beside the new holder.
			log.Warn("lost the bridge lease; the bridge stops on this node", "err", err)
			cancel()
			<-done
			return nil
		}
	}
}
