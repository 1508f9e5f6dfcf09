package mesh_test

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/junctionhq/junction"
	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/internal/pki"
	"github.com/junctionhq/junction/internal/testutil"
	"github.com/junctionhq/junction/mesh"
)

// meshNode starts a node on the machine's NATS under a shared prefix,
// with mTLS from the CA in dir and the given identity.
func meshNode(t *testing.T, prefix, dir, identity string, mutate func(*config.Config)) *testutil.Node {
	cfg := testutil.Config(t, testutil.External)
	if prefix != "" {
		cfg.NATS.Prefix = prefix
	}
	cfg.Mesh.Identity = identity
	cfg.Mesh.TLS = config.MeshTLS{CA: filepath.Join(dir, "ca.crt"), CAKey: filepath.Join(dir, "ca.key"), CertTTL: config.Duration(time.Hour)}
	if mutate != nil {
		mutate(cfg)
	}
	return testutil.Start(t, cfg)
}

func TestSidecarMTLSAndAccessPolicy(t *testing.T) {
	testutil.RequireService(t, "NATS", strings.TrimPrefix(testutil.ExternalNATSURL(), "nats://"))
	dir := t.TempDir()
	ca, err := pki.InitCA(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	app := newBackend(t, "orders-app")
	sidecar := meshNode(t, "", dir, "", func(c *config.Config) {
		c.Mesh.Sidecar = config.Sidecar{Service: "orders", App: app.URL, TTL: config.Duration(3 * time.Second)}
		c.Mesh.Access = map[string][]string{"orders": {"checkout"}}
	})
	prefix := sidecar.Config.NATS.Prefix
	checkout := meshNode(t, prefix, dir, "checkout", nil)
	intruder := meshNode(t, prefix, dir, "intruder", nil)
	// Cleanups run last-first: checkout stops last and removes the prefix.
	sidecar.KeepNATS, intruder.KeepNATS = true, true

	// The sidecar registered its app under its own mTLS address.
	var inst mesh.InstanceInfo
	testutil.Eventually(t, 5*time.Second, "the registration reaches the caller", func() bool {
		is := services(t, checkout)["orders"].Instances
		if len(is) == 1 {
			inst = is[0]
		}
		return len(is) == 1
	})
	if !inst.MTLS || !strings.HasPrefix(inst.URL, "https://127.0.0.1:") {
		t.Fatalf("registered instance %+v", inst)
	}

	// An allowed caller goes through, and the app learns who called.
	st, _, body := testutil.Do(t, "POST", checkout.URL+"/v1/invoke/orders/orders?x=1", map[string]string{
		"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}, `{"sku":"a"}`)
	if st != 200 || !strings.Contains(body, `"path":"/orders"`) || !strings.Contains(body, `{\"sku\":\"a\"}`) {
		t.Fatalf("allowed call: %d %s", st, body)
	}
	if h := app.header(); h.Get(mesh.CallerHeader) != "checkout" || !strings.Contains(h.Get("traceparent"), "4bf92f3577b34da6a3ce929d0e0e4736") {
		t.Errorf("app saw caller %q traceparent %q", h.Get(mesh.CallerHeader), h.Get("traceparent"))
	}

	// A caller with a valid certificate that the policy does not list: 403.
	hits := app.hits.Load()
	st, _, body = testutil.Do(t, "GET", intruder.URL+"/v1/invoke/orders/orders", nil, "")
	if st != 403 || !strings.Contains(body, `"forbidden"`) || !strings.Contains(body, "intruder may not call orders") {
		t.Errorf("denied caller: %d %s", st, body)
	}

	// Straight at the listener: no client certificate, or one from
	// another CA, fails the handshake; the app never sees either.
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	other, err := pki.NewCA("other", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := other.IssueTLS("checkout", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for name, certs := range map[string][]tls.Certificate{"no certificate": nil, "another CA": {foreign}} {
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
			RootCAs: roots, Certificates: certs, InsecureSkipVerify: true, //nolint:gosec // the server's identity is not what this checks
		}}}
		resp, err := c.Get(inst.URL + "/orders")
		if err == nil {
			resp.Body.Close()
			t.Errorf("%s: got %d, want a failed handshake", name, resp.StatusCode)
		}
	}
	if d := app.hits.Load() - hits; d != 0 {
		t.Errorf("the app got %d refused calls", d)
	}

	// A sidecar that stops deregisters at once.
	sidecar.Stop(t)
	testutil.Eventually(t, 2*time.Second, "deregistration", func() bool {
		_, ok := services(t, checkout)["orders"]
		return !ok
	})
}

func TestNodeCertificateFromFiles(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.InitCA(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.Issue("checkout", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "checkout.crt"), filepath.Join(dir, "checkout.key")
	if err := pki.WriteFile(certFile, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ identity, wantErr string }{
		{"checkout", ""},
		{"billing", `the certificate's identity is "checkout", but this node's identity is "billing"`},
	} {
		cfg := testutil.Config(t, testutil.Embedded)
		cfg.Mesh.Identity = tt.identity
		cfg.Mesh.TLS = config.MeshTLS{CA: filepath.Join(dir, "ca.crt"), Cert: certFile, Key: keyFile, CertTTL: config.Duration(time.Hour)}
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		n, err := junction.New(ctx(t), cfg, junction.WithLogger(testutil.Logger(t)))
		if err == nil {
			n.Close()
		}
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("identity %s: %v", tt.identity, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("identity %s: got %v, want an error containing %q", tt.identity, err, tt.wantErr)
		}
	}
}
