package docs_test

// TestDocs runs the examples of docs/messaging.md, docs/mesh.md,
// docs/eventsourcing.md, docs/cqrs.md, docs/gateway.md, docs/workflows.md
// and of the tour in README.md against a real node,
// so the documentation cannot drift from what Junction does.
//
// The conventions the documents follow:
//
//   - Every ```sh block is run, in document order, with
//     bash -euo pipefail in a working directory shared by the blocks of one
//     document (so `| tee batch.json` in one block can feed the next).
//     When a document's blocks run `junction`, the command on PATH is
//     built from this module.
//   - Addresses 127.0.0.1:PORT in the blocks and in their expected output
//     are rewritten: 127.0.0.1:4000 to the node under test; 127.0.0.1:7002
//     to a webhook receiver that answers 204, or the status NNN for any
//     path /status/NNN; 127.0.0.1:7001, :7011, :7021 and :7031 to test
//     apps (see newApp); any other port to a free port, the same one
//     wherever the document uses it.
//   - A ```yaml block whose first line is "# junction.yaml" is the config
//     of the node the document runs against (the test gives it its own
//     data dir and API address); ${WORK_DIR} in it is the blocks'
//     working directory. A ```yaml block whose first line is
//     "# NAME.yaml" is written to NAME.yaml in the working directory
//     before the next ```sh block runs. What a block leaves running in
//     the background is stopped (SIGTERM, then SIGKILL) when the
//     document's test ends.
//   - A ```json or ```text block that follows a ```sh block with nothing
//     but blank lines between them is the output that block prints.
//     json: the same number of JSON values, each matching as a subset
//     (objects may hold more keys than shown; arrays match element by
//     element). text: line by line, blank lines ignored; a line holding
//     only ... stands for any number of lines, and a line that ends in a
//     JSON value matches its text before the value exactly and the value
//     as a subset. In both, the string "..." matches any value and ...
//     inside a string matches any text.
//   - A block that calls /tail streams forever: it runs until its output
//     has shown what the following ```text block holds, then is stopped.
//   - Every ```http block after a ```sh block (prose may come between) is
//     what the webhook receives because of it: one or more requests, in
//     order, with a subset of their headers and their body. The test waits
//     for them (with a deadline) before it runs the next block.
//   - Every ```yaml block of the files is a junction.yaml example that
//     must load and validate.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/internal/testutil"
	"github.com/junctionhq/junction/mesh"
)

// The addresses the documents use.
const (
	docAPI     = "127.0.0.1:4000"
	docWebhook = "127.0.0.1:7002"
)

// docApps are the addresses of the test apps (service instances).
var docApps = []string{"127.0.0.1:7001", "127.0.0.1:7011", "127.0.0.1:7021", "127.0.0.1:7031"}

// wait bounds every wait for asynchronous behaviour (push deliveries,
// tails, nodes started in the background); a healthy run needs a small
// fraction of it.
const wait = 15 * time.Second

func TestDocs(t *testing.T) {
	for _, tool := range []string{"bash", "curl", "jq"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("JUNCTION_REQUIRE_SERVICES") == "1" {
				t.Fatalf("the documentation examples need %s: %v", tool, err)
			}
			t.Skipf("the documentation examples need %s: %v", tool, err)
		}
	}
	docs := []struct{ file, section string }{
		{"messaging.md", ""},
		{"mesh.md", ""},
		{"eventsourcing.md", ""},
		{"cqrs.md", ""},
		{"gateway.md", ""},
		{"workflows.md", ""},
		{"pipelines.md", ""},
		{"../README.md", "tour"},
	}
	for _, d := range docs {
		t.Run(strings.TrimPrefix(d.file, "../"), func(t *testing.T) {
			t.Parallel()
			src, err := os.ReadFile(d.file)
			if err != nil {
				t.Fatal(err)
			}
			text, offset := string(src), 0
			if d.section != "" {
				if text, offset, err = section(text, d.section); err != nil {
					t.Fatalf("%s: %v", d.file, err)
				}
			}
			blocks := parseBlocks(text, offset)
			steps, err := plan(d.file, blocks)
			if err != nil {
				t.Fatal(err)
			}
			if len(steps) == 0 {
				t.Fatalf("%s: no ```sh examples found", d.file)
			}
			// Every config example of the file must load, wherever it is.
			// Blank lines in front keep the error positions the file's.
			for _, b := range parseBlocks(string(src), 0) {
				if b.lang != "yaml" {
					continue
				}
				if _, err := config.Parse(d.file, []byte(strings.Repeat("\n", b.line)+b.text), noEnv); err != nil {
					t.Errorf("%s:%d: the config example does not load:\n%v", d.file, b.line, err)
				}
			}
			newRunner(t, d.file, blocks, steps).runAll(steps)
		})
	}
}

// TestConfigurationExamples loads every config example of
// docs/configuration.md, except those the page shows being refused (a
// ```yaml block followed by the errors junction validate prints), with
// the secrets its examples read from the environment set.
func TestConfigurationExamples(t *testing.T) {
	secrets := map[string]string{"DB_PASSWORD": "secret", "BILLING_TOKEN": "secret"}
	env := func(k string) (string, bool) { v, ok := secrets[k]; return v, ok }
	const file = "configuration.md"
	src, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	blocks := parseBlocks(string(src), 0)
	checked := 0
	for i, b := range blocks {
		if b.lang != "yaml" {
			continue
		}
		if i+1 < len(blocks) && blocks[i+1].adjacent && blocks[i+1].lang == "text" &&
			strings.HasPrefix(blocks[i+1].text, "$ junction validate") && !strings.Contains(blocks[i+1].text, ": ok") {
			continue
		}
		checked++
		if _, err := config.Parse(file, []byte(strings.Repeat("\n", b.line)+b.text), env); err != nil {
			t.Errorf("%s:%d: the config example does not load:\n%v", file, b.line, err)
		}
	}
	if checked == 0 {
		t.Fatalf("%s: no config examples found", file)
	}
}

func noEnv(string) (string, bool) { return "", false }

// ---- markdown ----

// block is one fenced code block.
type block struct {
	lang     string
	text     string
	where    string // file:line of the opening fence
	line     int
	adjacent bool // only blank lines separate it from the previous block
}

var fenceRe = regexp.MustCompile("^```([A-Za-z0-9_+-]*)\\s*$")

// parseBlocks returns the fenced blocks of md; offset is the number of
// lines that precede md in its file.
func parseBlocks(md string, offset int) []block {
	var out []block
	lines := strings.Split(md, "\n")
	prose := true // something other than blank lines since the last block
	for i := 0; i < len(lines); i++ {
		m := fenceRe.FindStringSubmatch(lines[i])
		if m == nil {
			if strings.TrimSpace(lines[i]) != "" {
				prose = true
			}
			continue
		}
		b := block{lang: m[1], line: offset + i + 1, adjacent: !prose}
		var body []string
		for i++; i < len(lines) && strings.TrimSpace(lines[i]) != "```"; i++ {
			body = append(body, lines[i])
		}
		b.text = strings.Join(body, "\n") + "\n"
		out = append(out, b)
		prose = false
	}
	return out
}

// section returns the part of md under the level-2 heading that contains
// word, and how many lines precede it.
func section(md, word string) (string, int, error) {
	lines := strings.Split(md, "\n")
	start := -1
	for i, l := range lines {
		if !strings.HasPrefix(l, "## ") {
			continue
		}
		if start >= 0 {
			return strings.Join(lines[start:i], "\n"), start, nil
		}
		if strings.Contains(strings.ToLower(l), word) {
			start = i
		}
	}
	if start < 0 {
		return "", 0, fmt.Errorf("no \"## ...%s...\" section", word)
	}
	return strings.Join(lines[start:], "\n"), start, nil
}

// step is one runnable example with what it must print and deliver.
type step struct {
	where  string
	script string
	files  []block // "# NAME.yaml" blocks to write before it runs
	want   *block  // json or text output
	hooks  []block // http: webhook deliveries it causes
}

var fileLine = regexp.MustCompile(`^# ([A-Za-z0-9_.-]+\.yaml)\s*$`)

// fileName returns the file a yaml block names in its first line, if any.
func fileName(b block) string {
	first, _, _ := strings.Cut(b.text, "\n")
	if m := fileLine.FindStringSubmatch(first); m != nil {
		return m[1]
	}
	return ""
}

// plan groups blocks into steps.
func plan(file string, blocks []block) (steps []*step, err error) {
	var cur *step
	var files []block
	for _, b := range blocks {
		b.where = fmt.Sprintf("%s:%d", file, b.line)
		switch b.lang {
		case "sh":
			cur = &step{where: b.where, script: b.text, files: files}
			files = nil
			steps = append(steps, cur)
		case "yaml":
			if name := fileName(b); name != "" && name != "junction.yaml" {
				files = append(files, b)
			}
		case "json", "text":
			if cur != nil && b.adjacent && cur.want == nil && len(cur.hooks) == 0 {
				bb := b
				cur.want = &bb
			}
		case "http":
			if cur == nil {
				return nil, fmt.Errorf("%s: an http block (a webhook delivery) must follow the example that causes it", b.where)
			}
			cur.hooks = append(cur.hooks, b)
		}
	}
	if len(files) > 0 {
		return nil, fmt.Errorf("%s:%d: the file %s is written for no example after it", file, files[0].line, fileName(files[0]))
	}
	return steps, nil
}

// ---- running ----

type runner struct {
	t     *testing.T
	dir   string
	addrs *addresses
	hook  *receiver
	path  string // PATH of the examples
	pgids []int  // process groups of the blocks run
}

var junctionCommand = regexp.MustCompile(`(?m)^\s*junction\s`)

func newRunner(t *testing.T, file string, blocks []block, steps []*step) *runner {
	hook := newReceiver(t)
	addrs := &addresses{m: map[string]string{docWebhook: hostPort(hook.srv.URL)}}
	for _, a := range docApps {
		addrs.m[a] = hostPort(newApp(t).URL)
	}
	cfg := testutil.Config(t, testutil.Embedded)
	dir := t.TempDir()
	// ${WORK_DIR} in the node's config is the examples' working directory.
	workDir := func(k string) (string, bool) {
		if k == "WORK_DIR" {
			return dir, true
		}
		return "", false
	}
	for _, b := range blocks {
		if b.lang != "yaml" || fileName(b) != "junction.yaml" {
			continue
		}
		// The document's own node config, on the test's addresses.
		c, err := config.Parse(file, []byte(strings.Repeat("\n", b.line)+addrs.rewrite(b.text)), workDir)
		if err != nil {
			t.Fatalf("%s:%d: %v", file, b.line, err)
		}
		c.DataDir, c.API.Listen, c.ShutdownTimeout = cfg.DataDir, cfg.API.Listen, cfg.ShutdownTimeout
		cfg = c
	}
	node := testutil.Start(t, cfg)
	addrs.m[docAPI] = node.Addr()
	awaitHealthChecks(t, node)
	r := &runner{t: t, dir: dir, addrs: addrs, hook: hook, path: os.Getenv("PATH")}
	for _, s := range steps {
		if junctionCommand.MatchString(s.script) {
			r.path = filepath.Dir(testutil.Binary(t)) + string(os.PathListSeparator) + r.path
			break
		}
	}
	// Registered after the node's cleanup, so it runs before it: nodes a
	// block started in the background stop while the node still runs.
	t.Cleanup(r.stopBackground)
	return r
}

func hostPort(u string) string { return strings.TrimPrefix(u, "http://") }

// awaitHealthChecks waits until the node has checked every static instance
// once, as it does right after it starts, so that the examples see the
// health a node shows a moment after its start.
func awaitHealthChecks(t *testing.T, node *testutil.Node) {
	checked := func() bool {
		for _, s := range node.Mesh().Services() {
			if sc := node.Config.Services[s.Name]; sc == nil || sc.Health == nil {
				continue
			}
			for _, in := range s.Instances {
				if in.Health == mesh.HealthUnknown {
					return false
				}
			}
		}
		return true
	}
	testutil.Eventually(t, wait, "the first health checks", checked)
}

// addresses maps the documents' 127.0.0.1:PORT addresses to the test's.
type addresses struct {
	mu sync.Mutex
	m  map[string]string
}

var addrRe = regexp.MustCompile(`127\.0\.0\.1:[0-9]{2,5}\b`)

// rewrite replaces every address of s.
func (a *addresses) rewrite(s string) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return addrRe.ReplaceAllStringFunc(s, func(addr string) string {
		if r, ok := a.m[addr]; ok {
			return r
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			panic(err)
		}
		r := l.Addr().String()
		_ = l.Close()
		a.m[addr] = r
		return r
	})
}

func (r *runner) runAll(steps []*step) {
	for _, s := range steps {
		start := time.Now()
		r.run(s)
		if testing.Verbose() {
			r.t.Logf("%s: ok in %s", s.where, time.Since(start).Round(time.Millisecond))
		}
	}
}

func (r *runner) command(ctx context.Context, script string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", script)
	cmd.Dir = r.dir
	// A clean environment: no proxy settings or curlrc can change what
	// the examples do.
	cmd.Env = []string{"PATH=" + r.path, "HOME=" + r.dir, "LC_ALL=C"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	return cmd
}

// start starts cmd and remembers its process group, which outlives it
// when the block leaves something running in the background.
func (r *runner) start(cmd *exec.Cmd) error {
	if err := cmd.Start(); err != nil {
		return err
	}
	r.pgids = append(r.pgids, cmd.Process.Pid)
	return nil
}

// forget drops the process group of a finished block unless it left
// something running, so that a group id the system reuses later is never
// signalled.
func (r *runner) forget(cmd *exec.Cmd) {
	if pid := cmd.Process.Pid; !groupAlive(pid) {
		r.pgids = slices.DeleteFunc(r.pgids, func(g int) bool { return g == pid })
	}
}

// stopBackground stops what the blocks left running: SIGTERM first, so
// that a node shuts down as it should, then SIGKILL.
func (r *runner) stopBackground() {
	for _, g := range r.pgids {
		if groupAlive(g) {
			_ = syscall.Kill(-g, syscall.SIGTERM)
		}
	}
	deadline := time.Now().Add(wait)
	for _, g := range r.pgids {
		for groupAlive(g) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if groupAlive(g) {
			_ = syscall.Kill(-g, syscall.SIGKILL)
		}
	}
}

// groupAlive reports whether a process group has a member that is not a
// zombie (an orphan may stay one when nothing reaps it).
func groupAlive(pgid int) bool {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, f := range stats {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...; comm may hold spaces.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		fs := strings.Fields(string(b[i+1:]))
		if len(fs) > 2 && fs[0] != "Z" && fs[2] == strconv.Itoa(pgid) {
			return true
		}
	}
	return false
}

// logs returns the end of every *.log file in the working directory, the
// output of nodes that blocks run in the background.
func (r *runner) logs() string {
	files, _ := filepath.Glob(filepath.Join(r.dir, "*.log"))
	var b strings.Builder
	for _, f := range files {
		data, _ := os.ReadFile(f)
		if len(data) > 4000 {
			data = data[len(data)-4000:]
		}
		fmt.Fprintf(&b, "\n%s:\n%s", filepath.Base(f), data)
	}
	return b.String()
}

// curlCommand is one curl command line, continuation lines joined.
var curlCommand = regexp.MustCompile(`curl [^\n]*`)

// unchecked counts the curl commands of a script that neither fail on an
// error answer (--fail-with-body) nor print the status they got.
func unchecked(script string) int {
	n := 0
	for _, c := range curlCommand.FindAllString(strings.ReplaceAll(script, "\\\n", " "), -1) {
		if !strings.Contains(c, "--fail-with-body") && !strings.Contains(c, "%{http_code}") {
			n++
		}
	}
	return n
}

func (r *runner) run(s *step) {
	t := r.t
	t.Helper()
	// Addresses in expected output are the rewritten ones too.
	script := r.addrs.rewrite(s.script)
	if s.want != nil {
		w := *s.want
		w.text = r.addrs.rewrite(w.text)
		s.want = &w
	}
	// Examples that expect success say so with --fail-with-body, so that
	// an error answer fails them; the others must show the error or the
	// status they got.
	if unchecked(s.script) > 0 && !strings.Contains(s.script, "/tail") && (s.want == nil || !strings.Contains(s.want.text, `"code":`)) {
		t.Fatalf("%s: a curl without --fail-with-body must be followed by the error it prints", s.where)
	}
	for _, f := range s.files {
		if err := os.WriteFile(filepath.Join(r.dir, fileName(f)), []byte(r.addrs.rewrite(f.text)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if strings.Contains(script, "/tail") {
		r.stream(s, script)
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		var stdout, stderr bytes.Buffer
		cmd := r.command(ctx, script)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := r.start(cmd)
		if err == nil {
			err = cmd.Wait()
			r.forget(cmd)
		}
		if err != nil {
			t.Fatalf("%s: the example failed (%v)\n%s\nstdout:\n%s\nstderr:\n%s%s", s.where, err, s.script, stdout.String(), stderr.String(), r.logs())
		}
		if s.want != nil {
			if err := matchOutput(s.want, stdout.String(), false); err != nil {
				t.Fatalf("%s: the example printed something else than %s shows: %v\n%s\nprinted:\n%s%s", s.where, s.want.where, err, s.script, stdout.String(), r.logs())
			}
		}
	}
	for _, h := range s.hooks {
		reqs, err := parseRequests(r.addrs.rewrite(h.text))
		if err != nil {
			t.Fatalf("%s: %v", h.where, err)
		}
		if err := r.hook.await(reqs, wait); err != nil {
			t.Fatalf("%s: the webhook did not receive what %s shows: %v\nreceived:\n%s", s.where, h.where, err, r.hook.dump())
		}
	}
}

// stream runs a block that does not end by itself (a tail) until its
// output shows what the example says, then stops it.
func (r *runner) stream(s *step, script string) {
	t := r.t
	t.Helper()
	if s.want == nil || s.want.lang != "text" {
		t.Fatalf("%s: a streaming example needs a ```text block with its output right after it", s.where)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &notifyBuffer{changed: make(chan struct{})}
	var stderr bytes.Buffer
	cmd := r.command(ctx, script)
	cmd.Stdout, cmd.Stderr = out, &stderr
	if err := r.start(cmd); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer r.forget(cmd)
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		text, changed := out.snapshot()
		lastErr := matchOutput(s.want, text, true)
		if lastErr == nil {
			cancel()
			<-exited
			return
		}
		select {
		case <-changed:
		case err := <-exited:
			text, _ = out.snapshot()
			if matchOutput(s.want, text, true) == nil {
				return
			}
			t.Fatalf("%s: the example ended (%v) before printing what %s shows: %v\n%s\nprinted:\n%s\nstderr:\n%s", s.where, err, s.want.where, lastErr, s.script, text, stderr.String())
		case <-deadline.C:
			cancel()
			<-exited
			t.Fatalf("%s: after %s the example has not printed what %s shows: %v\n%s\nprinted:\n%s\nstderr:\n%s", s.where, wait, s.want.where, lastErr, s.script, text, stderr.String())
		}
	}
}

// notifyBuffer is a bytes.Buffer that tells waiters when it grows.
type notifyBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{}
}

func (b *notifyBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.buf.Write(p)
	close(b.changed)
	b.changed = make(chan struct{})
	return n, err
}

// snapshot returns the text so far and a channel closed at the next write.
func (b *notifyBuffer) snapshot() (string, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String(), b.changed
}

// ---- the webhook receiver ----

type delivery struct {
	method, path string
	header       http.Header
	body         string
}

type receiver struct {
	srv     *httptest.Server
	mu      sync.Mutex
	got     []delivery
	claimed []bool
	changed chan struct{}
}

var statusPath = regexp.MustCompile(`^/status/([1-5][0-9][0-9])$`)

func newReceiver(t *testing.T) *receiver {
	rc := &receiver{changed: make(chan struct{})}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		rc.mu.Lock()
		rc.got = append(rc.got, delivery{method: req.Method, path: req.URL.Path, header: req.Header.Clone(), body: string(body)})
		rc.claimed = append(rc.claimed, false)
		close(rc.changed)
		rc.changed = make(chan struct{})
		rc.mu.Unlock()
		code := http.StatusNoContent
		if m := statusPath.FindStringSubmatch(req.URL.Path); m != nil {
			code, _ = strconv.Atoi(m[1])
		}
		w.WriteHeader(code)
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

// await waits until deliveries not matched by an earlier block hold want,
// in order, and marks them as matched.
func (rc *receiver) await(want []wantRequest, within time.Duration) error {
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		rc.mu.Lock()
		idx, lastErr := rc.find(want)
		if idx != nil {
			for _, i := range idx {
				rc.claimed[i] = true
			}
			rc.mu.Unlock()
			return nil
		}
		changed := rc.changed
		rc.mu.Unlock()
		select {
		case <-changed:
		case <-deadline.C:
			return fmt.Errorf("after %s: %v", within, lastErr)
		}
	}
}

// find matches want as a subsequence of the unclaimed deliveries.
func (rc *receiver) find(want []wantRequest) ([]int, error) {
	var idx []int
	i := 0
	var lastErr error
	for _, w := range want {
		found := false
		for ; i < len(rc.got); i++ {
			if rc.claimed[i] {
				continue
			}
			if err := w.match(rc.got[i]); err != nil {
				lastErr = err
				continue
			}
			idx, found = append(idx, i), true
			i++
			break
		}
		if !found {
			if lastErr == nil {
				lastErr = errors.New("no delivery yet")
			}
			return nil, fmt.Errorf("request %d of the block (%s %s) not received; closest mismatch: %v", len(idx)+1, w.method, w.path, lastErr)
		}
	}
	return idx, nil
}

func (rc *receiver) dump() string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var b strings.Builder
	for i, d := range rc.got {
		fmt.Fprintf(&b, "%d. %s %s claimed=%v ce-id=%q ce-type=%q Junction-Subscription=%q Junction-Delivery=%q body=%s\n",
			i+1, d.method, d.path, rc.claimed[i], d.header.Get("ce-id"), d.header.Get("ce-type"),
			d.header.Get("Junction-Subscription"), d.header.Get("Junction-Delivery"), d.body)
	}
	if b.Len() == 0 {
		return "(nothing)\n"
	}
	return b.String()
}

// ---- the test apps ----

// newApp starts a test app: an instance of a service. It answers every
// request with a JSON object naming itself (its address, as "instance")
// and echoing the method, path, query, body (as JSON when it is JSON) and
// Junction-Caller header (as "caller"); /headers adds the request headers
// (lower-case names), /status/NNN answers with the status NNN, and
// /sleep/DURATION answers after that long. /healthz answers 200.
//
// Like a service that deduplicates on Idempotency-Key, it adds "id" to
// the answer of a request with that header: the same key, the same id.
// It records the requests it answers: GET /requests lists them, oldest
// first, with their method, path, query, headers (lower-case names) and
// body. POST /failures with {"path": P, "status": N, "times": T} makes it
// answer N, with its usual body, to the next T requests for the path P
// (to every one when T is 0 or absent); DELETE /failures forgets them.
// /healthz, /requests and /failures are not recorded.
func newApp(t *testing.T) *httptest.Server {
	type failure struct {
		Path   string `json:"path"`
		Status int    `json:"status"`
		Times  int    `json:"times"`
	}
	var (
		mu       sync.Mutex
		recorded = []map[string]any{}
		failures []*failure
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch {
		case req.URL.Path == "/healthz":
			_, _ = io.WriteString(w, `{"status":"ok"}`)
			return
		case req.URL.Path == "/requests" && req.Method == http.MethodGet:
			mu.Lock()
			defer mu.Unlock()
			_ = json.NewEncoder(w).Encode(recorded)
			return
		case req.URL.Path == "/failures" && req.Method == http.MethodDelete:
			mu.Lock()
			failures = nil
			mu.Unlock()
			w.WriteHeader(http.StatusNoContent)
			return
		case req.URL.Path == "/failures" && req.Method == http.MethodPost:
			var f failure
			if err := json.NewDecoder(req.Body).Decode(&f); err != nil || f.Path == "" || f.Status < 200 || f.Status > 599 || f.Times < 0 {
				w.WriteHeader(http.StatusBadRequest)
				_, _ = io.WriteString(w, `{"error":"want {\"path\": \"/...\", \"status\": 200..599, \"times\": N}"}`+"\n")
				return
			}
			mu.Lock()
			failures = append(failures, &f)
			mu.Unlock()
			w.WriteHeader(http.StatusNoContent)
			return
		}
		body, _ := io.ReadAll(req.Body)
		self, _ := req.Context().Value(http.LocalAddrContextKey).(net.Addr)
		out := map[string]any{"method": req.Method, "path": req.URL.Path}
		if self != nil {
			out["instance"] = self.String()
		}
		if req.URL.RawQuery != "" {
			out["query"] = req.URL.RawQuery
		}
		if len(body) > 0 {
			out["body"] = string(body)
			if json.Valid(body) {
				out["body"] = json.RawMessage(body)
			}
		}
		if c := req.Header.Get("Junction-Caller"); c != "" {
			out["caller"] = c
		}
		if k := req.Header.Get("Idempotency-Key"); k != "" {
			sum := sha256.Sum256([]byte(k))
			out["id"] = hex.EncodeToString(sum[:6])
		}
		headers := map[string]string{}
		for k, v := range req.Header {
			headers[strings.ToLower(k)] = strings.Join(v, ", ")
		}
		code := http.StatusOK
		mu.Lock()
		rec := map[string]any{"method": req.Method, "path": req.URL.Path, "headers": headers}
		for _, k := range []string{"query", "body"} {
			if v, ok := out[k]; ok {
				rec[k] = v
			}
		}
		recorded = append(recorded, rec)
		for i, f := range failures {
			if f.Path != req.URL.Path {
				continue
			}
			code = f.Status
			if f.Times > 0 {
				if f.Times--; f.Times == 0 {
					failures = slices.Delete(failures, i, i+1)
				}
			}
			break
		}
		mu.Unlock()
		switch rest, _ := strings.CutPrefix(req.URL.Path, "/"); {
		case rest == "headers":
			out["headers"] = headers
		case strings.HasPrefix(rest, "status/"):
			if m := statusPath.FindStringSubmatch(req.URL.Path); m != nil {
				code, _ = strconv.Atoi(m[1])
			}
		case strings.HasPrefix(rest, "sleep/"):
			if d, err := time.ParseDuration(strings.TrimPrefix(rest, "sleep/")); err == nil {
				select {
				case <-time.After(d):
				case <-req.Context().Done():
					return
				}
			}
		}
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(out)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// wantRequest is one request of an ```http block.
type wantRequest struct {
	method, path string
	header       [][2]string
	body         string
}

var requestLine = regexp.MustCompile(`^([A-Z]+) (\S+) HTTP/1\.1$`)

// parseRequests reads one or more requests: a request line, header lines,
// a blank line and a body (up to the next request line).
func parseRequests(text string) ([]wantRequest, error) {
	var out []wantRequest
	var cur *wantRequest
	inBody := false
	var body []string
	flush := func() {
		if cur != nil {
			cur.body = strings.TrimSpace(strings.Join(body, "\n"))
			out = append(out, *cur)
		}
	}
	for _, l := range strings.Split(text, "\n") {
		if m := requestLine.FindStringSubmatch(l); m != nil {
			flush()
			cur, inBody, body = &wantRequest{method: m[1], path: m[2]}, false, nil
			continue
		}
		switch {
		case cur == nil:
			if strings.TrimSpace(l) != "" {
				return nil, fmt.Errorf("expected a request line such as \"POST /events HTTP/1.1\", got %q", l)
			}
		case inBody:
			body = append(body, l)
		case strings.TrimSpace(l) == "":
			inBody = true
		default:
			k, v, ok := strings.Cut(l, ":")
			if !ok {
				return nil, fmt.Errorf("bad header line %q", l)
			}
			cur.header = append(cur.header, [2]string{strings.TrimSpace(k), strings.TrimSpace(v)})
		}
	}
	flush()
	if len(out) == 0 {
		return nil, errors.New("no request in the http block")
	}
	return out, nil
}

func (w wantRequest) match(d delivery) error {
	if d.method != w.method || d.path != w.path {
		return fmt.Errorf("%s %s is not %s %s", d.method, d.path, w.method, w.path)
	}
	for _, h := range w.header {
		got, ok := d.header[http.CanonicalHeaderKey(h[0])]
		if !ok {
			return fmt.Errorf("header %s is missing", h[0])
		}
		if !glob(h[1], strings.Join(got, ", ")) {
			return fmt.Errorf("header %s is %q, not %q", h[0], strings.Join(got, ", "), h[1])
		}
	}
	if w.body == "" {
		return nil
	}
	if wantJSON, err := decodeAll(w.body); err == nil && len(wantJSON) == 1 {
		gotJSON, err := decodeAll(d.body)
		if err != nil || len(gotJSON) != 1 {
			return fmt.Errorf("body %q is not one JSON value", d.body)
		}
		if err := matchJSON(wantJSON[0], gotJSON[0], "body"); err != nil {
			return err
		}
		return nil
	}
	if !glob(w.body, strings.TrimSpace(d.body)) {
		return fmt.Errorf("body is %q, not %q", d.body, w.body)
	}
	return nil
}

// ---- matching ----

// matchOutput checks printed text against an expectation block. With
// prefix (streams), text output may go on after what the block shows.
func matchOutput(want *block, got string, prefix bool) error {
	switch want.lang {
	case "json":
		ws, err := decodeAll(want.text)
		if err != nil {
			return fmt.Errorf("the expected output is not JSON: %v", err)
		}
		gs, err := decodeAll(got)
		if err != nil {
			return fmt.Errorf("the output is not JSON: %v", err)
		}
		if len(ws) != len(gs) {
			return fmt.Errorf("%d JSON values printed, %d expected", len(gs), len(ws))
		}
		for i := range ws {
			if err := matchJSON(ws[i], gs[i], fmt.Sprintf("value %d", i+1)); err != nil {
				return err
			}
		}
		return nil
	default:
		wl := nonBlankLines(want.text)
		if prefix {
			wl = append(wl, "...")
		}
		return matchLines(wl, nonBlankLines(got))
	}
}

func nonBlankLines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimRight(l, " \r\t"); strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	return out
}

// matchLines matches got against want, where a "..." line stands for any
// number of lines.
func matchLines(want, got []string) error {
	if len(want) == 0 {
		if len(got) == 0 {
			return nil
		}
		return fmt.Errorf("unexpected line %q", got[0])
	}
	if strings.TrimSpace(want[0]) == "..." {
		var err error
		for i := 0; i <= len(got); i++ {
			if err = matchLines(want[1:], got[i:]); err == nil {
				return nil
			}
		}
		return err
	}
	if len(got) == 0 {
		return fmt.Errorf("missing line %q", want[0])
	}
	if err := matchLine(want[0], got[0]); err != nil {
		return err
	}
	return matchLines(want[1:], got[1:])
}

// matchLine compares one line; a line ending in a JSON value matches the
// value as a subset.
func matchLine(want, got string) error {
	if i := strings.IndexAny(want, "{["); i >= 0 {
		if wv, err := decodeAll(want[i:]); err == nil && len(wv) == 1 {
			if !strings.HasPrefix(got, want[:i]) {
				return fmt.Errorf("line %q does not start with %q", got, want[:i])
			}
			gv, err := decodeAll(got[i:])
			if err != nil || len(gv) != 1 {
				return fmt.Errorf("line %q does not end in one JSON value", got)
			}
			if err := matchJSON(wv[0], gv[0], "line"); err != nil {
				return fmt.Errorf("%v in line %q", err, got)
			}
			return nil
		}
	}
	if !glob(want, got) {
		return fmt.Errorf("line %q is not %q", got, want)
	}
	return nil
}

// decodeAll decodes a sequence of JSON values.
func decodeAll(s string) ([]any, error) {
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var out []any
	for {
		var v any
		err := dec.Decode(&v)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
}

// matchJSON reports whether got holds want: objects as subsets, arrays
// element by element, "..." as any value.
func matchJSON(want, got any, path string) error {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return fmt.Errorf("%s: want an object, got %s", path, show(got))
		}
		for k, wv := range w {
			gv, ok := g[k]
			if !ok {
				return fmt.Errorf("%s.%s: missing", path, k)
			}
			if err := matchJSON(wv, gv, path+"."+k); err != nil {
				return err
			}
		}
		return nil
	case []any:
		g, ok := got.([]any)
		if !ok {
			return fmt.Errorf("%s: want an array, got %s", path, show(got))
		}
		if len(g) != len(w) {
			return fmt.Errorf("%s: want %d elements, got %d: %s", path, len(w), len(g), show(got))
		}
		for i := range w {
			if err := matchJSON(w[i], g[i], fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		return nil
	case string:
		if w == "..." {
			return nil
		}
		g, ok := got.(string)
		if !ok || !glob(w, g) {
			return fmt.Errorf("%s: want %q, got %s", path, w, show(got))
		}
		return nil
	case json.Number:
		g, ok := got.(json.Number)
		if !ok {
			return fmt.Errorf("%s: want %s, got %s", path, w, show(got))
		}
		wf, _, err1 := big.ParseFloat(string(w), 10, 200, big.ToNearestEven)
		gf, _, err2 := big.ParseFloat(string(g), 10, 200, big.ToNearestEven)
		if err1 != nil || err2 != nil || wf.Cmp(gf) != 0 {
			return fmt.Errorf("%s: want %s, got %s", path, w, g)
		}
		return nil
	default: // bool, null
		if want != got {
			return fmt.Errorf("%s: want %s, got %s", path, show(want), show(got))
		}
		return nil
	}
}

func show(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// glob matches s against pattern, where ... stands for any text.
func glob(pattern, s string) bool {
	parts := strings.Split(pattern, "...")
	if len(parts) == 1 {
		return pattern == s
	}
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	last := parts[len(parts)-1]
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(s, p)
		if i < 0 {
			return false
		}
		s = s[i+len(p):]
	}
	return strings.HasSuffix(s, last) && len(s) >= len(last)
}

// TestMatchers pins the matching rules, so a lax matcher cannot hide a
// divergence between the documents and Junction.
func TestMatchers(t *testing.T) {
	must := func(ok bool, what string) {
		t.Helper()
		if !ok {
			t.Error(what)
		}
	}
	j := func(s string) any {
		v, err := decodeAll(s)
		if err != nil || len(v) != 1 {
			t.Fatalf("bad JSON %q", s)
		}
		return v[0]
	}
	must(matchJSON(j(`{"id":"a","n":1}`), j(`{"id":"a","n":1.0,"extra":true}`), "") == nil, "subset with extra keys")
	must(matchJSON(j(`{"id":"..."}`), j(`{"id":42}`), "") == nil, `"..." matches any value`)
	must(matchJSON(j(`{"id":"..."}`), j(`{}`), "") != nil, `"..." still needs the key`)
	must(matchJSON(j(`{"n":1}`), j(`{"n":2}`), "") != nil, "different numbers")
	must(matchJSON(j(`{"d":false}`), j(`{"d":true}`), "") != nil, "different bools")
	must(matchJSON(j(`[1,2]`), j(`[1,2,3]`), "") != nil, "arrays match in length")
	must(matchJSON(j(`{"s":"http_503 after ... deliveries"}`), j(`{"s":"http_503 after 3 deliveries"}`), "") == nil, "glob in strings")
	must(matchJSON(j(`{"s":"http_503 after ... deliveries"}`), j(`{"s":"http_400"}`), "") != nil, "glob mismatch")

	text := &block{lang: "text", text: "id: 1\n...\ndata: {\"id\":\"x\"}\n"}
	must(matchOutput(text, "id: 1\nevent: message\ndata: {\"id\":\"x\",\"n\":1}\n", false) == nil, "text with ... and JSON lines")
	must(matchOutput(text, "id: 2\nevent: message\ndata: {\"id\":\"x\"}\n", false) != nil, "text line mismatch")
	must(matchOutput(text, "id: 1\ndata: {\"id\":\"y\"}\n", false) != nil, "JSON line mismatch")
	must(matchOutput(text, "id: 1\ndata: {\"id\":\"x\"}\nmore\n", false) != nil, "extra lines without prefix")
	must(matchOutput(text, "id: 1\ndata: {\"id\":\"x\"}\nmore\n", true) == nil, "extra lines with prefix")
	js := &block{lang: "json", text: "{\"a\":1}\n{\"b\":2}\n"}
	must(matchOutput(js, "{\"a\":1}\n", false) != nil, "missing JSON value")
	must(matchOutput(js, "{\"a\":1}{\"b\":2}", false) == nil, "JSON values in sequence")

	reqs, err := parseRequests("POST /events HTTP/1.1\nce-id: a\n\n{\"n\":1}\n\nPOST /events HTTP/1.1\nce-id: b\n")
	if err != nil || len(reqs) != 2 || reqs[0].body != `{"n":1}` || reqs[1].header[0][1] != "b" {
		t.Fatalf("parseRequests: %+v %v", reqs, err)
	}
	d := delivery{method: "POST", path: "/events", header: http.Header{"Ce-Id": {"a"}}, body: `{"n":1,"m":2}`}
	must(reqs[0].match(d) == nil, "request matches")
	d.header.Set("Ce-Id", "z")
	must(reqs[0].match(d) != nil, "header mismatch")

	must(unchecked("curl -sS --fail-with-body http://a \\\n  -d x\ncurl -sS -o /dev/null -w '%{http_code}' http://b\n") == 0, "checked curls")
	must(unchecked("curl -sS http://a \\\n  -d x | jq .\n") == 1, "a curl that shows no error")

	a := &addresses{m: map[string]string{"127.0.0.1:4000": "127.0.0.1:1"}}
	out := a.rewrite("http://127.0.0.1:4000/x nats://127.0.0.1:4222 127.0.0.1:4222 127.0.0.1:...")
	f := strings.Fields(out)
	must(f[0] == "http://127.0.0.1:1/x", "a known address is rewritten")
	must(f[1] != "nats://127.0.0.1:4222" && strings.TrimPrefix(f[1], "nats://") == f[2], "another address becomes one free port")
	must(f[3] == "127.0.0.1:...", "a pattern is left alone")

	steps, err := plan("x.md", parseBlocks("```yaml\n# junction.yaml\n```\n```yaml\n# a.yaml\nk: v\n```\n```sh\ntrue\n```\n", 0))
	if err != nil || len(steps) != 1 || len(steps[0].files) != 1 || fileName(steps[0].files[0]) != "a.yaml" {
		t.Fatalf("plan with files: %+v %v", steps, err)
	}

	bs := parseBlocks("x\n```sh\necho\n```\n\n```json\n{}\n```\ntext\n```json\n{}\n```\n", 0)
	if len(bs) != 3 || !bs[1].adjacent || bs[2].adjacent || bs[0].line != 2 {
		t.Fatalf("parseBlocks: %+v", bs)
	}
}
