// Command nullhttp is the HTTP baseline for busload: a net/http server, set
// up as Junction's API server is, that reads each request body and answers
// 202 with a small JSON body. With -status and -body it answers any other
// fixed response instead (bench/run-mesh.sh uses it as the trivial backend
// behind the service mesh: 200 with a few bytes of text). It prints
// "listening on ADDR" once bound and exits on SIGINT/SIGTERM or after -max.
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/junctionhq/junction/bench/internal/benchhttp"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "listen address")
	maxRun := flag.Duration("max", 10*time.Minute, "exit after this long")
	status := flag.Int("status", http.StatusAccepted, "status of every answer")
	text := flag.String("body", "", "answer this text (text/plain) instead of the JSON publish result")
	flag.Parse()
	if *status < 200 || *status > 599 {
		fmt.Fprintln(os.Stderr, "nullhttp: -status must be between 200 and 599")
		os.Exit(2)
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "nullhttp:", err)
		os.Exit(1)
	}
	answer := []byte(`{"id":"00000000-0000-0000-0000-000000000000","sequence":1,"duplicate":false}`)
	ctype := "application/json"
	if *text != "" {
		answer, ctype = []byte(*text), "text/plain; charset=utf-8"
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", ctype)
			w.WriteHeader(*status)
			_, _ = w.Write(answer)
		}),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
	}
	if err := benchhttp.Serve(l, srv, *maxRun); err != nil {
		fmt.Fprintln(os.Stderr, "nullhttp:", err)
		os.Exit(1)
	}
}
