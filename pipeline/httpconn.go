package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/expr"
)

// The http_poll input fetches pages of JSON: Records (CEL over input,
// the decoded body) yields the page's list of records (without it the
// body itself when it is a list, else the body as one record), and Next
// (CEL over input) the next page's URL, relative to the page's own
// (empty or null ends). A batch run goes once through the pages; with
// an interval, the input starts again from the first page that long
// after the last page ended, and never ends.
//
// A record's position is its page's URL and its index in the page (the
// last record of a page: the next page's URL), so that a resumed run
// fetches that page again and passes over what it handed out.

func init() {
	inputs["http_poll"] = func(_ context.Context, env *Env, cfg *config.PipelineInput, resume json.RawMessage) (Input, error) {
		return newPollInput(env, cfg.HTTPPoll, resume)
	}
	outputs["http"] = func(_ context.Context, env *Env, cfg *config.PipelineOutput) (Output, error) {
		return newHTTPOutput(env, cfg.HTTP), nil
	}
}

func httpClient(env *Env) *http.Client {
	rt := env.HTTP
	if rt == nil {
		rt = http.DefaultTransport
	}
	return &http.Client{Transport: rt, Timeout: time.Minute}
}

// pollPos is the http_poll input's position.
type pollPos struct {
	URL string `json:"url"`
	// Skip is how many records of the page at URL are handed out.
	Skip int `json:"skip,omitempty"`
}

type pollInput struct {
	cfg     *config.HTTPPollInput
	client  *http.Client
	records *expr.Program
	next    *expr.Program
	url     string // the page to fetch next; "" when the pass ended
	skip    int
	wait    time.Time // with an interval: when the next pass starts
}

func newPollInput(env *Env, cfg *config.HTTPPollInput, resume json.RawMessage) (*pollInput, error) {
	in := &pollInput{cfg: cfg, client: httpClient(env), url: cfg.URL}
	var err error
	if cfg.Records != "" {
		if in.records, err = expr.Compile(cfg.Records); err != nil {
			return nil, fmt.Errorf("records: %w", err)
		}
	}
	if cfg.Next != "" {
		if in.next, err = expr.Compile(cfg.Next); err != nil {
			return nil, fmt.Errorf("next: %w", err)
		}
	}
	if len(resume) > 0 {
		var p pollPos
		if err := json.Unmarshal(resume, &p); err != nil {
			return nil, fmt.Errorf("resume position: %w", err)
		}
		// An empty URL: the interrupted pass had ended.
		in.url, in.skip = p.URL, p.Skip
	}
	return in, nil
}

// pollWait bounds one Next's wait for the next pass, so that the runner
// flushes and ticks meanwhile.
const pollWait = time.Second

func (in *pollInput) Next(ctx context.Context) ([]*Record, error) {
	if in.url == "" {
		if in.cfg.Interval <= 0 {
			return nil, io.EOF
		}
		if in.wait.IsZero() {
			in.wait = time.Now().Add(in.cfg.Interval.D())
		}
		d := time.Until(in.wait)
		if d > 0 {
			t := time.NewTimer(min(d, pollWait))
			defer t.Stop()
			select {
			case <-t.C:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			if d > pollWait {
				return nil, nil
			}
		}
		in.url, in.wait = in.cfg.URL, time.Time{}
	}
	page := in.url
	body, err := in.fetch(ctx, page)
	if err != nil {
		return nil, err
	}
	vars := map[string]any{"input": body}
	list, err := in.list(body, vars)
	if err != nil {
		return nil, fmt.Errorf("http_poll %s: %w", page, err)
	}
	next := ""
	if in.next != nil {
		v, err := in.next.Eval(vars)
		if err != nil {
			return nil, fmt.Errorf("http_poll %s: next: %w", page, err)
		}
		switch x := v.(type) {
		case nil:
		case string:
			next = x
		default:
			return nil, fmt.Errorf("http_poll %s: next yields %T, want a URL", page, v)
		}
		if next != "" {
			base, err := url.Parse(page)
			if err != nil {
				return nil, err
			}
			ref, err := url.Parse(next)
			if err != nil {
				return nil, fmt.Errorf("http_poll %s: next URL %q: %w", page, next, err)
			}
			next = base.ResolveReference(ref).String()
		}
	}
	skip := in.skip
	in.url, in.skip = next, 0
	out := make([]*Record, 0, len(list))
	for i, item := range list {
		if i < skip {
			continue
		}
		m, ok := item.(map[string]any)
		if !ok {
			m = map[string]any{"value": item}
		}
		p := pollPos{URL: page, Skip: i + 1}
		if i == len(list)-1 {
			p = pollPos{URL: next}
		}
		b, err := json.Marshal(p)
		if err != nil {
			return nil, err
		}
		out = append(out, &Record{Fields: m, Pos: b})
	}
	return out, nil
}

// list yields a page's records.
func (in *pollInput) list(body any, vars map[string]any) ([]any, error) {
	if in.records == nil {
		if l, ok := body.([]any); ok {
			return l, nil
		}
		return []any{body}, nil
	}
	v, err := in.records.Eval(vars)
	if err != nil {
		return nil, fmt.Errorf("records: %w", err)
	}
	switch x := v.(type) {
	case []any:
		return x, nil
	case nil:
		return nil, nil
	}
	return nil, fmt.Errorf("records yields %T, want a list", v)
}

// fetch GETs a page and decodes its JSON; network errors, 429 and 5xx
// are tried again twice.
func (in *pollInput) fetch(ctx context.Context, u string) (any, error) {
	var last error
	for attempt := range 3 {
		if attempt > 0 {
			t := time.NewTimer(time.Duration(attempt) * 250 * time.Millisecond)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return nil, ctx.Err()
			}
		}
		body, retry, err := in.get(ctx, u)
		if err == nil {
			return body, nil
		}
		if last = err; !retry || ctx.Err() != nil {
			break
		}
	}
	return nil, last
}

func (in *pollInput) get(ctx context.Context, u string) (any, bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, false, fmt.Errorf("http_poll: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	for k, v := range in.cfg.Headers {
		req.Header.Set(k, v)
	}
	resp, err := in.client.Do(req)
	if err != nil {
		return nil, true, fmt.Errorf("http_poll: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, resp.StatusCode == 429 || resp.StatusCode >= 500,
			fmt.Errorf("http_poll: GET %s: %s: %s", u, resp.Status, strings.TrimSpace(string(b)))
	}
	var body any
	dec := json.NewDecoder(resp.Body)
	if err := dec.Decode(&body); err != nil {
		return nil, false, fmt.Errorf("http_poll: GET %s: decoding the body: %w", u, err)
	}
	return body, false, nil
}

func (in *pollInput) Commit(context.Context, json.RawMessage) error { return nil }
func (in *pollInput) Close() error                                  { return nil }

// httpOutput sends each record as JSON (Method, POST by default), or
// with Batch each batch as one JSON array. A 2xx answer is success.
type httpOutput struct {
	cfg    *config.HTTPOut
	client *http.Client
	method string
}

func newHTTPOutput(env *Env, cfg *config.HTTPOut) *httpOutput {
	m := strings.ToUpper(cfg.Method)
	if m == "" {
		m = http.MethodPost
	}
	return &httpOutput{cfg: cfg, client: httpClient(env), method: m}
}

// httpParallel is how many requests of one batch are in flight at once.
const httpParallel = 8

func (o *httpOutput) Write(ctx context.Context, recs []*Record) error {
	if len(recs) == 0 {
		return nil
	}
	if o.cfg.Batch {
		list := make([]map[string]any, len(recs))
		for i, r := range recs {
			list[i] = r.Map()
		}
		return o.send(ctx, list)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		sem   = make(chan struct{}, httpParallel)
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for _, r := range recs {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func(r *Record) {
			defer wg.Done()
			defer func() { <-sem }()
			if err := o.send(ctx, r.Map()); err != nil {
				mu.Lock()
				if first == nil {
					first = err
					cancel()
				}
				mu.Unlock()
			}
		}(r)
	}
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}

func (o *httpOutput) send(ctx context.Context, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrRecord, err)
	}
	req, err := http.NewRequestWithContext(ctx, o.method, o.cfg.URL, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range o.cfg.Headers {
		req.Header.Set(k, v)
	}
	resp, err := o.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s: %s", o.method, o.cfg.URL, resp.Status, strings.TrimSpace(string(msg)))
	}
	return nil
}

func (o *httpOutput) Close() error { return nil }
