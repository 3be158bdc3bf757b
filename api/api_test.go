package api

import (
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/portcullis/portcullis/overlay"
)

const quarantineBody = `{"address": "100.64.1.10", "for": "24h", "reason": "spam run", "ticket": "AB-1"}`

func TestScopeRefused(t *testing.T) {
	e := newEnv(t)
	for _, c := range []struct {
		client, method, path, body, scope string
	}{
		{"reader", "POST", "/v1/quarantines", quarantineBody, "quarantine"},
		{"reader", "DELETE", "/v1/quarantines/100.64.1.10?reason=x", "", "quarantine"},
		{"reader", "POST", "/v1/unblocks", quarantineBody, "unblock"},
		{"portal", "POST", "/v1/quarantines", quarantineBody, "quarantine"},
		{"desk", "POST", "/v1/unblocks", quarantineBody, "unblock"},
		{"desk", "DELETE", "/v1/unblocks/100.64.1.0%2F28?reason=x", "", "unblock"},
		{"writer", "GET", "/v1/entries", "", "read"},
		{"writer", "GET", "/v1/history", "", "read"},
		{"writer", "GET", "/v1/status", "", "read"},
	} {
		var body any
		if c.body != "" {
			body = c.body
		}
		r := e.do(c.method, c.path, c.client, body)
		want(t, r, http.StatusForbidden, c.client, `needs the "`+c.scope+`" scope`)
		if !strings.Contains(r.errorMessage(), `client "`+c.client+`" has`) {
			t.Errorf("%s %s as %s: %q does not say which client and what it has", c.method, c.path, c.client, r.errorMessage())
		}
	}
	// A refused scope is refused before the body is looked at.
	want(t, e.do("POST", "/v1/quarantines", "reader", "{not json"), http.StatusForbidden, "reader", "scope")
	e.untouched("a client without the scope")
}

func TestUnauthenticated(t *testing.T) {
	e := newEnv(t)
	for _, c := range []struct {
		name, auth, challenge, says string
	}{
		{"no token", "", `Bearer realm="portcullis"`, "no bearer token"},
		{"wrong token", "Bearer tok-nobody-000000", `Bearer realm="portcullis", error="invalid_token"`, "not one the clients file knows"},
		{"a token hash instead of the token", "Bearer " + HashToken(tokens["all"]), `Bearer realm="portcullis", error="invalid_token"`, "not one the clients file knows"},
		{"basic auth", "Basic YWxsOnBhc3M=", `Bearer realm="portcullis", error="invalid_request"`, "not a bearer token"},
		{"empty bearer", "Bearer ", `Bearer realm="portcullis", error="invalid_request"`, "not a bearer token"},
	} {
		for _, path := range []string{"/v1/entries", "/v1/quarantines", "/nowhere"} {
			method := "GET"
			var body io.Reader
			if path == "/v1/quarantines" {
				method, body = "POST", strings.NewReader(quarantineBody)
			}
			req, _ := http.NewRequest(method, e.base+path, body)
			req.Header.Set("Content-Type", "application/json")
			if c.auth != "" {
				req.Header.Set("Authorization", c.auth)
			}
			r := e.send(req)
			want(t, r, http.StatusUnauthorized, "-", c.says)
			if got := r.hdr.Get("WWW-Authenticate"); got != c.challenge {
				t.Errorf("%s, %s: WWW-Authenticate %q, want %q", c.name, path, got, c.challenge)
			}
		}
	}
	e.untouched("unauthenticated requests")
}

func TestBodyTooLarge(t *testing.T) {
	e := newEnv(t)
	big := `{"address": "100.64.1.10", "reason": "` + strings.Repeat("x", maxBody) + `"}`
	huge := `{"address": "100.64.1.10", "reason": "` + strings.Repeat("x", 1<<20) + `"}`
	for _, c := range []struct {
		name   string
		body   io.Reader
		length int64 // -1: unknown (chunked)
	}{
		{"just over the limit", strings.NewReader(big), int64(len(big))},
		{"1 MiB", strings.NewReader(huge), int64(len(huge))},
		{"1 MiB, chunked", io.MultiReader(strings.NewReader(huge)), -1},
		{"just over, chunked", io.MultiReader(strings.NewReader(big)), -1},
	} {
		req, _ := http.NewRequest("POST", e.base+"/v1/quarantines", c.body)
		req.ContentLength = c.length
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+tokens["desk"])
		r := e.send(req)
		if r.code != http.StatusRequestEntityTooLarge || !strings.Contains(r.errorMessage(), "64 KiB") {
			t.Errorf("%s: got %s, want 413 naming the limit", c.name, r)
		}
	}
	e.untouched("too large bodies")

	// At the limit exactly is fine.
	ok := `{"address": "100.64.1.10", "reason": "spam run"}`
	ok += strings.Repeat(" ", maxBody-len(ok))
	want(t, e.do("POST", "/v1/quarantines", "desk", ok), http.StatusCreated, "desk", "")
}

func TestBadRequest(t *testing.T) {
	e := newEnv(t)
	for _, c := range []struct {
		name, body, says string
	}{
		{"malformed JSON", `{"address": "100.64.1.10",`, "malformed JSON"},
		{"syntax error", `{"address" "100.64.1.10"}`, "malformed JSON at byte"},
		{"empty body", ``, "the body is empty"},
		{"an array", `[1, 2]`, "the body is a JSON array"},
		{"two objects", quarantineBody + quarantineBody, "more after the JSON object"},
		{"unknown field", `{"address": "100.64.1.10", "reason": "x", "duration": "1h"}`, `unknown field "duration"; the fields are address, cidr, for, reason, ticket, fleet`},
		{"wrong type", `{"address": "100.64.1.10", "reason": "x", "for": 24}`, `field "for" must be a JSON string`},
		{"fleet as a string", `{"address": "100.64.1.10", "reason": "x", "fleet": "yes"}`, `field "fleet" must be a JSON boolean (true or false), not a string`},
		{"fleet as a number", `{"address": "100.64.1.10", "reason": "x", "fleet": 1}`, `field "fleet" must be a JSON boolean (true or false), not a number`},
		{"a field twice", `{"address": "100.64.1.8", "reason": "x", "address": "100.64.1.9"}`, `field "address" is given twice`},
		{"a field in another case", `{"ADDRESS": "100.64.1.9", "reason": "x"}`, `field "ADDRESS": write "address"`},
		{"a field twice, in two cases", `{"reason": "x", "Reason": "y", "address": "100.64.1.8"}`, `field "Reason": write "reason"`},
		{"a field folded to another", `{"address": "100.64.1.8", "reason": "x", "addreſs": "100.64.1.9"}`, `write "address"`},
		{"no address", `{"reason": "x"}`, "give address"},
		{"both", `{"address": "100.64.1.10", "cidr": "100.64.1.0/28", "reason": "x"}`, "not both"},
		{"bad address", `{"address": "100.64.1.300", "reason": "x"}`, `address: "100.64.1.300" is not an IP address`},
		{"name for address", `{"address": "mail.example.com", "reason": "x"}`, `address: "mail.example.com" is not an IP address`},
		{"network in address", `{"address": "100.64.1.0/28", "reason": "x"}`, "put a network in cidr"},
		{"zone", `{"address": "fe80::1%eth0", "reason": "x"}`, "zone"},
		{"bad cidr", `{"cidr": "100.64.1.0/33", "reason": "x"}`, `cidr: "100.64.1.0/33" is not a network`},
		{"cidr without length", `{"cidr": "100.64.1.0", "reason": "x"}`, "no prefix length"},
		{"host bits", `{"cidr": "100.64.1.5/28", "reason": "x"}`, "did you mean 100.64.1.0/28"},
		{"bad duration", `{"address": "100.64.1.10", "reason": "x", "for": "3x"}`, `for: "3x" is not a duration`},
		{"negative duration", `{"address": "100.64.1.10", "reason": "x", "for": "-1h"}`, "not more than zero"},
		{"zero days", `{"address": "100.64.1.10", "reason": "x", "for": "0d"}`, "not more than zero"},
		{"fractional days", `{"address": "100.64.1.10", "reason": "x", "for": "1.5d"}`, "is not a duration"},
		{"a duration past what one holds", `{"address": "100.64.1.10", "reason": "x", "for": "9999999999h"}`, `for: "9999999999h" is too long: a duration is at most about 292 years`},
		{"too long and not a duration", `{"address": "100.64.1.10", "reason": "x", "for": "9999999999x"}`, `for: "9999999999x" is not a duration`},
	} {
		var body any = c.body
		r := e.do("POST", "/v1/quarantines", "desk", body)
		if r.code != http.StatusBadRequest || !strings.Contains(r.errorMessage(), c.says) {
			t.Errorf("%s: got %s, want 400 saying %q", c.name, r, c.says)
		}
		if r.rec.Client != "desk" || r.rec.Detail != r.errorMessage() {
			t.Errorf("%s: audit record %+v, want client desk and the error as detail", c.name, r.rec)
		}
	}
	want(t, e.do("POST", "/v1/quarantines?for=1h", "desk", quarantineBody), http.StatusBadRequest, "desk", `unknown query parameter "for"`)
	want(t, e.do("GET", "/v1/entries?all=1", "reader", nil), http.StatusBadRequest, "reader", `unknown query parameter "all"`)
	want(t, e.do("GET", "/v1/history?prefix=100.64.1", "reader", nil), http.StatusBadRequest, "reader", `prefix: "100.64.1" is not an IP address`)
	want(t, e.do("GET", "/v1/history?prefix=1.2.3.4&prefix=1.2.3.5", "reader", nil), http.StatusBadRequest, "reader", "given 2 times")
	want(t, e.do("GET", "/v1/history?prefix=%zz", "reader", nil), http.StatusBadRequest, "reader", "query string is malformed")
	for _, c := range []struct{ path, says string }{
		{"/v1/quarantines/100.64.1.10", "reason is required"},
		{"/v1/quarantines/100.64.1.10?reason=", "reason is required"},
		{"/v1/quarantines/100.64.1.10?reason=x&why=y", `unknown query parameter "why"`},
		{"/v1/quarantines/100.64.1.10?reason=cleaned%0Afake+line", `reason: the reason holds a control character ('\n' at byte 7)`},
		{"/v1/quarantines/100.64.1.10?reason=" + strings.Repeat("x", overlay.MaxText+1), "reason: the reason is 1025 bytes; at most 1024"},
		{"/v1/quarantines/?reason=x", "no address in the path"},
		{"/v1/quarantines/100.64.1.5%2F28?reason=x", "did you mean 100.64.1.0/28"},
		{"/v1/quarantines/100.64.1.5/28?reason=x", "did you mean 100.64.1.0/28"},
		{"/v1/quarantines/bogus?reason=x", `"bogus" is not an IP address`},
		{"/v1/unblocks/100.64.1.0/28/extra?reason=x", "is not a network"},
	} {
		want(t, e.do("DELETE", c.path, "all", nil), http.StatusBadRequest, "all", c.says)
	}
	e.untouched("bad requests")
}

func TestUnsupportedMediaType(t *testing.T) {
	e := newEnv(t)
	for _, ct := range []string{"", "text/plain", "application/x-www-form-urlencoded", "application/json-seq"} {
		req, _ := http.NewRequest("POST", e.base+"/v1/unblocks", strings.NewReader(quarantineBody))
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		req.Header.Set("Authorization", "Bearer "+tokens["portal"])
		want(t, e.send(req), http.StatusUnsupportedMediaType, "portal", "Content-Type: application/json")
	}
	e.untouched("bodies that are not JSON")
	req, _ := http.NewRequest("POST", e.base+"/v1/unblocks", strings.NewReader(quarantineBody))
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("Authorization", "Bearer "+tokens["portal"])
	want(t, e.send(req), http.StatusCreated, "portal", "")
}

func TestBackendRefuses(t *testing.T) {
	e := newEnv(t)
	for _, c := range []struct {
		name, path, client, body, says string
	}{
		{"forbidden range", "/v1/quarantines", "desk", `{"address": "100.64.0.25", "reason": "spam"}`, "the policy forbids this runtime entry: 100.64.0.25/32 overlaps 100.64.0.0/24, the NOC's relays"},
		{"forbidden, as a network", "/v1/unblocks", "portal", `{"cidr": "100.64.0.0/16", "reason": "opt-out"}`, "the NOC's relays"},
		{"no reason", "/v1/quarantines", "desk", `{"address": "100.64.1.10"}`, "a reason is required"},
		{"too wide", "/v1/quarantines", "desk", `{"cidr": "10.0.0.0/7", "reason": "spam"}`, "wider than /8"},
		{"unblock too long", "/v1/unblocks", "portal", `{"address": "100.64.1.10", "for": "365d", "reason": "opt-out"}`, "an unblock lasts at most"},
	} {
		r := e.do("POST", c.path, c.client, c.body)
		if r.code != http.StatusUnprocessableEntity || !strings.Contains(r.errorMessage(), c.says) {
			t.Errorf("%s: got %s, want 422 saying %q", c.name, r, c.says)
		}
	}
	if es := e.be.live(); len(es) != 0 {
		t.Errorf("refused requests changed the entries: %v", es)
	}
	if adds, _ := e.be.calls(); adds != 5 {
		t.Errorf("backend saw %d adds, want 5", adds)
	}

	// A backend that fails (the data plane refused the update) is the daemon's error.
	e.be.setFail(errors.New("map update: no space left"))
	want(t, e.do("POST", "/v1/quarantines", "desk", quarantineBody), http.StatusInternalServerError, "desk", "the daemon could not do it: map update: no space left")
	want(t, e.do("DELETE", "/v1/quarantines/100.64.1.10?reason=x", "desk", nil), http.StatusInternalServerError, "desk", "no space left")
	// An overlay error wrapped by the backend keeps its status.
	e.be.setFail(errFromDaemon{overlay.ErrDuration})
	want(t, e.do("POST", "/v1/quarantines", "desk", quarantineBody), http.StatusUnprocessableEntity, "desk", "controller: duration out of bounds")
}

// errFromDaemon is an overlay error as the daemon might wrap it.
type errFromDaemon struct{ err error }

func (e errFromDaemon) Error() string { return "controller: " + e.err.Error() }
func (e errFromDaemon) Unwrap() error { return e.err }

func TestReleaseAbsent(t *testing.T) {
	e := newEnv(t)
	r := e.do("DELETE", "/v1/quarantines/100.64.1.10?reason=customer+cleaned+up", "desk", nil)
	want(t, r, http.StatusNotFound, "desk", "no such runtime entry: quarantine 100.64.1.10/32")
	// An unblock of the prefix is not its quarantine.
	want(t, e.do("POST", "/v1/unblocks", "all", `{"address": "100.64.1.10", "reason": "opt-out"}`), http.StatusCreated, "all", "")
	want(t, e.do("DELETE", "/v1/quarantines/100.64.1.10?reason=x", "all", nil), http.StatusNotFound, "all", "no such runtime entry")
	if es := e.be.live(); len(es) != 1 || es[0].Kind != overlay.Unblock {
		t.Errorf("entries after a failed release: %v, want the unblock", es)
	}
}

func TestQuarantineRoundTrip(t *testing.T) {
	e := newEnv(t)
	r := e.do("POST", "/v1/quarantines", "desk", quarantineBody)
	want(t, r, http.StatusCreated, "desk", "")
	var got overlay.Entry
	if err := json.Unmarshal(r.body, &got); err != nil {
		t.Fatalf("%s: %v", r, err)
	}
	if got.Kind != overlay.Quarantine || got.Prefix != netip.MustParsePrefix("100.64.1.10/32") || got.Who != "api:desk" ||
		got.Reason != "spam run" || got.Ticket != "AB-1" || got.Expires.Sub(got.Added) != 24*time.Hour {
		t.Errorf("entry %+v", got)
	}
	if loc := r.hdr.Get("Location"); loc != "/v1/quarantines/100.64.1.10%2F32" {
		t.Errorf("Location %q", loc)
	}
	if !strings.Contains(r.rec.Detail, "added quarantine 100.64.1.10/32 until") || !strings.Contains(r.rec.Detail, "ticket AB-1") {
		t.Errorf("audit detail %q", r.rec.Detail)
	}
	if e.be.adds[0].Who != "api:desk" || e.be.adds[0].For != 24*time.Hour {
		t.Errorf("backend got %+v", e.be.adds[0])
	}

	r = e.do("GET", "/v1/entries", "reader", nil)
	want(t, r, http.StatusOK, "reader", "")
	var list EntriesResponse
	if err := json.Unmarshal(r.body, &list); err != nil || len(list.Entries) != 1 || list.Entries[0].Prefix != got.Prefix {
		t.Fatalf("entries: %s (%v)", r, err)
	}
	r = e.do("GET", "/v1/status", "reader", nil)
	want(t, r, http.StatusOK, "reader", "")
	if !strings.Contains(string(r.body), `"entries":1`) {
		t.Errorf("status: %s", r)
	}

	r = e.do("DELETE", "/v1/quarantines/100.64.1.10?reason=customer+cleaned+up", "desk", nil)
	want(t, r, http.StatusOK, "desk", "")
	var rel ReleaseResponse
	if err := json.Unmarshal(r.body, &rel); err != nil || rel.Released != overlay.Quarantine || rel.Prefix != got.Prefix {
		t.Errorf("release: %s (%v)", r, err)
	}
	if rc := e.be.releases[0]; rc.who != "api:desk" || rc.reason != "customer cleaned up" {
		t.Errorf("backend release %+v", rc)
	}
	if r.rec.Detail != "released quarantine 100.64.1.10/32: customer cleaned up" {
		t.Errorf("audit detail %q", r.rec.Detail)
	}

	r = e.do("GET", "/v1/entries", "reader", nil)
	if strings.TrimSpace(string(r.body)) != `{"entries":[]}` {
		t.Errorf("entries after release: %s", r)
	}
	r = e.do("GET", "/v1/history?prefix=100.64.1.10", "reader", nil)
	var h HistoryResponse
	if err := json.Unmarshal(r.body, &h); err != nil || len(h.Events) != 2 ||
		h.Events[0].Action != overlay.Added || h.Events[1].Action != overlay.Released || h.Events[1].Reason != "customer cleaned up" || h.Events[1].Who != "api:desk" {
		t.Errorf("history: %s (%v)", r, err)
	}
	if r = e.do("GET", "/v1/history?prefix=100.64.1.11", "reader", nil); strings.TrimSpace(string(r.body)) != `{"events":[]}` {
		t.Errorf("history of another prefix: %s", r)
	}
	want(t, e.do("DELETE", "/v1/quarantines/100.64.1.10?reason=again", "desk", nil), http.StatusNotFound, "desk", "")
}

func TestCIDRInPath(t *testing.T) {
	e := newEnv(t)
	for _, c := range []struct{ cidr, encoded, segments string }{
		{"100.64.1.0/28", "100.64.1.0%2F28", "100.64.1.0/28"},
		{"100.64.1.0/28", "100.64.1.0%2f28", "100.64.1.0/28"},
		{"2001:db8:1::/48", "2001:db8:1::%2F48", "2001:db8:1::/48"},
		{"2001:db8:1::/48", "2001%3Adb8%3A1%3A%3A%2F48", "2001:db8:1::/48"},
	} {
		for _, kind := range []string{"quarantines", "unblocks"} {
			for _, path := range []string{c.encoded, c.segments} {
				body := `{"cidr": "` + c.cidr + `", "reason": "test"}`
				want(t, e.do("POST", "/v1/"+kind, "all", body), http.StatusCreated, "all", "")
				r := e.do("DELETE", "/v1/"+kind+"/"+path+"?reason=done", "all", nil)
				want(t, r, http.StatusOK, "all", "")
				var rel ReleaseResponse
				if json.Unmarshal(r.body, &rel); rel.Prefix.String() != c.cidr {
					t.Errorf("DELETE /v1/%s/%s released %s", kind, path, r)
				}
				if es := e.be.live(); len(es) != 0 {
					t.Errorf("DELETE /v1/%s/%s left %v", kind, path, es)
				}
			}
		}
	}
	// A host in the path is its /32.
	want(t, e.do("POST", "/v1/unblocks", "all", `{"cidr": "100.64.1.10/32", "reason": "opt-out"}`), http.StatusCreated, "all", "")
	want(t, e.do("DELETE", "/v1/unblocks/100.64.1.10?reason=done", "all", nil), http.StatusOK, "all", "")
	// An IPv4-mapped address is the IPv4 one.
	want(t, e.do("POST", "/v1/unblocks", "all", `{"address": "::ffff:100.64.1.10", "reason": "opt-out"}`), http.StatusCreated, "all", "")
	want(t, e.do("DELETE", "/v1/unblocks/100.64.1.10%2F32?reason=done", "all", nil), http.StatusOK, "all", "")
}

func TestRoutingErrors(t *testing.T) {
	e := newEnv(t)
	for _, c := range []struct{ method, path, allow string }{
		{"GET", "/v1/quarantines", "POST"},
		{"PUT", "/v1/quarantines/100.64.1.10", "DELETE"},
		{"POST", "/v1/entries", "GET, HEAD"},
		{"DELETE", "/v1/status", "GET, HEAD"},
		{"PATCH", "/v1/unblocks", "POST"},
	} {
		r := e.do(c.method, c.path, "all", nil)
		want(t, r, http.StatusMethodNotAllowed, "all", "use "+c.allow)
		if r.hdr.Get("Allow") != c.allow {
			t.Errorf("%s %s: Allow %q, want %q", c.method, c.path, r.hdr.Get("Allow"), c.allow)
		}
	}
	want(t, e.do("GET", "/v1/nowhere", "all", nil), http.StatusNotFound, "all", "no route /v1/nowhere")
	want(t, e.do("GET", "/v1/entries/", "all", nil), http.StatusNotFound, "all", "no route")
	r := e.do("HEAD", "/v1/entries", "reader", nil)
	want(t, r, http.StatusOK, "reader", "")
	e.untouched("routing errors")
}

func TestAuditRecords(t *testing.T) {
	// Every request is recorded once, with who made it and how it ended, however it
	// ended; the records come out in order because the requests are made one by one.
	e := newEnv(t)
	steps := []struct {
		method, path, client, body string
		status                     int
	}{
		{"GET", "/v1/entries", "", "", 401},
		{"GET", "/v1/entries", "reader", "", 200},
		{"POST", "/v1/quarantines", "reader", quarantineBody, 403},
		{"POST", "/v1/quarantines", "desk", quarantineBody, 201},
		{"POST", "/v1/quarantines", "desk", "{", 400},
		{"DELETE", "/v1/quarantines/100.64.9.9?reason=x", "desk", "", 404},
		{"GET", "/v1/nowhere", "portal", "", 404},
		{"DELETE", "/v1/entries", "portal", "", 405},
		{"DELETE", "/v1/quarantines/100.64.1.10?reason=x", "desk", "", 200},
	}
	for _, st := range steps {
		var body any
		if st.body != "" {
			body = st.body
		}
		r := e.do(st.method, st.path, st.client, body)
		who := st.client
		if who == "" {
			who = "-"
		}
		if r.code != st.status || r.rec.Status != st.status || r.rec.Client != who || r.rec.Method != st.method || r.rec.Time.IsZero() {
			t.Errorf("%s %s as %q: %s, audit %+v", st.method, st.path, st.client, r, r.rec)
		}
		if st.status >= 400 && r.rec.Detail != r.errorMessage() {
			t.Errorf("%s %s: audit detail %q, want the error %q", st.method, st.path, r.rec.Detail, r.errorMessage())
		}
	}
}

func TestSlowClientDropped(t *testing.T) {
	s, err := New(Config{Clients: tokenClients(t)}, newFakeBackend(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, got := range map[string]time.Duration{"ReadHeaderTimeout": s.srv.ReadHeaderTimeout, "ReadTimeout": s.srv.ReadTimeout, "WriteTimeout": s.srv.WriteTimeout, "IdleTimeout": s.srv.IdleTimeout} {
		if got <= 0 {
			t.Errorf("%s is not set", name)
		}
	}
	// A client that sends half a request header is cut off once ReadHeaderTimeout
	// passes. Shortened here so the test does not wait 10 s; the deadline on the read
	// below only keeps a broken server from hanging the test.
	s.srv.ReadHeaderTimeout = 100 * time.Millisecond
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(l)
	t.Cleanup(func() { s.Close() })
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET /v1/status HTTP/1.1\r\nHost: x\r\n"); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(60 * time.Second))
	b, err := io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the server held a half-sent request for a minute")
	}
	if len(b) != 0 && !strings.HasPrefix(string(b), "HTTP/1.1 408") {
		t.Errorf("the server answered a half-sent request: %q", b)
	}
}

func TestHandler(t *testing.T) {
	// Handler is the same API, for serving some other way.
	be := newFakeBackend()
	s, err := New(Config{Clients: tokenClients(t)}, be, nil)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: time.Second}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	req, _ := http.NewRequest("POST", "http://"+l.Addr().String()+"/v1/unblocks", strings.NewReader(`{"address": "2001:db8::25", "for": "30d", "reason": "opt-out", "ticket": "P-9"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+tokens["portal"])
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	be.mu.Lock()
	defer be.mu.Unlock()
	if res.StatusCode != http.StatusCreated || len(be.adds) != 1 || be.adds[0].For != 30*24*time.Hour || be.adds[0].Who != "api:portal" || be.adds[0].Kind != overlay.Unblock {
		t.Errorf("%d, backend got %+v", res.StatusCode, be.adds)
	}
}

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"90m": 90 * time.Minute, "24h": 24 * time.Hour, "1h30m": 90 * time.Minute, "30d": 30 * 24 * time.Hour, "1d": 24 * time.Hour, "365d": 365 * 24 * time.Hour,
	} {
		if got, err := ParseDuration(in); err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "d", "0", "0s", "-1h", "0d", "-3d", "1.5d", "3x", "1d12h", "999999999999d", "24"} {
		if got, err := ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q) = %v, want an error", in, got)
		}
	}
}

// A fleet entry asked of a router in no fleet is the client's to fix (422, saying
// so); a malformed fleet flag is a bad request and reaches no backend.
func TestFleetScope(t *testing.T) {
	e := newEnv(t)
	// The abuse desk's client may quarantine on this router, not across the fleet.
	r := e.do("POST", "/v1/quarantines", "desk", `{"address": "100.64.1.10", "for": "24h", "reason": "spam run", "fleet": true}`)
	want(t, r, http.StatusForbidden, "desk", `needs the "fleet" scope too`)
	r = e.do("DELETE", "/v1/quarantines/100.64.1.10?reason=x&fleet=true", "desk", nil)
	want(t, r, http.StatusForbidden, "desk", `needs the "fleet" scope too`)
	r = e.do("POST", "/v1/quarantines", "all", `{"address": "100.64.1.10", "for": "24h", "reason": "spam run", "fleet": true}`)
	want(t, r, http.StatusUnprocessableEntity, "all", "in no fleet")
	r = e.do("DELETE", "/v1/quarantines/100.64.1.10?reason=x&fleet=true", "all", nil)
	want(t, r, http.StatusUnprocessableEntity, "all", "in no fleet")
	r = e.do("DELETE", "/v1/quarantines/100.64.1.10?reason=x&fleet=yes", "all", nil)
	want(t, r, http.StatusBadRequest, "all", "fleet=true")
	e.untouched("fleet requests to a router in no fleet")
}

// A client's junk is quoted, not echoed whole: an error answer (and so its audit
// record) stays a few hundred bytes whatever the client sent. It is cut as the
// policy's and the configuration's values are (policy.Clip: the first 64 bytes and
// the length), not by a rule of the API's own.
func TestLongInputNotEchoed(t *testing.T) {
	e := newEnv(t)
	junk := strings.Repeat("1", 8000)
	for _, c := range []struct {
		method, path, client string
		body                 any
	}{
		{"GET", "/v1/entries?prefix=" + junk, "reader", nil},
		{"GET", "/v1/entries?after=quarantine/" + junk, "reader", nil},
		{"GET", "/v1/history?before=" + junk, "reader", nil},
		{"GET", "/v1/entries?limit=" + junk, "reader", nil},
		{"GET", "/v1/entries?" + junk + "=1", "reader", nil},
		{"GET", "/v1/" + junk, "reader", nil},
		{"DELETE", "/v1/quarantines/" + junk + "?reason=x", "desk", nil},
		{"POST", "/v1/quarantines", "desk", `{"address": "` + junk + `", "reason": "x"}`},
		{"POST", "/v1/quarantines", "desk", `{"cidr": "` + junk + `", "reason": "x"}`},
		{"POST", "/v1/quarantines", "desk", `{"` + junk + `": 1}`},
	} {
		r := e.do(c.method, c.path, c.client, c.body)
		if r.code < 400 || len(r.errorMessage()) > 400 || !strings.Contains(r.errorMessage(), "111... (") || !strings.Contains(r.errorMessage(), " bytes in all)") {
			t.Errorf("%s %.40s...: %d, a message of %d bytes: %.200s", c.method, c.path, r.code, len(r.errorMessage()), r.errorMessage())
		}
		if len(r.rec.Detail) > 400 {
			t.Errorf("%s %.40s...: an audit detail of %d bytes", c.method, c.path, len(r.rec.Detail))
		}
	}
}
