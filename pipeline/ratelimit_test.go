package pipeline

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestRateLimit(t *testing.T) {
	tests := []struct {
		name    string
		rate    float64
		records int
		min     time.Duration // at least this long
	}{
		// A burst of max(1, N), then N a second.
		{"20 a second: 30 records take half a second", 20, 30, 450 * time.Millisecond},
		{"a burst of N passes at once", 50, 50, 0},
		{"4 a second: a burst of 4, then one each 250ms", 4, 6, 450 * time.Millisecond},
		{"fractional: 2.5 a second", 2.5, 3, 350 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := newRateLimiter(tt.rate)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			for range tt.records {
				out, err := p.Process(context.Background(), &Record{})
				if err != nil || len(out) != 1 {
					t.Fatalf("%v, %v", out, err)
				}
			}
			if d := time.Since(start); d < tt.min || d > tt.min+2*time.Second {
				t.Fatalf("took %s, want about %s", d, tt.min)
			}
		})
	}
}

func TestRateLimitWaitEndsWithTheRun(t *testing.T) {
	p, err := newRateLimiter(0.1)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if _, err := p.Process(ctx, &Record{}); err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	if _, err := p.Process(ctx, &Record{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("waited %s after the run ended", d)
	}
	for _, n := range []float64{0, -1} {
		if _, err := newRateLimiter(n); err == nil {
			t.Errorf("rate %v accepted", n)
		}
	}
}
