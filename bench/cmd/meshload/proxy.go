package main

import (
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"time"

	"github.com/junctionhq/junction/bench/internal/benchhttp"
	"github.com/junctionhq/junction/internal/httpserver"
)

// proxyCmd runs the reference point for every proxy: a bare
// httputil.ReverseProxy with a transport that keeps enough idle
// connections and pooled copy buffers, nothing else (no routing, policy,
// metrics or tracing). What a mesh path costs beyond this is the mesh's
// own work; up to this, any Go HTTP proxy pays it.
func proxyCmd(args []string) error {
	fs := flag.NewFlagSet("proxy", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:0", "listen address")
	target := fs.String("target", "", "backend base URL")
	maxRun := fs.Duration("max", time.Hour, "exit after this long")
	_ = fs.Parse(args)
	u, err := url.Parse(*target)
	if err != nil || u.Host == "" {
		return fmt.Errorf("-target %q is not a URL", *target)
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        4096,
		MaxIdleConnsPerHost: 512,
		IdleConnTimeout:     90 * time.Second,
	}
	srv := &http.Server{
		Handler: &httputil.ReverseProxy{
			Rewrite:    func(pr *httputil.ProxyRequest) { pr.SetURL(u) },
			Transport:  tr,
			BufferPool: httpserver.ProxyBuffers,
		},
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
	}
	if err := benchhttp.Serve(l, srv, *maxRun); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "proxy stopped")
	return nil
}
