package mesh

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/junctionhq/junction/internal/httpserver"
	"github.com/junctionhq/junction/internal/pki"
	"github.com/junctionhq/junction/internal/problem"
	"github.com/junctionhq/junction/observe"
)

// sidecar is the front door of one app instance: an mTLS listener that
// admits callers by certificate identity and access policy, forwards to
// the app, and keeps the app registered under the listener's address.
type sidecar struct {
	m       *Mesh
	service string
	id      string
	url     string
	srv     *http.Server
	stopHB  context.CancelFunc
	hbDone  chan struct{}
	served  chan struct{}
	proxy   *httputil.ReverseProxy
	allowed func(caller string) bool
}

// DefaultSidecarListen is where a sidecar listens when mesh.listen is
// unset: loopback, on a free port (other nodes on the same host reach it).
const DefaultSidecarListen = "127.0.0.1:0"

func (m *Mesh) startSidecar(ctx context.Context) (*sidecar, error) {
	if m.tls == nil {
		return nil, errors.New("sidecar mode needs mesh.tls: calls between nodes are mTLS only")
	}
	listen := m.cfg.Listen
	if listen == "" {
		listen = DefaultSidecarListen
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("mesh.listen %s: %w", listen, err)
	}
	app, _ := url.Parse(m.cfg.Sidecar.App) // validated with the config
	sc := &sidecar{
		m: m, service: m.cfg.Sidecar.Service, url: m.cfg.AdvertiseURL(ln.Addr().String()),
		hbDone: make(chan struct{}), served: make(chan struct{}),
	}
	u, _ := url.Parse(sc.url)
	sc.id = instanceID(u.Host)
	sc.allowed = m.accessFor(sc.service)
	sc.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(app)
			pr.Out.Header["X-Forwarded-For"] = pr.In.Header["X-Forwarded-For"]
			pr.SetXForwarded()
		},
		Transport:     m.plain,
		BufferPool:    httpserver.ProxyBuffers,
		ErrorLog:      slog.NewLogLogger(m.log.Handler(), slog.LevelDebug),
		ErrorHandler:  errorHandler,
		FlushInterval: 0, // streams (unknown length, event streams) are flushed at once anyway
	}
	sc.srv = &http.Server{
		Handler:           http.HandlerFunc(sc.serve),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(m.log.Handler(), slog.LevelDebug),
	}
	go func() {
		defer close(sc.served)
		_ = sc.srv.Serve(tls.NewListener(ln, m.tls.server()))
	}()
	if err := m.Register(ctx, sc.service, sc.id, Registration{URL: sc.url, TTL: m.cfg.Sidecar.TTL, MTLS: true, Metadata: m.cfg.Sidecar.Metadata}); err != nil {
		_ = sc.srv.Close()
		return nil, err
	}
	hbCtx, cancel := context.WithCancel(m.ctx)
	sc.stopHB = cancel
	go sc.heartbeat(hbCtx)
	m.log.Info("sidecar ready", "service", sc.service, "app", m.cfg.Sidecar.App, "listen", ln.Addr().String(), "advertise", sc.url, "instance", sc.id)
	return sc, nil
}

// instanceID makes a registry id from host:port.
func instanceID(hostport string) string {
	return strings.NewReplacer(":", "_", ".", "_", "[", "", "]", "").Replace(hostport)
}

// heartbeat renews the registration three times per TTL, so two lost
// renewals in a row still leave it alive.
func (sc *sidecar) heartbeat(ctx context.Context) {
	defer close(sc.hbDone)
	m := sc.m
	t := time.NewTicker(m.cfg.Sidecar.TTL.D() / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, m.cfg.Sidecar.TTL.D()/3)
		err := m.Register(rctx, sc.service, sc.id, Registration{URL: sc.url, TTL: m.cfg.Sidecar.TTL, MTLS: true, Metadata: m.cfg.Sidecar.Metadata})
		cancel()
		if err != nil && ctx.Err() == nil {
			m.log.Warn("sidecar heartbeat failed", "service", sc.service, "error", err)
		}
	}
}

// stop deregisters first, so that callers stop choosing this instance,
// then lets the calls in flight finish.
func (sc *sidecar) stop(ctx context.Context) {
	sc.stopHB()
	<-sc.hbDone
	if err := sc.m.Deregister(ctx, sc.service, sc.id); err != nil {
		sc.m.log.Warn("sidecar deregistration failed; the registration will expire", "error", err)
	}
	if err := sc.srv.Shutdown(ctx); err != nil {
		_ = sc.srv.Close()
	}
	<-sc.served
}

// accessFor returns the access check of calls to svc. Without
// mesh.access, any identity issued by the CA may call; with it, only
// those listed for svc ("*": any).
func (m *Mesh) accessFor(svc string) func(string) bool {
	if m.cfg.Access == nil {
		return func(string) bool { return true }
	}
	callers := m.cfg.Access[svc]
	return func(caller string) bool { return slices.Contains(callers, caller) || slices.Contains(callers, "*") }
}

func (sc *sidecar) serve(w http.ResponseWriter, r *http.Request) {
	m := sc.m
	ctx := r.Context()
	var span trace.Span
	if m.traced {
		ctx = observe.Propagator.Extract(ctx, propagation.HeaderCarrier(r.Header))
		ctx, span = m.tracer.Start(ctx, "sidecar "+sc.service, trace.WithSpanKind(trace.SpanKindServer))
	}
	sw := &httpserver.StatusWriter{ResponseWriter: w}
	caller, err := pki.PeerIdentity(r.TLS)
	defer func() {
		if span != nil {
			span.SetAttributes(attribute.String("junction.caller", caller), attribute.Int("http.response.status_code", sw.Code()))
			span.End()
		}
		m.metrics.inbound.WithLabelValues(caller, strconv.Itoa(sw.Code())).Inc()
	}()
	switch {
	case err != nil:
		refuse(sw, r, problem.New(problem.CodeForbidden, "the client certificate carries no Junction identity"))
		return
	case r.Header.Get(ServiceHeader) != "" && r.Header.Get(ServiceHeader) != sc.service:
		refuse(sw, r, problem.New(problem.CodeMisdirected, "this is a sidecar of %s, not of %s", sc.service, r.Header.Get(ServiceHeader)))
		return
	case !sc.allowed(caller):
		refuse(sw, r, problem.New(problem.CodeForbidden, "%s may not call %s (mesh.access)", caller, sc.service))
		return
	}
	if v := r.Header.Get(TimeoutHeader); v != "" {
		if d, err := time.ParseDuration(v); err == nil && d > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, d)
			defer cancel()
		}
	}
	r = r.WithContext(ctx)
	r.Header.Del(ServiceHeader)
	r.Header.Set(CallerHeader, caller)
	if m.traced {
		observe.Propagator.Inject(ctx, propagation.HeaderCarrier(r.Header))
	}
	sc.proxy.ServeHTTP(sw, r)
}
