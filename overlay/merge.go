package overlay

import (
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/portcullis/portcullis/model"
	"github.com/portcullis/portcullis/policy"
)

// RuleName is the name of the two rules that count runtime entries, one per kind
// (labels runtime-quarantine/runtime and unblock/runtime).
const RuleName = "runtime"

// RulesFor turns a policy's runtime: section into Rules.
func RulesFor(pol *policy.Policy) Rules {
	rt := pol.Runtime
	r := Rules{Escalation: rt.QuarantineTerms, Memory: rt.QuarantineMemory, Reset: rt.QuarantineReset,
		MaxQuarantine: rt.MaxQuarantine(), MaxUnblock: rt.UnblockMax, DefaultUnblock: rt.UnblockDefault}
	r.WidestUnblock4, r.WidestUnblock6 = rt.WidestUnblocks()
	if r.MaxUnblock == 0 {
		r.MaxUnblock = DefaultMaxUnblock
	}
	r.Forbid = func(k Kind, p netip.Prefix) string { return pol.RuntimeForbids(string(k), p) }
	return r
}

// Merge returns the tables the data plane holds for policy tables t with the live
// runtime entries laid over them: a rule for each kind appended to t's rules (always,
// so an entry added later has a rule to count under), quarantines in the quarantine
// table, unblocks in the ranges table (pass, no expiry in the data plane: the
// controller removes an unblock when it ends). t is not changed.
func Merge(t *model.Tables, entries []Entry) *model.Tables {
	m := &model.Tables{
		DefaultVerdict: t.DefaultVerdict, Governed: t.Governed, RSTRate: t.RSTRate, RSTBurst: t.RSTBurst,
		Ranges: slices.Clone(t.Ranges), Quarantines: slices.Clone(t.Quarantines), Relays: t.Relays,
		RuleNames: append(slices.Clone(t.RuleNames), RuleName, RuleName),
	}
	if len(t.RuleKinds) == len(t.RuleNames) {
		m.RuleKinds = append(slices.Clone(t.RuleKinds), model.KindRuntimeQuarantine, model.KindUnblock)
	}
	for _, e := range entries {
		m.Add(TableEntry(m, e))
	}
	return m
}

// Rules returns the rule ids of the runtime quarantine and unblock rules in tables
// made by Merge.
func RuleIDs(m *model.Tables) (quarantine, unblock uint32) {
	n := uint32(len(m.RuleNames))
	return n - 2, n - 1
}

// TableEntry is e as an entry of merged tables m, and whether it goes in the
// quarantine table.
func TableEntry(m *model.Tables, e Entry) model.TableEntry {
	q, u := RuleIDs(m)
	if e.Kind == Quarantine {
		v := model.Drop
		if e.Reset {
			v = model.Reset
		}
		return model.TableEntry{Quarantine: true, Entry: model.Entry{Prefix: e.Prefix, Rule: q, Verdict: v, Expires: e.Expires}}
	}
	return model.TableEntry{Entry: model.Entry{Prefix: e.Prefix, Rule: u, Verdict: model.Pass}}
}

// Conflict says why entry e cannot be laid over policy tables t (with the other live
// entries), or nil: a quarantine may not nest with another quarantine (the data plane
// checks only the most specific one, so an inner one's expiry would hide the outer),
// and an unblock may not repeat a prefix the policy's ranges or exemptions list.
func Conflict(t *model.Tables, live []Entry, e Entry) error {
	if e.Kind == Quarantine {
		for _, q := range t.Quarantines {
			if q.Prefix.Overlaps(e.Prefix) {
				return fmt.Errorf("%w: %s overlaps the policy's quarantine %s (%s); quarantines may not nest: release that one or change the policy", ErrInvalid, e.Prefix, q.Prefix, t.RuleName(q.Rule))
			}
		}
		for _, o := range live {
			if o.Kind == Quarantine && o.Prefix != e.Prefix && o.Prefix.Overlaps(e.Prefix) {
				return fmt.Errorf("%w: %s overlaps the runtime quarantine %s; quarantines may not nest: release it first", ErrInvalid, e.Prefix, o.Prefix)
			}
		}
		return nil
	}
	for _, r := range t.Ranges {
		if r.Prefix == e.Prefix {
			return fmt.Errorf("%w: %s is itself an entry of the policy (%s); an unblock is for an address inside a range: change the policy instead", ErrInvalid, e.Prefix, t.RuleName(r.Rule))
		}
	}
	return nil
}

// Expiring returns the earliest expiry among entries after now (zero if none).
func Expiring(entries []Entry, now time.Time) time.Time {
	var next time.Time
	for _, e := range entries {
		if e.Expires.After(now) && (next.IsZero() || e.Expires.Before(next)) {
			next = e.Expires
		}
	}
	return next
}
