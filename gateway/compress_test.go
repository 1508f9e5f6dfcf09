package gateway

import (
	"bufio"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
)

func TestGzip(t *testing.T) {
	big := strings.Repeat(`{"id":"order-1","total":12.5},`, 100) // 3000 bytes
	small := `{"ok":true}`
	for _, tc := range []struct {
		name       string
		accept     string
		method     string
		handler    http.HandlerFunc
		compressed bool
		vary       bool
		body       string
		etag       string
	}{
		{"json compressed", "gzip, deflate, br", "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Length", strconv.Itoa(len(big)))
			w.Header().Set("ETag", `"v1"`)
			_, _ = io.WriteString(w, big)
		}, true, true, big, `W/"v1"`},
		{"many small writes compressed", "gzip", "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			for range 300 {
				_, _ = io.WriteString(w, "<p>0123456789</p>")
			}
		}, true, true, strings.Repeat("<p>0123456789</p>", 300), ""},
		{"type sniffed", "gzip", "GET", func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, "<html>"+strings.Repeat("x", 2000))
		}, true, true, "<html>" + strings.Repeat("x", 2000), ""},
		{"small skipped", "gzip", "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, small)
		}, false, true, small, ""},
		{"small by content length skipped", "gzip", "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Length", strconv.Itoa(len(small)))
			w.WriteHeader(http.StatusCreated)
			_, _ = io.WriteString(w, small)
		}, false, true, small, ""},
		{"client does not accept gzip", "br", "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, big)
		}, false, true, big, ""},
		{"gzip refused by weight", "gzip;q=0, *", "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, big)
		}, false, true, big, ""},
		{"star accepts gzip", "*;q=0.5", "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, big)
		}, true, true, big, ""},
		{"already encoded skipped", "gzip", "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Encoding", "br")
			_, _ = io.WriteString(w, big)
		}, false, false, big, ""},
		{"incompressible type skipped", "gzip", "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "image/png")
			_, _ = io.WriteString(w, big)
		}, false, false, big, ""},
		{"no-transform respected", "gzip", "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.Header().Set("Cache-Control", "public, no-transform")
			_, _ = io.WriteString(w, big)
		}, false, true, big, ""},
		{"no content", "gzip", "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNoContent)
		}, false, false, "", ""},
		{"not modified", "gzip", "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotModified)
		}, false, false, "", ""},
		{"head passes through", "gzip", "HEAD", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Length", "3000")
		}, false, false, "", ""},
		{"nothing written", "gzip", "GET", func(w http.ResponseWriter, r *http.Request) {}, false, false, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(newGzip()(tc.handler))
			defer srv.Close()
			req, _ := http.NewRequest(tc.method, srv.URL, nil)
			req.Header.Set("Accept-Encoding", tc.accept) // set: the transport does not decode
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			raw, _ := io.ReadAll(resp.Body)
			gotGzip := resp.Header.Get("Content-Encoding") == "gzip"
			if gotGzip != tc.compressed {
				t.Fatalf("compressed %v, want %v (%v)", gotGzip, tc.compressed, resp.Header)
			}
			body := string(raw)
			if gotGzip {
				// net/http may count a short response itself; the
				// backend's length of the plain body must be gone.
				if cl := resp.Header.Get("Content-Length"); cl != "" && cl != strconv.Itoa(len(raw)) {
					t.Errorf("compressed response of %d bytes has Content-Length %s", len(raw), cl)
				}
				if len(raw) >= len(tc.body) {
					t.Errorf("compressed to %d bytes from %d", len(raw), len(tc.body))
				}
				zr, err := gzip.NewReader(strings.NewReader(body))
				if err != nil {
					t.Fatal(err)
				}
				b, err := io.ReadAll(zr)
				if err != nil {
					t.Fatal(err)
				}
				body = string(b)
			}
			if body != tc.body {
				t.Errorf("body %d bytes %.40q, want %d bytes %.40q", len(body), body, len(tc.body), tc.body)
			}
			if vary := strings.Contains(strings.Join(resp.Header.Values("Vary"), ","), "Accept-Encoding"); vary != tc.vary {
				t.Errorf("Vary %q, want Accept-Encoding: %v", resp.Header.Values("Vary"), tc.vary)
			}
			if tc.etag != "" && resp.Header.Get("Etag") != tc.etag {
				t.Errorf("ETag %q, want %q", resp.Header.Get("Etag"), tc.etag)
			}
		})
	}
}

// TestGzipEventStreamFlushes checks that an event stream reaches the
// client event by event, uncompressed, while the handler still runs.
func TestGzipEventStreamFlushes(t *testing.T) {
	next := make(chan struct{})
	done := make(chan struct{})
	srv := httptest.NewServer(newGzip()(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(done)
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 3 {
			_, _ = io.WriteString(w, "data: "+strconv.Itoa(i)+"\n\n")
			w.(http.Flusher).Flush()
			select {
			case <-next:
			case <-r.Context().Done():
				return
			}
		}
	})))
	defer srv.Close()
	req, _ := http.NewRequest("GET", srv.URL, nil)
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("Content-Encoding") != "" {
		t.Fatalf("event stream encoded: %v", resp.Header)
	}
	br := bufio.NewReader(resp.Body)
	for i := range 3 {
		line, err := br.ReadString('\n')
		if err != nil || line != "data: "+strconv.Itoa(i)+"\n" {
			t.Fatalf("event %d: %q %v", i, line, err)
		}
		_, _ = br.ReadString('\n')
		next <- struct{}{} // the handler waits for this: the event came before the end
	}
	<-done
}

// TestGzipFlushWhileCompressing checks that a compressed response flushed
// midway delivers what was written so far.
func TestGzipFlushWhileCompressing(t *testing.T) {
	first := strings.Repeat("a", 2000)
	next := make(chan struct{})
	srv := httptest.NewServer(newGzip()(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, first)
		w.(http.Flusher).Flush()
		<-next
		_, _ = io.WriteString(w, "end")
	})))
	defer srv.Close()
	req, _ := http.NewRequest("GET", srv.URL, nil)
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("not compressed: %v", resp.Header)
	}
	zr, err := gzip.NewReader(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(first))
	if _, err := io.ReadFull(zr, buf); err != nil || string(buf) != first {
		t.Fatalf("first part: %v", err)
	}
	close(next)
	rest, err := io.ReadAll(zr)
	if err != nil || string(rest) != "end" {
		t.Fatalf("rest %q %v", rest, err)
	}
}

func TestAcceptsGzip(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want bool
	}{
		{nil, false},
		{[]string{"gzip"}, true},
		{[]string{"deflate", "GZIP;q=0.8"}, true},
		{[]string{"gzip;q=0"}, false},
		{[]string{"gzip; q=0.000"}, false},
		{[]string{"*"}, true},
		{[]string{"*;q=0"}, false},
		{[]string{"identity"}, false},
		{[]string{"x-gzip"}, true},
	} {
		if got := acceptsGzip(tc.in); got != tc.want {
			t.Errorf("%q: %v, want %v", tc.in, got, tc.want)
		}
	}
}
