package gateway

import (
	"context"
	"net"
	"net/http"
)

// middleware wraps a handler.
type middleware func(http.Handler) http.Handler

// Identity is who a request authenticated as: the name of its API key, or
// the claims of its JWT. Rate-limit keys and forwarded headers read it.
type Identity struct {
	KeyName string         // the API key's name in config
	Claims  map[string]any // the JWT's claims
}

type identityKey struct{}

// withIdentity returns r carrying id.
func withIdentity(r *http.Request, id *Identity) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), identityKey{}, id))
}

// identity returns who r authenticated as, or nil.
func identity(r *http.Request) *Identity {
	id, _ := r.Context().Value(identityKey{}).(*Identity)
	return id
}

// clientIP is the address of the peer: the gateway does not trust
// X-Forwarded-For by default, so a client cannot choose its own
// rate-limit bucket.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
