package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// reportMarkdown reads the RESULT lines of one or more runs and prints
// them as a Markdown table: one row per phase of each round (and label),
// the hand-written program beside the pipeline, and the ratio of the
// pipeline's rate to the hand-written program's.
func reportMarkdown(in io.Reader, out io.Writer) error {
	type key struct {
		label, phase string
		round        int
	}
	var order []key
	sides := map[key]map[string]Result{}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "RESULT pipeline ")
		if !ok {
			continue
		}
		var r Result
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			return fmt.Errorf("%q: %w", line, err)
		}
		k := key{r.Label, r.Phase, r.Round}
		if sides[k] == nil {
			sides[k] = map[string]Result{}
			order = append(order, k)
		}
		sides[k][r.Side] = r
	}
	if err := sc.Err(); err != nil {
		return err
	}
	fmt.Fprintln(out, "| run | round | phase | records | batch | direct rec/s | pipeline rec/s | ratio | direct s | pipeline s | direct CPU µs/rec | pipeline CPU µs/rec |")
	fmt.Fprintln(out, "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, k := range order {
		d, p := sides[k]["direct"], sides[k]["pipeline"]
		ratio := ""
		if d.Rate > 0 && p.Rate > 0 {
			ratio = fmt.Sprintf("%.2fx", p.Rate/d.Rate)
		}
		fmt.Fprintf(out, "| %s | %d | %s | %d | %d | %.0f | %.0f | %s | %.2f | %.2f | %.2f | %.2f |\n",
			k.label, k.round, k.phase, max(d.Records, p.Records), max(d.Batch, p.Batch), d.Rate, p.Rate, ratio, d.Seconds, p.Seconds, d.CPUus, p.CPUus)
	}
	return nil
}
