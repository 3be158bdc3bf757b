package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/portcullis/portcullis/api"
	"github.com/portcullis/portcullis/daemon"
)

const labRuntimePolicy = labPolicy + `runtime:
  quarantine: {verdict: drop}
  unblock: {max: 30d}
`

// The abuse desk's and the portal's runtime entries through the CLI on a real daemon:
// an unblock opens port 25 for the subscriber, survives kill -9 and a restart, and is
// released; a quarantine (drop) times it out while 587 stays open; a damaged store is
// reported, what the data plane enforces stays, and runtime changes are refused.
func TestDaemonRuntimeEntries(t *testing.T) {
	l := newLab(t)
	write(t, l.pol, labRuntimePolicy)
	l.start()
	l.expect(25, "refused")

	out, errs, code := l.cli("unblock", "--config", l.cfg, "--for", "1h", "--reason", "customer asked", "--ticket", "P-1", "100.64.1.2")
	if code != 0 || !strings.Contains(out, "unblocked 100.64.1.2/32 until") {
		t.Fatalf("unblock: %d %s %s", code, out, errs)
	}
	l.expect(25, "ok")
	entries := func() daemon.EntriesResponse {
		t.Helper()
		out, errs, code := l.cli("entries", "--json", "--history", "--config", l.cfg)
		var resp daemon.EntriesResponse
		if code != 0 || json.Unmarshal([]byte(out), &resp) != nil {
			t.Fatalf("entries: %d %s %s", code, out, errs)
		}
		return resp
	}
	if r := entries(); len(r.Entries) != 1 || r.Entries[0].Ticket != "P-1" || r.Entries[0].Who != "uid:0" || len(r.History) != 1 {
		t.Fatalf("entries: %+v", r)
	}

	t.Log("kill -9: the unblock stays in force, and in the store")
	l.stop(syscall.SIGKILL)
	l.expect(25, "ok")
	l.start()
	l.expect(25, "ok")
	if r := entries(); len(r.Entries) != 1 {
		t.Fatalf("entries after restart: %+v", r)
	}
	if out, errs, code := l.cli("release", "--unblock", "--config", l.cfg, "--reason", "ended", "100.64.1.2"); code != 0 {
		t.Fatalf("release: %d %s %s", code, out, errs)
	}
	l.expect(25, "refused")

	t.Log("quarantine (drop): 25 times out, 587 delivers")
	if out, errs, code := l.cli("quarantine", "--config", l.cfg, "--reason", "spam run", "--ticket", "AB-7", "100.64.1.2"); code != 0 || !strings.Contains(out, "quarantined 100.64.1.2/32") {
		t.Fatalf("quarantine: %d %s %s", code, out, errs)
	}
	l.expect(25, "timeout")
	l.expect(587, "ok")
	// The same quarantine again (a retry): extended, not a repeat.
	if out, errs, code := l.cli("quarantine", "--config", l.cfg, "--reason", "spam run", "--ticket", "AB-7", "100.64.1.2"); code != 0 || !strings.Contains(out, "(in force already: extended, not escalated)") {
		t.Errorf("quarantine again: %d %s %s", code, out, errs)
	}
	// Bad input changes nothing.
	for _, args := range [][]string{
		{"quarantine", "--reason", "x", "100.64.1.300"},
		{"quarantine", "--reason", "x", "0.0.0.0/0"},
		{"unblock", "--reason", "x", "--for", "400d", "100.64.1.9"},
		{"quarantine", "100.64.1.9"},
		{"release", "100.64.1.77"},
	} {
		if out, errs, code := l.cli(append(args[:1], append([]string{"--config", l.cfg}, args[1:]...)...)...); code == 0 {
			t.Errorf("%v: exit 0 (%s %s)", args, out, errs)
		}
	}
	// A --for that is not a duration is said to be one, not "out of bounds".
	if _, errs, code := l.cli("quarantine", "--config", l.cfg, "--reason", "x", "--for", "3x", "100.64.1.9"); code != 1 || !strings.Contains(errs, `invalid runtime entry: for: "3x" is not a duration; write a Go duration`) || strings.Contains(errs, "out of bounds") {
		t.Errorf("quarantine --for 3x: %d %s", code, errs)
	}
	if r := entries(); len(r.Entries) != 1 || r.Entries[0].Kind != "quarantine" {
		t.Fatalf("entries after bad input: %+v", r)
	}
	// --prefix: what concerns that address or network only: its entries, those of
	// the networks that hold it and those within it.
	if out, _, _ := l.cli("entries", "--prefix", "100.64.1.0/24", "--config", l.cfg); !strings.Contains(out, "100.64.1.2/32") || !strings.Contains(out, "spam run") {
		t.Errorf("entries --prefix 100.64.1.0/24:\n%s", out)
	}
	if out, _, _ := l.cli("entries", "--prefix", "100.64.1.2", "--config", l.cfg); !strings.Contains(out, "100.64.1.2/32") || !strings.Contains(out, "spam run") {
		t.Errorf("entries --prefix 100.64.1.2:\n%s", out)
	}
	if out, _, _ := l.cli("entries", "--prefix", "100.64.1.9", "--config", l.cfg); !strings.Contains(out, "no runtime entry for 100.64.1.9") || strings.Contains(out, "100.64.1.2") {
		t.Errorf("entries --prefix 100.64.1.9:\n%s", out)
	}

	t.Log("a damaged store: reported, enforcement kept, changes refused")
	l.stop(syscall.SIGKILL)
	data, err := os.ReadFile(l.store)
	if err != nil {
		t.Fatal(err)
	}
	for i := 4096; i < len(data); i += 61 {
		data[i] ^= 0xa5
	}
	if err := os.WriteFile(l.store, data, 0o600); err != nil {
		t.Fatal(err)
	}
	l.start()
	l.expect(25, "timeout")
	out, _, _ = l.cli("status", "--json", "--config", l.cfg)
	if !strings.Contains(out, `"store_error"`) {
		t.Errorf("status does not report the damaged store:\n%s", out)
	}
	if _, errs, code := l.cli("quarantine", "--config", l.cfg, "--reason", "x", "100.64.1.3"); code != 1 || !strings.Contains(errs, "store") {
		t.Errorf("quarantine with a damaged store: %d %s", code, errs)
	}
}

// The HTTP API on a real daemon: the abuse desk's token quarantines the subscriber
// (25 times out, 587 delivers), the portal's read token cannot, bad requests change
// nothing, the release reopens 25, and every request is in the audit log by client.
func TestDaemonAPI(t *testing.T) {
	l := newLab(t)
	write(t, l.pol, labRuntimePolicy)
	clients := filepath.Join(l.dir, "clients.yaml")
	write(t, clients, fmt.Sprintf("clients:\n  - {name: abuse-desk, token_sha256: %s, scopes: [read, quarantine]}\n  - {name: portal, token_sha256: %s, scopes: [read]}\n",
		api.HashToken("desk-secret"), api.HashToken("portal-secret")))
	cfg, err := os.ReadFile(l.cfg)
	if err != nil {
		t.Fatal(err)
	}
	const listen = "127.0.0.1:19726"
	write(t, l.cfg, string(cfg)+fmt.Sprintf("api:\n  listen: %s\n  clients: %s\n", listen, clients))
	l.start()
	l.expect(25, "refused")

	call := func(token, method, path, body string) (int, string) {
		t.Helper()
		var conn net.Conn
		inNS(t, l.router, func() {
			var err error
			if conn, err = net.Dial("tcp", listen); err != nil {
				t.Fatal(err)
			}
		})
		return apiCall(t, conn, listen, token, method, path, body)
	}
	q := `{"address": "100.64.1.2", "for": "2h", "reason": "spam run", "ticket": "AB-9"}`
	for _, c := range []struct {
		token, method, path, body string
		want                      int
	}{
		{"", "POST", "/v1/quarantines", q, 401},
		{"wrong", "POST", "/v1/quarantines", q, 401},
		{"portal-secret", "POST", "/v1/quarantines", q, 403},
		{"desk-secret", "POST", "/v1/quarantines", `{"address": "100.64.1.2", "reason": `, 400},
		{"desk-secret", "POST", "/v1/quarantines", `{"address": "100.64.1.2", "reason": "x", "colour": "red"}`, 400},
		{"desk-secret", "POST", "/v1/quarantines", `{"address": "0.0.0.0/0", "reason": "x"}`, 400},
		{"desk-secret", "POST", "/v1/quarantines", `{"cidr": "0.0.0.0/1", "reason": "x"}`, 422},
		{"desk-secret", "POST", "/v1/quarantines", `{"address": "100.64.1.2", "reason": "x", "pad": "` + strings.Repeat("x", 100000) + `"}`, 413},
		{"desk-secret", "POST", "/v1/unblocks", `{"address": "100.64.1.2", "reason": "x"}`, 403},
	} {
		if code, body := call(c.token, c.method, c.path, c.body); code != c.want {
			t.Errorf("%s %s with %q: %d %s, want %d", c.method, c.path, c.token, code, body, c.want)
		}
	}
	l.expect(25, "refused") // nothing changed
	if code, body := call("desk-secret", "POST", "/v1/quarantines", q); code != 201 {
		t.Fatalf("quarantine: %d %s", code, body)
	}
	l.expect(25, "timeout")
	l.expect(587, "ok")
	if code, body := call("portal-secret", "GET", "/v1/entries", ""); code != 200 || !strings.Contains(body, `"ticket":"AB-9"`) || !strings.Contains(body, `"who":"api:abuse-desk"`) {
		t.Errorf("entries with the read token: %d %s", code, body)
	}
	if code, body := call("desk-secret", "DELETE", "/v1/quarantines/100.64.1.2?reason=cleaned", ""); code != 200 {
		t.Fatalf("release: %d %s", code, body)
	}
	l.expect(25, "refused")
	audit, err := os.ReadFile(filepath.Join(l.dir, "audit.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"who":"api:portal","method":"POST","path":"/v1/quarantines","status":403`, `"who":"api:abuse-desk","entry_action":"added"`, `"entry_action":"released"`} {
		if !strings.Contains(string(audit), want) {
			t.Errorf("audit log lacks %s:\n%s", want, audit)
		}
	}
}

// An applied policy stays in force over kill -9 and a restart, and a file change made
// meanwhile waits for the release.
func TestDaemonOverrideSurvivesRestart(t *testing.T) {
	l := newLab(t)
	l.start()
	l.expect(25, "refused")
	exempt := filepath.Join(l.dir, "exempt.yaml")
	write(t, exempt, labPolicy+"exemptions:\n  - {cidr: 100.64.1.2, name: mx, reason: mail server, ticket: T-7}\n")
	if out, errs, code := l.cli("apply", "--config", l.cfg, exempt); code != 0 {
		t.Fatalf("apply: %d %s %s", code, out, errs)
	}
	l.expect(25, "ok")
	l.stop(syscall.SIGKILL)
	write(t, l.pol, strings.Replace(labPolicy, "reset", "drop", 1))
	l.start()
	l.expect(25, "ok")
	out, _, _ := l.cli("status", "--config", l.cfg)
	if !strings.Contains(out, "override applied by uid:0") || !strings.Contains(out, exempt) {
		t.Fatalf("status after restart:\n%s", out)
	}
	if _, errs, code := l.cli("apply", "--release", "--config", l.cfg); code != 0 {
		t.Fatalf("release: %d %s", code, errs)
	}
	l.expect(25, "timeout") // the file as changed meanwhile
}

// apiCall sends one request to the HTTP API at addr over conn (dialled inside the
// daemon's namespace) as the client with token ("" for none), and returns the status
// and the body.
func apiCall(t *testing.T, conn net.Conn, addr, token, method, path, body string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: func(context.Context, string, string) (net.Conn, error) {
		return conn, nil
	}, DisableKeepAlives: true, ExpectContinueTimeout: 10 * time.Second}}
	req, _ := http.NewRequest(method, "http://"+addr+path, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if len(body) > 1<<16 {
		// A client sending a body the server refuses unread would otherwise race
		// the server's close (a broken pipe instead of the 413): ask first.
		req.Header.Set("Expect", "100-continue")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
