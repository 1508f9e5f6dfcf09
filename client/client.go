// Package client is a Go client for Junction's HTTP API (/v1). It has no
// dependency on the server packages, so programs that only talk to
// Junction stay small.
package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Client talks to one Junction API endpoint. It is safe for concurrent use.
type Client struct {
	base  string
	token string
	hc    *http.Client
}

// Option configures a Client.
type Option func(*Client)

// WithToken sends Authorization: Bearer token on every request.
func WithToken(token string) Option { return func(c *Client) { c.token = token } }

// WithHTTPClient replaces the HTTP client (timeouts, transport, tracing).
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.hc = hc } }

// New returns a client for baseURL, such as http://127.0.0.1:4000.
func New(baseURL string, opts ...Option) *Client {
	c := &Client{base: strings.TrimRight(baseURL, "/"), hc: &http.Client{Transport: &http.Transport{
		MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second,
	}}}
	for _, o := range opts {
		o(c)
	}
	return c
}

// Error is a problem+json answer from the API.
type Error struct {
	Status int          `json:"status"`
	Code   string       `json:"code"`
	Title  string       `json:"title"`
	Detail string       `json:"detail"`
	Errors []FieldError `json:"errors,omitempty"`
	// CurrentVersion is the stream's last version (-1: no stream) when
	// Code is wrong_expected_version, so a writer can re-read and retry.
	CurrentVersion *int64 `json:"current_version,omitempty"`
}

// FieldError is one invalid field of a request.
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

func (e *Error) Error() string {
	return fmt.Sprintf("junction: %d %s: %s", e.Status, e.Code, e.Detail)
}

// Event is a CloudEvent to publish. Empty ID, Source and Type are filled
// by the server (ID as a UUIDv7).
type Event struct {
	ID          string
	Type        string
	Source      string
	Subject     string
	Key         string // ordering key (ce-partitionkey)
	ContentType string
	Extensions  map[string]string
	Data        []byte
}

// PublishResult is the outcome of one published event.
type PublishResult struct {
	ID        string `json:"id"`
	Sequence  uint64 `json:"sequence"`
	Duplicate bool   `json:"duplicate"`
	Error     *Error `json:"error,omitempty"`
}

// Message is a delivered or tailed message.
type Message struct {
	AckID           string            `json:"ack_id,omitempty"`
	ID              string            `json:"id"`
	Topic           string            `json:"topic"`
	Sequence        uint64            `json:"sequence"`
	Type            string            `json:"type"`
	Source          string            `json:"source"`
	Subject         string            `json:"subject,omitempty"`
	Time            time.Time         `json:"time"`
	Key             string            `json:"key,omitempty"`
	DataContentType string            `json:"datacontenttype,omitempty"`
	Deliveries      int               `json:"deliveries,omitempty"`
	Headers         map[string]string `json:"headers,omitempty"`
	Data            json.RawMessage   `json:"data,omitempty"`
	DataBase64      string            `json:"data_base64,omitempty"`
}

// Bytes returns the payload: decoded base64, a JSON string's text, or the
// JSON text itself.
func (m *Message) Bytes() []byte {
	if m.DataBase64 != "" {
		b, _ := base64.StdEncoding.DecodeString(m.DataBase64)
		return b
	}
	var s string
	if len(m.Data) > 0 && m.Data[0] == '"' && json.Unmarshal(m.Data, &s) == nil {
		return []byte(s)
	}
	return m.Data
}

// Topic is a topic's retention settings.
type Topic struct {
	MaxAge      string `json:"max_age,omitempty"`
	MaxBytes    int64  `json:"max_bytes,omitempty"`
	MaxMsgs     int64  `json:"max_msgs,omitempty"`
	Replicas    int    `json:"replicas,omitempty"`
	DedupWindow string `json:"dedup_window,omitempty"`
}

// TopicInfo is a topic with its stats.
type TopicInfo struct {
	Name   string `json:"name"`
	Config Topic  `json:"config"`
	Stats  struct {
		Messages      uint64 `json:"messages"`
		Bytes         uint64 `json:"bytes"`
		FirstSequence uint64 `json:"first_sequence"`
		LastSequence  uint64 `json:"last_sequence"`
		Subscriptions int    `json:"subscriptions"`
	} `json:"stats"`
}

// Push is a push subscription's webhook.
type Push struct {
	URL     string            `json:"url"`
	Timeout string            `json:"timeout,omitempty"`
	Headers map[string]string `json:"headers,omitempty"`
}

// Subscription is a durable consumer of a topic.
type Subscription struct {
	Topic           string   `json:"topic"`
	Filter          string   `json:"filter,omitempty"`
	Start           string   `json:"start,omitempty"`
	Push            *Push    `json:"push,omitempty"`
	MaxInFlight     int      `json:"max_in_flight,omitempty"`
	OrderedByKey    bool     `json:"ordered_by_key,omitempty"`
	AckWait         string   `json:"ack_wait,omitempty"`
	MaxDeliver      int      `json:"max_deliver,omitempty"`
	Backoff         []string `json:"backoff,omitempty"`
	DeadLetterTopic string   `json:"dead_letter_topic,omitempty"`
}

// SubscriptionInfo is a subscription with its stats.
type SubscriptionInfo struct {
	Name   string       `json:"name"`
	Config Subscription `json:"config"`
	Stats  struct {
		Pending      uint64 `json:"pending"`
		InFlight     int    `json:"in_flight"`
		Delivered    uint64 `json:"delivered"`
		Redelivered  int    `json:"redelivered"`
		DeadLettered uint64 `json:"dead_lettered"`
	} `json:"stats"`
}

func (c *Client) do(ctx context.Context, method, path string, hdr http.Header, body io.Reader, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if body != nil && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 400 {
		return decodeError(resp)
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

func decodeError(resp *http.Response) error {
	e := &Error{Status: resp.StatusCode}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if json.Unmarshal(b, e) != nil || e.Code == "" {
		e.Code, e.Detail = "http_"+strconv.Itoa(resp.StatusCode), strings.TrimSpace(string(b))
	}
	e.Status = resp.StatusCode
	return e
}

func jsonBody(v any) io.Reader {
	b, _ := json.Marshal(v)
	return bytes.NewReader(b)
}

func esc(s string) string { return url.PathEscape(s) }

// Publish publishes one event in CloudEvents binary mode.
func (c *Client) Publish(ctx context.Context, topic string, e Event) (PublishResult, error) {
	h := http.Header{}
	set := func(k, v string) {
		if v != "" {
			h.Set(k, v)
		}
	}
	set("ce-specversion", "1.0")
	set("ce-id", e.ID)
	set("ce-type", e.Type)
	set("ce-source", e.Source)
	set("ce-subject", e.Subject)
	set("ce-partitionkey", e.Key)
	set("Content-Type", e.ContentType)
	if e.ContentType == "" {
		h.Set("Content-Type", "application/octet-stream")
		if json.Valid(e.Data) {
			h.Set("Content-Type", "application/json")
		}
	}
	for k, v := range e.Extensions {
		h.Set("ce-"+k, v)
	}
	var r PublishResult
	err := c.do(ctx, http.MethodPost, "/v1/topics/"+esc(topic)+"/messages", h, bytes.NewReader(e.Data), &r)
	return r, err
}

// PublishBatch publishes events as one CloudEvents batch. The call fails
// as a whole for invalid input; otherwise each result says what happened
// to its event (Error set when that one was not stored).
func (c *Client) PublishBatch(ctx context.Context, topic string, es []Event) ([]PublishResult, error) {
	items := make([]map[string]any, len(es))
	for i, e := range es {
		m := map[string]any{"specversion": "1.0"}
		for k, v := range map[string]string{"id": e.ID, "type": e.Type, "source": e.Source, "subject": e.Subject,
			"partitionkey": e.Key, "datacontenttype": e.ContentType} {
			if v != "" {
				m[k] = v
			}
		}
		for k, v := range e.Extensions {
			m[k] = v
		}
		switch {
		case len(e.Data) == 0:
		case (e.ContentType == "" || strings.Contains(e.ContentType, "json")) && json.Valid(e.Data):
			m["data"] = json.RawMessage(e.Data)
		default:
			m["data_base64"] = base64.StdEncoding.EncodeToString(e.Data)
		}
		items[i] = m
	}
	h := http.Header{"Content-Type": {"application/cloudevents-batch+json"}}
	var rs []PublishResult
	err := c.do(ctx, http.MethodPost, "/v1/topics/"+esc(topic)+"/messages", h, jsonBody(items), &rs)
	return rs, err
}

// PutTopic creates or updates a topic.
func (c *Client) PutTopic(ctx context.Context, topic string, t Topic) (*TopicInfo, error) {
	var ti TopicInfo
	return &ti, c.do(ctx, http.MethodPut, "/v1/topics/"+esc(topic), nil, jsonBody(t), &ti)
}

// GetTopic returns a topic with its stats.
func (c *Client) GetTopic(ctx context.Context, topic string) (*TopicInfo, error) {
	var ti TopicInfo
	return &ti, c.do(ctx, http.MethodGet, "/v1/topics/"+esc(topic), nil, nil, &ti)
}

// ListTopics returns every topic.
func (c *Client) ListTopics(ctx context.Context) ([]TopicInfo, error) {
	var ts []TopicInfo
	return ts, c.do(ctx, http.MethodGet, "/v1/topics", nil, nil, &ts)
}

// DeleteTopic deletes a topic with its messages and subscriptions.
func (c *Client) DeleteTopic(ctx context.Context, topic string) error {
	return c.do(ctx, http.MethodDelete, "/v1/topics/"+esc(topic), nil, nil, nil)
}

// PutSubscription creates or updates a subscription.
func (c *Client) PutSubscription(ctx context.Context, name string, s Subscription) (*SubscriptionInfo, error) {
	var si SubscriptionInfo
	return &si, c.do(ctx, http.MethodPut, "/v1/subscriptions/"+esc(name), nil, jsonBody(s), &si)
}

// GetSubscription returns a subscription with its stats.
func (c *Client) GetSubscription(ctx context.Context, name string) (*SubscriptionInfo, error) {
	var si SubscriptionInfo
	return &si, c.do(ctx, http.MethodGet, "/v1/subscriptions/"+esc(name), nil, nil, &si)
}

// ListSubscriptions returns every subscription.
func (c *Client) ListSubscriptions(ctx context.Context) ([]SubscriptionInfo, error) {
	var ss []SubscriptionInfo
	return ss, c.do(ctx, http.MethodGet, "/v1/subscriptions", nil, nil, &ss)
}

// DeleteSubscription deletes a subscription.
func (c *Client) DeleteSubscription(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/v1/subscriptions/"+esc(name), nil, nil, nil)
}

// Pull fetches up to max messages, waiting up to wait for the first.
func (c *Client) Pull(ctx context.Context, name string, max int, wait time.Duration) ([]Message, error) {
	var r struct {
		Messages []Message `json:"messages"`
	}
	err := c.do(ctx, http.MethodPost, "/v1/subscriptions/"+esc(name)+"/pull", nil,
		jsonBody(map[string]any{"max": max, "wait": wait.String()}), &r)
	return r.Messages, err
}

func (c *Client) settle(ctx context.Context, name, kind string, delay time.Duration, ids []string) error {
	body := map[string]any{"ack_ids": ids}
	if delay > 0 {
		body["delay"] = delay.String()
	}
	return c.do(ctx, http.MethodPost, "/v1/subscriptions/"+esc(name)+"/"+kind, nil, jsonBody(body), nil)
}

// Ack acknowledges pulled messages.
func (c *Client) Ack(ctx context.Context, name string, ackIDs ...string) error {
	return c.settle(ctx, name, "ack", 0, ackIDs)
}

// Nack hands pulled messages back for redelivery after delay.
func (c *Client) Nack(ctx context.Context, name string, delay time.Duration, ackIDs ...string) error {
	return c.settle(ctx, name, "nack", delay, ackIDs)
}

// Reject sends pulled messages to the dead-letter topic now.
func (c *Client) Reject(ctx context.Context, name string, ackIDs ...string) error {
	return c.settle(ctx, name, "reject", 0, ackIDs)
}

// ReplayDeadLetters re-delivers up to max (0 = all) dead letters.
func (c *Client) ReplayDeadLetters(ctx context.Context, name string, max int) (int, error) {
	var r struct {
		Replayed int `json:"replayed"`
	}
	err := c.do(ctx, http.MethodPost, "/v1/subscriptions/"+esc(name)+"/dead-letters/replay", nil, jsonBody(map[string]int{"max": max}), &r)
	return r.Replayed, err
}

// Tail streams a topic from a position (new, all, seq:N, time:RFC3339),
// calling fn for each message until ctx ends or fn returns an error.
func (c *Client) Tail(ctx context.Context, topic, from string, fn func(Message) error) error {
	return sse(ctx, c, "/v1/topics/"+esc(topic)+"/tail?from="+url.QueryEscape(from), "tail", fn)
}

// sse reads the server-sent events of path, decoding each event's data
// into a T for fn, until ctx ends (nil), fn fails (its error), or the
// server ends the stream with an "error" event (an error saying why).
func sse[T any](ctx context.Context, c *Client, path, what string, fn func(T) error) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/event-stream")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 400 {
		return decodeError(resp)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 128<<20)
	var event, data string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if data != "" {
				if event == "error" {
					var msg string
					_ = json.Unmarshal([]byte(data), &msg)
					return fmt.Errorf("junction: %s ended: %s", what, msg)
				}
				var v T
				if err := json.Unmarshal([]byte(data), &v); err != nil {
					return fmt.Errorf("junction: bad %s event: %w", what, err)
				}
				if err := fn(v); err != nil {
					return err
				}
			}
			event, data = "", ""
		case strings.HasPrefix(line, "event: "):
			event = line[7:]
		case strings.HasPrefix(line, "data: "):
			data += line[6:]
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	return sc.Err()
}

// CloseIdleConnections closes the client's idle keep-alive connections.
func (c *Client) CloseIdleConnections() { c.hc.CloseIdleConnections() }
