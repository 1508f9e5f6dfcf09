package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// ViewQuery selects rows of a view: equality filters by column, an order
// column ("-col" for descending), a page size and the previous page's
// cursor. MinPosition > 0 waits (up to Wait, the server's default when
// zero) until the view has applied that global position: pass an append's
// Position to read your own write.
type ViewQuery struct {
	Filters     map[string]string
	Order       string
	Limit       int
	Cursor      string
	MinPosition uint64
	Wait        time.Duration
}

// RowsPage is one page of a view; NextCursor is empty on the last page.
type RowsPage struct {
	Rows       []map[string]any `json:"rows"`
	NextCursor string           `json:"next_cursor"`
}

// ProjectionStatus is a projection's state as GET /v1/projections shows it.
type ProjectionStatus struct {
	Name          string  `json:"name"`
	Table         string  `json:"table"`
	Database      string  `json:"database"`
	State         string  `json:"state"`
	Position      uint64  `json:"position"`
	AppliedEvents uint64  `json:"applied_events"`
	SkippedEvents uint64  `json:"skipped_events"`
	LagSeconds    float64 `json:"lag_seconds"`
	LastError     *struct {
		Message  string `json:"message"`
		Position uint64 `json:"position"`
		Stream   string `json:"stream"`
		Type     string `json:"type"`
	} `json:"last_error"`
	Rebuild *struct {
		Position      uint64 `json:"position"`
		AppliedEvents uint64 `json:"applied_events"`
	} `json:"rebuild"`
}

func waitParams(q url.Values, minPosition uint64, wait time.Duration) {
	if minPosition > 0 {
		q.Set("min_position", strconv.FormatUint(minPosition, 10))
		if wait > 0 {
			q.Set("wait", wait.String())
		}
	}
}

// GetRow reads the row of view whose key is key, after waiting for
// minPosition (0: no wait).
func (c *Client) GetRow(ctx context.Context, view, key string, minPosition uint64) (map[string]any, error) {
	q := url.Values{}
	waitParams(q, minPosition, 0)
	var row map[string]any
	return row, c.do(ctx, http.MethodGet, "/v1/views/"+esc(view)+"/"+esc(key)+encodeQuery(q), nil, nil, &row)
}

// ListRows reads one page of view.
func (c *Client) ListRows(ctx context.Context, view string, o ViewQuery) (*RowsPage, error) {
	q := url.Values{}
	for k, v := range o.Filters {
		q.Set(k, v)
	}
	if o.Order != "" {
		q.Set("order", o.Order)
	}
	if o.Limit > 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	if o.Cursor != "" {
		q.Set("cursor", o.Cursor)
	}
	waitParams(q, o.MinPosition, o.Wait)
	var p RowsPage
	return &p, c.do(ctx, http.MethodGet, "/v1/views/"+esc(view)+encodeQuery(q), nil, nil, &p)
}

// Projections lists every projection's status.
func (c *Client) Projections(ctx context.Context) ([]ProjectionStatus, error) {
	var r struct {
		Projections []ProjectionStatus `json:"projections"`
	}
	return r.Projections, c.do(ctx, http.MethodGet, "/v1/projections", nil, nil, &r)
}

// RebuildProjection starts rebuilding a projection's view from the start
// of the log; the old view answers until the new one replaces it.
func (c *Client) RebuildProjection(ctx context.Context, name string) (*ProjectionStatus, error) {
	var s ProjectionStatus
	return &s, c.do(ctx, http.MethodPost, "/v1/projections/"+esc(name)+"/rebuild", nil, nil, &s)
}
