package gateway_test

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/internal/testutil"
)

// headerEcho answers with the request's path and headers, after delay.
func headerEcho(t *testing.T, delay time.Duration) *httptest.Server {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"path": r.URL.EscapedPath(), "headers": r.Header})
	}))
	t.Cleanup(s.Close)
	return s
}

// Requests that would mean one route to the gateway and another to a
// server behind it are refused; identity headers cannot be forged; a
// timeout is a 504 that no cache keeps; responses to requests with
// cookies are not shared; a client's X-Forwarded-For is not passed on.
func TestGatewayHardening(t *testing.T) {
	echo, slow := headerEcho(t, 0), headerEcho(t, 300*time.Millisecond)
	keyHash := "sha256:" + fmt.Sprintf("%x", sha256.Sum256([]byte("k-0123456789abcdef")))
	admin := config.GatewayMiddleware{Auth: &config.GatewayAuth{APIKey: &config.APIKeyAuth{Keys: map[string]string{"ops": keyHash}}}}
	cfg := testutil.Config(t, testutil.Embedded)
	cfg.Gateway = config.Gateway{Listen: "127.0.0.1:0", Routes: []*config.GatewayRoute{
		{Path: "/api/admin/{rest...}", URL: []string{echo.URL}, GatewayMiddleware: admin},
		{Path: "/api/{rest...}", URL: []string{echo.URL}},
		{Path: "/panel", Host: "admin.example.com", URL: []string{echo.URL}, GatewayMiddleware: admin},
		{Path: "/panel", URL: []string{echo.URL}},
		{Path: "/slow", URL: []string{slow.URL}, GatewayMiddleware: config.GatewayMiddleware{
			Timeout: config.Duration(50 * time.Millisecond), Cache: &config.GatewayCache{TTL: config.Duration(time.Minute)}}},
		{Path: "/cached", URL: []string{echo.URL}, GatewayMiddleware: config.GatewayMiddleware{Cache: &config.GatewayCache{TTL: config.Duration(time.Minute)}}},
		{Path: "/old/{rest...}", Redirect: &config.GatewayRedirect{URL: "/{rest...}"}},
	}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	gw := "http://" + testutil.Start(t, cfg).Node.GatewayAddr()

	if code, _, _, _ := get(t, "GET", gw+"/api/admin/users", nil, ""); code != 401 {
		t.Fatalf("admin without a key: %d", code)
	}
	for _, p := range []string{"/api/public/../admin/users", "/api/x/%2e%2e/admin/users", "/api/x/%2E%2E/admin/users", "/api//admin/users",
		"/api/admin;x/users", "/api/x/..%2f..%2fadmin", "/api/x/a%5c..%5cadmin", "/api/./admin/users"} {
		if code, _, m, _ := get(t, "GET", gw+p, nil, ""); code != 400 || m["code"] != "bad_request" {
			t.Errorf("GET %s = %d %v, want 400 bad_request", p, code, m)
		}
	}
	if code, _, m, _ := get(t, "GET", gw+"/api/orders/a%2Fb/", nil, ""); code != 200 || m["path"] != "/api/orders/a%2Fb/" {
		t.Errorf("an encoded slash inside a segment: %d %v", code, m)
	}

	_, _, m, _ := get(t, "GET", gw+"/api/whoami", map[string]string{"X-Api-Key-Name": "ops", "X_Api_Key_Name": "ops", "X-Forwarded-For": "6.6.6.6"}, "")
	h, _ := m["headers"].(map[string]any)
	if h["X-Api-Key-Name"] != nil || h["X_api_key_name"] != nil || h["X_Api_Key_Name"] != nil {
		t.Errorf("forged identity reached the service: %v", h)
	}
	if xff := fmt.Sprint(h["X-Forwarded-For"]); xff != "[127.0.0.1]" {
		t.Errorf("X-Forwarded-For upstream = %s, want only the peer", xff)
	}

	req, _ := http.NewRequest("GET", gw+"/panel", nil)
	req.Host = "admin.example.com."
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Errorf("a trailing dot in Host reached the route without auth: %d", resp.StatusCode)
	}

	for i := range 2 {
		code, h, _, body := get(t, "GET", gw+"/slow", nil, "")
		if code != 504 || h.Get("X-Cache") == "HIT" {
			t.Errorf("timeout, try %d: %d %s %v", i, code, body, h)
		}
	}

	get(t, "GET", gw+"/cached", map[string]string{"Cookie": "session=a"}, "")
	if _, h, _, _ := get(t, "GET", gw+"/cached", map[string]string{"Cookie": "session=b"}, ""); h.Get("X-Cache") == "HIT" {
		t.Error("a response to a request with a cookie was shared")
	}

	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, p := range []string{"/old/%2Fevil.example/x", "/old/%5Cevil.example"} {
		resp, err := c.Get(gw + p)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if loc := resp.Header.Get("Location"); resp.StatusCode == 302 && len(loc) > 1 && (loc[1] == '/' || loc[1] == '\\') {
			t.Errorf("GET %s redirects off the host: %s", p, loc)
		}
	}
}

// Failed authentications spend rate-limit tokens when the limit is keyed
// by address, so keys cannot be guessed at full speed.
func TestRateLimitBeforeAuth(t *testing.T) {
	keyHash := "sha256:" + fmt.Sprintf("%x", sha256.Sum256([]byte("k-0123456789abcdef")))
	_, gw := gatewayNode(t, []*config.GatewayRoute{{Path: "/x", Service: "orders", GatewayMiddleware: config.GatewayMiddleware{
		Auth:      &config.GatewayAuth{APIKey: &config.APIKeyAuth{Keys: map[string]string{"ops": keyHash}}},
		RateLimit: &config.GatewayRateLimit{RPS: 0.001, Burst: 2},
	}}})
	var codes []int
	for _, key := range []string{"guess-1", "guess-2", "k-0123456789abcdef"} {
		code, _, _, _ := get(t, "GET", gw+"/x", map[string]string{"X-Api-Key": key}, "")
		codes = append(codes, code)
	}
	if fmt.Sprint(codes) != "[401 401 429]" {
		t.Errorf("codes = %v, want two failed guesses then 429 even with the right key", codes)
	}
}

// Behind trusted proxies the client is the nearest untrusted address of
// X-Forwarded-For, and the chain goes on upstream; anyone else's
// X-Forwarded-For is ignored.
func TestTrustedProxies(t *testing.T) {
	echo := headerEcho(t, 0)
	cfg := testutil.Config(t, testutil.Embedded)
	cfg.Gateway = config.Gateway{Listen: "127.0.0.1:0", TrustedProxies: []string{"127.0.0.1", "10.0.0.0/8"}, Routes: []*config.GatewayRoute{
		{Path: "/who", When: `request.ip == "203.0.113.7"`, Static: &config.GatewayStatic{Body: "the client"}},
		{Path: "/who", Static: &config.GatewayStatic{Body: "someone else"}},
		{Path: "/echo", URL: []string{echo.URL}},
	}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	gw := "http://" + testutil.Start(t, cfg).Node.GatewayAddr()
	for _, tc := range []struct{ xff, want string }{
		{"203.0.113.7", "the client"},
		{"203.0.113.7, 10.1.2.3", "the client"},     // through an inner trusted proxy
		{"198.51.100.1, 203.0.113.7", "the client"}, // the leftmost entry is the client's own claim
		{"", "someone else"},
	} {
		hdr := map[string]string{}
		if tc.xff != "" {
			hdr["X-Forwarded-For"] = tc.xff
		}
		if _, _, _, body := get(t, "GET", gw+"/who", hdr, ""); body != tc.want {
			t.Errorf("X-Forwarded-For %q: %q, want %q", tc.xff, body, tc.want)
		}
	}
	_, _, m, _ := get(t, "GET", gw+"/echo", map[string]string{"X-Forwarded-For": "203.0.113.7"}, "")
	if xff := fmt.Sprint(m["headers"].(map[string]any)["X-Forwarded-For"]); xff != "[203.0.113.7, 127.0.0.1]" {
		t.Errorf("upstream X-Forwarded-For = %s", xff)
	}
}
