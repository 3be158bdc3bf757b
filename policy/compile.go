package policy

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// Kind says which part of a policy an entry comes from.
type Kind string

const (
	KindDefault    Kind = "default"
	KindRange      Kind = "range"
	KindExemption  Kind = "exemption"
	KindQuarantine Kind = "quarantine"
	KindRelay      Kind = "relay"
	// Runtime entries (package overlay): one rule per kind counts all of them.
	KindRuntimeQuarantine Kind = "runtime-quarantine"
	KindUnblock           Kind = "unblock"
)

// Rule is one compiled rule: a range, exemption or quarantine (or the default).
type Rule struct {
	ID      uint32
	Kind    Kind
	Name    string
	Verdict Verdict
	Pos     Pos
}

// Compiled is a policy turned into data-plane tables, with what explain and diff need
// to name the entries behind them.
type Compiled struct {
	Policy   *Policy
	Tables   *Tables
	Rules    []Rule               // index = rule id
	EntryPos map[EntryKey]Pos     // where each compiled source prefix is written
	RelayPos map[netip.Prefix]Pos // where each relay prefix is written
	Hash     string               // canonical hash of Tables
}

// EntryKey names one compiled source entry: a prefix may appear once per scope.
type EntryKey struct {
	Prefix netip.Prefix
	Rule   uint32
}

// Compile turns a checked policy into the exact table entries the data plane uses,
// sorted and deterministic. Exemptions and quarantines expired at now are left out.
// Rule ids: 0 the default, then ranges by name, exemptions, quarantines by prefix,
// relays by name.
func Compile(pol *Policy, now time.Time) (*Compiled, error) {
	c := &Compiled{Policy: pol, EntryPos: map[EntryKey]Pos{}, RelayPos: map[netip.Prefix]Pos{}}
	t := &Tables{DefaultVerdict: pol.Default, Governed: slices.Clone(pol.Governed),
		RSTRate: pol.RSTRate, RSTBurst: pol.RSTBurst}
	c.Rules = append(c.Rules, Rule{ID: 0, Kind: KindDefault, Name: "default", Verdict: pol.Default, Pos: pol.DefaultPos})

	ranges := slices.Clone(pol.Ranges)
	slices.SortFunc(ranges, func(a, b Range) int { return cmp.Compare(a.Name, b.Name) })
	for _, r := range ranges {
		id := uint32(len(c.Rules))
		c.Rules = append(c.Rules, Rule{id, KindRange, r.Name, r.Verdict, r.Pos})
		for _, p := range r.CIDRs {
			t.Ranges = append(t.Ranges, Entry{Prefix: p.Prefix, Rule: id, Verdict: r.Verdict, Interfaces: r.Scope})
			c.EntryPos[EntryKey{p.Prefix, id}] = p.Pos
		}
	}
	ex := slices.Clone(pol.Exemptions)
	slices.SortFunc(ex, func(a, b Exemption) int {
		return cmp.Or(comparePrefix(a.CIDR.Prefix, b.CIDR.Prefix), slices.Compare(a.Scope, b.Scope))
	})
	for _, e := range ex {
		if !e.Expires.IsZero() && !now.Before(e.Expires) {
			continue
		}
		id := uint32(len(c.Rules))
		c.Rules = append(c.Rules, Rule{id, KindExemption, e.Name, Pass, e.Pos})
		t.Ranges = append(t.Ranges, Entry{Prefix: e.CIDR.Prefix, Rule: id, Verdict: Pass, Interfaces: e.Scope})
		c.EntryPos[EntryKey{e.CIDR.Prefix, id}] = e.CIDR.Pos
	}
	qs := slices.Clone(pol.Quarantines)
	slices.SortFunc(qs, func(a, b Quarantine) int {
		return cmp.Or(comparePrefix(a.CIDR.Prefix, b.CIDR.Prefix), slices.Compare(a.Scope, b.Scope))
	})
	for _, q := range qs {
		if !now.Before(q.Expires) {
			continue
		}
		id := uint32(len(c.Rules))
		c.Rules = append(c.Rules, Rule{id, KindQuarantine, q.Name, q.Verdict, q.Pos})
		t.Quarantines = append(t.Quarantines, Entry{Prefix: q.CIDR.Prefix, Rule: id, Verdict: q.Verdict, Expires: q.Expires, Interfaces: q.Scope})
		c.EntryPos[EntryKey{q.CIDR.Prefix, id}] = q.CIDR.Pos
	}
	relays := slices.Clone(pol.Relays)
	slices.SortFunc(relays, func(a, b Relay) int { return cmp.Compare(a.Name, b.Name) })
	for _, r := range relays {
		id := uint32(len(c.Rules))
		c.Rules = append(c.Rules, Rule{id, KindRelay, r.Name, Pass, r.Pos})
		for _, p := range r.CIDRs {
			t.Relays = append(t.Relays, RelayEntry{Prefix: p.Prefix, Rule: id, Ports: slices.Clone(r.Ports), BlockQuarantined: r.BlockQuarantined})
			c.RelayPos[p.Prefix] = p.Pos
		}
	}
	slices.SortFunc(t.Relays, func(a, b RelayEntry) int { return comparePrefix(a.Prefix, b.Prefix) })
	if len(c.Rules) > MaxRules {
		return nil, Errors{{Pos{pol.File, 1, 1}, fmt.Sprintf("the policy has %d rules (ranges + exemptions + quarantines + relays + default); the data plane counts at most %d: merge exemptions or ranges", len(c.Rules), MaxRules)}}
	}
	if n := len(pol.Interfaces()); n > MaxScopedInterfaces {
		return nil, Errors{{Pos{pol.File, 1, 1}, fmt.Sprintf("the policy's scopes name %d interfaces; the data plane holds at most %d: scope by fewer interfaces", n, MaxScopedInterfaces)}}
	}
	slices.SortFunc(t.Ranges, func(a, b Entry) int { return cmp.Or(comparePrefix(a.Prefix, b.Prefix), cmp.Compare(a.Rule, b.Rule)) })
	for _, r := range c.Rules {
		t.RuleNames = append(t.RuleNames, r.Name)
		t.RuleKinds = append(t.RuleKinds, r.Kind)
	}
	c.Tables = t
	c.Hash = t.hash()
	return c, nil
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return cmp.Compare(a.Bits(), b.Bits())
}

// hash is a canonical hash of tables in the order Compile leaves them (entries by
// prefix, ports ascending): the same policy, however written (order, comments,
// spelling of prefixes), hashes the same. 16 hex digits of SHA-256.
func (t *Tables) hash() string {
	h := sha256.New()
	var b [8]byte
	put := func(v uint64) {
		binary.BigEndian.PutUint64(b[:], v)
		h.Write(b[:])
	}
	str := func(s string) {
		put(uint64(len(s)))
		h.Write([]byte(s))
	}
	put(uint64(t.DefaultVerdict))
	put(uint64(len(t.Governed)))
	for _, g := range t.Governed {
		put(uint64(g))
	}
	put(uint64(t.RSTRate))
	put(uint64(t.RSTBurst))
	for _, es := range [][]Entry{t.Ranges, t.Quarantines} {
		put(uint64(len(es)))
		for _, e := range es {
			a := e.Prefix.Addr().As16()
			h.Write(a[:])
			put(uint64(e.Prefix.Bits()))
			if e.Prefix.Addr().Is4() {
				put(4)
			} else {
				put(6)
			}
			put(uint64(e.Verdict))
			str(t.RuleName(e.Rule))
			if !e.Expires.IsZero() {
				put(uint64(e.Expires.Unix()))
			} else {
				put(0)
			}
			// Scopes only from the first one on, so policies without them keep the
			// hash they had before scopes existed.
			if e.Interfaces != nil {
				str("interfaces")
				put(uint64(len(e.Interfaces)))
				for _, i := range e.Interfaces {
					str(i)
				}
			}
		}
	}
	if len(t.Relays) > 0 {
		str("relays")
		put(uint64(len(t.Relays)))
		for _, r := range t.Relays {
			a := r.Prefix.Addr().As16()
			h.Write(a[:])
			put(uint64(r.Prefix.Bits()))
			if r.Prefix.Addr().Is4() {
				put(4)
			} else {
				put(6)
			}
			str(t.RuleName(r.Rule))
			put(uint64(len(r.Ports)))
			for _, port := range r.Ports {
				put(uint64(port))
			}
			if r.BlockQuarantined {
				put(1)
			} else {
				put(0)
			}
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}
