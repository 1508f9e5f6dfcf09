package cli

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/junctionhq/junction/internal/pki"
)

func fileMode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestCAInitAndIssue(t *testing.T) {
	tests := []struct {
		name     string
		init     []string // arguments after "ca init"
		issue    []string // arguments after "ca issue"
		caDir    string   // relative to the test directory
		outDir   string
		initOut  string
		validFor time.Duration
		hosts    int
	}{
		{
			name:     "defaults",
			issue:    []string{"orders"},
			caDir:    "junction-ca",
			outDir:   "junction-ca",
			initOut:  "CA written to junction-ca/ca.crt and junction-ca/ca.key\n",
			validFor: 8760 * time.Hour,
		},
		{
			name:     "every flag",
			init:     []string{"--dir", "pki"},
			issue:    []string{"billing", "--dir", "pki", "--out", "certs/billing", "--host", "localhost", "--host", "127.0.0.1", "--valid", "1h"},
			caDir:    "pki",
			outDir:   "certs/billing",
			initOut:  "CA written to pki/ca.crt and pki/ca.key\n",
			validFor: time.Hour,
			hosts:    2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			isolate(t)
			r := callMain(t, append([]string{"ca", "init"}, tt.init...)...)
			if r.code != 0 || r.stdout != tt.initOut || r.stderr != "" {
				t.Fatalf("ca init: %+v, want exit 0 and %q", r, tt.initOut)
			}
			service := tt.issue[0]
			certFile, keyFile := filepath.Join(tt.outDir, service+".crt"), filepath.Join(tt.outDir, service+".key")
			r = callMain(t, append([]string{"ca", "issue"}, tt.issue...)...)
			wantOut := "certificate for " + service + " written to " + certFile + " and " + keyFile + " (valid until "
			if r.code != 0 || !strings.HasPrefix(r.stdout, wantOut) || strings.Count(r.stdout, "\n") != 1 || r.stderr != "" {
				t.Fatalf("ca issue: %+v, want exit 0 and one line starting %q", r, wantOut)
			}
			if m := fileMode(t, certFile); m != 0o644 {
				t.Errorf("%s has mode %v, want 0644", certFile, m)
			}
			if m := fileMode(t, keyFile); m != 0o600 {
				t.Errorf("%s has mode %v, want 0600", keyFile, m)
			}

			cert, err := pki.LoadKeyPair(certFile, keyFile)
			if err != nil {
				t.Fatal(err)
			}
			if id, err := pki.Identity(cert.Leaf); id != service || err != nil {
				t.Errorf("identity %q, %v; want %q", id, err, service)
			}
			roots, err := pki.LoadPool(filepath.Join(tt.caDir, "ca.crt"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := cert.Leaf.Verify(x509.VerifyOptions{Roots: roots}); err != nil {
				t.Errorf("issued certificate does not chain to the CA: %v", err)
			}
			if d := cert.Leaf.NotAfter.Sub(cert.Leaf.NotBefore) - time.Minute; d < tt.validFor-5*time.Second || d > tt.validFor+5*time.Second {
				t.Errorf("valid for %v, want %v", d, tt.validFor)
			}
			if n := len(cert.Leaf.DNSNames) + len(cert.Leaf.IPAddresses); n != tt.hosts {
				t.Errorf("%d host SANs, want %d", n, tt.hosts)
			}
			if !strings.Contains(r.stdout, cert.Leaf.NotAfter.UTC().Format(time.RFC3339)) {
				t.Errorf("stdout %q does not give the expiry %v", r.stdout, cert.Leaf.NotAfter)
			}
		})
	}
}

func TestCAInitForce(t *testing.T) {
	isolate(t)
	if r := callMain(t, "ca", "init"); r.code != 0 {
		t.Fatalf("first ca init: %+v", r)
	}
	key, err := os.ReadFile("junction-ca/ca.key")
	if err != nil {
		t.Fatal(err)
	}
	line := checkOneLine(t, callMain(t, "ca", "init"))
	for _, w := range []string{"junction-ca/ca.key", "already exists", "--force"} {
		if !strings.Contains(line, w) {
			t.Errorf("stderr %q does not mention %q", line, w)
		}
	}
	if again, _ := os.ReadFile("junction-ca/ca.key"); string(again) != string(key) {
		t.Fatal("refused ca init changed the key")
	}
	if r := callMain(t, "ca", "init", "--force"); r.code != 0 || r.stderr != "" {
		t.Fatalf("ca init --force: %+v", r)
	}
	if again, _ := os.ReadFile("junction-ca/ca.key"); string(again) == string(key) {
		t.Error("ca init --force kept the old key")
	}
}

func TestCAFailsWithOneLine(t *testing.T) {
	tests := []struct {
		name   string
		noCA   bool
		args   []string
		want   []string // each in the stderr line
		noFile string   // a file that must not have been written
	}{
		{
			name:   "service name with a slash",
			args:   []string{"ca", "issue", "../evil"},
			want:   []string{`invalid service name "../evil"`},
			noFile: "evil.key",
		},
		{
			name: "service name with a space",
			args: []string{"ca", "issue", "my service"},
			want: []string{`invalid service name "my service"`},
		},
		{
			name: "service name too long",
			args: []string{"ca", "issue", strings.Repeat("s", 101)},
			want: []string{"invalid service name"},
		},
		{
			name: "no service",
			args: []string{"ca", "issue"},
			want: []string{"accepts 1 arg(s), received 0"},
		},
		{
			name:   "no CA",
			noCA:   true,
			args:   []string{"ca", "issue", "orders"},
			want:   []string{"junction-ca/ca.crt", "no such file or directory", "junction ca init"},
			noFile: "junction-ca/orders.key",
		},
		{
			name: "CA in another directory",
			args: []string{"ca", "issue", "orders", "--dir", "elsewhere"},
			want: []string{"elsewhere/ca.crt", "junction ca init --dir elsewhere"},
		},
		{
			name: "bad duration",
			args: []string{"ca", "issue", "orders", "--valid", "a year"},
			want: []string{`invalid argument "a year" for "--valid"`},
		},
		{
			name:   "negative duration",
			args:   []string{"ca", "issue", "orders", "--valid", "-1h"},
			want:   []string{"--valid -1h0m0s must be positive"},
			noFile: "junction-ca/orders.key",
		},
		{
			name: "bad host",
			args: []string{"ca", "issue", "orders", "--host", "orders:443"},
			want: []string{`invalid host "orders:443"`},
		},
		{
			name: "output under a regular file",
			args: []string{"ca", "issue", "orders", "--out", "junction-ca/ca.crt/x"},
			want: []string{"creating output directory", "not a directory"},
		},
		{
			name: "unknown subcommand",
			args: []string{"ca", "frobnicate"},
			want: []string{`unknown command "frobnicate"`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			isolate(t)
			if !tt.noCA {
				if r := callMain(t, "ca", "init"); r.code != 0 {
					t.Fatalf("ca init: %+v", r)
				}
			}
			line := checkOneLine(t, callMain(t, tt.args...))
			for _, w := range tt.want {
				if !strings.Contains(line, w) {
					t.Errorf("stderr %q does not mention %q", line, w)
				}
			}
			if tt.noFile != "" {
				if _, err := os.Stat(tt.noFile); err == nil {
					t.Errorf("%s was written", tt.noFile)
				}
			}
		})
	}
}
