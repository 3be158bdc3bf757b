package fleet

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/portcullis/portcullis/overlay"
)

// Runtime is what Reconcile changes: a router's runtime entries (the controller).
type Runtime interface {
	Entries() []overlay.Entry
	AddEntry(req overlay.Request) (overlay.Entry, error)
	ReleaseEntry(k overlay.Key, who, reason string) error
}

// FromFleet reports whether a runtime entry came from the fleet (Entry.Request names
// its author "etcd:...").
func FromFleet(e overlay.Entry) bool { return strings.HasPrefix(e.Who, "etcd:") }

// Refusal is a fleet entry a router did not take, and why (its policy forbids it, or
// a local entry of the same prefix conflicts).
type Refusal struct {
	Key overlay.Key
	Err error
}

// Reconcile makes the router's fleet entries those of u, at now: it adds what the
// group has and the router lacks (for the entry's remaining time, checked against
// the router's own policy like any runtime entry), and releases the fleet entries the
// group no longer has. Entries added on the router itself are left alone: where one
// holds the same kind and prefix as a fleet entry, the fleet's waits (ErrHeldLocally)
// until it ends. It returns the entries not taken, for the caller to try again.
func Reconcile(ctx context.Context, rt Runtime, u EntriesUpdate, now time.Time) []Refusal {
	have := map[overlay.Key]overlay.Entry{}
	for _, e := range rt.Entries() {
		have[e.Key()] = e
	}
	var refused []Refusal
	for k, fe := range u.Entries {
		if ctx.Err() != nil {
			return refused // stopping: the rest waits for the next start
		}
		if !fe.Live(now) {
			continue
		}
		if e, ok := have[k]; ok {
			if !FromFleet(e) {
				// The router's own entry (the abuse desk's, say) is left as it is; the
				// fleet's is taken once it ends.
				refused = append(refused, Refusal{k, fmt.Errorf("%w until %s (by %s)", ErrHeldLocally, e.Expires.UTC().Format(time.RFC3339), e.Who)})
				continue
			}
			if !e.Expires.Before(fe.Expires.Add(-time.Second)) {
				continue // held already
			}
		}
		if _, err := rt.AddEntry(fe.Request(now)); err != nil {
			refused = append(refused, Refusal{k, err})
		}
	}
	for k, why := range u.Skewed {
		if _, ok := u.Entries[k]; !ok {
			refused = append(refused, Refusal{k, fmt.Errorf("%w: %s", ErrClockSkew, why)})
		}
	}
	for k, e := range have {
		if _, ok := u.Entries[k]; ok || !FromFleet(e) {
			continue
		}
		if err := rt.ReleaseEntry(k, "etcd", "removed from the group's fleet entries"); err != nil && !errors.Is(err, overlay.ErrNotFound) {
			refused = append(refused, Refusal{k, err})
		}
	}
	return refused
}
