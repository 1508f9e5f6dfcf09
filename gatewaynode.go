package junction

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/gateway"
	"github.com/junctionhq/junction/internal/httpserver"
	"github.com/junctionhq/junction/observe"
)

// gatewayServer is the public listener of the gateway, which runs when
// gateway.routes are declared.
type gatewayServer struct {
	gw       *gateway.Gateway
	tls      *tls.Config // nil: plain HTTP (and h2c)
	listener net.Listener
	srv      *http.Server
	errc     chan error
}

// bindGateway opens the gateway's listener early, with the API's, so a
// taken port fails start-up before anything runs.
func (n *Node) bindGateway() error {
	if len(n.cfg.Gateway.Routes) == 0 {
		return nil
	}
	tc, err := gatewayTLS(n.cfg.Gateway.TLS)
	if err != nil {
		return err
	}
	l, err := httpserver.Listen(n.cfg.Gateway.Listen)
	if err != nil {
		return err
	}
	n.gateway = &gatewayServer{listener: l, tls: tc}
	return nil
}

// gatewayTLS loads the gateway's certificate and the CA of client
// certificates, so a bad file fails start-up.
func gatewayTLS(c config.GatewayTLS) (*tls.Config, error) {
	if c.Cert == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(c.Cert, c.Key)
	if err != nil {
		return nil, fmt.Errorf("gateway.tls: %w", err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}}
	if c.ClientCA != "" {
		pem, err := os.ReadFile(c.ClientCA)
		if err != nil {
			return nil, fmt.Errorf("gateway.tls.client_ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("gateway.tls.client_ca: %s holds no PEM certificate", c.ClientCA)
		}
		tc.ClientCAs, tc.ClientAuth = pool, tls.VerifyClientCertIfGiven
		if c.RequireClientCert {
			tc.ClientAuth = tls.RequireAndVerifyClientCert
		}
	}
	return tc, nil
}

func (n *Node) startGateway() error {
	if n.gateway == nil {
		return nil
	}
	// Global rate limits share their buckets through JetStream. Idle keys
	// expire with the bucket's TTL, longer than any bucket takes to refill.
	kv, err := n.nats.JS.CreateOrUpdateKeyValue(context.Background(), jetstream.KeyValueConfig{
		Bucket: n.cfg.NATS.Prefix + "_ratelimits", Description: "Junction gateway rate-limit buckets", History: 1, TTL: time.Hour, Storage: jetstream.FileStorage})
	if err != nil {
		return fmt.Errorf("rate-limit bucket: %w", err)
	}
	gw, err := gateway.New(gateway.Options{
		Services: n.mesh, Static: n.mesh, Publisher: n.bus, Runs: n.workflows, Buckets: gateway.NewKVBuckets(kv), MaxBodyBytes: n.cfg.Bus.MaxMessageBytes, Logger: n.log,
		AccessLog: n.cfg.Gateway.AccessLog, Registerer: n.reg, Tracer: observe.Tracer(n.tp, "gateway"),
	}, n.cfg.Gateway)
	if err != nil {
		return err
	}
	n.gateway.gw = gw
	return nil
}

// GatewayAddr is the gateway listener's address ("" without routes).
func (n *Node) GatewayAddr() string {
	if n.gateway == nil {
		return ""
	}
	return n.gateway.listener.Addr().String()
}

// Gateway is the node's gateway (nil without routes).
func (n *Node) Gateway() *gateway.Gateway {
	if n.gateway == nil {
		return nil
	}
	return n.gateway.gw
}

func (g *gatewayServer) serve(log *slog.Logger) {
	g.srv = &http.Server{
		Handler:           g.gw,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		// HTTP/1.1, and HTTP/2 both with TLS and without (h2c, which
		// gRPC clients use on plain connections).
		Protocols: new(http.Protocols),
	}
	g.srv.Protocols.SetHTTP1(true)
	g.srv.Protocols.SetHTTP2(true)
	g.srv.Protocols.SetUnencryptedHTTP2(true)
	g.errc = make(chan error, 1)
	if g.tls == nil {
		go func() { g.errc <- g.srv.Serve(g.listener) }()
		return
	}
	g.srv.TLSConfig = g.tls // its certificate: no files to name here
	go func() { g.errc <- g.srv.ServeTLS(g.listener, "", "") }()
}

// shutdown stops accepting connections and lets requests in progress
// finish until ctx ends.
func (g *gatewayServer) shutdown(ctx context.Context) error {
	if g == nil || g.srv == nil {
		return nil
	}
	if err := g.srv.Shutdown(ctx); err != nil {
		_ = g.srv.Close()
	}
	if err := <-g.errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
