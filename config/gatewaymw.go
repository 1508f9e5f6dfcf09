package config

import (
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/junctionhq/junction/expr"
)

// GatewayMiddleware is what a route does around its backend. Set under
// gateway.defaults it applies to every route; a route's own setting of a
// kind replaces the default of that kind.
type GatewayMiddleware struct {
	Auth      *GatewayAuth      `yaml:"auth"`
	RateLimit *GatewayRateLimit `yaml:"rate_limit"`
	CORS      *GatewayCORS      `yaml:"cors"`
	// RequestHeaders and ResponseHeaders set and remove headers on the
	// way to the backend and on the way back.
	RequestHeaders  *HeaderRewrite `yaml:"request_headers"`
	ResponseHeaders *HeaderRewrite `yaml:"response_headers"`
	// MaxBodyBytes bounds request bodies (413 beyond); 0 means the default.
	MaxBodyBytes int64         `yaml:"max_body_bytes"`
	Cache        *GatewayCache `yaml:"cache"`
	// Gzip compresses compressible responses for clients that accept it.
	Gzip *bool `yaml:"gzip"`
	// Timeout bounds the backend's answer (504 beyond).
	Timeout Duration `yaml:"timeout"`
}

// Merge returns m with every kind that o sets taken from o.
func (m GatewayMiddleware) Merge(o GatewayMiddleware) GatewayMiddleware {
	if o.Auth != nil {
		m.Auth = o.Auth
	}
	if o.RateLimit != nil {
		m.RateLimit = o.RateLimit
	}
	if o.CORS != nil {
		m.CORS = o.CORS
	}
	if o.RequestHeaders != nil {
		m.RequestHeaders = o.RequestHeaders
	}
	if o.ResponseHeaders != nil {
		m.ResponseHeaders = o.ResponseHeaders
	}
	if o.MaxBodyBytes != 0 {
		m.MaxBodyBytes = o.MaxBodyBytes
	}
	if o.Cache != nil {
		m.Cache = o.Cache
	}
	if o.Gzip != nil {
		m.Gzip = o.Gzip
	}
	if o.Timeout != 0 {
		m.Timeout = o.Timeout
	}
	return m
}

// GatewayAuth authenticates requests by API key or JWT (both set: either
// one is enough). None turns a default auth off for one route.
type GatewayAuth struct {
	None   bool        `yaml:"none"`
	APIKey *APIKeyAuth `yaml:"api_key"`
	JWT    *JWTAuth    `yaml:"jwt"`
}

// APIKeyAuth accepts requests that carry one of the keys.
type APIKeyAuth struct {
	Header string `yaml:"header"` // default X-Api-Key
	Query  string `yaml:"query"`  // also accepted in this query parameter
	// Keys maps a key's name (forwarded upstream, usable in rate-limit
	// keys as request.key) to its SHA-256 in hex ("sha256:..."), so the
	// config file holds no secret; or to the key itself from the
	// environment ("${ORDERS_KEY}").
	Keys map[string]string `yaml:"keys"`
	// ForwardAs names the header that carries the key's name upstream
	// (default X-Api-Key-Name); the key itself is never forwarded.
	ForwardAs string `yaml:"forward_as"`
}

// JWTAuth accepts requests with a valid bearer token.
type JWTAuth struct {
	Secret    string `yaml:"secret"`     // HS256/384/512
	PublicKey string `yaml:"public_key"` // a PEM file: RS* or ES*
	JWKSURL   string `yaml:"jwks_url"`   // keys fetched, cached and refreshed on an unknown kid
	// Algorithms allowed (default: those of the key material given).
	Algorithms []string `yaml:"algorithms"`
	Issuer     string   `yaml:"issuer"`
	Audience   string   `yaml:"audience"`
	Leeway     Duration `yaml:"leeway"` // clock skew allowed on exp and nbf (default 30s)
	// Require is a CEL condition over claims that must hold (403 if not).
	Require string `yaml:"require"`
	// Forward maps claims to the headers that carry them upstream.
	Forward map[string]string `yaml:"forward"`
}

// GatewayRateLimit is a token bucket per key.
type GatewayRateLimit struct {
	// Key is CEL over request (request.ip, request.headers, request.claims,
	// request.key); default request.ip.
	Key   string  `yaml:"key"`
	RPS   float64 `yaml:"rps"`
	Burst int     `yaml:"burst"` // default max(1, rps)
	// Scope is local (each node its own buckets) or global (buckets
	// shared by every node through JetStream).
	Scope string `yaml:"scope"`
}

// GatewayCORS answers preflights and sets CORS headers.
type GatewayCORS struct {
	Origins     []string `yaml:"origins"` // "*" for any
	Methods     []string `yaml:"methods"` // default GET, HEAD, POST
	Headers     []string `yaml:"headers"` // request headers allowed
	Expose      []string `yaml:"expose"`
	Credentials bool     `yaml:"credentials"`
	MaxAge      Duration `yaml:"max_age"`
}

// HeaderRewrite sets and removes headers.
type HeaderRewrite struct {
	Set    map[string]string `yaml:"set"`
	Remove []string          `yaml:"remove"`
}

// GatewayCache caches GET and HEAD responses that HTTP allows to be
// cached (Cache-Control, Vary), for at most TTL, answering If-None-Match
// with 304.
type GatewayCache struct {
	TTL        Duration `yaml:"ttl"`
	MaxEntries int      `yaml:"max_entries"` // default 10000
}

func (m *GatewayMiddleware) check() []issue {
	var is []issue
	add := func(f, format string, a ...any) { is = append(is, issue{Issue: Issue{f, fmt.Sprintf(format, a...)}}) }
	if a := m.Auth; a != nil {
		if !a.None && a.APIKey == nil && a.JWT == nil {
			add("auth", "auth needs api_key, jwt, or none: true")
		}
		if k := a.APIKey; k != nil {
			if len(k.Keys) == 0 {
				add("auth.api_key.keys", "api_key needs at least one key")
			}
			for name, v := range k.Keys {
				if h, ok := strings.CutPrefix(v, "sha256:"); ok {
					if b, err := hex.DecodeString(h); err != nil || len(b) != 32 {
						add("auth.api_key.keys."+name, "key %s: sha256: must be followed by 64 hex digits", name)
					}
				} else if len(v) < 16 {
					add("auth.api_key.keys."+name, "key %s: give its SHA-256 as sha256:<hex>, or a key of at least 16 characters (from the environment)", name)
				}
			}
		}
		if j := a.JWT; j != nil {
			n := 0
			for _, s := range []string{j.Secret, j.PublicKey, j.JWKSURL} {
				if s != "" {
					n++
				}
			}
			if n != 1 {
				add("auth.jwt", "jwt needs exactly one of secret, public_key and jwks_url")
			}
			if j.Secret != "" && len(j.Secret) < 32 {
				add("auth.jwt.secret", "an HMAC secret must be at least 32 bytes")
			}
			if j.JWKSURL != "" {
				if u, err := url.Parse(j.JWKSURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
					add("auth.jwt.jwks_url", "jwks_url must be an http(s) URL, got %q", j.JWKSURL)
				}
			}
			for i, alg := range j.Algorithms {
				switch alg {
				case "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA":
				default:
					add(fmt.Sprintf("auth.jwt.algorithms[%d]", i), "unknown JWT algorithm %q", alg)
				}
			}
			if j.Leeway < 0 {
				add("auth.jwt.leeway", "leeway must not be negative")
			}
			if j.Require != "" {
				if _, err := expr.CompileBool(j.Require); err != nil {
					line, col, msg := exprError(err)
					is = append(is, issue{Issue{"auth.jwt.require", "require: " + msg}, line, col})
				}
			}
		}
	}
	if r := m.RateLimit; r != nil {
		if r.RPS <= 0 {
			add("rate_limit.rps", "rate_limit.rps must be positive")
		}
		if r.Burst < 0 {
			add("rate_limit.burst", "rate_limit.burst must not be negative")
		}
		if r.Scope != "" && r.Scope != "local" && r.Scope != "global" {
			add("rate_limit.scope", "rate_limit.scope must be local or global, got %q", r.Scope)
		}
		if r.Key != "" {
			if _, err := expr.Compile(r.Key); err != nil {
				line, col, msg := exprError(err)
				is = append(is, issue{Issue{"rate_limit.key", "key: " + msg}, line, col})
			}
		}
	}
	if c := m.CORS; c != nil && len(c.Origins) == 0 {
		add("cors.origins", "cors needs origins (\"*\" for any)")
	}
	if c := m.CORS; c != nil && c.Credentials && len(c.Origins) == 1 && c.Origins[0] == "*" {
		add("cors.credentials", "credentials cannot be allowed to any origin (\"*\"): list the origins")
	}
	for _, h := range []*HeaderRewrite{m.RequestHeaders, m.ResponseHeaders} {
		if h == nil {
			continue
		}
		for k := range h.Set {
			if http.CanonicalHeaderKey(k) == "" || strings.ContainsAny(k, " :\r\n") {
				add("request_headers", "invalid header name %q", k)
			}
		}
	}
	if m.MaxBodyBytes < 0 {
		add("max_body_bytes", "max_body_bytes must not be negative")
	}
	if c := m.Cache; c != nil && c.TTL <= 0 {
		add("cache.ttl", "cache.ttl must be positive")
	}
	if m.Timeout < 0 {
		add("timeout", "timeout must not be negative")
	}
	return is
}
