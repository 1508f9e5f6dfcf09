package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/internal/problem"
)

// CompletedHeader is "false" on an aggregate answer that lacks a part
// (failed or too slow).
const CompletedHeader = "Junction-Completed"

// maxPartBytes bounds the body read from one part of an aggregate.
const maxPartBytes = 4 << 20

// aggregate calls every part at once, each within its timeout, and
// merges the JSON objects they return: under the part's key, or at the
// root. A part that fails is left out and the answer says so with
// Junction-Completed: false; when every part fails the answer is 502.
func (g *Gateway) aggregate(parts map[string]*config.AggregatePart) http.Handler {
	keys := make([]string, 0, len(parts))
	for k := range parts {
		keys = append(keys, k)
	}
	sort.Strings(keys) // root merges apply in a stable order
	noRedirect := func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	viaMesh := &http.Client{Transport: g.o.Services, CheckRedirect: noRedirect}
	direct := &http.Client{Transport: g.o.HTTPClient.Transport, CheckRedirect: noRedirect}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		results := make([]map[string]any, len(keys))
		errs := make([]error, len(keys))
		var wg sync.WaitGroup
		for i, k := range keys {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := viaMesh
				if parts[k].URL != "" {
					c = direct
				}
				results[i], errs[i] = g.callPart(r, c, parts[k])
			}()
		}
		wg.Wait()
		out := map[string]any{}
		failed := 0
		for i, k := range keys {
			if errs[i] != nil {
				failed++
				g.log.Warn("aggregate part failed", "part", k, "err", errs[i], "request_id", r.Header.Get(RequestIDHeader))
				continue
			}
			if parts[k].Root {
				for f, v := range results[i] {
					out[f] = v
				}
			} else {
				out[k] = results[i]
			}
		}
		if failed == len(keys) {
			problem.Write(w, r, problem.New(problem.CodeUpstream, "every part of the aggregate failed (first: %v)", errs[0]))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set(CompletedHeader, fmt.Sprint(failed == 0))
		w.WriteHeader(http.StatusOK)
		_ = json.NewEncoder(w).Encode(out)
	})
}

// callPart makes one part's call, with the incoming request's headers
// (identity, trace context, request id), and returns its JSON object
// filtered by allow or deny.
func (g *Gateway) callPart(r *http.Request, client *http.Client, p *config.AggregatePart) (map[string]any, error) {
	timeout := p.Timeout.D()
	if timeout == 0 {
		timeout = 2 * time.Second
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	target := p.URL
	if p.Service != "" {
		target = "http://" + p.Service + expand(p.Path, params(r), true)
	}
	method := strings.ToUpper(p.Method)
	if method == "" {
		method = http.MethodGet
	}
	req, err := http.NewRequestWithContext(ctx, method, target, nil)
	if err != nil {
		return nil, err
	}
	for k, vs := range r.Header {
		switch http.CanonicalHeaderKey(k) {
		case "Connection", "Content-Length", "Content-Type", "Te", "Upgrade", "Accept-Encoding", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding",
			"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "Forwarded":
			continue
		case "Authorization", "Cookie":
			if p.URL != "" {
				continue // the client's credentials are not for a third party
			}
		}
		req.Header[k] = vs
	}
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("%s answered %d", target, resp.StatusCode)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxPartBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxPartBytes {
		return nil, fmt.Errorf("%s answered more than %d bytes", target, maxPartBytes)
	}
	var obj map[string]any
	if err := json.Unmarshal(b, &obj); err != nil {
		return nil, fmt.Errorf("%s did not answer a JSON object: %w", target, err)
	}
	switch {
	case len(p.Allow) > 0:
		for f := range obj {
			if !slices.Contains(p.Allow, f) {
				delete(obj, f)
			}
		}
	case len(p.Deny) > 0:
		for _, f := range p.Deny {
			delete(obj, f)
		}
	}
	return obj, nil
}
