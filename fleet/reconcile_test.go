package fleet

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/portcullis/portcullis/overlay"
)

// memRuntime holds runtime entries as the controller does (overlay's rules and
// state), without a data plane: Reconcile's own logic is under test here; the
// daemon's end-to-end test runs it against the real controller.
type memRuntime struct {
	rules overlay.Rules
	state overlay.State
	now   time.Time
	down  bool // AddEntry answers ErrUnavailable (no policy in force yet)
}

func (m *memRuntime) Entries() []overlay.Entry { return m.state.Live(m.now) }
func (m *memRuntime) AddEntry(req overlay.Request) (overlay.Entry, error) {
	if m.down {
		return overlay.Entry{}, overlay.ErrUnavailable
	}
	if err := m.rules.Validate(req); err != nil {
		return overlay.Entry{}, err
	}
	e, _ := m.rules.Add(&m.state, req, m.now)
	return e, nil
}
func (m *memRuntime) ReleaseEntry(k overlay.Key, who, reason string) error {
	_, err := overlay.Remove(&m.state, k, overlay.Released, who, reason, m.now)
	return err
}

// Reconcile adds the group's entries for their remaining time, releases the fleet
// entries the group dropped, leaves the router's own entries alone, and reports what
// it could not add, so that the caller tries again.
func TestReconcile(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	rt := &memRuntime{now: now}
	p := func(s string) netip.Prefix { return netip.MustParsePrefix(s) }
	fe := func(kind overlay.Kind, prefix string, left time.Duration) Entry {
		return Entry{Kind: kind, Prefix: p(prefix), Reason: "fleet", Who: "alice@noc", At: now, Expires: now.Add(left)}
	}
	local := overlay.Request{Kind: overlay.Quarantine, Prefix: p("100.64.9.9/32"), For: 48 * time.Hour, Reason: "local", Who: "uid:0"}
	if _, err := rt.AddEntry(local); err != nil {
		t.Fatal(err)
	}
	set := func(es ...Entry) EntriesUpdate {
		u := EntriesUpdate{Revision: 7, Entries: map[overlay.Key]Entry{}}
		for _, e := range es {
			u.Entries[e.Key()] = e
		}
		return u
	}
	q := fe(overlay.Quarantine, "100.64.1.10/32", 3*time.Hour)
	ub := fe(overlay.Unblock, "100.64.2.0/28", 24*time.Hour)
	shadow := fe(overlay.Quarantine, "100.64.9.9/32", 30*24*time.Hour) // the router holds it itself, for less time

	rt.down = true
	if refused := Reconcile(t.Context(), rt, set(q, ub), now); len(refused) != 2 || !errors.Is(refused[0].Err, overlay.ErrUnavailable) {
		t.Fatalf("with no policy yet: refused %+v", refused)
	}
	rt.down = false
	if refused := Reconcile(t.Context(), rt, set(q, ub, shadow), now); len(refused) != 1 || refused[0].Key != shadow.Key() || !errors.Is(refused[0].Err, ErrHeldLocally) {
		t.Fatalf("refused %+v: want only the prefix the router holds itself, as held locally", refused)
	}
	got := map[overlay.Key]overlay.Entry{}
	for _, e := range rt.Entries() {
		got[e.Key()] = e
	}
	if e := got[q.Key()]; !e.Expires.Equal(q.Expires) || e.Who != "etcd:alice@noc" {
		t.Errorf("the fleet quarantine: %+v", e)
	}
	if e := got[shadow.Key()]; e.Who != "uid:0" {
		t.Errorf("the router's own quarantine was replaced: %+v", e)
	}
	if len(got) != 3 {
		t.Errorf("entries %+v", got)
	}
	// Taken again: nothing changes (no repeat quarantine, no escalation).
	before := len(rt.state.History)
	Reconcile(t.Context(), rt, set(q, ub, shadow), now)
	if len(rt.state.History) != before {
		t.Errorf("a second reconcile of the same set changed the history: %+v", rt.state.History[before:])
	}
	// The group drops the unblock and the shadowed quarantine: the fleet's is
	// released, the router's own stays.
	Reconcile(t.Context(), rt, set(q), now)
	got = map[overlay.Key]overlay.Entry{}
	for _, e := range rt.Entries() {
		got[e.Key()] = e
	}
	if _, ok := got[ub.Key()]; ok {
		t.Error("the unblock the group dropped is still in force")
	}
	if _, ok := got[shadow.Key()]; !ok {
		t.Error("the router's own quarantine was released with the fleet's")
	}
}
