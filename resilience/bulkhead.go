package resilience

import (
	"errors"
	"sync/atomic"
)

// ErrBulkheadFull is returned by Acquire when every slot is taken; callers
// shed the call rather than queue, so a slow dependency cannot pile up
// goroutines and memory in front of it.
var ErrBulkheadFull = errors.New("bulkhead full")

// Bulkhead caps concurrent calls; it never queues. A nil *Bulkhead admits
// every call.
type Bulkhead struct {
	max      int64 // 0 = no limit
	inFlight atomic.Int64
}

// NewBulkhead returns a Bulkhead admitting at most max concurrent calls; a
// max <= 0 means no limit, matching the zero-means-unset convention of config.
func NewBulkhead(max int) *Bulkhead {
	if max < 0 {
		max = 0
	}
	return &Bulkhead{max: int64(max)}
}

func noopRelease() {}

// Acquire takes a slot, or returns ErrBulkheadFull at once when max calls are
// in flight; release frees the slot and is idempotent.
func (b *Bulkhead) Acquire() (release func(), err error) {
	if b == nil {
		return noopRelease, nil
	}
	if b.max == 0 {
		b.inFlight.Add(1)
	} else {
		// A compare-and-swap loop instead of add-then-undo: a transient
		// overshoot would make concurrent callers fail spuriously.
		for {
			n := b.inFlight.Load()
			if n >= b.max {
				return nil, ErrBulkheadFull
			}
			if b.inFlight.CompareAndSwap(n, n+1) {
				break
			}
		}
	}
	t := &ticket{b: b}
	return t.release, nil
}

// ticket makes release idempotent: a double release would otherwise hand a
// slot to a call beyond the limit.
type ticket struct {
	b        *Bulkhead
	released atomic.Bool
}

func (t *ticket) release() {
	if t.released.CompareAndSwap(false, true) {
		t.b.inFlight.Add(-1)
	}
}

// InFlight returns the number of calls holding a slot.
func (b *Bulkhead) InFlight() int {
	if b == nil {
		return 0
	}
	return int(b.inFlight.Load())
}
