package client

import (
	"context"
	"io"
	"net/http"
	"strings"
	"time"
)

// Registration announces an instance of a service (PUT
// /v1/services/{service}/instances/{id}); register again before TTL ends
// to keep it alive.
type Registration struct {
	URL      string            `json:"url"`
	TTL      string            `json:"ttl,omitempty"` // Go duration; default 30s
	Weight   int               `json:"weight,omitempty"`
	MTLS     bool              `json:"mtls,omitempty"`
	Metadata map[string]string `json:"metadata,omitempty"`
}

// Instance is one instance of a service with the node's view of its health.
type Instance struct {
	ID           string            `json:"id"`
	URL          string            `json:"url"`
	Source       string            `json:"source"`
	Weight       int               `json:"weight"`
	MTLS         bool              `json:"mtls,omitempty"`
	Metadata     map[string]string `json:"metadata,omitempty"`
	Health       string            `json:"health"`
	HealthError  string            `json:"health_error,omitempty"`
	Ejected      bool              `json:"ejected"`
	EjectedUntil *time.Time        `json:"ejected_until,omitempty"`
	Breaker      string            `json:"breaker,omitempty"`
	InFlight     int64             `json:"in_flight"`
	Latency      string            `json:"latency,omitempty"`
	Available    bool              `json:"available"`
	RegisteredAt *time.Time        `json:"registered_at,omitempty"`
	ExpiresAt    *time.Time        `json:"expires_at,omitempty"`
}

// Service is a service with its instances.
type Service struct {
	Name      string     `json:"name"`
	Source    string     `json:"source"`
	Balancer  string     `json:"balancer"`
	Policy    string     `json:"policy"`
	Breaker   string     `json:"breaker,omitempty"`
	InFlight  int        `json:"in_flight"`
	Instances []Instance `json:"instances"`
}

// Register records or renews an instance.
func (c *Client) Register(ctx context.Context, service, id string, r Registration) (*Instance, error) {
	var in Instance
	return &in, c.do(ctx, http.MethodPut, "/v1/services/"+esc(service)+"/instances/"+esc(id), nil, jsonBody(r), &in)
}

// Deregister removes a registered instance.
func (c *Client) Deregister(ctx context.Context, service, id string) error {
	return c.do(ctx, http.MethodDelete, "/v1/services/"+esc(service)+"/instances/"+esc(id), nil, nil, nil)
}

// ListServices returns every service the node knows.
func (c *Client) ListServices(ctx context.Context) ([]Service, error) {
	var ss []Service
	return ss, c.do(ctx, http.MethodGet, "/v1/services", nil, nil, &ss)
}

// GetService returns one service.
func (c *Client) GetService(ctx context.Context, service string) (*Service, error) {
	var s Service
	return &s, c.do(ctx, http.MethodGet, "/v1/services/"+esc(service), nil, nil, &s)
}

// Invoke calls path on the service through the mesh and returns the
// service's response as it is, whatever its status; the caller closes
// its body. A refusal by Junction itself (no such service, an open
// circuit breaker) is an *Error with its code.
func (c *Client) Invoke(ctx context.Context, method, service, path string, hdr http.Header, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+"/v1/invoke/"+esc(service)+"/"+strings.TrimPrefix(path, "/"), body)
	if err != nil {
		return nil, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	// Junction marks its own refusals, so that a service's answers, which
	// pass through unchanged, are never mistaken for them.
	if resp.Header.Get("Junction-Error") != "" {
		defer resp.Body.Close()
		return nil, decodeError(resp)
	}
	return resp, nil
}
