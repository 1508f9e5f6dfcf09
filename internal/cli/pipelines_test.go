package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/internal/testutil"
)

const pipelineConfig = `
pipelines:
  numbers:
    input: { generate: { count: 5000, fields: { n: input.n, even: input.n % 2 == 0 } } }
    processors:
      - filter: row.even
      - map: { n: row.n, half: double(row.n) / 2.0 }
    output: { jsonl: { path: OUT } }
`

func TestPipelineRunCommand(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out.jsonl")
	parsed, err := config.Parse("t.yaml", []byte(strings.Replace(pipelineConfig, "OUT", out, 1)), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	cfg := testutil.Config(t, testutil.Embedded)
	cfg.Pipelines = parsed.Pipelines
	n := testutil.Start(t, cfg)
	code, stdout, stderr := run(t, "", "pipeline", "run", "--api", n.URL, "--every", "0s", "numbers")
	if code != 0 || !strings.Contains(stdout, "completed") || !strings.Contains(stdout, "read 5000, written 2500, filtered 2500, failed 0") {
		t.Fatalf("pipeline run: %d %q %q", code, stdout, stderr)
	}
	if !strings.Contains(stderr, "completed: read 5000, written 2500, failed 0, 100.0% of the input") {
		t.Errorf("progress lines: %q", stderr)
	}
	b, _ := os.ReadFile(out)
	if lines := strings.Count(string(b), "\n"); lines != 2500 || !strings.Contains(string(b), `{"half":1,"n":2}`) {
		t.Errorf("output: %d lines, %.80q", lines, b)
	}
	code, _, stderr = run(t, "", "pipeline", "run", "--api", n.URL, "nope")
	if code == 0 || !strings.Contains(stderr, "pipeline_not_found") {
		t.Errorf("unknown pipeline: %d %q", code, stderr)
	}
}

func TestPipelineTestCommand(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "junction.yaml")
	if err := os.WriteFile(cfgPath, []byte(strings.Replace(pipelineConfig, "OUT", filepath.Join(dir, "o.jsonl"), 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := `config: junction.yaml
tests:
  - name: keeps even numbers, halved
    pipeline: numbers
    input: [{ n: 1, even: false }, { n: 4, even: true }, { n: 6, even: true }]
    output: [{ n: 4, half: 2 }, { n: 6, half: 3 }]
    dead_letters: 0
  - name: a wrong expectation
    pipeline: numbers
    input: [{ n: 4, even: true }]
    output: [{ n: 4, half: 3 }]
  - name: a refused record
    pipeline: numbers
    input: [{ n: 4 }]
    dead_letters: 1
`
	path := filepath.Join(dir, "numbers_test.yaml")
	if err := os.WriteFile(path, []byte(tests), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := run(t, "", "pipeline", "test", path)
	want := []string{"ok    keeps even numbers, halved", `FAIL  a wrong expectation: output record 1: got {"half":2,"n":4}, want {"half":3,"n":4}`, "ok    a refused record"}
	for _, w := range want {
		if !strings.Contains(stdout, w) {
			t.Errorf("missing %q in:\n%s", w, stdout)
		}
	}
	if code != 1 || !strings.Contains(stderr, "1 of 3 tests failed") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}
