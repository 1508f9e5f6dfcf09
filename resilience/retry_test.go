package resilience

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

var errBoom = errors.New("boom")

// hintError asks for a specific wait, as an HTTP 429 with Retry-After would.
type hintError struct{ after time.Duration }

func (e *hintError) Error() string             { return "slow down" }
func (e *hintError) RetryAfter() time.Duration { return e.after }

type codeError struct{ code int }

func (e *codeError) Error() string { return fmt.Sprintf("code %d", e.code) }

func TestRetryAttempts(t *testing.T) {
	tests := []struct {
		name      string
		attempts  int
		results   []error // by attempt; beyond the end, errBoom
		wantCalls int
		wantErr   error // nil means success
		wantMsg   string
	}{
		{"success first", 3, []error{nil}, 1, nil, ""},
		{"success third", 3, []error{errBoom, errBoom, nil}, 3, nil, ""},
		{"used up", 3, nil, 3, errBoom, "after 3 attempts: boom"},
		{"zero attempts tries once", 0, nil, 1, errBoom, "boom"},
		{"one attempt is transparent", 1, nil, 1, errBoom, "boom"},
		{"negative attempts", -2, nil, 1, errBoom, "boom"},
		{"permanent stops", 5, []error{errBoom, Permanent(errBoom)}, 2, errBoom, "after 2 attempts: boom"},
		{"wrapped permanent stops", 5, []error{fmt.Errorf("ctx: %w", Permanent(errBoom))}, 1, errBoom, "ctx: boom"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var seen []int
			r := Retry{Attempts: tt.attempts, Clock: NewFakeClock(epoch)}
			err := r.Do(context.Background(), func(ctx context.Context, attempt int) error {
				seen = append(seen, attempt)
				if attempt <= len(tt.results) {
					return tt.results[attempt-1]
				}
				return errBoom
			})
			if len(seen) != tt.wantCalls {
				t.Fatalf("calls = %v, want %d", seen, tt.wantCalls)
			}
			for i, a := range seen {
				if a != i+1 {
					t.Fatalf("attempt numbers = %v", seen)
				}
			}
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("err = %v", err)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) || err.Error() != tt.wantMsg {
				t.Fatalf("err = %q, want %q wrapping %v", err, tt.wantMsg, tt.wantErr)
			}
		})
	}
}

func TestRetryErrorsAsThroughWrapping(t *testing.T) {
	err := Retry{Attempts: 2, Clock: NewFakeClock(epoch)}.Do(context.Background(), func(context.Context, int) error {
		return &codeError{503}
	})
	var ce *codeError
	if !errors.As(err, &ce) || ce.code != 503 {
		t.Fatalf("errors.As failed on %v", err)
	}
}

func TestPermanent(t *testing.T) {
	if Permanent(nil) != nil {
		t.Fatal("Permanent(nil) != nil")
	}
	p := Permanent(&codeError{400})
	var ce *codeError
	if !errors.As(p, &ce) || ce.code != 400 || p.Error() != "code 400" {
		t.Fatalf("Permanent hides its error: %v", p)
	}
	if !IsPermanent(p) || !IsPermanent(fmt.Errorf("x: %w", p)) || IsPermanent(errBoom) || IsPermanent(nil) {
		t.Fatal("IsPermanent is wrong")
	}
	if Permanent(p) != p {
		t.Fatal("Permanent wraps twice")
	}
	if !errors.Is(Permanent(errBoom), errBoom) {
		t.Fatal("errors.Is does not see through Permanent")
	}
}

// runDo starts r.Do in a goroutine whose fn returns errs by attempt (then
// nil) and reports each attempt number, then the final error.
func runDo(ctx context.Context, r Retry, errs ...error) (attempts <-chan int, result <-chan error) {
	a := make(chan int, 100)
	res := make(chan error, 1)
	go func() {
		res <- r.Do(ctx, func(_ context.Context, attempt int) error {
			a <- attempt
			if attempt <= len(errs) {
				return errs[attempt-1]
			}
			return nil
		})
	}()
	return a, res
}

func TestRetryWaits(t *testing.T) {
	tests := []struct {
		name  string
		b     Backoff
		errs  []error
		waits []time.Duration // expected wait before attempts 2, 3, ...
	}{
		{"backoff", Backoff{Base: time.Second}, []error{errBoom, errBoom, errBoom}, []time.Duration{time.Second, 2 * time.Second, 4 * time.Second}},
		{"capped", Backoff{Base: time.Second, Max: 1500 * time.Millisecond}, []error{errBoom, errBoom}, []time.Duration{time.Second, 1500 * time.Millisecond}},
		{"hint longer", Backoff{Base: time.Second}, []error{&hintError{5 * time.Second}}, []time.Duration{5 * time.Second}},
		{"hint shorter", Backoff{Base: time.Second}, []error{&hintError{time.Millisecond}}, []time.Duration{time.Second}},
		{"wrapped hint", Backoff{Base: time.Second}, []error{fmt.Errorf("call: %w", &hintError{time.Minute})}, []time.Duration{time.Minute}},
		{"hint without backoff", Backoff{}, []error{errBoom, &hintError{3 * time.Second}}, []time.Duration{0, 3 * time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewFakeClock(epoch)
			attempts, res := runDo(context.Background(), Retry{Attempts: 10, Backoff: tt.b, Clock: c}, tt.errs...)
			if got := recv(t, attempts); got != 1 {
				t.Fatalf("first attempt = %d", got)
			}
			for i, w := range tt.waits {
				if w > 0 {
					waitSleepers(t, c, 1)
					c.Advance(w - time.Millisecond)
					if c.Sleepers() != 1 || !pending(attempts) {
						t.Fatalf("attempt %d came before %v", i+2, w)
					}
					c.Advance(time.Millisecond)
				}
				if got := recv(t, attempts); got != i+2 {
					t.Fatalf("attempt = %d, want %d", got, i+2)
				}
			}
			if err := recv(t, res); err != nil {
				t.Fatalf("Do = %v", err)
			}
		})
	}
}

func TestRetryBudgetExhausted(t *testing.T) {
	tests := []struct {
		name      string
		ratio     float64
		wantCalls int
	}{
		{"no budget at all", 0, 1},
		{"one retry", 1, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewFakeClock(epoch)
			budget := NewBudget(c, tt.ratio, 0, time.Minute)
			calls := 0
			err := Retry{Attempts: 5, Budget: budget, Clock: c}.Do(context.Background(), func(context.Context, int) error {
				calls++
				return &codeError{503}
			})
			if calls != tt.wantCalls {
				t.Fatalf("calls = %d, want %d", calls, tt.wantCalls)
			}
			var ce *codeError
			if !errors.Is(err, ErrBudgetExhausted) || !errors.As(err, &ce) {
				t.Fatalf("err = %v, want both ErrBudgetExhausted and the last error", err)
			}
			if IsPermanent(err) {
				t.Fatal("budget exhaustion is not the call's fault")
			}
		})
	}
}

func TestRetryBudgetSharedAcrossCalls(t *testing.T) {
	c := NewFakeClock(epoch)
	budget := NewBudget(c, 0.5, 0, time.Minute)
	r := Retry{Attempts: 2, Budget: budget, Clock: c}
	exhausted := 0
	for range 10 {
		err := r.Do(context.Background(), func(context.Context, int) error { return errBoom })
		if errors.Is(err, ErrBudgetExhausted) {
			exhausted++
		}
	}
	if exhausted != 5 {
		t.Fatalf("%d of 10 calls exhausted the budget, want 5", exhausted)
	}
}

func TestRetryCancelDuringWait(t *testing.T) {
	c := NewFakeClock(epoch)
	ctx, cancel := context.WithCancel(context.Background())
	attempts, res := runDo(ctx, Retry{Attempts: 3, Backoff: Backoff{Base: time.Hour}, Clock: c}, errBoom, errBoom)
	recv(t, attempts)
	waitSleepers(t, c, 1)
	cancel()
	err := recv(t, res)
	if !errors.Is(err, context.Canceled) || !errors.Is(err, errBoom) {
		t.Fatalf("err = %v, want context.Canceled and the last error", err)
	}
	if !pending(attempts) {
		t.Fatal("attempted again after cancel")
	}
}

func TestRetryContextEnded(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	calls := 0
	err := Retry{Attempts: 3}.Do(ctx, func(context.Context, int) error { calls++; return nil })
	if calls != 0 || !errors.Is(err, context.Canceled) {
		t.Fatalf("calls = %d, err = %v on an ended ctx", calls, err)
	}

	// fn notices cancellation itself: its error already says why.
	ctx, cancel = context.WithCancel(context.Background())
	err = Retry{Attempts: 3, Clock: NewFakeClock(epoch)}.Do(ctx, func(ctx context.Context, attempt int) error {
		cancel()
		return fmt.Errorf("call: %w", ctx.Err())
	})
	if !errors.Is(err, context.Canceled) || err.Error() != "call: context canceled" {
		t.Fatalf("err = %q", err)
	}
}

func TestRetrySystemClock(t *testing.T) {
	calls := 0
	err := Retry{Attempts: 3, Backoff: Backoff{Base: time.Microsecond}}.Do(context.Background(), func(context.Context, int) error {
		calls++
		if calls < 3 {
			return errBoom
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("calls = %d, err = %v", calls, err)
	}
}
