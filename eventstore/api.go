package eventstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/junctionhq/junction/internal/httpserver"
	"github.com/junctionhq/junction/internal/problem"
)

// Read limits of the HTTP API: a read without limit gets DefaultReadLimit
// events, and no read gets more than MaxReadLimit, so one request cannot
// pull a whole store into memory.
const (
	DefaultReadLimit = 100
	MaxReadLimit     = 10000
)

// API serves an event store over HTTP (DESIGN section 4).
type API struct {
	Store        Store
	MaxBodyBytes int64 // largest append request body (api.max_body_bytes)
	// Closing, when closed, ends every open follow: the node closes it
	// when it starts shutting down. Nil means follows end only when their
	// client goes away.
	Closing <-chan struct{}
}

// Routes returns the event store's HTTP operations.
func (a *API) Routes() []httpserver.Route {
	const tag = "streams"
	return []httpserver.Route{
		{Method: "POST", Path: "/v1/streams/{stream}", Tag: tag, Summary: "Append events to a stream if its version is as expected; retrying the same event ids returns the first result", Status: 201, Request: appendSchema, Response: appendResultSchema, Handler: a.append},
		{Method: "GET", Path: "/v1/streams/{stream}", Tag: tag, Summary: "Read a stream's events forward or backward from a version; with follow=true, stream them from the version (or after Last-Event-ID) and then live as server-sent events", Query: []string{"from", "limit", "direction", "follow"}, Response: streamSchema, Handler: a.readStream},
		{Method: "DELETE", Path: "/v1/streams/{stream}", Tag: tag, Summary: "Soft-delete a stream: reads answer 410, the global log keeps its events", Status: 204, Handler: a.deleteStream},
		{Method: "PUT", Path: "/v1/streams/{stream}/retention", Tag: tag, Summary: "Set a stream's retention (its maximum age and event count; absent fields mean no bound), also before the stream exists; events outside it are no longer read and are removed", Request: retentionSchema, Response: retentionSchema, Handler: a.setRetention},
		{Method: "GET", Path: "/v1/streams/{stream}/retention", Tag: tag, Summary: "Read a stream's retention; an empty object when it has none", Response: retentionSchema, Handler: a.getRetention},
		{Method: "GET", Path: "/v1/events", Tag: tag, Summary: "Read the global log of every stream in commit order, optionally filtered by category and event type; with follow=true, stream it from the position (or after Last-Event-ID) and then live as server-sent events", Query: []string{"from_position", "limit", "category", "types", "follow"}, Response: allSchema, Handler: a.readAll},
	}
}

type obj = map[string]any

func arrayOf(s obj) obj { return obj{"type": "array", "items": s} }

var (
	str             = obj{"type": "string"}
	integer         = obj{"type": "integer"}
	anyJSON         = obj{"description": "any JSON value"}
	expectedSchema  = obj{"oneOf": []any{obj{"type": "string", "enum": []string{"any", "no_stream", "exists"}}, obj{"type": "integer", "minimum": 0}}}
	eventDataSchema = obj{"type": "object", "additionalProperties": false, "required": []string{"type", "data"}, "properties": obj{
		"id": obj{"type": "string", "description": "idempotency key; a UUIDv7 when absent"}, "type": str, "data": anyJSON, "metadata": anyJSON}}
	appendSchema = obj{"type": "object", "additionalProperties": false, "required": []string{"events"}, "properties": obj{
		"events": arrayOf(eventDataSchema), "expected_version": expectedSchema}}
	appendResultSchema = obj{"type": "object", "properties": obj{"first_version": integer, "last_version": integer, "position": integer}}
	eventSchema        = obj{"type": "object", "properties": obj{
		"stream": str, "version": integer, "position": integer, "id": str, "type": str, "data": anyJSON, "metadata": anyJSON,
		"time": obj{"type": "string", "format": "date-time"}}}
	retentionSchema = obj{"type": "object", "additionalProperties": false, "properties": obj{
		"max_age":   obj{"type": "string", "description": `a duration such as "720h" or "90m"; absent means no maximum age`},
		"max_count": obj{"type": "integer", "minimum": 0, "description": "how many of the last versions are kept; absent or 0 means no maximum"}}}
	streamSchema = obj{"type": "object", "properties": obj{"stream": str, "events": arrayOf(eventSchema)}}
	allSchema    = obj{"type": "object", "properties": obj{"events": arrayOf(eventSchema),
		"next_position": obj{"type": "integer", "description": "pass as from_position to continue after these events"}}}
)

// AppendRequest is the body of POST /v1/streams/{stream}.
type AppendRequest struct {
	Events []WireEventData `json:"events"`
	// ExpectedVersion is "any" (the default), "no_stream", "exists" or a
	// version number.
	ExpectedVersion json.RawMessage `json:"expected_version,omitempty"`
}

// WireEventData is an event to append as the HTTP API spells it.
type WireEventData struct {
	ID       string          `json:"id,omitempty"`
	Type     string          `json:"type"`
	Data     json.RawMessage `json:"data"`
	Metadata json.RawMessage `json:"metadata,omitempty"`
}

// WireAppendResult is the answer to an append.
type WireAppendResult struct {
	FirstVersion uint64 `json:"first_version"`
	LastVersion  uint64 `json:"last_version"`
	Position     uint64 `json:"position"`
}

// WireEvent is a stored event as the HTTP API spells it: data and
// metadata are JSON values, not strings.
type WireEvent struct {
	Stream   string          `json:"stream"`
	Version  uint64          `json:"version"`
	Position uint64          `json:"position"`
	ID       string          `json:"id"`
	Type     string          `json:"type"`
	Data     json.RawMessage `json:"data"`
	Metadata json.RawMessage `json:"metadata"`
	Time     time.Time       `json:"time"`
}

func wireEvents(es []Event) []WireEvent {
	out := make([]WireEvent, len(es))
	for i, e := range es {
		out[i] = WireEvent{Stream: e.Stream, Version: e.Version, Position: e.Position, ID: e.ID, Type: e.Type,
			Data: json.RawMessage(e.Data), Metadata: json.RawMessage(e.Metadata), Time: e.Time.UTC()}
	}
	return out
}

// invalid is a 422 naming the offending field.
func invalid(field, format string, args ...any) *problem.Problem {
	msg := fmt.Sprintf(format, args...)
	p := problem.New(problem.CodeValidation, "%s: %s", field, msg)
	p.Errors = []problem.FieldError{{Field: field, Message: msg}}
	return p
}

// apiError turns a store error into its problem.
func apiError(stream string, err error) error {
	var ve *VersionError
	switch {
	case errors.As(err, &ve):
		return problem.New(problem.CodeWrongVersion, "stream %q is at version %d, expected %s", ve.Stream, ve.Current, ve.Expected).
			With("current_version", ve.Current).With("expected_version", wireExpected(ve.Expected))
	case errors.Is(err, ErrStreamNotFound):
		return problem.New(problem.CodeStreamNotFound, "stream %q does not exist", stream)
	case errors.Is(err, ErrStreamDeleted):
		return problem.New(problem.CodeStreamDeleted, "stream %q was deleted", stream)
	case errors.Is(err, ErrInvalid):
		msg := strings.TrimPrefix(err.Error(), ErrInvalid.Error()+": ")
		p := problem.New(problem.CodeValidation, "%s", msg)
		p.Errors = []problem.FieldError{{Field: "events", Message: msg}}
		return p
	}
	return err
}

// wireExpected is an expected version as the API spells it: a string for
// the special conditions, a number otherwise.
func wireExpected(e ExpectedVersion) any {
	if e < 0 {
		return e.String()
	}
	return int64(e)
}

// parseExpected reads expected_version; absent means any.
func parseExpected(raw json.RawMessage) (ExpectedVersion, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return Any, nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		switch s {
		case "any":
			return Any, nil
		case "no_stream":
			return NoStream, nil
		case "exists":
			return StreamExists, nil
		}
		return 0, invalid("expected_version", `want "any", "no_stream", "exists" or a version number, got %q`, s)
	}
	n, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil || n < 0 {
		return 0, invalid("expected_version", `want "any", "no_stream", "exists" or a version number >= 0, got %s`, raw)
	}
	return ExpectedVersion(n), nil
}

// parseAppend validates an append request: the checks with a field to
// name are made here, the rest by Prepare in the store.
func parseAppend(stream string, req *AppendRequest) (ExpectedVersion, []EventData, error) {
	if !ValidStreamName(stream) {
		return 0, nil, invalid("stream", "want 1..%d characters of [A-Za-z0-9_.:-], not starting with '$'", MaxNameLen)
	}
	expected, err := parseExpected(req.ExpectedVersion)
	if err != nil {
		return 0, nil, err
	}
	if len(req.Events) == 0 {
		return 0, nil, invalid("events", "at least one event is required")
	}
	events := make([]EventData, len(req.Events))
	seen := make(map[string]int, len(req.Events))
	for i, e := range req.Events {
		f := fmt.Sprintf("events[%d]", i)
		switch {
		case e.Type == "":
			return 0, nil, invalid(f+".type", "type is required")
		case len(e.Type) > MaxNameLen:
			return 0, nil, invalid(f+".type", "longer than %d bytes", MaxNameLen)
		case len(e.ID) > MaxNameLen:
			return 0, nil, invalid(f+".id", "longer than %d bytes", MaxNameLen)
		case e.Data == nil:
			return 0, nil, invalid(f+".data", "data is required (any JSON value, null included)")
		}
		if e.ID != "" {
			if j, dup := seen[e.ID]; dup {
				return 0, nil, invalid(f+".id", "id %q is also the id of events[%d]", e.ID, j)
			}
			seen[e.ID] = i
		}
		md := []byte(e.Metadata)
		if string(bytes.TrimSpace(md)) == "null" {
			md = nil
		}
		events[i] = EventData{ID: e.ID, Type: e.Type, Data: e.Data, Metadata: md}
	}
	return expected, events, nil
}

func (a *API) append(w http.ResponseWriter, r *http.Request) {
	var req AppendRequest
	if err := httpserver.DecodeJSON(w, r, &req, a.MaxBodyBytes, false); err != nil {
		problem.Write(w, r, err)
		return
	}
	stream := r.PathValue("stream")
	expected, events, err := parseAppend(stream, &req)
	if err != nil {
		problem.Write(w, r, err)
		return
	}
	res, err := a.Store.Append(r.Context(), stream, expected, events)
	if err != nil {
		problem.Write(w, r, apiError(stream, err))
		return
	}
	httpserver.WriteJSON(w, http.StatusCreated, WireAppendResult(res))
}

// query reads a query string's parameters, refusing unknown and repeated
// ones so a misspelt parameter is an error rather than silently ignored.
func query(q url.Values, known ...string) (map[string]string, error) {
	out := make(map[string]string, len(q))
	for k, vs := range q {
		ok := false
		for _, kn := range known {
			ok = ok || k == kn
		}
		if !ok {
			return nil, invalid(k, "unknown query parameter (known: %s)", strings.Join(known, ", "))
		}
		if len(vs) != 1 {
			return nil, invalid(k, "given %d times", len(vs))
		}
		out[k] = vs[0]
	}
	return out, nil
}

// parseFollow reads follow; with follow=true, a limit or a backward
// direction is refused, since a follow has no end and only goes forward.
func parseFollow(p map[string]string) (bool, error) {
	switch v := p["follow"]; v {
	case "true":
	case "false", "":
		return false, nil
	default:
		return false, invalid("follow", "want true or false, got %q", v)
	}
	if _, ok := p["limit"]; ok {
		return false, invalid("limit", "a follow has no limit")
	}
	if p["direction"] == "backward" {
		return false, invalid("direction", "a follow reads forward")
	}
	return true, nil
}

// lastEventID reads the Last-Event-ID header an EventSource sends when it
// reconnects: the id of the last event it received, so the follow resumes
// after it.
func lastEventID(r *http.Request) (uint64, bool, error) {
	v := r.Header.Get("Last-Event-ID")
	if v == "" {
		return 0, false, nil
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil || n == math.MaxUint64 {
		return 0, false, invalid("Last-Event-ID", "want the id of an event received, got %q", v)
	}
	return n, true, nil
}

func parseLimit(p map[string]string) (int, error) {
	v, ok := p["limit"]
	if !ok {
		return DefaultReadLimit, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > MaxReadLimit {
		return 0, invalid("limit", "want a number from 1 to %d, got %q", MaxReadLimit, v)
	}
	return n, nil
}

func parseUint(p map[string]string, name string) (uint64, bool, error) {
	v, ok := p[name]
	if !ok {
		return 0, false, nil
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, false, invalid(name, "want a number >= 0, got %q", v)
	}
	return n, true, nil
}

// parseReadQuery reads the query of GET /v1/streams/{stream}. A forward
// read starts at version 0 by default, a backward one at the end. follow
// reports follow=true (Limit is then 0).
func parseReadQuery(stream string, q url.Values) (o ReadOptions, follow bool, err error) {
	if !ValidStreamName(stream) {
		return ReadOptions{}, false, invalid("stream", "want 1..%d characters of [A-Za-z0-9_.:-], not starting with '$'", MaxNameLen)
	}
	p, err := query(q, "from", "limit", "direction", "follow")
	if err != nil {
		return ReadOptions{}, false, err
	}
	if follow, err = parseFollow(p); err != nil {
		return ReadOptions{}, false, err
	}
	switch d := p["direction"]; d {
	case "", "forward":
	case "backward":
		o.Backward = true
	default:
		return ReadOptions{}, false, invalid("direction", "want forward or backward, got %q", d)
	}
	from, set, err := parseUint(p, "from")
	if err != nil {
		return ReadOptions{}, false, err
	}
	o.From = from
	if o.Backward && !set {
		o.From = math.MaxUint64
	}
	if follow {
		return o, true, nil
	}
	if o.Limit, err = parseLimit(p); err != nil {
		return ReadOptions{}, false, err
	}
	return o, false, nil
}

// parseAllQuery reads the query of GET /v1/events. category and types are
// comma-separated lists. follow reports follow=true (Limit is then 0).
func parseAllQuery(q url.Values) (o ReadAllOptions, follow bool, err error) {
	p, err := query(q, "from_position", "limit", "category", "types", "follow")
	if err != nil {
		return ReadAllOptions{}, false, err
	}
	if follow, err = parseFollow(p); err != nil {
		return ReadAllOptions{}, false, err
	}
	if o.From, _, err = parseUint(p, "from_position"); err != nil {
		return ReadAllOptions{}, false, err
	}
	if !follow {
		if o.Limit, err = parseLimit(p); err != nil {
			return ReadAllOptions{}, false, err
		}
	}
	if v := p["category"]; v != "" {
		for _, c := range strings.Split(v, ",") {
			if !ValidStreamName(c) || strings.Contains(c, "-") {
				return ReadAllOptions{}, false, invalid("category", "%q is not a category: want the part of a stream name before its first '-'", c)
			}
			o.Categories = append(o.Categories, c)
		}
	}
	if v := p["types"]; v != "" {
		for _, t := range strings.Split(v, ",") {
			if t == "" || len(t) > MaxNameLen {
				return ReadAllOptions{}, false, invalid("types", "want a comma-separated list of event types of 1..%d bytes", MaxNameLen)
			}
			o.Types = append(o.Types, t)
		}
	}
	return o, follow, nil
}

func (a *API) readStream(w http.ResponseWriter, r *http.Request) {
	stream := r.PathValue("stream")
	o, follow, err := parseReadQuery(stream, r.URL.Query())
	if err != nil {
		problem.Write(w, r, err)
		return
	}
	if follow {
		a.followStream(w, r, stream, o.From)
		return
	}
	es, err := a.Store.ReadStream(r.Context(), stream, o)
	if err != nil {
		problem.Write(w, r, apiError(stream, err))
		return
	}
	httpserver.WriteJSON(w, http.StatusOK, struct {
		Stream string      `json:"stream"`
		Events []WireEvent `json:"events"`
	}{stream, wireEvents(es)})
}

func (a *API) readAll(w http.ResponseWriter, r *http.Request) {
	o, follow, err := parseAllQuery(r.URL.Query())
	if err != nil {
		problem.Write(w, r, err)
		return
	}
	if follow {
		a.followAll(w, r, o)
		return
	}
	es, err := a.Store.ReadAll(r.Context(), o)
	if err != nil {
		problem.Write(w, r, apiError("$all", err))
		return
	}
	next := o.From
	if len(es) > 0 {
		next = es[len(es)-1].Position + 1
	}
	httpserver.WriteJSON(w, http.StatusOK, struct {
		Events       []WireEvent `json:"events"`
		NextPosition uint64      `json:"next_position"`
	}{wireEvents(es), next})
}

func (a *API) deleteStream(w http.ResponseWriter, r *http.Request) {
	stream := r.PathValue("stream")
	if !ValidStreamName(stream) {
		problem.Write(w, r, invalid("stream", "want 1..%d characters of [A-Za-z0-9_.:-], not starting with '$'", MaxNameLen))
		return
	}
	if err := a.Store.Delete(r.Context(), stream); err != nil {
		problem.Write(w, r, apiError(stream, err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// WireRetention is a stream's retention as the HTTP API spells it:
// max_age is a Go duration string. Absent fields mean no bound.
type WireRetention struct {
	MaxAge   *string `json:"max_age,omitempty"`
	MaxCount *uint64 `json:"max_count,omitempty"`
}

func wireRetention(r Retention) WireRetention {
	var w WireRetention
	if r.MaxAge != 0 {
		s := r.MaxAge.String()
		w.MaxAge = &s
	}
	if r.MaxCount != 0 {
		w.MaxCount = &r.MaxCount
	}
	return w
}

// parseRetention validates a retention request.
func parseRetention(stream string, w WireRetention) (Retention, error) {
	if !ValidStreamName(stream) {
		return Retention{}, invalid("stream", "want 1..%d characters of [A-Za-z0-9_.:-], not starting with '$'", MaxNameLen)
	}
	var r Retention
	if w.MaxAge != nil {
		d, err := time.ParseDuration(*w.MaxAge)
		if err != nil || d < 0 {
			return Retention{}, invalid("max_age", `want a duration >= 0 such as "720h" or "90m", got %q`, *w.MaxAge)
		}
		r.MaxAge = d
	}
	if w.MaxCount != nil {
		r.MaxCount = *w.MaxCount
	}
	if r.MaxCount > math.MaxInt64 {
		return Retention{}, invalid("max_count", "want a number from 0 to %d", int64(math.MaxInt64))
	}
	return r, nil
}

func (a *API) setRetention(w http.ResponseWriter, r *http.Request) {
	var req WireRetention
	if err := httpserver.DecodeJSON(w, r, &req, a.MaxBodyBytes, false); err != nil {
		problem.Write(w, r, err)
		return
	}
	stream := r.PathValue("stream")
	ret, err := parseRetention(stream, req)
	if err != nil {
		problem.Write(w, r, err)
		return
	}
	if err := a.Store.SetRetention(r.Context(), stream, ret); err != nil {
		problem.Write(w, r, apiError(stream, err))
		return
	}
	httpserver.WriteJSON(w, http.StatusOK, wireRetention(ret))
}

func (a *API) getRetention(w http.ResponseWriter, r *http.Request) {
	stream := r.PathValue("stream")
	if !ValidStreamName(stream) {
		problem.Write(w, r, invalid("stream", "want 1..%d characters of [A-Za-z0-9_.:-], not starting with '$'", MaxNameLen))
		return
	}
	ret, err := a.Store.GetRetention(r.Context(), stream)
	if err != nil {
		problem.Write(w, r, apiError(stream, err))
		return
	}
	httpserver.WriteJSON(w, http.StatusOK, wireRetention(ret))
}

// KeepAlive is how often an idle follow sends an SSE comment, so proxies
// and clients see the connection is alive.
const KeepAlive = 15 * time.Second

// followStream serves GET /v1/streams/{stream}?follow=true: the stream's
// events from version from (after Last-Event-ID when an EventSource
// reconnects), then each new one, as server-sent events whose id is the
// version. A stream that does not exist yet is waited for; a deleted one
// answers 410, and deleting it while followed ends the follow with an
// error event.
func (a *API) followStream(w http.ResponseWriter, r *http.Request, stream string, from uint64) {
	if last, ok, err := lastEventID(r); err != nil {
		problem.Write(w, r, err)
		return
	} else if ok {
		from = last + 1
	}
	if _, err := a.Store.ReadStream(r.Context(), stream, ReadOptions{From: from, Limit: 1}); err != nil && !errors.Is(err, ErrStreamNotFound) {
		problem.Write(w, r, apiError(stream, err))
		return
	}
	a.serveFollow(w, r, func(e Event) uint64 { return e.Version }, func(ctx context.Context, fn func(Event) error) error {
		return FollowStream(ctx, a.Store, stream, from, fn)
	})
}

// followAll serves GET /v1/events?follow=true: the global log from
// from_position (after Last-Event-ID when an EventSource reconnects), then
// each new event, as server-sent events whose id is the position.
func (a *API) followAll(w http.ResponseWriter, r *http.Request, o ReadAllOptions) {
	if last, ok, err := lastEventID(r); err != nil {
		problem.Write(w, r, err)
		return
	} else if ok {
		o.From = last + 1
	}
	a.serveFollow(w, r, func(e Event) uint64 { return e.Position }, func(ctx context.Context, fn func(Event) error) error {
		return FollowAll(ctx, a.Store, o, fn)
	})
}

// serveFollow streams the events follow hands it as server-sent events,
// each flushed at once: "id: <id(e)>" and "data: <the event's JSON>". It
// ends when the client goes away, the node shuts down (Closing) or the
// follow fails, which is reported as an "error" event.
func (a *API) serveFollow(w http.ResponseWriter, r *http.Request, id func(Event) uint64, follow func(context.Context, func(Event) error) error) {
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	if a.Closing != nil {
		go func() {
			select {
			case <-a.Closing:
				cancel()
			case <-ctx.Done():
			}
		}()
	}
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	_ = rc.Flush()
	var mu sync.Mutex
	idle := make(chan struct{})
	go func() {
		defer close(idle)
		t := time.NewTicker(KeepAlive)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				mu.Lock()
				_, _ = io.WriteString(w, ": keep-alive\n\n")
				_ = rc.Flush()
				mu.Unlock()
			}
		}
	}()
	var buf bytes.Buffer
	err := follow(ctx, func(e Event) error {
		buf.Reset()
		fmt.Fprintf(&buf, "id: %d\ndata: ", id(e))
		b, err := json.Marshal(wireEvents([]Event{e})[0])
		if err != nil {
			return err
		}
		buf.Write(b)
		buf.WriteString("\n\n")
		mu.Lock()
		defer mu.Unlock()
		if _, err := w.Write(buf.Bytes()); err != nil {
			return err
		}
		return rc.Flush()
	})
	failed := err != nil && ctx.Err() == nil
	cancel()
	<-idle // nothing writes to w once the handler returns
	if failed {
		msg, _ := json.Marshal(err.Error())
		fmt.Fprintf(w, "event: error\ndata: %s\n\n", msg)
		_ = rc.Flush()
	}
}
