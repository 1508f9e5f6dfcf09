// Package meshbench measures the service mesh in one process: a GET to a
// trivial backend made directly, through a node's /v1/invoke, and through
// a second node and an mTLS sidecar. The benchmarks live in the _test
// files; bench/run-mesh.sh measures the same three paths with every node
// in its own process.
package meshbench

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/internal/httpserver"
	"github.com/junctionhq/junction/internal/pki"
	"github.com/junctionhq/junction/internal/testutil"
)

// Answer is what the backend answers to every request.
const Answer = "hello"

// Service is the name under which the nodes know the backend.
const Service = "app"

// Backend starts the trivial HTTP backend: 200 with Answer.
func Backend(tb testing.TB) *httptest.Server {
	tb.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, Answer)
	}))
	srv.Config.ReadHeaderTimeout = 10 * time.Second
	srv.Config.IdleTimeout = 120 * time.Second
	srv.Start()
	tb.Cleanup(srv.Close)
	return srv
}

// Client is the callers' HTTP client: one shared transport with enough
// idle connections per host for parallel benchmarks.
func Client() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		Proxy:               nil,
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: 512,
		DisableCompression:  true,
		IdleConnTimeout:     90 * time.Second,
	}}
}

// Get sends one GET and checks the answer.
func Get(c *http.Client, url string) error {
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	switch {
	case err != nil:
		return err
	case resp.StatusCode != http.StatusOK || string(b) != Answer:
		return fmt.Errorf("GET %s: %d %.200q", url, resp.StatusCode, b)
	}
	return nil
}

// Proxy starts the reference point for every proxy: a bare
// net/http/httputil.ReverseProxy to target, with a transport that keeps
// enough idle connections (the default of 2 per host would redial under
// load), pooled copy buffers (else 32 KiB per request) and nothing else.
// It returns its URL.
func Proxy(tb testing.TB, target string) string {
	tb.Helper()
	u, err := url.Parse(target)
	if err != nil {
		tb.Fatal(err)
	}
	tr := &http.Transport{Proxy: nil, MaxIdleConns: 4096, MaxIdleConnsPerHost: 512, IdleConnTimeout: 90 * time.Second}
	rp := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(u) }, Transport: tr, BufferPool: httpserver.ProxyBuffers}
	srv := httptest.NewUnstartedServer(rp)
	srv.Config.ReadHeaderTimeout = 10 * time.Second
	srv.Config.IdleTimeout = 120 * time.Second
	srv.Start()
	tb.Cleanup(func() {
		srv.Close()
		tr.CloseIdleConnections()
	})
	return srv.URL
}

// quiet sets what every benchmark node shares: warn logging (the nodes
// of bench/run-mesh.sh log at warn too; testutil discards logs anyway).
func quiet(cfg *config.Config) { cfg.Log.Level = "warn" }

// InvokeNode starts a node (embedded NATS, in-process) that has the
// backend at backendURL as a static instance of Service, and returns the
// URL that reaches the backend's root through /v1/invoke.
func InvokeNode(tb testing.TB, backendURL string) string {
	tb.Helper()
	cfg := testutil.Config(tb, testutil.Embedded)
	quiet(cfg)
	cfg.Services = map[string]*config.Service{Service: {Instances: []config.Instance{{URL: backendURL}}}}
	n := testutil.Start(tb, cfg)
	return n.URL + "/v1/invoke/" + Service
}

// SidecarPair starts node S, the sidecar of Service for the backend at
// backendURL, with mTLS and an embedded NATS that listens on loopback,
// and node C, a plain node on S's NATS under the same prefix (one shared
// registry). It returns the URL that reaches the backend's root through
// C's /v1/invoke, once C has learned S's registration.
func SidecarPair(tb testing.TB, backendURL string) string {
	tb.Helper()
	dir := tb.TempDir()
	if _, err := pki.InitCA(dir, false); err != nil {
		tb.Fatal(err)
	}
	tlsCfg := config.MeshTLS{CA: filepath.Join(dir, "ca.crt"), CAKey: filepath.Join(dir, "ca.key"), CertTTL: config.Duration(time.Hour)}
	natsAddr := freeAddr(tb)

	s := testutil.Config(tb, testutil.Embedded)
	quiet(s)
	s.NATS.Listen = natsAddr
	s.Mesh.TLS = tlsCfg
	s.Mesh.Listen = "127.0.0.1:0"
	s.Mesh.Sidecar = config.Sidecar{Service: Service, App: backendURL, TTL: config.Duration(10 * time.Second)}
	testutil.Start(tb, s)

	c := testutil.Config(tb, testutil.Embedded)
	quiet(c)
	c.NATS.URL = "nats://" + natsAddr
	c.NATS.Prefix = s.NATS.Prefix
	c.Mesh.Identity = "client"
	c.Mesh.TLS = tlsCfg
	cn := testutil.Start(tb, c)
	// S's NATS, and its streams, go away with S.
	cn.KeepNATS = true

	url := cn.URL + "/v1/invoke/" + Service
	deadline := time.Now().Add(10 * time.Second)
	for {
		si, err := cn.Mesh().Service(Service)
		if err == nil && len(si.Instances) == 1 && si.Instances[0].MTLS {
			break
		}
		if time.Now().After(deadline) {
			tb.Fatalf("node C did not learn the sidecar's registration within 10s: %+v %v", si, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return url
}

// freeAddr returns a loopback address with a port that was free a moment
// ago (for nats.listen, which must be known before the node starts).
func freeAddr(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Skipf("no loopback TCP: %v", err)
	}
	defer l.Close()
	return l.Addr().String()
}

// ProcessCPU is the CPU time (user and system) this process has used.
// Per operation it moves much less than ns/op when other work competes
// for the cores.
func ProcessCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
