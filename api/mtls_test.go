package api

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/portcullis/portcullis/overlay"
)

// pki is a test CA, a server certificate for 127.0.0.1 it signed, and client
// certificates by CN, as PEM files; plus a second CA nobody trusts and a client
// certificate it signed.
type pki struct {
	caFile, serverCert, serverKey string
	clientCerts, clientKeys       map[string]string // CN -> file
	roots                         *x509.CertPool
	dir                           string
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	p := &pki{dir: t.TempDir(), clientCerts: map[string]string{}, clientKeys: map[string]string{}, roots: x509.NewCertPool()}
	ca, caKey := p.issue(t, "Portcullis test CA", nil, nil, true)
	p.roots.AddCert(ca)
	p.caFile = p.write(t, "ca.pem", "CERTIFICATE", ca.Raw)
	srv, srvKey := p.issue(t, "api.isp.test", ca, caKey, false, net.IPv4(127, 0, 0, 1))
	p.serverCert = p.write(t, "server.pem", "CERTIFICATE", srv.Raw)
	p.serverKey = p.writeKey(t, "server-key.pem", srvKey)
	for _, cn := range []string{"portal.isp.example", "desk.isp.example", "stranger.isp.example"} {
		c, k := p.issue(t, cn, ca, caKey, false)
		p.clientCerts[cn] = p.write(t, cn+".pem", "CERTIFICATE", c.Raw)
		p.clientKeys[cn] = p.writeKey(t, cn+"-key.pem", k)
	}
	other, otherKey := p.issue(t, "Someone else's CA", nil, nil, true)
	c, k := p.issue(t, "portal.isp.example", other, otherKey, false)
	p.clientCerts["untrusted"] = p.write(t, "untrusted.pem", "CERTIFICATE", c.Raw)
	p.clientKeys["untrusted"] = p.writeKey(t, "untrusted-key.pem", k)
	// The key of "portal" under its short name, for tests that want any key.
	p.clientKeys["portal"] = p.clientKeys["portal.isp.example"]
	return p
}

// issue makes a certificate for cn signed by parent (self-signed if parent is nil).
func (p *pki) issue(t *testing.T, cn string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, isCA bool, ips ...net.IP) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"Portcullis tests"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		IPAddresses:  ips,
	}
	if isCA {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature
	} else {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func (p *pki) write(t *testing.T, name, typ string, der []byte) string {
	return writeFile(t, p.dir, name, string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})))
}

func (p *pki) writeKey(t *testing.T, name string, k *ecdsa.PrivateKey) string {
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return p.write(t, name, "EC PRIVATE KEY", der)
}

// client is an HTTPS client that trusts the test CA and presents the certificate of
// cn ("" for none).
func (p *pki) client(t *testing.T, cn string) *http.Client {
	t.Helper()
	conf := &tls.Config{RootCAs: p.roots, MinVersion: tls.VersionTLS12}
	if cn != "" {
		c, err := tls.LoadX509KeyPair(p.clientCerts[cn], p.clientKeys[cn])
		if err != nil {
			t.Fatal(err)
		}
		conf.Certificates = []tls.Certificate{c}
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: conf}}
}

func TestMutualTLS(t *testing.T) {
	p := newPKI(t)
	clientsFile := writeFile(t, t.TempDir(), "clients.yaml", `clients:
  - name: portal
    scopes: [read, unblock]
    cert_cn: portal.isp.example
  - name: abuse-desk
    scopes: [read, quarantine]
    cert_cn: desk.isp.example
`)
	// On every interface: with TLS and client certificates that is allowed.
	cfg := Config{Listen: "0.0.0.0:9726", Clients: clientsFile, TLSCert: p.serverCert, TLSKey: p.serverKey, ClientCA: p.caFile}
	e := startEnv(t, cfg, p.client(t, "portal.isp.example"), "https")

	// A good certificate: its CN names the client.
	r := e.do("POST", "/v1/unblocks", "", `{"address": "100.64.1.10", "for": "30d", "reason": "opt-out", "ticket": "P-1"}`)
	want(t, r, http.StatusCreated, "portal", "")
	var got overlay.Entry
	if err := json.Unmarshal(r.body, &got); err != nil || got.Who != "api:portal" {
		t.Errorf("entry %s (%v), want who api:portal", r, err)
	}
	// Its scopes are the client's: the portal cannot quarantine.
	want(t, e.do("POST", "/v1/quarantines", "", quarantineBody), http.StatusForbidden, "portal", `needs the "quarantine" scope; client "portal" has read, unblock`)
	// A bearer token is not consulted: the certificate decides.
	req, _ := http.NewRequest("POST", e.base+"/v1/quarantines", strings.NewReader(quarantineBody))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+tokens["all"])
	want(t, e.send(req), http.StatusForbidden, "portal", "scope")

	// Another certificate, another client.
	e.hc = p.client(t, "desk.isp.example")
	want(t, e.do("POST", "/v1/quarantines", "", quarantineBody), http.StatusCreated, "abuse-desk", "")

	// A certificate the CA signed for a CN no client has: 403 naming it.
	e.hc = p.client(t, "stranger.isp.example")
	want(t, e.do("GET", "/v1/entries", "", nil), http.StatusForbidden, "-", `the client certificate's CN "stranger.isp.example" names no client`)
	want(t, e.do("DELETE", "/v1/unblocks/100.64.1.10?reason=x", "", nil), http.StatusForbidden, "-", "stranger.isp.example")

	adds, releases := e.be.calls()
	// No certificate, or one from a CA the API does not trust (even with a CN a
	// client has): the TLS handshake fails and no request is made.
	for _, cn := range []string{"", "untrusted"} {
		hc := p.client(t, cn)
		req, _ := http.NewRequest("GET", e.base+"/v1/entries", nil)
		req.Header.Set("Authorization", "Bearer "+tokens["all"])
		res, err := hc.Do(req)
		if err == nil {
			res.Body.Close()
			t.Errorf("client certificate %q: got %d, want the handshake refused", cn, res.StatusCode)
			continue
		}
		if !strings.Contains(err.Error(), "tls:") {
			t.Errorf("client certificate %q: %v, want a TLS error", cn, err)
		}
		hc.CloseIdleConnections()
	}
	if a, r := e.be.calls(); a != adds || r != releases {
		t.Errorf("refused handshakes reached the backend")
	}

	// Plain HTTP to the TLS port gets nowhere either.
	res, err := http.Get("http://" + strings.TrimPrefix(e.base, "https://") + "/v1/entries")
	if err == nil {
		res.Body.Close()
		if res.StatusCode != http.StatusBadRequest {
			t.Errorf("plain HTTP to the TLS port: %d", res.StatusCode)
		}
	}
}

func TestTLSWithTokens(t *testing.T) {
	// TLS without client certificates: bearer tokens, over HTTPS.
	p := newPKI(t)
	cfg := Config{Listen: "0.0.0.0:9726", Clients: tokenClients(t), TLSCert: p.serverCert, TLSKey: p.serverKey}
	e := startEnv(t, cfg, p.client(t, ""), "https")
	want(t, e.do("POST", "/v1/quarantines", "desk", quarantineBody), http.StatusCreated, "desk", "")
	want(t, e.do("GET", "/v1/entries", "", nil), http.StatusUnauthorized, "-", "no bearer token")
	// A client certificate is not asked for, and not used to identify anyone.
	e.hc = p.client(t, "portal.isp.example")
	want(t, e.do("GET", "/v1/entries", "", nil), http.StatusUnauthorized, "-", "no bearer token")
}
