package gateway_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/junctionhq/junction/internal/testutil"
)

func writeConfig(t *testing.T, path, data string, body string) {
	t.Helper()
	cfg := "data_dir: " + data + `
api: { listen: 127.0.0.1:0 }
gateway:
  listen: 127.0.0.1:0
  routes:
    - path: /version
` + body
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

var gatewayAddr = regexp.MustCompile(`msg="junction started".* gateway=(\S+)`)

// junction serve reloads its routes when the config file changes and on
// SIGHUP; a broken file is refused with its file:line:col in the log, and
// the running routes keep serving.
func TestReloadFromFile(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real process")
	}
	data := t.TempDir()
	path := filepath.Join(data, "junction.yaml")
	writeConfig(t, path, data, "      static: { body: one }\n")
	p := testutil.StartProcess(t, nil, "serve", "-c", path)
	m := gatewayAddr.FindStringSubmatch(p.Stderr())
	if m == nil {
		t.Fatalf("no gateway address in the log:\n%s", p.Stderr())
	}
	url := "http://" + m[1] + "/version"
	body := func() string {
		_, _, b := testutil.Do(t, "GET", url, nil, "")
		return b
	}
	if b := body(); b != "one" {
		t.Fatalf("/version = %q", b)
	}

	writeConfig(t, path, data, "      static: { body: two, status: 999 }\n")
	testutil.Eventually(t, 15*time.Second, "the refusal logged with its position", func() bool {
		return strings.Contains(p.Stderr(), "config reload refused") && strings.Contains(p.Stderr(), "junction.yaml:7:")
	})
	if b := body(); b != "one" {
		t.Fatalf("after a refused reload /version = %q", b)
	}

	writeConfig(t, path, data, "      static: { body: two }\n")
	testutil.Eventually(t, 15*time.Second, "the changed file applied", func() bool { return body() == "two" })

	writeConfig(t, path, data, "      static: { body: three }\n")
	if err := p.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 15*time.Second, "SIGHUP applied", func() bool { return body() == "three" })
}
