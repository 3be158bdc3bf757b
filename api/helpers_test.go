package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portcullis/portcullis/overlay"
)

// fakeBackend is a Backend over a real overlay.State and overlay.Rules (so the
// backend's refusals are the overlay's own), that records every call and can be told
// to fail as a broken data plane would.
type fakeBackend struct {
	mu       sync.Mutex
	rules    overlay.Rules
	state    overlay.State
	adds     []overlay.Request
	releases []releaseCall
	fail     error // Add and Release return it, changing nothing
	queries  []any // the EntriesQuery and HistoryQuery asked, in order
	max      int   // Add refuses a new entry past max live ones of its kind (0: no limit)
}

type releaseCall struct {
	key         overlay.Key
	who, reason string
}

// forbidden is where the fake's policy forbids runtime entries.
var forbidden = netip.MustParsePrefix("100.64.0.0/24")

func newFakeBackend() *fakeBackend {
	return &fakeBackend{rules: overlay.Rules{
		MaxUnblock: 90 * 24 * time.Hour,
		Forbid: func(k overlay.Kind, p netip.Prefix) string {
			if forbidden.Overlaps(p) {
				return fmt.Sprintf("%s overlaps %s, the NOC's relays: no runtime entries there", p, forbidden)
			}
			return ""
		},
	}}
}

func (b *fakeBackend) Add(req overlay.Request) (overlay.Entry, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.adds = append(b.adds, req)
	if b.fail != nil {
		return overlay.Entry{}, b.fail
	}
	if err := b.rules.Validate(req); err != nil {
		return overlay.Entry{}, err
	}
	if b.max > 0 {
		if err := b.state.Room(overlay.Key{Kind: req.Kind, Prefix: req.Prefix}, b.max, time.Now()); err != nil {
			return overlay.Entry{}, err
		}
	}
	e, _ := b.rules.Add(&b.state, req, time.Now())
	return e, nil
}

func (b *fakeBackend) Release(k overlay.Key, who, reason string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.releases = append(b.releases, releaseCall{k, who, reason})
	if b.fail != nil {
		return b.fail
	}
	_, err := overlay.Remove(&b.state, k, overlay.Released, who, reason, time.Now())
	return err
}

// The fake is in no fleet.
func (b *fakeBackend) AddFleet(req overlay.Request) (overlay.Entry, error) {
	return overlay.Entry{}, fmt.Errorf("%w: this router is in no fleet", overlay.ErrInvalid)
}

func (b *fakeBackend) ReleaseFleet(k overlay.Key, who, reason string) error {
	return fmt.Errorf("%w: this router is in no fleet", overlay.ErrInvalid)
}

func (b *fakeBackend) Entries(q EntriesQuery) ([]overlay.Entry, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.queries = append(b.queries, q)
	return b.state.EntriesPage(time.Now(), q.Prefix, q.After, q.Limit)
}

func (b *fakeBackend) History(q HistoryQuery) ([]overlay.Event, uint64, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.queries = append(b.queries, q)
	return b.state.HistoryPage(1, q.Prefix, q.Before, q.Limit)
}

// live returns the live entries.
func (b *fakeBackend) live() []overlay.Entry {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.state.Live(time.Now())
}

func (b *fakeBackend) Status() any {
	b.mu.Lock()
	defer b.mu.Unlock()
	return map[string]any{"policy_hash": "sha256:feedface", "entries": len(b.state.Entries)}
}

// calls returns how many times Add and Release were called.
func (b *fakeBackend) calls() (adds, releases int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.adds), len(b.releases)
}

func (b *fakeBackend) setFail(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.fail = err
}

// tokens are the test clients' bearer tokens, by client name.
var tokens = map[string]string{
	"reader": "tok-reader-5b1e0c",
	"desk":   "tok-desk-9a7f3d",
	"portal": "tok-portal-2c44e1",
	"writer": "tok-writer-77d0aa", // quarantine but not read
	"all":    "tok-all-e3f9b2",
}

var tokenScopes = map[string]string{
	"reader": "[read]",
	"desk":   "[read, quarantine]",
	"portal": "[read, unblock]",
	"writer": "[quarantine]",
	"all":    "[read, quarantine, unblock, fleet]",
}

// writeFile writes data to name in dir and returns the path.
func writeFile(t *testing.T, dir, name, data string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// tokenClients writes a clients file with the token clients above.
func tokenClients(t *testing.T) string {
	var b strings.Builder
	b.WriteString("clients:\n")
	for _, name := range []string{"reader", "desk", "portal", "writer", "all"} {
		fmt.Fprintf(&b, "  - name: %s\n    scopes: %s\n    token_sha256: %s\n", name, tokenScopes[name], HashToken(tokens[name]))
	}
	return writeFile(t, t.TempDir(), "clients.yaml", b.String())
}

// env is a Server on a real listener on 127.0.0.1, a real HTTP client for it, its
// fake backend, and its audit records as they come.
type env struct {
	t     *testing.T
	base  string
	hc    *http.Client
	be    *fakeBackend
	srv   *Server
	audit chan Record
	n     int // requests made
}

// newEnv serves a token-authenticated API. When the test ends it shuts the server
// down and checks that every request made produced exactly one audit record.
func newEnv(t *testing.T) *env {
	t.Helper()
	return startEnv(t, Config{Listen: "127.0.0.1:0", Clients: tokenClients(t)}, &http.Client{}, "http")
}

func startEnv(t *testing.T, cfg Config, hc *http.Client, scheme string) *env {
	t.Helper()
	e := &env{t: t, hc: hc, be: newFakeBackend(), audit: make(chan Record, 1000)}
	s, err := New(cfg, e.be, func(r Record) { e.audit <- r })
	if err != nil {
		t.Fatal(err)
	}
	e.srv = s
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	e.base = scheme + "://" + l.Addr().String()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve returned %v, want http.ErrServerClosed", err)
		}
		hc.CloseIdleConnections()
		// Shutdown waited for every handler: the audit records are all in.
		if extra := len(e.audit); extra != 0 {
			t.Errorf("%d audit records more than the %d requests made", extra, e.n)
		}
	})
	return e
}

// response is what a request got, with the audit record it produced.
type response struct {
	code int
	hdr  http.Header
	body []byte
	rec  Record
}

// errorMessage is the "error" of a JSON error body ("" if there is none).
func (r response) errorMessage() string {
	var er ErrorResponse
	json.Unmarshal(r.body, &er)
	return er.Error
}

func (r response) String() string {
	return fmt.Sprintf("%d %s", r.code, strings.TrimSpace(string(r.body)))
}

// do sends a request as the named client ("" for no token), JSON if body is a string,
// and returns the response and the request's audit record.
func (e *env) do(method, path, client string, body any) response {
	e.t.Helper()
	var rd io.Reader
	ctype := ""
	switch b := body.(type) {
	case nil:
	case string:
		rd, ctype = strings.NewReader(b), "application/json"
	case io.Reader:
		rd = b
	default:
		panic("body")
	}
	req, err := http.NewRequest(method, e.base+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if client != "" {
		req.Header.Set("Authorization", "Bearer "+tokens[client])
	}
	return e.send(req)
}

// send sends req and returns the response and its audit record.
func (e *env) send(req *http.Request) response {
	e.t.Helper()
	res, err := e.hc.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	e.n++
	rec := e.next()
	if rec.Method != req.Method || rec.Path != req.URL.Path || rec.Status != res.StatusCode {
		e.t.Errorf("%s %s answered %d but its audit record is %+v", req.Method, req.URL, res.StatusCode, rec)
	}
	if ct := res.Header.Get("Content-Type"); req.Method != http.MethodHead && ct != "application/json" {
		e.t.Errorf("%s %s: Content-Type %q, want application/json", req.Method, req.URL, ct)
	}
	return response{res.StatusCode, res.Header, b, rec}
}

// next returns the next audit record. The handler sends it before it returns, and
// the response may reach the client first, so this waits for it (the timeout only
// stops a broken test from hanging).
func (e *env) next() Record {
	e.t.Helper()
	select {
	case r := <-e.audit:
		return r
	case <-time.After(30 * time.Second):
		e.t.Fatal("no audit record for the request")
		return Record{}
	}
}

// untouched fails the test if the backend was asked to change anything.
func (e *env) untouched(what string) {
	e.t.Helper()
	if a, r := e.be.calls(); a != 0 || r != 0 {
		e.t.Errorf("%s: the backend was called (%d adds, %d releases)", what, a, r)
	}
}

// want checks a response's status, that its error names what it should, and the
// audit record's client.
func want(t *testing.T, r response, code int, client, msgHas string) {
	t.Helper()
	if r.code != code {
		t.Errorf("got %s, want %d", r, code)
	}
	if msgHas != "" && !strings.Contains(r.errorMessage(), msgHas) {
		t.Errorf("error %q does not say %q", r.errorMessage(), msgHas)
	}
	if r.rec.Client != client {
		t.Errorf("audit client %q, want %q (%+v)", r.rec.Client, client, r.rec)
	}
}
