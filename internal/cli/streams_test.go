package cli

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/junctionhq/junction/internal/testutil"
)

func TestAppendAndReadCommands(t *testing.T) {
	n := testutil.Start(t, testutil.Config(t, testutil.Embedded))
	code, out, errs := run(t, "", "append", "--api", n.URL, "--type", "order.placed", "--id", "o1", "--expected", "no_stream", "order-1", `{"total":3}`)
	var r struct {
		FirstVersion uint64 `json:"first_version"`
		LastVersion  uint64 `json:"last_version"`
		Position     uint64 `json:"position"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &r) != nil || r.FirstVersion != 0 || r.LastVersion != 0 || r.Position == 0 {
		t.Fatalf("append: %d %q %q", code, out, errs)
	}
	code, out, errs = run(t, `"paid"`, "append", "--api", n.URL, "--type", "order.paid", "--expected", "0", "order-1", "-")
	if code != 0 || !strings.Contains(out, `"first_version":1`) {
		t.Fatalf("append from stdin: %d %q %q", code, out, errs)
	}
	// A stale expected version names the current one, on one line.
	code, _, errs = run(t, "", "append", "--api", n.URL, "--type", "order.paid", "--expected", "0", "order-1", `{}`)
	if code != 1 || strings.Count(errs, "\n") != 1 || !strings.Contains(errs, "current version is 1") {
		t.Fatalf("stale append: %d %q", code, errs)
	}
	code, _, errs = run(t, "", "append", "--api", n.URL, "--type", "x", "--expected", "exists", "order-2", `{}`)
	if code != 1 || !strings.Contains(errs, "does not exist") {
		t.Fatalf("append to a missing stream with exists: %d %q", code, errs)
	}
	for _, bad := range [][]string{
		{"append", "--api", n.URL, "--type", "x", "order-1", "not json"},
		{"append", "--api", n.URL, "--type", "x", "--expected", "soon", "order-1", `{}`},
		{"append", "--api", n.URL, "order-1", `{}`},
		{"append", "--api", n.URL, "--type", "x", "$all", `{}`},
	} {
		if code, _, errs := run(t, "", bad...); code != 1 || strings.Count(errs, "\n") != 1 || !strings.HasPrefix(errs, "junction: ") {
			t.Errorf("%v: %d %q", bad, code, errs)
		}
	}

	code, out, errs = run(t, "", "read", "--api", n.URL, "order-1")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 2 {
		t.Fatalf("read: %d %q %q", code, out, errs)
	}
	var e0, e1 struct {
		Stream  string
		Version uint64
		ID      string
		Type    string
		Data    json.RawMessage
	}
	_ = json.Unmarshal([]byte(lines[0]), &e0)
	_ = json.Unmarshal([]byte(lines[1]), &e1)
	if e0.Stream != "order-1" || e0.Version != 0 || e0.ID != "o1" || e0.Type != "order.placed" || string(e0.Data) != `{"total":3}` ||
		e1.Version != 1 || string(e1.Data) != `"paid"` {
		t.Fatalf("read output: %+v %+v", e0, e1)
	}
	code, out, _ = run(t, "", "read", "--api", n.URL, "--backward", "--limit", "1", "order-1")
	if code != 0 || strings.Count(out, "\n") != 1 || !strings.Contains(out, `"version":1`) {
		t.Fatalf("read backward: %d %q", code, out)
	}
	code, out, _ = run(t, "", "read", "--api", n.URL, "--from", "1", "order-1")
	if code != 0 || strings.Count(out, "\n") != 1 || !strings.Contains(out, `"version":1`) {
		t.Fatalf("read from 1: %d %q", code, out)
	}
	code, _, errs = run(t, "", "read", "--api", n.URL, "absent-1")
	if code != 1 || strings.Count(errs, "\n") != 1 || !strings.Contains(errs, "stream_not_found") {
		t.Fatalf("read missing: %d %q", code, errs)
	}
}
