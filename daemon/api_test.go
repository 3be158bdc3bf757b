package daemon

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portcullis/portcullis/api"
	"github.com/portcullis/portcullis/controller"
	"github.com/portcullis/portcullis/internal/testutil"
	"github.com/portcullis/portcullis/overlay"
)

// apiLab is the HTTP API served as the daemon serves it (api.New over the daemon's
// backend) in front of a real controller on a private program, with a real client.
type apiLab struct {
	t     *testing.T
	url   string
	ctl   *controller.Controller
	token string // scopes read, quarantine, unblock
}

func newAPILab(t *testing.T, pol string) *apiLab {
	t.Helper()
	d := newTestDaemon(t, nil, nil)
	ctl := d.ctl
	dir := t.TempDir()
	if res := ctl.Apply("a.yaml", []byte(pol), "file"); res.Err != nil {
		t.Fatal(res.Err)
	}
	token := "desk-token-0123456789abcdef0123456789abcdef"
	clients := filepath.Join(dir, "clients.yaml")
	if err := os.WriteFile(clients, []byte("clients:\n  - name: desk\n    scopes: [read, quarantine, unblock]\n    token_sha256: "+api.HashToken(token)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv, err := api.New(api.Config{Clients: clients}, backend{d}, ctl.AuditAPI)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return &apiLab{t: t, url: "http://" + ln.Addr().String(), ctl: ctl, token: token}
}

// call sends one request and decodes the answer into out (if not nil); it returns the
// status and the body.
func (l *apiLab) call(method, path, body string, out any) (int, string) {
	l.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, l.url+path, rd)
	if err != nil {
		l.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+l.token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		l.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		l.t.Fatal(err)
	}
	if out != nil && resp.StatusCode < 300 {
		if err := json.NewDecoder(bytes.NewReader(b)).Decode(out); err != nil {
			l.t.Fatalf("%s %s: %v in %s", method, path, err, b)
		}
	}
	return resp.StatusCode, string(b)
}

// A quarantine asked for again while it is in force — a client retrying after a lost
// answer, a desk's tool sending one report twice, many at once — extends it and does
// not escalate it: the term stays the first step, and the retries do not count as
// repeats when the source is quarantined again after a release.
func TestAPIRetriedQuarantineDoesNotEscalate(t *testing.T) {
	l := newAPILab(t, testutil.PolicyA)
	body := `{"address": "100.64.9.9", "reason": "spam run", "ticket": "AB-1"}`
	var first overlay.Entry
	if code, b := l.call(http.MethodPost, "/v1/quarantines", body, &first); code != http.StatusCreated {
		t.Fatalf("first: %d %s", code, b)
	}
	if first.Level != 0 || first.Expires.Sub(first.Added) != time.Hour {
		t.Fatalf("first: level %d term %v", first.Level, first.Expires.Sub(first.Added))
	}
	var wg sync.WaitGroup
	errs := make(chan string, 20)
	for range 20 {
		wg.Go(func() {
			var e overlay.Entry
			code, b := l.call(http.MethodPost, "/v1/quarantines", body, &e)
			if code != http.StatusCreated || e.Level != 0 || e.Expires.Sub(e.Added) != time.Hour {
				errs <- fmt.Sprintf("retry: %d level %d term %v %s", code, e.Level, e.Expires.Sub(e.Added), b)
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	var h api.HistoryResponse
	if code, b := l.call(http.MethodGet, "/v1/history?prefix=100.64.9.9", "", &h); code != http.StatusOK || len(h.Events) != 21 {
		t.Fatalf("history: %d %d events %s", code, len(h.Events), b)
	}
	for i, ev := range h.Events {
		want := overlay.Extended
		if i == 0 {
			want = overlay.Added
		}
		if ev.Action != want {
			t.Errorf("event %d: %s, want %s", i, ev.Action, want)
		}
	}
	if code, b := l.call(http.MethodDelete, "/v1/quarantines/100.64.9.9?reason=cleaned", "", nil); code != http.StatusOK {
		t.Fatalf("release: %d %s", code, b)
	}
	// Quarantined again after the release: the second quarantine, not the 22nd.
	var again overlay.Entry
	if code, b := l.call(http.MethodPost, "/v1/quarantines", body, &again); code != http.StatusCreated {
		t.Fatalf("again: %d %s", code, b)
	}
	if again.Level != 1 || again.Expires.Sub(again.Added) != 4*time.Hour {
		t.Errorf("quarantined again: level %d term %v, want level 1 term 4h", again.Level, again.Expires.Sub(again.Added))
	}
}

// prefix= answers what concerns an address: asked about one subscriber, the listing
// and the history hold the entries of the networks it lies in too (a portal asking
// whether 100.64.4.7 is unblocked must not hear "no" when 100.64.4.0/28 is), and asked
// about a network, the entries within it.
func TestAPIPrefixFindsCoveringEntries(t *testing.T) {
	l := newAPILab(t, testutil.PolicyA)
	for _, c := range []struct{ path, body string }{
		{"/v1/unblocks", `{"cidr": "100.64.4.0/28", "reason": "customer's MX", "ticket": "P-1"}`},
		{"/v1/quarantines", `{"cidr": "100.64.5.0/24", "reason": "botnet", "ticket": "AB-2"}`},
		{"/v1/quarantines", `{"address": "100.64.6.1", "reason": "spam run"}`},
	} {
		if code, b := l.call(http.MethodPost, c.path, c.body, nil); code != http.StatusCreated {
			t.Fatalf("%s %s: %d %s", c.path, c.body, code, b)
		}
	}
	prefixes := func(path string) string {
		t.Helper()
		var r api.EntriesResponse
		if code, b := l.call(http.MethodGet, path, "", &r); code != http.StatusOK {
			t.Fatalf("%s: %d %s", path, code, b)
		}
		var out []string
		for _, e := range r.Entries {
			out = append(out, string(e.Kind)+" "+e.Prefix.String())
		}
		return strings.Join(out, ", ")
	}
	for q, want := range map[string]string{
		"100.64.4.7":      "unblock 100.64.4.0/28",
		"100.64.4.0/28":   "unblock 100.64.4.0/28",
		"100.64.4.0/30":   "unblock 100.64.4.0/28",
		"100.64.4.16":     "",
		"100.64.5.9":      "quarantine 100.64.5.0/24",
		"100.64.0.0/16":   "quarantine 100.64.5.0/24, quarantine 100.64.6.1/32, unblock 100.64.4.0/28",
		"100.64.6.1":      "quarantine 100.64.6.1/32",
		"2001:db8:1000::": "",
	} {
		if got := prefixes("/v1/entries?prefix=" + q); got != want {
			t.Errorf("entries of %s: %q, want %q", q, got, want)
		}
	}
	var h api.HistoryResponse
	if code, b := l.call(http.MethodGet, "/v1/history?prefix=100.64.4.7", "", &h); code != http.StatusOK || len(h.Events) != 1 || h.Events[0].Entry.Prefix.String() != "100.64.4.0/28" {
		t.Errorf("history of 100.64.4.7: %d %s", code, b)
	}
}

// A release that names no entry says which ones it may have meant: the network entry
// that holds the address, or the entry of the other kind.
func TestAPIReleaseNearMiss(t *testing.T) {
	l := newAPILab(t, testutil.PolicyA)
	for _, c := range []struct{ path, body string }{
		{"/v1/quarantines", `{"cidr": "100.64.5.0/24", "reason": "botnet"}`},
		{"/v1/unblocks", `{"address": "100.64.4.7", "reason": "customer's MX"}`},
	} {
		if code, b := l.call(http.MethodPost, c.path, c.body, nil); code != http.StatusCreated {
			t.Fatalf("%s %s: %d %s", c.path, c.body, code, b)
		}
	}
	for path, says := range map[string]string{
		"/v1/quarantines/100.64.5.9?reason=cleaned": "the runtime quarantines that hold it or lie within it are 100.64.5.0/24",
		"/v1/quarantines/100.64.4.7?reason=cleaned": "100.64.4.7/32 is a runtime unblock: release the unblock",
		"/v1/quarantines/100.64.9.9?reason=cleaned": "no such runtime entry: quarantine 100.64.9.9/32\"",
	} {
		code, b := l.call(http.MethodDelete, path, "", nil)
		if code != http.StatusNotFound || !strings.Contains(b, says) {
			t.Errorf("DELETE %s: %d %s, want 404 saying %q", path, code, b, says)
		}
	}
	// A reason that breaks the rules is the request's mistake (400), as when adding.
	if code, b := l.call(http.MethodDelete, "/v1/unblocks/100.64.4.7?reason=ended%0Afake+line", "", nil); code != http.StatusBadRequest || !strings.Contains(b, "control character") {
		t.Errorf("a release with a newline in its reason: %d %s, want 400", code, b)
	}
	var r api.EntriesResponse
	if l.call(http.MethodGet, "/v1/entries", "", &r); len(r.Entries) != 2 {
		t.Errorf("a release that named no entry changed the entries: %+v", r.Entries)
	}
}
