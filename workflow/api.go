package workflow

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/junctionhq/junction/eventstore"
	"github.com/junctionhq/junction/internal/httpserver"
	"github.com/junctionhq/junction/internal/problem"
	"github.com/junctionhq/junction/projection"
)

// MaxWait bounds how long a request may wait for a run to end (wait=).
const MaxWait = 60 * time.Second

// Lister lists runs from the runs view.
type Lister interface {
	List(ctx context.Context, q projection.Query) (projection.Page, error)
}

// API serves workflows and runs over HTTP.
type API struct {
	Engine       *Engine
	Runs         Lister // the junction_runs view; nil disables listing
	MaxBodyBytes int64
}

type obj = map[string]any

var (
	stepSchema = obj{"type": "object", "properties": obj{
		"id": obj{"type": "string"}, "status": obj{"type": "string", "enum": []string{StepPending, StepRunning, StepRetrying, StepCompleted, StepFailed, StepSkipped, StepAbandoned}},
		"attempts": obj{"type": "integer"}, "output": obj{}, "error": obj{"type": "string"},
		"started_at": obj{"type": "string", "format": "date-time"}, "ended_at": obj{"type": "string", "format": "date-time"},
		"retry_at":     obj{"type": "string", "format": "date-time"},
		"compensation": obj{"type": "object", "properties": obj{"status": obj{"type": "string"}, "attempts": obj{"type": "integer"}, "error": obj{"type": "string"}}},
	}}
	runSchema = obj{"type": "object", "properties": obj{
		"run_id": obj{"type": "string"}, "workflow": obj{"type": "string"},
		"status": obj{"type": "string", "enum": []string{StatusRunning, StatusCompensating, StatusCompleted, StatusCompensated, StatusFailed, StatusCancelled}},
		"input":  obj{}, "output": obj{}, "error": obj{"type": "string"}, "trigger": obj{"type": "string"},
		"started_at": obj{"type": "string", "format": "date-time"}, "ended_at": obj{"type": "string", "format": "date-time"},
		"steps": obj{"type": "array", "items": stepSchema}, "version": obj{"type": "integer"},
	}}
	startSchema = obj{"type": "object", "properties": obj{"run_id": obj{"type": "string"}, "workflow": obj{"type": "string"}, "status": obj{"type": "string"}}}
	listSchema  = obj{"type": "object", "properties": obj{
		"runs":        obj{"type": "array", "items": obj{"type": "object", "description": "run_id, workflow, status, trigger, parent, started_at, ended_at, error"}},
		"next_cursor": obj{"type": "string"},
	}}
	historySchema = obj{"type": "object", "properties": obj{"events": obj{"type": "array", "items": obj{"type": "object", "properties": obj{
		"version": obj{"type": "integer"}, "type": obj{"type": "string"}, "time": obj{"type": "string", "format": "date-time"}, "data": obj{"type": "object"}}}}}}
)

// Routes returns the workflow operations.
func (a *API) Routes() []httpserver.Route {
	return []httpserver.Route{
		{Method: "GET", Path: "/v1/workflows", Tag: "workflows", Summary: "The declared workflows and their steps", Handler: a.workflows},
		{Method: "POST", Path: "/v1/workflows/{workflow}/runs", Tag: "workflows", Summary: "Start a run; the body is its input. Idempotency-Key makes a repeated start return the same run; wait=DURATION answers when the run ends (or the wait does)", Query: []string{"wait"}, Request: obj{"description": "the run's input: any JSON value"}, Status: 202, Response: startSchema, Handler: a.start},
		{Method: "GET", Path: "/v1/runs", Tag: "workflows", Summary: "Recent runs, newest first: workflow= and status= filter, limit and cursor page", Query: []string{"workflow", "status", "limit", "cursor"}, Response: listSchema, Handler: a.list},
		{Method: "GET", Path: "/v1/runs/{id}", Tag: "workflows", Summary: "A run's status, steps (state, attempts, output, error, timings) and output; wait=DURATION answers when it ends (or the wait does)", Query: []string{"wait"}, Response: runSchema, Handler: a.get},
		{Method: "GET", Path: "/v1/runs/{id}/history", Tag: "workflows", Summary: "A run's history: the events its state is folded from", Response: historySchema, Handler: a.history},
		{Method: "POST", Path: "/v1/runs/{id}/signals/{signal}", Tag: "workflows", Summary: "Send a signal (the body, any JSON, is its data) to a run; a wait step for it completes with the data. Idempotency-Key makes a resend count once", Request: obj{"description": "the signal's data: any JSON value, or empty"}, Status: 202, Handler: a.signal},
		{Method: "POST", Path: "/v1/runs/{id}/cancel", Tag: "workflows", Summary: "Cancel a run: it unwinds, compensating its completed steps in reverse order", Request: obj{"type": "object", "properties": obj{"reason": obj{"type": "string"}}}, Status: 202, Handler: a.cancel},
	}
}

// Problem maps the engine's errors to the wire catalogue.
func Problem(err error) error {
	var p *problem.Problem
	switch {
	case errors.As(err, &p):
		return p
	case errors.Is(err, ErrWorkflowNotFound):
		return problem.New(problem.CodeWorkflowNotFound, "%v", err)
	case errors.Is(err, ErrRunNotFound):
		return problem.New(problem.CodeRunNotFound, "%v", err)
	case errors.Is(err, ErrInvalidInput):
		return problem.New(problem.CodeValidation, "%v", err)
	case errors.Is(err, ErrRunEnded):
		return problem.New(problem.CodeRunEnded, "%v", err)
	case errors.Is(err, ErrKeyReused):
		return problem.New(problem.CodeKeyReused, "%v", err)
	case errors.Is(err, ErrStopped):
		p := problem.New(problem.CodeUnavailable, "%v", err)
		p.RetryAfter = time.Second
		return p
	case errors.Is(err, eventstore.ErrWrongVersion):
		return problem.New(problem.CodeConflict, "%v", err)
	}
	return err
}

func (a *API) workflows(w http.ResponseWriter, _ *http.Request) {
	out := []obj{}
	for _, name := range a.Engine.Workflows() {
		d := a.Engine.Definition(name)
		out = append(out, obj{"name": name, "steps": d.Steps(), "timeout": d.Timeout.String()})
	}
	httpserver.WriteJSON(w, http.StatusOK, obj{"workflows": out})
}

func (a *API) body(w http.ResponseWriter, r *http.Request) (json.RawMessage, error) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.MaxBodyBytes))
	if err != nil {
		return nil, problem.From(err)
	}
	if len(b) > 0 && !json.Valid(b) {
		return nil, problem.New(problem.CodeBadJSON, "the body is not JSON")
	}
	return b, nil
}

func (a *API) start(w http.ResponseWriter, r *http.Request) {
	wait, err := httpserver.WaitParam(r, MaxWait)
	if err != nil {
		problem.Write(w, r, err)
		return
	}
	in, err := a.body(w, r)
	if err != nil {
		problem.Write(w, r, err)
		return
	}
	run, created, err := a.Engine.StartRun(r.Context(), r.PathValue("workflow"), in,
		StartOptions{IdempotencyKey: r.Header.Get("Idempotency-Key"), Trigger: "api"})
	if err != nil {
		problem.Write(w, r, Problem(err))
		return
	}
	w.Header().Set("Location", "/v1/runs/"+run.ID)
	if !created {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	if wait > 0 {
		a.answerAfter(w, r, run.ID, wait)
		return
	}
	httpserver.WriteJSON(w, http.StatusAccepted, obj{"run_id": run.ID, "workflow": run.Workflow, "status": run.Status})
}

// answerAfter waits up to d for the run to end and answers its state:
// 200 when it has ended, 202 when it is still going.
func (a *API) answerAfter(w http.ResponseWriter, r *http.Request, id string, d time.Duration) {
	ctx, cancel := context.WithTimeout(r.Context(), d)
	defer cancel()
	run, err := a.Engine.Wait(ctx, id)
	if run == nil {
		problem.Write(w, r, Problem(err))
		return
	}
	status := http.StatusOK
	if !run.Terminal() {
		status = http.StatusAccepted
	}
	httpserver.WriteJSON(w, status, run)
}

func (a *API) get(w http.ResponseWriter, r *http.Request) {
	wait, err := httpserver.WaitParam(r, MaxWait)
	if err != nil {
		problem.Write(w, r, err)
		return
	}
	if wait > 0 {
		a.answerAfter(w, r, r.PathValue("id"), wait)
		return
	}
	run, err := a.Engine.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		problem.Write(w, r, Problem(err))
		return
	}
	httpserver.WriteJSON(w, http.StatusOK, run)
}

func (a *API) history(w http.ResponseWriter, r *http.Request) {
	evs, err := a.Engine.History(r.Context(), r.PathValue("id"))
	if err != nil {
		problem.Write(w, r, Problem(err))
		return
	}
	httpserver.WriteJSON(w, http.StatusOK, obj{"events": evs})
}

func (a *API) list(w http.ResponseWriter, r *http.Request) {
	if a.Runs == nil {
		problem.Write(w, r, problem.New(problem.CodeUnavailable, "the runs view is not available"))
		return
	}
	q := r.URL.Query()
	qr := projection.Query{Filters: map[string]string{}, Order: "-started_at", Limit: 20, Cursor: q.Get("cursor")}
	for _, f := range []string{"workflow", "status"} {
		if v := q.Get(f); v != "" {
			qr.Filters[f] = v
		}
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 1000 {
			problem.Write(w, r, problem.New(problem.CodeBadRequest, "limit must be 1..1000, got %q", s))
			return
		}
		qr.Limit = n
	}
	page, err := a.Runs.List(r.Context(), qr)
	if errors.Is(err, projection.ErrInvalid) {
		problem.Write(w, r, problem.New(problem.CodeBadRequest, "%v", err))
		return
	}
	if err != nil {
		problem.Write(w, r, err)
		return
	}
	httpserver.WriteJSON(w, http.StatusOK, obj{"runs": page.Rows, "next_cursor": page.Next})
}

func (a *API) signal(w http.ResponseWriter, r *http.Request) {
	data, err := a.body(w, r)
	if err != nil {
		problem.Write(w, r, err)
		return
	}
	if err := a.Engine.Signal(r.Context(), r.PathValue("id"), r.PathValue("signal"), data, r.Header.Get("Idempotency-Key")); err != nil {
		problem.Write(w, r, Problem(err))
		return
	}
	httpserver.WriteJSON(w, http.StatusAccepted, obj{"run_id": r.PathValue("id"), "signal": r.PathValue("signal")})
}

func (a *API) cancel(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Reason string `json:"reason"`
	}
	if err := httpserver.DecodeJSON(w, r, &body, a.MaxBodyBytes, true); err != nil {
		problem.Write(w, r, err)
		return
	}
	if err := a.Engine.Cancel(r.Context(), r.PathValue("id"), body.Reason); err != nil {
		problem.Write(w, r, Problem(err))
		return
	}
	httpserver.WriteJSON(w, http.StatusAccepted, obj{"run_id": r.PathValue("id"), "status": StatusCompensating})
}
