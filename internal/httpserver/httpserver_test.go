package httpserver

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/junctionhq/junction/internal/problem"
)

func TestMatchPath(t *testing.T) {
	cases := []struct {
		pattern, path string
		want          bool
	}{
		{"/v1/topics", "/v1/topics", true},
		{"/v1/topics/{topic}", "/v1/topics/orders", true},
		{"/v1/topics/{topic}", "/v1/topics/", false},
		{"/v1/topics/{topic}", "/v1/topics/a/b", false},
		{"/v1/topics/{topic}/tail", "/v1/topics/a/tail", true},
		{"/v1/invoke/{service}/{path...}", "/v1/invoke/a/b/c", true},
		{"/v1/invoke/{service}/{path...}", "/v1/invoke/a/", true},
		{"/healthz", "/readyz", false},
	}
	for _, c := range cases {
		if got := matchPath(c.pattern, c.path); got != c.want {
			t.Errorf("matchPath(%q, %q) = %v", c.pattern, c.path, got)
		}
	}
}

func FuzzMatchPath(f *testing.F) {
	f.Add("/v1/topics/{topic}", "/v1/topics/x")
	f.Add("/v1/invoke/{s}/{p...}", "/v1/invoke/a/b")
	f.Fuzz(func(t *testing.T, pattern, path string) {
		if matchPath(pattern, path) && !strings.Contains(pattern, "{") && pattern != path {
			t.Fatalf("literal pattern %q matched %q", pattern, path)
		}
	})
}

func TestRouterAnswersProblems(t *testing.T) {
	r := NewRouter()
	r.Handle(Route{Method: "GET", Path: "/v1/things/{id}", Summary: "get", Handler: func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(204) }})
	r.Handle(Route{Method: "PUT", Path: "/v1/things/{id}", Summary: "put", Handler: func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(200) }})
	cases := []struct {
		method, path string
		status       int
		allow        string
	}{
		{"GET", "/v1/things/1", 204, ""},
		{"DELETE", "/v1/things/1", 405, "GET, PUT"},
		{"GET", "/v1/other", 404, ""},
	}
	for _, c := range cases {
		rec := httptest.NewRecorder()
		r.ServeHTTP(rec, httptest.NewRequest(c.method, c.path, nil))
		if rec.Code != c.status || rec.Header().Get("Allow") != c.allow {
			t.Errorf("%s %s: %d allow %q", c.method, c.path, rec.Code, rec.Header().Get("Allow"))
		}
		if c.status >= 400 && rec.Header().Get("Content-Type") != "application/problem+json" {
			t.Errorf("%s %s: content type %q", c.method, c.path, rec.Header().Get("Content-Type"))
		}
	}
	doc := r.OpenAPI("test")
	paths := doc["paths"].(map[string]any)
	ops := paths["/v1/things/{id}"].(map[string]any)
	if ops["get"] == nil || ops["put"] == nil || ops["get"].(map[string]any)["operationId"] != "getThingsId" {
		t.Fatalf("openapi: %v", ops)
	}
}

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:4000": true, "localhost:4000": true, "[::1]:4000": true,
		":4000": false, "0.0.0.0:4000": false, "10.0.0.5:4000": false, "[::]:4000": false, "garbage": false,
	} {
		if got := IsLoopback(addr); got != want {
			t.Errorf("IsLoopback(%q) = %v", addr, got)
		}
	}
}

func TestDecodeJSON(t *testing.T) {
	type body struct {
		Name string `json:"name"`
		N    int    `json:"n"`
	}
	cases := []struct {
		in         string
		allowEmpty bool
		code       problem.Code
	}{
		{`{"name":"a","n":1}`, false, ""},
		{``, true, ""},
		{``, false, problem.CodeBadJSON},
		{`{"name":`, false, problem.CodeBadJSON},
		{`{"name":"a"} {}`, false, problem.CodeBadJSON},
		{`{"n":"x"}`, false, problem.CodeValidation},
		{`{"other":1}`, false, problem.CodeValidation},
		{`{"name":"` + strings.Repeat("x", 200) + `"}`, false, problem.CodeTooLarge},
	}
	for _, c := range cases {
		var b body
		rec := httptest.NewRecorder()
		err := DecodeJSON(rec, httptest.NewRequest("POST", "/", strings.NewReader(c.in)), &b, 100, c.allowEmpty)
		var got problem.Code
		if err != nil {
			got = problem.From(err).Code
		}
		if got != c.code {
			t.Errorf("%.30q: got %q, want %q (%v)", c.in, got, c.code, err)
		}
	}
}
