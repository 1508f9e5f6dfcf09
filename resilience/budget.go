package resilience

import (
	"sync"
	"time"
)

// Budget caps retries at a share of first attempts over a sliding window, so
// that retries add at most about Ratio extra load (plus MinPerSecond so that
// low traffic can still retry). Without it, every client retrying during an
// outage multiplies the load on the service that is already failing.
//
// A nil *Budget allows every retry.
type Budget struct {
	clock     Clock
	ratio     float64
	minWindow float64 // retries allowed per window regardless of traffic

	mu  sync.Mutex
	win rolling // [0] first attempts, [1] retries
}

// budgetSlack absorbs float rounding so that, for example, ratio 0.29 over
// 100 first attempts allows 29 retries rather than 28.
const budgetSlack = 1e-6

// NewBudget returns a Budget allowing ratio retries per first attempt plus
// minPerSecond retries per second over window (10s if 0); a nil Clock means
// System and negative rates count as 0.
func NewBudget(c Clock, ratio float64, minPerSecond float64, window time.Duration) *Budget {
	if c == nil {
		c = System
	}
	if window <= 0 {
		window = 10 * time.Second
	}
	ratio = nonNegative(ratio)
	minPerSecond = nonNegative(minPerSecond)
	return &Budget{
		clock:     c,
		ratio:     ratio,
		minWindow: minPerSecond * window.Seconds(),
		win:       newRolling(c.Now(), window),
	}
}

func nonNegative(f float64) float64 {
	if !(f > 0) { // also maps NaN to 0
		return 0
	}
	return f
}

// Request records a first attempt, which earns Ratio retries.
func (b *Budget) Request() {
	if b == nil {
		return
	}
	now := b.clock.Now()
	b.mu.Lock()
	b.win.add(now, 1, 0)
	b.mu.Unlock()
}

// Retry reports whether one more retry fits the budget, and records it if so.
func (b *Budget) Retry() bool {
	if b == nil {
		return true
	}
	now := b.clock.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.win.advance(now)
	allowed := b.ratio*float64(b.win.total[0]) + b.minWindow
	if float64(b.win.total[1]+1) > allowed+budgetSlack {
		return false
	}
	b.win.add(now, 0, 1)
	return true
}
