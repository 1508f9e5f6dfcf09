package resilience

import (
	"math"
	"testing"
	"time"
)

func fixed(f float64) func() float64 { return func() float64 { return f } }

func TestBackoffDelay(t *testing.T) {
	const maxDur = time.Duration(math.MaxInt64)
	tests := []struct {
		name string
		b    Backoff
		n    int
		want time.Duration
	}{
		{"first", Backoff{Base: 100 * time.Millisecond}, 1, 100 * time.Millisecond},
		{"second", Backoff{Base: 100 * time.Millisecond}, 2, 200 * time.Millisecond},
		{"fifth", Backoff{Base: 100 * time.Millisecond}, 5, 1600 * time.Millisecond},
		{"n below 1 counts as 1", Backoff{Base: time.Second}, 0, time.Second},
		{"negative n", Backoff{Base: time.Second}, -5, time.Second},
		{"zero base", Backoff{Max: time.Second, Jitter: 1}, 10, 0},
		{"negative base", Backoff{Base: -time.Second}, 3, 0},
		{"capped", Backoff{Base: 100 * time.Millisecond, Max: time.Second}, 5, time.Second},
		{"below cap", Backoff{Base: 100 * time.Millisecond, Max: time.Second}, 4, 800 * time.Millisecond},
		{"base above cap", Backoff{Base: time.Minute, Max: time.Second}, 1, time.Second},
		{"huge n capped", Backoff{Base: time.Second, Max: time.Minute}, 1 << 40, time.Minute},
		{"huge n uncapped", Backoff{Base: time.Second}, math.MaxInt, maxDur},
		{"n at 63 bits", Backoff{Base: 1}, 64, maxDur},
		{"last exact power", Backoff{Base: 1}, 63, 1 << 62},
		{"just overflowing", Backoff{Base: 3}, 63, maxDur},
		{"jitter zero rand keeps d", Backoff{Base: time.Second, Jitter: 0.5, Rand: fixed(0)}, 1, time.Second},
		{"jitter half", Backoff{Base: time.Second, Jitter: 0.5, Rand: fixed(0.5)}, 1, 750 * time.Millisecond},
		{"full jitter", Backoff{Base: time.Second, Jitter: 1, Rand: fixed(0.25)}, 2, 1500 * time.Millisecond},
		{"jitter above 1 clamps", Backoff{Base: time.Second, Jitter: 7, Rand: fixed(0.25)}, 1, 750 * time.Millisecond},
		{"negative jitter ignored", Backoff{Base: time.Second, Jitter: -1, Rand: fixed(0.9)}, 1, time.Second},
		{"NaN jitter ignored", Backoff{Base: time.Second, Jitter: math.NaN(), Rand: fixed(0.9)}, 1, time.Second},
		{"negative rand clamps", Backoff{Base: time.Second, Jitter: 1, Rand: fixed(-3)}, 1, time.Second},
		{"NaN rand clamps", Backoff{Base: time.Second, Jitter: 1, Rand: fixed(math.NaN())}, 1, time.Second},
		{"jitter after cap", Backoff{Base: time.Second, Max: 4 * time.Second, Jitter: 0.5, Rand: fixed(0.5)}, 10, 3 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.b.Delay(tt.n); got != tt.want {
				t.Fatalf("Delay(%d) = %v, want %v", tt.n, got, tt.want)
			}
		})
	}
}

func TestBackoffJitterBounds(t *testing.T) {
	tests := []struct {
		name   string
		b      Backoff
		n      int
		lo, hi time.Duration
	}{
		{"half", Backoff{Base: time.Second, Jitter: 0.5}, 1, 500 * time.Millisecond, time.Second},
		{"tenth", Backoff{Base: time.Second, Jitter: 0.1}, 3, 3600 * time.Millisecond, 4 * time.Second},
		{"full", Backoff{Base: time.Second, Jitter: 1}, 2, 0, 2 * time.Second},
		{"near one rand", Backoff{Base: time.Second, Jitter: 0.5, Rand: fixed(math.Nextafter(1, 0))}, 1, 500 * time.Millisecond, time.Second},
		{"rand of one", Backoff{Base: time.Second, Jitter: 0.5, Rand: fixed(1)}, 1, 500 * time.Millisecond, time.Second},
		{"rand above one", Backoff{Base: time.Second, Jitter: 1, Rand: fixed(2)}, 1, 0, time.Second},
		{"huge n full jitter", Backoff{Base: time.Second, Jitter: 1, Rand: fixed(math.Nextafter(1, 0))}, 1000, 0, math.MaxInt64},
		{"huge n half jitter", Backoff{Base: time.Second, Jitter: 0.5}, 1000, math.MaxInt64 / 2, math.MaxInt64},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range 1000 {
				if got := tt.b.Delay(tt.n); got < tt.lo || got > tt.hi {
					t.Fatalf("Delay(%d) = %v, want in [%v, %v]", tt.n, got, tt.lo, tt.hi)
				}
			}
		})
	}
}
