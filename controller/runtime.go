package controller

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/portcullis/portcullis/model"
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
	// ErrClosed means the controller is closed (the daemon is stopping).
	ErrClosed = fmt.Errorf("%w: the daemon is stopping", overlay.ErrUnavailable)
)

// recoveredBy is the Who of entries found in the data plane but not in the store.
const recoveredBy = "recovered-from-data-plane"

// OpenStore opens the store and reconciles it with what the pinned data plane holds:
// entries the data plane enforces and the store lacks are a lost or damaged store;
// they are kept (recovered from the data plane, so enforcement does not change) and
// reported, never silently dropped. Call it once, before the first policy is applied.
func (c *Controller) OpenStore() {
	c.mu.Lock()
	defer c.mu.Unlock()
	defer c.publish()
	now := c.now()
	st, err := store.Open(c.cfg.Store, true)
	if err == nil {
		c.overlay, err = st.Load()
		if err != nil {
			st.Close()
		}
	}
	if err != nil {
		c.storeErr = fmt.Errorf("%w: %v", ErrStoreFailed, err)
		c.log.Error("the store of runtime entries cannot be used: enforcing what the data plane holds, runtime changes refused until it is fixed", "store", c.cfg.Store, "error", err)
		c.overlay = overlay.State{}
	} else {
		c.store = st
	}
	c.overlay.Sort() // the store loads them in its key order
	// What the data plane enforces now (pinned from the last run).
	var held []overlay.Entry
	readErr := false
	for _, k := range []struct {
		kind model.Kind
		ok   overlay.Kind
	}{{model.KindRuntimeQuarantine, overlay.Quarantine}, {model.KindUnblock, overlay.Unblock}} {
		tes, err := c.prog.RuntimeInDataPlane(k.kind, overlay.RuleName)
		if err != nil {
			c.log.Error("reading the runtime entries the data plane holds", "error", err)
			readErr = true
			continue
		}
		reason := "found in the data plane, missing from the store"
		if c.store == nil {
			reason = "found in the data plane; the store cannot be read"
		}
		for _, te := range tes {
			e := overlay.Entry{Kind: k.ok, Prefix: te.Prefix, Expires: te.Expires, Reset: te.Verdict == model.Reset,
				Who: recoveredBy, Reason: reason, Added: now}
			if k.ok == overlay.Unblock {
				e.Expires = now.Add(24 * time.Hour) // the data plane keeps no expiry for unblocks: a day to sort it out
			}
			held = append(held, e)
		}
	}
	// Kept for adopt, which would otherwise walk the live tables a second time.
	c.held = map[overlay.Kind]int{}
	stored := make(map[overlay.Key]bool, len(c.overlay.Entries))
	for _, e := range c.overlay.Entries {
		stored[e.Key()] = true
	}
	var lost []string
	for _, e := range held {
		c.held[e.Kind]++
		if !stored[e.Key()] && e.Live(now) {
			c.overlay.Entries = append(c.overlay.Entries, e)
			lost = append(lost, e.Key().String())
		}
	}
	if readErr {
		c.held = nil // not known: adopt reads the tables itself
	}
	if len(lost) > 0 && c.store == nil {
		// Not lost: the store could not be read (storeErr says why), so what it holds is
		// not known. Enforcement stays as the data plane has it; its entries are listed
		// until the store is fixed and the daemon restarted.
		c.log.Warn("the store cannot be read: the runtime entries the data plane enforces are kept as they are", "store", c.cfg.Store, "entries", lost)
	} else if len(lost) > 0 {
		c.storeLost = fmt.Sprintf("%d runtime entries enforced by the data plane were missing from the store %s and were recovered from the data plane: %v", len(lost), c.cfg.Store, lost)
		c.log.Error("store of runtime entries lost entries", "store", c.cfg.Store, "recovered", lost)
		if c.store != nil {
			var ups []overlay.Entry
			var evs []overlay.Event
			for _, e := range c.overlay.Entries {
				if e.Who == recoveredBy {
					ups = append(ups, e)
					evs = append(evs, overlay.Event{Time: now, Action: overlay.Added, Entry: e, Who: recoveredBy, Reason: e.Reason})
				}
			}
			if err := c.store.Commit(ups, nil, evs); err != nil {
				c.log.Error("writing the recovered entries to the store", "error", err)
			}
			// And in the history read now, not only after the next start.
			c.overlay.History = append(c.overlay.History, evs...)
		}
	}
	// Unblocks that ended while the daemon was down end now; quarantines the data
	// plane has lifted by itself leave the list.
	if evs := overlay.Expire(&c.overlay, now); len(evs) > 0 {
		c.commitEvents(evs, now)
	}
	c.dropped += uint64(c.overlay.Trim(c.historyLimit()))
}

// maxEntries is how many live runtime entries of each kind the controller holds.
func (c *Controller) maxEntries() int {
	if c.cfg.MaxEntries > 0 {
		return c.cfg.MaxEntries
	}
	return overlay.MaxEntries
}

// historyLimit is how many events of the history the controller keeps in memory.
func (c *Controller) historyLimit() int {
	if c.cfg.HistoryLimit > 0 {
		return c.cfg.HistoryLimit
	}
	return store.HistoryLimit
}

// commitEvents makes removals (expiries) durable and audits them.
func (c *Controller) commitEvents(evs []overlay.Event, now time.Time) {
	var rm []overlay.Key
	for _, ev := range evs {
		rm = append(rm, ev.Entry.Key())
		c.auditEntry(now, ev)
		c.event(ev)
	}
	if c.store != nil {
		if err := c.store.Commit(nil, rm, evs); err != nil {
			c.log.Error("writing expiries to the store", "error", err)
		}
	}
}

// event tells Config.Events of a runtime entry event.
func (c *Controller) event(ev overlay.Event) {
	if c.cfg.Events != nil {
		c.cfg.Events(ev)
	}
}

// rules returns the runtime rules of the policy in force.
func (c *Controller) rules() overlay.Rules {
	if c.good == nil {
		return overlay.Rules{}
	}
	return overlay.RulesFor(c.good.Policy)
}

// merged is the policy in force's tables with the live runtime entries.
func (c *Controller) merged(comp *policy.Compiled, now time.Time) *model.Tables {
	return overlay.Merge(comp.Tables, c.overlay.Live(now))
}

// AddEntry adds a runtime entry (or extends one): validated against the policy in
// force, stored, written into the live data plane and proved. On any error nothing
// changes.
func (c *Controller) AddEntry(req overlay.Request) (overlay.Entry, error) {
	ev, err := c.AddEntryEvent(req)
	return ev.Entry, err
}

// AddEntryEvent is AddEntry, returning the event recorded: its Action says whether the
// entry was added, escalated (a repeat) or extended (it was in force already), and its
// Entry is the entry in force.
func (c *Controller) AddEntryEvent(req overlay.Request) (overlay.Event, error) {
	e, ev, err := c.addEntry(req)
	if err != nil {
		return overlay.Event{}, err
	}
	ev.Entry = e
	return ev, nil
}

func (c *Controller) addEntry(req overlay.Request) (overlay.Entry, overlay.Event, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if c.storeErr != nil {
		return overlay.Entry{}, overlay.Event{}, c.storeErr
	}
	if c.store == nil {
		return overlay.Entry{}, overlay.Event{}, ErrClosed
	}
	if c.good == nil || c.live == nil {
		return overlay.Entry{}, overlay.Event{}, ErrNoPolicyYet
	}
	rules := c.rules()
	if err := rules.Validate(req); err != nil {
		return overlay.Entry{}, overlay.Event{}, err
	}
	if err := c.overlay.Room(overlay.Key{Kind: req.Kind, Prefix: req.Prefix}, c.maxEntries(), now); err != nil {
		c.refused++
		c.publish()
		return overlay.Entry{}, overlay.Event{}, err
	}
	next := cloneState(c.overlay)
	e, ev := rules.Add(&next, req, now)
	dropped := next.Trim(c.historyLimit())
	if err := overlay.Conflict(c.good.Tables, c.overlay.Live(now), e); err != nil {
		return overlay.Entry{}, overlay.Event{}, err
	}
	prev, had := findEntry(c.overlay, e.Key())
	tables := overlay.Merge(c.good.Tables, next.Live(now))
	// Durable first: a crash after this finds the entry in the store and applies it.
	if err := c.store.Commit([]overlay.Entry{e}, nil, []overlay.Event{ev}); err != nil {
		return overlay.Entry{}, overlay.Event{}, fmt.Errorf("storing the entry: %w", err)
	}
	undoStore := func() {
		var err error
		if had {
			err = c.store.Commit([]overlay.Entry{prev}, nil, nil)
		} else {
			err = c.store.Commit(nil, []overlay.Key{e.Key()}, nil)
		}
		if err != nil {
			c.log.Error("undoing a stored entry", "entry", e.Key(), "error", err)
		}
	}
	// A new key, or the same key with new values (a longer term) written over it.
	te := overlay.TableEntry(tables, e)
	if err := c.prog.UpdateEntry(tables, te, true); err != nil {
		undoStore()
		return overlay.Entry{}, overlay.Event{}, fmt.Errorf("writing the entry into the data plane: %w", err)
	}
	if pr := c.proveEntry(tables, e.Prefix, now); !pr.OK() {
		old := overlay.Merge(c.good.Tables, c.overlay.Live(now))
		if had {
			c.prog.UpdateEntry(old, overlay.TableEntry(old, prev), true)
		} else {
			c.prog.UpdateEntry(old, te, false)
		}
		undoStore()
		return overlay.Entry{}, overlay.Event{}, fmt.Errorf("proof failed, the entry was taken out again: %s", pr.Mismatches[0])
	}
	c.overlay, c.live = next, tables
	c.dropped += uint64(dropped)
	c.auditEntry(now, ev)
	c.event(ev)
	c.log.Info("runtime entry "+string(ev.Action), "entry", e.Key(), "expires", e.Expires.Format(time.RFC3339), "who", e.Who, "ticket", e.Ticket, "level", e.Level)
	c.publish()
	return e, ev, nil
}

// CheckEntry says whether req would be taken here, by the bounds of the policy in
// force (kinds, terms, the ranges where it is forbidden), without adding it: a fleet
// entry asked of this router is checked so before it goes to every router.
func (c *Controller) CheckEntry(req overlay.Request) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.good == nil {
		return ErrNoPolicyYet
	}
	return c.rules().Validate(req)
}

// ReleaseEntry removes a runtime entry.
func (c *Controller) ReleaseEntry(k overlay.Key, who, reason string) error {
	if err := overlay.CheckText("reason", reason, false); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.storeErr != nil {
		return c.storeErr
	}
	return c.removeEntry(k, overlay.Released, who, reason, c.now())
}

// removeEntry takes k out of the store and the data plane. Called with c.mu held.
func (c *Controller) removeEntry(k overlay.Key, action overlay.Action, who, reason string, now time.Time) error {
	if c.store == nil {
		return ErrClosed
	}
	e, ok := findEntry(c.overlay, k)
	if !ok {
		if k.Kind == overlay.Quarantine && c.good != nil {
			for _, q := range c.good.Policy.Quarantines {
				if q.CIDR.Prefix == k.Prefix {
					return fmt.Errorf("%w: %s; it is the policy's quarantine (%s), not a runtime one: remove it from the policy", overlay.ErrNotFound, k, q.Pos)
				}
			}
		}
		return fmt.Errorf("%w: %s%s", overlay.ErrNotFound, k, c.nearMiss(k, now))
	}
	next := cloneState(c.overlay)
	ev, err := overlay.Remove(&next, k, action, who, reason, now)
	if err != nil {
		return err
	}
	dropped := next.Trim(c.historyLimit())
	// Out of the data plane first, then out of the store: a crash in between leaves
	// the entry in the store, and the next start applies it again (the release was not
	// answered; it is asked again). The other order left it in the data plane alone,
	// which the next start takes for a lost store and recovers: a released unblock
	// back in force for a day.
	tables := c.live
	if c.live != nil && c.good != nil {
		tables = overlay.Merge(c.good.Tables, next.Live(now))
		if err := c.prog.UpdateEntry(tables, overlay.TableEntry(c.live, e), false); err != nil {
			return fmt.Errorf("removing the entry from the data plane: %w", err)
		}
	}
	if c.crashPoint != nil {
		c.crashPoint()
	}
	// With a failed store (expiries only: changes are refused then) the entry still
	// leaves the data plane; there is nothing to write it to.
	if c.store != nil {
		if err := c.store.Commit(nil, []overlay.Key{k}, []overlay.Event{ev}); err != nil {
			if tables != c.live {
				if perr := c.prog.UpdateEntry(c.live, overlay.TableEntry(c.live, e), true); perr != nil {
					c.log.Error("putting a runtime entry back into the data plane", "entry", k, "error", perr)
				}
			}
			return fmt.Errorf("storing the release: %w", err)
		}
	}
	c.live = tables
	c.overlay = next
	c.dropped += uint64(dropped)
	c.auditEntry(now, ev)
	c.event(ev)
	c.log.Info("runtime entry "+string(action), "entry", k, "who", who)
	c.publish()
	return nil
}

// nearMiss says which live entries a release of k, which is not an entry, may have
// meant ("" if none): those of k's kind that hold k's prefix or lie within it, and one
// of the other kind with k's prefix. Called with c.mu held.
func (c *Controller) nearMiss(k overlay.Key, now time.Time) string {
	var near []string
	other := ""
	for _, e := range c.overlay.Live(now) {
		switch {
		case e.Kind == k.Kind && overlay.Concerns(e.Prefix, k.Prefix):
			near = append(near, e.Prefix.String())
		case e.Kind != k.Kind && e.Prefix == k.Prefix:
			other = string(e.Kind)
		}
	}
	var out string
	if len(near) > 0 {
		if len(near) > 5 {
			near = append(near[:5], fmt.Sprintf("and %d more", len(near)-5))
		}
		out = fmt.Sprintf("; the runtime %ss that hold it or lie within it are %s: release one of those by its own prefix", k.Kind, strings.Join(near, ", "))
	}
	if other != "" {
		out += fmt.Sprintf("; %s is a runtime %s: release the %s", k.Prefix, other, other)
	}
	return out
}

// expireRuntime ends the entries whose term is over: unblocks are ended here (the data
// plane keeps no expiry for them), quarantines have already been lifted by the data
// plane and leave the tables. It runs with a failed store too: terms still end.
func (c *Controller) expireRuntime() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.store == nil {
		return // closed, or the store failed: nothing can be recorded
	}
	now := c.now()
	for _, e := range slices.Clone(c.overlay.Entries) {
		if !e.Live(now) {
			if err := c.removeEntry(e.Key(), overlay.Expired, "expiry", "", now); err != nil {
				c.log.Error("expiring a runtime entry", "entry", e.Key(), "error", err)
			}
		}
	}
}

// runtimeView is the runtime entries and history as published. Nothing changes it:
// writers change a copy of the entries (cloneState) and only append to the history
// past the view's end, or drop from its front by slicing (overlay.State.Trim).
type runtimeView struct {
	state overlay.State
	first uint64 // the number of state.History[0], counted from 1 since the start
}

// view is the state to publish: it shares the controller's arrays, capped so that no
// reader can append into them. Called with c.mu held.
func (c *Controller) view() *runtimeView {
	es, h := c.overlay.Entries, c.overlay.History
	return &runtimeView{state: overlay.State{Entries: es[:len(es):len(es)], History: h[:len(h):len(h)]}, first: c.dropped + 1}
}

// Entries returns the live runtime entries as last published: it never waits for a
// change in progress.
func (c *Controller) Entries() []overlay.Entry {
	return c.entries.Load().state.Live(c.now())
}

// EntriesPage returns up to limit of the live runtime entries as last published (in
// the order of Entries), only those that concern prefix p (overlay.Concerns) if p is
// valid, after the entry after if after.Prefix is valid; and whether more follow.
func (c *Controller) EntriesPage(p netip.Prefix, after overlay.Key, limit int) ([]overlay.Entry, bool) {
	return c.entries.Load().state.EntriesPage(c.now(), p, after, limit)
}

// History returns the history of the entries that concern prefix p
// (overlay.Concerns; every entry's if p is not valid) as last published.
func (c *Controller) History(p netip.Prefix) []overlay.Event {
	var out []overlay.Event
	for _, ev := range c.entries.Load().state.History {
		if !p.IsValid() || overlay.Concerns(ev.Entry.Prefix, p) {
			out = append(out, ev)
		}
	}
	return out
}

// HistoryPage returns up to limit of the newest events of the history as last
// published, oldest first: of prefix p only if p is valid, numbered below before if
// before is not 0. Events are numbered from 1 in the order they happened since the
// daemon started (those loaded from the store first). It returns the number of the
// first event returned and whether older ones match too.
func (c *Controller) HistoryPage(p netip.Prefix, before uint64, limit int) ([]overlay.Event, uint64, bool) {
	v := c.entries.Load()
	return v.state.HistoryPage(v.first, p, before, limit)
}

// proveEntry probes the first and last address of prefix on the live program, to the
// governed ports, as arriving on an interface no scope names and on each interface
// the program knows, against the model of tables.
func (c *Controller) proveEntry(tables *model.Tables, prefix netip.Prefix, now time.Time) Proof {
	var probes []probe
	ifaces := append([]string{""}, slices.Sorted(maps.Keys(c.prog.Interfaces()))...)
	dst := unrelayed(tables, probeDsts4)
	if prefix.Addr().Is6() {
		dst = unrelayed(tables, probeDsts6)
	}
	for _, src := range []netip.Addr{prefix.Masked().Addr(), policy.LastAddr(prefix)} {
		for _, port := range tables.Governed[:min(len(tables.Governed), 4)] {
			for _, ifname := range ifaces {
				probes = append(probes, probe{src, dst, port, ifname, []model.Link{model.LinkEthernet}})
			}
		}
	}
	pr, err := runProbes(c.prog.ProbeAt, tables, probes, now)
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

// cloneState is s to change: the entries copied (Add and Remove change them in place),
// the history shared, since a change only appends to it past every published view's
// end (within the capacity left, else into a new array) or trims its front.
func cloneState(s overlay.State) overlay.State {
	return overlay.State{Entries: slices.Clone(s.Entries), History: s.History}
}

// auditEntry writes one runtime change to the audit log.
func (c *Controller) auditEntry(now time.Time, ev overlay.Event) {
	c.audit.writeEntry(now, ev)
}
