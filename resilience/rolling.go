package resilience

import "time"

// buckets is the resolution of every sliding window: a window forgets its
// oldest tenth at a time, which bounds memory and per-call work.
const buckets = 10

// rolling counts two quantities over a bucketed sliding window. It is not
// safe for concurrent use; its owner holds a lock.
type rolling struct {
	origin time.Time
	width  time.Duration
	cur    int64 // index of the newest bucket since origin; never decreases
	counts [buckets][2]int64
	total  [2]int64
}

func newRolling(now time.Time, window time.Duration) rolling {
	return rolling{origin: now, width: max(window/buckets, 1)}
}

// advance retires the buckets that fell out of the window. A clock that steps
// backwards keeps counting into the newest bucket rather than corrupting it.
func (r *rolling) advance(now time.Time) {
	idx := int64(now.Sub(r.origin) / r.width)
	if idx <= r.cur {
		return
	}
	if idx-r.cur >= buckets {
		r.counts = [buckets][2]int64{}
		r.total = [2]int64{}
	} else {
		for i := r.cur + 1; i <= idx; i++ {
			c := &r.counts[i%buckets]
			r.total[0] -= c[0]
			r.total[1] -= c[1]
			*c = [2]int64{}
		}
	}
	r.cur = idx
}

func (r *rolling) add(now time.Time, a, b int64) {
	r.advance(now)
	c := &r.counts[r.cur%buckets]
	c[0] += a
	c[1] += b
	r.total[0] += a
	r.total[1] += b
}
