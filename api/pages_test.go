package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"testing"
	"time"

	"github.com/portcullis/portcullis/overlay"
)

// fill gives the fake backend n unblocks and, for each, an added and a released event.
func (b *fakeBackend) fill(n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	for i := range n {
		r := overlay.Request{Kind: overlay.Unblock, Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 65, byte(i >> 8), byte(i)}), 32), Reason: "opt-out", Who: "api:portal"}
		b.rules.Add(&b.state, r, now)
		b.state.History = append(b.state.History, overlay.Event{Time: now, Action: overlay.Released, Entry: overlay.Entry{Kind: overlay.Unblock, Prefix: r.Prefix}, Who: "api:portal", Reason: "done"})
	}
}

// GET /v1/entries answers a page at a time (DefaultLimit unless asked, at most
// MaxLimit), and next leads through every entry once; prefix narrows it to one.
func TestEntriesPages(t *testing.T) {
	e := newEnv(t)
	e.be.fill(250)
	var all []overlay.Entry
	path := "/v1/entries"
	for pages := 0; ; pages++ {
		r := e.do("GET", path, "reader", nil)
		want(t, r, http.StatusOK, "reader", "")
		var page EntriesResponse
		if err := json.Unmarshal(r.body, &page); err != nil {
			t.Fatal(err)
		}
		if pages == 0 && len(page.Entries) != DefaultLimit {
			t.Errorf("first page: %d entries, want %d", len(page.Entries), DefaultLimit)
		}
		all = append(all, page.Entries...)
		if page.Next == "" {
			break
		}
		if pages > 5 {
			t.Fatal("no end of pages")
		}
		path = "/v1/entries?after=" + url.QueryEscape(page.Next)
	}
	if keys(all) != keys(e.be.live()) {
		t.Errorf("pages hold %d entries, not the %d live ones in order", len(all), len(e.be.live()))
	}
	r := e.do("GET", "/v1/entries?limit=1000", "reader", nil)
	var page EntriesResponse // JSON leaves out an empty next: a fresh one for each answer
	if json.Unmarshal(r.body, &page); len(page.Entries) != 250 || page.Next != "" {
		t.Errorf("limit=1000: %d entries, next %q", len(page.Entries), page.Next)
	}
	r = e.do("GET", "/v1/entries?prefix=100.65.0.7", "reader", nil)
	page = EntriesResponse{}
	if json.Unmarshal(r.body, &page); len(page.Entries) != 1 || page.Entries[0].Prefix.String() != "100.65.0.7/32" {
		t.Errorf("prefix: %s", r)
	}
	want(t, e.do("GET", "/v1/entries?limit=1001", "reader", nil), http.StatusBadRequest, "reader", "more than 1000, the most one page holds")
	want(t, e.do("GET", "/v1/entries?limit=0", "reader", nil), http.StatusBadRequest, "reader", "not a whole number from 1 to 1000")
	want(t, e.do("GET", "/v1/entries?after=bogus", "reader", nil), http.StatusBadRequest, "reader", "not a cursor this API gave")
	want(t, e.do("GET", "/v1/entries?prefix=bogus", "reader", nil), http.StatusBadRequest, "reader", "prefix:")
}

// GET /v1/history answers the newest page first, each page oldest first, and next
// leads back through every event once.
func TestHistoryPages(t *testing.T) {
	e := newEnv(t)
	e.be.fill(120) // 240 events
	var pages [][]overlay.Event
	path := "/v1/history?limit=100"
	for {
		r := e.do("GET", path, "reader", nil)
		want(t, r, http.StatusOK, "reader", "")
		var h HistoryResponse
		if err := json.Unmarshal(r.body, &h); err != nil {
			t.Fatal(err)
		}
		pages = append(pages, h.Events)
		if h.Next == "" {
			break
		}
		if len(pages) > 5 {
			t.Fatal("no end of pages")
		}
		path = "/v1/history?limit=100&before=" + h.Next
	}
	var all []overlay.Event
	for i := len(pages) - 1; i >= 0; i-- {
		all = append(all, pages[i]...)
	}
	if len(pages) != 3 || len(pages[0]) != 100 || len(pages[2]) != 40 || actions(all) != actions(e.be.state.History) {
		t.Errorf("%d pages (%d events) do not hold the history (%d events) in order", len(pages), len(all), len(e.be.state.History))
	}
	r := e.do("GET", "/v1/history", "reader", nil)
	var h HistoryResponse
	if json.Unmarshal(r.body, &h); len(h.Events) != DefaultLimit || h.Next == "" {
		t.Errorf("default: %d events, next %q", len(h.Events), h.Next)
	}
	r = e.do("GET", "/v1/history?prefix=100.65.0.7", "reader", nil)
	h = HistoryResponse{}
	if json.Unmarshal(r.body, &h); len(h.Events) != 2 || h.Next != "" {
		t.Errorf("prefix: %s", r)
	}
	want(t, e.do("GET", "/v1/history?limit=5000", "reader", nil), http.StatusBadRequest, "reader", "the most one page holds; ask for the next page with before=<next>")
	want(t, e.do("GET", "/v1/history?before=0", "reader", nil), http.StatusBadRequest, "reader", "not a cursor this API gave")
}

// A kind at its limit of live entries is 422, with the backend's words.
func TestEntriesFull(t *testing.T) {
	e := newEnv(t)
	e.be.max = 1
	want(t, e.do("POST", "/v1/unblocks", "portal", `{"address": "100.64.1.10", "reason": "opt-out"}`), http.StatusCreated, "portal", "")
	want(t, e.do("POST", "/v1/unblocks", "portal", `{"address": "100.64.1.11", "reason": "opt-out"}`), http.StatusUnprocessableEntity, "portal", "too many runtime entries: 1 runtime unblocks are in force")
	want(t, e.do("POST", "/v1/quarantines", "desk", `{"address": "100.64.1.11", "reason": "spam"}`), http.StatusCreated, "desk", "")
}

// keys and actions sum up entries and events to compare (times lose their monotonic
// reading in JSON).
func keys(es []overlay.Entry) string {
	var s []string
	for _, e := range es {
		s = append(s, e.Key().String())
	}
	return fmt.Sprint(s)
}

func actions(evs []overlay.Event) string {
	var s []string
	for _, ev := range evs {
		s = append(s, string(ev.Action)+" "+ev.Entry.Key().String())
	}
	return fmt.Sprint(s)
}
