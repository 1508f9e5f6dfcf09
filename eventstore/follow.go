package eventstore

import (
	"context"
	"errors"
	"sync"
	"time"
)

// Catch-up subscriptions. A follower reads the events already stored, then
// keeps waiting for new ones, and hands every event to fn exactly once, in
// order. Positions (and a stream's versions) strictly increase in commit
// order in every backend, so resuming a read after the last event seen
// neither skips an event nor repeats one: the switch from catch-up to live
// has no gap and no duplicate.

// PollInterval is how long the polling followers (PollAll, PollStream)
// wait for a wake-up before reading again when they have caught up; it
// bounds the latency of a new event when the writer is in another process.
const PollInterval = 50 * time.Millisecond

// followPage is how many events a polling follower reads at a time.
const followPage = 500

// Follower is implemented by backends that can follow the global log
// natively. FollowAll calls fn for every event selected by o (from o.From,
// o.Limit is ignored) in position order, then for each new one as it is
// committed, until ctx ends (it returns ctx.Err()) or fn fails (it returns
// fn's error).
type Follower interface {
	FollowAll(ctx context.Context, o ReadAllOptions, fn func(Event) error) error
}

// StreamFollower is implemented by backends that can follow one stream
// natively. FollowStream calls fn for the stream's events from version
// from, then for each new one, until ctx ends (ctx.Err()), fn fails (its
// error) or the stream is deleted (ErrStreamDeleted, also when it is
// deleted already). A stream that does not exist yet is waited for.
type StreamFollower interface {
	FollowStream(ctx context.Context, stream string, from uint64, fn func(Event) error) error
}

// FollowAll follows the global log of s: natively when s is a Follower,
// by polling ReadAll otherwise.
func FollowAll(ctx context.Context, s Store, o ReadAllOptions, fn func(Event) error) error {
	if f, ok := s.(Follower); ok {
		return f.FollowAll(ctx, o, fn)
	}
	return PollAll(ctx, s, o, fn, nil)
}

// FollowStream follows one stream of s: natively when s is a
// StreamFollower, by polling ReadStream otherwise.
func FollowStream(ctx context.Context, s Store, stream string, from uint64, fn func(Event) error) error {
	if f, ok := s.(StreamFollower); ok {
		return f.FollowStream(ctx, stream, from, fn)
	}
	return PollStream(ctx, s, stream, from, fn, nil)
}

// PollAll follows the global log by reading it in pages from the position
// after the last event seen; when it has caught up it waits for the channel
// wake returns (nil means no wake-ups) to close, or PollInterval, and reads
// again. wake is called before each read, so a wake-up for an append
// committed after that read is not missed. Semantics as Follower's.
func PollAll(ctx context.Context, s Store, o ReadAllOptions, fn func(Event) error, wake func() <-chan struct{}) error {
	o.Limit = followPage
	for {
		w := woken(wake)
		es, err := s.ReadAll(ctx, o)
		if err != nil {
			return ctxErr(ctx, err)
		}
		for _, e := range es {
			if err := fn(e); err != nil {
				return err
			}
			o.From = e.Position + 1
		}
		if len(es) == followPage {
			continue
		}
		if err := pause(ctx, w); err != nil {
			return err
		}
	}
}

// PollStream follows one stream by reading it in pages from the version
// after the last event seen, waiting as PollAll does when caught up.
// Semantics as StreamFollower's. A delete followed by a new append between
// two reads is not noticed: the follower goes on with the new events.
func PollStream(ctx context.Context, s Store, stream string, from uint64, fn func(Event) error, wake func() <-chan struct{}) error {
	o := ReadOptions{From: from, Limit: followPage}
	for {
		w := woken(wake)
		es, err := s.ReadStream(ctx, stream, o)
		if err != nil && !errors.Is(err, ErrStreamNotFound) {
			return ctxErr(ctx, err)
		}
		for _, e := range es {
			if err := fn(e); err != nil {
				return err
			}
			o.From = e.Version + 1
		}
		if len(es) == followPage {
			continue
		}
		if err := pause(ctx, w); err != nil {
			return err
		}
	}
}

func woken(wake func() <-chan struct{}) <-chan struct{} {
	if wake == nil {
		return nil
	}
	return wake()
}

// pause waits for w, PollInterval or the end of ctx.
func pause(ctx context.Context, w <-chan struct{}) error {
	t := time.NewTimer(PollInterval)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-w:
	case <-t.C:
	}
	return nil
}

// ctxErr prefers ctx's error: a read failing because ctx ended is the
// follower ending, not a store failure.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// Signal wakes waiters: Wait returns a channel that Notify closes. A
// backend notifies after each commit so its polling followers in the same
// process see new events at once. The zero value is ready to use.
type Signal struct {
	mu sync.Mutex
	ch chan struct{}
}

// Wait returns a channel closed by the next Notify.
func (s *Signal) Wait() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	return s.ch
}

// Notify wakes every current waiter.
func (s *Signal) Notify() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch != nil {
		close(s.ch)
		s.ch = nil
	}
}
