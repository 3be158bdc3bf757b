package daemon

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"time"

	"github.com/portcullis/portcullis/overlay"
	"github.com/portcullis/portcullis/policy"
	"github.com/portcullis/portcullis/store"
)

// Runtime entries: quarantines from the abuse desk, unblocks from the customer portal,
// laid over the NOC's policy (overlay.Merge) and never written into its file. Each one
// is made durable in the store first, then written into the live data plane with
// single map updates (loader.UpdateEntry), then proved: its addresses are probed on
// the live program against the model of the merged tables. A policy change carries the
// live entries along.

// Sentinel errors of the runtime entries.
var (
	// ErrStoreFailed means the store of runtime entries could not be read at start
	// (corrupt, locked, unreadable): the daemon enforces what the data plane holds and
	// refuses runtime changes until the store is fixed and the daemon restarted.
	ErrStoreFailed = fmt.Errorf("%w: the store of runtime entries failed", overlay.ErrUnavailable)
	// ErrNoPolicyYet means no policy is in force to lay an entry over.
	ErrNoPolicyYet = fmt.Errorf("%w: no policy in force yet", overlay.ErrUnavailable)
)

// recoveredBy is the Who of entries found in the data plane but not in the store.
const recoveredBy = "recovered-from-data-plane"

// openOverlay opens the store and reconciles it with what the pinned data plane holds:
// entries the data plane enforces and the store lacks are a lost or damaged store;
// they are kept (recovered from the data plane, so enforcement does not change) and
// reported, never silently dropped. Called before the first policy is applied.
func (d *Daemon) openOverlay() {
	now := d.now()
	st, err := store.Open(d.cfg.Store, true)
	if err == nil {
		d.overlay, err = st.Load()
		if err != nil {
			st.Close()
		}
	}
	if err != nil {
		d.storeErr = fmt.Errorf("%w: %v", ErrStoreFailed, err)
		d.log.Error("the store of runtime entries cannot be used: enforcing what the data plane holds, runtime changes refused until it is fixed", "store", d.cfg.Store, "error", err)
		d.overlay = overlay.State{}
	} else {
		d.store = st
	}
	// What the data plane enforces now (pinned from the last run).
	var held []overlay.Entry
	for _, k := range []struct {
		kind policy.Kind
		ok   overlay.Kind
	}{{policy.KindRuntimeQuarantine, overlay.Quarantine}, {policy.KindUnblock, overlay.Unblock}} {
		tes, err := d.prog.RuntimeInDataPlane(k.kind, overlay.RuleName)
		if err != nil {
			d.log.Error("reading the runtime entries the data plane holds", "error", err)
			continue
		}
		for _, te := range tes {
			e := overlay.Entry{Kind: k.ok, Prefix: te.Prefix, Expires: te.Expires, Reset: te.Verdict == policy.Reset,
				Who: recoveredBy, Reason: "found in the data plane, missing from the store", Added: now}
			if k.ok == overlay.Unblock {
				e.Expires = now.Add(24 * time.Hour) // the data plane keeps no expiry for unblocks: a day to sort it out
			}
			held = append(held, e)
		}
	}
	var lost []string
	for _, e := range held {
		if !slices.ContainsFunc(d.overlay.Entries, func(x overlay.Entry) bool { return x.Key() == e.Key() }) && e.Live(now) {
			d.overlay.Entries = append(d.overlay.Entries, e)
			lost = append(lost, e.Key().String())
		}
	}
	if len(lost) > 0 {
		d.storeLost = fmt.Sprintf("%d runtime entries enforced by the data plane were missing from the store %s and were recovered from the data plane: %v", len(lost), d.cfg.Store, lost)
		d.log.Error("store of runtime entries lost entries", "store", d.cfg.Store, "recovered", lost)
		if d.store != nil {
			var ups []overlay.Entry
			var evs []overlay.Event
			for _, e := range d.overlay.Entries {
				if e.Who == recoveredBy {
					ups = append(ups, e)
					evs = append(evs, overlay.Event{Time: now, Action: overlay.Added, Entry: e, Who: recoveredBy, Reason: e.Reason})
				}
			}
			if err := d.store.Commit(ups, nil, evs); err != nil {
				d.log.Error("writing the recovered entries to the store", "error", err)
			}
		}
	}
	// Unblocks that ended while the daemon was down end now; quarantines the data
	// plane has lifted by itself leave the list.
	if evs := overlay.Expire(&d.overlay, now); len(evs) > 0 {
		d.commitEvents(evs, now)
	}
}

// commitEvents makes removals (expiries) durable and audits them.
func (d *Daemon) commitEvents(evs []overlay.Event, now time.Time) {
	var rm []overlay.Key
	for _, ev := range evs {
		rm = append(rm, ev.Entry.Key())
		d.auditEntry(now, ev)
		d.metrics.runtimeEvent(ev)
	}
	if d.store != nil {
		if err := d.store.Commit(nil, rm, evs); err != nil {
			d.log.Error("writing expiries to the store", "error", err)
		}
	}
}

// rules returns the runtime rules of the policy in force.
func (d *Daemon) rules() overlay.Rules {
	if d.good == nil {
		return overlay.Rules{}
	}
	return overlay.RulesFor(d.good.Policy)
}

// merged is the policy in force's tables with the live runtime entries.
func (d *Daemon) merged(c *policy.Compiled, now time.Time) *policy.Tables {
	return overlay.Merge(c.Tables, d.overlay.Live(now))
}

// AddEntry adds a runtime entry (or extends one): validated against the policy in
// force, stored, written into the live data plane and proved. On any error nothing
// changes.
func (d *Daemon) AddEntry(req overlay.Request) (overlay.Entry, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.now()
	if d.storeErr != nil {
		return overlay.Entry{}, d.storeErr
	}
	if d.good == nil || d.live == nil {
		return overlay.Entry{}, ErrNoPolicyYet
	}
	rules := d.rules()
	if err := rules.Validate(req); err != nil {
		return overlay.Entry{}, err
	}
	next := cloneState(d.overlay)
	e, ev := rules.Add(&next, req, now)
	if err := overlay.Conflict(d.good.Tables, d.overlay.Live(now), e); err != nil {
		return overlay.Entry{}, err
	}
	prev, had := findEntry(d.overlay, e.Key())
	tables := overlay.Merge(d.good.Tables, next.Live(now))
	// Durable first: a crash after this finds the entry in the store and applies it.
	if err := d.store.Commit([]overlay.Entry{e}, nil, []overlay.Event{ev}); err != nil {
		return overlay.Entry{}, fmt.Errorf("storing the entry: %w", err)
	}
	undoStore := func() {
		var err error
		if had {
			err = d.store.Commit([]overlay.Entry{prev}, nil, nil)
		} else {
			err = d.store.Commit(nil, []overlay.Key{e.Key()}, nil)
		}
		if err != nil {
			d.log.Error("undoing a stored entry", "entry", e.Key(), "error", err)
		}
	}
	// A new key, or the same key with new values (a longer term) written over it.
	te := overlay.TableEntry(tables, e)
	if err := d.prog.UpdateEntry(tables, te, true); err != nil {
		undoStore()
		return overlay.Entry{}, fmt.Errorf("writing the entry into the data plane: %w", err)
	}
	if pr := d.proveEntry(tables, e.Prefix, now); !pr.OK() {
		old := overlay.Merge(d.good.Tables, d.overlay.Live(now))
		if had {
			d.prog.UpdateEntry(old, overlay.TableEntry(old, prev), true)
		} else {
			d.prog.UpdateEntry(old, te, false)
		}
		undoStore()
		return overlay.Entry{}, fmt.Errorf("proof failed, the entry was taken out again: %s", pr.Mismatches[0])
	}
	d.overlay, d.live = next, tables
	d.auditEntry(now, ev)
	d.metrics.runtimeEvent(ev)
	d.log.Info("runtime entry "+string(ev.Action), "entry", e.Key(), "expires", e.Expires.Format(time.RFC3339), "who", e.Who, "ticket", e.Ticket, "level", e.Level)
	d.publish()
	return e, nil
}

// ReleaseEntry removes a runtime entry.
func (d *Daemon) ReleaseEntry(k overlay.Key, who, reason string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.storeErr != nil {
		return d.storeErr
	}
	return d.removeEntry(k, overlay.Released, who, reason, d.now())
}

// removeEntry takes k out of the store and the data plane. Called with d.mu held.
func (d *Daemon) removeEntry(k overlay.Key, action overlay.Action, who, reason string, now time.Time) error {
	e, ok := findEntry(d.overlay, k)
	if !ok {
		return fmt.Errorf("%w: %s", overlay.ErrNotFound, k)
	}
	next := cloneState(d.overlay)
	ev, err := overlay.Remove(&next, k, action, who, reason, now)
	if err != nil {
		return err
	}
	// With a failed store (expiries only: changes are refused then) the entry still
	// leaves the data plane; there is nothing to write it to.
	if d.store != nil {
		if err := d.store.Commit(nil, []overlay.Key{k}, []overlay.Event{ev}); err != nil {
			return fmt.Errorf("storing the release: %w", err)
		}
	}
	if d.live != nil && d.good != nil {
		tables := overlay.Merge(d.good.Tables, next.Live(now))
		if err := d.prog.UpdateEntry(tables, overlay.TableEntry(d.live, e), false); err != nil {
			// The store says it is gone: the next policy change or start applies that.
			d.log.Error("removing a runtime entry from the data plane", "entry", k, "error", err)
		} else {
			d.live = tables
		}
	}
	d.overlay = next
	d.auditEntry(now, ev)
	d.metrics.runtimeEvent(ev)
	d.log.Info("runtime entry "+string(action), "entry", k, "who", who)
	d.publish()
	return nil
}

// expireRuntime ends the entries whose term is over: unblocks are ended here (the data
// plane keeps no expiry for them), quarantines have already been lifted by the data
// plane and leave the tables. It runs with a failed store too: terms still end.
func (d *Daemon) expireRuntime() {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.now()
	for _, e := range slices.Clone(d.overlay.Entries) {
		if !e.Live(now) {
			if err := d.removeEntry(e.Key(), overlay.Expired, "expiry", "", now); err != nil {
				d.log.Error("expiring a runtime entry", "entry", e.Key(), "error", err)
			}
		}
	}
}

// Entries returns the live runtime entries.
func (d *Daemon) Entries() []overlay.Entry {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.overlay.Live(d.now())
}

// History returns the history of prefix p (every prefix if p is not valid).
func (d *Daemon) History(p netip.Prefix) []overlay.Event {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []overlay.Event
	for _, ev := range d.overlay.History {
		if !p.IsValid() || ev.Entry.Prefix == p {
			out = append(out, ev)
		}
	}
	return out
}

// proveEntry probes the first and last address of prefix on the live program, to the
// governed ports, as arriving on an interface no scope names and on each interface
// the program knows, against the model of tables.
func (d *Daemon) proveEntry(tables *policy.Tables, prefix netip.Prefix, now time.Time) Proof {
	var probes []probe
	ifaces := append([]string{""}, slices.Sorted(maps.Keys(d.prog.Interfaces()))...)
	dst := unrelayed(tables, probeDsts4)
	if prefix.Addr().Is6() {
		dst = unrelayed(tables, probeDsts6)
	}
	for _, src := range []netip.Addr{prefix.Masked().Addr(), policy.LastAddr(prefix)} {
		for _, port := range tables.Governed[:min(len(tables.Governed), 4)] {
			for _, ifname := range ifaces {
				probes = append(probes, probe{src, dst, port, ifname, []policy.Link{policy.LinkEthernet}})
			}
		}
	}
	pr, err := runProbes(d.prog.ProbeAt, tables, probes, now)
	if err != nil {
		pr.Mismatches = append(pr.Mismatches, Mismatch{Note: "probe error: " + err.Error()})
	}
	return pr
}

func findEntry(s overlay.State, k overlay.Key) (overlay.Entry, bool) {
	i := slices.IndexFunc(s.Entries, func(e overlay.Entry) bool { return e.Key() == k })
	if i < 0 {
		return overlay.Entry{}, false
	}
	return s.Entries[i], true
}

func cloneState(s overlay.State) overlay.State {
	return overlay.State{Entries: slices.Clone(s.Entries), History: slices.Clone(s.History)}
}

// auditEntry writes one runtime change to the audit log.
func (d *Daemon) auditEntry(now time.Time, ev overlay.Event) {
	d.audit.writeEntry(now, ev)
}
