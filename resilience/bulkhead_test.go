package resilience

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
)

func TestBulkheadLimit(t *testing.T) {
	tests := []struct {
		name  string
		max   int
		admit int // how many of 10 acquisitions succeed
	}{
		{"one", 1, 1},
		{"three", 3, 3},
		{"above demand", 20, 10},
		{"zero means no limit", 0, 10},
		{"negative means no limit", -1, 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := NewBulkhead(tt.max)
			var releases []func()
			for range 10 {
				release, err := b.Acquire()
				if err != nil {
					if !errors.Is(err, ErrBulkheadFull) {
						t.Fatalf("err = %v", err)
					}
					if release != nil {
						t.Fatal("rejected Acquire returned a release")
					}
					continue
				}
				releases = append(releases, release)
			}
			if len(releases) != tt.admit || b.InFlight() != tt.admit {
				t.Fatalf("admitted %d (in flight %d), want %d", len(releases), b.InFlight(), tt.admit)
			}
			releases[0]()
			if _, err := b.Acquire(); err != nil {
				t.Fatalf("Acquire after a release: %v", err)
			}
		})
	}
}

func TestBulkheadReleaseIdempotent(t *testing.T) {
	b := NewBulkhead(2)
	r1, _ := b.Acquire()
	r2, _ := b.Acquire()
	r1()
	r1()
	r1()
	if got := b.InFlight(); got != 1 {
		t.Fatalf("in flight = %d after releasing one slot three times", got)
	}
	if _, err := b.Acquire(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Acquire(); !errors.Is(err, ErrBulkheadFull) {
		t.Fatalf("double release leaked a slot: err = %v", err)
	}
	r2()
}

func TestBulkheadNil(t *testing.T) {
	var b *Bulkhead
	release, err := b.Acquire()
	if err != nil {
		t.Fatal(err)
	}
	release()
	if b.InFlight() != 0 {
		t.Fatal("nil bulkhead counts")
	}
}

func TestBulkheadConcurrent(t *testing.T) {
	const limit = 4
	b := NewBulkhead(limit)
	var inside, peak, admitted atomic.Int64
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for range 2000 {
				release, err := b.Acquire()
				if err != nil {
					continue
				}
				admitted.Add(1)
				n := inside.Add(1)
				for {
					p := peak.Load()
					if n <= p || peak.CompareAndSwap(p, n) {
						break
					}
				}
				inside.Add(-1)
				release()
				release()
			}
		})
	}
	wg.Wait()
	if p := peak.Load(); p > limit {
		t.Fatalf("peak concurrency %d above limit %d", p, limit)
	}
	if admitted.Load() == 0 {
		t.Fatal("nothing admitted")
	}
	if got := b.InFlight(); got != 0 {
		t.Fatalf("in flight = %d after everything released", got)
	}
}
