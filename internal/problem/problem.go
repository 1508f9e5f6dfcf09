// Package problem is the one catalogue of wire errors: every error the HTTP
// API returns is an RFC 9457 problem+json document with a stable code, so
// clients can branch on the code instead of parsing prose.
package problem

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Code is a stable, machine-readable error identifier. Codes never change
// meaning once published; new conditions get new codes.
type Code string

// The catalogue. Each code maps to exactly one HTTP status.
const (
	CodeBadRequest       Code = "bad_request"
	CodeBadJSON          Code = "bad_json"
	CodeValidation       Code = "validation_failed"
	CodeUnauthorized     Code = "unauthorized"
	CodeForbidden        Code = "forbidden"
	CodeNotFound         Code = "not_found"
	CodeRouteNotFound    Code = "route_not_found"
	CodeMethodNotAllowed Code = "method_not_allowed"
	CodeConflict         Code = "conflict"
	CodeTooLarge         Code = "payload_too_large"
	CodeUnsupportedMedia Code = "unsupported_media_type"
	CodeTopicNotFound    Code = "topic_not_found"
	CodeSubNotFound      Code = "subscription_not_found"
	CodeBadAckID         Code = "invalid_ack_id"
	CodeTooManyRequests  Code = "too_many_requests"
	CodeUnavailable      Code = "unavailable"
	CodeTimeout          Code = "timeout"
	CodeInternal         Code = "internal"
	CodeServiceNotFound  Code = "service_not_found"
	CodeInstanceNotFound Code = "instance_not_found"
	CodeNoInstance       Code = "no_instance_available"
	CodeCircuitOpen      Code = "circuit_open"
	CodeBulkheadFull     Code = "concurrency_limit"
	CodeUpstream         Code = "upstream_unreachable"
	CodeMisdirected      Code = "misdirected_request"
	CodeWrongVersion     Code = "wrong_expected_version"
	CodeStreamNotFound   Code = "stream_not_found"
	CodeStreamDeleted    Code = "stream_deleted"
	CodeProjNotFound     Code = "projection_not_found"
	CodeViewNotFound     Code = "view_not_found"
	CodeRowNotFound      Code = "row_not_found"
	CodeProjFailed       Code = "projection_failed"
	CodeWorkflowNotFound Code = "workflow_not_found"
	CodeRunNotFound      Code = "run_not_found"
	CodeRunEnded         Code = "run_ended"
	CodeKeyReused        Code = "idempotency_key_reused"
	CodePipelineNotFound Code = "pipeline_not_found"
	CodePipelineRunning  Code = "pipeline_running"
)

var statusOf = map[Code]int{
	CodeBadRequest:       http.StatusBadRequest,
	CodeBadJSON:          http.StatusBadRequest,
	CodeValidation:       http.StatusUnprocessableEntity,
	CodeUnauthorized:     http.StatusUnauthorized,
	CodeForbidden:        http.StatusForbidden,
	CodeNotFound:         http.StatusNotFound,
	CodeRouteNotFound:    http.StatusNotFound,
	CodeMethodNotAllowed: http.StatusMethodNotAllowed,
	CodeConflict:         http.StatusConflict,
	CodeTooLarge:         http.StatusRequestEntityTooLarge,
	CodeUnsupportedMedia: http.StatusUnsupportedMediaType,
	CodeTopicNotFound:    http.StatusNotFound,
	CodeSubNotFound:      http.StatusNotFound,
	CodeBadAckID:         http.StatusBadRequest,
	CodeTooManyRequests:  http.StatusTooManyRequests,
	CodeUnavailable:      http.StatusServiceUnavailable,
	CodeTimeout:          http.StatusGatewayTimeout,
	CodeInternal:         http.StatusInternalServerError,
	CodeServiceNotFound:  http.StatusNotFound,
	CodeInstanceNotFound: http.StatusNotFound,
	CodeNoInstance:       http.StatusServiceUnavailable,
	CodeCircuitOpen:      http.StatusServiceUnavailable,
	CodeBulkheadFull:     http.StatusServiceUnavailable,
	CodeUpstream:         http.StatusBadGateway,
	CodeMisdirected:      http.StatusMisdirectedRequest,
	CodeWrongVersion:     http.StatusConflict,
	CodeStreamNotFound:   http.StatusNotFound,
	CodeStreamDeleted:    http.StatusGone,
	CodeProjNotFound:     http.StatusNotFound,
	CodeViewNotFound:     http.StatusNotFound,
	CodeRowNotFound:      http.StatusNotFound,
	CodeProjFailed:       http.StatusServiceUnavailable,
	CodeWorkflowNotFound: http.StatusNotFound,
	CodeRunNotFound:      http.StatusNotFound,
	CodeRunEnded:         http.StatusConflict,
	CodeKeyReused:        http.StatusConflict,
	CodePipelineNotFound: http.StatusNotFound,
	CodePipelineRunning:  http.StatusConflict,
}

// Status returns the HTTP status that belongs to code.
func (c Code) Status() int {
	if s, ok := statusOf[c]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// FieldError points at one invalid input field.
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// Problem is an RFC 9457 problem document. It is also a Go error so domain
// code can return it and handlers can write it unchanged.
type Problem struct {
	Type       string         `json:"type"`
	Title      string         `json:"title"`
	Status     int            `json:"status"`
	Code       Code           `json:"code"`
	Detail     string         `json:"detail,omitempty"`
	Instance   string         `json:"instance,omitempty"`
	Errors     []FieldError   `json:"errors,omitempty"`
	Extra      map[string]any `json:"-"`
	RetryAfter time.Duration  `json:"-"`
}

// New builds a problem for code with a human-readable detail.
func New(code Code, format string, args ...any) *Problem {
	st := code.Status()
	return &Problem{
		Type:   "https://junction.dev/problems/" + string(code),
		Title:  http.StatusText(st),
		Status: st,
		Code:   code,
		Detail: fmt.Sprintf(format, args...),
	}
}

// With adds an extension member to the problem body.
func (p *Problem) With(key string, v any) *Problem {
	if p.Extra == nil {
		p.Extra = map[string]any{}
	}
	p.Extra[key] = v
	return p
}

func (p *Problem) Error() string { return string(p.Code) + ": " + p.Detail }

// MarshalJSON flattens Extra members into the top level, as RFC 9457 wants.
func (p *Problem) MarshalJSON() ([]byte, error) {
	type plain Problem
	b, err := json.Marshal((*plain)(p))
	if err != nil || len(p.Extra) == 0 {
		return b, err
	}
	m := map[string]any{}
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	for k, v := range p.Extra {
		if _, taken := m[k]; !taken {
			m[k] = v
		}
	}
	return json.Marshal(m)
}

// From converts any error into a problem. Errors that are not problems
// become 500 "internal" with the error text as detail: the API is an
// operator interface (loopback or token-protected), where the cause is
// worth more than hiding it.
func From(err error) *Problem {
	var p *Problem
	if errors.As(err, &p) {
		return p
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return New(CodeTooLarge, "request body exceeds the limit of %d bytes", mbe.Limit)
	}
	return New(CodeInternal, "%s", err.Error())
}

// Write sends err as problem+json.
func Write(w http.ResponseWriter, r *http.Request, err error) {
	p := From(err)
	if p.Instance == "" && r != nil {
		p.Instance = r.URL.Path
	}
	h := w.Header()
	h.Set("Content-Type", "application/problem+json")
	if p.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(int((p.RetryAfter+time.Second-1)/time.Second)))
	}
	w.WriteHeader(p.Status)
	_ = json.NewEncoder(w).Encode(p)
}
