// Package pki issues and checks the mTLS identities of Junction's service
// mesh. Every service holds a short-lived certificate from one Junction CA
// whose only URI SAN is spiffe://junction/service/<name>; peers trust that
// identity and the CA's signature, never DNS names.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// TrustDomain is the SPIFFE trust domain of every identity Junction issues.
const TrustDomain = "junction"

// identityPrefix is everything of an identity URI before the service name.
const identityPrefix = "spiffe://" + TrustDomain + "/service/"

const (
	// defaultLeafValidity is the lifetime of a leaf when Issue is given 0:
	// short, so that a leaked key is soon useless without revocation.
	defaultLeafValidity = 24 * time.Hour
	// caValidity is long because replacing the CA means reissuing everything.
	caValidity = 10 * 365 * 24 * time.Hour
	// backdate absorbs clock skew between the issuer and its peers.
	backdate = time.Minute
	// maxServiceLen keeps identities readable in logs and metric labels.
	maxServiceLen = 100
)

// IdentityURI returns spiffe://junction/service/<service>; service should satisfy ValidService.
func IdentityURI(service string) *url.URL {
	return &url.URL{Scheme: "spiffe", Host: TrustDomain, Path: "/service/" + service}
}

// ValidService reports whether s can be a service identity: [A-Za-z0-9_-], 1..100 chars.
func ValidService(s string) bool {
	if len(s) == 0 || len(s) > maxServiceLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// parseIdentity returns the service name of an identity URI. Only the exact
// canonical spelling is accepted: any other form (case, escapes, port,
// query, trailing slash) would let two strings name one identity.
func parseIdentity(raw string) (string, error) {
	name, ok := strings.CutPrefix(raw, identityPrefix)
	if !ok {
		return "", fmt.Errorf("URI SAN %q is not a Junction identity (want %s<service>)", clip(raw), identityPrefix)
	}
	if !ValidService(name) {
		return "", fmt.Errorf("URI SAN %q has an invalid service name (want 1 to %d letters, digits, '-' or '_')", clip(raw), maxServiceLen)
	}
	return name, nil
}

// clip bounds attacker-supplied text quoted in error messages.
func clip(s string) string {
	const max = 200
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}

// Identity returns the service name in cert's URI SAN (spiffe://junction/service/<name>), or an error if there is none or more than one.
// As in SPIFFE X.509-SVIDs, the certificate must carry exactly one URI SAN.
func Identity(cert *x509.Certificate) (string, error) {
	if cert == nil {
		return "", errors.New("no certificate, so no Junction identity")
	}
	switch len(cert.URIs) {
	case 0:
		return "", fmt.Errorf("certificate %q has no URI SAN, so no Junction identity", cert.Subject.CommonName)
	case 1:
		return parseIdentity(cert.URIs[0].String())
	default:
		return "", fmt.Errorf("certificate %q has %d URI SANs, want exactly one Junction identity", cert.Subject.CommonName, len(cert.URIs))
	}
}

// CA is a certificate authority that issues service certificates.
type CA struct {
	Cert    *x509.Certificate
	Key     crypto.Signer
	CertPEM []byte
}

// NewCA creates a self-signed ECDSA P-256 CA that may sign leaves only (path length zero).
func NewCA(commonName string, validity time.Duration) (*CA, error) {
	if validity <= 0 {
		return nil, fmt.Errorf("CA validity %v must be positive", validity)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName, Organization: []string{"Junction"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(validity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("creating CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing new CA certificate: %w", err)
	}
	return &CA{Cert: cert, Key: key, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// InitCA creates dir (0700) holding a new ten-year CA as ca.crt (0644) and ca.key (0600, PKCS#8);
// it refuses to replace an existing ca.key unless force is set, with an error wrapping fs.ErrExist.
func InitCA(dir string, force bool) (*CA, error) {
	certFile, keyFile := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	if !force {
		if _, err := os.Lstat(keyFile); err == nil {
			return nil, fmt.Errorf("refusing to overwrite CA key %s: %w", keyFile, fs.ErrExist)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("checking CA key %s: %w", keyFile, err)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating CA directory: %w", err)
	}
	ca, err := NewCA("Junction CA", caValidity)
	if err != nil {
		return nil, err
	}
	keyPEM, err := encodeKey(ca.Key)
	if err != nil {
		return nil, err
	}
	// The key goes first: a certificate without its key is useless, while
	// a key left behind by a failed cert write is caught by the force check.
	if err := WriteFile(keyFile, keyPEM, 0o600); err != nil {
		return nil, err
	}
	if err := WriteFile(certFile, ca.CertPEM, 0o644); err != nil {
		return nil, err
	}
	return ca, nil
}

// LoadCA reads a CA written by InitCA, checking that the key matches the certificate and that the certificate is a CA.
func LoadCA(certFile, keyFile string) (*CA, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("reading CA certificate: %w", err)
	}
	cert, err := parseCertPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("CA certificate %s: %w", certFile, err)
	}
	if !cert.IsCA || !cert.BasicConstraintsValid || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("CA certificate %s is not a CA certificate (no CA basic constraint or no cert-sign key usage)", certFile)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("reading CA key: %w", err)
	}
	key, err := parseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("CA key %s: %w", keyFile, err)
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("CA key %s does not match CA certificate %s", keyFile, certFile)
	}
	return &CA{Cert: cert, Key: key, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})}, nil
}

// Issue creates a leaf certificate and PKCS#8 key for service, usable as both TLS server and client.
// hosts become DNS or IP SANs; validity 0 means 24h, and the leaf never outlives the CA.
func (ca *CA) Issue(service string, hosts []string, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	der, key, err := ca.issue(service, hosts, validity)
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM, nil
}

// IssueTLS is Issue returning a tls.Certificate with Leaf set, for use in memory.
func (ca *CA) IssueTLS(service string, hosts []string, validity time.Duration) (tls.Certificate, error) {
	der, key, err := ca.issue(service, hosts, validity)
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("parsing new certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

func (ca *CA) issue(service string, hosts []string, validity time.Duration) ([]byte, crypto.Signer, error) {
	if ca == nil || ca.Cert == nil || ca.Key == nil {
		return nil, nil, errors.New("issuing a certificate: CA has no certificate or key")
	}
	if !ValidService(service) {
		return nil, nil, fmt.Errorf("invalid service name %q: want 1 to %d letters, digits, '-' or '_'", clip(service), maxServiceLen)
	}
	switch {
	case validity < 0:
		return nil, nil, fmt.Errorf("certificate validity %v must not be negative", validity)
	case validity == 0:
		validity = defaultLeafValidity
	}
	now := time.Now()
	if !now.Before(ca.Cert.NotAfter) {
		return nil, nil, fmt.Errorf("CA certificate expired at %s", ca.Cert.NotAfter.UTC().Format(time.RFC3339))
	}
	notBefore, notAfter := now.Add(-backdate), now.Add(validity)
	if notBefore.Before(ca.Cert.NotBefore) {
		notBefore = ca.Cert.NotBefore
	}
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	serial, err := newSerial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: service, Organization: []string{"Junction"}},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{IdentityURI(service)},
	}
	for _, h := range hosts {
		switch ip := net.ParseIP(h); {
		case ip != nil:
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		case h == "" || strings.ContainsAny(h, " /:"):
			return nil, nil, fmt.Errorf("invalid host %q: want a DNS name or an IP address", clip(h))
		default:
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generating key: %w", err)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("creating certificate for %s: %w", service, err)
	}
	return der, key, nil
}

// LoadPool reads the CA certificates that peers must chain to.
func LoadPool(caFile string) (*x509.CertPool, error) {
	data, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("reading CA certificates: %w", err)
	}
	pool := x509.NewCertPool()
	n := 0
	for rest := data; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("CA certificates %s: %w", caFile, err)
		}
		pool.AddCert(cert)
		n++
	}
	if n == 0 {
		return nil, fmt.Errorf("CA certificates %s: no PEM CERTIFICATE block", caFile)
	}
	return pool, nil
}

// LoadKeyPair reads a service certificate and key (with Leaf set), failing if the certificate carries no Junction identity.
func LoadKeyPair(certFile, keyFile string) (tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("loading %s and %s: %w", certFile, keyFile, err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return tls.Certificate{}, fmt.Errorf("certificate %s: %w", certFile, err)
		}
	}
	if _, err := Identity(cert.Leaf); err != nil {
		return tls.Certificate{}, fmt.Errorf("certificate %s: %w", certFile, err)
	}
	return cert, nil
}

// ServerTLS accepts only TLS 1.3 clients whose certificate chains to roots and carries a Junction identity.
func ServerTLS(cert tls.Certificate, roots *x509.CertPool) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    roots,
		// VerifyConnection also runs on resumed sessions, unlike
		// VerifyPeerCertificate, so a resumed session is checked too.
		VerifyConnection: func(cs tls.ConnectionState) error {
			if _, err := PeerIdentity(&cs); err != nil {
				return fmt.Errorf("client certificate refused: %w", err)
			}
			return nil
		},
	}
}

// ClientTLS dials TLS 1.3 servers whose certificate chains to roots and, when want != "", whose identity is want.
// Host names are not checked: the mesh trusts identities, not DNS names, so the chain is verified in VerifyConnection.
// As a consequence the client's ConnectionState has no VerifiedChains, and PeerIdentity does not work on it; pin the server with want.
func ClientTLS(cert tls.Certificate, roots *x509.CertPool, want string) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		Certificates:       []tls.Certificate{cert},
		InsecureSkipVerify: true, // replaced by verifyServer, which checks everything but the host name
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyServer(cs, roots, want)
		},
	}
}

func verifyServer(cs tls.ConnectionState, roots *x509.CertPool, want string) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("server certificate refused: server sent no certificate")
	}
	opts := x509.VerifyOptions{
		Roots:         roots,
		Intermediates: x509.NewCertPool(),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, c := range cs.PeerCertificates[1:] {
		opts.Intermediates.AddCert(c)
	}
	leaf := cs.PeerCertificates[0]
	if _, err := leaf.Verify(opts); err != nil {
		return fmt.Errorf("server certificate refused: %w", err)
	}
	id, err := Identity(leaf)
	if err != nil {
		return fmt.Errorf("server certificate refused: %w", err)
	}
	if want != "" && id != want {
		return fmt.Errorf("server certificate refused: identity %q, want %q", id, want)
	}
	return nil
}

// PeerIdentity returns the identity of the verified peer certificate of a connection state (for the server side, from r.TLS).
// It fails when the peer's chain was not verified by crypto/tls, so a plain certificate is never trusted.
func PeerIdentity(cs *tls.ConnectionState) (string, error) {
	if cs == nil {
		return "", errors.New("not a TLS connection")
	}
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		if len(cs.PeerCertificates) == 0 {
			return "", errors.New("peer sent no certificate")
		}
		return "", errors.New("peer certificate was not verified")
	}
	return Identity(cs.VerifiedChains[0][0])
}

// WriteFile replaces path with data and mode perm, so that readers
// never see a partial file and a key never exists with a wider mode.
func WriteFile(path string, data []byte, perm fs.FileMode) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
			err = fmt.Errorf("writing %s: %w", path, err)
		}
	}()
	if err = f.Chmod(perm); err != nil {
		return err
	}
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

func newSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("generating serial number: %w", err)
	}
	return serial, nil
}

func encodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func parseCertPEM(data []byte) (*x509.Certificate, error) {
	for rest := data; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			return nil, errors.New("no PEM CERTIFICATE block")
		}
		if b.Type == "CERTIFICATE" {
			return x509.ParseCertificate(b.Bytes)
		}
	}
}

// parseKeyPEM accepts PKCS#8 as written here, and SEC 1 EC keys as
// written by openssl ecparam, so a CA made with openssl can be used.
func parseKeyPEM(data []byte) (crypto.Signer, error) {
	for rest := data; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			return nil, errors.New("no PEM PRIVATE KEY block")
		}
		var (
			key any
			err error
		)
		switch b.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(b.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, err
		}
		s, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("%T is not a signing key", key)
		}
		return s, nil
	}
}
