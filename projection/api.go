package projection

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/junctionhq/junction/internal/httpserver"
	"github.com/junctionhq/junction/internal/problem"
)

// Bounds of a read-your-writes wait (min_position): wait=DURATION asks
// for up to MaxWait, DefaultWait when absent.
const (
	DefaultWait = 5 * time.Second
	MaxWait     = 30 * time.Second
)

// API serves projections' status and their views over HTTP.
type API struct {
	Manager *Manager
}

// Routes returns the projections' and views' HTTP operations.
func (a *API) Routes() []httpserver.Route {
	return []httpserver.Route{
		{Method: "GET", Path: "/v1/projections", Tag: "projections", Summary: "Every projection's state, position, lag and last error", Response: obj{"type": "object", "properties": obj{"projections": arrayOf(statusSchema)}}, Handler: a.list},
		{Method: "GET", Path: "/v1/projections/{name}", Tag: "projections", Summary: "One projection's state, position, lag, last error and rebuild progress", Response: statusSchema, Handler: a.get},
		{Method: "POST", Path: "/v1/projections/{name}/rebuild", Tag: "projections", Summary: "Rebuild a view from the start of the event log into a shadow table that replaces it when caught up; the view answers meanwhile", Status: 202, Response: statusSchema, Handler: a.rebuild},
		{Method: "GET", Path: "/v1/views/{view}/{key}", Tag: "views", Summary: "Read one row of a view by key; min_position waits until the view has applied that position (read-your-writes)", Query: []string{"min_position", "wait"}, Response: rowSchema, Handler: a.row},
		{Method: "GET", Path: "/v1/views/{view}", Tag: "views", Summary: "List a view's rows: column=value filters, order=column or -column, limit, cursor from the previous page; min_position waits for read-your-writes", Query: []string{"order", "limit", "cursor", "min_position", "wait"}, Response: pageSchema, Handler: a.rows},
	}
}

type obj = map[string]any

func arrayOf(s obj) obj { return obj{"type": "array", "items": s} }

var (
	errorSchema  = obj{"type": "object", "properties": obj{"message": obj{"type": "string"}, "position": obj{"type": "integer"}, "stream": obj{"type": "string"}, "type": obj{"type": "string"}, "time": obj{"type": "string", "format": "date-time"}}}
	statusSchema = obj{"type": "object", "properties": obj{
		"name": obj{"type": "string"}, "table": obj{"type": "string"}, "database": obj{"type": "string", "enum": []string{"sqlite", "postgres"}},
		"state":    obj{"type": "string", "enum": []string{StateStarting, StateRunning, StateRetrying, StateFailed, StateRebuilding}},
		"position": obj{"type": "integer"}, "applied_events": obj{"type": "integer"}, "skipped_events": obj{"type": "integer"},
		"lag_seconds": obj{"type": "number"}, "last_error": errorSchema,
		"rebuild": obj{"type": "object", "properties": obj{"position": obj{"type": "integer"}, "applied_events": obj{"type": "integer"}, "started": obj{"type": "string", "format": "date-time"}, "error": errorSchema}},
	}}
	rowSchema  = obj{"type": "object", "description": "the row: one member per declared column"}
	pageSchema = obj{"type": "object", "properties": obj{"rows": arrayOf(rowSchema), "next_cursor": obj{"type": "string", "description": "pass as cursor for the next page; absent on the last"}}}
)

func (a *API) projection(r *http.Request, param string, code problem.Code) (*Projection, error) {
	p, err := a.Manager.Get(r.PathValue(param))
	if err != nil {
		return nil, problem.New(code, "no projection %q", r.PathValue(param))
	}
	return p, nil
}

func (a *API) list(w http.ResponseWriter, r *http.Request) {
	httpserver.WriteJSON(w, http.StatusOK, map[string]any{"projections": a.Manager.Statuses(r.Context())})
}

func (a *API) get(w http.ResponseWriter, r *http.Request) {
	p, err := a.projection(r, "name", problem.CodeProjNotFound)
	if err != nil {
		problem.Write(w, r, err)
		return
	}
	httpserver.WriteJSON(w, http.StatusOK, p.Status(r.Context()))
}

func (a *API) rebuild(w http.ResponseWriter, r *http.Request) {
	p, err := a.projection(r, "name", problem.CodeProjNotFound)
	if err != nil {
		problem.Write(w, r, err)
		return
	}
	if _, err := a.Manager.Rebuild(r.Context(), p.Name()); err != nil {
		problem.Write(w, r, err)
		return
	}
	httpserver.WriteJSON(w, http.StatusAccepted, p.Status(r.Context()))
}

// invalid is a 422 naming the offending query parameter.
func invalid(field, msg string) *problem.Problem {
	p := problem.New(problem.CodeValidation, "%s: %s", field, msg)
	p.Errors = []problem.FieldError{{Field: field, Message: msg}}
	return p
}

// waitFor honours min_position (and wait) before a read.
func waitFor(r *http.Request, p *Projection) error {
	qv := r.URL.Query()
	s := qv.Get("min_position")
	if s == "" {
		if qv.Has("wait") {
			return invalid("wait", "wait applies only with min_position")
		}
		return nil
	}
	pos, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return invalid("min_position", "want a global log position (a non-negative integer), got "+strconv.Quote(s))
	}
	wait := DefaultWait
	if ws := qv.Get("wait"); ws != "" {
		if wait, err = time.ParseDuration(ws); err != nil || wait < 0 || wait > MaxWait {
			return invalid("wait", "want a duration between 0s and "+MaxWait.String()+", got "+strconv.Quote(ws))
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), wait)
	defer cancel()
	err = p.WaitFor(ctx, pos)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrFailed):
		return problem.New(problem.CodeProjFailed, "view %s cannot reach position %d: %v", p.Name(), pos, err)
	case errors.Is(err, context.DeadlineExceeded) && r.Context().Err() == nil:
		pr := problem.New(problem.CodeTimeout, "view %s has not applied position %d within %s", p.Name(), pos, wait)
		pr.RetryAfter = time.Second
		return pr
	}
	return err
}

func viewError(err error) error {
	switch {
	case errors.Is(err, ErrRowNotFound):
		return problem.New(problem.CodeRowNotFound, "%v", err)
	case errors.Is(err, ErrInvalid):
		return problem.New(problem.CodeValidation, "%v", err)
	}
	return err
}

func (a *API) row(w http.ResponseWriter, r *http.Request) {
	p, err := a.projection(r, "view", problem.CodeViewNotFound)
	if err == nil {
		err = waitFor(r, p)
	}
	var row map[string]any
	if err == nil {
		row, err = p.Get(r.Context(), r.PathValue("key"))
	}
	if err != nil {
		problem.Write(w, r, viewError(err))
		return
	}
	httpserver.WriteJSON(w, http.StatusOK, row)
}

// ParseQuery reads a list query from URL parameters: the reserved ones
// (order, limit, cursor, min_position, wait) and every other one as an
// equality filter. Repeating a filter is an error rather than a silent
// pick of one value.
func ParseQuery(values map[string][]string) (Query, error) {
	qr := Query{Filters: map[string]string{}}
	for k, vs := range values {
		if len(vs) != 1 {
			return qr, invalid(k, "give it once")
		}
		v := vs[0]
		switch k {
		case "order":
			qr.Order = v
		case "cursor":
			qr.Cursor = v
		case "limit":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > MaxLimit {
				return qr, invalid("limit", "want an integer between 1 and "+strconv.Itoa(MaxLimit)+", got "+strconv.Quote(v))
			}
			qr.Limit = n
		case "min_position", "wait":
		default:
			qr.Filters[k] = v
		}
	}
	return qr, nil
}

func (a *API) rows(w http.ResponseWriter, r *http.Request) {
	p, err := a.projection(r, "view", problem.CodeViewNotFound)
	var qr Query
	if err == nil {
		qr, err = ParseQuery(r.URL.Query())
	}
	if err == nil {
		err = waitFor(r, p)
	}
	var page Page
	if err == nil {
		page, err = p.List(r.Context(), qr)
	}
	if err != nil {
		problem.Write(w, r, viewError(err))
		return
	}
	httpserver.WriteJSON(w, http.StatusOK, page)
}
