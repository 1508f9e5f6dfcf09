package gateway

import (
	"bytes"
	"compress/gzip"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
)

// gzipMinSize is the smallest body worth compressing: below it the gzip
// framing and the CPU cost outweigh the bytes saved.
const gzipMinSize = 1024

var gzipPool = sync.Pool{New: func() any {
	zw, _ := gzip.NewWriterLevel(io.Discard, gzip.DefaultCompression)
	return zw
}}

// newGzip compresses responses for clients that accept gzip.
//
// A response is compressed when its type is compressible, it carries no
// Content-Encoding yet, and its body reaches gzipMinSize: the writes are
// held back until that much has come (or Content-Length says so), then the
// choice is made once. Event streams, bodiless statuses and responses
// the handler flushes before the choice pass through as they are.
// Compressible responses get Vary: Accept-Encoding whether compressed or
// not, so caches keep the two apart.
func newGzip() middleware {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodHead || r.Header.Get("Upgrade") != "" {
				next.ServeHTTP(w, r)
				return
			}
			gw := &gzipWriter{ResponseWriter: w, accept: acceptsGzip(r.Header.Values("Accept-Encoding"))}
			next.ServeHTTP(gw, r)
			gw.finish()
		})
	}
}

// acceptsGzip reports whether Accept-Encoding allows gzip: listed (or *)
// with a non-zero weight.
func acceptsGzip(values []string) bool {
	star, gz := false, -1
	for _, v := range values {
		for part := range strings.SplitSeq(v, ",") {
			name, params, _ := strings.Cut(strings.TrimSpace(part), ";")
			ok := true
			for p := range strings.SplitSeq(params, ";") {
				k, val, _ := strings.Cut(strings.TrimSpace(p), "=")
				if strings.EqualFold(k, "q") {
					q, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
					ok = err == nil && q > 0
				}
			}
			switch strings.ToLower(strings.TrimSpace(name)) {
			case "gzip", "x-gzip":
				if ok {
					gz = 1
				} else if gz < 0 {
					gz = 0
				}
			case "*":
				star = ok
			}
		}
	}
	if gz >= 0 {
		return gz == 1
	}
	return star
}

// compressible reports whether a content type gains from gzip.
func compressible(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	switch {
	case mt == "text/event-stream":
		return false // streamed event by event, never held back
	case strings.HasPrefix(mt, "text/"):
		return true
	case strings.HasSuffix(mt, "+json"), strings.HasSuffix(mt, "+xml"):
		return true
	}
	switch mt {
	case "application/json", "application/javascript", "application/ecmascript", "application/x-javascript",
		"application/xml", "application/x-ndjson", "application/wasm", "application/graphql",
		"image/svg+xml", "image/x-icon", "image/bmp", "font/ttf", "font/otf", "application/vnd.ms-fontobject":
		return true
	}
	return false
}

// gzipWriter holds the first bytes of a response until it knows whether
// to compress it.
type gzipWriter struct {
	http.ResponseWriter
	accept  bool
	code    int // the status held back; 0 before WriteHeader
	decided bool
	zw      *gzip.Writer // nil: passing through
	buf     bytes.Buffer // held back before the choice
}

func (g *gzipWriter) Unwrap() http.ResponseWriter { return g.ResponseWriter }

func (g *gzipWriter) WriteHeader(code int) {
	if g.decided || g.code != 0 {
		return
	}
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		g.ResponseWriter.WriteHeader(code) // informational: the final status follows
		return
	}
	g.code = code
	h := g.Header()
	switch {
	case code == http.StatusNoContent, code == http.StatusNotModified, code < 200,
		code == http.StatusPartialContent, h.Get("Content-Range") != "":
		g.decide(false)
	case !g.eligible():
		g.decide(false)
	default:
		if cl := h.Get("Content-Length"); cl != "" {
			if n, err := strconv.ParseInt(cl, 10, 64); err == nil {
				g.decide(n >= gzipMinSize)
			}
		}
	}
}

// eligible reports whether the response may be compressed, judging by its
// header: a compressible type (or none yet, to be sniffed) and no
// encoding.
func (g *gzipWriter) eligible() bool {
	h := g.Header()
	if ce := h.Get("Content-Encoding"); ce != "" && !strings.EqualFold(ce, "identity") {
		return false
	}
	ct := h.Get("Content-Type")
	return ct == "" || compressible(ct)
}

func (g *gzipWriter) Write(p []byte) (int, error) {
	if g.code == 0 {
		g.WriteHeader(http.StatusOK)
	}
	if !g.decided {
		g.buf.Write(p)
		if g.buf.Len() < gzipMinSize {
			return len(p), nil
		}
		g.decide(true)
		if err := g.flushBuf(); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	if g.zw != nil {
		return g.zw.Write(p)
	}
	return g.ResponseWriter.Write(p)
}

// decide settles compression (compress: the size allows it) and sends
// the header. The body held back is written by the caller.
func (g *gzipWriter) decide(compress bool) {
	g.decided = true
	h := g.Header()
	if h.Get("Content-Type") == "" && g.buf.Len() > 0 && g.code != http.StatusNoContent && g.code != http.StatusNotModified {
		// What net/http would send; set here so the choice can use it.
		h.Set("Content-Type", http.DetectContentType(g.buf.Bytes()))
	}
	body := g.code >= 200 && g.code != http.StatusNoContent && g.code != http.StatusNotModified
	if body && g.eligible() && h.Get("Content-Type") != "" {
		h.Add("Vary", "Accept-Encoding")
		if compress && g.accept && !strings.Contains(strings.ToLower(h.Get("Cache-Control")), "no-transform") {
			h.Del("Content-Length")
			h.Set("Content-Encoding", "gzip")
			// The compressed bytes are another representation: a strong
			// validator of the original no longer holds for them.
			if et := h.Get("Etag"); et != "" && !strings.HasPrefix(et, "W/") {
				h.Set("Etag", "W/"+et)
			}
			g.zw = gzipPool.Get().(*gzip.Writer)
			g.zw.Reset(g.ResponseWriter)
		}
	}
	if g.code == 0 {
		g.code = http.StatusOK
	}
	g.ResponseWriter.WriteHeader(g.code)
}

func (g *gzipWriter) flushBuf() error {
	if g.buf.Len() == 0 {
		return nil
	}
	var err error
	if g.zw != nil {
		_, err = g.zw.Write(g.buf.Bytes())
	} else {
		_, err = g.ResponseWriter.Write(g.buf.Bytes())
	}
	g.buf = bytes.Buffer{}
	return err
}

// Flush sends what has been written. An event stream flushed before the
// choice is made passes through uncompressed, at once. Other flushes
// before the choice wait for it: a reverse proxy flushes every chunk of a
// chunked answer as it arrives, and honouring those would leave every
// such answer uncompressed.
func (g *gzipWriter) Flush() {
	if !g.decided && g.eligible() && !strings.HasPrefix(g.Header().Get("Content-Type"), "text/event-stream") {
		return
	}
	if !g.decided {
		if g.code == 0 {
			g.WriteHeader(http.StatusOK)
		}
		if !g.decided {
			g.decide(false)
		}
		_ = g.flushBuf()
	}
	if g.zw != nil {
		_ = g.zw.Flush()
	}
	if f, ok := g.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// finish ends the response once the handler has returned.
func (g *gzipWriter) finish() {
	if !g.decided {
		if g.code == 0 {
			if g.buf.Len() == 0 {
				return // nothing written: let net/http answer 200 as usual
			}
			g.code = http.StatusOK
		}
		g.decide(false) // below gzipMinSize
	}
	_ = g.flushBuf()
	if g.zw != nil {
		_ = g.zw.Close()
		g.zw.Reset(io.Discard)
		gzipPool.Put(g.zw)
		g.zw = nil
	}
}
