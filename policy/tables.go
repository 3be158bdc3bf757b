// Package policy parses, checks and compiles Portcullis policies, and holds the
// reference model of the data plane's verdict. It is pure Go with no kernel dependency:
// the loader turns Tables into BPF maps, and tests use the model as their oracle.
package policy

import (
	"net/netip"
	"strconv"
	"time"
)

// Verdict is what a rule says about TCP packets to the governed ports. The values are
// the data plane's (enum pc_verdict in bpf/types.h).
type Verdict uint8

const (
	Pass    Verdict = 0 // let it through
	Drop    Verdict = 1 // XDP_DROP
	Reset   Verdict = 2 // answer a SYN with RST+ACK (XDP_TX), drop other segments
	Monitor Verdict = 3 // pass, but count as "would block"
)

var verdictNames = [...]string{"pass", "drop", "reset", "monitor"}

func (v Verdict) String() string {
	if int(v) < len(verdictNames) {
		return verdictNames[v]
	}
	return "verdict(" + itoa(int(v)) + ")"
}

// Blocks reports whether the verdict stops traffic to the governed ports.
func (v Verdict) Blocks() bool { return v == Drop || v == Reset }

// ParseVerdict returns the verdict named s ("pass", "drop", "reset", "monitor").
func ParseVerdict(s string) (Verdict, bool) {
	for i, n := range verdictNames {
		if n == s {
			return Verdict(i), true
		}
	}
	return 0, false
}

// Entry is one prefix of a compiled table: the prefix, the rule it belongs to and that
// rule's verdict. Expires is zero for entries that never expire.
type Entry struct {
	Prefix  netip.Prefix
	Rule    uint32
	Verdict Verdict
	Expires time.Time
}

// Tables is a compiled policy: exactly what the data plane holds. Rule 0 is the
// default (sources in no range); RuleNames[i] names rule i.
type Tables struct {
	DefaultVerdict Verdict
	Governed       []uint16 // governed TCP destination ports
	RSTRate        uint32   // RSTs per second per CPU; 0 = unlimited
	RSTBurst       uint32   // RSTs a CPU may send back to back
	Ranges         []Entry  // ranges and exemptions, IPv4 and IPv6
	Quarantines    []Entry  // checked before Ranges; expired entries are ignored
	RuleNames      []string
	RuleKinds      []Kind // RuleKinds[i] is rule i's kind; may be empty (tests build tables by hand)

	index *tableIndex
}

// RuleName returns the name of rule id, or "rule N" for an id without one.
func (t *Tables) RuleName(id uint32) string {
	if int(id) < len(t.RuleNames) {
		return t.RuleNames[id]
	}
	return "rule " + itoa(int(id))
}

// RuleLabel returns "kind/name" for rule id: the name under which its counters are
// kept across policies (the data plane's rule ids change from one policy to the next).
func (t *Tables) RuleLabel(id uint32) string {
	kind := "rule"
	if int(id) < len(t.RuleKinds) {
		kind = string(t.RuleKinds[id])
	} else if id == 0 {
		kind = string(KindDefault)
	}
	return kind + "/" + t.RuleName(id)
}

// IsGoverned reports whether TCP port is governed.
func (t *Tables) IsGoverned(port uint16) bool {
	for _, p := range t.Governed {
		if p == port {
			return true
		}
	}
	return false
}

// tableIndex answers longest-prefix lookups in O(prefix lengths present).
type tableIndex struct {
	ranges, quarantines prefixIndex
}

type prefixIndex struct {
	byPrefix map[netip.Prefix]Entry
	lens4    []int // prefix lengths present, longest first
	lens6    []int
}

func newPrefixIndex(entries []Entry) prefixIndex {
	ix := prefixIndex{byPrefix: make(map[netip.Prefix]Entry, len(entries))}
	var seen4, seen6 [129]bool
	for _, e := range entries {
		p := e.Prefix.Masked()
		ix.byPrefix[p] = e
		if p.Addr().Is4() {
			seen4[p.Bits()] = true
		} else {
			seen6[p.Bits()] = true
		}
	}
	for l := 128; l >= 0; l-- {
		if seen4[l] {
			ix.lens4 = append(ix.lens4, l)
		}
		if seen6[l] {
			ix.lens6 = append(ix.lens6, l)
		}
	}
	return ix
}

// covering calls fn for every entry whose prefix contains a, longest first, until fn
// returns false.
func (ix *prefixIndex) covering(a netip.Addr, fn func(Entry) bool) {
	lens := ix.lens6
	if a.Is4() {
		lens = ix.lens4
	}
	for _, l := range lens {
		p, _ := a.Prefix(l)
		if e, ok := ix.byPrefix[p]; ok && !fn(e) {
			return
		}
	}
}

// lookup returns the entry with the longest prefix containing a.
func (ix *prefixIndex) lookup(a netip.Addr) (e Entry, found bool) {
	ix.covering(a, func(x Entry) bool {
		e, found = x, true
		return false
	})
	return e, found
}

func (t *Tables) idx() *tableIndex {
	if t.index == nil {
		t.index = &tableIndex{
			ranges:      newPrefixIndex(t.Ranges),
			quarantines: newPrefixIndex(t.Quarantines),
		}
	}
	return t.index
}

// Source is the decision for a source address: the rule that decides and its verdict.
type Source struct {
	Rule       uint32
	Verdict    Verdict
	Quarantine bool // decided by a live quarantine entry
}

// LookupSource is the data plane's address lookup: the longest quarantine prefix
// (ignored once expired at now), else the longest range prefix, else rule 0 with the
// default verdict.
func (t *Tables) LookupSource(a netip.Addr, now time.Time) Source {
	a = a.Unmap()
	ix := t.idx()
	if e, ok := ix.quarantines.lookup(a); ok && (e.Expires.IsZero() || now.Before(e.Expires)) {
		return Source{Rule: e.Rule, Verdict: e.Verdict, Quarantine: true}
	}
	if e, ok := ix.ranges.lookup(a); ok {
		return Source{Rule: e.Rule, Verdict: e.Verdict}
	}
	return Source{Rule: 0, Verdict: t.DefaultVerdict}
}

func itoa(i int) string { return strconv.Itoa(i) }
