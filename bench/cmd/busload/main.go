// Command busload is an HTTP load driver for Junction's publish endpoint:
// N workers, each with its own keep-alive connection, POST CloudEvents to
// one URL for a fixed duration (or request count) and the driver reports
// msg/s and request latency (p50, p99, max). Mode binary sends one message
// per request in CloudEvents binary mode; mode batch sends -batch messages
// per request as application/cloudevents-batch+json. Every event carries a
// unique ce-id. It prints a summary line and, with -json, a RESULT line.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/junctionhq/junction/bench/internal/procstat"

	"github.com/junctionhq/junction/bench/internal/benchhttp"
)

type result struct {
	Name     string  `json:"name"`
	Mode     string  `json:"mode"`
	Conns    int     `json:"conns"`
	Batch    int     `json:"batch"`
	Seconds  float64 `json:"seconds"`
	Requests int     `json:"requests"`
	Messages int     `json:"messages"`
	Errors   int     `json:"errors"`
	MsgRate  float64 `json:"msg_per_s"`
	ReqRate  float64 `json:"req_per_s"`
	P50ms    float64 `json:"p50_ms"`
	P99ms    float64 `json:"p99_ms"`
	MaxMs    float64 `json:"max_ms"`
	// ServerCPUus is the server process's CPU time per message in
	// microseconds over the measured window (with -pid).
	ServerCPUus float64 `json:"server_cpu_us_per_msg,omitempty"`
	// ServerCores is the server's CPU time over the window's length.
	ServerCores float64 `json:"server_cores,omitempty"`
}

func main() {
	url := flag.String("url", "", "publish URL, e.g. http://127.0.0.1:4100/v1/topics/load/messages")
	name := flag.String("name", "", "label for the result")
	mode := flag.String("mode", "binary", "binary (one message per request) or batch")
	batch := flag.Int("batch", 100, "messages per request in batch mode")
	conns := flag.Int("conns", 32, "concurrent connections (one worker each)")
	duration := flag.Duration("duration", 10*time.Second, "measured duration")
	warmup := flag.Duration("warmup", time.Second, "unmeasured load before the measured duration")
	count := flag.Int("count", 0, "stop after this many measured requests (0: no limit)")
	size := flag.Int("size", 128, "payload bytes per message")
	token := flag.String("token", os.Getenv("JUNCTION_API_TOKEN"), "bearer token")
	pid := flag.Int("pid", 0, "server process id: report its CPU time per message (Linux /proc)")
	asJSON := flag.Bool("json", false, "also print a RESULT line of JSON")
	flag.Parse()
	if *url == "" || (*mode != "binary" && *mode != "batch") || *conns < 1 || *batch < 1 || *duration <= 0 {
		flag.Usage()
		os.Exit(2)
	}
	if *mode == "binary" {
		*batch = 1
	}
	if *duration > 5*time.Minute {
		fmt.Fprintln(os.Stderr, "busload: -duration is capped at 5m")
		os.Exit(2)
	}
	r, err := run(*url, *mode, *batch, *conns, *duration, *warmup, *count, *size, *token, *pid)
	if err != nil {
		fmt.Fprintln(os.Stderr, "busload:", err)
		os.Exit(1)
	}
	r.Name = *name
	fmt.Printf("%-24s %-6s conns=%-3d batch=%-4d %8d req %9d msgs %3d errors in %5.2fs = %9.0f msg/s (%7.0f req/s)  latency p50 %6.2f ms  p99 %6.2f ms  max %7.2f ms\n",
		r.Name, r.Mode, r.Conns, r.Batch, r.Requests, r.Messages, r.Errors, r.Seconds, r.MsgRate, r.ReqRate, r.P50ms, r.P99ms, r.MaxMs)
	if r.ServerCores > 0 {
		fmt.Printf("%-24s server CPU %.1f us/msg, %.2f cores\n", r.Name, r.ServerCPUus, r.ServerCores)
	}
	if *asJSON {
		b, _ := json.Marshal(r)
		fmt.Printf("RESULT http %s\n", b)
	}
	if r.Errors > 0 {
		os.Exit(1)
	}
}

type worker struct {
	lat  []time.Duration
	reqs int
	errs int
	last error
}

func run(url, mode string, batch, conns int, duration, warmup time.Duration, count, size int, token string, pid int) (result, error) {
	tr := benchhttp.Transport(conns)
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	payload := make([]byte, size)
	for i := range payload {
		payload[i] = 'a' + byte(i%26)
	}
	run := strconv.FormatInt(time.Now().UnixNano(), 36)

	start := time.Now()
	measureFrom := start.Add(warmup)
	end := measureFrom.Add(duration)
	ctx, cancel := context.WithDeadline(context.Background(), end.Add(30*time.Second))
	defer cancel()

	var cpu0 time.Duration
	cpuTaken := make(chan struct{})
	if pid > 0 {
		go func() {
			defer close(cpuTaken)
			time.Sleep(time.Until(measureFrom))
			cpu0 = procstat.ProcCPU(pid)
		}()
	} else {
		close(cpuTaken)
	}

	var mu sync.Mutex
	measured := 0 // requests started in the measured window, for -count
	ws := make([]*worker, conns)
	var wg sync.WaitGroup
	for i := range ws {
		w := &worker{lat: make([]time.Duration, 0, 1<<14)}
		ws[i] = w
		wg.Add(1)
		go func() {
			defer wg.Done()
			prefix := run + "-" + strconv.Itoa(i) + "-"
			var seq int
			var buf []byte
			for {
				t0 := time.Now()
				if !t0.Before(end) {
					return
				}
				inWindow := !t0.Before(measureFrom)
				if inWindow && count > 0 {
					mu.Lock()
					ok := measured < count
					measured++
					mu.Unlock()
					if !ok {
						return
					}
				}
				var req *http.Request
				if mode == "binary" {
					seq++
					req, _ = http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(payload))
					req.Header.Set("Content-Type", "application/octet-stream")
					req.Header.Set("ce-specversion", "1.0")
					req.Header.Set("ce-type", "bench.load")
					req.Header.Set("ce-source", "/busload")
					req.Header.Set("ce-id", prefix+strconv.Itoa(seq))
				} else {
					buf = buf[:0]
					buf = append(buf, '[')
					for k := range batch {
						seq++
						if k > 0 {
							buf = append(buf, ',')
						}
						buf = append(buf, `{"specversion":"1.0","type":"bench.load","source":"/busload","datacontenttype":"text/plain","id":"`...)
						buf = append(buf, prefix...)
						buf = strconv.AppendInt(buf, int64(seq), 10)
						buf = append(buf, `","data":"`...)
						buf = append(buf, payload...)
						buf = append(buf, `"}`...)
					}
					buf = append(buf, ']')
					req, _ = http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(slices.Clone(buf)))
					req.Header.Set("Content-Type", "application/cloudevents-batch+json")
				}
				if token != "" {
					req.Header.Set("Authorization", "Bearer "+token)
				}
				t0 = time.Now()
				resp, err := client.Do(req)
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusAccepted {
						err = fmt.Errorf("status %s", resp.Status)
					}
				}
				el := time.Since(t0)
				if !inWindow {
					continue
				}
				if err != nil {
					w.errs++
					w.last = err
					continue
				}
				w.reqs++
				w.lat = append(w.lat, el)
			}
		}()
	}
	wg.Wait()
	<-cpuTaken
	var cpu time.Duration
	if pid > 0 {
		cpu = procstat.ProcCPU(pid) - cpu0
	}
	// With -count the run may end before the window does.
	window := time.Since(measureFrom)
	if time.Now().After(end) {
		window = duration
	}
	r := result{Mode: mode, Conns: conns, Batch: batch, Seconds: window.Seconds()}
	var lat []time.Duration
	var lastErr error
	for _, w := range ws {
		r.Requests += w.reqs
		r.Errors += w.errs
		lat = append(lat, w.lat...)
		if w.last != nil {
			lastErr = w.last
		}
	}
	if r.Requests == 0 {
		return r, errors.Join(errors.New("no request succeeded"), lastErr)
	}
	if lastErr != nil {
		fmt.Fprintln(os.Stderr, "busload: last error:", lastErr)
	}
	r.Messages = r.Requests * batch
	if pid > 0 && r.Messages > 0 {
		r.ServerCPUus = float64(cpu.Microseconds()) / float64(r.Messages)
		r.ServerCores = cpu.Seconds() / window.Seconds()
	}
	r.MsgRate = float64(r.Messages) / window.Seconds()
	r.ReqRate = float64(r.Requests) / window.Seconds()
	slices.Sort(lat)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	pct := func(p float64) time.Duration {
		i := int(float64(len(lat))*p/100+0.5) - 1
		return lat[min(max(i, 0), len(lat)-1)]
	}
	r.P50ms, r.P99ms, r.MaxMs = ms(pct(50)), ms(pct(99)), ms(lat[len(lat)-1])
	return r, nil
}
