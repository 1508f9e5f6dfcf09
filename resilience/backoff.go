package resilience

import (
	"math"
	"math/rand/v2"
	"time"
)

// Backoff is exponential backoff with jitter; jitter spreads retries from
// many clients so that they do not hit a recovering service in lockstep.
type Backoff struct {
	Base   time.Duration  // delay before the first retry
	Max    time.Duration  // cap (0 = no cap)
	Jitter float64        // 0..1: the share of each delay that is randomised; 0.5 means delay in [d/2, d]
	Rand   func() float64 // [0,1) source; nil = math/rand/v2
}

// Delay returns the wait before retry number n (n >= 1; smaller n counts as
// 1): Base*2^(n-1), capped at Max, then jitter applied; it is never negative
// and saturates instead of overflowing for large n.
func (b Backoff) Delay(n int) time.Duration {
	if b.Base <= 0 {
		return 0
	}
	if n < 1 {
		n = 1
	}
	limit := time.Duration(math.MaxInt64)
	if b.Max > 0 {
		limit = b.Max
	}
	// Base<<shift exceeds limit exactly when Base > limit>>shift, which
	// decides the cap without ever computing an overflowing product.
	d := b.Base
	shift := n - 1
	if shift >= 63 || d > limit>>uint(shift) {
		d = limit
	} else {
		d <<= uint(shift)
	}

	j := b.Jitter
	if !(j > 0) { // also rejects NaN
		return d
	}
	j = min(j, 1)
	rnd := b.Rand
	if rnd == nil {
		rnd = rand.Float64
	}
	r := rnd()
	if !(r > 0) {
		r = 0
	} else if r >= 1 {
		r = math.Nextafter(1, 0)
	}
	// j*r < 1, so the cut stays below d (which is at most 2^63-1) and the
	// float conversion cannot overflow; the clamps guard rounding only.
	cut := time.Duration(float64(d) * j * r)
	cut = max(0, min(cut, d))
	return d - cut
}
