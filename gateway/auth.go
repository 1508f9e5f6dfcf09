package gateway

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"

	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/internal/problem"
)

// Defaults of API key authentication.
const (
	DefaultAPIKeyHeader    = "X-Api-Key"
	DefaultAPIKeyForwardAs = "X-Api-Key-Name"
)

// bearerChallenge is the WWW-Authenticate header of every 401.
const bearerChallenge = `Bearer realm="junction"`

// newAuth authenticates requests by API key or JWT. With both configured
// either one is enough: a request carrying an API key (header or query
// parameter) is judged by its key alone, any other by its bearer token.
//
// On success the request carries its Identity (for rate-limit keys and
// CEL) and the headers that name it upstream. Those headers are removed
// from every incoming request first, so a client cannot forge them. The
// API key itself is never forwarded; the Authorization header is, so a
// service may verify the token again or read claims the gateway does not
// forward.
func newAuth(cfg *config.GatewayAuth, hc *http.Client) (middleware, error) {
	if cfg == nil || (cfg.APIKey == nil && cfg.JWT == nil) {
		return nil, errors.New("auth needs api_key or jwt")
	}
	var (
		keys *apiKeyAuth
		jwta *jwtAuth
		err  error
	)
	if cfg.APIKey != nil {
		if keys, err = newAPIKeyAuth(cfg.APIKey); err != nil {
			return nil, err
		}
	}
	if cfg.JWT != nil {
		if jwta, err = newJWTAuth(cfg.JWT, hc); err != nil {
			return nil, err
		}
	}
	// Every header the gateway sets to name the caller.
	var identityHeaders []string
	if keys != nil {
		identityHeaders = append(identityHeaders, keys.forwardAs)
	}
	if jwta != nil {
		for _, h := range jwta.forward {
			identityHeaders = append(identityHeaders, h)
		}
	}
	missing := "a bearer token is required"
	switch {
	case jwta == nil:
		missing = "an API key is required"
	case keys != nil:
		missing = "an API key or a bearer token is required"
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			for _, h := range identityHeaders {
				r.Header.Del(h)
			}
			if keys != nil {
				if key, ok := keys.presented(r); ok {
					keys.serve(next, w, r, key)
					return
				}
				keys.strip(r) // an empty key parameter or header
			}
			if jwta == nil {
				unauthorized(w, r, false, missing)
				return
			}
			jwta.serve(next, w, r, missing)
		})
	}, nil
}

// unauthorized answers 401 with a bearer challenge; invalidToken adds
// error="invalid_token" (RFC 6750) for a token that was presented.
func unauthorized(w http.ResponseWriter, r *http.Request, invalidToken bool, detail string) {
	ch := bearerChallenge
	if invalidToken {
		ch += `, error="invalid_token"`
	}
	w.Header().Set("WWW-Authenticate", ch)
	problem.Write(w, r, problem.New(problem.CodeUnauthorized, "%s", detail))
}

// apiKeyAuth accepts requests that carry one of its keys.
type apiKeyAuth struct {
	header    string // canonical
	query     string
	forwardAs string // canonical
	names     []string
	digests   [][]byte // SHA-256 of each key, in the order of names
}

func newAPIKeyAuth(cfg *config.APIKeyAuth) (*apiKeyAuth, error) {
	if len(cfg.Keys) == 0 {
		return nil, errors.New("api_key needs at least one key")
	}
	a := &apiKeyAuth{header: cfg.Header, query: cfg.Query, forwardAs: cfg.ForwardAs}
	if a.header == "" {
		a.header = DefaultAPIKeyHeader
	}
	if a.forwardAs == "" {
		a.forwardAs = DefaultAPIKeyForwardAs
	}
	for _, h := range []string{a.header, a.forwardAs} {
		if !validHeaderName(h) {
			return nil, fmt.Errorf("api_key: invalid header name %q", h)
		}
	}
	a.header, a.forwardAs = http.CanonicalHeaderKey(a.header), http.CanonicalHeaderKey(a.forwardAs)
	if a.header == a.forwardAs {
		return nil, fmt.Errorf("api_key: header and forward_as are both %s", a.header)
	}
	names := make([]string, 0, len(cfg.Keys))
	for name := range cfg.Keys {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		v := cfg.Keys[name]
		var d []byte
		if h, ok := strings.CutPrefix(v, "sha256:"); ok {
			b, err := hex.DecodeString(h)
			if err != nil || len(b) != sha256.Size {
				return nil, fmt.Errorf("api_key: key %s: sha256: must be followed by 64 hex digits", name)
			}
			d = b
		} else {
			if v == "" {
				return nil, fmt.Errorf("api_key: key %s is empty", name)
			}
			s := sha256.Sum256([]byte(v))
			d = s[:]
		}
		for i, o := range a.digests {
			if bytes.Equal(o, d) {
				return nil, fmt.Errorf("api_key: keys %s and %s are the same", a.names[i], name)
			}
		}
		a.names = append(a.names, name)
		a.digests = append(a.digests, d)
	}
	return a, nil
}

// presented returns the key the request carries: its header, else the
// query parameter when one is configured.
func (a *apiKeyAuth) presented(r *http.Request) (string, bool) {
	if k := r.Header.Get(a.header); k != "" {
		return k, true
	}
	if a.query != "" {
		if k, ok := queryValue(r.URL.RawQuery, a.query); ok && k != "" {
			return k, true
		}
	}
	return "", false
}

// lookup returns the name of the key, or false. It compares SHA-256
// digests, so the time taken depends on neither the keys' lengths nor
// their contents, and it compares with every key, whichever matches.
func (a *apiKeyAuth) lookup(key string) (string, bool) {
	d := sha256.Sum256([]byte(key))
	found := -1
	for i, k := range a.digests {
		found = subtle.ConstantTimeSelect(subtle.ConstantTimeCompare(d[:], k), i, found)
	}
	if found < 0 {
		return "", false
	}
	return a.names[found], true
}

// strip removes the key from r: it goes no further than the gateway.
func (a *apiKeyAuth) strip(r *http.Request) {
	r.Header.Del(a.header)
	if a.query != "" && r.URL.RawQuery != "" {
		if q := withoutQuery(r.URL.RawQuery, a.query); q != r.URL.RawQuery {
			r.URL.RawQuery = q
			r.RequestURI = r.URL.RequestURI()
		}
	}
}

func (a *apiKeyAuth) serve(next http.Handler, w http.ResponseWriter, r *http.Request, key string) {
	name, ok := a.lookup(key)
	if !ok {
		unauthorized(w, r, false, "the API key is not valid")
		return
	}
	a.strip(r)
	r.Header.Set(a.forwardAs, name)
	next.ServeHTTP(w, withIdentity(r, &Identity{KeyName: name}))
}

func (a *jwtAuth) serve(next http.Handler, w http.ResponseWriter, r *http.Request, missing string) {
	token, ok := bearerToken(r)
	if !ok {
		unauthorized(w, r, false, missing)
		return
	}
	claims, why := a.verify(r.Context(), token)
	if claims == nil {
		unauthorized(w, r, true, why)
		return
	}
	r = withIdentity(r, &Identity{Claims: claims})
	if a.require != nil {
		ok, err := a.require.EvalBool(map[string]any{"request": requestVars(r, params(r))})
		if err != nil || !ok {
			problem.Write(w, r, problem.New(problem.CodeForbidden, "the token does not grant access to this route"))
			return
		}
	}
	for claim, h := range a.forward {
		if v, ok := claims[claim]; ok && v != nil {
			r.Header.Set(h, claimHeaderValue(v))
		}
	}
	next.ServeHTTP(w, r)
}

// bearerToken returns the token of an "Authorization: Bearer" header.
func bearerToken(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

// claimHeaderValue renders a claim as a header value: a string as it is,
// anything else as JSON. Characters a header cannot carry (controls) are
// escaped as in JSON, so a claim can neither break the request upstream
// nor inject a header.
func claimHeaderValue(v any) string {
	if s, ok := v.(string); ok && validHeaderValue(s) {
		return s
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return ""
	}
	return strings.ReplaceAll(strings.TrimSuffix(b.String(), "\n"), "\x7f", `\u007f`)
}

// validHeaderValue reports whether s holds no control character but tab.
func validHeaderValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// validHeaderName reports whether s is an HTTP token (RFC 9110).
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// queryValue returns the first value of name in a raw query.
func queryValue(raw, name string) (string, bool) {
	for raw != "" {
		var part string
		part, raw, _ = strings.Cut(raw, "&")
		k, v, _ := strings.Cut(part, "=")
		if k, err := url.QueryUnescape(k); err != nil || k != name {
			continue
		}
		v, err := url.QueryUnescape(v)
		if err != nil {
			return "", false
		}
		return v, true
	}
	return "", false
}

// withoutQuery removes every value of name from a raw query, keeping the
// others as they were, in their order.
func withoutQuery(raw, name string) string {
	if raw == "" {
		return raw
	}
	parts := strings.Split(raw, "&")
	kept := parts[:0]
	for _, p := range parts {
		k, _, _ := strings.Cut(p, "=")
		if uk, err := url.QueryUnescape(k); err == nil && uk == name {
			continue
		}
		kept = append(kept, p)
	}
	return strings.Join(kept, "&")
}
