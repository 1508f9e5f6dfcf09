package gateway

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/junctionhq/junction/config"
)

// received is what the handler behind the auth middleware got.
type received struct {
	n      int
	header http.Header
	query  string
	id     *Identity
}

// authServer runs requests through newAuth(cfg) in front of a handler
// that records them.
type authServer struct {
	t    *testing.T
	h    http.Handler
	mu   sync.Mutex
	last received
}

func newAuthServer(t *testing.T, cfg *config.GatewayAuth) *authServer {
	t.Helper()
	mw, err := newAuth(cfg, nil)
	if err != nil {
		t.Fatalf("newAuth: %v", err)
	}
	s := &authServer{t: t}
	s.h = mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.last = received{n: s.last.n + 1, header: r.Header.Clone(), query: r.URL.RawQuery, id: identity(r)}
		s.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	return s
}

// authResult is the answer to one request, and what reached the handler
// (nil if nothing did).
type authResult struct {
	code   int
	header http.Header
	body   map[string]any
	got    *received
}

func (s *authServer) do(target string, hdr map[string]string) authResult {
	s.t.Helper()
	r := httptest.NewRequest("GET", target, nil)
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	s.mu.Lock()
	before := s.last.n
	s.mu.Unlock()
	w := httptest.NewRecorder()
	s.h.ServeHTTP(w, r)
	res := authResult{code: w.Code, header: w.Header()}
	if w.Body.Len() > 0 {
		if err := json.Unmarshal(w.Body.Bytes(), &res.body); err != nil {
			s.t.Fatalf("body %q: %v", w.Body.String(), err)
		}
	}
	s.mu.Lock()
	if s.last.n != before {
		got := s.last
		res.got = &got
	}
	s.mu.Unlock()
	return res
}

// wantUnauthorized checks a 401 problem that did not reach the handler.
func (res authResult) wantUnauthorized(t *testing.T, invalidToken bool, detail string) {
	t.Helper()
	if res.code != 401 || res.got != nil {
		t.Fatalf("got %d (handler reached: %v), want 401: %v", res.code, res.got != nil, res.body)
	}
	want := `Bearer realm="junction"`
	if invalidToken {
		want += `, error="invalid_token"`
	}
	if h := res.header.Get("WWW-Authenticate"); h != want {
		t.Errorf("WWW-Authenticate = %q, want %q", h, want)
	}
	if ct := res.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("Content-Type = %q", ct)
	}
	if res.body["code"] != "unauthorized" || res.body["status"] != 401.0 {
		t.Errorf("body = %v", res.body)
	}
	if d, _ := res.body["detail"].(string); !strings.Contains(d, detail) {
		t.Errorf("detail = %q, want it to contain %q", d, detail)
	}
}

const (
	ordersKey  = "orders-0123456789abcdef"
	billingKey = "billing-0123456789abcdef"
)

func sha256Hex(s string) string {
	d := sha256.Sum256([]byte(s))
	return "sha256:" + hex.EncodeToString(d[:])
}

func apiKeyConfig() *config.APIKeyAuth {
	return &config.APIKeyAuth{
		Query: "api_key",
		Keys:  map[string]string{"orders": sha256Hex(ordersKey), "billing": billingKey},
	}
}

func TestAPIKeyAuth(t *testing.T) {
	s := newAuthServer(t, &config.GatewayAuth{APIKey: apiKeyConfig()})
	for _, tc := range []struct {
		name   string
		target string
		hdr    map[string]string
		key    string // the key name expected upstream; "" for 401
		query  string // the query expected upstream
		detail string
	}{
		{name: "hashed key in header", target: "/x?a=1", hdr: map[string]string{"X-Api-Key": ordersKey}, key: "orders", query: "a=1"},
		{name: "plain key in header", target: "/x", hdr: map[string]string{"X-Api-Key": billingKey}, key: "billing"},
		{name: "hashed key in query", target: "/x?b=2&api_key=" + ordersKey + "&a=1", key: "orders", query: "b=2&a=1"},
		{name: "plain key in query, escaped", target: "/x?api%5Fkey=" + billingKey, key: "billing", query: ""},
		{name: "header wins over query", target: "/x?api_key=nope", hdr: map[string]string{"X-Api-Key": billingKey}, key: "billing", query: ""},
		{name: "spoofed name is replaced", target: "/x", hdr: map[string]string{"X-Api-Key": ordersKey, "X-Api-Key-Name": "admin"}, key: "orders"},
		{name: "wrong key", target: "/x", hdr: map[string]string{"X-Api-Key": "orders-0123456789abcdeX"}, detail: "API key is not valid"},
		{name: "hash given as key", target: "/x", hdr: map[string]string{"X-Api-Key": sha256Hex(ordersKey)}, detail: "API key is not valid"},
		{name: "prefix of a key", target: "/x", hdr: map[string]string{"X-Api-Key": billingKey[:10]}, detail: "API key is not valid"},
		{name: "wrong key in query", target: "/x?api_key=nope", detail: "API key is not valid"},
		{name: "no key", target: "/x", detail: "an API key is required"},
		{name: "bearer token is not a key", target: "/x", hdr: map[string]string{"Authorization": "Bearer " + ordersKey}, detail: "an API key is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := s.do(tc.target, tc.hdr)
			if tc.key == "" {
				res.wantUnauthorized(t, false, tc.detail)
				return
			}
			if res.code != 204 || res.got == nil {
				t.Fatalf("got %d: %v", res.code, res.body)
			}
			g := res.got
			if g.id == nil || g.id.KeyName != tc.key || g.id.Claims != nil {
				t.Errorf("identity = %+v, want key %s", g.id, tc.key)
			}
			if v := g.header.Values("X-Api-Key-Name"); len(v) != 1 || v[0] != tc.key {
				t.Errorf("X-Api-Key-Name = %q, want %q", v, tc.key)
			}
			if v := g.header.Values("X-Api-Key"); len(v) != 0 {
				t.Errorf("the key went upstream: %q", v)
			}
			if g.query != tc.query {
				t.Errorf("query upstream = %q, want %q", g.query, tc.query)
			}
		})
	}
}

func TestAPIKeyCustomHeaders(t *testing.T) {
	s := newAuthServer(t, &config.GatewayAuth{APIKey: &config.APIKeyAuth{
		Header: "x-orders-key", ForwardAs: "x-client", Keys: map[string]string{"orders": ordersKey},
	}})
	res := s.do("/x?api_key="+ordersKey, nil)
	res.wantUnauthorized(t, false, "API key is required") // no query parameter configured
	res = s.do("/x", map[string]string{"X-Orders-Key": ordersKey, "X-Api-Key": billingKey})
	if res.code != 204 || res.got.header.Get("X-Client") != "orders" || res.got.header.Get("X-Orders-Key") != "" {
		t.Fatalf("got %d %v", res.code, res.got)
	}
	if res.got.header.Get("X-Api-Key-Name") != "" || res.got.header.Get("X-Api-Key") != billingKey {
		t.Errorf("only the configured headers are touched: %v", res.got.header)
	}
}

func TestAPIKeyLookupChecksEveryKey(t *testing.T) {
	a, err := newAPIKeyAuth(&config.APIKeyAuth{Keys: map[string]string{
		"a": "aaaaaaaaaaaaaaaaaaaaaaaa", "b": sha256Hex("bbbbbbbbbbbbbbbbbbbbbbbb"), "c": "cccccccccccccccccccccccc",
	}})
	if err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]string{
		"aaaaaaaaaaaaaaaaaaaaaaaa": "a", "bbbbbbbbbbbbbbbbbbbbbbbb": "b", "cccccccccccccccccccccccc": "c", "": "", "x": "",
	} {
		if name, ok := a.lookup(key); name != want || ok != (want != "") {
			t.Errorf("lookup(%q) = %q %v, want %q", key, name, ok, want)
		}
	}
}

func TestAPIKeyConfigErrors(t *testing.T) {
	for name, cfg := range map[string]*config.APIKeyAuth{
		"no keys":          {},
		"bad hash":         {Keys: map[string]string{"a": "sha256:abcd"}},
		"same key twice":   {Keys: map[string]string{"a": ordersKey, "b": sha256Hex(ordersKey)}},
		"bad header":       {Header: "X Key", Keys: map[string]string{"a": ordersKey}},
		"bad forward_as":   {ForwardAs: "X:Name", Keys: map[string]string{"a": ordersKey}},
		"header forwarded": {Header: "x-key", ForwardAs: "X-Key", Keys: map[string]string{"a": ordersKey}},
	} {
		if _, err := newAuth(&config.GatewayAuth{APIKey: cfg}, nil); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if _, err := newAuth(&config.GatewayAuth{}, nil); err == nil {
		t.Error("empty auth: no error")
	}
}

func TestAuthEitherKeyOrToken(t *testing.T) {
	jc := hsConfig()
	jc.Forward = map[string]string{"sub": "X-User"}
	s := newAuthServer(t, &config.GatewayAuth{APIKey: apiKeyConfig(), JWT: jc})
	tok := signHS(t, claims(nil))

	res := s.do("/x", map[string]string{"X-Api-Key": ordersKey, "X-User": "mallory"})
	if res.code != 204 || res.got.id.KeyName != "orders" || res.got.header.Get("X-User") != "" {
		t.Fatalf("key: %d %+v", res.code, res.got)
	}
	res = s.do("/x", map[string]string{"Authorization": "Bearer " + tok, "X-Api-Key-Name": "orders"})
	if res.code != 204 || res.got.id.KeyName != "" || res.got.id.Claims["sub"] != "alice" {
		t.Fatalf("token: %d %+v", res.code, res.got)
	}
	if h := res.got.header; h.Get("X-Api-Key-Name") != "" || h.Get("X-User") != "alice" {
		t.Errorf("token: spoofed key name passed or claim not forwarded: %v", h)
	}
	res = s.do("/x?api_key=&x=1", map[string]string{"Authorization": "Bearer " + tok})
	if res.code != 204 || res.got.query != "x=1" || res.got.id.Claims == nil {
		t.Errorf("empty key parameter and a token: %d %+v", res.code, res.got)
	}
	// A key that is presented is judged alone: a wrong one is not saved
	// by a good token.
	s.do("/x", map[string]string{"X-Api-Key": "wrong", "Authorization": "Bearer " + tok}).wantUnauthorized(t, false, "API key is not valid")
	s.do("/x", nil).wantUnauthorized(t, false, "an API key or a bearer token is required")
	s.do("/x", map[string]string{"Authorization": "Bearer x.y.z"}).wantUnauthorized(t, true, "malformed")
}

func TestQueryHelpers(t *testing.T) {
	for _, tc := range []struct{ raw, name, value, without string }{
		{"a=1&k=v&b=2", "k", "v", "a=1&b=2"},
		{"k=v1&k=v2", "k", "v1", ""},
		{"k=a%20b", "k", "a b", ""},
		{"k", "k", "", ""},
		{"kk=1&k%3D=2", "k", "", "kk=1&k%3D=2"},
		{"a=%zz&k=1", "k", "1", "a=%zz"},
	} {
		v, _ := queryValue(tc.raw, tc.name)
		if w := withoutQuery(tc.raw, tc.name); v != tc.value || w != tc.without {
			t.Errorf("%q: value %q without %q, want %q %q", tc.raw, v, w, tc.value, tc.without)
		}
	}
}

func TestClaimHeaderValue(t *testing.T) {
	for _, tc := range []struct {
		v    any
		want string
	}{
		{"alice", "alice"},
		{"a\tb é", "a\tb é"},
		{"a\r\nX-Admin: true", `"a\r\nX-Admin: true"`},
		{"del\x7f", `"del\u007f"`},
		{[]any{"admin", "ops"}, `["admin","ops"]`},
		{42.0, "42"},
		{true, "true"},
		{map[string]any{"id": "o-1", "tags": []any{"<b>"}}, `{"id":"o-1","tags":["<b>"]}`},
	} {
		if got := claimHeaderValue(tc.v); got != tc.want {
			t.Errorf("claimHeaderValue(%#v) = %q, want %q", tc.v, got, tc.want)
		}
	}
}

// recordingTransport stands for the mesh: it records the requests the
// gateway sends upstream.
type recordingTransport struct {
	mu  sync.Mutex
	got []*http.Request
}

func (rt *recordingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		_, _ = io.Copy(io.Discard, r.Body)
		r.Body.Close()
	}
	rt.mu.Lock()
	rt.got = append(rt.got, r)
	rt.mu.Unlock()
	return &http.Response{StatusCode: 200, Header: http.Header{}, Body: io.NopCloser(bytes.NewReader(nil)), Request: r}, nil
}

func (rt *recordingTransport) last() *http.Request {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if len(rt.got) == 0 {
		return nil
	}
	return rt.got[len(rt.got)-1]
}

// TestAuthChain sends requests through a whole gateway: route matching,
// the middleware chain newAuth sits in, and the proxy to the mesh.
func TestAuthChain(t *testing.T) {
	rt := &recordingTransport{}
	jc := rsConfig(t)
	jc.Require = `"admin" in request.claims.roles || request.params.tenant == request.claims.tenant`
	jc.Forward = map[string]string{"sub": "X-User-Id", "roles": "X-User-Roles"}
	g, err := New(Options{Services: rt}, config.Gateway{Routes: []*config.GatewayRoute{
		{Name: "orders", Path: "/t/{tenant}/orders/{rest...}", Service: "orders", GatewayMiddleware: config.GatewayMiddleware{
			Auth: &config.GatewayAuth{APIKey: apiKeyConfig(), JWT: jc},
		}},
		{Name: "open", Path: "/health", Service: "orders", GatewayMiddleware: config.GatewayMiddleware{Auth: &config.GatewayAuth{None: true}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	do := func(target string, hdr map[string]string) (int, *http.Request) {
		t.Helper()
		n := len(rt.got)
		r := httptest.NewRequest("GET", target, nil)
		for k, v := range hdr {
			r.Header.Set(k, v)
		}
		w := httptest.NewRecorder()
		g.ServeHTTP(w, r)
		if len(rt.got) == n {
			return w.Code, nil
		}
		return w.Code, rt.last()
	}

	code, up := do("/t/acme/orders/7?api_key="+ordersKey+"&x=1", map[string]string{"X-User-Id": "root"})
	if code != 200 || up == nil {
		t.Fatalf("api key: %d", code)
	}
	if up.URL.RawQuery != "x=1" || up.Header.Get("X-Api-Key-Name") != "orders" || up.Header.Get("X-User-Id") != "" {
		t.Errorf("api key upstream: %s %v", up.URL, up.Header)
	}

	tok := signRS(t, claims(map[string]any{"tenant": "acme", "roles": []string{"viewer"}}))
	code, up = do("/t/acme/orders/7", map[string]string{"Authorization": "Bearer " + tok, "X-User-Roles": `["admin"]`})
	if code != 200 || up == nil {
		t.Fatalf("token: %d", code)
	}
	if up.Header.Get("X-User-Id") != "alice" || up.Header.Get("X-User-Roles") != `["viewer"]` || up.Header.Get("Authorization") != "Bearer "+tok {
		t.Errorf("token upstream: %v", up.Header)
	}
	if code, up = do("/t/other/orders/7", map[string]string{"Authorization": "Bearer " + tok}); code != 403 || up != nil {
		t.Errorf("other tenant: %d", code)
	}
	if code, up = do("/t/acme/orders/7", nil); code != 401 || up != nil {
		t.Errorf("anonymous: %d", code)
	}
	if code, up = do("/health", nil); code != 200 || up == nil {
		t.Errorf("auth none: %d", code)
	}
}

// claims returns a valid set of claims for alice, with extra ones.
func claims(extra map[string]any) map[string]any {
	now := time.Now()
	c := map[string]any{"sub": "alice", "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
	for k, v := range extra {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}
