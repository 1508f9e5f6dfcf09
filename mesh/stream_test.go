package mesh_test

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/junctionhq/junction/config"
)

// pattern is an endless stream of bytes that depend on their offset, so
// a lost, repeated or reordered chunk changes the hash.
type pattern struct{ off uint64 }

func word(i uint64) uint64 {
	w := i * 0x9E3779B97F4A7C15
	return w ^ w>>29
}

func (g *pattern) Read(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 && g.off%8 != 0 {
		p[0] = byte(word(g.off/8) >> (8 * (g.off % 8)))
		p, g.off = p[1:], g.off+1
	}
	for len(p) >= 8 {
		binary.LittleEndian.PutUint64(p, word(g.off/8))
		p, g.off = p[8:], g.off+8
	}
	for len(p) > 0 {
		p[0] = byte(word(g.off/8) >> (8 * (g.off % 8)))
		p, g.off = p[1:], g.off+1
	}
	return n, nil
}

const bigSize = 1 << 30

var bigSum = sync.OnceValue(func() string {
	h := sha256.New()
	_, _ = io.CopyN(h, &pattern{}, bigSize)
	return hex.EncodeToString(h.Sum(nil))
})

// heapWatch samples the heap in use while a transfer runs (the node, the
// backend and the client share this process) and reports its peak growth.
func heapWatch() (stop func() uint64) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	done, peak := make(chan struct{}), make(chan uint64)
	go func() {
		top := base
		tk := time.NewTicker(10 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-done:
				peak <- top - base
				return
			case <-tk.C:
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				top = max(top, ms.HeapInuse)
			}
		}
	}()
	return func() uint64 { close(done); return <-peak }
}

func TestGigabyteStreamsThroughInvoke(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 3 GiB; skipped with -short")
	}
	blob := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case "PUT":
			h := sha256.New()
			n, err := io.Copy(h, r.Body)
			if err != nil {
				http.Error(w, err.Error(), 400)
				return
			}
			_ = json.NewEncoder(w).Encode(map[string]any{
				"sha256": hex.EncodeToString(h.Sum(nil)), "bytes": n, "content_length": r.ContentLength})
		case "GET":
			size, _ := strconv.ParseInt(r.URL.Query().Get("size"), 10, 64)
			w.Header().Set("Content-Type", "application/octet-stream")
			_, _ = io.CopyN(w, &pattern{}, size)
		}
	}))
	t.Cleanup(blob.Close)
	n := node(t, func(c *config.Config) {
		c.Services = map[string]*config.Service{"blobs": svc("bulk", blob.URL)}
		c.Policies = map[string]*config.Policy{"bulk": {Timeout: config.Duration(2 * time.Minute)}}
	})
	url := n.URL + "/v1/invoke/blobs/blob"
	want := bigSum()
	long := &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{}}
	t.Cleanup(long.CloseIdleConnections)
	const limit = 64 << 20

	for _, sized := range []bool{false, true} {
		name := "upload of unknown length"
		if sized {
			name = "upload with Content-Length"
		}
		t.Run(name, func(t *testing.T) {
			// A plain io.Reader: the client cannot know its length and
			// sends it chunked unless told.
			body := struct{ io.Reader }{io.LimitReader(&pattern{}, bigSize)}
			req, err := http.NewRequest("PUT", url, body)
			if err != nil {
				t.Fatal(err)
			}
			wantLength := int64(-1)
			if sized {
				req.ContentLength, wantLength = bigSize, bigSize
			}
			stop := heapWatch()
			start := time.Now()
			resp, err := long.Do(req)
			if err != nil {
				stop()
				t.Fatal(err)
			}
			var got struct {
				SHA256        string `json:"sha256"`
				Bytes         int64  `json:"bytes"`
				ContentLength int64  `json:"content_length"`
			}
			err = json.NewDecoder(resp.Body).Decode(&got)
			resp.Body.Close()
			growth := stop()
			t.Logf("1 GiB up in %s, heap peak +%d KiB", time.Since(start).Round(time.Millisecond), growth>>10)
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("status %d: %v", resp.StatusCode, err)
			}
			if got.Bytes != bigSize || got.SHA256 != want {
				t.Errorf("the backend got %d bytes with sha256 %s, want %d with %s", got.Bytes, got.SHA256, bigSize, want)
			}
			if got.ContentLength != wantLength {
				t.Errorf("the backend saw Content-Length %d, want %d", got.ContentLength, wantLength)
			}
			if growth > limit {
				t.Errorf("the heap grew by %d MiB during the upload: the body was held in memory", growth>>20)
			}
		})
	}

	t.Run("download", func(t *testing.T) {
		stop := heapWatch()
		start := time.Now()
		resp, err := long.Get(url + "?size=" + strconv.Itoa(bigSize))
		if err != nil {
			stop()
			t.Fatal(err)
		}
		h := sha256.New()
		got, err := io.Copy(h, resp.Body)
		resp.Body.Close()
		growth := stop()
		t.Logf("1 GiB down in %s, heap peak +%d KiB", time.Since(start).Round(time.Millisecond), growth>>10)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("status %d: %v", resp.StatusCode, err)
		}
		if sum := hex.EncodeToString(h.Sum(nil)); got != bigSize || sum != want {
			t.Errorf("got %d bytes with sha256 %s, want %d with %s", got, sum, bigSize, want)
		}
		if growth > limit {
			t.Errorf("the heap grew by %d MiB during the download: the body was held in memory", growth>>20)
		}
	})
}

func TestStreamingResponseIsFlushedAsItComes(t *testing.T) {
	const lines = 5
	for _, ct := range []string{"text/event-stream", "application/x-ndjson"} {
		t.Run(ct, func(t *testing.T) {
			// The backend sends a line and waits until the client has it
			// before sending the next: a proxy that buffered would leave
			// both waiting.
			ack := make(chan struct{})
			var finished atomic.Bool
			events := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", ct)
				for i := range lines {
					fmt.Fprintf(w, "data: %d\n", i)
					w.(http.Flusher).Flush()
					select {
					case <-ack:
					case <-r.Context().Done():
						return
					case <-time.After(10 * time.Second):
						return
					}
				}
				finished.Store(true)
			}))
			t.Cleanup(events.Close)
			n := node(t, func(c *config.Config) {
				c.Services = map[string]*config.Service{"events": svc("", events.URL)}
			})
			resp, err := httpc.Get(n.URL + "/v1/invoke/events/stream")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != ct {
				t.Fatalf("status %d, Content-Type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
			}
			got := make(chan string)
			go func() {
				defer close(got)
				sc := bufio.NewScanner(resp.Body)
				for sc.Scan() {
					got <- sc.Text()
				}
			}()
			for i := range lines {
				select {
				case line := <-got:
					if want := fmt.Sprintf("data: %d", i); line != want {
						t.Fatalf("line %d = %q, want %q", i, line, want)
					}
					if finished.Load() {
						t.Fatalf("line %d arrived after the backend finished", i)
					}
				case <-time.After(5 * time.Second):
					t.Fatalf("line %d did not arrive while the backend waited for it: the response is buffered", i)
				}
				ack <- struct{}{}
			}
			if rest, ok := <-got; ok {
				t.Errorf("unexpected line %q", rest)
			}
			if !finished.Load() {
				t.Errorf("the stream ended before the backend finished")
			}
		})
	}
}
