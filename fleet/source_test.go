package fleet

import (
	"bytes"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/portcullis/portcullis/controller"
	"github.com/portcullis/portcullis/overlay"
)

var _ controller.Source = (*Source)(nil)

// next takes the source's next offer within deadline.
func next(t *testing.T, ch <-chan controller.Offer) controller.Offer {
	t.Helper()
	select {
	case o := <-ch:
		return o
	case <-time.After(deadline):
		t.Fatalf("no offer within %s", deadline)
		return controller.Offer{}
	}
}

func newSource(t *testing.T, cli *Client) *Source {
	t.Helper()
	s, err := NewSource(cli, "dsl", testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	s.probe, s.retryFirst, s.retryMax = 500*time.Millisecond, 100*time.Millisecond, time.Second
	return s
}

func TestSourceOffersInOrder(t *testing.T) {
	_, _, cli := newFleet(t)
	r1 := mustPush(t, cli, "dsl", validPolicy(1), "alice@noc", 0)
	s := newSource(t, cli)
	ch := s.Offers(ctxT(t))
	o := next(t, ch)
	if o.File != Origin("dsl", r1) || o.Who != "etcd:alice@noc" || !bytes.Equal(o.Policy, validPolicy(1)) {
		t.Fatalf("initial offer: %s by %s", o.File, o.Who)
	}
	if g, rev, ok := ParseOrigin(o.File); !ok || g != "dsl" || rev != r1 {
		t.Fatalf("ParseOrigin(%q) = %q %d %v", o.File, g, rev, ok)
	}
	rev := r1
	for i := 2; i <= 4; i++ {
		rev = mustPush(t, cli, "dsl", validPolicy(i), "bob@noc", rev)
		o := next(t, ch)
		if o.File != Origin("dsl", rev) || o.Who != "etcd:bob@noc" || !bytes.Equal(o.Policy, validPolicy(i)) {
			t.Fatalf("offer %d: %s by %s, want %s", i, o.File, o.Who, Origin("dsl", rev))
		}
	}
	if h := s.Health(); !h.Connected || h.LastRevisionSeen != rev || h.Relists != 0 {
		t.Fatalf("health: %+v", h)
	}
}

func TestSourceRelistsAfterCompaction(t *testing.T) {
	_, raw, cli := newFleet(t)
	r1 := mustPush(t, cli, "dsl", validPolicy(1), "alice@noc", 0)
	s := newSource(t, cli)
	ch := s.Offers(ctxT(t))
	// The source has read revision r1 and waits to hand it over: it watches from
	// after r1 only once the offer is taken.
	waitFor(t, "the source read the first revision", func() bool { return s.Health().LastRevisionSeen == r1 })
	rev := r1
	for i := 2; i <= 4; i++ {
		rev = mustPush(t, cli, "dsl", validPolicy(i), "bob@noc", rev)
	}
	if _, err := raw.Compact(ctxT(t), rev); err != nil {
		t.Fatal(err)
	}
	if o := next(t, ch); o.File != Origin("dsl", r1) {
		t.Fatalf("first offer %s, want %s", o.File, Origin("dsl", r1))
	}
	// The watch from r1+1 is refused (compacted): the source reads again and offers
	// the latest.
	o := next(t, ch)
	if o.File != Origin("dsl", rev) || !bytes.Equal(o.Policy, validPolicy(4)) {
		t.Fatalf("after compaction: %s, want %s", o.File, Origin("dsl", rev))
	}
	if h := s.Health(); h.Relists < 1 || !h.Connected {
		t.Fatalf("health after compaction: %+v", h)
	}
}

func TestSourceReconnects(t *testing.T) {
	srv, _, cli := newFleet(t)
	r1 := mustPush(t, cli, "dsl", validPolicy(1), "alice@noc", 0)
	s := newSource(t, cli)
	ch := s.Offers(ctxT(t))
	next(t, ch)
	waitFor(t, "connected", func() bool { return s.Health().Connected })
	stopped := time.Now()
	srv.Stop()
	waitFor(t, "Health shows the lost connection", func() bool { return !s.Health().Connected })
	if h := s.Health(); h.LastError == "" || h.LastRevisionSeen != r1 {
		t.Fatalf("health while etcd is down: %+v", h)
	}
	select {
	case o := <-ch:
		t.Fatalf("offered %s while etcd is down", o.File)
	default:
	}
	srv.Restart()
	var r2 int64
	waitFor(t, "a push after the restart", func() bool {
		var err error
		r2, err = Push(ctxT(t), cli, "dsl", validPolicy(2), "bob@noc", "after restart", r1)
		return err == nil
	})
	o := next(t, ch)
	if o.File != Origin("dsl", r2) || !bytes.Equal(o.Policy, validPolicy(2)) {
		t.Fatalf("after restart: %s, want %s", o.File, Origin("dsl", r2))
	}
	waitFor(t, "Health shows the connection back", func() bool { return s.Health().Connected })
	// The outage is on record: from the last contact before the stop (a probe's
	// interval at most) to the return.
	if o := s.Health().LastOutage; o == nil || o.From.After(stopped) || o.From.Before(stopped.Add(-s.probe-time.Second)) || !o.To.After(stopped) {
		t.Fatalf("the outage: %+v (etcd stopped at %s)", o, stopped)
	}
}

// nextSet takes the next entries update within deadline.
func nextSet(t *testing.T, ch <-chan EntriesUpdate) EntriesUpdate {
	t.Helper()
	select {
	case u := <-ch:
		return u
	case <-time.After(deadline):
		t.Fatalf("no entries update within %s", deadline)
		return EntriesUpdate{}
	}
}

func TestSourceEntries(t *testing.T) {
	_, raw, cli := newFleet(t)
	ctx := ctxT(t)
	s := newSource(t, cli)
	ch := s.Entries(ctx)
	if u := nextSet(t, ch); len(u.Entries) != 0 || u.Revision == 0 {
		t.Fatalf("initial set: %+v", u)
	}
	q := overlay.Request{Kind: overlay.Quarantine, Prefix: netip.MustParsePrefix("100.64.1.10/32"), For: time.Hour, Reason: "spam run AB-1"}
	if err := PutEntry(ctx, cli, "dsl", q, "abuse@noc"); err != nil {
		t.Fatal(err)
	}
	u := nextSet(t, ch)
	e, ok := u.Entries[overlay.Key{Kind: overlay.Quarantine, Prefix: q.Prefix}]
	if len(u.Entries) != 1 || !ok || e.Who != "abuse@noc" || e.Reason != q.Reason {
		t.Fatalf("after put: %+v", u)
	}
	// A compaction and a broken watch: the set comes again, whole.
	if _, err := raw.Compact(ctx, u.Revision); err != nil {
		t.Fatal(err)
	}
	u2 := overlay.Request{Kind: overlay.Unblock, Prefix: netip.MustParsePrefix("2001:db8:1000::/48"), For: time.Hour, Reason: "customer mail server, NOC-1"}
	if err := PutEntry(ctx, cli, "dsl", u2, "portal"); err != nil {
		t.Fatal(err)
	}
	if u := nextSet(t, ch); len(u.Entries) != 2 {
		t.Fatalf("after a second put: %d entries", len(u.Entries))
	}
	if err := DeleteEntry(ctx, cli, "dsl", overlay.Quarantine, q.Prefix, "abuse@noc"); err != nil {
		t.Fatal(err)
	}
	u = nextSet(t, ch)
	if _, ok := u.Entries[overlay.Key{Kind: overlay.Unblock, Prefix: u2.Prefix}]; len(u.Entries) != 1 || !ok {
		t.Fatalf("after delete: %+v", u)
	}
}

// A router whose clock is two hours ahead sees a one-hour fleet quarantine put: by
// its clock the entry has ended, so it cannot take it, but it says so (the entry is
// reported as not taken, naming the clocks) rather than drop it unseen.
func TestSourceEntriesClockAhead(t *testing.T) {
	_, _, cli := newFleet(t)
	ctx := ctxT(t)
	s := newSource(t, cli)
	s.now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	ch := s.Entries(ctx)
	nextSet(t, ch)
	q := overlay.Request{Kind: overlay.Quarantine, Prefix: netip.MustParsePrefix("100.64.1.10/32"), For: time.Hour, Reason: "spam run AB-1"}
	if err := PutEntry(ctx, cli, "dsl", q, "abuse@noc"); err != nil {
		t.Fatal(err)
	}
	u := nextSet(t, ch)
	k := overlay.Key{Kind: q.Kind, Prefix: q.Prefix}
	if len(u.Entries) != 0 || !strings.Contains(u.Skewed[k], "2h0m0s ahead of the writer's") {
		t.Fatalf("entries %v, skewed %v: want the entry marked, its clock 2h ahead", u.Entries, u.Skewed)
	}
	rt := &memRuntime{now: s.now()}
	refused := Reconcile(ctx, rt, u, s.now())
	if len(refused) != 1 || refused[0].Key != k || !errors.Is(refused[0].Err, ErrClockSkew) {
		t.Fatalf("refusals %v: want the entry, ErrClockSkew", refused)
	}
	// A router started after the put cannot tell (it sees no put, only the key): the
	// entry stays out unmarked, and fleet status's clock note is what shows the skew.
	s2 := newSource(t, cli)
	s2.now = s.now
	if u := nextSet(t, s2.Entries(ctx)); len(u.Entries) != 0 {
		t.Fatalf("a fresh source with the clock ahead: %v", u.Entries)
	}
}
