package resilience

import (
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// call runs one call through b with the given outcome and reports whether
// it was allowed.
func call(b *Breaker, success bool) bool {
	done, err := b.Allow()
	if err != nil {
		return false
	}
	done(success)
	return true
}

func outcomes(b *Breaker, pattern string) {
	for _, r := range pattern {
		call(b, r == 'S')
	}
}

func openWait(t *testing.T, b *Breaker) time.Duration {
	t.Helper()
	done, err := b.Allow()
	if err == nil {
		done(true)
		t.Fatalf("Allow succeeded on a %v breaker", b.State())
	}
	if !errors.Is(err, ErrOpen) {
		t.Fatalf("err = %v, want ErrOpen", err)
	}
	var oe *OpenError
	if !errors.As(err, &oe) {
		t.Fatalf("err = %T, want *OpenError", err)
	}
	if done != nil {
		t.Fatal("rejected Allow returned a done func")
	}
	return oe.RetryAfter
}

func TestStateString(t *testing.T) {
	for s, want := range map[State]string{StateClosed: "closed", StateHalfOpen: "half_open", StateOpen: "open", State(9): "State(9)"} {
		if got := s.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", int(s), got, want)
		}
	}
}

func TestBreakerTrips(t *testing.T) {
	tests := []struct {
		name     string
		settings BreakerSettings
		pattern  string // S success, F failure
		want     State
	}{
		{"below min requests", BreakerSettings{MinRequests: 5}, "FFFF", StateClosed},
		{"at min requests", BreakerSettings{MinRequests: 5}, "FFFFF", StateOpen},
		{"ratio reached", BreakerSettings{MinRequests: 4, FailureRatio: 0.5}, "SSFF", StateOpen},
		{"ratio not reached", BreakerSettings{MinRequests: 4, FailureRatio: 0.5}, "SSSF", StateClosed},
		{"success completes min", BreakerSettings{MinRequests: 4, FailureRatio: 0.5}, "FFS", StateClosed},
		{"success completes min and trips", BreakerSettings{MinRequests: 4, FailureRatio: 0.5}, "FFSS", StateOpen},
		{"exact tenth", BreakerSettings{MinRequests: 30, FailureRatio: 0.1}, "FFF" + strings.Repeat("S", 27), StateOpen},
		{"just under tenth", BreakerSettings{MinRequests: 31, FailureRatio: 0.1}, "FFF" + strings.Repeat("S", 27) + "S", StateClosed},
		{"all successes", BreakerSettings{MinRequests: 2, FailureRatio: 0.01}, "SSSSSSSS", StateClosed},
		{"defaults: 19 failures", BreakerSettings{}, strings.Repeat("F", 19), StateClosed},
		{"defaults: 20 failures", BreakerSettings{}, strings.Repeat("F", 20), StateOpen},
		{"defaults: half of 20", BreakerSettings{}, strings.Repeat("S", 10) + strings.Repeat("F", 10), StateOpen},
		{"ratio above one never trips", BreakerSettings{MinRequests: 1, FailureRatio: 1.5}, "FFFF", StateClosed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := NewBreaker(tt.settings, NewFakeClock(epoch))
			outcomes(b, tt.pattern)
			if got := b.State(); got != tt.want {
				t.Fatalf("state = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestBreakerOpenRejects(t *testing.T) {
	c := NewFakeClock(epoch)
	b := NewBreaker(BreakerSettings{MinRequests: 2, OpenFor: 30 * time.Second}, c)
	outcomes(b, "FF")
	steps := []struct {
		advance time.Duration
		wait    time.Duration
	}{
		{0, 30 * time.Second},
		{10 * time.Second, 20 * time.Second},
		{19*time.Second + 999*time.Millisecond, time.Millisecond},
	}
	for i, s := range steps {
		c.Advance(s.advance)
		if got := b.State(); got != StateOpen {
			t.Fatalf("step %d: state = %v", i, got)
		}
		if got := openWait(t, b); got != s.wait {
			t.Fatalf("step %d: RetryAfter = %v, want %v", i, got, s.wait)
		}
	}
	c.Advance(time.Millisecond)
	if got := b.State(); got != StateHalfOpen {
		t.Fatalf("after OpenFor: state = %v, want half_open", got)
	}
}

func TestBreakerOpenErrorMessage(t *testing.T) {
	err := error(&OpenError{RetryAfter: 2 * time.Second})
	if got, want := err.Error(), "circuit breaker open, retry after 2s"; got != want {
		t.Fatalf("Error() = %q, want %q", got, want)
	}
	if errors.Is(err, ErrBulkheadFull) {
		t.Fatal("OpenError matches an unrelated sentinel")
	}
}

func TestBreakerClockBackwardsClampsRetryAfter(t *testing.T) {
	c := NewFakeClock(epoch)
	b := NewBreaker(BreakerSettings{MinRequests: 1, OpenFor: time.Second}, c)
	outcomes(b, "F")
	c.Advance(-time.Hour)
	if got := openWait(t, b); got != time.Second {
		t.Fatalf("RetryAfter = %v, want at most OpenFor", got)
	}
}

func TestBreakerHalfOpen(t *testing.T) {
	tests := []struct {
		name      string
		probes    int    // HalfOpenRequests
		pattern   string // reports, in probe order: S success, F failure
		wantState State
	}{
		{"single success closes", 1, "S", StateClosed},
		{"single failure reopens", 1, "F", StateOpen},
		{"all successes close", 3, "SSS", StateClosed},
		{"two of three", 3, "SS", StateHalfOpen},
		{"last failure reopens", 3, "SSF", StateOpen},
		{"first failure reopens", 3, "F", StateOpen},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewFakeClock(epoch)
			b := NewBreaker(BreakerSettings{MinRequests: 1, OpenFor: time.Minute, HalfOpenRequests: tt.probes}, c)
			outcomes(b, "F")
			c.Advance(time.Minute)
			if got := b.State(); got != StateHalfOpen {
				t.Fatalf("state = %v, want half_open", got)
			}
			// Take every probe slot before reporting, as concurrent callers would.
			var dones []func(bool)
			for range tt.probes {
				done, err := b.Allow()
				if err != nil {
					t.Fatalf("probe rejected: %v", err)
				}
				dones = append(dones, done)
			}
			if got := openWait(t, b); got <= 0 || got > time.Second {
				t.Fatalf("RetryAfter with probes taken = %v, want small positive", got)
			}
			for i, r := range tt.pattern {
				dones[i](r == 'S')
			}
			if got := b.State(); got != tt.wantState {
				t.Fatalf("state = %v, want %v", got, tt.wantState)
			}
			if tt.wantState == StateOpen {
				if got := openWait(t, b); got != time.Minute {
					t.Fatalf("reopened RetryAfter = %v, want a full OpenFor", got)
				}
			}
		})
	}
}

func TestBreakerHalfOpenShortOpenFor(t *testing.T) {
	c := NewFakeClock(epoch)
	b := NewBreaker(BreakerSettings{MinRequests: 1, OpenFor: 100 * time.Millisecond}, c)
	outcomes(b, "F")
	c.Advance(100 * time.Millisecond)
	if _, err := b.Allow(); err != nil {
		t.Fatal(err)
	}
	c.Advance(40 * time.Millisecond)
	if got := openWait(t, b); got != 60*time.Millisecond {
		t.Fatalf("RetryAfter = %v, want the time left on the probe", got)
	}
}

func TestBreakerLostProbe(t *testing.T) {
	c := NewFakeClock(epoch)
	b := NewBreaker(BreakerSettings{MinRequests: 1, OpenFor: 10 * time.Second}, c)
	outcomes(b, "F")
	c.Advance(10 * time.Second)
	lost, err := b.Allow()
	if err != nil {
		t.Fatal(err)
	}
	c.Advance(9 * time.Second)
	openWait(t, b)
	c.Advance(time.Second)
	done, err := b.Allow()
	if err != nil {
		t.Fatalf("probe after the lost one's lease: %v", err)
	}
	lost(false) // late report from the lost probe: ignored
	if got := b.State(); got != StateHalfOpen {
		t.Fatalf("late lost probe changed state to %v", got)
	}
	done(true)
	if got := b.State(); got != StateClosed {
		t.Fatalf("state = %v, want closed", got)
	}
}

func TestBreakerStaleDone(t *testing.T) {
	c := NewFakeClock(epoch)
	b := NewBreaker(BreakerSettings{MinRequests: 2, FailureRatio: 0.5, OpenFor: time.Second}, c)

	// Calls admitted while closed, finishing after the breaker moved on.
	var stale []func(bool)
	for range 4 {
		done, err := b.Allow()
		if err != nil {
			t.Fatal(err)
		}
		stale = append(stale, done)
	}
	outcomes(b, "FF")
	if b.State() != StateOpen {
		t.Fatal("did not trip")
	}
	stale[0](true) // while open
	c.Advance(time.Second)
	if b.State() != StateHalfOpen {
		t.Fatal("not half-open")
	}
	stale[1](true) // while half-open: must not count as the probe's success
	if b.State() != StateHalfOpen {
		t.Fatal("stale success closed the breaker")
	}
	done, err := b.Allow()
	if err != nil {
		t.Fatal(err)
	}
	stale[2](false) // must not re-open it either
	if b.State() != StateHalfOpen {
		t.Fatal("stale failure reopened the breaker")
	}
	done(true)
	if b.State() != StateClosed {
		t.Fatal("probe success did not close")
	}
	// New closed generation: old failures must not count toward it.
	stale[3](false)
	done(false) // the probe's done, reported twice by a buggy caller, is stale too
	outcomes(b, "S")
	if b.State() != StateClosed {
		t.Fatal("stale failures counted in the new generation")
	}
	outcomes(b, "F") // one real failure of two: trips at 0.5
	if b.State() != StateOpen {
		t.Fatal("new generation does not count its own outcomes")
	}
}

func TestBreakerWindowForgets(t *testing.T) {
	tests := []struct {
		name    string
		gap     time.Duration
		tripped bool
	}{
		{"inside the window", 5 * time.Second, true},
		{"bucket still held", 9*time.Second + 999*time.Millisecond, true},
		{"after the window", 10 * time.Second, false},
		{"long after", time.Hour, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewFakeClock(epoch)
			b := NewBreaker(BreakerSettings{MinRequests: 4, FailureRatio: 0.5, Window: 10 * time.Second}, c)
			outcomes(b, "FFF")
			c.Advance(tt.gap)
			outcomes(b, "S")
			if got := b.State() == StateOpen; got != tt.tripped {
				t.Fatalf("tripped = %v, want %v", got, tt.tripped)
			}
			if !tt.tripped {
				outcomes(b, "SSF")
				if b.State() != StateClosed {
					t.Fatal("forgotten failures still counted")
				}
			}
		})
	}
}

func TestBreakerReclosedForgetsWindow(t *testing.T) {
	c := NewFakeClock(epoch)
	b := NewBreaker(BreakerSettings{MinRequests: 4, FailureRatio: 0.5, OpenFor: time.Second}, c)
	outcomes(b, "SSFF")
	c.Advance(time.Second)
	outcomes(b, "S")
	if b.State() != StateClosed {
		t.Fatal("not closed")
	}
	outcomes(b, "FFF")
	if b.State() != StateClosed {
		t.Fatal("failures from before the open period were still counted")
	}
}

func TestBreakerOnStateChange(t *testing.T) {
	type ev struct{ from, to State }
	var got []ev
	c := NewFakeClock(epoch)
	b := NewBreaker(BreakerSettings{
		MinRequests: 2, OpenFor: time.Second, HalfOpenRequests: 2,
		OnStateChange: func(from, to State) { got = append(got, ev{from, to}) },
	}, c)
	outcomes(b, "SS")      // no change
	outcomes(b, "FF")      // closed -> open
	c.Advance(time.Second) // lazily evaluated: nothing yet
	if len(got) != 1 {
		t.Fatalf("events before evaluation: %v", got)
	}
	b.State()         // open -> half_open
	outcomes(b, "SF") // half_open -> open
	c.Advance(time.Second)
	outcomes(b, "SS") // open -> half_open (via Allow), half_open -> closed
	want := []ev{
		{StateClosed, StateOpen},
		{StateOpen, StateHalfOpen},
		{StateHalfOpen, StateOpen},
		{StateOpen, StateHalfOpen},
		{StateHalfOpen, StateClosed},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("events = %v, want %v", got, want)
	}
}

func TestBreakerOnStateChangeReentrant(t *testing.T) {
	c := NewFakeClock(epoch)
	var b *Breaker
	var got []State
	b = NewBreaker(BreakerSettings{
		MinRequests: 1, OpenFor: time.Second,
		OnStateChange: func(from, to State) {
			got = append(got, to)
			// The callback may use the breaker; the half-open change it
			// causes here is reported after this call returns.
			if to == StateOpen {
				c.Advance(time.Second)
				if s := b.State(); s != StateHalfOpen {
					t.Errorf("State inside callback = %v", s)
				}
				if _, err := b.Allow(); err != nil {
					t.Errorf("Allow inside callback: %v", err)
				}
			}
		},
	}, c)
	outcomes(b, "F")
	if want := []State{StateOpen, StateHalfOpen}; !slices.Equal(got, want) {
		t.Fatalf("events = %v, want %v", got, want)
	}
}

func TestBreakerOnStateChangePanic(t *testing.T) {
	c := NewFakeClock(epoch)
	calls := 0
	b := NewBreaker(BreakerSettings{
		MinRequests: 1, OpenFor: time.Second,
		OnStateChange: func(from, to State) {
			calls++
			if calls == 1 {
				panic("boom")
			}
		},
	}, c)
	func() {
		defer func() { _ = recover() }()
		outcomes(b, "F")
	}()
	c.Advance(time.Second)
	b.State()
	if calls != 2 {
		t.Fatalf("callback calls = %d after a panic, want 2", calls)
	}
}

func TestBreakerNil(t *testing.T) {
	var b *Breaker
	done, err := b.Allow()
	if err != nil {
		t.Fatal(err)
	}
	done(false)
	if b.State() != StateClosed {
		t.Fatal("nil breaker not closed")
	}
}

func TestBreakerNilClock(t *testing.T) {
	b := NewBreaker(BreakerSettings{MinRequests: 1}, nil)
	outcomes(b, "F")
	if got := openWait(t, b); got <= 29*time.Second || got > 30*time.Second {
		t.Fatalf("RetryAfter = %v with the system clock", got)
	}
}

func TestBreakerConcurrent(t *testing.T) {
	c := NewFakeClock(epoch)
	var mu sync.Mutex
	var events []State
	b := NewBreaker(BreakerSettings{
		MinRequests: 10, FailureRatio: 0.3, OpenFor: 50 * time.Millisecond, Window: time.Second, HalfOpenRequests: 3,
		OnStateChange: func(from, to State) {
			mu.Lock()
			defer mu.Unlock()
			if n := len(events); n > 0 && events[n-1] != from {
				t.Errorf("event %v->%v does not follow %v", from, to, events[n-1])
			}
			events = append(events, to)
		},
	}, c)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 8 {
		wg.Go(func() {
			for i := 0; i < 5000; i++ {
				done, err := b.Allow()
				if err != nil {
					if !errors.Is(err, ErrOpen) {
						t.Errorf("err = %v", err)
					}
					continue
				}
				done(rand.IntN(3) != 0)
			}
		})
	}
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
				c.Advance(time.Millisecond)
				b.State()
			}
		}
	}()
	wg.Wait()
	close(stop)
	mu.Lock()
	defer mu.Unlock()
	if len(events) == 0 {
		t.Fatal("no state changes under a 1/3 failure rate")
	}
}
