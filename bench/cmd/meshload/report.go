package main

import (
	"cmp"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

// benchmark is what the report knows of the paths of one script: how
// they are labelled and ordered, and which targets they are held to. The
// measurements are the same for every script.
type benchmark struct {
	// labels describe the paths, in the tables' order.
	labels []pathLabel
	// targets picks the targets out of the rows; groups has every run by
	// mode, load and path, for targets that pair two paths by round.
	targets func(rows []Row, groups map[runKey][]Result) []Target
	// pathColumn heads the targets table's column of paths.
	pathColumn string
}

type pathLabel struct{ path, label string }

// runKey is one path under one load: the runs of it, one per round, make
// one row.
type runKey struct{ mode, load, path string }

var benchmarks = map[string]benchmark{
	// bench/run-mesh.sh (docs/PERFORMANCE.md, "Service mesh").
	"mesh": {
		labels: []pathLabel{
			{"direct", "(a) client → backend"},
			{"proxy", "reference: client → bare httputil.ReverseProxy → backend"},
			{"invoke", "(b) client → node A /v1/invoke → backend"},
			{"sidecar", "(c) client → node C /v1/invoke → mTLS → sidecar S → backend"},
		},
		targets:    meshTargets,
		pathColumn: "path",
	},
	// bench/run-gateway.sh (docs/PERFORMANCE.md, "API gateway").
	"gateway": {
		labels: []pathLabel{
			{"direct", "direct: client → backend"},
			{"plain", "gateway plain: client → junction gateway → backend"},
			{"full", "gateway full: + JWT, rate limit, access log"},
			{"nginx", "nginx: client → nginx → backend"},
			{"proxy", "reference: client → bare httputil.ReverseProxy → backend"},
		},
		targets:    gatewayTargets,
		pathColumn: "paths (ratio of req/s)",
	},
}

func (b benchmark) label(name string) string {
	for _, l := range b.labels {
		if l.path == name {
			return l.label
		}
	}
	return name
}

// pathOrder puts the known paths in their order, then any other by name.
func (b benchmark) pathOrder(x, y string) int {
	rank := func(n string) int {
		for i, l := range b.labels {
			if l.path == n {
				return i
			}
		}
		return len(b.labels)
	}
	return cmp.Or(cmp.Compare(rank(x), rank(y)), strings.Compare(x, y))
}

// Targets of the service mesh.
const (
	meshAddedP50ms = 0.3
	meshAddedP99ms = 1.0
	meshRatio      = 0.6
)

// meshTargetPaths are the paths through /v1/invoke, which the mesh's
// targets apply to.
var meshTargetPaths = map[string]bool{"invoke": true, "sidecar": true}

// meshTargets holds each path through /v1/invoke to its added latency at
// the fixed rate and its throughput against the baseline at maximum.
func meshTargets(rows []Row, _ map[runKey][]Result) []Target {
	var ts []Target
	for _, row := range rows {
		switch {
		case !meshTargetPaths[row.Path]:
		case row.Mode == "rate" && row.AddedP50ms != nil:
			ts = append(ts,
				Target{Target: fmt.Sprintf("added p50 ≤ %.1f ms", meshAddedP50ms), Path: row.Path, Load: row.Load,
					Measured: *row.AddedP50ms, Limit: meshAddedP50ms, Met: *row.AddedP50ms <= meshAddedP50ms},
				Target{Target: fmt.Sprintf("added p99 ≤ %.0f ms", meshAddedP99ms), Path: row.Path, Load: row.Load,
					Measured: *row.AddedP99ms, Limit: meshAddedP99ms, Met: *row.AddedP99ms <= meshAddedP99ms})
		case row.Mode == "max" && row.Ratio != nil:
			ts = append(ts, Target{Target: fmt.Sprintf("throughput ≥ %.1fx direct", meshRatio), Path: row.Path, Load: row.Load,
				Measured: *row.Ratio, Limit: meshRatio, Met: *row.Ratio >= meshRatio})
		}
	}
	return ts
}

// Targets of the gateway, all at maximum throughput, each a ratio of two
// paths' rates paired by round: not every one is against the baseline.
var gatewayRatios = []struct {
	name     string
	num, den string
	limit    float64
}{
	{"plain gateway ≥ 0.6x direct", "plain", "direct", 0.6},
	{"plain gateway ≥ 1.0x nginx", "plain", "nginx", 1.0},
	{"full chain ≥ 0.75x plain gateway", "full", "plain", 0.75},
}

func gatewayTargets(rows []Row, groups map[runKey][]Result) []Target {
	var ts []Target
	for _, row := range rows {
		if row.Mode != "max" || row.Path != "direct" {
			continue
		}
		for _, t := range gatewayRatios {
			num, den := groups[runKey{row.Mode, row.Load, t.num}], groups[runKey{row.Mode, row.Load, t.den}]
			byRound := map[int]Result{}
			for _, d := range den {
				byRound[d.Round] = d
			}
			var ratio []float64
			for _, r := range num {
				if d, ok := byRound[r.Round]; ok && d.RPS > 0 {
					ratio = append(ratio, r.RPS/d.RPS)
				}
			}
			if len(ratio) == 0 {
				continue
			}
			m := median(ratio)
			ts = append(ts, Target{Target: t.name, Path: t.num + "/" + t.den, Load: row.Load,
				Measured: m, Limit: t.limit, Met: m >= t.limit})
		}
	}
	return ts
}

// Row is one path under one load, the median of its rounds.
type Row struct {
	Path   string  `json:"path"`
	Label  string  `json:"label"`
	Mode   string  `json:"mode"`
	Load   string  `json:"load"`
	Rounds int     `json:"rounds"`
	RPS    float64 `json:"rps"`
	Errors int     `json:"errors"` // summed over rounds
	P50ms  float64 `json:"p50_ms"`
	P90ms  float64 `json:"p90_ms"`
	P99ms  float64 `json:"p99_ms"`
	P999ms float64 `json:"p999_ms"`
	MaxMs  float64 `json:"max_ms"`
	LagP50 float64 `json:"lag_p50_ms,omitempty"`
	LagP99 float64 `json:"lag_p99_ms,omitempty"`
	// AddedP50ms and AddedP99ms are the path's latency minus the
	// baseline's, per round, then the median over rounds.
	AddedP50ms *float64 `json:"added_p50_ms,omitempty"`
	AddedP99ms *float64 `json:"added_p99_ms,omitempty"`
	// Ratio is the path's rate over the baseline's (max throughput).
	Ratio      *float64           `json:"ratio,omitempty"`
	CPUus      map[string]float64 `json:"cpu_us_per_req,omitempty"`
	CPUCores   map[string]float64 `json:"cpu_cores,omitempty"`
	OtherCores float64            `json:"other_cores"`
}

// Target is one target with its measured value.
type Target struct {
	Target   string  `json:"target"`
	Path     string  `json:"path"`
	Load     string  `json:"load"`
	Measured float64 `json:"measured"`
	Limit    float64 `json:"limit"`
	Met      bool    `json:"met"`
}

// Summary is what report writes with -json.
type Summary struct {
	Rows    []Row    `json:"rows"`
	Targets []Target `json:"targets"`
}

func reportCmd(args []string) error {
	fs := flag.NewFlagSet("report", flag.ExitOnError)
	dir := fs.String("dir", "", "directory of run-*.json results")
	baseline := fs.String("baseline", "direct", "the path others are compared with")
	out := fs.String("json", "", "also write the summary as JSON here")
	targets := fs.String("targets", "mesh", "whose paths and targets: mesh (bench/run-mesh.sh) or gateway (bench/run-gateway.sh)")
	_ = fs.Parse(args)
	b, ok := benchmarks[*targets]
	if *dir == "" || !ok {
		fs.Usage()
		os.Exit(2)
	}
	rs, err := reportFiles(*dir)
	if err != nil {
		return err
	}
	s := b.summarize(rs, *baseline)
	printTables(os.Stdout, s, *baseline, b.pathColumn)
	if *out != "" {
		b, _ := json.MarshalIndent(s, "", "  ")
		return os.WriteFile(*out, append(b, '\n'), 0o644)
	}
	return nil
}

func loadOf(r Result) string {
	if r.Mode == "rate" {
		return fmt.Sprintf("%.0f req/s", r.TargetRPS)
	}
	return fmt.Sprintf("max, %d conns", r.Conns)
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// summarize is the mesh's summary.
func summarize(rs []Result, baseline string) Summary {
	return benchmarks["mesh"].summarize(rs, baseline)
}

func (b benchmark) summarize(rs []Result, baseline string) Summary {
	groups := map[runKey][]Result{}
	var keys []runKey
	for _, r := range rs {
		k := runKey{r.Mode, loadOf(r), r.Name}
		if _, ok := groups[k]; !ok {
			keys = append(keys, k)
		}
		groups[k] = append(groups[k], r)
	}
	slices.SortFunc(keys, func(x, y runKey) int {
		// Fixed rate first, then maximum throughput by connections.
		return cmp.Or(cmp.Compare(y.mode, x.mode), cmp.Compare(len(x.load), len(y.load)),
			strings.Compare(x.load, y.load), b.pathOrder(x.path, y.path))
	})
	var s Summary
	for _, k := range keys {
		g := groups[k]
		row := Row{Path: k.path, Label: b.label(k.path), Mode: k.mode, Load: k.load, Rounds: len(g),
			CPUus: map[string]float64{}, CPUCores: map[string]float64{}}
		col := func(f func(Result) float64) float64 {
			var xs []float64
			for _, r := range g {
				xs = append(xs, f(r))
			}
			return median(xs)
		}
		row.RPS = col(func(r Result) float64 { return r.RPS })
		row.P50ms = col(func(r Result) float64 { return r.P50ms })
		row.P90ms = col(func(r Result) float64 { return r.P90ms })
		row.P99ms = col(func(r Result) float64 { return r.P99ms })
		row.P999ms = col(func(r Result) float64 { return r.P999ms })
		row.MaxMs = col(func(r Result) float64 { return r.MaxMs })
		row.LagP50 = col(func(r Result) float64 { return r.LagP50ms })
		row.LagP99 = col(func(r Result) float64 { return r.LagP99ms })
		row.OtherCores = col(func(r Result) float64 { return r.OtherCores })
		for _, r := range g {
			row.Errors += r.Errors
		}
		cpuNames := map[string]bool{}
		for _, r := range g {
			for _, c := range r.CPU {
				cpuNames[c.Name] = true
			}
		}
		for n := range cpuNames {
			find := func(r Result) (ProcCPU, bool) {
				for _, c := range r.CPU {
					if c.Name == n {
						return c, true
					}
				}
				return ProcCPU{}, false
			}
			var us, cores []float64
			for _, r := range g {
				if c, ok := find(r); ok {
					us, cores = append(us, c.USPerReq), append(cores, c.Cores)
				}
			}
			row.CPUus[n], row.CPUCores[n] = median(us), median(cores)
		}
		if base, ok := groups[runKey{k.mode, k.load, baseline}]; ok && k.path != baseline {
			byRound := map[int]Result{}
			for _, r := range base {
				byRound[r.Round] = r
			}
			var dp50, dp99, ratio []float64
			for _, r := range g {
				b, ok := byRound[r.Round]
				if !ok {
					continue
				}
				dp50 = append(dp50, r.P50ms-b.P50ms)
				dp99 = append(dp99, r.P99ms-b.P99ms)
				if b.RPS > 0 {
					ratio = append(ratio, r.RPS/b.RPS)
				}
			}
			if len(dp50) > 0 {
				a50, a99 := median(dp50), median(dp99)
				row.AddedP50ms, row.AddedP99ms = &a50, &a99
			}
			if len(ratio) > 0 {
				x := median(ratio)
				row.Ratio = &x
			}
		}
		s.Rows = append(s.Rows, row)
	}
	s.Targets = b.targets(s.Rows, groups)
	return s
}

func optMs(p *float64) string {
	if p == nil {
		return ""
	}
	return fmt.Sprintf("%+.3f", *p)
}

func cpuCell(r Row) string {
	names := make([]string, 0, len(r.CPUus))
	for n := range r.CPUus {
		names = append(names, n)
	}
	slices.SortFunc(names, func(a, b string) int {
		// The driver last: it is not part of the path. Gateway results
		// from before meshload drove that benchmark too name it gwload.
		last := func(n string) int {
			if n == "meshload" || n == "gwload" {
				return 1
			}
			return 0
		}
		return cmp.Or(cmp.Compare(last(a), last(b)), strings.Compare(a, b))
	})
	var parts []string
	for _, n := range names {
		parts = append(parts, fmt.Sprintf("%s %.0f", n, r.CPUus[n]))
	}
	return strings.Join(parts, ", ")
}

func printTables(w io.Writer, s Summary, baseline, pathColumn string) {
	rounds := 0
	for _, r := range s.Rows {
		rounds = max(rounds, r.Rounds)
	}
	if rounds > 1 {
		fmt.Fprintf(w, "Medians of %d rounds; added latency and ratio are per round (paired with %s), then the median.\n\n", rounds, baseline)
	}
	fmt.Fprintln(w, "Fixed rate (open loop; latency from the scheduled send time), ms:")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| path | load | req/s | p50 | p90 | p99 | p99.9 | max | errors | added p50 | added p99 | CPU us/req | driver lag p50 / p99 |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")
	for _, r := range s.Rows {
		if r.Mode != "rate" {
			continue
		}
		fmt.Fprintf(w, "| %s | %s | %.0f | %.3f | %.3f | %.3f | %.3f | %.2f | %d | %s | %s | %s | %.3f / %.3f |\n",
			r.Label, r.Load, r.RPS, r.P50ms, r.P90ms, r.P99ms, r.P999ms, r.MaxMs, r.Errors,
			optMs(r.AddedP50ms), optMs(r.AddedP99ms), cpuCell(r), r.LagP50, r.LagP99)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Maximum throughput (closed loop):")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| path | load | req/s | ratio | p50 ms | p99 ms | errors | CPU us/req | other work, cores |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---|---:|")
	for _, r := range s.Rows {
		if r.Mode != "max" {
			continue
		}
		ratio := ""
		if r.Ratio != nil {
			ratio = fmt.Sprintf("%.2fx", *r.Ratio)
		}
		fmt.Fprintf(w, "| %s | %s | %.0f | %s | %.3f | %.3f | %d | %s | %.2f |\n",
			r.Label, r.Load, r.RPS, ratio, r.P50ms, r.P99ms, r.Errors, cpuCell(r), r.OtherCores)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Targets:")
	fmt.Fprintln(w)
	fmt.Fprintf(w, "| target | %s | load | measured | met? |\n", pathColumn)
	fmt.Fprintln(w, "|---|---|---|---:|---|")
	for _, t := range s.Targets {
		met := "yes"
		if !t.Met {
			if strings.Contains(t.Target, "≥") {
				met = fmt.Sprintf("**no** (%.2fx short)", t.Limit-t.Measured)
			} else {
				met = fmt.Sprintf("**no** (by %.3f ms)", t.Measured-t.Limit)
			}
		}
		unit := " ms"
		val := fmt.Sprintf("%+.3f", t.Measured)
		if strings.Contains(t.Target, "≥") {
			unit, val = "x", fmt.Sprintf("%.2f", t.Measured)
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s%s | %s |\n", t.Target, t.Path, t.Load, val, unit, met)
	}
}
