package cli

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/junctionhq/junction"
)

// mainResult is what one cli.Main call did.
type mainResult struct {
	code           int
	stdout, stderr string
}

func callMain(t *testing.T, args ...string) mainResult {
	t.Helper()
	// A panic would end the whole test binary and hide the other cases.
	defer func() {
		if p := recover(); p != nil {
			t.Fatalf("junction %s panicked instead of failing with one line: %v", strings.Join(args, " "), p)
		}
	}()
	var out, errb bytes.Buffer
	code := Main(args, strings.NewReader(""), &out, &errb)
	return mainResult{code, out.String(), errb.String()}
}

// isolate runs the test in an empty directory with JUNCTION_CONFIG unset,
// so that config lookup sees only what the test sets up.
func isolate(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	t.Chdir(dir)
	t.Setenv("JUNCTION_CONFIG", "")
	return dir
}

func writeFile(t *testing.T, path, text string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

const goodConfig = `api:
  listen: 127.0.0.1:4100
topics:
  orders: { max_age: 24h }
subscriptions:
  billing:
    topic: orders
    filter: event.type == "order.created"
    push: { url: http://127.0.0.1:7002/events }
`

// badConfig has three validation errors, at 2:10, 3:11 and 5:14.
const badConfig = `log:
  level: loud
  format: xml
bus:
  max_batch: 0
`

// checkOneLine asserts the shape of every failure outside validate: exit
// status 1, nothing on stdout, one line on stderr starting "junction: ".
func checkOneLine(t *testing.T, r mainResult) string {
	t.Helper()
	if r.code != 1 {
		t.Errorf("exit status %d, want 1", r.code)
	}
	if r.stdout != "" {
		t.Errorf("stdout = %q, want nothing", r.stdout)
	}
	if !strings.HasPrefix(r.stderr, "junction: ") || !strings.HasSuffix(r.stderr, "\n") || strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("stderr = %q, want one line starting \"junction: \"", r.stderr)
	}
	return strings.TrimSuffix(r.stderr, "\n")
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string) []string // returns the arguments
		code  int
		// For exit 0, the exact stdout; else each stderr line in order:
		// a position (file:line:col) or, for a failure without one, a
		// prefix of the line.
		stdout string
		errors []string
	}{
		{
			name: "good file with -c",
			setup: func(t *testing.T, dir string) []string {
				return []string{"validate", "-c", writeFile(t, filepath.Join(dir, "good.yaml"), goodConfig)}
			},
			stdout: "DIR/good.yaml: ok\n",
		},
		{
			name: "good file from JUNCTION_CONFIG",
			setup: func(t *testing.T, dir string) []string {
				t.Setenv("JUNCTION_CONFIG", writeFile(t, filepath.Join(dir, "env.yaml"), goodConfig))
				return []string{"validate"}
			},
			stdout: "DIR/env.yaml: ok\n",
		},
		{
			name: "good ./junction.yaml",
			setup: func(t *testing.T, dir string) []string {
				writeFile(t, filepath.Join(dir, "junction.yaml"), goodConfig)
				return []string{"validate"}
			},
			stdout: "junction.yaml: ok\n",
		},
		{
			name: "empty file is the defaults",
			setup: func(t *testing.T, dir string) []string {
				return []string{"validate", "-c", writeFile(t, filepath.Join(dir, "empty.yaml"), "")}
			},
			stdout: "DIR/empty.yaml: ok\n",
		},
		{
			name: "every error of a bad file",
			setup: func(t *testing.T, dir string) []string {
				return []string{"validate", "-c", writeFile(t, filepath.Join(dir, "bad.yaml"), badConfig)}
			},
			code:   1,
			errors: []string{"DIR/bad.yaml:2:10: ", "DIR/bad.yaml:3:11: ", "DIR/bad.yaml:5:14: "},
		},
		{
			name: "-c wins over JUNCTION_CONFIG",
			setup: func(t *testing.T, dir string) []string {
				t.Setenv("JUNCTION_CONFIG", writeFile(t, filepath.Join(dir, "good.yaml"), goodConfig))
				return []string{"validate", "-c", writeFile(t, filepath.Join(dir, "bad.yaml"), badConfig)}
			},
			code:   1,
			errors: []string{"DIR/bad.yaml:2:10: ", "DIR/bad.yaml:3:11: ", "DIR/bad.yaml:5:14: "},
		},
		{
			name: "YAML syntax error",
			setup: func(t *testing.T, dir string) []string {
				return []string{"validate", "-c", writeFile(t, filepath.Join(dir, "syntax.yaml"), "api:\n  listen: x\n token: y\n")}
			},
			code:   1,
			errors: []string{"DIR/syntax.yaml:3:2: YAML syntax: "},
		},
		{
			name: "missing file",
			setup: func(t *testing.T, dir string) []string {
				return []string{"validate", "-c", filepath.Join(dir, "missing.yaml")}
			},
			code:   1,
			errors: []string{"junction: reading config: open DIR/missing.yaml: no such file or directory"},
		},
		{
			name:   "no config anywhere",
			setup:  func(*testing.T, string) []string { return []string{"validate"} },
			code:   1,
			errors: []string{"junction: no config file: pass -c FILE or set JUNCTION_CONFIG"},
		},
	}
	pos := regexp.MustCompile(`^.+:[0-9]+:[0-9]+: .`)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := isolate(t)
			fill := func(s string) string { return strings.ReplaceAll(s, "DIR", dir) }
			r := callMain(t, tt.setup(t, dir)...)
			if r.code != tt.code {
				t.Errorf("exit status %d, want %d (stderr %q)", r.code, tt.code, r.stderr)
			}
			if tt.code == 0 {
				if r.stdout != fill(tt.stdout) || r.stderr != "" {
					t.Errorf("stdout %q, stderr %q; want stdout %q and no stderr", r.stdout, r.stderr, fill(tt.stdout))
				}
				return
			}
			if r.stdout != "" {
				t.Errorf("stdout = %q, want nothing", r.stdout)
			}
			lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
			if !strings.HasSuffix(r.stderr, "\n") || len(lines) != len(tt.errors) {
				t.Fatalf("stderr has %d lines, want %d:\n%s", len(lines), len(tt.errors), r.stderr)
			}
			for i, l := range lines {
				want := fill(tt.errors[i])
				if !strings.HasPrefix(l, want) {
					t.Errorf("line %d = %q, want it to start with %q", i+1, l, want)
				}
				if !strings.HasPrefix(want, "junction: ") && !pos.MatchString(l) {
					t.Errorf("line %d = %q, want file:line:col: message", i+1, l)
				}
			}
		})
	}
}

func TestVersion(t *testing.T) {
	r := callMain(t, "version")
	want := "junction " + junction.BuildVersion() + "\n"
	if r.code != 0 || r.stdout != want || r.stderr != "" {
		t.Errorf("version: %+v; want exit 0 and stdout %q", r, want)
	}
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string // in the stderr line
	}{
		{"unknown command", []string{"frobnicate"}, `unknown command "frobnicate"`},
		{"unknown flag", []string{"serve", "--frobnicate"}, "unknown flag: --frobnicate"},
		{"flag without its value", []string{"validate", "-c"}, "flag needs an argument"},
		{"argument where none is taken", []string{"version", "extra"}, `unknown command "extra"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			isolate(t)
			line := checkOneLine(t, callMain(t, tt.args...))
			if !strings.Contains(line, tt.want) {
				t.Errorf("stderr %q does not mention %q", line, tt.want)
			}
		})
	}
}

func TestServeFailsWithOneLine(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	addr := taken.Addr().String()

	tests := []struct {
		name string
		args func(t *testing.T, dir string) []string
		want []string // each in the stderr line
	}{
		{
			name: "bad config",
			args: func(t *testing.T, dir string) []string {
				cfg := writeFile(t, filepath.Join(dir, "bad.yaml"), "log:\n  level: loud\n")
				return []string{"serve", "-c", cfg, "--data", t.TempDir(), "--listen", "127.0.0.1:0"}
			},
			want: []string{"DIR/bad.yaml:2:10: log.level must be"},
		},
		{
			name: "several config errors",
			args: func(t *testing.T, dir string) []string {
				cfg := writeFile(t, filepath.Join(dir, "bad.yaml"), badConfig)
				return []string{"serve", "-c", cfg, "--data", t.TempDir(), "--listen", "127.0.0.1:0"}
			},
			want: []string{"DIR/bad.yaml:2:10: ", "(and 2 more errors; run junction validate)"},
		},
		{
			name: "missing config file",
			args: func(t *testing.T, dir string) []string {
				return []string{"serve", "-c", filepath.Join(dir, "missing.yaml"), "--data", t.TempDir(), "--listen", "127.0.0.1:0"}
			},
			want: []string{"DIR/missing.yaml", "no such file or directory"},
		},
		{
			name: "data dir under a regular file",
			args: func(t *testing.T, dir string) []string {
				cfg := writeFile(t, filepath.Join(dir, "junction.yaml"), "")
				file := writeFile(t, filepath.Join(dir, "file"), "not a directory")
				return []string{"serve", "-c", cfg, "--data", filepath.Join(file, "data"), "--listen", "127.0.0.1:0"}
			},
			want: []string{"data dir DIR/file/data", "not a directory"},
		},
		{
			name: "sidecar without mesh.tls",
			args: func(t *testing.T, dir string) []string {
				cfg := writeFile(t, filepath.Join(dir, "junction.yaml"), "")
				return []string{"serve", "-c", cfg, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--sidecar-for", "orders", "--app", "http://127.0.0.1:7001"}
			},
			want: []string{"a sidecar needs mesh.tls"},
		},
		{
			name: "sidecar with a bad app URL",
			args: func(t *testing.T, dir string) []string {
				cfg := writeFile(t, filepath.Join(dir, "junction.yaml"), "mesh: { tls: { ca: ca.crt, ca_key: ca.key } }\n")
				return []string{"serve", "-c", cfg, "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--sidecar-for", "orders", "--app", "127.0.0.1:7001"}
			},
			want: []string{"mesh.sidecar.app: an instance url must be an absolute http(s) URL"},
		},
		{
			name: "API port already taken",
			args: func(t *testing.T, dir string) []string {
				cfg := writeFile(t, filepath.Join(dir, "junction.yaml"), "")
				return []string{"serve", "-c", cfg, "--data", t.TempDir(), "--listen", addr}
			},
			want: []string{addr, "address already in use"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := isolate(t)
			line := checkOneLine(t, callMain(t, tt.args(t, dir)...))
			for _, w := range tt.want {
				if w = strings.ReplaceAll(w, "DIR", dir); !strings.Contains(line, w) {
					t.Errorf("stderr %q does not mention %q", line, w)
				}
			}
		})
	}
}
