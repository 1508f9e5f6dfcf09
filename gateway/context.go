package gateway

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"strings"
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

// clientIP is the client's address: the peer's, or, when the peer is a
// trusted proxy, the one its X-Forwarded-For names (see resolveClient).
// X-Forwarded-For is not believed otherwise, so a client cannot choose
// its own rate-limit bucket.
func clientIP(r *http.Request) string {
	if c, ok := r.Context().Value(clientKey{}).(*client); ok {
		return c.ip
	}
	return peerIP(r)
}

func peerIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

type clientKey struct{}

// client is what the gateway knows of the request's sender.
type client struct {
	ip           string
	viaTrusted   bool // the peer is a trusted proxy: its X-Forwarded-For is passed on
	certSubject  string
	certURIs     []string
	hasClientCrt bool
}

// Headers that tell services about a verified client certificate; like
// identity headers, they are removed from every incoming request.
const (
	ClientCertSubjectHeader = "X-Client-Cert-Subject"
	ClientCertURIHeader     = "X-Client-Cert-Uri"
)

// resolveClient records who sent r: the client's address through trusted
// proxies (the nearest X-Forwarded-For entry, from the right, that is not
// a trusted proxy itself) and the verified client certificate, whose
// subject and first URI go to the service as headers.
func resolveClient(r *http.Request, trusted []netip.Prefix) *http.Request {
	c := &client{ip: peerIP(r)}
	if isTrusted(c.ip, trusted) {
		c.viaTrusted = true
		hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
		for i := len(hops) - 1; i >= 0; i-- {
			h := strings.TrimSpace(hops[i])
			if h == "" {
				continue
			}
			c.ip = h
			if !isTrusted(h, trusted) {
				break
			}
		}
	}
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.PeerCertificates) > 0 {
		cert := r.TLS.PeerCertificates[0]
		c.hasClientCrt, c.certSubject = true, cert.Subject.String()
		r.Header.Set(ClientCertSubjectHeader, c.certSubject)
		for _, u := range cert.URIs {
			c.certURIs = append(c.certURIs, u.String())
		}
		if len(c.certURIs) > 0 {
			r.Header.Set(ClientCertURIHeader, c.certURIs[0])
		}
	}
	return r.WithContext(context.WithValue(r.Context(), clientKey{}, c))
}

func isTrusted(ip string, trusted []netip.Prefix) bool {
	if len(trusted) == 0 {
		return false
	}
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return false
	}
	a = a.Unmap()
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// viaTrustedProxy reports whether r came through a trusted proxy.
func viaTrustedProxy(r *http.Request) bool {
	c, ok := r.Context().Value(clientKey{}).(*client)
	return ok && c.viaTrusted
}
