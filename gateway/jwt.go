package gateway

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"

	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/expr"
)

// DefaultJWTLeeway is the clock skew allowed on exp, nbf and iat when a
// route sets no leeway.
const DefaultJWTLeeway = 30 * time.Second

// maxTokenLen bounds the bearer tokens the gateway tries to parse.
const maxTokenLen = 16 << 10

// The algorithm families. HMAC is only ever allowed with a secret and the
// others only with public keys: a token cannot choose to be checked with
// a public key used as an HMAC secret (algorithm confusion), and "none"
// is never allowed.
var (
	hmacAlgs  = []string{"HS256", "HS384", "HS512"}
	rsaAlgs   = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
	ecdsaAlgs = []string{"ES256", "ES384", "ES512"}
	edAlgs    = []string{"EdDSA"}
)

// jwtAuth verifies bearer tokens.
type jwtAuth struct {
	parser  *jwt.Parser
	key     any // the secret or public key; nil with a JWKS
	jwks    keyfunc.Keyfunc
	algs    []string // allowed algorithms
	require *expr.Program
	forward map[string]string // claim -> header (canonical)
	issuer  string
	aud     string
}

// newJWTAuth builds the verifier of cfg: its key material, the algorithms
// it allows, its claim checks, require and forwarded claims.
func newJWTAuth(cfg *config.JWTAuth, hc *http.Client) (*jwtAuth, error) {
	a := &jwtAuth{issuer: cfg.Issuer, aud: cfg.Audience}
	var family []string
	switch {
	case cfg.Secret != "":
		a.key = []byte(cfg.Secret)
		family = hmacAlgs
	case cfg.PublicKey != "":
		k, err := loadPublicKey(cfg.PublicKey)
		if err != nil {
			return nil, err
		}
		a.key = k
		switch k.(type) {
		case *rsa.PublicKey:
			family = rsaAlgs
		case *ecdsa.PublicKey:
			family = ecdsaAlgs
		case ed25519.PublicKey:
			family = edAlgs
		}
	case cfg.JWKSURL != "":
		family = slices.Concat(rsaAlgs, ecdsaAlgs, edAlgs)
	default:
		return nil, errors.New("jwt needs one of secret, public_key and jwks_url")
	}
	if len(cfg.Algorithms) == 0 {
		a.algs = family
	} else {
		for _, alg := range cfg.Algorithms {
			if !slices.Contains(family, alg) {
				return nil, fmt.Errorf("jwt: algorithm %s does not fit the key material (allowed: %s)", alg, strings.Join(family, ", "))
			}
		}
		a.algs = slices.Clone(cfg.Algorithms)
	}
	if cfg.JWKSURL != "" {
		kf, err := sharedJWKS(cfg.JWKSURL, hc)
		if err != nil {
			return nil, err
		}
		a.jwks = kf
	}
	leeway := cfg.Leeway.D()
	if leeway == 0 {
		leeway = DefaultJWTLeeway
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(a.algs),
		jwt.WithLeeway(leeway),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	a.parser = jwt.NewParser(opts...)
	if cfg.Require != "" {
		p, err := expr.CompileBool(cfg.Require)
		if err != nil {
			return nil, fmt.Errorf("jwt: require: %w", err)
		}
		a.require = p
	}
	if len(cfg.Forward) > 0 {
		a.forward = make(map[string]string, len(cfg.Forward))
		for claim, h := range cfg.Forward {
			if !validHeaderName(h) {
				return nil, fmt.Errorf("jwt: forward: invalid header name %q for claim %s", h, claim)
			}
			a.forward[claim] = http.CanonicalHeaderKey(h)
		}
	}
	return a, nil
}

// verify parses and checks a token, returning its claims, or a reason
// for the client that names no key material.
func (a *jwtAuth) verify(ctx context.Context, token string) (map[string]any, string) {
	if len(token) > maxTokenLen {
		return nil, "the token is too long"
	}
	kf := a.keyfunc
	if a.jwks != nil {
		kf = a.jwks.KeyfuncCtx(ctx)
	}
	claims := jwt.MapClaims{}
	tok, err := a.parser.ParseWithClaims(token, claims, kf)
	if err == nil && tok.Valid {
		return claims, ""
	}
	return nil, a.reason(tok, claims, err)
}

// keyfunc hands the configured key to the parser, once more refusing an
// algorithm outside the allowed ones.
func (a *jwtAuth) keyfunc(t *jwt.Token) (any, error) {
	if t.Method == nil || !slices.Contains(a.algs, t.Method.Alg()) {
		return nil, errors.New("signing algorithm not allowed")
	}
	return a.key, nil
}

// reason turns a parse error into what the client is told.
func (a *jwtAuth) reason(tok *jwt.Token, claims jwt.MapClaims, err error) string {
	switch {
	case err == nil:
		return "the token is invalid"
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "the token is malformed"
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		if a.jwks != nil {
			return "the token's signing key is unknown"
		}
		return "the token cannot be verified"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		if tok != nil {
			if alg, _ := tok.Header["alg"].(string); !slices.Contains(a.algs, alg) {
				return "the token's signing algorithm is not accepted"
			}
		}
		return "the token's signature is invalid"
	case errors.Is(err, jwt.ErrTokenExpired):
		return "the token has expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return "the token is not valid yet (nbf)"
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return "the token was issued in the future (iat)"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return "the token's issuer is not accepted"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return "the token's audience is not accepted"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		if _, ok := claims["exp"]; !ok {
			return "the token has no expiry (exp)"
		}
		if _, ok := claims["iss"]; !ok && a.issuer != "" {
			return "the token has no issuer (iss)"
		}
		if _, ok := claims["aud"]; !ok && a.aud != "" {
			return "the token has no audience (aud)"
		}
		return "the token lacks a required claim"
	case errors.Is(err, jwt.ErrTokenInvalidClaims):
		return "the token's claims are invalid"
	}
	return "the token is invalid"
}

// loadPublicKey reads a PEM file holding an RSA, ECDSA or Ed25519 public
// key (PKIX "PUBLIC KEY", PKCS #1 "RSA PUBLIC KEY", or a certificate).
func loadPublicKey(path string) (any, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("jwt: public_key: %w", err)
	}
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, fmt.Errorf("jwt: public_key %s: no public key in PEM", path)
		}
		var k any
		switch blk.Type {
		case "PUBLIC KEY":
			k, err = x509.ParsePKIXPublicKey(blk.Bytes)
		case "RSA PUBLIC KEY":
			k, err = x509.ParsePKCS1PublicKey(blk.Bytes)
		case "CERTIFICATE":
			var c *x509.Certificate
			if c, err = x509.ParseCertificate(blk.Bytes); err == nil {
				k = c.PublicKey
			}
		default:
			continue // a private key or anything else is not what we want
		}
		if err != nil {
			return nil, fmt.Errorf("jwt: public_key %s: %w", path, err)
		}
		switch k.(type) {
		case *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey:
			return k, nil
		}
		return nil, fmt.Errorf("jwt: public_key %s: unsupported key type %T", path, k)
	}
}

// JWKS caches, one per URL and HTTP client for the life of the process:
// route tables are rebuilt on every config reload, and each cache owns a
// refresh goroutine, so a new one per reload would leak.
var (
	jwksMu    sync.Mutex
	jwksCache = map[jwksKey]keyfunc.Keyfunc{}
)

type jwksKey struct {
	url string
	hc  *http.Client
}

// jwksFetchTimeout bounds one fetch of a JWKS document, and how long a
// request with an unknown kid may wait for its refresh.
const jwksFetchTimeout = 10 * time.Second

// sharedJWKS returns the cache of url's keys, creating it on first use:
// the keys are fetched at once (a failure is logged, not fatal, and
// retried when a token names an unknown kid), refreshed every hour and
// on an unknown kid at most every five minutes (keyfunc's defaults).
func sharedJWKS(url string, hc *http.Client) (keyfunc.Keyfunc, error) {
	if hc == nil {
		hc = http.DefaultClient
	}
	k := jwksKey{url, hc}
	jwksMu.Lock()
	defer jwksMu.Unlock()
	if kf, ok := jwksCache[k]; ok {
		return kf, nil
	}
	kf, err := keyfunc.NewDefaultOverrideCtx(context.Background(), []string{url}, keyfunc.Override{
		Client:           hc,
		HTTPTimeout:      jwksFetchTimeout,
		RateLimitWaitMax: jwksFetchTimeout,
		RefreshErrorHandlerFunc: func(u string) func(context.Context, error) {
			return func(ctx context.Context, err error) {
				slog.Default().WarnContext(ctx, "fetching JWKS failed", "component", "gateway", "url", u, "error", err)
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("jwt: jwks_url: %w", err)
	}
	jwksCache[k] = kf
	return kf, nil
}
