package mesh

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/junctionhq/junction/internal/problem"
	"github.com/junctionhq/junction/observe"
	"github.com/junctionhq/junction/resilience"
)

// Headers Junction adds to calls between services.
const (
	// TimeoutHeader carries the time left for the call ("1.5s"). Junction
	// honours a smaller value on the way in and sets it on the way out,
	// so a deadline shrinks along a chain of calls instead of restarting.
	TimeoutHeader = "Junction-Timeout"
	// ServiceHeader names the target service on calls to a sidecar, which
	// refuses calls meant for another service (421).
	ServiceHeader = "Junction-Service"
	// CallerHeader tells the app behind a sidecar the verified identity of
	// its caller. Junction removes any such header coming from outside.
	CallerHeader = "Junction-Caller"
	// ErrorHeader marks an answer as Junction's own refusal (its value is
	// the problem code), so a caller can tell it from the service's
	// answers, which pass through unchanged.
	ErrorHeader = "Junction-Error"
)

// refuse writes err as Junction's own problem+json answer.
func refuse(w http.ResponseWriter, r *http.Request, err error) {
	p := problem.From(err)
	w.Header().Set(ErrorHeader, string(p.Code))
	problem.Write(w, r, p)
}

// maxReplayBody is the largest request body kept in memory so that a
// failed attempt can be retried on another instance. Larger or unsized
// bodies stream and are retried only if the failed attempt read nothing.
const maxReplayBody = 1 << 20

// RoundTrip calls the service named by req.URL.Host: it picks an instance
// and applies the service's policy (timeout, retries, breakers,
// bulkhead). It makes the mesh usable as an http.Client transport, with
// URLs such as http://inventory/stock/42.
func (m *Mesh) RoundTrip(req *http.Request) (*http.Response, error) {
	s := m.lookup(req.URL.Hostname())
	if s == nil {
		closeBody(req)
		return nil, problem.New(problem.CodeServiceNotFound, "no service %q is declared or registered", req.URL.Hostname())
	}
	return m.call(s, req)
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}

// idempotent methods may be sent twice without changing the outcome.
func idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

// body hands each attempt its request body: a replay of a small buffered
// body, or the one stream, which a retry may reuse only if unread.
type body struct {
	get    func() (io.ReadCloser, error)
	stream *trackedBody
}

type trackedBody struct {
	r    io.Reader
	read atomic.Bool
}

func (t *trackedBody) Read(p []byte) (int, error) {
	t.read.Store(true)
	return t.r.Read(p)
}

// Close is a no-op: the transport closes a request body after each
// attempt, and the stream must survive for a retry; call closes it.
func (t *trackedBody) Close() error { return nil }

func (m *Mesh) prepareBody(req *http.Request, replayable bool) (body, error) {
	switch {
	case req.Body == nil || req.Body == http.NoBody:
		return body{}, nil
	case req.GetBody != nil:
		return body{get: req.GetBody}, nil
	case replayable && req.ContentLength > 0 && req.ContentLength <= maxReplayBody:
		buf := make([]byte, req.ContentLength)
		if _, err := io.ReadFull(req.Body, buf); err != nil {
			return body{}, problem.New(problem.CodeBadRequest, "reading the request body: %v", err)
		}
		return body{get: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf)), nil }}, nil
	}
	return body{stream: &trackedBody{r: req.Body}}, nil
}

// next returns the body for another attempt; ok is false when the body
// was consumed and cannot be sent again.
func (b body) next() (io.ReadCloser, bool) {
	switch {
	case b.get != nil:
		rc, err := b.get()
		return rc, err == nil
	case b.stream != nil:
		return b.stream, !b.stream.read.Load()
	}
	return nil, true
}

func (m *Mesh) call(s *service, req *http.Request) (*http.Response, error) {
	release := func() {}
	if s.bulkhead != nil {
		var err error
		if release, err = s.bulkhead.Acquire(); err != nil {
			closeBody(req)
			m.metrics.rejected.WithLabelValues(s.name, "concurrency_limit").Inc()
			m.metrics.requests.WithLabelValues(s.name, string(problem.CodeBulkheadFull)).Inc()
			p := problem.New(problem.CodeBulkheadFull, "service %s has %d calls in flight, its limit", s.name, s.policy.MaxConcurrent)
			p.RetryAfter = time.Second
			return nil, p
		}
	}
	svcDone := func(bool) {}
	if s.breaker != nil {
		done, err := s.breaker.Allow()
		if err != nil {
			release()
			closeBody(req)
			m.metrics.rejected.WithLabelValues(s.name, "circuit_open").Inc()
			m.metrics.requests.WithLabelValues(s.name, string(problem.CodeCircuitOpen)).Inc()
			p := problem.New(problem.CodeCircuitOpen, "the circuit breaker of service %s is open", s.name)
			var oe *resilience.OpenError
			if errors.As(err, &oe) {
				p.RetryAfter = max(oe.RetryAfter, time.Second)
			}
			return nil, p
		}
		svcDone = done
	}
	timeout := s.policy.Timeout.D()
	if v := req.Header.Get(TimeoutHeader); v != "" {
		if d, err := time.ParseDuration(v); err == nil && d > 0 && (timeout <= 0 || d < timeout) {
			timeout = d
		}
	}
	ctx, cancel := req.Context(), context.CancelFunc(func() {})
	if timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, timeout)
	}
	c := &callState{m: m, s: s, req: req, ctx: ctx, cancel: cancel, start: m.clock.Now(), release: release, svcDone: svcDone}
	resp, err := c.run()
	if err != nil {
		c.finish(0, err)
		return nil, err
	}
	return resp, nil
}

// callState is one call across its attempts.
type callState struct {
	m       *Mesh
	s       *service
	req     *http.Request
	ctx     context.Context
	cancel  context.CancelFunc
	start   time.Time
	release func()
	svcDone func(bool)
	once    sync.Once
}

// finish runs once, when the response body is closed or the call failed.
// Only then is the request body closed: a streaming upload may still be
// flowing while the response streams back.
func (c *callState) finish(status int, err error) {
	c.once.Do(func() {
		closeBody(c.req)
		failed := err != nil || status >= 500
		if c.req.Context().Err() != nil {
			failed = false // the caller went away: nobody's fault
		}
		c.svcDone(!failed)
		c.release()
		c.cancel()
		code := strconv.Itoa(status)
		if err != nil {
			code = string(problem.From(mapError(err)).Code)
		}
		c.m.metrics.requests.WithLabelValues(c.s.name, code).Inc()
	})
}

func (c *callState) run() (*http.Response, error) {
	m, s, req := c.m, c.s, c.req
	retry := s.policy.Retry
	attempts := 1
	if retry != nil && retry.Attempts > 1 {
		attempts = retry.Attempts
	}
	replayable := idempotent(req.Method) || (retry != nil && retry.NonIdempotent)
	b, err := m.prepareBody(req, replayable && attempts > 1)
	if err != nil {
		return nil, err
	}
	key := ""
	if s.hashKey != nil {
		if key, err = s.hashKey.EvalString(map[string]any{"request": requestVars(req)}); err != nil {
			m.log.Debug("hash key did not evaluate; balancing without it", "service", s.name, "error", err)
		}
	}
	s.budget.Request()
	var (
		tried   []*instance
		buf     [8]*instance
		lastErr error
		skips   int
	)
	for attempt := 1; ; attempt++ {
		in := s.bal.pick(s.candidates(m.clock.Now(), tried, buf[:0]), key, m.clock.Now())
		if in == nil {
			if lastErr != nil {
				return nil, mapError(lastErr)
			}
			m.metrics.rejected.WithLabelValues(s.name, "no_instance").Inc()
			p := problem.New(problem.CodeNoInstance, "service %s has no instance available", s.name)
			p.RetryAfter = time.Second
			return nil, p
		}
		instDone := func(bool) {}
		if in.breaker != nil {
			done, err := in.breaker.Allow()
			if err != nil {
				// Its probes are taken: try another instance without
				// spending an attempt, but never loop.
				tried = append(tried, in)
				attempt--
				if skips++; skips > len(s.all()) {
					p := problem.New(problem.CodeCircuitOpen, "every instance of service %s has an open circuit breaker", s.name)
					var oe *resilience.OpenError
					if errors.As(err, &oe) {
						p.RetryAfter = max(oe.RetryAfter, time.Second)
					}
					return nil, p
				}
				continue
			}
			instDone = done
		}
		rc, ok := b.next()
		if !ok {
			instDone(true)
			return nil, mapError(lastErr)
		}
		resp, err := c.attempt(in, attempt, rc)
		failed := err != nil || resp.StatusCode >= 500
		if attempt < attempts && c.ctx.Err() == nil && c.retryable(resp, err, b, replayable) {
			// The attempt ends here: its outcome (which may open the
			// instance's breaker or eject it) decides where a retry can go.
			in.inflight.Add(-1)
			instDone(!failed)
			m.outcome(s, in, failed)
			tried = append(tried, in)
			again := len(s.candidates(m.clock.Now(), tried, buf[:0])) > 0
			if again && !s.budget.Retry() {
				m.metrics.rejected.WithLabelValues(s.name, "retry_budget").Inc()
				again = false
			}
			if !again {
				// The caller gets this answer as the service gave it,
				// not one made up for want of an instance to retry on.
				if err != nil {
					return nil, mapError(err)
				}
				return c.respond(resp, in, func() {}), nil
			}
			drain(resp)
			m.metrics.retries.WithLabelValues(s.name).Inc()
			if err != nil {
				lastErr = err
			} else {
				lastErr = problem.New(problem.CodeUpstream, "service %s answered %d", s.name, resp.StatusCode)
			}
			if err := m.clock.Sleep(c.ctx, s.backoff.Delay(attempt)); err != nil {
				return nil, mapError(err)
			}
			continue
		}
		if err != nil {
			in.inflight.Add(-1)
			instDone(c.req.Context().Err() != nil)
			if c.req.Context().Err() == nil {
				m.outcome(s, in, true)
			}
			return nil, mapError(err)
		}
		return c.respond(resp, in, func() {
			in.inflight.Add(-1)
			instDone(!failed || c.req.Context().Err() != nil)
			m.outcome(s, in, failed)
		}), nil
	}
}

// respond hands the caller an instance's answer. The call ends when its
// body is closed or read to the end: then settle records the attempt's
// outcome (unless already done), and the call is counted and released.
func (c *callState) respond(resp *http.Response, in *instance, settle func()) *http.Response {
	m, s, status := c.m, c.s, resp.StatusCode
	m.metrics.duration.WithLabelValues(s.name).Observe(m.clock.Now().Sub(c.start).Seconds())
	resp.Body = wrapBody(resp, func() {
		settle()
		m.metrics.instanceRequests.WithLabelValues(s.name, in.id, strconv.Itoa(status)).Inc()
		c.finish(status, nil)
	})
	return resp
}

// retryable says whether a failed attempt may be sent again. A connection
// that could not be made carried nothing, so any method is safe; anything
// else is retried only for idempotent methods (or when the policy opts
// in) and only if the request body can be sent again.
func (c *callState) retryable(resp *http.Response, err error, b body, replayable bool) bool {
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return true
		}
		var p *problem.Problem
		if errors.As(err, &p) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			return false // Junction's own refusal, or out of time: another try gives the same
		}
		return replayable && (b.stream == nil || !b.stream.read.Load())
	}
	if !replayable || (b.stream != nil && b.stream.read.Load()) {
		return false
	}
	for _, st := range c.s.policy.Retry.On {
		if resp.StatusCode == st {
			return true
		}
	}
	return false
}

// attempt sends the request to one instance.
func (c *callState) attempt(in *instance, n int, rc io.ReadCloser) (*http.Response, error) {
	m, s, req := c.m, c.s, c.req
	ctx := c.ctx
	var span trace.Span
	if m.traced {
		ctx, span = m.tracer.Start(ctx, "invoke "+s.name, trace.WithSpanKind(trace.SpanKindClient),
			trace.WithAttributes(attribute.String("junction.service", s.name), attribute.String("junction.instance", in.id),
				attribute.Int("junction.attempt", n)))
	}
	if in.mtls {
		ctx = withPeer(ctx, s.name)
	}
	// One shallow copy per attempt, with its own URL and headers: the
	// only parts an attempt changes.
	out := req.WithContext(ctx)
	u := *req.URL
	out.URL, out.Header = &u, req.Header.Clone()
	out.Body, out.ContentLength = rc, req.ContentLength
	if rc == nil {
		out.Body, out.ContentLength = nil, 0
	}
	out.GetBody = nil
	out.URL.Scheme, out.URL.Host = in.url.Scheme, in.url.Host
	if in.url.Path != "" && in.url.Path != "/" {
		out.URL.Path = joinPath(in.url.Path, req.URL.Path)
		out.URL.RawPath = ""
	}
	out.Host = ""
	if dl, ok := ctx.Deadline(); ok {
		out.Header.Set(TimeoutHeader, time.Until(dl).Round(time.Millisecond).String())
	}
	rt := http.RoundTripper(m.plain)
	switch {
	case in.mtls:
		rt = m.secure
		out.Header.Set(ServiceHeader, s.name)
	case s.cfg.Protocol == "h2c" && in.url.Scheme == "http":
		rt = m.h2c
	}
	if m.traced {
		// Without tracing the caller's traceparent is forwarded as it came.
		observe.Propagator.Inject(ctx, propagation.HeaderCarrier(out.Header))
	}
	in.inflight.Add(1)
	t0 := m.clock.Now()
	resp, err := rt.RoundTrip(out)
	if err != nil {
		if span != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
			span.End()
		}
		return nil, err
	}
	in.observe(m.clock.Now(), m.clock.Now().Sub(t0))
	if span != nil {
		span.SetAttributes(attribute.Int("http.response.status_code", resp.StatusCode))
		if resp.StatusCode >= 500 {
			span.SetStatus(codes.Error, resp.Status)
		}
		span.End()
	}
	return resp, nil
}

func drain(resp *http.Response) {
	if resp == nil {
		return
	}
	_, _ = io.CopyN(io.Discard, resp.Body, 64<<10)
	_ = resp.Body.Close()
}

// mapError turns a transport error into the problem the caller gets.
func mapError(err error) error {
	var p *problem.Problem
	switch {
	case err == nil:
		return problem.New(problem.CodeUpstream, "no response")
	case errors.As(err, &p):
		return p
	case errors.Is(err, context.DeadlineExceeded):
		return problem.New(problem.CodeTimeout, "the call did not complete within its timeout")
	case errors.Is(err, context.Canceled):
		return problem.New(problem.CodeUpstream, "the call was canceled")
	}
	return problem.New(problem.CodeUpstream, "%v", err)
}

// respBody runs done once when the response body is closed (or read to
// the end), which is when the call really ends for in-flight counting.
type respBody struct {
	io.ReadCloser
	once sync.Once
	done func()
}

func (r *respBody) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	if err == io.EOF {
		r.once.Do(r.done)
	}
	return n, err
}

func (r *respBody) Close() error {
	err := r.ReadCloser.Close()
	r.once.Do(r.done)
	return err
}

// rwBody keeps a protocol upgrade's body writable for the proxy.
type rwBody struct {
	*respBody
	w io.Writer
}

func (r rwBody) Write(p []byte) (int, error) { return r.w.Write(p) }

func wrapBody(resp *http.Response, done func()) io.ReadCloser {
	rb := &respBody{ReadCloser: resp.Body, done: done}
	if w, ok := resp.Body.(io.Writer); ok && resp.StatusCode == http.StatusSwitchingProtocols {
		return rwBody{rb, w}
	}
	return rb
}

// requestVars is the CEL view of a request for hash keys.
func requestVars(r *http.Request) map[string]any {
	h := make(map[string]any, len(r.Header))
	for k, v := range r.Header {
		h[strings.ToLower(k)] = strings.Join(v, ",")
	}
	q := map[string]any{}
	for k, v := range r.URL.Query() {
		q[k] = strings.Join(v, ",")
	}
	host := r.Host
	if host == "" { // a proxied call: the caller's Host is forwarded
		host = r.Header.Get("X-Forwarded-Host")
	}
	return map[string]any{"method": r.Method, "path": r.URL.Path, "headers": h, "query": q, "host": host}
}

func joinPath(a, b string) string {
	switch {
	case strings.HasSuffix(a, "/") && strings.HasPrefix(b, "/"):
		return a + b[1:]
	case !strings.HasSuffix(a, "/") && !strings.HasPrefix(b, "/"):
		return a + "/" + b
	}
	return a + b
}

type peerKey struct{}

// withPeer records the identity the server of an mTLS connection must
// present; the dialer reads it.
func withPeer(ctx context.Context, svc string) context.Context {
	return context.WithValue(ctx, peerKey{}, svc)
}

func peerOf(ctx context.Context) string {
	s, _ := ctx.Value(peerKey{}).(string)
	return s
}
