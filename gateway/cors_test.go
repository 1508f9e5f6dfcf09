package gateway

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/junctionhq/junction/config"
)

func TestCORS(t *testing.T) {
	listed := &config.GatewayCORS{
		Origins: []string{"https://shop.example", "https://admin.example"},
		Headers: []string{"Content-Type", "X-Api-Key"}, Expose: []string{"X-Request-Id", "RateLimit-Remaining"},
		Credentials: true, MaxAge: config.Duration(10 * time.Minute),
	}
	anyOrigin := &config.GatewayCORS{Origins: []string{"*"}, Methods: []string{"GET", "PUT"}}
	mixed := &config.GatewayCORS{Origins: []string{"*", "https://shop.example"}, Credentials: true}
	type want struct {
		code      int
		reached   bool              // the backend saw the request
		headers   map[string]string // "" means absent
		vary      []string
		problemOK bool // a forbidden problem body
	}
	for _, tc := range []struct {
		name   string
		cfg    *config.GatewayCORS
		method string
		hdr    map[string]string
		want   want
	}{
		{"no origin passes untouched", listed, "GET", nil, want{code: 200, reached: true, headers: map[string]string{
			"Access-Control-Allow-Origin": "", "Access-Control-Allow-Credentials": "",
		}}},
		{"simple request from a listed origin", listed, "GET", map[string]string{"Origin": "https://shop.example"}, want{
			code: 200, reached: true, vary: []string{"Origin"}, headers: map[string]string{
				"Access-Control-Allow-Origin": "https://shop.example", "Access-Control-Allow-Credentials": "true",
				"Access-Control-Expose-Headers": "X-Request-Id, RateLimit-Remaining", "Access-Control-Allow-Methods": "",
			}}},
		{"simple request from another origin gets no grant", listed, "POST", map[string]string{"Origin": "https://evil.example"}, want{
			code: 200, reached: true, vary: []string{"Origin"}, headers: map[string]string{
				"Access-Control-Allow-Origin": "", "Access-Control-Allow-Credentials": "", "Access-Control-Expose-Headers": "",
			}}},
		{"origins match exactly", listed, "GET", map[string]string{"Origin": "https://shop.example:443"}, want{
			code: 200, reached: true, vary: []string{"Origin"}, headers: map[string]string{"Access-Control-Allow-Origin": ""}}},
		{"preflight from a listed origin", listed, "OPTIONS", map[string]string{
			"Origin": "https://admin.example", "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type",
		}, want{code: 204, vary: []string{"Origin", "Access-Control-Request-Method", "Access-Control-Request-Headers"}, headers: map[string]string{
			"Access-Control-Allow-Origin": "https://admin.example", "Access-Control-Allow-Methods": "GET, HEAD, POST",
			"Access-Control-Allow-Headers": "Content-Type, X-Api-Key", "Access-Control-Max-Age": "600",
			"Access-Control-Allow-Credentials": "true", "Access-Control-Expose-Headers": "",
		}}},
		{"preflight from another origin is forbidden", listed, "OPTIONS", map[string]string{
			"Origin": "https://evil.example", "Access-Control-Request-Method": "DELETE",
		}, want{code: 403, problemOK: true, vary: []string{"Origin", "Access-Control-Request-Method", "Access-Control-Request-Headers"}, headers: map[string]string{"Access-Control-Allow-Origin": "", "Access-Control-Allow-Methods": ""}}},
		{"options without a requested method is no preflight", listed, "OPTIONS", map[string]string{"Origin": "https://shop.example"}, want{
			code: 200, reached: true, vary: []string{"Origin"}, headers: map[string]string{
				"Access-Control-Allow-Origin": "https://shop.example", "Access-Control-Allow-Methods": "",
			}}},
		{"any origin gets a star and no vary", anyOrigin, "GET", map[string]string{"Origin": "https://x.example"}, want{
			code: 200, reached: true, headers: map[string]string{"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Credentials": ""}}},
		{"preflight for any origin", anyOrigin, "OPTIONS", map[string]string{
			"Origin": "https://x.example", "Access-Control-Request-Method": "PUT",
		}, want{code: 204, vary: []string{"Access-Control-Request-Method", "Access-Control-Request-Headers"}, headers: map[string]string{
			"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Methods": "GET, PUT",
			"Access-Control-Allow-Headers": "", "Access-Control-Max-Age": "",
		}}},
		{"credentials only for a listed origin", mixed, "GET", map[string]string{"Origin": "https://shop.example"}, want{
			code: 200, reached: true, vary: []string{"Origin"}, headers: map[string]string{
				"Access-Control-Allow-Origin": "https://shop.example", "Access-Control-Allow-Credentials": "true",
			}}},
		{"no credentials through the star", mixed, "GET", map[string]string{"Origin": "https://other.example"}, want{
			code: 200, reached: true, vary: []string{"Origin"}, headers: map[string]string{
				"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Credentials": "",
			}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reached := false
			h := newCORS(tc.cfg)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				reached = true
				w.Header().Add("Vary", "Accept")
				w.WriteHeader(http.StatusOK)
			}))
			r := httptest.NewRequest(tc.method, "/orders", nil)
			for k, v := range tc.hdr {
				r.Header.Set(k, v)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			if rec.Code != tc.want.code || reached != tc.want.reached {
				t.Fatalf("code %d reached %v, want %d %v", rec.Code, reached, tc.want.code, tc.want.reached)
			}
			for k, v := range tc.want.headers {
				if got := rec.Header().Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
			vary := slices.DeleteFunc(slices.Clone(rec.Header().Values("Vary")), func(s string) bool { return s == "Accept" })
			if !slices.Equal(vary, tc.want.vary) {
				t.Errorf("Vary %q, want %q", vary, tc.want.vary)
			}
			if tc.want.reached && !slices.Contains(rec.Header().Values("Vary"), "Accept") {
				t.Errorf("the backend's Vary was lost: %q", rec.Header().Values("Vary"))
			}
			if tc.want.problemOK {
				var p struct{ Code string }
				if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil || p.Code != "forbidden" {
					t.Errorf("body %s", rec.Body)
				}
			}
		})
	}
}
