package httpserver

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/junctionhq/junction/internal/problem"
)

// DecodeJSON reads a JSON body of at most limit bytes into v, strictly:
// unknown fields are 422, malformed JSON is 400, an oversized body is 413.
// An empty body leaves v unchanged when allowEmpty is set.
func DecodeJSON(w http.ResponseWriter, r *http.Request, v any, limit int64, allowEmpty bool) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		return problem.From(err)
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		if allowEmpty {
			return nil
		}
		return problem.New(problem.CodeBadJSON, "a JSON body is required")
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &se):
			return problem.New(problem.CodeBadJSON, "malformed JSON at byte %d: %v", se.Offset, err)
		case errors.As(err, &te):
			p := problem.New(problem.CodeValidation, "field %q must be %s", te.Field, te.Type)
			p.Errors = []problem.FieldError{{Field: te.Field, Message: fmt.Sprintf("must be %s", te.Type)}}
			return p
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			f := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
			p := problem.New(problem.CodeValidation, "unknown field %q", f)
			p.Errors = []problem.FieldError{{Field: f, Message: "unknown field"}}
			return p
		case errors.Is(err, io.ErrUnexpectedEOF):
			return problem.New(problem.CodeBadJSON, "malformed JSON: unexpected end of input")
		default:
			return problem.New(problem.CodeValidation, "%v", err)
		}
	}
	if dec.More() {
		return problem.New(problem.CodeBadJSON, "malformed JSON: trailing data after the value")
	}
	return nil
}

// WriteJSON writes v as JSON with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// WaitParam reads the query parameter wait (a duration such as 30s) of a
// request that may wait for something to end, capped at max; 0 when
// absent, a bad_request problem when malformed.
func WaitParam(r *http.Request, max time.Duration) (time.Duration, error) {
	s := r.URL.Query().Get("wait")
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, problem.New(problem.CodeBadRequest, "wait must be a duration such as 30s, got %q", s)
	}
	return min(d, max), nil
}
