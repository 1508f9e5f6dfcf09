package pki

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"io/fs"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func newCA(t *testing.T, validity time.Duration) *CA {
	t.Helper()
	ca, err := NewCA("test CA", validity)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func issueTLS(t *testing.T, ca *CA, service string) tls.Certificate {
	t.Helper()
	cert, err := ca.IssueTLS(service, []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// byHand signs a leaf that Issue would never produce: mod changes a
// template that is otherwise a valid leaf for service "billing".
func byHand(t *testing.T, ca *CA, mod func(*x509.Certificate)) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(now.UnixNano()),
		Subject:      pkix.Name{CommonName: "by hand"},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{IdentityURI("billing")},
	}
	mod(tmpl)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func poolOf(cas ...*CA) *x509.CertPool {
	p := x509.NewCertPool()
	for _, ca := range cas {
		p.AddCert(ca.Cert)
	}
	return p
}

// handshakeResult is what each side of one connection saw.
type handshakeResult struct {
	serverID, serverErr, clientErr string // errors are "" on success
	resumed                        bool
}

// handshake runs one real TLS connection over 127.0.0.1: the server
// completes the handshake, reads its peer's identity and writes "ok"; the
// client reads that line, so that a rejection of its certificate (sent
// after the client's side of a TLS 1.3 handshake is done) is seen.
func handshake(t *testing.T, server, client *tls.Config) handshakeResult {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", server)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type side struct {
		id  string
		err error
	}
	done := make(chan side, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- side{err: err}
			return
		}
		defer c.Close()
		tc := c.(*tls.Conn)
		tc.SetDeadline(time.Now().Add(10 * time.Second))
		if err := tc.Handshake(); err != nil {
			done <- side{err: err}
			return
		}
		cs := tc.ConnectionState()
		id, err := PeerIdentity(&cs)
		if err != nil {
			done <- side{err: err}
			return
		}
		if _, err := io.WriteString(tc, "ok\n"); err != nil {
			done <- side{err: err}
			return
		}
		done <- side{id: id}
	}()

	var r handshakeResult
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := (&tls.Dialer{Config: client}).DialContext(ctx, "tcp", ln.Addr().String())
	if err == nil {
		tc := c.(*tls.Conn)
		tc.SetDeadline(time.Now().Add(10 * time.Second))
		r.resumed = tc.ConnectionState().DidResume
		var line string
		if line, err = bufio.NewReader(tc).ReadString('\n'); err == nil && line != "ok\n" {
			err = errors.New("server sent " + line)
		}
		tc.Close()
	}
	if err != nil {
		r.clientErr = err.Error()
	}
	s := <-done
	r.serverID = s.id
	if s.err != nil {
		r.serverErr = s.err.Error()
	}
	return r
}

func TestHandshake(t *testing.T) {
	ca, other := newCA(t, 24*time.Hour), newCA(t, 24*time.Hour)
	roots := poolOf(ca)
	orders, billing := issueTLS(t, ca, "orders"), issueTLS(t, ca, "billing")
	expired := func(c *x509.Certificate) {
		c.NotBefore, c.NotAfter = time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour)
	}

	tests := []struct {
		name           string
		server, client *tls.Config
		wantID         string // the client identity the server sees, on success
		serverErr      string // in the server's error when the server refuses
		clientErr      string // in the client's error when the client refuses
	}{
		{
			name:   "both from the CA, server identity pinned",
			server: ServerTLS(orders, roots),
			client: ClientTLS(billing, roots, "orders"),
			wantID: "billing",
		},
		{
			name:   "both from the CA, any server identity",
			server: ServerTLS(orders, roots),
			client: ClientTLS(billing, roots, ""),
			wantID: "billing",
		},
		{
			name:   "trust bundle with two CAs",
			server: ServerTLS(orders, poolOf(other, ca)),
			client: ClientTLS(issueTLS(t, other, "billing"), poolOf(ca), "orders"),
			wantID: "billing",
		},
		{
			name:      "client without a certificate",
			server:    ServerTLS(orders, roots),
			client:    func() *tls.Config { c := ClientTLS(billing, roots, ""); c.Certificates = nil; return c }(),
			serverErr: "client didn't provide a certificate",
		},
		{
			name:      "client certificate from another CA",
			server:    ServerTLS(orders, roots),
			client:    ClientTLS(issueTLS(t, other, "billing"), roots, ""),
			serverErr: "certificate signed by unknown authority",
		},
		{
			name:      "client certificate without identity",
			server:    ServerTLS(orders, roots),
			client:    ClientTLS(byHand(t, ca, func(c *x509.Certificate) { c.URIs = nil }), roots, ""),
			serverErr: "has no URI SAN",
		},
		{
			name:      "client identity in another trust domain",
			server:    ServerTLS(orders, roots),
			client:    ClientTLS(byHand(t, ca, func(c *x509.Certificate) { c.URIs = []*url.URL{mustURL(t, "spiffe://other/service/billing")} }), roots, ""),
			serverErr: "is not a Junction identity",
		},
		{
			name:   "client certificate with two identities",
			server: ServerTLS(orders, roots),
			client: ClientTLS(byHand(t, ca, func(c *x509.Certificate) {
				c.URIs = append(c.URIs, IdentityURI("admin"))
			}), roots, ""),
			serverErr: "has 2 URI SANs",
		},
		{
			name:      "client certificate for servers only",
			server:    ServerTLS(orders, roots),
			client:    ClientTLS(byHand(t, ca, func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth} }), roots, ""),
			serverErr: "incompatible key usage",
		},
		{
			name:      "expired client certificate",
			server:    ServerTLS(orders, roots),
			client:    ClientTLS(byHand(t, ca, expired), roots, ""),
			serverErr: "expired",
		},
		{
			name:   "client limited to TLS 1.2",
			server: ServerTLS(orders, roots),
			client: func() *tls.Config {
				c := ClientTLS(billing, roots, "")
				c.MinVersion, c.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
				return c
			}(),
			serverErr: "unsupported versions",
		},
		{
			name:      "server certificate from another CA",
			server:    ServerTLS(issueTLS(t, other, "orders"), roots),
			client:    ClientTLS(billing, roots, "orders"),
			clientErr: "certificate signed by unknown authority",
		},
		{
			name:      "server identity is not the wanted one",
			server:    ServerTLS(orders, roots),
			client:    ClientTLS(billing, roots, "payments"),
			clientErr: `identity "orders", want "payments"`,
		},
		{
			name:      "server certificate without identity",
			server:    ServerTLS(byHand(t, ca, func(c *x509.Certificate) { c.URIs = nil }), roots),
			client:    ClientTLS(billing, roots, ""),
			clientErr: "has no URI SAN",
		},
		{
			name:      "expired server certificate",
			server:    ServerTLS(byHand(t, ca, expired), roots),
			client:    ClientTLS(billing, roots, ""),
			clientErr: "expired",
		},
		{
			name:      "server certificate for clients only",
			server:    ServerTLS(byHand(t, ca, func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth} }), roots),
			client:    ClientTLS(billing, roots, ""),
			clientErr: "incompatible key usage",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := handshake(t, tt.server, tt.client)
			if tt.wantID != "" {
				if r.serverErr != "" || r.clientErr != "" || r.serverID != tt.wantID {
					t.Fatalf("got %+v, want success with client identity %q", r, tt.wantID)
				}
				return
			}
			// A refusal must fail both ends, and the refusing end must say why.
			if r.serverErr == "" || r.clientErr == "" {
				t.Fatalf("got %+v, want both sides to fail", r)
			}
			if tt.serverErr != "" && !strings.Contains(r.serverErr, tt.serverErr) {
				t.Errorf("server error %q does not mention %q", r.serverErr, tt.serverErr)
			}
			if tt.clientErr != "" && !strings.Contains(r.clientErr, tt.clientErr) {
				t.Errorf("client error %q does not mention %q", r.clientErr, tt.clientErr)
			}
		})
	}
}

// TestResumption checks that a resumed session, which skips certificate
// verification in crypto/tls, is still held to the identity checks.
func TestResumption(t *testing.T) {
	ca := newCA(t, 24*time.Hour)
	roots := poolOf(ca)
	server := ServerTLS(issueTLS(t, ca, "orders"), roots)
	cache := tls.NewLRUClientSessionCache(4)
	client := func(want string) *tls.Config {
		c := ClientTLS(issueTLS(t, ca, "billing"), roots, want)
		c.ClientSessionCache = cache
		return c
	}
	if r := handshake(t, server, client("orders")); r.serverID != "billing" || r.resumed {
		t.Fatalf("first connection: %+v, want a full handshake as billing", r)
	}
	if r := handshake(t, server, client("orders")); r.serverID != "billing" || !r.resumed {
		t.Fatalf("second connection: %+v, want a resumed session as billing", r)
	}
	if r := handshake(t, server, client("payments")); r.clientErr == "" || !strings.Contains(r.clientErr, `want "payments"`) {
		t.Fatalf("resuming with another wanted identity: %+v, want the client to refuse", r)
	}
}

func TestHTTPPeerIdentity(t *testing.T) {
	ca := newCA(t, 24*time.Hour)
	roots := poolOf(ca)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := PeerIdentity(r.TLS)
		if err != nil {
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
		io.WriteString(w, id)
	}))
	srv.TLS = ServerTLS(issueTLS(t, ca, "orders"), roots)
	srv.StartTLS()
	defer srv.Close()
	tr := &http.Transport{TLSClientConfig: ClientTLS(issueTLS(t, ca, "billing"), roots, "orders")}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || string(body) != "billing" {
		t.Fatalf("got %d %q, want 200 billing", resp.StatusCode, body)
	}
}

func TestPeerIdentityNeedsVerifiedChain(t *testing.T) {
	ca := newCA(t, time.Hour)
	leaf := issueTLS(t, ca, "billing").Leaf
	tests := []struct {
		name string
		cs   *tls.ConnectionState
		want string // identity, or "" for an error
	}{
		{"not TLS", nil, ""},
		{"no peer certificate", &tls.ConnectionState{}, ""},
		{"unverified peer certificate", &tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}}, ""},
		{"verified", &tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}, VerifiedChains: [][]*x509.Certificate{{leaf, ca.Cert}}}, "billing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := PeerIdentity(tt.cs)
			if id != tt.want || (err == nil) != (tt.want != "") {
				t.Errorf("PeerIdentity = %q, %v; want %q", id, err, tt.want)
			}
		})
	}
}

func TestIssue(t *testing.T) {
	ca := newCA(t, 24*time.Hour)
	before := time.Now()
	certPEM, keyPEM, err := ca.Issue("orders", []string{"localhost", "127.0.0.1", "::1", "orders.internal"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatalf("certificate and key do not pair: %v", err)
	}
	if b, _ := pem.Decode(keyPEM); b == nil || b.Type != "PRIVATE KEY" {
		t.Errorf("key PEM is not PKCS#8: %.40q", keyPEM)
	}
	leaf := cert.Leaf
	if id, err := Identity(leaf); id != "orders" || err != nil {
		t.Errorf("Identity = %q, %v; want orders", id, err)
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://junction/service/orders" {
		t.Errorf("URIs = %v", leaf.URIs)
	}
	if strings.Join(leaf.DNSNames, ",") != "localhost,orders.internal" || len(leaf.IPAddresses) != 2 {
		t.Errorf("DNS %v, IP %v", leaf.DNSNames, leaf.IPAddresses)
	}
	if pub, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		t.Errorf("public key %T, want ECDSA P-256", leaf.PublicKey)
	}
	if leaf.IsCA || len(leaf.ExtKeyUsage) != 2 {
		t.Errorf("IsCA %v, ExtKeyUsage %v; want a leaf for server and client auth", leaf.IsCA, leaf.ExtKeyUsage)
	}
	if leaf.SerialNumber.Sign() <= 0 || leaf.SerialNumber.BitLen() > 128 || leaf.SerialNumber.BitLen() < 64 {
		t.Errorf("serial %v is not a 128-bit random number", leaf.SerialNumber)
	}
	if d := leaf.NotBefore.Sub(before.Add(-time.Minute)); d < -2*time.Second || d > 2*time.Second {
		t.Errorf("NotBefore %v, want about a minute before %v", leaf.NotBefore, before)
	}
	if d := leaf.NotAfter.Sub(leaf.NotBefore); d < 24*time.Hour || d > 24*time.Hour+time.Minute+2*time.Second {
		t.Errorf("default lifetime %v, want 24h", d)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: poolOf(ca), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("leaf does not verify: %v", err)
	}

	second, _, err := ca.Issue("orders", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(second, certPEM) {
		t.Error("two issues gave the same certificate")
	}
}

func TestIssueCapsValidityAtCA(t *testing.T) {
	ca := newCA(t, time.Hour)
	cert, err := ca.IssueTLS("orders", nil, 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !cert.Leaf.NotAfter.Equal(ca.Cert.NotAfter) {
		t.Errorf("leaf NotAfter %v, want the CA's %v", cert.Leaf.NotAfter, ca.Cert.NotAfter)
	}
	short, err := ca.IssueTLS("orders", nil, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if !short.Leaf.NotAfter.Before(ca.Cert.NotAfter) {
		t.Errorf("a 10m leaf ends at %v, the CA's end", short.Leaf.NotAfter)
	}
}

func TestIssueErrors(t *testing.T) {
	ca := newCA(t, time.Hour)
	tests := []struct {
		name     string
		service  string
		hosts    []string
		validity time.Duration
		want     string
	}{
		{"empty service", "", nil, 0, "invalid service name"},
		{"service with a slash", "a/b", nil, 0, "invalid service name"},
		{"service too long", strings.Repeat("a", 101), nil, 0, "invalid service name"},
		{"negative validity", "orders", nil, -time.Hour, "must not be negative"},
		{"empty host", "orders", []string{""}, 0, "invalid host"},
		{"host with a port", "orders", []string{"orders:443"}, 0, "invalid host"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := ca.Issue(tt.service, tt.hosts, tt.validity); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Issue error %v, want one mentioning %q", err, tt.want)
			}
		})
	}
	if _, _, err := (&CA{}).Issue("orders", nil, 0); err == nil {
		t.Error("an empty CA issued a certificate")
	}
}

func TestNewCA(t *testing.T) {
	ca := newCA(t, time.Hour)
	c := ca.Cert
	if !c.IsCA || !c.BasicConstraintsValid || !c.MaxPathLenZero || c.MaxPathLen != 0 {
		t.Errorf("IsCA %v, basic constraints %v, MaxPathLenZero %v, MaxPathLen %d", c.IsCA, c.BasicConstraintsValid, c.MaxPathLenZero, c.MaxPathLen)
	}
	if c.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign {
		t.Errorf("KeyUsage %v", c.KeyUsage)
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		t.Errorf("not self-signed: %v", err)
	}
	if pub, ok := c.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		t.Errorf("public key %T, want ECDSA P-256", c.PublicKey)
	}
	if b, _ := pem.Decode(ca.CertPEM); b == nil || !bytes.Equal(b.Bytes, c.Raw) {
		t.Error("CertPEM is not the certificate")
	}
	if _, err := NewCA("x", 0); err == nil {
		t.Error("NewCA with zero validity succeeded")
	}
}

func fileMode(t *testing.T, path string) fs.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestInitCA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	certFile, keyFile := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	checkFiles := func(t *testing.T, ca *CA) {
		t.Helper()
		for path, want := range map[string]fs.FileMode{dir: 0o700, certFile: 0o644, keyFile: 0o600} {
			if got := fileMode(t, path); got != want {
				t.Errorf("%s has mode %v, want %v", path, got, want)
			}
		}
		loaded, err := LoadCA(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		if !loaded.Cert.Equal(ca.Cert) || !bytes.Equal(loaded.CertPEM, ca.CertPEM) {
			t.Error("LoadCA gave another certificate than InitCA")
		}
		if d := time.Until(loaded.Cert.NotAfter); d < 10*365*24*time.Hour-time.Hour {
			t.Errorf("CA valid for %v, want 10 years", d)
		}
		if b, _ := pem.Decode(mustRead(t, keyFile)); b == nil || b.Type != "PRIVATE KEY" {
			t.Error("ca.key is not a PKCS#8 PEM key")
		}
	}

	ca, err := InitCA(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	checkFiles(t, ca)
	key := mustRead(t, keyFile)

	_, err = InitCA(dir, false)
	if !errors.Is(err, fs.ErrExist) || !strings.Contains(err.Error(), keyFile) {
		t.Errorf("second InitCA: %v, want an fs.ErrExist error naming %s", err, keyFile)
	}
	if !bytes.Equal(mustRead(t, keyFile), key) {
		t.Fatal("refused InitCA changed ca.key")
	}

	// Widen the modes to check that force restores them.
	os.Chmod(keyFile, 0o644)
	os.Chmod(certFile, 0o666)
	again, err := InitCA(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(mustRead(t, keyFile), key) {
		t.Error("InitCA with force kept the old key")
	}
	checkFiles(t, again)
	if left, _ := filepath.Glob(filepath.Join(dir, ".*tmp")); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustWrite(t *testing.T, path string, data []byte) string {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadCA(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	caA, err := InitCA(a, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := InitCA(b, false); err != nil {
		t.Fatal(err)
	}
	leafPEM, leafKey, err := caA.Issue("orders", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	sec1, err := x509.MarshalECPrivateKey(caA.Key.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	crt, key := filepath.Join(a, "ca.crt"), filepath.Join(a, "ca.key")

	tests := []struct {
		name      string
		cert, key string
		want      []string // in the error; none for success
	}{
		{"matching", crt, key, nil},
		{"SEC 1 EC key", crt, mustWrite(t, filepath.Join(tmp, "sec1.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})), nil},
		{"key of another CA", crt, filepath.Join(b, "ca.key"), []string{"CA key " + filepath.Join(b, "ca.key") + " does not match CA certificate " + crt}},
		{"missing certificate", filepath.Join(tmp, "none.crt"), key, []string{filepath.Join(tmp, "none.crt"), "no such file"}},
		{"missing key", crt, filepath.Join(tmp, "none.key"), []string{filepath.Join(tmp, "none.key"), "no such file"}},
		{"certificate is a leaf", mustWrite(t, filepath.Join(tmp, "leaf.crt"), leafPEM), mustWrite(t, filepath.Join(tmp, "leaf.key"), leafKey), []string{"leaf.crt is not a CA certificate"}},
		{"certificate is not PEM", mustWrite(t, filepath.Join(tmp, "junk.crt"), []byte("junk")), key, []string{"junk.crt: no PEM CERTIFICATE block"}},
		{"key is not PEM", crt, mustWrite(t, filepath.Join(tmp, "junk.key"), []byte("junk")), []string{"junk.key: no PEM PRIVATE KEY block"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ca, err := LoadCA(tt.cert, tt.key)
			if tt.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				if _, _, err := ca.Issue("orders", nil, 0); err != nil {
					t.Errorf("loaded CA cannot issue: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("LoadCA succeeded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestLoadKeyPairAndPool(t *testing.T) {
	dir := t.TempDir()
	ca, err := InitCA(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.Issue("orders", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	crt, key := mustWrite(t, filepath.Join(dir, "orders.crt"), certPEM), mustWrite(t, filepath.Join(dir, "orders.key"), keyPEM)
	cert, err := LoadKeyPair(crt, key)
	if err != nil {
		t.Fatal(err)
	}
	if id, err := Identity(cert.Leaf); id != "orders" || err != nil {
		t.Errorf("Identity = %q, %v", id, err)
	}

	anon := byHand(t, ca, func(c *x509.Certificate) { c.URIs = nil })
	anonKey, err := x509.MarshalPKCS8PrivateKey(anon.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	anonCrt := mustWrite(t, filepath.Join(dir, "anon.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: anon.Certificate[0]}))
	anonKeyFile := mustWrite(t, filepath.Join(dir, "anon.key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: anonKey}))
	if _, err := LoadKeyPair(anonCrt, anonKeyFile); err == nil || !strings.Contains(err.Error(), "anon.crt") || !strings.Contains(err.Error(), "no URI SAN") {
		t.Errorf("LoadKeyPair without identity: %v", err)
	}
	if _, err := LoadKeyPair(crt, filepath.Join(dir, "ca.key")); err == nil {
		t.Error("LoadKeyPair with the wrong key succeeded")
	}

	pool, err := LoadPool(filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cert.Leaf.Verify(x509.VerifyOptions{Roots: pool}); err != nil {
		t.Errorf("leaf does not verify against the loaded pool: %v", err)
	}
	if _, err := LoadPool(key); err == nil || !strings.Contains(err.Error(), "no PEM CERTIFICATE") {
		t.Errorf("LoadPool of a key file: %v", err)
	}
	if _, err := LoadPool(filepath.Join(dir, "none")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LoadPool of a missing file: %v", err)
	}
}

func TestValidService(t *testing.T) {
	tests := []struct {
		s    string
		want bool
	}{
		{"orders", true},
		{"Order_Service-2", true},
		{"a", true},
		{strings.Repeat("x", 100), true},
		{"", false},
		{strings.Repeat("x", 101), false},
		{"a.b", false},
		{"a/b", false},
		{"a b", false},
		{"café", false},
		{"a%2Fb", false},
	}
	for _, tt := range tests {
		if got := ValidService(tt.s); got != tt.want {
			t.Errorf("ValidService(%q) = %v, want %v", tt.s, got, tt.want)
		}
	}
}

func TestIdentity(t *testing.T) {
	ca := newCA(t, time.Hour)
	leaf := func(uris ...string) *x509.Certificate {
		return byHand(t, ca, func(c *x509.Certificate) {
			c.URIs = nil
			for _, u := range uris {
				c.URIs = append(c.URIs, mustURL(t, u))
			}
		}).Leaf
	}
	tests := []struct {
		name string
		cert *x509.Certificate
		want string // "" for an error
	}{
		{"one identity", leaf("spiffe://junction/service/orders"), "orders"},
		{"nil", nil, ""},
		{"no URI", leaf(), ""},
		{"two URIs", leaf("spiffe://junction/service/orders", "https://example.com"), ""},
		{"two identities", leaf("spiffe://junction/service/orders", "spiffe://junction/service/billing"), ""},
		{"other trust domain", leaf("spiffe://other/service/orders"), ""},
		{"not a service", leaf("spiffe://junction/workload/orders"), ""},
		{"nested path", leaf("spiffe://junction/service/orders/x"), ""},
		{"escaped slash", leaf("spiffe://junction/service/a%2Fb"), ""},
		{"port", leaf("spiffe://junction:1/service/orders"), ""},
		{"query", leaf("spiffe://junction/service/orders?x=1"), ""},
		{"user", leaf("spiffe://u@junction/service/orders"), ""},
		{"upper-case trust domain", leaf("spiffe://JUNCTION/service/orders"), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Identity(tt.cert)
			if got != tt.want || (err == nil) != (tt.want != "") {
				t.Errorf("Identity = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestParseIdentity(t *testing.T) {
	tests := []struct {
		raw, want string // want "" for an error
	}{
		{"spiffe://junction/service/orders", "orders"},
		{"spiffe://junction/service/" + strings.Repeat("a", 100), strings.Repeat("a", 100)},
		{"spiffe://junction/service/" + strings.Repeat("a", 101), ""},
		{"spiffe://junction/service/", ""},
		{"spiffe://junction/service/orders/", ""},
		{"spiffe://junction/service/orders#x", ""},
		{"spiffe://junction/service/ord%65rs", ""},
		{"SPIFFE://junction/service/orders", ""},
		{"spiffe://junction./service/orders", ""},
		{" spiffe://junction/service/orders", ""},
		{"spiffe://junction/service/orders\n", ""},
		{"", ""},
	}
	for _, tt := range tests {
		got, err := parseIdentity(tt.raw)
		if got != tt.want || (err == nil) != (tt.want != "") {
			t.Errorf("parseIdentity(%q) = %q, %v; want %q", tt.raw, got, err, tt.want)
		}
		if u := IdentityURI(tt.want); tt.want != "" && u.String() != tt.raw {
			t.Errorf("IdentityURI(%q) = %s, want %s", tt.want, u, tt.raw)
		}
	}
}

func FuzzIdentity(f *testing.F) {
	for _, s := range []string{
		"spiffe://junction/service/orders",
		"spiffe://junction/service/a-b_C9",
		"spiffe://other/service/orders",
		"spiffe://junction/service/a/b",
		"spiffe://junction/service/",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		name, err := parseIdentity(raw)
		canonical := strings.HasPrefix(raw, identityPrefix) && ValidService(raw[len(identityPrefix):])
		if err != nil {
			if name != "" {
				t.Errorf("parseIdentity(%q) returned %q with error %v", raw, name, err)
			}
			if canonical {
				t.Errorf("parseIdentity(%q) refused a well-formed identity: %v", raw, err)
			}
			return
		}
		if !canonical || !ValidService(name) || IdentityURI(name).String() != raw {
			t.Errorf("parseIdentity(%q) accepted %q", raw, name)
		}
		// What the x509 parser would give back must round-trip too.
		if u, err := url.Parse(raw); err != nil || u.String() != raw {
			t.Errorf("accepted identity %q does not round-trip through net/url: %v", raw, err)
		}
	})
}
