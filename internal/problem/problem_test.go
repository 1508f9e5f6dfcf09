package problem

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestEveryCodeHasAStatus(t *testing.T) {
	for c, st := range statusOf {
		if st < 400 || st > 599 {
			t.Errorf("%s maps to %d", c, st)
		}
		if p := New(c, "x"); p.Status != st || p.Title == "" || p.Type == "" {
			t.Errorf("%s: %+v", c, p)
		}
	}
	if Code("nope").Status() != 500 {
		t.Error("unknown code should be 500")
	}
}

func TestWrite(t *testing.T) {
	cases := []struct {
		name   string
		err    error
		status int
		code   string
		retry  string
	}{
		{"problem", New(CodeConflict, "taken"), 409, "conflict", ""},
		{"wrapped problem", fmt.Errorf("ctx: %w", New(CodeTopicNotFound, "t")), 404, "topic_not_found", ""},
		{"body too large", &http.MaxBytesError{Limit: 10}, 413, "payload_too_large", ""},
		{"plain error", errors.New("boom"), 500, "internal", ""},
		{"retry after", func() error { p := New(CodeUnavailable, "busy"); p.RetryAfter = 1500 * time.Millisecond; return p }(), 503, "unavailable", "2"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			Write(rec, httptest.NewRequest("GET", "/v1/x", nil), c.err)
			var body map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Fatal(err)
			}
			if rec.Code != c.status || body["code"] != c.code || body["instance"] != "/v1/x" ||
				rec.Header().Get("Content-Type") != "application/problem+json" || rec.Header().Get("Retry-After") != c.retry {
				t.Fatalf("%d %v %v", rec.Code, rec.Header(), body)
			}
		})
	}
}

func TestExtensionMembersAreTopLevel(t *testing.T) {
	b, err := json.Marshal(New(CodeConflict, "version").With("current_version", 7).With("code", "ignored"))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	if m["current_version"] != float64(7) || m["code"] != "conflict" {
		t.Fatalf("%s", b)
	}
}
