package mesh

import (
	"fmt"
	"log/slog"
	"math"
	"net/url"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/resilience"
)

// testMesh is a Mesh with just what the balancers, candidates and passive
// ejection use: a clock, metrics and a logger. It has no registry.
func testMesh(clock resilience.Clock, policies map[string]config.Policy) (*Mesh, *prometheus.Registry) {
	reg := prometheus.NewRegistry()
	return &Mesh{
		log: slog.New(slog.DiscardHandler), clock: clock, metrics: newMetrics(reg),
		policies: policies, services: map[string]*service{},
	}, reg
}

// testService declares a service with one static instance per weight,
// named i0, i1, ...
func testService(m *Mesh, cfg config.Service, weights ...int) (*service, []*instance) {
	s := m.newService("svc", cfg, true)
	ins := make([]*instance, len(weights))
	for i, w := range weights {
		id := fmt.Sprintf("i%d", i)
		ins[i], _ = m.upsert(s, id, "http://"+id+".test:80", w, SourceStatic, false, nil)
	}
	return s, ins
}

// looseInstances builds instances outside any service, for the balancers.
func looseInstances(weights ...int) []*instance {
	out := make([]*instance, len(weights))
	for i, w := range weights {
		raw := fmt.Sprintf("http://i%d.test:80", i)
		u, _ := url.Parse(raw)
		out[i] = newInstance(fmt.Sprintf("i%d", i), raw, u, w, SourceStatic, nil)
	}
	return out
}

func TestRoundRobinIsExactAndSmooth(t *testing.T) {
	for _, weights := range [][]int{{1, 1}, {1, 3}, {1, 2, 3}, {5, 1, 1}, {2, 2, 2, 2}} {
		t.Run(fmt.Sprint(weights), func(t *testing.T) {
			ins := looseInstances(weights...)
			total := 0
			for _, w := range weights {
				total += w
			}
			rounds := 100
			rr := &roundRobin{}
			seq := make([]*instance, 0, rounds*total)
			for range rounds * total {
				seq = append(seq, rr.pick(ins, "", time.Time{}))
			}
			count := map[*instance]int{}
			for _, in := range seq {
				count[in]++
			}
			for i, in := range ins {
				if want := rounds * weights[i]; count[in] != want {
					t.Errorf("%s (weight %d) picked %d times of %d, want %d", in.id, weights[i], count[in], len(seq), want)
				}
			}
			// Every window of one full cycle holds each instance exactly
			// its weight: the schedule does not drift.
			for start := 0; start+total <= len(seq); start++ {
				win := map[*instance]int{}
				for _, in := range seq[start : start+total] {
					win[in]++
				}
				for i, in := range ins {
					if win[in] != weights[i] {
						t.Fatalf("picks %d..%d hold %s %d times, want %d", start, start+total, in.id, win[in], weights[i])
					}
				}
			}
			// Smooth: runs of one instance are at most one longer than an
			// even interleave needs (ceil(w/(total-w))), where plain
			// weighted round robin would send w in a row.
			for i, in := range ins {
				w := weights[i]
				limit := len(seq)
				if w < total {
					limit = int(math.Ceil(float64(w)/float64(total-w))) + 1
				}
				run, longest := 0, 0
				for _, got := range seq {
					if got == in {
						run++
						longest = max(longest, run)
					} else {
						run = 0
					}
				}
				if longest > limit {
					t.Errorf("%s (weight %d of %d) picked %d times in a row, want at most %d", in.id, w, total, longest, limit)
				}
			}
		})
	}
}

func TestRoundRobinSkipsWhatIsNotACandidate(t *testing.T) {
	ins := looseInstances(1, 1, 1)
	rr := &roundRobin{}
	if rr.pick(nil, "", time.Time{}) != nil {
		t.Fatal("a pick among no candidates returned an instance")
	}
	for range 30 {
		if got := rr.pick(ins[1:], "", time.Time{}); got == ins[0] {
			t.Fatal("picked an instance that is not a candidate")
		}
	}
}

func TestP2CPrefersTheCheaperInstance(t *testing.T) {
	now := time.Unix(1000, 0)
	cases := []struct {
		name     string
		weights  []int
		setup    func([]*instance)
		min, max []float64 // share bounds per instance
	}{
		{
			name: "equal cost spreads evenly", weights: []int{1, 1, 1},
			setup: func([]*instance) {},
			min:   []float64{0.28, 0.28, 0.28}, max: []float64{0.39, 0.39, 0.39},
		},
		{
			name: "many calls in flight on one", weights: []int{1, 1, 1},
			setup: func(ins []*instance) { ins[0].inflight.Store(50) },
			min:   []float64{0, 0.4, 0.4}, max: []float64{0.02, 0.6, 0.6},
		},
		{
			name: "slow one", weights: []int{1, 1, 1},
			setup: func(ins []*instance) {
				ins[2].observe(now, 200*time.Millisecond)
				ins[0].observe(now, time.Millisecond)
				ins[1].observe(now, time.Millisecond)
			},
			min: []float64{0.4, 0.4, 0}, max: []float64{0.6, 0.6, 0.02},
		},
		{
			// The same cost per unit of weight (in-flight calls in
			// proportion): the draw follows the weights.
			name: "weights", weights: []int{1, 3},
			setup: func(ins []*instance) { ins[1].inflight.Store(2) },
			min:   []float64{0.15, 0.68}, max: []float64{0.32, 0.85},
		},
	}
	const n = 6000
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ins := looseInstances(c.weights...)
			c.setup(ins)
			count := map[*instance]int{}
			for range n {
				count[p2c{}.pick(ins, "", now)]++
			}
			for i, in := range ins {
				share := float64(count[in]) / n
				if share < c.min[i] || share > c.max[i] {
					t.Errorf("%s got %.3f of the picks, want %.2f..%.2f", in.id, share, c.min[i], c.max[i])
				}
			}
		})
	}
	one := looseInstances(1)
	if got := (p2c{}).pick(one, "", now); got != one[0] {
		t.Errorf("a single candidate was not picked")
	}
	if got := (p2c{}).pick(nil, "", now); got != nil {
		t.Errorf("no candidates gave %v", got)
	}
}

// owners maps each key to the instance the ring picks among cs.
func owners(r *hashRing, cs []*instance, keys []string) map[string]*instance {
	out := make(map[string]*instance, len(keys))
	for _, k := range keys {
		out[k] = r.pick(cs, k, time.Time{})
	}
	return out
}

func ringOf(ins []*instance) *hashRing {
	r := &hashRing{fallback: p2c{}}
	r.rebuild(ins)
	return r
}

func TestHashRing(t *testing.T) {
	keys := make([]string, 3000)
	for i := range keys {
		keys[i] = fmt.Sprintf("user-%d", i)
	}
	share := func(own map[string]*instance, in *instance) float64 {
		n := 0
		for _, o := range own {
			if o == in {
				n++
			}
		}
		return float64(n) / float64(len(own))
	}

	t.Run("stable and spread", func(t *testing.T) {
		ins := looseInstances(1, 1, 1)
		r := ringOf(ins)
		first := owners(r, ins, keys)
		// A ring built again from the same instances agrees.
		twin := looseInstances(1, 1, 1)
		again := owners(ringOf(twin), twin, keys)
		for k, o := range first {
			if again[k].id != o.id {
				t.Fatalf("key %s went to %s, then to %s on an identical ring", k, o.id, again[k].id)
			}
		}
		for k, o := range first {
			if got := r.pick(ins, k, time.Time{}); got != o {
				t.Fatalf("key %s went to %s, then to %s", k, o.id, got.id)
			}
		}
		for _, in := range ins {
			if s := share(first, in); s < 0.25 || s > 0.42 {
				t.Errorf("%s owns %.3f of the keys, want about a third", in.id, s)
			}
		}
	})

	t.Run("removing an instance moves only its keys", func(t *testing.T) {
		ins := looseInstances(1, 1, 1, 1)
		before := owners(ringOf(ins), ins, keys)
		gone := ins[1]
		rest := []*instance{ins[0], ins[2], ins[3]}
		after := owners(ringOf(rest), rest, keys)
		moved := 0
		for _, k := range keys {
			switch {
			case before[k] == gone:
				moved++
				if after[k] == gone {
					t.Fatalf("key %s still goes to the removed instance", k)
				}
			case after[k] != before[k]:
				t.Fatalf("key %s moved from %s to %s although its owner stayed", k, before[k].id, after[k].id)
			}
		}
		if f := float64(moved) / float64(len(keys)); f < 0.15 || f > 0.35 {
			t.Errorf("%.3f of the keys moved, want about a quarter", f)
		}
		// An owner that is only unavailable (not a candidate) hands its
		// keys to the same instances as if it had left the ring, and the
		// others keep theirs.
		r := ringOf(ins)
		out := owners(r, rest, keys)
		for _, k := range keys {
			if out[k] != after[k] {
				t.Fatalf("key %s: %s while its owner is out, %s with the owner removed", k, out[k].id, after[k].id)
			}
		}
		// Back in rotation, it gets its keys back.
		for k, o := range owners(r, ins, keys) {
			if o != before[k] {
				t.Fatalf("key %s went to %s after its owner came back, want %s", k, o.id, before[k].id)
			}
		}
	})

	t.Run("weights", func(t *testing.T) {
		ins := looseInstances(1, 1, 2)
		own := owners(ringOf(ins), ins, keys)
		if s := share(own, ins[2]); s < 0.40 || s > 0.60 {
			t.Errorf("the weight-2 instance owns %.3f of the keys, want about half", s)
		}
	})

	t.Run("no key falls back", func(t *testing.T) {
		ins := looseInstances(1, 1)
		r := ringOf(ins)
		seen := map[*instance]bool{}
		for range 200 {
			seen[r.pick(ins, "", time.Time{})] = true
		}
		if len(seen) != 2 {
			t.Errorf("calls without a key went to %d instances, want both (power of two choices)", len(seen))
		}
		if got := ringOf(nil).pick(ins, "k", time.Time{}); got == nil {
			t.Errorf("an empty ring picked nothing among candidates")
		}
	})
}

func TestCandidates(t *testing.T) {
	clock := resilience.NewFakeClock(time.Unix(1_000_000, 0))
	pol := config.Policy{CircuitBreaker: &config.CircuitBreaker{
		FailureRatio: 0.5, MinRequests: 1, Window: config.Duration(10 * time.Second), OpenFor: config.Duration(time.Minute), HalfOpenRequests: 1}}
	ids := func(cs []*instance) []string {
		out := []string{}
		for _, c := range cs {
			out = append(out, c.id)
		}
		return out
	}
	trip := func(t *testing.T, in *instance) {
		t.Helper()
		done, err := in.breaker.Allow()
		if err != nil {
			t.Fatal(err)
		}
		done(false)
		if in.breaker.State() != resilience.StateOpen {
			t.Fatalf("breaker of %s did not open", in.id)
		}
	}
	eject := func(in *instance) { in.ejectedUntil = clock.Now().Add(time.Minute) }
	unhealthy := func(in *instance) { in.health.Store(HealthUnhealthy) }

	cases := []struct {
		name  string
		setup func(t *testing.T, ins []*instance)
		tried []int
		want  []string
	}{
		{"all available", nil, nil, []string{"i0", "i1", "i2"}},
		{"unhealthy and ejected excluded", func(t *testing.T, ins []*instance) {
			unhealthy(ins[0])
			eject(ins[1])
		}, nil, []string{"i2"}},
		{"open breaker excluded", func(t *testing.T, ins []*instance) { trip(t, ins[2]) }, nil, []string{"i0", "i1"}},
		{"tried excluded", nil, []int{0}, []string{"i1", "i2"}},
		{"tried and unavailable excluded", func(t *testing.T, ins []*instance) { unhealthy(ins[2]) }, []int{0}, []string{"i1"}},
		{"a retry goes back to a tried instance when nothing else is available", func(t *testing.T, ins []*instance) {
			unhealthy(ins[1])
			eject(ins[2])
		}, []int{0}, []string{"i0"}},
		{"a retry never goes to an unavailable instance", func(t *testing.T, ins []*instance) {
			unhealthy(ins[0])
			unhealthy(ins[1])
			eject(ins[2])
		}, []int{0}, []string{}},
		{"panic mode: none available on the first try", func(t *testing.T, ins []*instance) {
			unhealthy(ins[0])
			unhealthy(ins[1])
			eject(ins[2])
		}, nil, []string{"i0", "i1", "i2"}},
		{"panic mode leaves out open breakers", func(t *testing.T, ins []*instance) {
			unhealthy(ins[0])
			trip(t, ins[1])
			eject(ins[2])
		}, nil, []string{"i0", "i2"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, _ := testMesh(clock, map[string]config.Policy{"default": pol})
			s, ins := testService(m, config.Service{}, 1, 1, 1)
			if c.setup != nil {
				c.setup(t, ins)
			}
			var tried []*instance
			for _, i := range c.tried {
				tried = append(tried, ins[i])
			}
			got := ids(s.candidates(clock.Now(), tried, nil))
			if fmt.Sprint(got) != fmt.Sprint(c.want) {
				t.Errorf("candidates = %v, want %v", got, c.want)
			}
		})
	}
}
