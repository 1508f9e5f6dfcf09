package resilience

import (
	"testing"
	"time"
)

// BenchmarkBreakerAllow measures the per-request cost the mesh and gateway
// pay on a healthy (closed) breaker: Allow plus done, on the real clock.
func BenchmarkBreakerAllow(b *testing.B) {
	br := NewBreaker(BreakerSettings{}, System)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			done, err := br.Allow()
			if err != nil {
				b.Error(err)
				return
			}
			done(true)
		}
	})
}

// BenchmarkBreakerAllowOpen measures rejection while open, the path taken by
// every request during an outage.
func BenchmarkBreakerAllowOpen(b *testing.B) {
	br := NewBreaker(BreakerSettings{MinRequests: 1, OpenFor: time.Hour}, System)
	done, _ := br.Allow()
	done(false)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := br.Allow(); err == nil {
				b.Error("allowed while open")
				return
			}
		}
	})
}

// BenchmarkBulkhead measures Acquire plus release with free slots.
func BenchmarkBulkhead(b *testing.B) {
	bh := NewBulkhead(1 << 20)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			release, err := bh.Acquire()
			if err != nil {
				b.Error(err)
				return
			}
			release()
		}
	})
}

// BenchmarkBudget measures one first attempt plus one retry check, the cost
// Retry.Do adds to a call that fails once.
func BenchmarkBudget(b *testing.B) {
	bu := NewBudget(System, 0.2, 10, 10*time.Second)
	b.ReportAllocs()
	for b.Loop() {
		bu.Request()
		bu.Retry()
	}
}
