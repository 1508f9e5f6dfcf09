package gateway

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/junctionhq/junction/config"
)

const testSecret = "0123456789abcdef0123456789abcdef-hs"

// Test keys, generated once: RSA keys take a while.
var (
	keysOnce sync.Once
	rsaKey   *rsa.PrivateKey
	rsaKey2  *rsa.PrivateKey
	ecKey    *ecdsa.PrivateKey
	edPub    ed25519.PublicKey
	edKey    ed25519.PrivateKey
)

func testKeys(t testing.TB) {
	t.Helper()
	keysOnce.Do(func() {
		var err error
		if rsaKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if rsaKey2, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if ecKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			panic(err)
		}
		if edPub, edKey, err = ed25519.GenerateKey(rand.Reader); err != nil {
			panic(err)
		}
	})
}

// writePEM writes pub as a PKIX PEM file and returns its path.
func writePEM(t testing.TB, dir string, pub crypto.PublicKey) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.CreateTemp(dir, "key-*.pem")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := pem.Encode(f, &pem.Block{Type: "PUBLIC KEY", Bytes: der}); err != nil {
		t.Fatal(err)
	}
	return f.Name()
}

func sign(t testing.TB, m jwt.SigningMethod, key any, c map[string]any, kid string) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, jwt.MapClaims(c))
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func hsConfig() *config.JWTAuth { return &config.JWTAuth{Secret: testSecret} }

func signHS(t testing.TB, c map[string]any) string {
	return sign(t, jwt.SigningMethodHS256, []byte(testSecret), c, "")
}

func rsConfig(t testing.TB) *config.JWTAuth {
	testKeys(t)
	return &config.JWTAuth{PublicKey: writePEM(t, t.TempDir(), &rsaKey.PublicKey)}
}

func signRS(t testing.TB, c map[string]any) string {
	testKeys(t)
	return sign(t, jwt.SigningMethodRS256, rsaKey, c, "")
}

func bearer(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }

// tamper changes one character in the middle of the signature.
func tamper(tok string) string {
	i := strings.LastIndexByte(tok, '.') + 5
	c := byte('A')
	if tok[i] == 'A' {
		c = 'B'
	}
	return tok[:i] + string(c) + tok[i+1:]
}

func TestJWTHMAC(t *testing.T) {
	testKeys(t)
	now := time.Now()
	at := func(d time.Duration) int64 { return now.Add(d).Unix() }
	cfg := hsConfig()
	cfg.Issuer, cfg.Audience = "https://id.example", "orders"
	s := newAuthServer(t, &config.GatewayAuth{JWT: cfg})
	good := map[string]any{"iss": "https://id.example", "aud": "orders"}
	with := func(extra map[string]any) map[string]any {
		c := claims(good)
		for k, v := range extra {
			if v == nil {
				delete(c, k)
			} else {
				c[k] = v
			}
		}
		return c
	}
	rsaPEM, err := os.ReadFile(writePEM(t, t.TempDir(), &rsaKey.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		hdr    map[string]string
		detail string // "" for success
	}{
		{name: "valid", hdr: bearer(signHS(t, with(nil)))},
		{name: "lower-case scheme", hdr: map[string]string{"Authorization": "bearer " + signHS(t, with(nil))}},
		{name: "audience in a list", hdr: bearer(signHS(t, with(map[string]any{"aud": []string{"billing", "orders"}})))},
		{name: "HS512", hdr: bearer(sign(t, jwt.SigningMethodHS512, []byte(testSecret), with(nil), ""))},
		{name: "expired within leeway", hdr: bearer(signHS(t, with(map[string]any{"exp": at(-10 * time.Second)})))},
		{name: "expired", hdr: bearer(signHS(t, with(map[string]any{"exp": at(-2 * time.Minute)}))), detail: "expired"},
		{name: "no exp", hdr: bearer(signHS(t, with(map[string]any{"exp": nil}))), detail: "no expiry"},
		{name: "exp not a number", hdr: bearer(signHS(t, with(map[string]any{"exp": "tomorrow"}))), detail: "claims are invalid"},
		{name: "nbf within leeway", hdr: bearer(signHS(t, with(map[string]any{"nbf": at(20 * time.Second)})))},
		{name: "nbf beyond leeway", hdr: bearer(signHS(t, with(map[string]any{"nbf": at(2 * time.Minute)}))), detail: "not valid yet"},
		{name: "iat within leeway", hdr: bearer(signHS(t, with(map[string]any{"iat": at(20 * time.Second)})))},
		{name: "iat beyond leeway", hdr: bearer(signHS(t, with(map[string]any{"iat": at(2 * time.Minute)}))), detail: "issued in the future"},
		{name: "wrong issuer", hdr: bearer(signHS(t, with(map[string]any{"iss": "https://evil.example"}))), detail: "issuer is not accepted"},
		{name: "no issuer", hdr: bearer(signHS(t, with(map[string]any{"iss": nil}))), detail: "no issuer"},
		{name: "wrong audience", hdr: bearer(signHS(t, with(map[string]any{"aud": "billing"}))), detail: "audience is not accepted"},
		{name: "no audience", hdr: bearer(signHS(t, with(map[string]any{"aud": nil}))), detail: "no audience"},
		{name: "wrong secret", hdr: bearer(sign(t, jwt.SigningMethodHS256, []byte(testSecret+"x"), with(nil), "")), detail: "signature is invalid"},
		{name: "tampered signature", hdr: bearer(tamper(signHS(t, with(nil)))), detail: "signature is invalid"},
		{name: "tampered claims", hdr: bearer(tamperClaims(t, signHS(t, with(nil)))), detail: "signature is invalid"},
		{name: "alg none", hdr: bearer(sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, with(nil), "")), detail: "algorithm is not accepted"},
		{name: "RS256 token", hdr: bearer(sign(t, jwt.SigningMethodRS256, rsaKey, with(nil), "")), detail: "algorithm is not accepted"},
		{name: "HS256 signed with a public key", hdr: bearer(sign(t, jwt.SigningMethodHS256, rsaPEM, with(nil), "")), detail: "signature is invalid"},
		{name: "garbage", hdr: bearer("not-a-token"), detail: "malformed"},
		{name: "too long", hdr: bearer(strings.Repeat("a", maxTokenLen+1)), detail: "too long"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := s.do("/x", tc.hdr)
			if tc.detail != "" {
				res.wantUnauthorized(t, true, tc.detail)
				return
			}
			if res.code != 204 || res.got == nil {
				t.Fatalf("got %d: %v", res.code, res.body)
			}
			if id := res.got.id; id == nil || id.Claims["sub"] != "alice" || id.KeyName != "" {
				t.Errorf("identity = %+v", id)
			}
		})
	}
	// No token at all, or another scheme: a challenge without an error.
	for _, h := range []map[string]string{nil, {"Authorization": "Basic YTpi"}, {"Authorization": "Bearer "}, {"Authorization": "Bearer"}} {
		s.do("/x", h).wantUnauthorized(t, false, "a bearer token is required")
	}
}

// tamperClaims makes the token's subject bob, keeping the signature.
func tamperClaims(t *testing.T, tok string) string {
	parts := strings.Split(tok, ".")
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	c["sub"] = "bob"
	b, _ = json.Marshal(c)
	parts[1] = base64.RawURLEncoding.EncodeToString(b)
	return strings.Join(parts, ".")
}

func TestJWTPublicKeys(t *testing.T) {
	testKeys(t)
	dir := t.TempDir()
	rsaPath := writePEM(t, dir, &rsaKey.PublicKey)
	ecPath := writePEM(t, dir, &ecKey.PublicKey)
	edPath := writePEM(t, dir, edPub)
	rsaPEM, _ := os.ReadFile(rsaPath)
	ecPEM, _ := os.ReadFile(ecPath)

	// PKCS #1 RSA public key, and a certificate.
	pkcs1 := filepath.Join(dir, "pkcs1.pem")
	if err := os.WriteFile(pkcs1, pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&rsaKey.PublicKey)}), 0o600); err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &ecKey.PublicKey, ecKey)
	if err != nil {
		t.Fatal(err)
	}
	cert := filepath.Join(dir, "cert.pem")
	if err := os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}

	c := claims(nil)
	for _, tc := range []struct {
		name   string
		cfg    *config.JWTAuth
		tok    string
		detail string
	}{
		{name: "RS256", cfg: &config.JWTAuth{PublicKey: rsaPath}, tok: sign(t, jwt.SigningMethodRS256, rsaKey, c, "")},
		{name: "RS512", cfg: &config.JWTAuth{PublicKey: rsaPath}, tok: sign(t, jwt.SigningMethodRS512, rsaKey, c, "")},
		{name: "PS256", cfg: &config.JWTAuth{PublicKey: rsaPath}, tok: sign(t, jwt.SigningMethodPS256, rsaKey, c, "")},
		{name: "RS256 PKCS #1 file", cfg: &config.JWTAuth{PublicKey: pkcs1}, tok: sign(t, jwt.SigningMethodRS256, rsaKey, c, "")},
		{name: "RS256 other key", cfg: &config.JWTAuth{PublicKey: rsaPath}, tok: sign(t, jwt.SigningMethodRS256, rsaKey2, c, ""), detail: "signature is invalid"},
		{name: "RS256 tampered", cfg: &config.JWTAuth{PublicKey: rsaPath}, tok: tamper(sign(t, jwt.SigningMethodRS256, rsaKey, c, "")), detail: "signature is invalid"},
		{name: "RS256 expired", cfg: &config.JWTAuth{PublicKey: rsaPath}, tok: sign(t, jwt.SigningMethodRS256, rsaKey, claims(map[string]any{"exp": time.Now().Add(-time.Hour).Unix()}), ""), detail: "expired"},
		{name: "PS256 not in the list", cfg: &config.JWTAuth{PublicKey: rsaPath, Algorithms: []string{"RS256"}}, tok: sign(t, jwt.SigningMethodPS256, rsaKey, c, ""), detail: "algorithm is not accepted"},
		{name: "algorithm confusion RSA", cfg: &config.JWTAuth{PublicKey: rsaPath}, tok: sign(t, jwt.SigningMethodHS256, rsaPEM, c, ""), detail: "algorithm is not accepted"},
		{name: "alg none RSA", cfg: &config.JWTAuth{PublicKey: rsaPath}, tok: sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, c, ""), detail: "algorithm is not accepted"},
		{name: "ES256", cfg: &config.JWTAuth{PublicKey: ecPath}, tok: sign(t, jwt.SigningMethodES256, ecKey, c, "")},
		{name: "ES256 certificate", cfg: &config.JWTAuth{PublicKey: cert}, tok: sign(t, jwt.SigningMethodES256, ecKey, c, "")},
		{name: "ES256 tampered", cfg: &config.JWTAuth{PublicKey: ecPath}, tok: tamper(sign(t, jwt.SigningMethodES256, ecKey, c, "")), detail: "signature is invalid"},
		{name: "algorithm confusion EC", cfg: &config.JWTAuth{PublicKey: ecPath}, tok: sign(t, jwt.SigningMethodHS256, ecPEM, c, ""), detail: "algorithm is not accepted"},
		{name: "RS256 against EC key", cfg: &config.JWTAuth{PublicKey: ecPath}, tok: sign(t, jwt.SigningMethodRS256, rsaKey, c, ""), detail: "algorithm is not accepted"},
		{name: "EdDSA", cfg: &config.JWTAuth{PublicKey: edPath}, tok: sign(t, jwt.SigningMethodEdDSA, edKey, c, "")},
		{name: "EdDSA tampered", cfg: &config.JWTAuth{PublicKey: edPath}, tok: tamper(sign(t, jwt.SigningMethodEdDSA, edKey, c, "")), detail: "signature is invalid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newAuthServer(t, &config.GatewayAuth{JWT: tc.cfg})
			res := s.do("/x", bearer(tc.tok))
			if tc.detail != "" {
				res.wantUnauthorized(t, true, tc.detail)
				return
			}
			if res.code != 204 || res.got == nil || res.got.id.Claims["sub"] != "alice" {
				t.Fatalf("got %d: %v", res.code, res.body)
			}
		})
	}
}

func TestJWTConfigErrors(t *testing.T) {
	testKeys(t)
	dir := t.TempDir()
	rsaPath := writePEM(t, dir, &rsaKey.PublicKey)
	priv := filepath.Join(dir, "private.pem")
	der, _ := x509.MarshalPKCS8PrivateKey(rsaKey)
	if err := os.WriteFile(priv, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, cfg := range map[string]*config.JWTAuth{
		"nothing":                 {},
		"HMAC with a public key":  {PublicKey: rsaPath, Algorithms: []string{"RS256", "HS256"}},
		"EC alg with RSA key":     {PublicKey: rsaPath, Algorithms: []string{"ES256"}},
		"RSA alg with a secret":   {Secret: testSecret, Algorithms: []string{"RS256"}},
		"HMAC with JWKS":          {JWKSURL: "http://127.0.0.1:1/jwks", Algorithms: []string{"HS256"}},
		"none":                    {Secret: testSecret, Algorithms: []string{"none"}},
		"missing file":            {PublicKey: filepath.Join(dir, "nope.pem")},
		"private key only":        {PublicKey: priv},
		"bad require":             {Secret: testSecret, Require: "request.claims.("},
		"bad forward header name": {Secret: testSecret, Forward: map[string]string{"sub": "X User"}},
	} {
		if _, err := newAuth(&config.GatewayAuth{JWT: cfg}, nil); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestJWTRequire(t *testing.T) {
	cfg := hsConfig()
	cfg.Require = `"admin" in request.claims.roles`
	s := newAuthServer(t, &config.GatewayAuth{JWT: cfg})
	for _, tc := range []struct {
		name string
		c    map[string]any
		code int
	}{
		{"admin", map[string]any{"roles": []string{"ops", "admin"}}, 204},
		{"not admin", map[string]any{"roles": []string{"ops"}}, 403},
		{"no roles", nil, 403},                                // evaluation error: refused
		{"roles not a list", map[string]any{"roles": 7}, 403}, // evaluation error: refused
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := s.do("/x", bearer(signHS(t, claims(tc.c))))
			if res.code != tc.code || (res.got != nil) != (tc.code == 204) {
				t.Fatalf("got %d (handler reached: %v), want %d", res.code, res.got != nil, tc.code)
			}
			if tc.code == 403 && (res.body["code"] != "forbidden" || res.header.Get("WWW-Authenticate") != "") {
				t.Errorf("403: %v %v", res.body, res.header)
			}
		})
	}
	// An invalid token is still 401, whatever it claims.
	s.do("/x", bearer(tamper(signHS(t, claims(map[string]any{"roles": []string{"admin"}}))))).wantUnauthorized(t, true, "signature")
}

func TestJWTForward(t *testing.T) {
	cfg := hsConfig()
	cfg.Forward = map[string]string{"sub": "x-user-id", "roles": "X-User-Roles", "org": "X-Org", "n": "X-N", "bad": "X-Bad"}
	s := newAuthServer(t, &config.GatewayAuth{JWT: cfg})
	tok := signHS(t, claims(map[string]any{"roles": []string{"admin", "ops"}, "n": 42, "bad": "a\r\nX-Admin: 1"}))
	res := s.do("/x", map[string]string{
		"Authorization": "Bearer " + tok,
		"X-User-Id":     "mallory", "X-Org": "evil", "X-Other": "kept",
	})
	if res.code != 204 || res.got == nil {
		t.Fatalf("got %d: %v", res.code, res.body)
	}
	h := res.got.header
	for k, want := range map[string][]string{
		"X-User-Id":     {"alice"},
		"X-User-Roles":  {`["admin","ops"]`},
		"X-N":           {"42"},
		"X-Bad":         {`"a\r\nX-Admin: 1"`},
		"X-Org":         nil, // not in the token: the client's value is gone too
		"X-Admin":       nil,
		"X-Other":       {"kept"},
		"Authorization": {"Bearer " + tok}, // kept for services that verify it again
	} {
		if got := h.Values(k); strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	// A refused request is refused before anything is forwarded; a
	// spoofed header never reaches the handler either way.
	res = s.do("/x", map[string]string{"X-User-Id": "mallory"})
	res.wantUnauthorized(t, false, "bearer token is required")
}

// jwksServer serves a JWKS document that a test can change, counting the
// fetches.
type jwksServer struct {
	*httptest.Server
	mu      sync.Mutex
	doc     []byte
	fetches atomic.Int32
}

func newJWKSServer(t *testing.T) *jwksServer {
	s := &jwksServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.fetches.Add(1)
		s.mu.Lock()
		doc := s.doc
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(doc)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) serve(t *testing.T, keys ...map[string]string) {
	b, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	s.doc = b
	s.mu.Unlock()
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func rsaJWK(kid string, k *rsa.PublicKey) map[string]string {
	return map[string]string{"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig", "n": b64(k.N.Bytes()), "e": b64(big.NewInt(int64(k.E)).Bytes())}
}

func edJWK(kid string, k ed25519.PublicKey) map[string]string {
	return map[string]string{"kty": "OKP", "crv": "Ed25519", "kid": kid, "use": "sig", "x": b64(k)}
}

func TestJWTJWKSRotation(t *testing.T) {
	testKeys(t)
	js := newJWKSServer(t)
	js.serve(t, rsaJWK("a", &rsaKey.PublicKey))
	hc := &http.Client{Timeout: 5 * time.Second}
	cfg := &config.GatewayAuth{JWT: &config.JWTAuth{JWKSURL: js.URL + "/jwks", Issuer: "https://id.example"}}
	mw, err := newAuth(cfg, hc)
	if err != nil {
		t.Fatal(err)
	}
	s := &authServer{t: t}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.last = received{n: s.last.n + 1, header: r.Header.Clone(), id: identity(r)}
		s.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	})
	s.h = mw(handler)
	if n := js.fetches.Load(); n != 1 {
		t.Fatalf("%d fetches at start, want 1", n)
	}
	c := claims(map[string]any{"iss": "https://id.example"})
	tokA := sign(t, jwt.SigningMethodRS256, rsaKey, c, "a")
	for range 3 {
		if res := s.do("/x", bearer(tokA)); res.code != 204 {
			t.Fatalf("key a: %d %v", res.code, res.body)
		}
	}
	if n := js.fetches.Load(); n != 1 {
		t.Fatalf("%d fetches after three tokens, want 1 (cached)", n)
	}
	// Wrong signatures, algorithms and issuers with a known kid cost no
	// fetch.
	s.do("/x", bearer(sign(t, jwt.SigningMethodRS256, rsaKey2, c, "a"))).wantUnauthorized(t, true, "signature is invalid")
	s.do("/x", bearer(sign(t, jwt.SigningMethodHS256, []byte(testSecret), c, "a"))).wantUnauthorized(t, true, "algorithm is not accepted")
	s.do("/x", bearer(sign(t, jwt.SigningMethodRS256, rsaKey, claims(nil), "a"))).wantUnauthorized(t, true, "no issuer")

	// A reload builds the middleware again: it shares the cache.
	mw2, err := newAuth(cfg, hc)
	if err != nil {
		t.Fatal(err)
	}
	s.h = mw2(handler)
	if n := js.fetches.Load(); n != 1 {
		t.Fatalf("%d fetches after a rebuild, want 1 (shared)", n)
	}

	// The issuer rotates to key b: its first token triggers a refresh.
	js.serve(t, edJWK("b", edPub))
	tokB := sign(t, jwt.SigningMethodEdDSA, edKey, c, "b")
	if res := s.do("/x", bearer(tokB)); res.code != 204 || res.got.id.Claims["sub"] != "alice" {
		t.Fatalf("key b after rotation: %d %v", res.code, res.body)
	}
	if n := js.fetches.Load(); n != 2 {
		t.Fatalf("%d fetches after rotation, want 2", n)
	}
	if res := s.do("/x", bearer(tokB)); res.code != 204 {
		t.Fatalf("key b again: %d", res.code)
	}
	// Key a is gone with the refresh; unknown kids are not refreshed
	// again so soon, and answered at once.
	start := time.Now()
	s.do("/x", bearer(tokA)).wantUnauthorized(t, true, "signing key is unknown")
	s.do("/x", bearer(sign(t, jwt.SigningMethodEdDSA, edKey, c, "c"))).wantUnauthorized(t, true, "signing key is unknown")
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("unknown kids took %v", el)
	}
	if n := js.fetches.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2 (unknown kids rate limited)", n)
	}
	// A token without kid is tried against every key.
	if res := s.do("/x", bearer(sign(t, jwt.SigningMethodEdDSA, edKey, c, ""))); res.code != 204 {
		t.Fatalf("no kid: %d %v", res.code, res.body)
	}
	s.do("/x", bearer(sign(t, jwt.SigningMethodRS256, rsaKey, c, ""))).wantUnauthorized(t, true, "")
}

func TestJWTJWKSUnreachable(t *testing.T) {
	// A JWKS that cannot be fetched does not stop the route from being
	// built: its tokens are refused until it can.
	js := newJWKSServer(t)
	url := js.URL + "/jwks"
	js.Close()
	s := newAuthServer(t, &config.GatewayAuth{JWT: &config.JWTAuth{JWKSURL: url}})
	testKeys(t)
	s.do("/x", bearer(sign(t, jwt.SigningMethodRS256, rsaKey, claims(nil), "a"))).wantUnauthorized(t, true, "signing key is unknown")
}

// FuzzJWT sends arbitrary bearer tokens to HS256 and RS256 routes: none
// may panic or get through.
func FuzzJWT(f *testing.F) {
	testKeys(f)
	rsPath := writePEM(f, f.TempDir(), &rsaKey.PublicKey)
	rsPEM, err := os.ReadFile(rsPath)
	if err != nil {
		f.Fatal(err)
	}
	var reached atomic.Int32
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		w.WriteHeader(http.StatusNoContent)
	})
	var handlers []http.Handler
	for _, cfg := range []*config.JWTAuth{
		{Secret: testSecret, Issuer: "https://id.example", Require: `"admin" in request.claims.roles`},
		{PublicKey: rsPath, Algorithms: []string{"RS256"}, Forward: map[string]string{"sub": "X-User"}},
	} {
		mw, err := newAuth(&config.GatewayAuth{JWT: cfg}, nil)
		if err != nil {
			f.Fatal(err)
		}
		handlers = append(handlers, mw(next))
	}

	// Seeds: signed with the wrong keys, expired, unsigned, confused,
	// truncated, and plain garbage; none is valid for either route.
	c := claims(map[string]any{"iss": "https://id.example", "roles": []string{"admin"}})
	expired := claims(map[string]any{"iss": "https://id.example", "roles": []string{"admin"}, "exp": time.Now().Add(-time.Hour).Unix()})
	for _, s := range []string{
		"", ".", "..", "a.b.c", "e30.e30.", "eyJhbGciOiJub25lIn0.e30.", "Bearer x", "\x00", strings.Repeat(".", 100),
		sign(f, jwt.SigningMethodHS256, []byte(testSecret), expired, ""),
		sign(f, jwt.SigningMethodHS256, []byte(testSecret+"!"), c, ""),
		sign(f, jwt.SigningMethodHS256, rsPEM, c, ""),
		sign(f, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, c, ""),
		sign(f, jwt.SigningMethodRS256, rsaKey, expired, ""),
		sign(f, jwt.SigningMethodRS256, rsaKey2, c, "k"),
		sign(f, jwt.SigningMethodPS256, rsaKey, c, ""),
		sign(f, jwt.SigningMethodES256, ecKey, c, ""),
		tamper(sign(f, jwt.SigningMethodRS256, rsaKey, c, "")),
		sign(f, jwt.SigningMethodHS256, []byte(testSecret), expired, "")[:60],
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		for i, h := range handlers {
			before := reached.Load()
			r := httptest.NewRequest("GET", "/x", nil)
			r.Header["Authorization"] = []string{"Bearer " + tok}
			r.Header["X-User"] = []string{"mallory"}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if reached.Load() != before {
				t.Fatalf("route %d let %q through", i, tok)
			}
			if w.Code != 401 {
				t.Fatalf("route %d answered %d to %q", i, w.Code, tok)
			}
			if ch := w.Header().Get("WWW-Authenticate"); !strings.HasPrefix(ch, `Bearer realm="junction"`) {
				t.Fatalf("route %d: WWW-Authenticate %q", i, ch)
			}
		}
	})
}

func TestJWTConcurrent(t *testing.T) {
	testKeys(t)
	js := newJWKSServer(t)
	js.serve(t, rsaJWK("a", &rsaKey.PublicKey))
	cfg := &config.JWTAuth{JWKSURL: js.URL, Require: `request.claims.sub == "alice"`, Forward: map[string]string{"sub": "X-User"}}
	s := newAuthServer(t, &config.GatewayAuth{APIKey: apiKeyConfig(), JWT: cfg})
	tok := sign(t, jwt.SigningMethodRS256, rsaKey, claims(nil), "a")
	var wg sync.WaitGroup
	var bad atomic.Int32
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 25 {
				hdr := bearer(tok)
				if (g+i)%2 == 0 {
					hdr = map[string]string{"X-Api-Key": ordersKey}
				}
				r := httptest.NewRequest("GET", "/x", nil)
				for k, v := range hdr {
					r.Header.Set(k, v)
				}
				w := httptest.NewRecorder()
				s.h.ServeHTTP(w, r)
				if w.Code != 204 {
					bad.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if n := bad.Load(); n != 0 {
		t.Fatalf("%d requests refused", n)
	}
	if n := js.fetches.Load(); n != 1 {
		t.Fatalf("%d fetches, want 1", n)
	}
}
