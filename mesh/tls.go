package mesh

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/junctionhq/junction/config"
	"github.com/junctionhq/junction/internal/pki"
	"github.com/junctionhq/junction/internal/problem"
)

// identity is this node's mesh certificate and the CA it trusts. With the
// CA's key at hand the node issues its own certificate and renews it at
// two thirds of its life.
type identity struct {
	name  string
	roots *x509.CertPool
	ca    *pki.CA // nil when the certificate comes from files
	ttl   time.Duration
	cert  atomic.Pointer[tls.Certificate]
}

func loadIdentity(c config.Mesh) (*identity, error) {
	id := &identity{name: c.NodeIdentity(), ttl: c.TLS.CertTTL.D()}
	var err error
	if id.roots, err = pki.LoadPool(c.TLS.CA); err != nil {
		return nil, fmt.Errorf("mesh.tls.ca: %w", err)
	}
	if c.TLS.CAKey != "" {
		if id.ca, err = pki.LoadCA(c.TLS.CA, c.TLS.CAKey); err != nil {
			return nil, fmt.Errorf("mesh.tls.ca_key: %w", err)
		}
		if err := id.issue(); err != nil {
			return nil, err
		}
		return id, nil
	}
	cert, err := pki.LoadKeyPair(c.TLS.Cert, c.TLS.Key)
	if err != nil {
		return nil, fmt.Errorf("mesh.tls.cert: %w", err)
	}
	if got, err := pki.Identity(cert.Leaf); err != nil || got != id.name {
		return nil, fmt.Errorf("mesh.tls.cert: the certificate's identity is %q, but this node's identity is %q (mesh.identity or the sidecar's service)", got, id.name)
	}
	id.cert.Store(&cert)
	return id, nil
}

func (id *identity) issue() error {
	cert, err := id.ca.IssueTLS(id.name, nil, id.ttl)
	if err != nil {
		return fmt.Errorf("issuing the node certificate: %w", err)
	}
	id.cert.Store(&cert)
	return nil
}

// renew keeps an issued certificate fresh until ctx ends.
func (id *identity) renew(ctx context.Context, onErr func(error)) {
	if id.ca == nil {
		return
	}
	for {
		t := time.NewTimer(id.ttl * 2 / 3)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if err := id.issue(); err != nil {
			onErr(err)
		}
	}
}

func (id *identity) current() *tls.Certificate { return id.cert.Load() }

// client is the TLS config for a connection to a peer that must prove
// identity want.
func (id *identity) client(want string) *tls.Config {
	c := pki.ClientTLS(*id.current(), id.roots, want)
	c.Certificates = nil
	c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return id.current(), nil }
	return c
}

func (id *identity) server() *tls.Config {
	c := pki.ServerTLS(*id.current(), id.roots)
	c.Certificates = nil
	c.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return id.current(), nil }
	return c
}

// transports builds the upstream transports: plain (http, and https with
// the system roots) and secure (mTLS to Junction sidecars, the server's
// identity checked against the service called).
func (m *Mesh) transports() (plain, secure *http.Transport) {
	dialer := &net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}
	base := &http.Transport{
		DialContext:           dialer.DialContext,
		MaxIdleConns:          4096,
		MaxIdleConnsPerHost:   512, // a proxy's default of 2 would redial under load
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	plain = base.Clone()
	secure = base.Clone()
	secure.DialTLSContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if m.tls == nil {
			return nil, problem.New(problem.CodeUpstream, "the instance at %s is an mTLS sidecar, but this node has no mesh.tls", addr)
		}
		d := tls.Dialer{NetDialer: dialer, Config: m.tls.client(peerOf(ctx))}
		return d.DialContext(ctx, network, addr)
	}
	return plain, secure
}

// h2cTransport calls instances of h2c services: HTTP/2 over plain TCP
// with prior knowledge, as gRPC servers expect.
func h2cTransport() *http.Transport {
	t := &http.Transport{
		DialContext:     (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		IdleConnTimeout: 90 * time.Second,
		Protocols:       new(http.Protocols),
	}
	t.Protocols.SetUnencryptedHTTP2(true)
	return t
}
