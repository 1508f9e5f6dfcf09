package eventstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/junctionhq/junction/resilience"
)

// Bridging the event store to a message bus. A Bridge follows $all and
// publishes the events of some categories and types to a topic, so that
// bus consumers get them with the bus's delivery guarantees (retries,
// dead letters, push or pull). The bus is reached through Publisher,
// which eventstore defines and an adapter implements, so this package
// does not depend on the bus.

// Publisher publishes one event to a topic. It should use the event's ID
// as the message ID, so that publishing an event again is deduplicated by
// the bus. An error marked with resilience.Permanent stops the bridge;
// any other error is retried.
type Publisher interface {
	PublishEvent(ctx context.Context, topic string, e Event) error
}

// Checkpoints stores, per bridge name, the global position of the last
// event the bridge published.
type Checkpoints interface {
	// Load returns the name's position; false when there is none yet.
	Load(ctx context.Context, name string) (position uint64, ok bool, err error)
	// Save stores the name's position.
	Save(ctx context.Context, name string, position uint64) error
}

// Bridge defaults, used where the Bridge's fields are zero.
const (
	DefaultCheckpointEvery    = 100
	DefaultCheckpointInterval = 100 * time.Millisecond
)

// DefaultBridgeBackoff spaces the attempts of a failing publish: quick
// first retries for a blip, at most 10s apart during an outage.
var DefaultBridgeBackoff = resilience.Backoff{Base: 100 * time.Millisecond, Max: 10 * time.Second, Jitter: 0.5}

// checkpointTimeout bounds the checkpoint save made as Run returns, after
// its ctx has ended.
const checkpointTimeout = 5 * time.Second

// Bridge publishes the events of Store selected by Categories and Types
// (empty means all) to Topic, in commit order, and records its progress
// in Checkpoints under Name.
//
// Delivery is at least once: after a crash, the events published since the
// last saved checkpoint are published again. Their message IDs are the
// event IDs, so the bus drops a repeat that falls within its deduplication
// window; checkpoints are saved often (CheckpointEvery, CheckpointInterval
// and when Run returns) to keep repeats well inside it. Several nodes may
// run the same bridge: each publishes every event, and the copies are
// suppressed the same way, as long as the nodes are less than the
// deduplication window apart.
type Bridge struct {
	Name        string
	Store       Store
	Categories  []string
	Types       []string
	Topic       string
	Publisher   Publisher
	Checkpoints Checkpoints
	Log         *slog.Logger // nil: slog.Default
	// CheckpointEvery saves the checkpoint after this many published
	// events (0: DefaultCheckpointEvery).
	CheckpointEvery int
	// CheckpointInterval saves a checkpoint that has moved at most this
	// long after the event, when events come too slowly to fill
	// CheckpointEvery (0: DefaultCheckpointInterval).
	CheckpointInterval time.Duration
	// Backoff spaces the attempts of a failed publish, which is retried
	// until it succeeds or Run's ctx ends (zero Base: DefaultBridgeBackoff).
	Backoff resilience.Backoff
}

func (b *Bridge) check() error {
	switch {
	case b.Name == "":
		return fmt.Errorf("%w: bridge: a name is required", ErrInvalid)
	case b.Topic == "":
		return fmt.Errorf("%w: bridge %s: a topic is required", ErrInvalid, b.Name)
	case b.Store == nil || b.Publisher == nil || b.Checkpoints == nil:
		return fmt.Errorf("%w: bridge %s: Store, Publisher and Checkpoints are required", ErrInvalid, b.Name)
	case b.CheckpointEvery < 0 || b.CheckpointInterval < 0:
		return fmt.Errorf("%w: bridge %s: negative checkpoint setting", ErrInvalid, b.Name)
	}
	return nil
}

// Run publishes events from the position after the saved checkpoint (from
// the start of $all when there is none), following new events until ctx
// ends, when it saves the checkpoint and returns ctx.Err(). Failures of
// the store or of the checkpoint store are logged and retried with
// Backoff, resuming after the last published event. Run returns early
// only for an invalid Bridge (ErrInvalid) or an event that cannot be
// published at all (a permanent publish error): the bridge cannot skip an
// event without breaking its order, so it stops and leaves the decision to
// its operator.
func (b *Bridge) Run(ctx context.Context) error {
	if err := b.check(); err != nil {
		return err
	}
	log := b.Log
	if log == nil {
		log = slog.Default()
	}
	log = log.With("bridge", b.Name, "topic", b.Topic)
	bo := b.Backoff
	if bo.Base == 0 {
		bo = DefaultBridgeBackoff
	}
	every, interval := b.CheckpointEvery, b.CheckpointInterval
	if every == 0 {
		every = DefaultCheckpointEvery
	}
	if interval == 0 {
		interval = DefaultCheckpointInterval
	}

	var from uint64
	err := resilience.Retry{Attempts: math.MaxInt, Backoff: bo}.Do(ctx, func(ctx context.Context, attempt int) error {
		pos, ok, err := b.Checkpoints.Load(ctx, b.Name)
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("loading bridge checkpoint failed; retrying", "attempt", attempt, "err", err)
			}
			return err
		}
		if ok {
			from = pos + 1
		}
		return nil
	})
	if err != nil {
		return ctx.Err() // only the end of ctx stops the retries
	}
	log.Info("bridge starting", "from", from)

	cp := &checkpoint{b: b, log: log, next: from}
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	follow := func(from uint64) {
		go func() {
			done <- FollowAll(fctx, b.Store, ReadAllOptions{From: from, Categories: b.Categories, Types: b.Types}, func(e Event) error {
				if err := b.publish(fctx, log, bo, e); err != nil {
					return &publishError{err}
				}
				if cp.advance(e.Position) >= every {
					cp.flush(fctx)
				}
				return nil
			})
		}()
	}
	follow(from)
	t := time.NewTicker(interval)
	defer t.Stop()
	// finish saves what was published, also when ctx has ended: a restart
	// would publish it again otherwise.
	finish := func(err error) error {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), checkpointTimeout)
		cp.flush(sctx)
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("bridge %s: %w", b.Name, err)
	}
	var (
		resume   <-chan time.Time
		idle     <-chan struct{} // ctx.Done() while no follower runs
		failures int
		failedAt uint64 // cp.position() at the last failure
	)
	for {
		select {
		case err := <-done:
			var pe *publishError
			if ctx.Err() != nil || errors.As(err, &pe) {
				return finish(err)
			}
			// Count consecutive failures only: progress since the last
			// one starts the backoff over.
			if pos := cp.position(); pos != failedAt || failures == 0 {
				failures, failedAt = 0, pos
			}
			failures++
			log.Warn("following the event store failed; resuming", "attempt", failures, "err", err)
			resume, idle = time.After(bo.Delay(failures)), ctx.Done()
		case <-resume:
			resume, idle = nil, nil
			follow(cp.position())
		case <-idle:
			return finish(ctx.Err())
		case <-t.C:
			cp.flush(ctx)
		}
	}
}

// publishError is a publish failure, which stops the bridge, as opposed
// to a failure of the store, which the bridge recovers from.
type publishError struct{ err error }

func (e *publishError) Error() string { return e.err.Error() }
func (e *publishError) Unwrap() error { return e.err }

// publish publishes e, retrying until it succeeds, the error is
// permanent or ctx ends.
func (b *Bridge) publish(ctx context.Context, log *slog.Logger, bo resilience.Backoff, e Event) error {
	r := resilience.Retry{Attempts: math.MaxInt, Backoff: bo}
	err := r.Do(ctx, func(ctx context.Context, attempt int) error {
		err := b.Publisher.PublishEvent(ctx, b.Topic, e)
		if err != nil && !resilience.IsPermanent(err) && ctx.Err() == nil {
			log.Warn("publishing event failed; retrying", "stream", e.Stream, "version", e.Version,
				"position", e.Position, "attempt", attempt, "err", err)
		}
		return err
	})
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("publishing event %s (%s@%d, position %d): %w", e.ID, e.Stream, e.Version, e.Position, err)
	}
	return err
}

// checkpoint is the bridge's progress, saved from the follower (every N
// events) and from Run's timer; the mutex serializes the saves so the
// stored position only moves forward.
type checkpoint struct {
	b   *Bridge
	log *slog.Logger

	mu      sync.Mutex
	next    uint64 // position after the last published event
	pending int    // events published since the last save
}

// advance records that the event at pos was published and returns how
// many events wait to be saved.
func (c *checkpoint) advance(pos uint64) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.next = pos + 1
	c.pending++
	return c.pending
}

// position is where the bridge goes on: after the last published event.
func (c *checkpoint) position() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.next
}

// flush saves the checkpoint if it moved. A failed save is logged and
// tried again at the next flush: it costs repeats after a restart, not
// lost events.
func (c *checkpoint) flush(ctx context.Context) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pending == 0 {
		return
	}
	if err := c.b.Checkpoints.Save(ctx, c.b.Name, c.next-1); err != nil {
		if ctx.Err() == nil {
			c.log.Warn("saving bridge checkpoint", "position", c.next-1, "err", err)
		}
		return
	}
	c.pending = 0
}
