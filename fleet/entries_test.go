package fleet

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/portcullis/portcullis/overlay"
)

func TestEntryExpiresWithLease(t *testing.T) {
	_, _, cli := newFleet(t)
	ctx := ctxT(t)
	s := newSource(t, cli)
	ch := s.Entries(ctx)
	nextSet(t, ch)
	req := overlay.Request{Kind: overlay.Quarantine, Prefix: netip.MustParsePrefix("100.64.7.0/28"), For: overlay.MinTerm, Reason: "botnet, AB-9"} // the shortest: the lease then ends soon
	if err := PutEntry(ctx, cli, "dsl", req, "abuse@noc"); err != nil {
		t.Fatal(err)
	}
	es, _, err := ListEntries(ctx, cli, "dsl")
	if err != nil || len(es) != 1 || es[0].Prefix != req.Prefix || es[0].Expires.Sub(es[0].At) != overlay.MinTerm {
		t.Fatalf("listed %+v, %v", es, err)
	}
	if got := es[0].Request(es[0].At); got.For != overlay.MinTerm || got.Who != "etcd:abuse@noc" {
		t.Errorf("Request: %+v", got)
	}
	if u := nextSet(t, ch); len(u.Entries) != 1 {
		t.Fatalf("the source's set after the put: %d entries", len(u.Entries))
	}
	waitFor(t, "the entry's key is deleted with its lease", func() bool {
		resp, err := cli.etcd.Get(ctx, cli.entriesKey("dsl"), clientv3.WithPrefix())
		return err == nil && len(resp.Kvs) == 0
	})
	if u := nextSet(t, ch); len(u.Entries) != 0 {
		t.Fatalf("the source's set after expiry: %d entries", len(u.Entries))
	}
}

func TestPutEntryRefuses(t *testing.T) {
	_, _, cli := newFleet(t)
	ctx := ctxT(t)
	p := netip.MustParsePrefix("100.64.1.10/32")
	for _, c := range []struct {
		name string
		req  overlay.Request
		who  string
		want error
	}{
		{"no duration", overlay.Request{Kind: overlay.Quarantine, Prefix: p, Reason: "r"}, "abuse", ErrInvalid},
		{"bad kind", overlay.Request{Kind: "ban", Prefix: p, For: time.Hour, Reason: "r"}, "abuse", overlay.ErrKind},
		{"no prefix", overlay.Request{Kind: overlay.Unblock, For: time.Hour, Reason: "r"}, "abuse", overlay.ErrInvalid},
		{"host bits", overlay.Request{Kind: overlay.Unblock, Prefix: netip.MustParsePrefix("100.64.1.10/24"), For: time.Hour, Reason: "r"}, "abuse", overlay.ErrInvalid},
		{"no reason", overlay.Request{Kind: overlay.Unblock, Prefix: p, For: time.Hour}, "abuse", overlay.ErrInvalid},
		{"no who", overlay.Request{Kind: overlay.Unblock, Prefix: p, For: time.Hour, Reason: "r"}, "", ErrInvalid},
	} {
		if err := PutEntry(ctx, cli, "dsl", c.req, c.who); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	if es, _, _ := ListEntries(ctx, cli, "dsl"); len(es) != 0 {
		t.Fatalf("refused requests wrote %d entries", len(es))
	}
	if err := DeleteEntry(ctx, cli, "dsl", overlay.Quarantine, p, "abuse"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleting a missing entry: %v, want ErrNotFound", err)
	}
}

// A key under the entries that holds no entry (written by hand) is reported, and the
// good entries are still listed: one bad key must not hide the others.
func TestListEntriesWithADamagedKey(t *testing.T) {
	_, _, cli := newFleet(t)
	ctx := ctxT(t)
	req := overlay.Request{Kind: overlay.Quarantine, Prefix: netip.MustParsePrefix("100.64.7.0/28"), For: time.Hour, Reason: "botnet, AB-9"}
	if err := PutEntry(ctx, cli, "dsl", req, "abuse@noc"); err != nil {
		t.Fatal(err)
	}
	bad := cli.entriesKey("dsl") + "quarantine/100.64.1.70_32"
	if _, err := cli.etcd.Put(ctx, bad, "not json"); err != nil {
		t.Fatal(err)
	}
	// Entries at keys that are not theirs (put by hand): `fleet release` finds an
	// entry by its key, so these could be listed and never released.
	elsewhere := cli.entriesKey("dsl") + "quarantine/100.64.1.80_32"
	if _, err := cli.etcd.Put(ctx, elsewhere, `{"kind":"unblock","prefix":"100.64.9.0/24","for":3600000000000,"reason":"x","who":"y","expires":"2999-01-01T00:00:00Z"}`); err != nil {
		t.Fatal(err)
	}
	hostBits := cli.entriesKey("dsl") + "quarantine/100.64.1.90_24"
	if _, err := cli.etcd.Put(ctx, hostBits, `{"kind":"quarantine","prefix":"100.64.1.90/24","for":3600000000000,"reason":"x","who":"y","expires":"2999-01-01T00:00:00Z"}`); err != nil {
		t.Fatal(err)
	}
	es, _, err := ListEntries(ctx, cli, "dsl")
	for _, k := range []string{bad, elsewhere, hostBits} {
		if !errors.Is(err, ErrDamagedEntry) || !strings.Contains(err.Error(), k) {
			t.Errorf("err %v, want ErrDamagedEntry naming %s", err, k)
		}
	}
	if len(es) != 1 || es[0].Prefix != req.Prefix {
		t.Fatalf("the good entries: %+v", es)
	}
}
