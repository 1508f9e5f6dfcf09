package workflow

import "errors"

// Errors of the engine's operations; the API maps each to a problem code.
var (
	ErrWorkflowNotFound = errors.New("workflow not found")
	ErrRunNotFound      = errors.New("run not found")
	ErrInvalidInput     = errors.New("invalid input")
	ErrRunEnded         = errors.New("run has ended")
	// ErrKeyReused is an Idempotency-Key already used to start a run of
	// another workflow.
	ErrKeyReused = errors.New("idempotency key already used")
	// ErrStopped is returned once the engine is stopping.
	ErrStopped = errors.New("workflow engine stopped")
)

// StepError is a step's failure as the step reports it: Permanent errors
// (a 4xx answer, a bad expression) are not retried.
type StepError struct {
	Msg       string
	Permanent bool
}

func (e *StepError) Error() string { return e.Msg }
