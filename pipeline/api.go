package pipeline

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/junctionhq/junction/internal/httpserver"
	"github.com/junctionhq/junction/internal/problem"
)

// MaxWait bounds how long a request may wait for a run to end (wait=).
const MaxWait = 5 * time.Minute

// API serves pipelines over HTTP.
type API struct {
	Manager      *Manager
	MaxBodyBytes int64
}

type obj = map[string]any

var (
	summarySchema = obj{"type": "object", "properties": obj{
		"pipeline": obj{"type": "string"}, "run_id": obj{"type": "string"},
		"status": obj{"type": "string", "enum": []string{"running", "completed", "failed", "interrupted"}},
		"read":   obj{"type": "integer"}, "written": obj{"type": "integer"}, "filtered": obj{"type": "integer"},
		"failed": obj{"type": "integer"}, "dead_lettered": obj{"type": "integer"},
		"started": obj{"type": "string", "format": "date-time"}, "ended": obj{"type": "string", "format": "date-time"},
		"duration": obj{"type": "string"}, "rate": obj{"type": "number"}, "resumed": obj{"type": "boolean"}, "error": obj{"type": "string"},
	}}
	statusSchema = obj{"type": "object", "properties": obj{
		"name": obj{"type": "string"}, "input": obj{"type": "string"}, "output": obj{"type": "string"},
		"schedule": obj{"type": "string"}, "stream": obj{"type": "boolean"}, "running": summarySchema, "last_run": summarySchema,
	}}
)

// Routes returns the pipeline operations.
func (a *API) Routes() []httpserver.Route {
	return []httpserver.Route{
		{Method: "GET", Path: "/v1/pipelines", Tag: "pipelines", Summary: "Every pipeline: its input and output, its run in progress and its last run", Response: obj{"type": "object", "properties": obj{"pipelines": obj{"type": "array", "items": statusSchema}}}, Handler: a.list},
		{Method: "POST", Path: "/v1/pipelines/{name}/runs", Tag: "pipelines", Summary: "Start a run (resuming an interrupted one); wait=DURATION answers when it ends (or the wait does)", Query: []string{"wait"}, Status: 202, Response: summarySchema, Handler: a.start},
		{Method: "POST", Path: "/v1/pipelines/{name}/records", Tag: "pipelines", Summary: "Hand records (a JSON object, an array of objects, or JSON lines) to the running pipeline's http_server input; answers when they are written (or dead-lettered)", Request: obj{"description": "a JSON object, an array of objects, or JSON lines"}, Response: obj{"type": "object", "properties": obj{"accepted": obj{"type": "integer"}}}, Handler: a.records},
		{Method: "GET", Path: "/v1/pipelines/{name}/runs/{id}", Tag: "pipelines", Summary: "A run's summary: status and counters (read, written, filtered, failed, dead_lettered), rate; live while it runs", Query: []string{"wait"}, Response: summarySchema, Handler: a.get},
	}
}

func problemOf(err error) error {
	switch {
	case errors.Is(err, ErrNotFound):
		return problem.New(problem.CodePipelineNotFound, "%v", err)
	case errors.Is(err, ErrNoRun):
		return problem.New(problem.CodeRunNotFound, "%v", err)
	case errors.Is(err, ErrRunning):
		return problem.New(problem.CodePipelineRunning, "%v", err)
	}
	return err
}

func (a *API) list(w http.ResponseWriter, r *http.Request) {
	httpserver.WriteJSON(w, http.StatusOK, obj{"pipelines": a.Manager.Statuses(r.Context())})
}

func (a *API) start(w http.ResponseWriter, r *http.Request) {
	wait, err := httpserver.WaitParam(r, MaxWait)
	if err != nil {
		problem.Write(w, r, err)
		return
	}
	name := r.PathValue("name")
	s, err := a.Manager.Start(r.Context(), name, nil)
	if err != nil {
		problem.Write(w, r, problemOf(err))
		return
	}
	w.Header().Set("Location", "/v1/pipelines/"+name+"/runs/"+s.RunID)
	a.answer(w, r, name, s, wait)
}

// answer waits up to d for the run to end: 200 when it has, 202 while
// it runs.
func (a *API) answer(w http.ResponseWriter, r *http.Request, name string, s Summary, d time.Duration) {
	if d > 0 && s.Status == "running" {
		ctx, cancel := context.WithTimeout(r.Context(), d)
		defer cancel()
		var err error
		if s, err = a.Manager.Wait(ctx, name, s.RunID); err != nil && ctx.Err() == nil {
			problem.Write(w, r, problemOf(err))
			return
		}
	}
	status := http.StatusOK
	if s.Status == "running" {
		status = http.StatusAccepted
	}
	httpserver.WriteJSON(w, status, s)
}

func (a *API) records(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if _, err := a.Manager.Config(name); err != nil {
		problem.Write(w, r, problemOf(err))
		return
	}
	recs, err := DecodeRecords(http.MaxBytesReader(w, r.Body, a.MaxBodyBytes))
	if err != nil {
		var mb *http.MaxBytesError
		if errors.As(err, &mb) {
			problem.Write(w, r, problem.From(err))
			return
		}
		problem.Write(w, r, problem.New(problem.CodeBadJSON, "%v", err))
		return
	}
	if err := a.Manager.o.Env.Receiver.Post(r.Context(), name, recs); err != nil {
		if errors.Is(err, ErrNotRunning) {
			p := problem.New(problem.CodeUnavailable, "%v", err)
			p.RetryAfter = time.Second
			problem.Write(w, r, p)
			return
		}
		problem.Write(w, r, err)
		return
	}
	httpserver.WriteJSON(w, http.StatusOK, obj{"accepted": len(recs)})
}

func (a *API) get(w http.ResponseWriter, r *http.Request) {
	wait, err := httpserver.WaitParam(r, MaxWait)
	if err != nil {
		problem.Write(w, r, err)
		return
	}
	name := r.PathValue("name")
	s, err := a.Manager.Get(r.Context(), name, r.PathValue("id"))
	if err != nil {
		problem.Write(w, r, problemOf(err))
		return
	}
	a.answer(w, r, name, s, wait)
}
