package api

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
)

func TestHashToken(t *testing.T) {
	// The SHA-256 test vector for "abc" (FIPS 180-2).
	if got := HashToken("abc"); got != "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" {
		t.Errorf("HashToken(abc) = %s", got)
	}
	// What the documentation tells people to run gives the same.
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh to run the documented command")
	}
	if _, err := exec.LookPath("sha256sum"); err != nil {
		t.Skip("no sha256sum to run the documented command")
	}
	cmd := exec.Command(sh, "-c", `printf %s "$TOKEN" | sha256sum`)
	cmd.Env = []string{"TOKEN=" + tokens["desk"], "PATH=/usr/bin:/bin"}
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	if got, _, _ := strings.Cut(string(out), " "); got != HashToken(tokens["desk"]) {
		t.Errorf("printf %%s \"$TOKEN\" | sha256sum = %s, HashToken = %s", got, HashToken(tokens["desk"]))
	}
}

func TestClientsFile(t *testing.T) {
	h1, h2 := HashToken("one"), HashToken("two")
	for _, c := range []struct {
		name, file string
		says       []string // each must be in the error
	}{
		{"unknown scope", `clients:
  - name: desk
    scopes: [read, write]
    token_sha256: ` + h1 + "\n",
			[]string{`c.yaml:3: unknown scope "write"; the scopes are read, quarantine, unblock`}},
		{"scope twice", `clients:
  - name: desk
    scopes:
      - read
      - read
    token_sha256: ` + h1 + "\n",
			[]string{"c.yaml:5: scope read is listed twice"}},
		{"duplicate name", `clients:
  - name: desk
    scopes: [read]
    token_sha256: ` + h1 + `
  - name: desk
    scopes: [quarantine]
    token_sha256: ` + h2 + "\n",
			[]string{`c.yaml:5: duplicate client name "desk" (first at line 2); give each client its own name`}},
		{"duplicate token", `clients:
  - name: desk
    scopes: [read]
    token_sha256: ` + h1 + `
  - name: portal
    scopes: [unblock]
    token_sha256: ` + strings.ToUpper(h1) + "\n",
			[]string{`c.yaml:7: client "portal" has the same token as client "desk" (line 2); give each client its own token`}},
		{"bad hex", `clients:
  - name: desk
    scopes: [read]
    token_sha256: tok-desk-9a7f3d
`, []string{"c.yaml:4: token_sha256 is not a SHA-256 in hex (64 hex digits; this is 15 characters)", `printf %s "$TOKEN" | sha256sum`}},
		{"short hex", `clients:
  - name: desk
    scopes: [read]
    token_sha256: ba7816bf8f01cfea
`, []string{"c.yaml:4: token_sha256 is not a SHA-256 in hex"}},
		{"hash of nothing", `clients:
  - name: desk
    scopes: [read]
    token_sha256: ` + HashToken("") + "\n",
			[]string{"c.yaml:4: token_sha256 is the SHA-256 of an empty token (was $TOKEN unset?)"}},
		{"neither", `clients:
  - name: desk
    scopes: [read]
`, []string{`c.yaml:2: client "desk" has neither token_sha256 nor cert_cn: give it token_sha256`}},
		{"both", `clients:
  - name: desk
    scopes: [read]
    token_sha256: ` + h1 + `
    cert_cn: desk.isp.example
`, []string{`c.yaml:2: client "desk" has both token_sha256 and cert_cn: give it one`}},
		{"no name", `clients:
  - scopes: [read]
    token_sha256: ` + h1 + "\n",
			[]string{"c.yaml:2: this client has no name"}},
		{"bad name", `clients:
  - name: abuse desk
    scopes: [read]
    token_sha256: ` + h1 + "\n",
			[]string{`c.yaml:2: name "abuse desk" has ' '; use letters, digits`}},
		{"no scopes", `clients:
  - name: desk
    token_sha256: ` + h1 + "\n",
			[]string{`c.yaml:2: client "desk" has no scopes: give it some of read, quarantine, unblock`}},
		{"empty scopes", `clients:
  - name: desk
    scopes: []
    token_sha256: ` + h1 + "\n",
			[]string{`c.yaml:2: client "desk" has no scopes`}},
		{"fleet alone", `clients:
  - name: desk
    scopes: [read, fleet]
    token_sha256: ` + h1 + "\n",
			[]string{`c.yaml:2: client "desk" has the fleet scope without quarantine or unblock: fleet only lets those act for every router of the group, so alone it allows nothing; add quarantine or unblock, or remove fleet`}},
		{"scopes not a list", `clients:
  - name: desk
    scopes: read
    token_sha256: ` + h1 + "\n",
			[]string{"c.yaml:3: scopes must be a list, e.g. scopes: [read, quarantine]"}},
		{"unknown field", `clients:
  - name: desk
    scopes: [read]
    token: ` + h1 + "\n",
			[]string{`c.yaml:4: unknown field "token"; a client has name, scopes, token_sha256, cert_cn`}},
		{"field twice", `clients:
  - name: desk
    name: desk2
    scopes: [read]
    token_sha256: ` + h1 + "\n",
			[]string{"c.yaml:3: name is given twice for this client"}},
		{"duplicate cert_cn", `clients:
  - name: a
    scopes: [read]
    cert_cn: portal.isp.example
  - name: b
    scopes: [read]
    cert_cn: portal.isp.example
`, []string{`c.yaml:5: client "b" has the same cert_cn "portal.isp.example" as client "a" (line 2)`}},
		{"empty file", ``, []string{"c.yaml: no clients"}},
		{"no list", "clients:\n", []string{"c.yaml:1: clients must be a list"}},
		{"a bare list", "- name: desk\n", []string{"c.yaml:1: the file is a mapping with one key, clients"}},
		{"unknown top key", "client:\n  - name: x\n", []string{`c.yaml:1: unknown key "client"; the file has one key, clients`}},
		{"yaml syntax", "clients:\n  - name: [desk\n", []string{"c.yaml:", "did not find expected"}},
		{"every mistake at once", `clients:
  - name: desk
    scopes: [admin]
    token_sha256: xyz
  - name: desk
    scopes: [read]
`, []string{`c.yaml:3: unknown scope "admin"`, "c.yaml:4: token_sha256 is not", `c.yaml:5: duplicate client name "desk"`, `c.yaml:5: client "desk" has neither`}},
	} {
		_, err := parseClients("c.yaml", []byte(c.file))
		if err == nil {
			t.Errorf("%s: accepted", c.name)
			continue
		}
		if !errors.Is(err, ErrClients) {
			t.Errorf("%s: %v is not ErrClients", c.name, err)
		}
		for _, s := range c.says {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("%s: error\n%v\ndoes not say %q", c.name, err, s)
			}
		}
		if strings.Contains(err.Error(), "tok-desk-9a7f3d") {
			t.Errorf("%s: the error repeats what may be a token: %v", c.name, err)
		}
	}

	cs, err := parseClients("c.yaml", []byte(`# who may call the API
clients:
  - name: abuse-desk
    scopes: [read, quarantine]
    token_sha256: `+strings.ToUpper(h1)+`
  - name: portal_2
    scopes: [unblock, read]
    token_sha256: `+h2+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c := cs.byToken("one"); c == nil || c.name != "abuse-desk" || !c.scopes[scopeQuarantine] || c.scopes[scopeUnblock] {
		t.Errorf("byToken(one) = %+v", c)
	}
	if c := cs.byToken("two"); c == nil || c.name != "portal_2" || c.scopeList() != "read, unblock" {
		t.Errorf("byToken(two) = %+v", c)
	}
	for _, tok := range []string{"", "three", h1, "one "} {
		if c := cs.byToken(tok); c != nil {
			t.Errorf("byToken(%q) = %s", tok, c.name)
		}
	}
}

func TestNewRefuses(t *testing.T) {
	clientsFile := tokenClients(t)
	dir := t.TempDir()
	notPEM := writeFile(t, dir, "ca.pem", "not a certificate\n")
	certClients := writeFile(t, dir, "cert-clients.yaml", "clients:\n  - name: portal\n    scopes: [unblock]\n    cert_cn: portal.isp.example\n")
	pki := newPKI(t)
	for _, c := range []struct {
		name string
		cfg  Config
		is   error
		says []string
	}{
		{"all interfaces without TLS", Config{Listen: ":9726", Clients: clientsFile}, ErrInsecure,
			[]string{`api listen ":9726" is not a loopback address and tls_cert is not set`, "set tls_cert and tls_key", "or listen on 127.0.0.1:9726"}},
		{"a public address without TLS", Config{Listen: "192.0.2.10:9726", Clients: clientsFile}, ErrInsecure,
			[]string{"bearer tokens would cross the network in clear text", "tls_cert"}},
		{"IPv6 without TLS", Config{Listen: "[2001:db8::1]:9726", Clients: clientsFile}, ErrInsecure, []string{"tls_cert"}},
		{"a host name", Config{Listen: "api.isp.example:9726", Clients: clientsFile}, ErrConfig, []string{"not an IP address or localhost"}},
		{"no port", Config{Listen: "127.0.0.1", Clients: clientsFile}, ErrConfig, []string{`api listen "127.0.0.1"`, "give host:port"}},
		{"no clients file", Config{Listen: "127.0.0.1:9726"}, ErrConfig, []string{"api clients is missing"}},
		{"missing clients file", Config{Clients: dir + "/nope.yaml"}, ErrClients, []string{"nope.yaml"}},
		{"cert without key", Config{Clients: clientsFile, TLSCert: pki.serverCert}, ErrConfig, []string{"tls_cert is set but tls_key is not"}},
		{"key without cert", Config{Clients: clientsFile, TLSKey: pki.serverKey}, ErrConfig, []string{"tls_key is set but tls_cert is not"}},
		{"cert and key mismatched", Config{Clients: clientsFile, TLSCert: pki.serverCert, TLSKey: pki.clientKeys["portal"]}, ErrConfig, []string{"api tls_cert"}},
		{"client CA without TLS", Config{Clients: certClients, ClientCA: pki.caFile}, ErrConfig, []string{"client_ca is set but tls_cert is not"}},
		{"client CA not PEM", Config{Clients: certClients, TLSCert: pki.serverCert, TLSKey: pki.serverKey, ClientCA: notPEM}, ErrConfig, []string{"holds no PEM certificate"}},
		{"token clients with mTLS", Config{Clients: clientsFile, TLSCert: pki.serverCert, TLSKey: pki.serverKey, ClientCA: pki.caFile}, ErrClients,
			[]string{`client "reader" has token_sha256, but the API requires client certificates`}},
		{"cert clients without mTLS", Config{Clients: certClients}, ErrClients,
			[]string{`client "portal" has cert_cn, but the API does not ask for client certificates`}},
	} {
		s, err := New(c.cfg, newFakeBackend(), nil)
		if err == nil {
			s.Close()
			t.Errorf("%s: accepted", c.name)
			continue
		}
		if !errors.Is(err, c.is) {
			t.Errorf("%s: %v is not %v", c.name, err, c.is)
		}
		for _, say := range c.says {
			if !strings.Contains(err.Error(), say) {
				t.Errorf("%s: %q does not say %q", c.name, err, say)
			}
		}
	}
	if _, err := New(Config{Clients: clientsFile}, nil, nil); !errors.Is(err, ErrConfig) {
		t.Errorf("no backend: %v", err)
	}

	for _, listen := range []string{"127.0.0.1:9726", "[::1]:9726", "localhost:9726", "127.0.0.2:0", ""} {
		if _, err := New(Config{Listen: listen, Clients: clientsFile}, newFakeBackend(), nil); err != nil {
			t.Errorf("listen %q: %v", listen, err)
		}
	}
	if _, err := New(Config{Listen: ":9726", Clients: clientsFile, TLSCert: pki.serverCert, TLSKey: pki.serverKey}, newFakeBackend(), nil); err != nil {
		t.Errorf("all interfaces with TLS: %v", err)
	}

	// Serve checks the listener it is given too.
	s, err := New(Config{Clients: clientsFile}, newFakeBackend(), nil)
	if err != nil {
		t.Fatal(err)
	}
	err = s.Serve(fakeListener{&net.TCPAddr{IP: net.ParseIP("192.0.2.10"), Port: 9726}})
	if !errors.Is(err, ErrInsecure) || !strings.Contains(err.Error(), "192.0.2.10:9726") {
		t.Errorf("Serve on a public address without TLS: %v", err)
	}
	if err := s.ListenAndServe(); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "api listen is empty") {
		t.Errorf("ListenAndServe with the API off: %v", err)
	}
}

// fakeListener is a listener on addr that Serve must refuse before accepting anything.
type fakeListener struct{ addr net.Addr }

func (l fakeListener) Accept() (net.Conn, error) { panic("Serve accepted a connection") }
func (l fakeListener) Close() error              { return nil }
func (l fakeListener) Addr() net.Addr            { return l.addr }

func TestDocsClientsFile(t *testing.T) {
	// The clients file docs/api.md shows is one the API takes.
	doc, err := os.ReadFile("../docs/api.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "```yaml\n# /etc/portcullis/api-clients.yaml\n")
	block, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatal("docs/api.md has no clients file example")
	}
	cs, err := parseClients("docs/api.md", []byte(block))
	if err != nil {
		t.Fatal(err)
	}
	if err := cs.check(false); err != nil {
		t.Error(err)
	}
}
