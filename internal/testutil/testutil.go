// Package testutil starts Junction nodes for tests: in-process on the
// embedded substrate or against the machine's own NATS, each isolated by
// its own data dir and NATS prefix.
package testutil

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/junctionhq/junction"
	"github.com/junctionhq/junction/client"
	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/observe"
)

// ExternalNATSURL is the machine's NATS server, overridable by env.
func ExternalNATSURL() string {
	if u := os.Getenv("JUNCTION_TEST_NATS_URL"); u != "" {
		return u
	}
	return "nats://127.0.0.1:4222"
}

// RequireService skips the test when addr does not answer, or fails it
// when JUNCTION_REQUIRE_SERVICES=1 (as CI sets), so a missing service can
// never turn into a silently green run.
func RequireService(t testing.TB, name, addr string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err == nil {
		c.Close()
		return
	}
	if os.Getenv("JUNCTION_REQUIRE_SERVICES") == "1" {
		t.Fatalf("%s at %s is required (JUNCTION_REQUIRE_SERVICES=1) but unreachable: %v", name, addr, err)
	}
	t.Skipf("%s at %s is unreachable: %v", name, addr, err)
}

var seq atomic.Int64

// Node is a running test node.
type Node struct {
	*junction.Node
	URL    string
	Client *client.Client
	Config *config.Config
	// KeepNATS leaves the node's streams on an external NATS when it
	// stops, for tests where another node shares its prefix.
	KeepNATS bool
	cancel   context.CancelFunc
	done     chan error
}

// Substrate selects embedded or external NATS.
type Substrate string

// Substrates every bus test runs on.
const (
	Embedded Substrate = "embedded"
	External Substrate = "external"
)

// Config returns a test config: temp data dir, a free loopback port, a
// unique NATS prefix, quiet logs.
func Config(t testing.TB, sub Substrate) *config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.API.Listen = "127.0.0.1:0"
	cfg.ShutdownTimeout = config.Duration(5 * time.Second)
	cfg.NATS.Prefix = fmt.Sprintf("jt%d_%d", os.Getpid(), seq.Add(1))
	if sub == External {
		u := ExternalNATSURL()
		RequireService(t, "NATS", strings.TrimPrefix(u, "nats://"))
		cfg.NATS.URL = u
	}
	return cfg
}

// Start runs a node with cfg until the test ends.
func Start(t testing.TB, cfg *config.Config, opts ...junction.Option) *Node {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	opts = append([]junction.Option{junction.WithLogger(Logger(t))}, opts...)
	n, err := junction.New(ctx, cfg, opts...)
	if err != nil {
		cancel()
		t.Fatalf("starting node: %v", err)
	}
	tn := &Node{Node: n, URL: "http://" + n.Addr(), Config: cfg, cancel: cancel, done: make(chan error, 1)}
	tn.Client = client.New(tn.URL, client.WithToken(cfg.API.Token))
	go func() { tn.done <- n.Run(ctx) }()
	t.Cleanup(func() { tn.Stop(t) })
	return tn
}

// Stop shuts the node down and waits for it (idempotent).
func (n *Node) Stop(t testing.TB) {
	if n.cancel == nil {
		return
	}
	// Connections a test client dialed but never used would hold the
	// server's graceful shutdown for its full idle wait.
	http.DefaultClient.CloseIdleConnections()
	n.Client.CloseIdleConnections()
	n.cancel()
	n.cancel = nil
	select {
	case err := <-n.done:
		if err != nil {
			t.Errorf("node stopped with error: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("node did not stop within 30s")
	}
	if n.Config.NATS.URL != "" && !n.KeepNATS {
		CleanupPrefix(t, n.Config.NATS.URL, n.Config.NATS.Prefix)
	}
}

// Logger returns a logger that writes to the test log only when
// JUNCTION_TEST_LOG=1, keeping normal runs readable.
func Logger(t testing.TB) *slog.Logger {
	if os.Getenv("JUNCTION_TEST_LOG") == "1" {
		return observe.NewLogger(testWriter{t}, "debug", "text")
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// Eventually polls cond until it holds or the deadline passes.
func Eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Do sends a raw HTTP request and returns status, headers and body.
func Do(t testing.TB, method, url string, hdr map[string]string, body string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}
