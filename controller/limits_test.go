package controller

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"

	"github.com/portcullis/portcullis/model"
	"github.com/portcullis/portcullis/overlay"
	"github.com/portcullis/portcullis/store"
)

// Past MaxEntries of a kind a new entry is refused and nothing changes (not the data
// plane, not the store); the other kind has room of its own, an entry there may still
// be extended, and a release makes room. The status says so.
func TestRuntimeEntryLimit(t *testing.T) {
	d := testController(t)
	d.cfg.MaxEntries = 3
	if res := d.Apply("a.yaml", []byte(policyRuntime), "file"); res.Err != nil {
		t.Fatal(res.Err)
	}
	for i := range 3 {
		if _, err := d.AddEntry(quarantine(fmt.Sprintf("100.64.9.%d/32", i), "spam run")); err != nil {
			t.Fatal(err)
		}
	}
	gen := d.store.Generation()
	_, err := d.AddEntry(quarantine("100.64.9.3/32", "spam run"))
	if !errors.Is(err, overlay.ErrFull) {
		t.Fatalf("a fourth quarantine with room for three: %v", err)
	}
	t.Logf("refused: %v", err)
	if got := judge(t, d, "100.64.9.3"); got != model.ActionTX {
		t.Errorf("the refused quarantine changed the data plane: %v", got)
	}
	if d.store.Generation() != gen || len(d.Entries()) != 3 {
		t.Errorf("the refused quarantine changed the store (generation %d, was %d) or the entries (%d)", d.store.Generation(), gen, len(d.Entries()))
	}
	if _, err := d.AddEntry(quarantine("100.64.9.1/32", "again")); err != nil {
		t.Errorf("extending a quarantine at the limit: %v", err)
	}
	if _, err := d.AddEntry(overlay.Request{Kind: overlay.Unblock, Prefix: netip.MustParsePrefix("100.64.7.7/32"), Reason: "asked", Who: "api:portal"}); err != nil {
		t.Errorf("an unblock with the quarantines at their limit: %v", err)
	}
	if st := d.Snapshot().Runtime; st.Refused != 1 || st.MaxEntries != 3 || st.Quarantines != 3 {
		t.Errorf("status: %+v", st)
	}
	if err := d.ReleaseEntry(overlay.Key{Kind: overlay.Quarantine, Prefix: netip.MustParsePrefix("100.64.9.0/32")}, "uid:0", "cleaned"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.AddEntry(quarantine("100.64.9.3/32", "spam run")); err != nil {
		t.Errorf("after a release: %v", err)
	}
	if got := judge(t, d, "100.64.9.3"); got != model.ActionDrop {
		t.Errorf("quarantined after a release made room: %v", got)
	}
}

// The history in memory keeps the newest HistoryLimit events: add/release cycles on
// one prefix no longer grow it (and the escalation level) without bound, and the
// store keeps every event up to its own limit. Pages of it are numbered on.
func TestRuntimeHistoryLimit(t *testing.T) {
	d := testController(t)
	d.cfg.HistoryLimit = 6
	if res := d.Apply("a.yaml", []byte(policyRuntime), "file"); res.Err != nil {
		t.Fatal(res.Err)
	}
	var last overlay.Entry
	for range 10 {
		e, err := d.AddEntry(quarantine("100.64.9.9/32", "spam run"))
		if err != nil {
			t.Fatal(err)
		}
		if err := d.ReleaseEntry(e.Key(), "uid:0", "cleaned"); err != nil {
			t.Fatal(err)
		}
		last = e
	}
	if n := len(d.History(netip.Prefix{})); n != 6 {
		t.Errorf("history in memory: %d events, want 6", n)
	}
	// Before the last add the history held 5 events: 3 quarantines of the prefix.
	if last.Level != 3 {
		t.Errorf("level of the last quarantine: %d, want 3 (what the history held)", last.Level)
	}
	if st := d.Snapshot().Runtime; st.History != 6 || st.HistoryLimit != 6 {
		t.Errorf("status: %+v", st)
	}
	evs, from, more := d.HistoryPage(netip.Prefix{}, 0, 4)
	if len(evs) != 4 || from != 17 || !more {
		t.Errorf("newest page: %d events from %d, more %v; want 4 from 17 (20 events, 14 dropped), more", len(evs), from, more)
	}
	if evs, from, more = d.HistoryPage(netip.Prefix{}, from, 4); len(evs) != 2 || from != 15 || more {
		t.Errorf("older page: %d events from %d, more %v; want 2 from 15", len(evs), from, more)
	}
	d.store.Close()
	st, err := store.Open(d.cfg.Store, false)
	if err != nil {
		t.Fatal(err)
	}
	state, err := st.Load()
	st.Close()
	d.store = nil
	if err != nil || len(state.History) != 20 {
		t.Errorf("stored history: %d events, %v", len(state.History), err)
	}
}

// A published view is never changed by the changes after it, though they share its
// history: readers page it while entries come and go (run with -race).
func TestRuntimeViewUnchanged(t *testing.T) {
	d := testController(t)
	d.cfg.HistoryLimit = 8
	if res := d.Apply("a.yaml", []byte(policyRuntime), "file"); res.Err != nil {
		t.Fatal(res.Err)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			d.HistoryPage(netip.Prefix{}, 0, 3)
			d.EntriesPage(netip.Prefix{}, overlay.Key{}, 2)
		}
	}()
	var before []overlay.Event
	for i := range 12 {
		e, err := d.AddEntry(quarantine(fmt.Sprintf("100.64.9.%d/32", i%3), "spam run"))
		if err != nil {
			t.Fatal(err)
		}
		if i == 3 {
			before = d.entries.Load().state.History
		}
		if err := d.ReleaseEntry(e.Key(), "uid:0", "cleaned"); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	<-done
	if len(before) != 7 || before[6].Action != overlay.Escalated || before[6].Entry.Prefix.String() != "100.64.9.0/32" {
		t.Errorf("a view published earlier changed: %d events, the last %s %s", len(before), before[len(before)-1].Action, before[len(before)-1].Entry.Prefix)
	}
}
