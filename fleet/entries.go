package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/portcullis/portcullis/overlay"
)

// Entry is a fleet-wide runtime entry: a request every router of the group adds,
// kept under groups/G/entries/<kind>/<prefix> with a lease whose TTL is its duration,
// so that etcd deletes it when it expires.
type Entry struct {
	Kind    overlay.Kind  `json:"kind"`
	Prefix  netip.Prefix  `json:"prefix"`
	For     time.Duration `json:"for"` // as asked for, in nanoseconds
	Reason  string        `json:"reason"`
	Ticket  string        `json:"ticket,omitempty"`
	Who     string        `json:"who"`
	At      time.Time     `json:"at"`      // when it was put
	Expires time.Time     `json:"expires"` // At + For
}

// Key is the entry's identity.
func (e Entry) Key() overlay.Key { return overlay.Key{Kind: e.Kind, Prefix: e.Prefix} }

// Live reports whether e is in force at now.
func (e Entry) Live(now time.Time) bool { return now.Before(e.Expires) }

// Request is the request a router adds for e at now: its remaining time, and who as
// "etcd:" and the entry's author.
func (e Entry) Request(now time.Time) overlay.Request {
	return overlay.Request{Kind: e.Kind, Prefix: e.Prefix, For: e.Expires.Sub(now), Reason: e.Reason, Ticket: e.Ticket, Who: "etcd:" + e.Who}
}

// decodeEntry reads the entry kv holds under group. An entry must be at its own key
// (the one PutEntry writes, for its kind and masked prefix): one put by hand at
// another could be listed and never released by `fleet release`, which finds an
// entry by its key.
func decodeEntry(cli *Client, group string, kv *mvccpb.KeyValue) (Entry, error) {
	var e Entry
	if err := json.Unmarshal(kv.Value, &e); err != nil {
		return Entry{}, err
	}
	if !e.Kind.Valid() || !e.Prefix.IsValid() {
		return Entry{}, fmt.Errorf("%w: kind %q, prefix %s", ErrInvalid, e.Kind, e.Prefix)
	}
	if e.Prefix != e.Prefix.Masked() {
		return Entry{}, fmt.Errorf("%w: prefix %s has host bits set (%s?)", ErrInvalid, e.Prefix, e.Prefix.Masked())
	}
	if want := cli.entryKey(group, e.Key()); string(kv.Key) != want {
		return Entry{}, fmt.Errorf("%w: it holds %s %s, whose key is %s", ErrInvalid, e.Kind, e.Prefix, want)
	}
	return e, nil
}

// PutEntry adds req to the group's fleet entries for req.For (required: a fleet
// entry always ends), replacing an entry of the same kind and prefix. The request is
// checked as a router checks one (overlay.Rules.Validate: kind, prefix, reason) but
// not against a policy: each router checks it against its own when it adds it.
func PutEntry(ctx context.Context, cli *Client, group string, req overlay.Request, who string) error {
	if err := CheckName("group", group); err != nil {
		return err
	}
	if err := (overlay.Rules{}).Validate(req); err != nil {
		return err
	}
	if req.For <= 0 {
		return fmt.Errorf("%w: a fleet entry needs a duration (it is kept under a lease that ends with it)", ErrInvalid)
	}
	if who == "" {
		return fmt.Errorf("%w: a fleet entry needs who", ErrInvalid)
	}
	now := time.Now().UTC()
	e := Entry{Kind: req.Kind, Prefix: req.Prefix, For: req.For, Reason: req.Reason, Ticket: req.Ticket, Who: who, At: now, Expires: now.Add(req.For)}
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	key := cli.entryKey(group, e.Key())
	old, err := cli.etcd.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("reading fleet entry %s: %w", e.Key(), err)
	}
	// Whole seconds, rounded up: etcd may not delete it before it expires.
	ttl := int64((req.For + time.Second - 1) / time.Second)
	lease, err := cli.etcd.Grant(ctx, ttl)
	if err != nil {
		return fmt.Errorf("a lease for fleet entry %s: %w", e.Key(), cli.denied(err))
	}
	if _, err := cli.etcd.Put(ctx, key, string(b), clientv3.WithLease(lease.ID)); err != nil {
		cli.etcd.Revoke(context.WithoutCancel(ctx), lease.ID)
		return fmt.Errorf("putting fleet entry %s: %w", e.Key(), cli.denied(err))
	}
	if len(old.Kvs) > 0 && old.Kvs[0].Lease != 0 {
		// The replaced entry's lease holds no key now; let it go at once.
		cli.etcd.Revoke(ctx, clientv3.LeaseID(old.Kvs[0].Lease))
	}
	return nil
}

// DeleteEntry removes the group's fleet entry of kind and prefix (routers release
// it). who must be given; etcd keeps no record of a deletion, so the caller's audit
// log is where it is named.
func DeleteEntry(ctx context.Context, cli *Client, group string, kind overlay.Kind, prefix netip.Prefix, who string) error {
	if err := CheckName("group", group); err != nil {
		return err
	}
	if who == "" {
		return fmt.Errorf("%w: releasing a fleet entry needs who", ErrInvalid)
	}
	k := overlay.Key{Kind: kind, Prefix: prefix}
	resp, err := cli.etcd.Delete(ctx, cli.entryKey(group, k), clientv3.WithPrevKV())
	if err != nil {
		return fmt.Errorf("deleting fleet entry %s: %w", k, cli.denied(err))
	}
	if resp.Deleted == 0 {
		hint := fmt.Sprintf("portcullis fleet entries --group %s lists them", group)
		other := overlay.Quarantine
		if kind == overlay.Quarantine {
			other = overlay.Unblock
		}
		if o, err := cli.etcd.Get(ctx, cli.entryKey(group, overlay.Key{Kind: other, Prefix: prefix}), clientv3.WithCountOnly()); err == nil && o.Count > 0 {
			hint = fmt.Sprintf("the group has an %s of it, not a %s (fleet release --unblock ends an unblock)", other, kind)
			if other == overlay.Quarantine {
				hint = fmt.Sprintf("the group has a %s of it, not an %s (fleet release without --unblock ends a quarantine)", other, kind)
			}
		}
		return fmt.Errorf("%w: %s in group %s (%s)", ErrNotFound, k, group, hint)
	}
	if l := resp.PrevKvs[0].Lease; l != 0 {
		cli.etcd.Revoke(ctx, clientv3.LeaseID(l))
	}
	return nil
}

// ListEntries returns the group's live fleet entries, by kind then prefix, and the
// revision they were read at.
// A key that holds no entry makes the error ErrDamagedEntry, with the others listed.
func ListEntries(ctx context.Context, cli *Client, group string) ([]Entry, int64, error) {
	if err := CheckName("group", group); err != nil {
		return nil, 0, err
	}
	resp, err := cli.etcd.Get(ctx, cli.entriesKey(group), clientv3.WithPrefix())
	if err != nil {
		return nil, 0, fmt.Errorf("reading the fleet entries of group %s: %w", group, err)
	}
	now := time.Now()
	var out []Entry
	var damaged []string
	for _, kv := range resp.Kvs {
		e, err := decodeEntry(cli, group, kv)
		if err != nil {
			damaged = append(damaged, fmt.Sprintf("%s (%v)", kv.Key, err))
			continue
		}
		if e.Live(now) {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b Entry) int {
		if c := strings.Compare(string(a.Kind), string(b.Kind)); c != 0 {
			return c
		}
		if c := a.Prefix.Addr().Compare(b.Prefix.Addr()); c != 0 {
			return c
		}
		return a.Prefix.Bits() - b.Prefix.Bits()
	})
	if len(damaged) > 0 {
		// The good ones are returned too: one bad key must not hide the others.
		return out, resp.Header.Revision, fmt.Errorf("%w, which the routers skip: %s; remove each with etcdctl del KEY", ErrDamagedEntry, strings.Join(damaged, "; "))
	}
	return out, resp.Header.Revision, nil
}
