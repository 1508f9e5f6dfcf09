// Package kvwatch follows a JetStream KV bucket: it loads the current
// state, then applies every later change, which is how each node keeps
// its view of shared state (subscriptions, the service registry) live.
package kvwatch

import (
	"context"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
)

// Follow applies every entry of kv, and returns once the current state is
// loaded; a goroutine tracked by wg then applies changes until ctx ends.
// apply runs on one goroutine at a time, in the bucket's order.
func Follow(ctx context.Context, kv jetstream.KeyValue, wg *sync.WaitGroup, apply func(jetstream.KeyValueEntry)) error {
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watching bucket %s: %w", kv.Bucket(), err)
	}
	// The first batch of updates ends with a nil entry: the state as it
	// was when the watch began.
	for e := range w.Updates() {
		if e == nil {
			break
		}
		apply(e)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer w.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e != nil {
					apply(e)
				}
			}
		}
	}()
	return nil
}
