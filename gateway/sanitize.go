package gateway

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/internal/problem"
)

// checkPath refuses paths that mean something else to a server behind
// the gateway than to the gateway's router: dot segments (also encoded,
// or hidden in an encoded slash: ..%2f), empty segments inside the path
// (//), backslashes, NUL, and ';' parameters (which some servers strip).
// Without it /public/../admin matches a public route and reaches an
// authenticated one upstream.
func checkPath(escaped string) error {
	segs := strings.Split(strings.TrimPrefix(escaped, "/"), "/")
	for i, s := range segs {
		if s == "" {
			if i == len(segs)-1 {
				continue // a trailing slash
			}
			return badPath(escaped, "an empty segment (//)")
		}
		v, err := url.PathUnescape(s)
		if err != nil {
			return badPath(escaped, "a malformed escape")
		}
		if strings.ContainsAny(v, "\\;\x00") {
			return badPath(escaped, "a backslash, ';' or NUL")
		}
		for _, part := range strings.Split(v, "/") {
			if part == "." || part == ".." {
				return badPath(escaped, "a dot segment")
			}
		}
	}
	return nil
}

func badPath(p, why string) error {
	return problem.New(problem.CodeBadRequest, "the path %q is refused: it has %s", p, why)
}

// identityHeaders are the headers through which the gateway tells
// services who a request authenticated as, across every route: they are
// removed from every incoming request, so a client cannot set them on a
// route without authentication either.
func identityHeaders(cfg config.Gateway) map[string]bool {
	out := map[string]bool{headerKey(ClientCertSubjectHeader): true, headerKey(ClientCertURIHeader): true}
	add := func(a *config.GatewayAuth) {
		if a == nil {
			return
		}
		if k := a.APIKey; k != nil {
			h := k.ForwardAs
			if h == "" {
				h = DefaultAPIKeyForwardAs
			}
			out[headerKey(h)] = true
		}
		if j := a.JWT; j != nil {
			for _, h := range j.Forward {
				out[headerKey(h)] = true
			}
		}
	}
	add(cfg.Defaults.Auth)
	for _, r := range cfg.Routes {
		if r != nil {
			add(r.Auth)
		}
	}
	return out
}

// headerKey folds a header name the way servers that read headers as
// environment variables do (X_Api_Key_Name is X-Api-Key-Name there).
func headerKey(h string) string { return strings.ReplaceAll(strings.ToLower(h), "_", "-") }

func stripHeaders(h http.Header, names map[string]bool) {
	if len(names) == 0 {
		return
	}
	for k := range h {
		if names[headerKey(k)] {
			delete(h, k)
		}
	}
}
