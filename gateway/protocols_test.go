package gateway_test

import (
	"bufio"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/junctionhq/junction"
	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/internal/testutil"
)

// protocolNode runs a gateway in front of: an app that upgrades
// connections (a WebSocket-style echo) and streams server-sent events,
// and a gRPC server (h2c).
func protocolNode(t *testing.T) (gw string, tick chan struct{}, node *junction.Node) {
	tick = make(chan struct{})
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ws":
			if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
				http.Error(w, "upgrade required", http.StatusUpgradeRequired)
				return
			}
			conn, rw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer conn.Close()
			fmt.Fprint(rw, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
			rw.Flush()
			io.Copy(conn, rw) // echo every byte until the client closes
		case "/events":
			w.Header().Set("Content-Type", "text/event-stream")
			for i := 0; i < 3; i++ {
				fmt.Fprintf(w, "data: %d\n\n", i)
				http.NewResponseController(w).Flush()
				select {
				case <-tick: // the next event only once the client saw this one
				case <-r.Context().Done():
					return
				}
			}
		}
	}))
	t.Cleanup(app.Close)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	healthpb.RegisterHealthServer(gs, health.NewServer())
	go gs.Serve(l)
	t.Cleanup(gs.Stop)

	cfg := testutil.Config(t, testutil.Embedded)
	cfg.Services = map[string]*config.Service{
		"app":    {Instances: []config.Instance{{URL: app.URL}}},
		"health": {Protocol: "h2c", Instances: []config.Instance{{URL: "http://" + l.Addr().String()}}},
	}
	cfg.Gateway = config.Gateway{Listen: "127.0.0.1:0", Routes: []*config.GatewayRoute{
		{Path: "/grpc.health.v1.Health/{method}", Methods: []string{"POST"}, Service: "health"},
		{Path: "/{rest...}", Service: "app", GatewayMiddleware: config.GatewayMiddleware{Gzip: ptr(true)}},
	}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	n := testutil.Start(t, cfg)
	return n.Node.GatewayAddr(), tick, n.Node
}

func ptr[T any](v T) *T { return &v }

// An upgraded connection is a tunnel: bytes flow both ways as written.
func TestWebSocketPassThrough(t *testing.T) {
	gw, _, _ := protocolNode(t)
	conn, err := net.DialTimeout("tcp", gw, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprint(conn, "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	for _, msg := range []string{"hello", "second frame"} {
		fmt.Fprint(conn, msg)
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(br, buf); err != nil || string(buf) != msg {
			t.Fatalf("echo of %q: %q %v", msg, buf, err)
		}
	}
}

// Server-sent events reach the client one by one, as the app flushes
// them (the app waits for the client before sending the next), through
// a route that also has gzip on.
func TestServerSentEventsUnbuffered(t *testing.T) {
	gw, tick, _ := protocolNode(t)
	req, _ := http.NewRequest("GET", "http://"+gw+"/events", nil)
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("Content-Type") != "text/event-stream" || resp.Header.Get("Content-Encoding") != "" {
		t.Fatalf("headers: %v", resp.Header)
	}
	br := bufio.NewReader(resp.Body)
	for i := 0; i < 3; i++ {
		line, err := br.ReadString('\n')
		if err != nil || line != fmt.Sprintf("data: %d\n", i) {
			t.Fatalf("event %d: %q %v", i, line, err)
		}
		br.ReadString('\n')
		if i < 2 {
			tick <- struct{}{}
		}
	}
}

// gRPC clients reach an h2c gRPC server through the gateway, trailers
// (grpc-status) included.
func TestGRPCToH2C(t *testing.T) {
	gw, _, _ := protocolNode(t)
	cc, err := grpc.NewClient(gw, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || res.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health check through the gateway: %v %v", res, err)
	}
	// An unknown service is a gRPC error carried in the trailers.
	_, err = healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: "nope"})
	if err == nil || !strings.Contains(err.Error(), "NotFound") {
		t.Fatalf("unknown service: %v", err)
	}
}

// A WebSocket opened before a reload keeps working after it: the tunnel
// belongs to the connection, not to the route table.
func TestWebSocketSurvivesReload(t *testing.T) {
	gw, _, node := protocolNode(t)
	conn, err := net.DialTimeout("tcp", gw, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprint(conn, "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	br := bufio.NewReader(conn)
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	echo := func(msg string) {
		t.Helper()
		fmt.Fprint(conn, msg)
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(br, buf); err != nil || string(buf) != msg {
			t.Fatalf("echo of %q: %q %v", msg, buf, err)
		}
	}
	echo("before")
	// Reload to a table without the route that opened the tunnel.
	if err := node.Gateway().Reload(config.Gateway{Routes: []*config.GatewayRoute{{Name: "only", Path: "/other", Static: &config.GatewayStatic{Status: 200, ContentType: "text/plain"}}}}); err != nil {
		t.Fatal(err)
	}
	echo("after the reload")
	if code, _, _ := testutil.Do(t, "GET", "http://"+gw+"/ws", nil, ""); code != 404 {
		t.Errorf("a new request to the removed route: %d, want 404", code)
	}
}

// A chunked answer from a service (no Content-Length, flushed by the
// proxy chunk by chunk) is still compressed for a client that accepts it.
func TestGzipChunkedUpstream(t *testing.T) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		for i := 0; i < 30; i++ {
			fmt.Fprintf(w, `{"line":%d,"text":"%s"}`+"\n", i, strings.Repeat("x", 80))
			http.NewResponseController(w).Flush()
		}
	}))
	defer app.Close()
	cfg := testutil.Config(t, testutil.Embedded)
	cfg.Gateway = config.Gateway{Listen: "127.0.0.1:0", Routes: []*config.GatewayRoute{
		{Path: "/{rest...}", URL: []string{app.URL}, GatewayMiddleware: config.GatewayMiddleware{Gzip: ptr(true)}}}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	n := testutil.Start(t, cfg)
	req, _ := http.NewRequest("GET", "http://"+n.Node.GatewayAddr()+"/lines", nil)
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := (&http.Transport{DisableCompression: true}).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	zr, err := gzip.NewReader(resp.Body)
	if resp.Header.Get("Content-Encoding") != "gzip" || err != nil {
		t.Fatalf("not compressed: %v %v", resp.Header, err)
	}
	b, _ := io.ReadAll(zr)
	if strings.Count(string(b), "\n") != 30 {
		t.Errorf("decompressed %d lines", strings.Count(string(b), "\n"))
	}
}
