package mesh

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/resilience"
)

func outlierService(t *testing.T, n int) (*Mesh, *resilience.FakeClock, *service, []*instance, *prometheus.Registry) {
	t.Helper()
	clock := resilience.NewFakeClock(time.Unix(1_000_000, 0))
	m, reg := testMesh(clock, nil)
	weights := make([]int, n)
	for i := range weights {
		weights[i] = 1
	}
	s, ins := testService(m, config.Service{Outlier: config.Outlier{
		ConsecutiveFailures: 3, BaseEjection: config.Duration(10 * time.Second),
		MaxEjection: config.Duration(25 * time.Second), MaxEjectedPercent: 50,
	}}, weights...)
	return m, clock, s, ins, reg
}

// fail reports n failed calls of in.
func fail(m *Mesh, s *service, in *instance, n int) {
	for range n {
		m.outcome(s, in, true)
	}
}

// ejectedFor is how much longer in stays out of rotation (0: in rotation).
func ejectedFor(in *instance, now time.Time) time.Duration {
	in.mu.Lock()
	defer in.mu.Unlock()
	return max(in.ejectedUntil.Sub(now), 0)
}

func ejections(t *testing.T, reg *prometheus.Registry, inst string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "junction_mesh_ejections_total" {
			continue
		}
		for _, mt := range mf.GetMetric() {
			for _, l := range mt.GetLabel() {
				if l.GetName() == "instance" && l.GetValue() == inst {
					return mt.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func TestEjectionGrowsAndIsCapped(t *testing.T) {
	m, clock, s, ins, reg := outlierService(t, 4)
	a := ins[0]

	// Failures below the threshold, or broken by a success, eject nothing.
	fail(m, s, a, 2)
	m.outcome(s, a, false)
	fail(m, s, a, 2)
	if d := ejectedFor(a, clock.Now()); d != 0 || !a.available(clock.Now()) {
		t.Fatalf("ejected for %s after failures that were not consecutive", d)
	}

	// Each ejection in a row lasts one base period longer, up to the max.
	for i, want := range []time.Duration{10 * time.Second, 20 * time.Second, 25 * time.Second, 25 * time.Second} {
		// The first time, the first of these (the third in a row after
		// the two above) trips it and the other two land while it is out.
		fail(m, s, a, 3)
		if d := ejectedFor(a, clock.Now()); d != want {
			t.Fatalf("ejection %d lasts %s, want %s", i+1, d, want)
		}
		if a.available(clock.Now()) {
			t.Fatalf("ejection %d: still available", i+1)
		}
		if got := ejections(t, reg, "i0"); got != float64(i+1) {
			t.Errorf("junction_mesh_ejections_total = %v, want %d", got, i+1)
		}
		// Failures reported while it is out (calls admitted before the
		// ejection) do not extend it.
		fail(m, s, a, 5)
		if d := ejectedFor(a, clock.Now()); d != want {
			t.Fatalf("failures during the ejection changed it to %s", d)
		}
		clock.Advance(want - time.Millisecond)
		if a.available(clock.Now()) {
			t.Fatalf("ejection %d ended early", i+1)
		}
		clock.Advance(time.Millisecond)
		if !a.available(clock.Now()) {
			t.Fatalf("ejection %d did not end after %s", i+1, want)
		}
		// A success soon after coming back does not reset the growth.
		m.outcome(s, a, false)
		clock.Advance(time.Second)
	}
}

func TestHealthyPeriodResetsEjectionGrowth(t *testing.T) {
	base := 10 * time.Second
	cases := []struct {
		name  string
		after time.Duration // from the end of the first ejection to a success
		want  time.Duration // length of the next ejection
	}{
		{"success within a base period", base - time.Second, 2 * base},
		{"success a whole base period later", base + time.Second, base},
		{"no success at all", 3 * base, 2 * base},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, clock, s, ins, _ := outlierService(t, 4)
			a := ins[0]
			fail(m, s, a, 3)
			if d := ejectedFor(a, clock.Now()); d != base {
				t.Fatalf("first ejection %s, want %s", d, base)
			}
			clock.Advance(base + c.after)
			if c.name != "no success at all" {
				m.outcome(s, a, false)
			}
			fail(m, s, a, 3)
			if d := ejectedFor(a, clock.Now()); d != c.want {
				t.Errorf("next ejection %s, want %s", d, c.want)
			}
		})
	}
}

func TestMaxEjectedPercent(t *testing.T) {
	cases := []struct {
		instances int
		ejectable int // with max_ejected_percent 50
	}{
		{1, 0}, {2, 1}, {3, 1}, {4, 2}, {5, 2},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%d instances", c.instances), func(t *testing.T) {
			m, clock, s, ins, _ := outlierService(t, c.instances)
			for _, in := range ins {
				fail(m, s, in, 10)
			}
			out := 0
			for _, in := range ins {
				if ejectedFor(in, clock.Now()) > 0 {
					out++
				}
			}
			if out != c.ejectable {
				t.Fatalf("%d of %d instances ejected, want %d", out, c.instances, c.ejectable)
			}
			if c.ejectable == 0 {
				return
			}
			// When the ejections end, the ones that were kept in can go:
			// their failures still count.
			clock.Advance(10 * time.Second)
			kept := ins[c.ejectable:]
			for _, in := range kept {
				m.outcome(s, in, true)
			}
			out = 0
			for _, in := range kept {
				if ejectedFor(in, clock.Now()) > 0 {
					out++
				}
			}
			if out != min(c.ejectable, len(kept)) {
				t.Errorf("after the first ejections ended, %d more were ejected, want %d", out, min(c.ejectable, len(kept)))
			}
		})
	}
}

// Failures that land at the same moment (the calls in flight to an
// instance that just died) eject it once, for the base period, and never
// more of the service than max_ejected_percent allows. A large service
// makes the check of that percentage take a while, so the concurrent
// failures really overlap with it.
func TestConcurrentFailuresEjectOnce(t *testing.T) {
	const size, rounds = 400, 25
	callers := max(2, runtime.GOMAXPROCS(0))
	// run resets every instance, applies before, then lets the callers
	// fail their instances at the same moment.
	run := func(m *Mesh, s *service, ins []*instance, failing func(i int) *instance, before func()) {
		for _, in := range ins {
			in.mu.Lock()
			in.failures, in.ejections, in.ejectedUntil = 0, 0, time.Time{}
			in.mu.Unlock()
		}
		if before != nil {
			before()
		}
		var ready atomic.Int32
		var wg sync.WaitGroup
		for i := range callers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// Start together, one caller per processor.
				ready.Add(1)
				for ready.Load() < int32(callers) {
					runtime.Gosched()
				}
				fail(m, s, failing(i), 30)
			}()
		}
		wg.Wait()
	}

	t.Run("one instance", func(t *testing.T) {
		m, clock, s, ins, reg := outlierService(t, size)
		for round := range rounds {
			run(m, s, ins, func(int) *instance { return ins[0] }, nil)
			if d := ejectedFor(ins[0], clock.Now()); d != 10*time.Second {
				t.Fatalf("round %d: first ejection lasts %s, want the base 10s", round, d)
			}
			if n := ejections(t, reg, "i0"); n != float64(round+1) {
				t.Fatalf("round %d: %v ejections counted in all, want %d", round, n, round+1)
			}
		}
	})

	t.Run("max_ejected_percent", func(t *testing.T) {
		m, clock, s, ins, _ := outlierService(t, size)
		for round := range rounds {
			// One short of the limit (half of the service) is out already;
			// then several other instances fail at once.
			run(m, s, ins, func(i int) *instance { return ins[size-1-i] }, func() {
				for _, in := range ins[:size/2-1] {
					in.ejectedUntil = clock.Now().Add(time.Minute)
				}
			})
			out := 0
			for _, in := range ins {
				if ejectedFor(in, clock.Now()) > 0 {
					out++
				}
			}
			if out != size/2 {
				t.Fatalf("round %d: %d of %d instances ejected with max_ejected_percent 50, want %d", round, out, size, size/2)
			}
		}
	})
}
