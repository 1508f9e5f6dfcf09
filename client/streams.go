package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// ExpectedVersion is the optimistic-concurrency condition of an append:
// ExpectAny, ExpectNoStream, ExpectExists, or a version >= 0 that must be
// the stream's last version.
type ExpectedVersion int64

// Special expected versions.
const (
	ExpectAny      ExpectedVersion = -1 // no check
	ExpectNoStream ExpectedVersion = -2 // the stream must not exist
	ExpectExists   ExpectedVersion = -3 // the stream must have an event
)

// String renders the condition as the API and the CLI spell it.
func (e ExpectedVersion) String() string {
	switch e {
	case ExpectAny:
		return "any"
	case ExpectNoStream:
		return "no_stream"
	case ExpectExists:
		return "exists"
	}
	return strconv.FormatInt(int64(e), 10)
}

// MarshalJSON writes a special condition as its name, a version as a number.
func (e ExpectedVersion) MarshalJSON() ([]byte, error) {
	if e < 0 {
		return json.Marshal(e.String())
	}
	return []byte(strconv.FormatInt(int64(e), 10)), nil
}

// ParseExpectedVersion reads any, no_stream, exists or a version number.
func ParseExpectedVersion(s string) (ExpectedVersion, error) {
	switch s {
	case "any", "":
		return ExpectAny, nil
	case "no_stream":
		return ExpectNoStream, nil
	case "exists":
		return ExpectExists, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("expected version %q: want any, no_stream, exists or a version number >= 0", s)
	}
	return ExpectedVersion(n), nil
}

// EventData is an event to append. ID is the idempotency key (assigned by
// the server when empty); Data is required and Metadata optional, both
// JSON.
type EventData struct {
	ID       string          `json:"id,omitempty"`
	Type     string          `json:"type"`
	Data     json.RawMessage `json:"data"`
	Metadata json.RawMessage `json:"metadata,omitempty"`
}

// AppendResult says where an append landed; Position is the global
// position of its last event.
type AppendResult struct {
	FirstVersion uint64 `json:"first_version"`
	LastVersion  uint64 `json:"last_version"`
	Position     uint64 `json:"position"`
}

// StreamEvent is a stored event.
type StreamEvent struct {
	Stream   string          `json:"stream"`
	Version  uint64          `json:"version"`
	Position uint64          `json:"position"`
	ID       string          `json:"id"`
	Type     string          `json:"type"`
	Data     json.RawMessage `json:"data"`
	Metadata json.RawMessage `json:"metadata"`
	Time     time.Time       `json:"time"`
}

// ReadStreamOptions selects events of one stream. A forward read starts
// at version From; a backward read goes down from From, or from the last
// event when From is 0. Limit 0 is the server's default (100).
type ReadStreamOptions struct {
	From     uint64
	Limit    int
	Backward bool
}

// ReadAllOptions selects events of the global log from position
// FromPosition on, optionally of some categories and event types only.
type ReadAllOptions struct {
	FromPosition uint64
	Limit        int
	Categories   []string
	Types        []string
}

// EventsPage is a page of the global log; NextPosition is the
// FromPosition that continues after it.
type EventsPage struct {
	Events       []StreamEvent `json:"events"`
	NextPosition uint64        `json:"next_position"`
}

// Append writes events to stream if expected holds. A failed check is an
// *Error with Code wrong_expected_version and CurrentVersion set.
// Appending the same event ids again returns the first append's result.
func (c *Client) Append(ctx context.Context, stream string, expected ExpectedVersion, events ...EventData) (AppendResult, error) {
	var r AppendResult
	body := map[string]any{"events": events, "expected_version": expected}
	err := c.do(ctx, http.MethodPost, "/v1/streams/"+esc(stream), nil, jsonBody(body), &r)
	return r, err
}

// ReadStream reads events of one stream. A stream that does not exist is
// an *Error with Code stream_not_found; a deleted one stream_deleted.
func (c *Client) ReadStream(ctx context.Context, stream string, o ReadStreamOptions) ([]StreamEvent, error) {
	q := url.Values{}
	if o.Backward {
		q.Set("direction", "backward")
	}
	if o.From != 0 {
		q.Set("from", strconv.FormatUint(o.From, 10))
	}
	if o.Limit > 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	var r struct {
		Events []StreamEvent `json:"events"`
	}
	err := c.do(ctx, http.MethodGet, "/v1/streams/"+esc(stream)+encodeQuery(q), nil, nil, &r)
	return r.Events, err
}

// ReadAll reads the global log in commit order.
func (c *Client) ReadAll(ctx context.Context, o ReadAllOptions) (*EventsPage, error) {
	q := url.Values{}
	if o.FromPosition != 0 {
		q.Set("from_position", strconv.FormatUint(o.FromPosition, 10))
	}
	if o.Limit > 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	if len(o.Categories) > 0 {
		q.Set("category", strings.Join(o.Categories, ","))
	}
	if len(o.Types) > 0 {
		q.Set("types", strings.Join(o.Types, ","))
	}
	var p EventsPage
	return &p, c.do(ctx, http.MethodGet, "/v1/events"+encodeQuery(q), nil, nil, &p)
}

// DeleteStream soft-deletes a stream: reading it then fails with
// stream_deleted, while the global log keeps its events.
func (c *Client) DeleteStream(ctx context.Context, stream string) error {
	return c.do(ctx, http.MethodDelete, "/v1/streams/"+esc(stream), nil, nil, nil)
}

// Retention bounds what a stream keeps: its events of the last MaxAge,
// and its last MaxCount versions. Zero fields mean no bound.
type Retention struct {
	MaxAge   time.Duration
	MaxCount uint64
}

// wireRetention is a Retention as the API spells it: max_age is a Go
// duration string, and zero fields are left out.
type wireRetention struct {
	MaxAge   string `json:"max_age,omitempty"`
	MaxCount uint64 `json:"max_count,omitempty"`
}

func (w wireRetention) retention() (Retention, error) {
	r := Retention{MaxCount: w.MaxCount}
	if w.MaxAge != "" {
		d, err := time.ParseDuration(w.MaxAge)
		if err != nil {
			return Retention{}, fmt.Errorf("retention: max_age: %w", err)
		}
		r.MaxAge = d
	}
	return r, nil
}

// SetRetention sets stream's retention, also before the stream exists;
// the zero Retention removes it. Events outside it are no longer read and
// are removed from the store. It returns the retention stored.
func (c *Client) SetRetention(ctx context.Context, stream string, r Retention) (Retention, error) {
	in := wireRetention{MaxCount: r.MaxCount}
	if r.MaxAge != 0 {
		in.MaxAge = r.MaxAge.String()
	}
	var out wireRetention
	if err := c.do(ctx, http.MethodPut, "/v1/streams/"+esc(stream)+"/retention", nil, jsonBody(in), &out); err != nil {
		return Retention{}, err
	}
	return out.retention()
}

// GetRetention returns stream's retention, zero when it has none.
func (c *Client) GetRetention(ctx context.Context, stream string) (Retention, error) {
	var out wireRetention
	if err := c.do(ctx, http.MethodGet, "/v1/streams/"+esc(stream)+"/retention", nil, nil, &out); err != nil {
		return Retention{}, err
	}
	return out.retention()
}

func encodeQuery(q url.Values) string {
	if len(q) == 0 {
		return ""
	}
	return "?" + q.Encode()
}

// FollowStream calls fn for the events of stream from version from on,
// then for each new one as it is appended, until ctx ends (nil is
// returned), fn fails (its error), or the stream is deleted (an error).
// A stream that does not exist yet is waited for. To resume after an
// error, follow again from the last version seen plus one.
func (c *Client) FollowStream(ctx context.Context, stream string, from uint64, fn func(StreamEvent) error) error {
	return sse(ctx, c, "/v1/streams/"+esc(stream)+"?follow=true&from="+strconv.FormatUint(from, 10), "follow", fn)
}

// FollowAll calls fn for the events of the global log selected by o
// (o.Limit is ignored) from o.FromPosition on, then for each new one, in
// commit order, until ctx ends (nil) or fn fails (its error). To resume,
// follow again from the last position seen plus one.
func (c *Client) FollowAll(ctx context.Context, o ReadAllOptions, fn func(StreamEvent) error) error {
	q := url.Values{"follow": {"true"}}
	if o.FromPosition != 0 {
		q.Set("from_position", strconv.FormatUint(o.FromPosition, 10))
	}
	if len(o.Categories) > 0 {
		q.Set("category", strings.Join(o.Categories, ","))
	}
	if len(o.Types) > 0 {
		q.Set("types", strings.Join(o.Types, ","))
	}
	return sse(ctx, c, "/v1/events"+encodeQuery(q), "follow", fn)
}
