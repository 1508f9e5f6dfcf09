// Command benchreport reads the output of bench/run-bus.sh's measurements
// (go test -bench lines and RESULT lines) on standard input and prints one
// Markdown table per measurement, each Junction figure beside its
// baseline, with the ratio and the target. Repeated benchmark lines
// (-count) are reduced to their median.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
)

type bench map[string][]float64 // unit -> one value per run

type httpResult struct {
	Name        string  `json:"name"`
	Conns       int     `json:"conns"`
	Batch       int     `json:"batch"`
	MsgRate     float64 `json:"msg_per_s"`
	P50ms       float64 `json:"p50_ms"`
	P99ms       float64 `json:"p99_ms"`
	MaxMs       float64 `json:"max_ms"`
	ServerCPUus float64 `json:"server_cpu_us_per_msg"`
	ServerCores float64 `json:"server_cores"`
}

type e2eResult struct {
	Side   string  `json:"side"`
	Phase  string  `json:"phase"`
	Rate   float64 `json:"rate"`
	Target float64 `json:"target"`
	P50ms  float64 `json:"p50_ms"`
	P99ms  float64 `json:"p99_ms"`
	MaxMs  float64 `json:"max_ms"`
	CPUus  float64 `json:"cpu_us_per_msg"`
}

func main() {
	benches, https, e2es, err := parse(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchreport:", err)
		os.Exit(1)
	}
	publishTable(benches)
	httpTable(https)
	e2eTable(e2es)
}

func parse(r io.Reader) (map[string]bench, map[string]httpResult, map[string]e2eResult, error) {
	benches := map[string]bench{}
	https := map[string]httpResult{}
	e2es := map[string]e2eResult{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "Benchmark"):
			f := strings.Fields(line)
			if len(f) < 4 {
				continue
			}
			name := f[0]
			if i := strings.LastIndexByte(name, '-'); i > 0 {
				name = name[:i] // drop -GOMAXPROCS
			}
			b := benches[name]
			if b == nil {
				b = bench{}
				benches[name] = b
			}
			for i := 2; i+1 < len(f); i += 2 {
				v, err := strconv.ParseFloat(f[i], 64)
				if err == nil {
					b[f[i+1]] = append(b[f[i+1]], v)
				}
			}
		case strings.HasPrefix(line, "RESULT http "):
			var h httpResult
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "RESULT http ")), &h); err != nil {
				return nil, nil, nil, err
			}
			https[h.Name] = h
		case strings.HasPrefix(line, "RESULT e2e "):
			var e e2eResult
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "RESULT e2e ")), &e); err != nil {
				return nil, nil, nil, err
			}
			e2es[e.Side+"/"+e.Phase] = e
		}
	}
	return benches, https, e2es, sc.Err()
}

func median(vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func ratio(a, b float64) string {
	if b == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2fx", a/b)
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}

func publishTable(bs map[string]bench) {
	if len(bs) == 0 {
		return
	}
	runs := len(bs["BenchmarkPublish/junction/sync"]["msg/s"])
	fmt.Printf("\n1. Publish through the Go API vs raw JetStream, same embedded server, 128-byte payloads (median of %d runs)\n\n", runs)
	fmt.Println("| Junction | msg/s | CPU us/msg | allocs/msg | baseline | msg/s | CPU us/msg | allocs/msg | ratio | target |")
	fmt.Println("|---|---:|---:|---:|---|---:|---:|---:|---:|---|")
	raw := map[string]string{
		"raw/sync":     "js.PublishMsg sync",
		"raw/async100": "js.PublishMsgAsync, 100 then wait",
		"raw/async":    "js.PublishMsgAsync, pipelined",
	}
	rows := []struct{ set, j, label, r, target string }{
		{"BenchmarkPublish", "junction/sync", "Bus.Publish, 1 message", "raw/sync", ""},
		{"BenchmarkPublish", "junction/batch100", "Bus.Publish, batches of 100", "raw/async100", ""},
		{"BenchmarkPublish", "junction/batch100", "Bus.Publish, batches of 100", "raw/async", ">= 0.80x"},
		{"BenchmarkPublish", "junction/batch100x4", "Bus.Publish, batches of 100, 4 callers", "raw/async", ""},
		{"BenchmarkPublishTraced", "junction/sync", "spans recorded: Bus.Publish, 1 message", "raw/sync", ""},
		{"BenchmarkPublishTraced", "junction/batch100", "spans recorded: Bus.Publish, batches of 100", "raw/async", ""},
	}
	for _, row := range rows {
		j, r := bs[row.set+"/"+row.j], bs[row.set+"/"+row.r]
		if j == nil || r == nil {
			continue
		}
		jr, rr := median(j["msg/s"]), median(r["msg/s"])
		target := ""
		if row.target != "" {
			target = row.target + " " + verdict(jr >= 0.8*rr)
		}
		fmt.Printf("| %s | %.0f | %.1f | %.0f | %s | %.0f | %.1f | %.0f | %s | %s |\n",
			row.label, jr, median(j["cpu-ns/msg"])/1000, median(j["allocs/op"]),
			raw[row.r], rr, median(r["cpu-ns/msg"])/1000, median(r["allocs/op"]), ratio(jr, rr), target)
	}
}

func httpTable(hs map[string]httpResult) {
	if len(hs) == 0 {
		return
	}
	fmt.Printf("\n2. HTTP publish from a second process on loopback: junction serve vs a net/http server answering 202\n\n")
	fmt.Println("| load | conns | server | msg/s | p50 ms | p99 ms | max ms | server CPU us/msg | server cores | ratio | target |")
	fmt.Println("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|")
	for _, m := range []struct {
		mode string
		min  float64
	}{{"single", 10000}, {"batch", 100000}} {
		load := "1 message per request (binary mode)"
		if m.mode == "batch" {
			load = "100 messages per request (batch JSON)"
		}
		n := hs["nullhttp-"+m.mode]
		for _, srv := range []struct{ name, label string }{
			{"junction-", "junction serve"},
			{"nullhttp-", "nullhttp (baseline)"},
		} {
			h, ok := hs[srv.name+m.mode]
			if !ok {
				continue
			}
			r, target := "", ""
			if srv.name != "nullhttp-" {
				r = ratio(h.MsgRate, n.MsgRate)
			}
			if srv.name == "junction-" {
				target = fmt.Sprintf(">= %.0f msg/s %s", m.min, verdict(h.MsgRate >= m.min))
			}
			fmt.Printf("| %s | %d | %s | %.0f | %.2f | %.2f | %.2f | %.1f | %.2f | %s | %s |\n",
				load, h.Conns, srv.label, h.MsgRate, h.P50ms, h.P99ms, h.MaxMs, h.ServerCPUus, h.ServerCores, r, target)
		}
	}
}

func e2eTable(es map[string]e2eResult) {
	if len(es) == 0 {
		return
	}
	fmt.Printf("\n3. Publish to push delivery, end to end, to a local webhook\n\n")
	fmt.Println("| path | max msg/s | CPU us/msg | latency at msg/s | p50 ms | p99 ms | max ms | ratio (max) | target |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|---:|---|")
	for _, set := range []struct{ pfx, note string }{{"", ""}, {"traced-", "spans recorded (diagnostic): "}} {
		jm, jok := es[set.pfx+"junction/max"]
		jl := es[set.pfx+"junction/latency"]
		rm, rok := es[set.pfx+"raw/max"]
		rl := es[set.pfx+"raw/latency"]
		if jok {
			target := ""
			if set.pfx == "" {
				target = fmt.Sprintf(">= 8000 msg/s %s; p99 < 20 ms %s", verdict(jm.Rate >= 8000), verdict(jl.P99ms > 0 && jl.P99ms < 20))
			}
			fmt.Printf("| %sJunction push subscription | %.0f | %.1f | %.0f | %.2f | %.2f | %.2f | %s | %s |\n",
				set.note, jm.Rate, jm.CPUus, jl.Target, jl.P50ms, jl.P99ms, jl.MaxMs, ratio(jm.Rate, rm.Rate), target)
		}
		if rok {
			fmt.Printf("| %sraw: pull consumer + hand-written POST (baseline) | %.0f | %.1f | %.0f | %.2f | %.2f | %.2f | | |\n",
				set.note, rm.Rate, rm.CPUus, rl.Target, rl.P50ms, rl.P99ms, rl.MaxMs)
		}
	}
}
