package resilience

import (
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// State is a circuit breaker's mode.
type State int

// The breaker's states, in order of how much traffic they let through.
const (
	StateClosed   State = iota // calls flow; outcomes are counted
	StateHalfOpen              // a few probe calls test whether the dependency recovered
	StateOpen                  // calls are rejected without being made
)

// String returns the state's stable name, as used in metrics and logs.
func (s State) String() string {
	switch s {
	case StateClosed:
		return "closed"
	case StateHalfOpen:
		return "half_open"
	case StateOpen:
		return "open"
	}
	return "State(" + strconv.Itoa(int(s)) + ")"
}

// ErrOpen is matched by every rejection from an open breaker, so callers can
// test for it without knowing about OpenError.
var ErrOpen = errors.New("circuit breaker open")

// OpenError is the rejection from Breaker.Allow; it carries how long the
// caller should wait, so that a gateway can answer with Retry-After.
type OpenError struct {
	// RetryAfter is the time until the breaker lets probes through (at least 0).
	RetryAfter time.Duration
}

// Error describes the rejection and its wait.
func (e *OpenError) Error() string {
	return "circuit breaker open, retry after " + e.RetryAfter.String()
}

// Is reports whether target is ErrOpen, so errors.Is(err, ErrOpen) holds.
func (e *OpenError) Is(target error) bool { return target == ErrOpen }

// BreakerSettings configures a Breaker; zero fields take their defaults.
type BreakerSettings struct {
	FailureRatio     float64       // trip when failures/requests in the window reach this (default 0.5)
	MinRequests      int           // ...and the window holds at least this many requests (default 20)
	Window           time.Duration // rolling window, bucketed (default 10s)
	OpenFor          time.Duration // time open before half-open probes (default 30s)
	HalfOpenRequests int           // probes let through while half-open (default 1); that many successes close it, any failure re-opens it

	// OnStateChange, if set, is called after each state change, without
	// any breaker lock held, one call at a time and in the order the
	// changes happened; it may call the breaker's methods. A change may be
	// reported by another goroutine that is already reporting earlier ones,
	// so it can run slightly after the call that caused it returned.
	OnStateChange func(from, to State)
}

// halfOpenRetryAfter caps the hint given while all half-open probes are out:
// their outcome is usually known within a request's latency, so the wait is
// short, and never beyond the moment those probes would be presumed lost.
const halfOpenRetryAfter = time.Second

// Breaker is a circuit breaker over a rolling window: it stops calls to a
// dependency that keeps failing, so callers fail fast and the dependency gets
// room to recover, then probes it before letting traffic back.
//
// State changes are evaluated lazily from the Clock, with no goroutines or
// timers. Each state change starts a new generation; outcomes reported for
// calls admitted in an earlier generation are ignored. A nil *Breaker allows
// every call.
type Breaker struct {
	s     BreakerSettings
	clock Clock

	// cur is read without the lock so that Allow on a closed breaker is a
	// single atomic load; it is only written with mu held.
	cur atomic.Pointer[generation]

	mu        sync.Mutex
	lastID    uint64
	win       rolling // closed: [0] outcomes, [1] failures
	probes    int     // half-open: probes let through this generation
	successes int     // half-open: probes that reported success
	events    []stateChange
	notifying bool // a goroutine is delivering events
}

// generation is immutable once published in Breaker.cur.
type generation struct {
	id    uint64
	state State
	// until is, when open, the moment probing may start and, when
	// half-open, the moment probes that never reported are presumed lost.
	until time.Time
	// done is shared by every call admitted in this generation, so
	// admitting a call allocates nothing.
	done func(success bool)
}

type stateChange struct{ from, to State }

// NewBreaker returns a closed Breaker; zero settings take their defaults and
// a nil Clock means System.
func NewBreaker(s BreakerSettings, c Clock) *Breaker {
	if !(s.FailureRatio > 0) {
		s.FailureRatio = 0.5
	}
	if s.MinRequests <= 0 {
		s.MinRequests = 20
	}
	if s.Window <= 0 {
		s.Window = 10 * time.Second
	}
	if s.OpenFor <= 0 {
		s.OpenFor = 30 * time.Second
	}
	if s.HalfOpenRequests <= 0 {
		s.HalfOpenRequests = 1
	}
	if c == nil {
		c = System
	}
	b := &Breaker{s: s, clock: c}
	b.mu.Lock()
	b.transitionLocked(StateClosed, c.Now()) // closed to closed: no event
	b.mu.Unlock()
	return b
}

func noopDone(bool) {}

// Allow reserves a call. When the breaker is open (or half-open with all
// probes taken) it returns an *OpenError (errors.Is(err, ErrOpen) is true)
// and the call must not be made. Otherwise the caller must call done exactly
// once with the outcome.
//
// While half-open, probes that have not reported within OpenFor are presumed
// lost and a fresh set is let through, so a caller that never calls done
// cannot hold the breaker shut forever.
func (b *Breaker) Allow() (done func(success bool), err error) {
	if b == nil {
		return noopDone, nil
	}
	g := b.cur.Load()
	if g.state == StateClosed {
		return g.done, nil
	}
	now := b.clock.Now()
	if g.state == StateOpen && now.Before(g.until) {
		return nil, b.openError(g.until.Sub(now))
	}
	return b.allowSlow(now)
}

func (b *Breaker) allowSlow(now time.Time) (done func(success bool), err error) {
	b.mu.Lock()
	g := b.advanceLocked(now)
	switch g.state {
	case StateClosed:
		done = g.done
	case StateOpen:
		err = b.openError(g.until.Sub(now))
	case StateHalfOpen:
		if b.probes >= b.s.HalfOpenRequests && !now.Before(g.until) {
			// Same state, new generation: late reports from the lost
			// probes are ignored. No OnStateChange event is queued.
			b.transitionLocked(StateHalfOpen, now)
			g = b.cur.Load()
		}
		if b.probes < b.s.HalfOpenRequests {
			b.probes++
			done = g.done
		} else {
			err = &OpenError{RetryAfter: min(halfOpenRetryAfter, g.until.Sub(now))}
		}
	}
	deliver := b.claimEventsLocked()
	b.mu.Unlock()
	if deliver {
		b.deliver()
	}
	return done, err
}

// openError clamps the wait so a clock stepping backwards cannot promise a
// wait longer than OpenFor.
func (b *Breaker) openError(wait time.Duration) error {
	return &OpenError{RetryAfter: max(0, min(wait, b.s.OpenFor))}
}

// State returns the breaker's state as of now: an open breaker whose OpenFor
// has elapsed reports (and becomes) half-open.
func (b *Breaker) State() State {
	if b == nil {
		return StateClosed
	}
	g := b.cur.Load()
	if g.state != StateOpen {
		return g.state
	}
	now := b.clock.Now()
	if now.Before(g.until) {
		return StateOpen
	}
	b.mu.Lock()
	g = b.advanceLocked(now)
	deliver := b.claimEventsLocked()
	b.mu.Unlock()
	if deliver {
		b.deliver()
	}
	return g.state
}

// report records the outcome of a call admitted in generation id.
func (b *Breaker) report(id uint64, success bool) {
	now := b.clock.Now()
	b.mu.Lock()
	g := b.cur.Load()
	if g.id != id {
		b.mu.Unlock()
		return
	}
	switch g.state {
	case StateClosed:
		var failed int64
		if !success {
			failed = 1
		}
		b.win.add(now, 1, failed)
		// Checked after successes too: the outcome that brings the window
		// up to MinRequests may be a success.
		n, f := b.win.total[0], b.win.total[1]
		if n >= int64(b.s.MinRequests) && float64(f)/float64(n) >= b.s.FailureRatio {
			b.transitionLocked(StateOpen, now)
		}
	case StateHalfOpen:
		if !success {
			b.transitionLocked(StateOpen, now)
			break
		}
		b.successes++
		if b.successes >= b.s.HalfOpenRequests {
			b.transitionLocked(StateClosed, now)
		}
	}
	deliver := b.claimEventsLocked()
	b.mu.Unlock()
	if deliver {
		b.deliver()
	}
}

// advanceLocked applies the one time-driven change, open to half-open, and
// returns the current generation.
func (b *Breaker) advanceLocked(now time.Time) *generation {
	g := b.cur.Load()
	if g.state == StateOpen && !now.Before(g.until) {
		b.transitionLocked(StateHalfOpen, now)
		g = b.cur.Load()
	}
	return g
}

// transitionLocked starts a new generation in state to.
func (b *Breaker) transitionLocked(to State, now time.Time) {
	var from State
	if old := b.cur.Load(); old != nil {
		from = old.state
	}
	b.lastID++
	g := &generation{id: b.lastID, state: to}
	switch to {
	case StateClosed:
		b.win = newRolling(now, b.s.Window)
	case StateOpen:
		g.until = now.Add(b.s.OpenFor)
	case StateHalfOpen:
		g.until = now.Add(b.s.OpenFor)
		b.probes, b.successes = 0, 0
	}
	if to != StateOpen { // an open generation admits no calls
		id := g.id
		g.done = func(success bool) { b.report(id, success) }
	}
	b.cur.Store(g)
	if from != to && b.s.OnStateChange != nil {
		b.events = append(b.events, stateChange{from, to})
	}
}

// claimEventsLocked reports whether the caller must deliver queued events;
// only one goroutine delivers at a time, which keeps them in order.
func (b *Breaker) claimEventsLocked() bool {
	if len(b.events) == 0 || b.notifying {
		return false
	}
	b.notifying = true
	return true
}

// deliver calls OnStateChange for queued events until none are left. The
// lock is released around each call so the callback may use the breaker; a
// change the callback causes is queued and delivered by this loop.
func (b *Breaker) deliver() {
	finished := false
	defer func() {
		if !finished { // the callback panicked: let the next change deliver
			b.mu.Lock()
			b.notifying = false
			b.mu.Unlock()
		}
	}()
	for {
		b.mu.Lock()
		if len(b.events) == 0 {
			b.notifying = false
			b.mu.Unlock()
			finished = true
			return
		}
		ev := b.events[0]
		b.events = append(b.events[:0], b.events[1:]...)
		b.mu.Unlock()
		b.s.OnStateChange(ev.from, ev.to)
	}
}
