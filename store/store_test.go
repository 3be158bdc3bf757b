package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/portcullis/portcullis/overlay"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func quarantine(prefix string, n int) overlay.Entry {
	return overlay.Entry{
		Kind: overlay.Quarantine, Prefix: netip.MustParsePrefix(prefix), Reset: n%2 == 0,
		Added: t0.Add(time.Duration(n) * time.Minute), Expires: t0.Add(time.Duration(n)*time.Minute + time.Hour),
		Reason: fmt.Sprintf("spam run %d", n), Ticket: fmt.Sprintf("ABUSE-%d", n), Who: "api:abuse-desk", Level: n % 3,
	}
}

func unblock(prefix string, n int) overlay.Entry {
	return overlay.Entry{
		Kind: overlay.Unblock, Prefix: netip.MustParsePrefix(prefix),
		Added: t0.Add(time.Duration(n) * time.Minute), Expires: t0.Add(30 * 24 * time.Hour),
		Reason: fmt.Sprintf("runs its own mail server %d", n), Who: "api:portal",
	}
}

func event(a overlay.Action, e overlay.Entry, reason string) overlay.Event {
	return overlay.Event{Time: e.Added, Action: a, Entry: e, Who: e.Who, Reason: reason}
}

// newStore creates a store in a fresh directory, closed at the end of the test.
func newStore(t *testing.T) (string, *Store) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "overlay.db")
	s, err := Open(path, true)
	if err != nil {
		t.Fatalf("Open(create): %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return path, s
}

func mustLoad(t *testing.T, s *Store) overlay.State {
	t.Helper()
	st, err := s.Load()
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return st
}

func sameState(t *testing.T, what string, got, want overlay.State) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		g, _ := json.MarshalIndent(got, "", " ")
		w, _ := json.MarshalIndent(want, "", " ")
		t.Fatalf("%s: state differs\ngot:  %s\nwant: %s", what, g, w)
	}
}

func TestRoundTrip(t *testing.T) {
	path, s := newStore(t)
	if g := s.Generation(); g != 0 {
		t.Fatalf("a new store has generation %d, want 0", g)
	}
	if s.Path() != path {
		t.Fatalf("Path() = %q, want %q", s.Path(), path)
	}
	if st := mustLoad(t, s); len(st.Entries) != 0 || len(st.History) != 0 {
		t.Fatalf("a new store holds %+v, want nothing", st)
	}

	q1 := quarantine("192.0.2.1/32", 1)
	q2 := quarantine("198.51.100.0/24", 2)
	u1 := unblock("2001:db8:1::/48", 3)
	ev1 := []overlay.Event{event(overlay.Added, q1, "spam"), event(overlay.Escalated, q2, "again"), event(overlay.Added, u1, "")}
	if err := s.Commit([]overlay.Entry{q1, q2, u1}, nil, ev1); err != nil {
		t.Fatalf("Commit 1: %v", err)
	}
	q1b := q1
	q1b.Expires = q1.Expires.Add(time.Hour)
	q1b.Who = "uid:0"
	ev2 := []overlay.Event{event(overlay.Released, q2, "false positive"), event(overlay.Added, q1b, "extended")}
	if err := s.Commit([]overlay.Entry{q1b}, []overlay.Key{q2.Key()}, ev2); err != nil {
		t.Fatalf("Commit 2: %v", err)
	}
	if g := s.Generation(); g != 2 {
		t.Fatalf("after two commits generation is %d, want 2", g)
	}
	// Key order: kind, then the prefix as text.
	want := overlay.State{Entries: []overlay.Entry{q1b, u1}, History: append(ev1, ev2...)}
	sameState(t, "before close", mustLoad(t, s), want)

	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s2, err := Open(path, false)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s2.Close()
	if g := s2.Generation(); g != 2 {
		t.Fatalf("reopened store has generation %d, want 2", g)
	}
	sameState(t, "after reopen", mustLoad(t, s2), want)
	if err := s2.Commit(nil, nil, nil); err != nil {
		t.Fatalf("empty Commit: %v", err)
	}
	if g := s2.Generation(); g != 3 {
		t.Fatalf("an empty commit still counts: generation %d, want 3", g)
	}
}

func TestRemoveThenUpsert(t *testing.T) {
	_, s := newStore(t)
	q := quarantine("192.0.2.9/32", 1)
	if err := s.Commit([]overlay.Entry{q}, nil, nil); err != nil {
		t.Fatal(err)
	}
	// Released and added again in one change: the entry stays.
	q2 := quarantine("192.0.2.9/32", 2)
	if err := s.Commit([]overlay.Entry{q2}, []overlay.Key{q.Key()}, nil); err != nil {
		t.Fatal(err)
	}
	sameState(t, "remove and upsert of one key", mustLoad(t, s), overlay.State{Entries: []overlay.Entry{q2}})
	// Removing what is not there is no error.
	if err := s.Commit(nil, []overlay.Key{q.Key(), unblock("192.0.2.10/32", 0).Key()}, nil); err != nil {
		t.Fatalf("removing: %v", err)
	}
	if st := mustLoad(t, s); len(st.Entries) != 0 {
		t.Fatalf("after removing, entries %v remain", st.Entries)
	}
}

func TestCommitRejectsInvalid(t *testing.T) {
	_, s := newStore(t)
	q := quarantine("192.0.2.1/32", 1)
	if err := s.Commit([]overlay.Entry{q}, nil, []overlay.Event{event(overlay.Added, q, "")}); err != nil {
		t.Fatal(err)
	}
	before := mustLoad(t, s)

	bad := q
	bad.Kind = "bogus"
	for _, c := range []struct {
		name   string
		upsert []overlay.Entry
		remove []overlay.Key
		want   error
	}{
		{"unknown kind", []overlay.Entry{quarantine("192.0.2.2/32", 2), bad}, nil, overlay.ErrKind},
		{"no prefix", []overlay.Entry{{Kind: overlay.Unblock, Reason: "x"}}, nil, overlay.ErrInvalid},
		{"removing a key without a prefix", nil, []overlay.Key{{Kind: overlay.Quarantine}}, overlay.ErrInvalid},
	} {
		err := s.Commit(c.upsert, c.remove, []overlay.Event{event(overlay.Added, q, "must not be saved")})
		if !errors.Is(err, c.want) {
			t.Errorf("%s: Commit returned %v, want %v", c.name, err, c.want)
		}
	}
	if g := s.Generation(); g != 1 {
		t.Fatalf("rejected commits moved the generation to %d, want 1", g)
	}
	sameState(t, "after rejected commits", mustLoad(t, s), before)
}

func TestCreateMakesPrivateFileAndDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "var", "portcullis")
	path := filepath.Join(dir, "overlay.db")
	s, err := Open(path, true)
	if err != nil {
		t.Fatalf("Open(create): %v", err)
	}
	defer s.Close()
	for _, c := range []struct {
		path string
		want os.FileMode
	}{{dir, 0o700 | os.ModeDir}, {path, 0o600}} {
		fi, err := os.Stat(c.path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != c.want {
			t.Errorf("%s has mode %v, want %v", c.path, fi.Mode(), c.want)
		}
	}
	names, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != 1 {
		var n []string
		for _, d := range names {
			n = append(n, d.Name())
		}
		t.Fatalf("the directory holds %v, want only overlay.db (no temporary file left)", n)
	}
}

func TestMissing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "overlay.db")
	_, err := Open(path, false)
	if !errors.Is(err, ErrMissing) {
		t.Fatalf("Open(missing, !create) = %v, want ErrMissing", err)
	}
	if !strings.Contains(err.Error(), path) {
		t.Errorf("the error does not name the file: %v", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Open without create left something at %s (stat: %v)", path, err)
	}
}

func TestLocked(t *testing.T) {
	path, s := newStore(t)
	defer func(d time.Duration) { lockTimeout = d }(lockTimeout)
	lockTimeout = 200 * time.Millisecond

	done := make(chan error, 1)
	go func() {
		s2, err := Open(path, false)
		if err == nil {
			s2.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, ErrLocked) {
			t.Fatalf("second Open = %v, want ErrLocked", err)
		}
		if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "another portcullis") {
			t.Errorf("the error does not name the file and the likely cause: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("second Open still waiting for the lock after a minute: the timeout does not apply")
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s3, err := Open(path, false)
	if err != nil {
		t.Fatalf("Open after the holder closed: %v", err)
	}
	s3.Close()
}

func TestHistoryBound(t *testing.T) {
	defer func(n int) { historyLimit = n }(historyLimit)
	historyLimit = 5

	path, s := newStore(t)
	n := 0
	events := func(k int) []overlay.Event {
		var evs []overlay.Event
		for range k {
			n++
			evs = append(evs, event(overlay.Added, quarantine("192.0.2.1/32", n), fmt.Sprintf("ev-%d", n)))
		}
		return evs
	}
	reasons := func(st overlay.State) []string {
		var r []string
		for _, ev := range st.History {
			r = append(r, ev.Reason)
		}
		return r
	}
	check := func(what string, want ...string) {
		t.Helper()
		if got := reasons(mustLoad(t, s)); !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: history %v, want %v", what, got, want)
		}
	}

	for _, k := range []int{3, 1} {
		if err := s.Commit(nil, nil, events(k)); err != nil {
			t.Fatal(err)
		}
	}
	check("under the bound", "ev-1", "ev-2", "ev-3", "ev-4")
	if err := s.Commit(nil, nil, events(3)); err != nil {
		t.Fatal(err)
	}
	check("past the bound", "ev-3", "ev-4", "ev-5", "ev-6", "ev-7")

	s.Close()
	s, err := Open(path, false)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Commit(nil, nil, events(1)); err != nil {
		t.Fatal(err)
	}
	check("after reopening", "ev-4", "ev-5", "ev-6", "ev-7", "ev-8")
	if err := s.Commit(nil, nil, events(7)); err != nil {
		t.Fatal(err)
	}
	check("one commit longer than the bound", "ev-11", "ev-12", "ev-13", "ev-14", "ev-15")
}
