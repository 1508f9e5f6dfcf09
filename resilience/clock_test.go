package resilience

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"time"
)

var epoch = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// waitSleepers spins until c has at least n sleepers, so tests synchronise
// with a goroutine parking in Sleep without real sleeping.
func waitSleepers(t *testing.T, c *FakeClock, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for c.Sleepers() < n {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %d sleepers, have %d", n, c.Sleepers())
		}
		runtime.Gosched()
	}
}

// recv waits for a result with a generous deadline that only fires when the
// code under test hangs.
func recv[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(5 * time.Second):
		t.Fatal("timed out waiting for result")
		panic("unreachable")
	}
}

func pending[T any](ch <-chan T) bool {
	select {
	case <-ch:
		return false
	default:
		return true
	}
}

func TestFakeClockSleep(t *testing.T) {
	tests := []struct {
		name  string
		sleep time.Duration
		steps []time.Duration // advances; the sleeper must wake on the last one only
	}{
		{"exact", time.Second, []time.Duration{time.Second}},
		{"past", time.Second, []time.Duration{2 * time.Second}},
		{"in steps", time.Second, []time.Duration{400 * time.Millisecond, 599 * time.Millisecond, time.Millisecond}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewFakeClock(epoch)
			res := make(chan error, 1)
			go func() { res <- c.Sleep(context.Background(), tt.sleep) }()
			waitSleepers(t, c, 1)
			for i, d := range tt.steps {
				c.Advance(d)
				last := i == len(tt.steps)-1
				if got := c.Sleepers(); got != map[bool]int{true: 0, false: 1}[last] {
					t.Fatalf("after step %d: sleepers = %d", i, got)
				}
				if !last && !pending(res) {
					t.Fatalf("woke early at step %d", i)
				}
			}
			if err := recv(t, res); err != nil {
				t.Fatalf("Sleep = %v", err)
			}
		})
	}
}

func TestFakeClockNowAndImmediate(t *testing.T) {
	c := NewFakeClock(epoch)
	if !c.Now().Equal(epoch) {
		t.Fatalf("Now = %v", c.Now())
	}
	c.Advance(time.Minute)
	if got := c.Now().Sub(epoch); got != time.Minute {
		t.Fatalf("advanced %v", got)
	}
	for _, d := range []time.Duration{0, -time.Second} {
		if err := c.Sleep(context.Background(), d); err != nil {
			t.Fatalf("Sleep(%v) = %v", d, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.Sleep(ctx, time.Hour); !errors.Is(err, context.Canceled) {
		t.Fatalf("Sleep on ended ctx = %v", err)
	}
	if c.Sleepers() != 0 {
		t.Fatal("ended ctx left a sleeper")
	}
}

func TestFakeClockCancel(t *testing.T) {
	c := NewFakeClock(epoch)
	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan error, 2)
	go func() { res <- c.Sleep(ctx, time.Hour) }()
	go func() { res <- c.Sleep(context.Background(), time.Minute) }()
	waitSleepers(t, c, 2)
	cancel()
	if err := recv(t, res); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Sleep = %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for c.Sleepers() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("sleepers = %d after cancel", c.Sleepers())
		}
		runtime.Gosched()
	}
	c.Advance(time.Minute)
	if err := recv(t, res); err != nil {
		t.Fatalf("Sleep = %v", err)
	}
}

func TestSystemClock(t *testing.T) {
	if err := System.Sleep(context.Background(), time.Millisecond); err != nil {
		t.Fatalf("Sleep = %v", err)
	}
	if err := System.Sleep(context.Background(), 0); err != nil {
		t.Fatalf("Sleep(0) = %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	if err := System.Sleep(ctx, time.Hour); !errors.Is(err, context.Canceled) {
		t.Fatalf("Sleep on ended ctx = %v", err)
	}
	if time.Since(start) > time.Second {
		t.Fatal("Sleep ignored the ended ctx")
	}
	if d := time.Since(System.Now()); d < 0 || d > time.Minute {
		t.Fatalf("System.Now is off by %v", d)
	}
}
