package cli

import (
	"bytes"
	"context"
	"encoding/json"

	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"
	"golang.org/x/term"

	"github.com/junctionhq/junction/client"
	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/pipeline"
)

func pipelineCmd(stdout, stderr io.Writer) *cobra.Command {
	c := &cobra.Command{Use: "pipeline", Short: "Run pipelines, and test their processors"}
	c.AddCommand(pipelineRunCmd(stdout, stderr), pipelineTestCmd(stdout))
	return c
}

// isTerminal reports whether w is a terminal (for the progress bar).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func pipelineRunCmd(stdout, stderr io.Writer) *cobra.Command {
	var api apiFlags
	var every time.Duration
	c := &cobra.Command{
		Use:   "run NAME",
		Short: "Run a pipeline to its end, showing its progress, and print its summary",
		Long: `Run a pipeline on the node (resuming an interrupted run) and follow it
to its end. On a terminal a progress bar shows the rate, and the ETA when
the input's size is known; otherwise a progress line is printed every
--every. The summary is printed at the end; the exit status is 1 when
the run did not complete.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			cl := api.client()
			r, err := cl.StartPipelineRun(ctx, args[0], 0)
			if err != nil {
				return err
			}
			show := newProgress(stderr, isTerminal(stderr), every)
			for r.Status == "running" {
				show(r)
				if r, err = cl.GetPipelineRun(ctx, args[0], r.RunID, time.Second); err != nil {
					return err
				}
			}
			show(r)
			fmt.Fprintf(stdout, "run %s %s in %s: read %d, written %d, filtered %d, failed %d, dead-lettered %d (%.0f records/s)\n",
				r.RunID, r.Status, r.Duration, r.Read, r.Written, r.Filtered, r.Failed, r.DeadLettered, r.Rate)
			if r.Status != "completed" {
				return fmt.Errorf("run %s %s: %s", r.RunID, r.Status, r.Error)
			}
			return nil
		},
	}
	c.Flags().DurationVar(&every, "every", 2*time.Second, "interval of the progress lines when not on a terminal")
	api.register(c)
	return c
}

// newProgress returns a function that shows a run's progress: a bar on
// a terminal, else a line at most every interval.
func newProgress(w io.Writer, tty bool, every time.Duration) func(*client.PipelineRun) {
	if !tty {
		var last time.Time
		return func(r *client.PipelineRun) {
			if r.Status == "running" && time.Since(last) < every {
				return
			}
			last = time.Now()
			line := fmt.Sprintf("%s: read %d, written %d, failed %d", r.Status, r.Read, r.Written, r.Failed)
			if p := r.Progress; p != nil && p.Total > 0 {
				line += fmt.Sprintf(", %.1f%% of the input", 100*float64(p.Done)/float64(p.Total))
			}
			fmt.Fprintln(w, line)
		}
	}
	var bar *progressbar.ProgressBar
	return func(r *client.PipelineRun) {
		if bar == nil {
			max := int64(-1)
			desc := "records"
			if p := r.Progress; p != nil && p.Total > 0 {
				max, desc = p.Total, p.Unit
			}
			bar = progressbar.NewOptions64(max, progressbar.OptionSetWriter(w), progressbar.OptionSetDescription(desc),
				progressbar.OptionShowCount(), progressbar.OptionShowIts(), progressbar.OptionSetItsString("rec"),
				progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionClearOnFinish())
		}
		if p := r.Progress; p != nil && p.Total > 0 {
			_ = bar.Set64(p.Done)
		} else {
			_ = bar.Set64(r.Read)
		}
		if r.Status != "running" {
			_ = bar.Finish()
		}
	}
}

// pipelineTests is the file `junction pipeline test` reads.
type pipelineTests struct {
	// Config is the config file declaring the pipelines, relative to
	// the test file (default: the usual lookup).
	Config string          `yaml:"config"`
	Tests  []*pipelineTest `yaml:"tests"`
}

type pipelineTest struct {
	Name     string           `yaml:"name"`
	Pipeline string           `yaml:"pipeline"`
	Input    []map[string]any `yaml:"input"`
	// Output lists the records the pipeline's output receives, in order.
	Output []map[string]any `yaml:"output"`
	// Routes lists, for a switch's i-th output (from 1), its records.
	Routes map[int][]map[string]any `yaml:"routes"`
	// DeadLetters is how many records are refused.
	DeadLetters *int `yaml:"dead_letters"`
}

func pipelineTestCmd(stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "test FILE",
		Short: "Run a pipeline's processors over given records and compare with the expected records",
		Long: `Test pipelines in CI: FILE lists tests, each naming a pipeline, input
records and the records its output should receive, in order (and,
optionally, what each switch route receives and how many records are
dead-lettered). Only the processors run: no input, output or node is
needed (processors that need one, such as dedupe, cannot be tested
here). Exit status 1 when a test fails.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			var f pipelineTests
			dec := yaml.NewDecoder(bytes.NewReader(data))
			dec.KnownFields(true)
			if err := dec.Decode(&f); err != nil {
				return fmt.Errorf("%s: %v", args[0], err)
			}
			path := config.Locate("")
			if f.Config != "" {
				path = filepath.Join(filepath.Dir(args[0]), f.Config)
			}
			cfg, err := config.Load(path)
			if err != nil {
				return err
			}
			failed := 0
			env := &pipeline.Env{}
			for i, tc := range f.Tests {
				name := tc.Name
				if name == "" {
					name = fmt.Sprintf("test %d", i+1)
				}
				msg := runPipelineTest(cmd.Context(), env, cfg, tc)
				if msg == "" {
					fmt.Fprintf(stdout, "ok    %s\n", name)
					continue
				}
				failed++
				fmt.Fprintf(stdout, "FAIL  %s: %s\n", name, msg)
			}
			if failed > 0 {
				return fmt.Errorf("%d of %d tests failed", failed, len(f.Tests))
			}
			return nil
		},
	}
}

// runPipelineTest returns why tc fails, "" when it passes.
func runPipelineTest(ctx context.Context, env *pipeline.Env, cfg *config.Config, tc *pipelineTest) string {
	p := cfg.Pipelines[tc.Pipeline]
	if p == nil {
		return fmt.Sprintf("no pipeline %q in the config", tc.Pipeline)
	}
	res, err := pipeline.Process(ctx, env, p, tc.Input)
	if err != nil {
		return err.Error()
	}
	if m := compareRecords("output", normal(tc.Output), normal(res.Outputs[0])); m != "" {
		return m
	}
	for route, want := range tc.Routes {
		if m := compareRecords(fmt.Sprintf("route %d", route), normal(want), normal(res.Outputs[route])); m != "" {
			return m
		}
	}
	if tc.DeadLetters != nil && *tc.DeadLetters != len(res.Dead) {
		b, _ := json.Marshal(res.Dead)
		return fmt.Sprintf("%d records dead-lettered, want %d: %s", len(res.Dead), *tc.DeadLetters, b)
	}
	return ""
}

// normal makes records comparable: through JSON, as an output sees them.
func normal(recs []map[string]any) []any {
	b, _ := json.Marshal(recs)
	var out []any
	_ = json.Unmarshal(b, &out)
	return out
}

func compareRecords(what string, want, got []any) string {
	if len(want) == 0 && len(got) == 0 || reflect.DeepEqual(want, got) {
		return ""
	}
	for i := range max(len(want), len(got)) {
		var w, g any
		if i < len(want) {
			w = want[i]
		}
		if i < len(got) {
			g = got[i]
		}
		if !reflect.DeepEqual(w, g) {
			wb, _ := json.Marshal(w)
			gb, _ := json.Marshal(g)
			return fmt.Sprintf("%s record %d: got %s, want %s (%d records, want %d)", what, i+1, gb, wb, len(got), len(want))
		}
	}
	return what + " differs"
}
