package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// reportMarkdown reads the RESULT lines of one or more runs and prints
// them as a Markdown table: one row per phase of each run (label), with
// the ratio of each phase's rate to the direct phase of the same run.
func reportMarkdown(in io.Reader, out io.Writer) error {
	var rs []Result
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "RESULT workflow ")
		if !ok {
			continue
		}
		var r Result
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			return fmt.Errorf("%q: %w", line, err)
		}
		rs = append(rs, r)
	}
	if err := sc.Err(); err != nil {
		return err
	}
	direct := map[string]float64{}
	for _, r := range rs {
		if r.Phase == "direct" {
			direct[r.Label] = r.Rate
		}
	}
	fmt.Fprintln(out, "| run | phase | concurrency | ops/s | p50 ms | p99 ms | max ms | recorded p50 ms | recorded p99 ms | CPU µs/op | service CPU µs/op | other work, cores | failed | ratio to direct |")
	fmt.Fprintln(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range rs {
		ratio := ""
		if d := direct[r.Label]; d > 0 && r.Phase != "direct" {
			ratio = fmt.Sprintf("%.3fx", r.Rate/d)
		}
		fmt.Fprintf(out, "| %s | %s | %d | %.0f | %.2f | %.2f | %.2f | %s | %s | %.0f | %.0f | %.2f | %d | %s |\n",
			r.Label, r.Phase, r.Concurrency, r.Rate, r.P50ms, r.P99ms, r.Maxms, opt(r.RecordedP50ms), opt(r.RecordedP99ms), r.CPUus, r.ServiceCPUus, r.OtherCores, r.Failed, ratio)
	}
	return nil
}
