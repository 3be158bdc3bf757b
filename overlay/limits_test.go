package overlay

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"
)

// A kind at its limit takes no new entry, but an entry already there may be extended,
// the other kind has room of its own, and an entry that expired frees its place.
func TestRoom(t *testing.T) {
	var s State
	r := Rules{}
	for i := range 3 {
		r.Add(&s, req(Unblock, fmt.Sprintf("100.64.1.%d/32", i)), t0)
	}
	if err := s.Room(Key{Unblock, netip.MustParsePrefix("100.64.2.1/32")}, 3, t0); !errors.Is(err, ErrFull) {
		t.Errorf("a fourth unblock with room for three: %v", err)
	}
	if err := s.Room(Key{Unblock, netip.MustParsePrefix("100.64.1.1/32")}, 3, t0); err != nil {
		t.Errorf("extending an unblock at the limit: %v", err)
	}
	if err := s.Room(Key{Quarantine, netip.MustParsePrefix("100.64.2.1/32")}, 3, t0); err != nil {
		t.Errorf("a quarantine with the unblocks at their limit: %v", err)
	}
	later := t0.Add(r.DefaultUnblock + 31*24*time.Hour) // all three ended, not yet removed
	if err := s.Room(Key{Unblock, netip.MustParsePrefix("100.64.2.1/32")}, 3, later); err != nil {
		t.Errorf("room after the unblocks ended: %v", err)
	}
	if got := s.Count(Unblock, t0); got != 3 {
		t.Errorf("count %d", got)
	}
}

// Trim keeps the newest events without moving them, and escalation counts what it
// kept: add/release cycles no longer grow the history (or the level) without bound.
func TestTrimEscalation(t *testing.T) {
	var s State
	r := Rules{}
	now := t0
	for range 10 {
		e, _ := r.Add(&s, req(Quarantine, "100.64.1.10/32"), now)
		Remove(&s, e.Key(), Released, "api:abuse", "cleaned", now)
		now = now.Add(time.Minute)
	}
	before := s.History
	if n := s.Trim(4); n != 16 || len(s.History) != 4 {
		t.Fatalf("trim dropped %d, kept %d", n, len(s.History))
	}
	if &s.History[0] != &before[16] {
		t.Error("trim moved the events kept")
	}
	// Two quarantines (added/escalated, released) are kept: the next is level 2.
	e, _ := r.Add(&s, req(Quarantine, "100.64.1.10/32"), now)
	if e.Level != 2 {
		t.Errorf("level after the trim: %d, want 2", e.Level)
	}
	if n := s.Trim(100); n != 0 {
		t.Errorf("trim under the limit dropped %d", n)
	}
}

// Entries come a page at a time, in Live's order, after a cursor, of one prefix.
func TestEntriesPage(t *testing.T) {
	var s State
	r := Rules{}
	for _, p := range []string{"100.64.1.3/32", "100.64.1.1/32", "2001:db8::1/128", "100.64.1.2/32"} {
		r.Add(&s, req(Unblock, p), t0)
	}
	r.Add(&s, req(Quarantine, "100.64.1.2/32"), t0)
	all := s.Live(t0)
	var got []Entry
	after := Key{}
	for pages := 0; ; pages++ {
		page, more := s.EntriesPage(t0, netip.Prefix{}, after, 2)
		got = append(got, page...)
		if !more {
			break
		}
		if pages > 5 {
			t.Fatal("no end of pages")
		}
		after = page[len(page)-1].Key()
	}
	if fmt.Sprint(got) != fmt.Sprint(all) {
		t.Errorf("pages:\n%v\nwant\n%v", got, all)
	}
	if page, more := s.EntriesPage(t0, netip.MustParsePrefix("100.64.1.2/32"), Key{}, 10); len(page) != 2 || more {
		t.Errorf("one prefix: %v %v", page, more)
	}
	// Unsorted entries (as a store loads them) page the same.
	s.Entries[0], s.Entries[4] = s.Entries[4], s.Entries[0]
	if page, _ := s.EntriesPage(t0, netip.Prefix{}, Key{}, 10); fmt.Sprint(page) != fmt.Sprint(all) {
		t.Errorf("unsorted:\n%v\nwant\n%v", page, all)
	}
}

// The history comes a page at a time, newest page first, each oldest first.
func TestHistoryPage(t *testing.T) {
	var s State
	for i := range 7 {
		p := "100.64.1.1/32"
		if i%2 == 1 {
			p = "100.64.1.2/32"
		}
		s.History = append(s.History, Event{Time: t0.Add(time.Duration(i) * time.Minute), Action: Added, Entry: Entry{Kind: Unblock, Prefix: netip.MustParsePrefix(p)}})
	}
	const first = 11 // as if 10 events had been trimmed
	evs, from, more := s.HistoryPage(first, netip.Prefix{}, 0, 3)
	if len(evs) != 3 || from != 15 || !more || !evs[0].Time.Equal(t0.Add(4*time.Minute)) {
		t.Fatalf("newest page: %d events from %d more %v", len(evs), from, more)
	}
	evs, from, more = s.HistoryPage(first, netip.Prefix{}, from, 3)
	if len(evs) != 3 || from != 12 || !more {
		t.Fatalf("second page: %d events from %d more %v", len(evs), from, more)
	}
	evs, from, more = s.HistoryPage(first, netip.Prefix{}, from, 3)
	if len(evs) != 1 || from != 11 || more {
		t.Fatalf("last page: %d events from %d more %v", len(evs), from, more)
	}
	if evs, _, more = s.HistoryPage(first, netip.Prefix{}, first, 3); len(evs) != 0 || more {
		t.Errorf("before the first: %v %v", evs, more)
	}
	evs, from, more = s.HistoryPage(first, netip.MustParsePrefix("100.64.1.2/32"), 0, 2)
	if len(evs) != 2 || from != 14 || !more {
		t.Errorf("one prefix: %d events from %d more %v", len(evs), from, more)
	}
}
