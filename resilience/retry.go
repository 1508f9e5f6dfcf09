package resilience

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// ErrBudgetExhausted is joined to the last error when Retry stops because its
// Budget refused another try.
var ErrBudgetExhausted = errors.New("retry budget exhausted")

// Retry runs fn until it succeeds, returns a permanent error, attempts are
// used up, the budget refuses, or ctx ends.
type Retry struct {
	Attempts int     // total tries including the first (<=1 means no retry)
	Backoff  Backoff // wait between tries
	Budget   *Budget // nil = unlimited
	Clock    Clock   // nil = System
}

// retryAfterHint is how an error asks for a longer wait, for example one
// built from an HTTP 429 or 503 Retry-After header.
type retryAfterHint interface {
	RetryAfter() time.Duration
}

// Do calls fn(ctx, attempt) with attempt starting at 1. Between tries it
// waits Backoff.Delay(n), or longer if the error carries a hint (an error
// implementing interface{ RetryAfter() time.Duration } found with
// errors.As). It returns nil on success; otherwise the last error, wrapped
// with the attempt count when there was more than one try, and joined with
// ErrBudgetExhausted or the ctx error when that is why it stopped; errors.Is
// and errors.As see through every wrapping. A ctx that has already ended
// returns its error without calling fn.
func (r Retry) Do(ctx context.Context, fn func(ctx context.Context, attempt int) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	clock := r.Clock
	if clock == nil {
		clock = System
	}
	attempts := max(r.Attempts, 1)
	r.Budget.Request()
	for attempt := 1; ; attempt++ {
		err := fn(ctx, attempt)
		if err == nil {
			return nil
		}
		if attempt >= attempts || IsPermanent(err) {
			return afterAttempts(err, attempt)
		}
		if cerr := ctx.Err(); cerr != nil {
			return stopped(cerr, err, attempt)
		}
		// Spend the budget before waiting: a refused retry should not
		// cost the caller the wait as well.
		if !r.Budget.Retry() {
			return stopped(ErrBudgetExhausted, err, attempt)
		}
		wait := r.Backoff.Delay(attempt)
		var hint retryAfterHint
		if errors.As(err, &hint) {
			wait = max(wait, hint.RetryAfter())
		}
		if serr := clock.Sleep(ctx, wait); serr != nil {
			return stopped(serr, err, attempt)
		}
	}
}

func attemptsText(n int) string {
	if n == 1 {
		return "1 attempt"
	}
	return strconv.Itoa(n) + " attempts"
}

// afterAttempts leaves a single try's error untouched, so Retry with one
// attempt is transparent.
func afterAttempts(err error, n int) error {
	if n == 1 {
		return err
	}
	return fmt.Errorf("after %s: %w", attemptsText(n), err)
}

// stopped joins why retrying stopped with the last error, so both match.
func stopped(why, last error, n int) error {
	if errors.Is(last, why) {
		return afterAttempts(last, n)
	}
	return fmt.Errorf("%w after %s: %w", why, attemptsText(n), last)
}

// Permanent marks err as not worth retrying; errors.Is/As see through it and
// Permanent(nil) == nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := err.(*permanentError); ok {
		return err
	}
	return &permanentError{err: err}
}

// IsPermanent reports whether err, or any error it wraps, was marked with
// Permanent; the marker survives wrapping so nested retries all stop.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }
