package mesh

import (
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"
)

// balancer picks one instance among candidates, all available and not yet
// tried by this call. key is the consistent-hash key ("" when none).
type balancer interface {
	pick(candidates []*instance, key string, now time.Time) *instance
}

func newBalancer(kind string) balancer {
	switch kind {
	case "round_robin":
		return &roundRobin{}
	case "consistent_hash":
		return &hashRing{fallback: p2c{}}
	}
	return p2c{}
}

// p2c is power of two choices: draw two instances at random (by weight)
// and take the cheaper by in-flight requests and latency. It avoids both
// the herd behaviour of "least loaded" with stale data and the blindness
// of round robin to a slow instance.
type p2c struct{}

func (p2c) pick(cs []*instance, _ string, now time.Time) *instance {
	switch len(cs) {
	case 0:
		return nil
	case 1:
		return cs[0]
	}
	a := weightedRandom(cs, -1)
	b := weightedRandom(cs, a)
	if cs[b].cost(now) < cs[a].cost(now) {
		return cs[b]
	}
	return cs[a]
}

// weightedRandom returns an index drawn by weight, never skip.
func weightedRandom(cs []*instance, skip int) int {
	total := 0
	for i, c := range cs {
		if i != skip {
			total += c.weight
		}
	}
	r := rand.IntN(total)
	for i, c := range cs {
		if i == skip {
			continue
		}
		if r -= c.weight; r < 0 {
			return i
		}
	}
	return len(cs) - 1
}

// roundRobin is smooth weighted round robin (as in nginx): weights are
// honoured without bursts to the heaviest instance.
type roundRobin struct{ mu sync.Mutex }

func (r *roundRobin) pick(cs []*instance, _ string, _ time.Time) *instance {
	if len(cs) == 0 {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	total := 0
	var best *instance
	for _, c := range cs {
		c.swrr += c.weight
		total += c.weight
		if best == nil || c.swrr > best.swrr {
			best = c
		}
	}
	best.swrr -= total
	return best
}

// hashRing is consistent hashing with virtual nodes: a key keeps going to
// the same instance while it is available, and adding or removing an
// instance moves only about 1/n of the keys. A call without a key falls
// back to power of two choices.
type hashRing struct {
	fallback balancer
	mu       sync.Mutex
	members  []*instance // the instance set the ring was built from
	points   []ringPoint
}

type ringPoint struct {
	hash uint64
	in   *instance
}

// vnodes per unit of weight: enough for an even spread at small n.
const vnodes = 160

// rebuild makes the ring for all instances of the service (available or
// not, so that a key's owner does not change while it is briefly out).
func (h *hashRing) rebuild(all []*instance) {
	var pts []ringPoint
	for _, in := range all {
		for v := range vnodes * in.weight {
			pts = append(pts, ringPoint{xxhash.Sum64String(in.id + "#" + strconv.Itoa(v)), in})
		}
	}
	slices.SortFunc(pts, func(a, b ringPoint) int {
		switch {
		case a.hash < b.hash:
			return -1
		case a.hash > b.hash:
			return 1
		}
		return 0
	})
	h.mu.Lock()
	h.members, h.points = all, pts
	h.mu.Unlock()
}

func (h *hashRing) pick(cs []*instance, key string, now time.Time) *instance {
	if key == "" || len(cs) == 0 {
		return h.fallback.pick(cs, key, now)
	}
	h.mu.Lock()
	pts := h.points
	h.mu.Unlock()
	if len(pts) == 0 {
		return h.fallback.pick(cs, key, now)
	}
	hv := xxhash.Sum64String(key)
	i, _ := slices.BinarySearchFunc(pts, hv, func(p ringPoint, t uint64) int {
		switch {
		case p.hash < t:
			return -1
		case p.hash > t:
			return 1
		}
		return 0
	})
	// Walk clockwise to the first candidate: an unavailable owner hands
	// its keys to its ring successor, and gets them back when it returns.
	for n := 0; n < len(pts); n++ {
		p := pts[(i+n)%len(pts)]
		if slices.Contains(cs, p.in) {
			return p.in
		}
	}
	return h.fallback.pick(cs, key, now)
}
