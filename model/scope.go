package model

import (
	"slices"
	"strings"
)

// MaxScopedInterfaces is how many interfaces the scopes of one policy may name (the
// data plane's interface table holds this many per policy slot: PC_MAX_SCOPED_IFACES).
const MaxScopedInterfaces = 1024

// ScopePlan is how the data plane holds scoped entries. Interfaces that the same
// scoped entries apply to share a group (numbered from 1; an interface no scope names
// is group 0 and never looks at the group tables). For a packet arriving in group g,
// the program looks up g's quarantines, then the quarantines without scope, then g's
// ranges, then the ranges without scope, and the first hit decides.
//
// That equals "the longest prefix among the entries that apply on this interface"
// (LookupSourceOn) because of what a group's range table holds: every scoped range or
// exemption that applies in g, and every unscoped one lying strictly inside one of
// those (the parser refuses the same prefix unscoped and scoped). Whatever the group
// table finds is therefore the longest applicable match, and when it finds nothing no
// scoped entry covers the address, so the unscoped table alone decides. Quarantines
// may not nest at all, so at most one applies to an address and the order of the two
// quarantine lookups does not matter. Policies without scopes have no groups and cost
// nothing.
type ScopePlan struct {
	Groups      map[string]uint32 // interface -> group
	Ranges      []GroupEntry      // sorted by group, then prefix
	Quarantines []GroupEntry
}

// GroupEntry is an entry of one group's table.
type GroupEntry struct {
	Group uint32
	Entry
}

// Scoped reports whether t has any scoped entry.
func (t *Tables) Scoped() bool {
	for _, tab := range [][]Entry{t.Ranges, t.Quarantines} {
		for _, e := range tab {
			if e.Interfaces != nil {
				return true
			}
		}
	}
	return false
}

// Interfaces returns every interface named by a scope in t, sorted.
func (t *Tables) Interfaces() []string {
	var out []string
	for _, tab := range [][]Entry{t.Ranges, t.Quarantines} {
		for _, e := range tab {
			out = append(out, e.Interfaces...)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// Plan computes the ScopePlan of t (empty for a policy without scopes).
func (t *Tables) Plan() ScopePlan {
	plan := ScopePlan{Groups: map[string]uint32{}}
	ifaces := t.Interfaces()
	if len(ifaces) == 0 {
		return plan
	}
	// An interface's signature: which scoped entries apply on it.
	type scoped struct {
		entry      Entry
		quarantine bool
	}
	var all []scoped
	for _, e := range t.Ranges {
		if e.Interfaces != nil {
			all = append(all, scoped{e, false})
		}
	}
	for _, e := range t.Quarantines {
		if e.Interfaces != nil {
			all = append(all, scoped{e, true})
		}
	}
	bySig := map[string]uint32{}
	members := map[uint32][]int{} // group -> indexes into all
	for _, name := range ifaces {
		var sig []string
		var idx []int
		for i, s := range all {
			if slices.Contains(s.entry.Interfaces, name) {
				sig = append(sig, itoa(i))
				idx = append(idx, i)
			}
		}
		k := strings.Join(sig, ",")
		g, ok := bySig[k]
		if !ok {
			g = uint32(len(bySig) + 1)
			bySig[k] = g
			members[g] = idx
		}
		plan.Groups[name] = g
	}
	for g := uint32(1); g <= uint32(len(bySig)); g++ {
		var ranges []Entry
		for _, i := range members[g] {
			s := all[i]
			if s.quarantine {
				plan.Quarantines = append(plan.Quarantines, GroupEntry{g, s.entry})
			} else {
				ranges = append(ranges, s.entry)
			}
		}
		if len(ranges) == 0 {
			continue
		}
		ix := newPrefixIndex(ranges)
		for _, e := range ranges {
			plan.Ranges = append(plan.Ranges, GroupEntry{g, e})
		}
		for _, u := range t.Ranges {
			if u.Interfaces != nil {
				continue
			}
			inside := false
			ix.covering(u.Prefix.Addr(), func(s Entry) bool {
				inside = s.Prefix.Bits() < u.Prefix.Bits()
				return !inside
			})
			if inside {
				plan.Ranges = append(plan.Ranges, GroupEntry{g, u})
			}
		}
	}
	byGroup := func(a, b GroupEntry) int {
		if a.Group != b.Group {
			return int(a.Group) - int(b.Group)
		}
		return ComparePrefix(a.Prefix, b.Prefix)
	}
	slices.SortFunc(plan.Ranges, byGroup)
	slices.SortFunc(plan.Quarantines, byGroup)
	return plan
}
