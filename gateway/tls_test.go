package gateway_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/internal/testutil"
)

// issue makes a certificate signed by parent (self-signed when parent is
// nil) and writes it and its key as PEM files in dir.
func issue(t *testing.T, dir, name string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, ca bool) (*x509.Certificate, *ecdsa.PrivateKey, string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, IsCA: ca, BasicConstraintsValid: true,
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	kb, _ := x509.MarshalECPrivateKey(key)
	cf, kf := filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	os.WriteFile(cf, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(kf, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	return cert, key, cf, kf
}

// The gateway terminates TLS, speaks HTTP/2 over it, and with
// require_client_cert admits only clients with a certificate of its CA.
func TestTLSTermination(t *testing.T) {
	dir := t.TempDir()
	ca, caKey, caFile, _ := issue(t, dir, "ca", nil, nil, true)
	_, _, certFile, keyFile := issue(t, dir, "gateway", ca, caKey, false)
	_, _, clientCert, clientKey := issue(t, dir, "client", ca, caKey, false)

	echo := headerEcho(t, 0)
	cfg := testutil.Config(t, testutil.Embedded)
	cfg.Gateway = config.Gateway{Listen: "127.0.0.1:0",
		TLS: config.GatewayTLS{Cert: certFile, Key: keyFile, ClientCA: caFile, RequireClientCert: true},
		Routes: []*config.GatewayRoute{
			{Path: "/hello", Static: &config.GatewayStatic{Body: "hi"}},
			{Path: "/admin", When: `request.client_cert.subject == "CN=client"`, URL: []string{echo.URL}},
		}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	n := testutil.Start(t, cfg)
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	kp, err := tls.LoadX509KeyPair(clientCert, clientKey)
	if err != nil {
		t.Fatal(err)
	}
	url := "https://" + n.Node.GatewayAddr() + "/hello"

	withCert := &http.Client{Transport: &http.Transport{ForceAttemptHTTP2: true, TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{kp}}}}
	resp, err := withCert.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "hi" || resp.ProtoMajor != 2 {
		t.Fatalf("with a client certificate: %d %q over %s", resp.StatusCode, b, resp.Proto)
	}
	// The verified certificate's subject reaches CEL and the service; a
	// client cannot send its own.
	req, _ := http.NewRequest("GET", "https://"+n.Node.GatewayAddr()+"/admin", nil)
	req.Header.Set("X-Client-Cert-Subject", "CN=admin")
	resp, err = withCert.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var echoed struct{ Headers map[string][]string }
	json.NewDecoder(resp.Body).Decode(&echoed)
	resp.Body.Close()
	if resp.StatusCode != 200 || fmt.Sprint(echoed.Headers["X-Client-Cert-Subject"]) != "[CN=client]" {
		t.Errorf("client certificate subject upstream: %d %v", resp.StatusCode, echoed.Headers)
	}
	without := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	if resp, err := without.Get(url); err == nil {
		resp.Body.Close()
		t.Fatalf("without a client certificate: %d, want a refused handshake", resp.StatusCode)
	}
}
