// Package benchhttp holds the HTTP plumbing the load drivers and bench
// servers share: a client transport sized to the run, and a server loop
// that stops by itself.
package benchhttp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os/signal"
	"syscall"
	"time"
)

// Transport keeps exactly conns connections per host, uncompressed, so a
// run measures the server and not connection churn.
func Transport(conns int) *http.Transport {
	return &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		MaxConnsPerHost:     conns,
		DisableCompression:  true,
		IdleConnTimeout:     90 * time.Second,
	}
}

// Serve runs srv on l until SIGINT, SIGTERM or maxRun, so a bench server
// left behind by an interrupted script still stops by itself.
func Serve(l net.Listener, srv *http.Server, maxRun time.Duration) error {
	fmt.Println("listening on", l.Addr())
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, maxRun)
	defer cancel()
	go func() {
		<-ctx.Done()
		sctx, c := context.WithTimeout(context.Background(), 5*time.Second)
		defer c()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
