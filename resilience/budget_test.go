package resilience

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestBudgetRatio(t *testing.T) {
	tests := []struct {
		name     string
		ratio    float64
		requests int
		want     int
	}{
		{"fifth", 0.2, 1000, 200},
		{"tenth", 0.1, 1000, 100},
		{"rounding", 0.29, 100, 29},
		{"partial retry not allowed", 0.2, 4, 0},
		{"zero", 0, 1000, 0},
		{"negative counts as zero", -1, 100, 0},
		{"one for one", 1, 50, 50},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewFakeClock(epoch)
			b := NewBudget(c, tt.ratio, 0, 10*time.Second)
			got := 0
			// Interleave the way Retry.Do does, one millisecond apart so the
			// traffic stays inside the window.
			for range tt.requests {
				b.Request()
				if b.Retry() {
					got++
				}
				c.Advance(time.Millisecond)
			}
			for b.Retry() { // nothing left over either
				got++
			}
			if got != tt.want {
				t.Fatalf("allowed %d retries, want %d", got, tt.want)
			}
		})
	}
}

func TestBudgetMinPerSecond(t *testing.T) {
	tests := []struct {
		name   string
		ratio  float64
		min    float64
		window time.Duration
		reqs   int
		want   int
	}{
		{"min only", 0, 1, 10 * time.Second, 0, 10},
		{"default window", 0, 1, 0, 0, 10},
		{"short window", 0, 5, 2 * time.Second, 0, 10},
		{"fractional", 0, 0.25, 10 * time.Second, 0, 2},
		{"min plus ratio", 0.1, 1, 10 * time.Second, 100, 20},
		{"negative min counts as zero", 0, -1, 10 * time.Second, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := NewBudget(NewFakeClock(epoch), tt.ratio, tt.min, tt.window)
			for range tt.reqs {
				b.Request()
			}
			got := 0
			for b.Retry() {
				got++
				if got > 1000 {
					t.Fatal("budget never refuses")
				}
			}
			if got != tt.want {
				t.Fatalf("allowed %d retries, want %d", got, tt.want)
			}
		})
	}
}

func TestBudgetWindowSlides(t *testing.T) {
	// 10 buckets of 1s: something recorded at t lasts until t's bucket is
	// ten buckets old.
	type step struct {
		advance  time.Duration
		requests int
		retries  int // attempted
		want     int // allowed
	}
	tests := []struct {
		name  string
		ratio float64
		min   float64
		steps []step
	}{
		{"min refills after the window", 0, 1, []step{
			{0, 0, 20, 10},
			{5 * time.Second, 0, 1, 0},
			{4*time.Second + 999*time.Millisecond, 0, 1, 0},
			{time.Millisecond, 0, 20, 10},
		}},
		{"old first attempts stop earning", 0.5, 0, []step{
			{0, 10, 2, 2},
			{9 * time.Second, 0, 10, 3},
			{time.Second, 0, 10, 0},
		}},
		{"retries expire by bucket", 0, 1, []step{
			{0, 0, 4, 4},
			{3 * time.Second, 0, 10, 6},
			{7 * time.Second, 0, 10, 4},
			{3 * time.Second, 0, 10, 6},
		}},
		{"long gap forgets all", 1, 0, []step{
			{0, 5, 5, 5},
			{time.Hour, 0, 1, 0},
			{0, 3, 5, 3},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewFakeClock(epoch)
			b := NewBudget(c, tt.ratio, tt.min, 10*time.Second)
			for i, s := range tt.steps {
				c.Advance(s.advance)
				for range s.requests {
					b.Request()
				}
				got := 0
				for range s.retries {
					if b.Retry() {
						got++
					}
				}
				if got != s.want {
					t.Fatalf("step %d: allowed %d retries, want %d", i, got, s.want)
				}
			}
		})
	}
}

func TestBudgetClockBackwards(t *testing.T) {
	c := NewFakeClock(epoch)
	b := NewBudget(c, 0, 1, 10*time.Second)
	c.Advance(5 * time.Second)
	for range 10 {
		b.Retry()
	}
	c.Advance(-time.Hour)
	if b.Retry() {
		t.Fatal("stepping the clock back refilled the budget")
	}
}

func TestBudgetNil(t *testing.T) {
	var b *Budget
	b.Request()
	if !b.Retry() {
		t.Fatal("nil budget refused a retry")
	}
}

func TestBudgetConcurrent(t *testing.T) {
	c := NewFakeClock(epoch)
	b := NewBudget(c, 0.1, 0, time.Minute)
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				b.Request()
				if b.Retry() {
					allowed.Add(1)
				}
			}
		})
	}
	wg.Go(func() {
		for range 100 {
			c.Advance(time.Millisecond)
		}
	})
	wg.Wait()
	if got := allowed.Load(); got > 800 || got < 790 {
		t.Fatalf("allowed %d retries for 8000 first attempts at 0.1", got)
	}
}
