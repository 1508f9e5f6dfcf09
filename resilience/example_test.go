package resilience_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/junctionhq/junction/resilience"
)

// A call to a flaky dependency goes through a breaker, inside a retry loop
// whose budget keeps retries from multiplying load during an outage.
func Example() {
	clock := resilience.NewFakeClock(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
	breaker := resilience.NewBreaker(resilience.BreakerSettings{
		MinRequests: 4,
		OpenFor:     30 * time.Second,
		OnStateChange: func(from, to resilience.State) {
			fmt.Printf("breaker %s -> %s\n", from, to)
		},
	}, clock)
	retry := resilience.Retry{
		Attempts: 3,
		// A zero Base keeps this example from waiting; services use e.g.
		// Backoff{Base: 100 * time.Millisecond, Max: 2 * time.Second, Jitter: 0.5}.
		Backoff: resilience.Backoff{},
		Budget:  resilience.NewBudget(clock, 0.2, 1, 10*time.Second),
		Clock:   clock,
	}

	healthy := false
	invoke := func(ctx context.Context, attempt int) error {
		done, err := breaker.Allow()
		if err != nil {
			// Retrying within this request cannot outlast OpenFor.
			return resilience.Permanent(err)
		}
		if !healthy {
			done(false)
			return errors.New("503 service unavailable")
		}
		done(true)
		return nil
	}

	// The dependency is down: failures trip the breaker, which then fails
	// the remaining attempts fast.
	for i := 1; i <= 2; i++ {
		err := retry.Do(context.Background(), invoke)
		var open *resilience.OpenError
		if errors.As(err, &open) {
			fmt.Printf("call %d: rejected, retry after %s\n", i, open.RetryAfter)
		} else {
			fmt.Printf("call %d: %v\n", i, err)
		}
	}

	// It recovers; after OpenFor a probe succeeds and closes the breaker.
	healthy = true
	clock.Advance(30 * time.Second)
	fmt.Println("call 3:", retry.Do(context.Background(), invoke))
	fmt.Println("state:", breaker.State())

	// Output:
	// call 1: after 3 attempts: 503 service unavailable
	// breaker closed -> open
	// call 2: rejected, retry after 30s
	// breaker open -> half_open
	// breaker half_open -> closed
	// call 3: <nil>
	// state: closed
}
