package fleet

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/portcullis/portcullis/fleet/etcdtest"
)

// pki is a test CA and the certificates it signs, as PEM files in dir.
type pki struct {
	t    *testing.T
	dir  string
	key  *ecdsa.PrivateKey
	cert *x509.Certificate
	ca   string // the CA's certificate file
}

func newPKI(t *testing.T) *pki {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "portcullis test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	p := &pki{t: t, dir: t.TempDir(), key: key, cert: cert}
	p.ca = p.write("ca.pem", "CERTIFICATE", der)
	return p
}

func (p *pki) write(name, kind string, der []byte) string {
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		p.t.Fatal(err)
	}
	return path
}

// issue makes a certificate for cn (a server's for 127.0.0.1 when server), and
// returns its certificate and key files.
func (p *pki) issue(cn string, server bool) (certFile, keyFile string) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		p.t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, &key.PublicKey, p.key)
	if err != nil {
		p.t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		p.t.Fatal(err)
	}
	return p.write(cn+".pem", "CERTIFICATE", der), p.write(cn+"-key.pem", "EC PRIVATE KEY", kder)
}

// The production setup of docs/fleet.md: etcd over TLS with client certificate
// authentication, a router's user named by its certificate's common name (no
// password), roles from GrantRouter and GrantNOC. The router connects with the
// daemon's Conn (ca, cert, key), reads its group and cannot push; a client without a
// certificate, or with one from another CA, gets nothing.
func TestTLSClientCertificates(t *testing.T) {
	p := newPKI(t)
	srvCert, srvKey := p.issue("etcd1", true)
	srv := etcdtest.StartTLS(t, &transport.TLSInfo{CertFile: srvCert, KeyFile: srvKey, TrustedCAFile: p.ca, ClientCertAuth: true})
	ctx := ctxT(t)
	dial := func(cn string) *Client {
		t.Helper()
		cert, key := p.issue(cn, false)
		c, err := Dial(Conn{Endpoints: srv.Endpoints, CA: p.ca, Cert: cert, Key: key})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	root := dial("root")
	if _, err := root.etcd.UserAddWithOptions(ctx, "root", "", &clientv3.UserAddOptions{NoPassword: true}); err != nil {
		t.Fatal(err)
	}
	root.etcd.RoleAdd(ctx, "root")
	if _, err := root.etcd.UserGrantRole(ctx, "root", "root"); err != nil {
		t.Fatal(err)
	}
	if err := GrantNOC(ctx, root, "noc-alice", ""); err != nil {
		t.Fatal(err)
	}
	if err := GrantRouter(ctx, root, "dsl", "bng1", "bng1", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := root.etcd.AuthEnable(ctx); err != nil {
		t.Fatal(err)
	}

	noc, bng1 := dial("noc-alice"), dial("bng1")
	rev, err := Push(ctx, noc, "dsl", validPolicy(1), "alice@noc", "over TLS", 0)
	if err != nil {
		t.Fatalf("the NOC pushes with its certificate: %v", err)
	}
	if _, got, err := Read(ctx, bng1, "dsl"); err != nil || got != rev {
		t.Fatalf("the router reads its group with its certificate: %d %v", got, err)
	}
	if _, err := Push(ctx, bng1, "dsl", validPolicy(2), "bng1", "", rev); err == nil || !strings.Contains(err.Error(), "permission denied") ||
		!strings.Contains(err.Error(), "etcd user bng1 may not") {
		t.Errorf("the router's certificate pushed, or the refusal does not name its common name: %v", err)
	}

	// No client certificate: the TLS handshake itself is refused (the client retries
	// until its deadline: a short one).
	short, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	plain, err := Dial(Conn{Endpoints: srv.Endpoints, CA: p.ca, DialTimeout: 2 * time.Second})
	if err == nil {
		defer plain.Close()
		if _, _, err := Read(short, plain, "dsl"); err == nil {
			t.Error("a client without a certificate read the group")
		}
	}
	// A certificate from another CA: refused too.
	other := newPKI(t)
	cert, key := other.issue("bng1", false)
	if c, err := Dial(Conn{Endpoints: srv.Endpoints, CA: p.ca, Cert: cert, Key: key, DialTimeout: 2 * time.Second}); err == nil {
		defer c.Close()
		if _, _, err := Read(short, c, "dsl"); err == nil {
			t.Error("a certificate from another CA read the group")
		}
	}
}
