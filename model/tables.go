// Package model is the reference model of the data plane: the kernel-ABI enums the
// XDP program and Go share (verdicts, actions, reasons, link types: checked against
// the bpf2go output by loader's ABI test), the compiled Tables the loader turns into
// BPF maps, the packet decoder, and Judge, which says what the program must do with a
// frame. It is pure Go with no kernel dependency and knows nothing of YAML: package
// policy compiles a policy into Tables, package overlay lays runtime entries over
// them, and verify.Compare holds the program to Judge.
package model

import (
	"net/netip"
	"slices"
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
// rule's verdict. Expires is zero for entries that never expire. Interfaces, sorted,
// is the entry's scope: nil applies on every interface.
type Entry struct {
	Prefix     netip.Prefix
	Rule       uint32
	Verdict    Verdict
	Expires    time.Time
	Interfaces []string
}

// AppliesOn reports whether e applies to packets arriving on interface ifname ("" is
// an interface no scope names).
func (e *Entry) AppliesOn(ifname string) bool {
	return e.Interfaces == nil || ifname != "" && slices.Contains(e.Interfaces, ifname)
}

// MaxRelayPorts is how many ports one relay may list (PC_RELAY_PORTS).
const MaxRelayPorts = 8

// RelayEntry is one destination prefix of a relay: towards it the relay's ports (all
// governed ports when Ports is empty) pass whoever the source is, quarantined sources
// too unless BlockQuarantined.
type RelayEntry struct {
	Prefix           netip.Prefix
	Rule             uint32
	Ports            []uint16 // sorted; empty: every governed port
	BlockQuarantined bool
}

// Covers reports whether the relay lets port through.
func (r *RelayEntry) Covers(port uint16) bool {
	return len(r.Ports) == 0 || slices.Contains(r.Ports, port)
}

// Tables is a compiled policy: exactly what the data plane holds. Rule 0 is the
// default (sources in no range); RuleNames[i] names rule i.
type Tables struct {
	DefaultVerdict Verdict
	Governed       []uint16     // governed TCP destination ports
	RSTRate        uint32       // RSTs per second per CPU; 0 = unlimited
	RSTBurst       uint32       // RSTs a CPU may send back to back
	Ranges         []Entry      // ranges and exemptions, IPv4 and IPv6
	Quarantines    []Entry      // checked before Ranges; expired entries are ignored
	Relays         []RelayEntry // destinations checked before any source lookup
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
	relays              prefixIndex // Entry.Rule indexes Tables.Relays
}

// prefixIndex holds entries by prefix. A prefix holds more than one entry only when
// their scopes are disjoint (the parser refuses anything else).
type prefixIndex struct {
	byPrefix map[netip.Prefix][]Entry
	lens4    []int // prefix lengths present, longest first
	lens6    []int
}

func newPrefixIndex(entries []Entry) prefixIndex {
	ix := prefixIndex{byPrefix: make(map[netip.Prefix][]Entry, len(entries))}
	var seen4, seen6 [129]bool
	for _, e := range entries {
		p := e.Prefix.Masked()
		ix.byPrefix[p] = append(ix.byPrefix[p], e)
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
		for _, e := range ix.byPrefix[p] {
			if !fn(e) {
				return
			}
		}
	}
}

// lookup returns the entry with the longest prefix containing a among those that
// apply on interface ifname.
func (ix *prefixIndex) lookup(a netip.Addr, ifname string) (e Entry, found bool) {
	ix.covering(a, func(x Entry) bool {
		if !x.AppliesOn(ifname) {
			return true
		}
		e, found = x, true
		return false
	})
	return e, found
}

func (t *Tables) idx() *tableIndex {
	if t.index == nil {
		relays := make([]Entry, len(t.Relays))
		for i, r := range t.Relays {
			relays[i] = Entry{Prefix: r.Prefix, Rule: uint32(i)}
		}
		t.index = &tableIndex{
			ranges:      newPrefixIndex(t.Ranges),
			quarantines: newPrefixIndex(t.Quarantines),
			relays:      newPrefixIndex(relays),
		}
	}
	return t.index
}

// Covering calls fn for every quarantine, then every range and exemption, whose
// prefix contains a, longest first within each table, until fn returns false
// (explain lists them all, scoped or not).
func (t *Tables) Covering(a netip.Addr, fn func(Entry) bool) {
	ix, more := t.idx(), true
	for _, table := range []*prefixIndex{&ix.quarantines, &ix.ranges} {
		table.covering(a, func(e Entry) bool {
			more = fn(e)
			return more
		})
		if !more {
			return
		}
	}
}

// CoveringRelays calls fn for every relay whose prefix contains dst, longest first,
// until fn returns false.
func (t *Tables) CoveringRelays(dst netip.Addr, fn func(RelayEntry) bool) {
	t.idx().relays.covering(dst, func(e Entry) bool { return fn(t.Relays[e.Rule]) })
}

// Source is the decision for a source address: the rule that decides and its verdict.
type Source struct {
	Rule       uint32
	Verdict    Verdict
	Quarantine bool // decided by a live quarantine entry
}

// LookupSource is LookupSourceOn for an interface that no scope names.
func (t *Tables) LookupSource(a netip.Addr, now time.Time) Source {
	return t.LookupSourceOn(a, "", now)
}

// LookupSourceOn is the data plane's address lookup for a packet that arrived on
// interface ifname: the longest quarantine prefix that applies there (ignored once
// expired at now), else the longest range prefix that applies there, else rule 0 with
// the default verdict.
func (t *Tables) LookupSourceOn(a netip.Addr, ifname string, now time.Time) Source {
	a = a.Unmap()
	if q, ok := t.LookupQuarantine(a, ifname, now); ok {
		return q
	}
	if e, ok := t.idx().ranges.lookup(a, ifname); ok {
		return Source{Rule: e.Rule, Verdict: e.Verdict}
	}
	return Source{Rule: 0, Verdict: t.DefaultVerdict}
}

// LookupQuarantine returns the live quarantine covering a on ifname, if any.
func (t *Tables) LookupQuarantine(a netip.Addr, ifname string, now time.Time) (Source, bool) {
	e, ok := t.idx().quarantines.lookup(a, ifname)
	if ok && (e.Expires.IsZero() || now.Before(e.Expires)) {
		return Source{Rule: e.Rule, Verdict: e.Verdict, Quarantine: true}, true
	}
	return Source{}, false
}

// LookupRelay returns the relay the data plane finds for a packet to dst: the relay
// entry with the longest prefix containing dst. Whether it lets the packet through
// depends on its ports (RelayEntry.Covers): the most specific relay decides, as the
// most specific range does for sources.
func (t *Tables) LookupRelay(dst netip.Addr) (RelayEntry, bool) {
	if !dst.IsValid() || len(t.Relays) == 0 {
		return RelayEntry{}, false
	}
	e, ok := t.idx().relays.lookup(dst.Unmap(), "")
	if !ok {
		return RelayEntry{}, false
	}
	return t.Relays[e.Rule], true
}

// Decide is the whole address decision for TCP to governed port dport from src to
// dst on interface ifname: a relay covering dst and the port passes (unless it blocks
// quarantined sources and a quarantine covers src), else the source lookup decides.
// relay reports that a relay decided.
func (t *Tables) Decide(src, dst netip.Addr, dport uint16, ifname string, now time.Time) (s Source, relay bool) {
	if r, ok := t.LookupRelay(dst); ok && r.Covers(dport) {
		if r.BlockQuarantined {
			if q, ok := t.LookupQuarantine(src.Unmap(), ifname, now); ok {
				return q, false
			}
		}
		return Source{Rule: r.Rule, Verdict: Pass}, true
	}
	return t.LookupSourceOn(src, ifname, now), false
}

func itoa(i int) string { return strconv.Itoa(i) }

// TableEntry is an entry and the table it goes in.
type TableEntry struct {
	Entry
	Quarantine bool // the quarantine table, else the ranges table
}

// Add puts e into t (for tables being built, before they are looked up or applied).
func (t *Tables) Add(e TableEntry) {
	if e.Quarantine {
		t.Quarantines = append(t.Quarantines, e.Entry)
	} else {
		t.Ranges = append(t.Ranges, e.Entry)
	}
	t.index = nil
}
