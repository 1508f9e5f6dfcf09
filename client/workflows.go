package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Run statuses: a run is running or compensating until it ends in one of
// the others.
const (
	RunRunning      = "running"
	RunCompensating = "compensating"
	RunCompleted    = "completed"
	RunCompensated  = "compensated"
	RunFailed       = "failed"
	RunCancelled    = "cancelled"
)

// WorkflowInfo is a declared workflow: its name, its step ids in
// declaration order and its timeout (0 when it has none).
type WorkflowInfo struct {
	Name    string        `json:"name"`
	Steps   []string      `json:"steps"`
	Timeout time.Duration `json:"timeout"`
}

// UnmarshalJSON reads the timeout as the API spells it, a Go duration.
func (w *WorkflowInfo) UnmarshalJSON(b []byte) error {
	var wire struct {
		Name    string   `json:"name"`
		Steps   []string `json:"steps"`
		Timeout string   `json:"timeout"`
	}
	if err := json.Unmarshal(b, &wire); err != nil {
		return err
	}
	w.Name, w.Steps, w.Timeout = wire.Name, wire.Steps, 0
	if wire.Timeout != "" {
		d, err := time.ParseDuration(wire.Timeout)
		if err != nil {
			return fmt.Errorf("workflow %s: timeout: %w", wire.Name, err)
		}
		w.Timeout = d
	}
	return nil
}

// MarshalJSON writes the timeout as the API spells it, a Go duration.
func (w WorkflowInfo) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Name    string   `json:"name"`
		Steps   []string `json:"steps"`
		Timeout string   `json:"timeout"`
	}{w.Name, w.Steps, w.Timeout.String()})
}

// Run is a workflow run's state: status, input, output, error and each
// step's progress. Input and Output are the JSON values as recorded; an
// absent Output is nil.
type Run struct {
	RunID     string          `json:"run_id"`
	Workflow  string          `json:"workflow"`
	Status    string          `json:"status"`
	Input     json.RawMessage `json:"input,omitempty"`
	Output    json.RawMessage `json:"output,omitempty"`
	Error     string          `json:"error,omitempty"`
	Parent    *RunParent      `json:"parent,omitempty"`
	Trigger   string          `json:"trigger,omitempty"`
	StartedAt time.Time       `json:"started_at"`
	EndedAt   *time.Time      `json:"ended_at,omitempty"`
	TimeoutAt *time.Time      `json:"timeout_at,omitempty"`
	Steps     []RunStep       `json:"steps,omitempty"`
	// Version is the last version of the run's history.
	Version int64 `json:"version"`
	// Replayed is set by StartRun when the idempotency key matched a run
	// started before, which is the run returned.
	Replayed bool `json:"-"`
}

// Ended reports whether the run has reached a final status.
func (r *Run) Ended() bool {
	switch r.Status {
	case RunCompleted, RunCompensated, RunFailed, RunCancelled:
		return true
	}
	return false
}

// RunParent names the run and step that started a child run.
type RunParent struct {
	Run     string `json:"run"`
	Step    string `json:"step"`
	Attempt int    `json:"attempt"`
}

// RunStep is one step's state in a run: pending, running, retrying,
// completed, failed, skipped or abandoned.
type RunStep struct {
	ID           string           `json:"id"`
	Status       string           `json:"status"`
	Attempts     int              `json:"attempts"`
	Output       json.RawMessage  `json:"output,omitempty"`
	Error        string           `json:"error,omitempty"`
	StartedAt    *time.Time       `json:"started_at,omitempty"`
	EndedAt      *time.Time       `json:"ended_at,omitempty"`
	RetryAt      *time.Time       `json:"retry_at,omitempty"`
	Compensation *RunCompensation `json:"compensation,omitempty"`
}

// RunCompensation is the state of a step's compensation: running,
// retrying, completed or failed.
type RunCompensation struct {
	Status   string     `json:"status"`
	Attempts int        `json:"attempts"`
	Error    string     `json:"error,omitempty"`
	RetryAt  *time.Time `json:"retry_at,omitempty"`
}

// RunSummary is a run as ListRuns shows it; Parent is the parent run's
// id for a child run.
type RunSummary struct {
	RunID     string     `json:"run_id"`
	Workflow  string     `json:"workflow"`
	Status    string     `json:"status"`
	Trigger   string     `json:"trigger,omitempty"`
	Parent    string     `json:"parent,omitempty"`
	StartedAt time.Time  `json:"started_at"`
	EndedAt   *time.Time `json:"ended_at,omitempty"`
	Error     string     `json:"error,omitempty"`
}

// RunPage is one page of runs, newest first; NextCursor is empty on the
// last page.
type RunPage struct {
	Runs       []RunSummary `json:"runs"`
	NextCursor string       `json:"next_cursor,omitempty"`
}

// HistoryEvent is one event of a run's history, the record its state is
// folded from.
type HistoryEvent struct {
	Version uint64          `json:"version"`
	Type    string          `json:"type"`
	Time    time.Time       `json:"time"`
	Data    json.RawMessage `json:"data"`
}

// StartRunOptions tune StartRun: a non-empty IdempotencyKey makes a
// repeated start return the first run, and Wait > 0 waits up to that
// long (the server caps it at 60s) for the run to end.
type StartRunOptions struct {
	IdempotencyKey string
	Wait           time.Duration
}

// RunFilter selects runs for ListRuns; zero fields select all, and Limit
// 0 is the server's default page size (20).
type RunFilter struct {
	Workflow string
	Status   string
	Limit    int
	Cursor   string
}

// Workflows returns the workflows the node declares.
func (c *Client) Workflows(ctx context.Context) ([]WorkflowInfo, error) {
	var r struct {
		Workflows []WorkflowInfo `json:"workflows"`
	}
	return r.Workflows, c.do(ctx, http.MethodGet, "/v1/workflows", nil, nil, &r)
}

// StartRun starts a run of workflow with input (any JSON value; empty is
// null). Without opts.Wait only RunID, Workflow, Status and Replayed are
// filled; with it the whole run is returned, ended or not (see Ended).
func (c *Client) StartRun(ctx context.Context, workflow string, input json.RawMessage, opts StartRunOptions) (*Run, error) {
	h := http.Header{}
	if opts.IdempotencyKey != "" {
		h.Set("Idempotency-Key", opts.IdempotencyKey)
	}
	q := url.Values{}
	if opts.Wait > 0 {
		q.Set("wait", opts.Wait.String())
	}
	var body io.Reader
	if len(input) > 0 {
		body = bytes.NewReader(input)
	}
	var r Run
	resp, err := c.doHeader(ctx, http.MethodPost, "/v1/workflows/"+esc(workflow)+"/runs"+encodeQuery(q), h, body, &r)
	if err != nil {
		return nil, err
	}
	r.Replayed = resp.Get("Idempotent-Replayed") == "true"
	return &r, nil
}

// GetRun returns run id's state. With wait > 0 it first waits up to that
// long (the server caps it at 60s) for the run to end, and returns the
// state then, ended or not. An unknown run is an *Error with Code
// run_not_found.
func (c *Client) GetRun(ctx context.Context, id string, wait time.Duration) (*Run, error) {
	q := url.Values{}
	if wait > 0 {
		q.Set("wait", wait.String())
	}
	var r Run
	if err := c.do(ctx, http.MethodGet, "/v1/runs/"+esc(id)+encodeQuery(q), nil, nil, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// ListRuns returns a page of runs, newest first. The list is read from a
// view that trails the runs themselves by a few milliseconds.
func (c *Client) ListRuns(ctx context.Context, f RunFilter) (*RunPage, error) {
	q := url.Values{}
	if f.Workflow != "" {
		q.Set("workflow", f.Workflow)
	}
	if f.Status != "" {
		q.Set("status", f.Status)
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	if f.Cursor != "" {
		q.Set("cursor", f.Cursor)
	}
	var p RunPage
	if err := c.do(ctx, http.MethodGet, "/v1/runs"+encodeQuery(q), nil, nil, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// RunHistory returns the events of run id's history, oldest first.
func (c *Client) RunHistory(ctx context.Context, id string) ([]HistoryEvent, error) {
	var r struct {
		Events []HistoryEvent `json:"events"`
	}
	return r.Events, c.do(ctx, http.MethodGet, "/v1/runs/"+esc(id)+"/history", nil, nil, &r)
}

// SignalRun sends signal to run id with data (any JSON value, or empty):
// a wait step for that signal completes with the data as its output. A
// non-empty idempotencyKey makes a resend of the signal count once.
func (c *Client) SignalRun(ctx context.Context, id, signal string, data json.RawMessage, idempotencyKey string) error {
	h := http.Header{}
	if idempotencyKey != "" {
		h.Set("Idempotency-Key", idempotencyKey)
	}
	var body io.Reader
	if len(data) > 0 {
		body = bytes.NewReader(data)
	}
	return c.do(ctx, http.MethodPost, "/v1/runs/"+esc(id)+"/signals/"+esc(signal), h, body, nil)
}

// CancelRun asks run id to stop: it unwinds, compensating its completed
// steps, and ends cancelled. Cancelling an ended run is an *Error with
// Code run_ended.
func (c *Client) CancelRun(ctx context.Context, id, reason string) error {
	body := map[string]string{}
	if reason != "" {
		body["reason"] = reason
	}
	return c.do(ctx, http.MethodPost, "/v1/runs/"+esc(id)+"/cancel", nil, jsonBody(body), nil)
}

// doHeader is do for calls that also need the response's headers.
func (c *Client) doHeader(ctx context.Context, method, path string, hdr http.Header, body io.Reader, out any) (http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 400 {
		return nil, decodeError(resp)
	}
	return resp.Header, json.NewDecoder(resp.Body).Decode(out)
}
