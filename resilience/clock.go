package resilience

import (
	"context"
	"sync"
	"time"
)

// Clock is the time source of every primitive here, injected so that tests
// control windows, open periods and backoff without real waiting.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
	// Sleep waits d, or until ctx ends (then returns ctx.Err()).
	Sleep(ctx context.Context, d time.Duration) error
}

// System is the real-time Clock, used wherever no Clock is injected.
var System Clock = systemClock{}

var (
	_ Clock = systemClock{}
	_ Clock = (*FakeClock)(nil)
)

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// Sleep uses a timer rather than time.Sleep so that a cancelled ctx releases
// the caller at once.
func (systemClock) Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// FakeClock is a manual clock for tests: time moves only with Advance.
type FakeClock struct {
	mu       sync.Mutex
	now      time.Time
	sleepers []*fakeSleeper
}

type fakeSleeper struct {
	until time.Time
	wake  chan struct{}
}

// NewFakeClock returns a FakeClock that reads start until it is advanced.
func NewFakeClock(start time.Time) *FakeClock {
	return &FakeClock{now: start}
}

// Now returns the fake time.
func (c *FakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Sleep blocks until Advance moves time to now+d or beyond, or ctx ends; a
// d <= 0 (or an already ended ctx) returns ctx.Err() at once, so it never
// blocks a test that forgot to advance.
func (c *FakeClock) Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil || d <= 0 {
		return err
	}
	s := &fakeSleeper{wake: make(chan struct{})}
	c.mu.Lock()
	s.until = c.now.Add(d)
	c.sleepers = append(c.sleepers, s)
	c.mu.Unlock()

	select {
	case <-s.wake:
		return nil
	case <-ctx.Done():
		c.mu.Lock()
		for i, o := range c.sleepers {
			if o == s {
				c.sleepers = append(c.sleepers[:i], c.sleepers[i+1:]...)
				break
			}
		}
		c.mu.Unlock()
		return ctx.Err()
	}
}

// Advance moves time by d and wakes every sleeper that is then due; the
// woken sleepers are no longer counted by Sleepers when Advance returns.
func (c *FakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.sleepers[:0]
	for _, s := range c.sleepers {
		if c.now.Before(s.until) {
			kept = append(kept, s)
		} else {
			close(s.wake)
		}
	}
	clear(c.sleepers[len(kept):])
	c.sleepers = kept
}

// Sleepers reports how many goroutines are blocked in Sleep, so a test can
// wait for one to park before advancing instead of sleeping for real.
func (c *FakeClock) Sleepers() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.sleepers)
}
