package cli

import (
	"bytes"
	"encoding/json"
	"net"
	"strings"
	"testing"

	"github.com/junctionhq/junction/internal/testutil"
)

func run(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = Main(args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

func TestPublishAndTailCommands(t *testing.T) {
	n := testutil.Start(t, testutil.Config(t, testutil.Embedded))
	code, out, errs := run(t, "", "publish", "--api", n.URL, "--id", "cli-1", "--type", "note.added", "--key", "k1", "notes", `{"text":"hi"}`)
	if code != 0 || !strings.Contains(out, `"id":"cli-1"`) || !strings.Contains(out, `"sequence":1`) {
		t.Fatalf("publish: %d %q %q", code, out, errs)
	}
	code, out, errs = run(t, "plain text from stdin", "publish", "--api", n.URL, "--content-type", "text/plain", "notes", "-")
	if code != 0 || !strings.Contains(out, `"sequence":2`) {
		t.Fatalf("publish from stdin: %d %q %q", code, out, errs)
	}
	code, out, errs = run(t, "", "tail", "--api", n.URL, "--from", "all", "-n", "2", "notes")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 2 {
		t.Fatalf("tail: %d %q %q", code, out, errs)
	}
	var m1, m2 struct {
		ID, Type, Key string
		Data          json.RawMessage
	}
	_ = json.Unmarshal([]byte(lines[0]), &m1)
	_ = json.Unmarshal([]byte(lines[1]), &m2)
	if m1.ID != "cli-1" || m1.Type != "note.added" || m1.Key != "k1" || string(m1.Data) != `{"text":"hi"}` || string(m2.Data) != `"plain text from stdin"` {
		t.Fatalf("tail output: %+v %+v", m1, m2)
	}
	// API errors are one line with the problem code.
	code, _, errs = run(t, "", "tail", "--api", n.URL, "--from", "soon", "notes")
	if code != 1 || strings.Count(errs, "\n") != 1 || !strings.Contains(errs, "validation_failed") {
		t.Fatalf("bad tail: %d %q", code, errs)
	}
}

func TestClientCommandsWithoutServer(t *testing.T) {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	code, _, errs := run(t, "", "publish", "--api", "http://"+addr, "t", "x")
	if code != 1 || strings.Count(errs, "\n") != 1 || !strings.HasPrefix(errs, "junction: ") || !strings.Contains(errs, addr) {
		t.Fatalf("publish with no server: %d %q", code, errs)
	}
}
