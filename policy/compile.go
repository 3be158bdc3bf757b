package policy

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/portcullis/portcullis/model"
)

// Rule is one compiled rule: a range, exemption or quarantine (or the default).
type Rule struct {
	ID      uint32
	Kind    model.Kind
	Name    string
	Verdict model.Verdict
	Pos     Pos
}

// Compiled is a policy turned into data-plane tables, with what explain and diff need
// to name the entries behind them.
type Compiled struct {
	Policy   *Policy
	Tables   *model.Tables
	Rules    []Rule               // index = rule id
	RelayPos map[netip.Prefix]Pos // where each relay prefix is written
	Hash     string               // canonical hash of Tables

	// Where each compiled source entry is written (EntryPos): entry k of ranges is
	// prefix cidrs[rule][rangeAt[k]], of quarantines cidrs[rule][0]. A map of a
	// million positions cost more than the rest of the compile.
	ranges, quarantines []model.Entry
	rangeAt             []uint32
	cidrs               [][]CIDR // by rule id: a range's prefixes, an exemption's or quarantine's one
}

// EntryKey names one compiled source entry: a prefix may appear once per scope.
type EntryKey struct {
	Prefix netip.Prefix
	Rule   uint32
}

// EntryPos returns where the compiled source entry k (a range's prefix, an
// exemption or a quarantine) is written, or the zero Pos for an entry the policy does
// not have.
func (c *Compiled) EntryPos(k EntryKey) Pos {
	find := func(es []model.Entry) (int, bool) {
		return slices.BinarySearchFunc(es, k, func(e model.Entry, k EntryKey) int {
			return cmp.Or(model.ComparePrefix(e.Prefix, k.Prefix), cmp.Compare(e.Rule, k.Rule))
		})
	}
	if i, ok := find(c.ranges); ok {
		return c.cidrs[k.Rule][c.rangeAt[i]].Pos
	}
	if _, ok := find(c.quarantines); ok {
		return c.cidrs[k.Rule][0].Pos
	}
	return Pos{}
}

// Compile turns a checked policy into the exact table entries the data plane uses,
// sorted and deterministic. Exemptions and quarantines expired at now are left out.
// Rule ids: 0 the default, then ranges by name, exemptions, quarantines by prefix,
// relays by name.
func Compile(pol *Policy, now time.Time) (*Compiled, error) {
	c := &Compiled{Policy: pol, RelayPos: map[netip.Prefix]Pos{}}
	t := &model.Tables{DefaultVerdict: pol.Default, Governed: slices.Clone(pol.Governed),
		RSTRate: pol.RSTRate, RSTBurst: pol.RSTBurst}
	c.Rules = append(c.Rules, Rule{ID: 0, Kind: model.KindDefault, Name: "default", Verdict: pol.Default, Pos: pol.DefaultPos})
	c.cidrs = append(c.cidrs, nil)
	scopes := []Scope{nil} // by rule id

	// The range table is sorted as plain keys (prefix, rule, index in the rule's
	// prefixes), then built in that order: sorting a million entries, which hold
	// pointers, cost more than the rest of the compile.
	type rangeKey struct {
		key     pkey
		rule, i uint32
	}
	n := len(pol.Exemptions)
	for _, r := range pol.Ranges {
		n += len(r.CIDRs)
	}
	keys := make([]rangeKey, 0, n)
	ranges := slices.Clone(pol.Ranges)
	slices.SortFunc(ranges, func(a, b Range) int { return cmp.Compare(a.Name, b.Name) })
	for _, r := range ranges {
		id := uint32(len(c.Rules))
		c.Rules = append(c.Rules, Rule{id, model.KindRange, r.Name, r.Verdict, r.Pos})
		c.cidrs = append(c.cidrs, r.CIDRs)
		scopes = append(scopes, r.Scope)
		for i, p := range r.CIDRs {
			keys = append(keys, rangeKey{keyOf(p.Prefix), id, uint32(i)})
		}
	}
	ex := slices.Clone(pol.Exemptions)
	slices.SortFunc(ex, func(a, b Exemption) int {
		return cmp.Or(model.ComparePrefix(a.CIDR.Prefix, b.CIDR.Prefix), slices.Compare(a.Scope, b.Scope))
	})
	one := make([]CIDR, 0, len(ex)+len(pol.Quarantines)) // the prefixes of exemptions and quarantines, one each
	for _, e := range ex {
		if !e.Expires.IsZero() && !now.Before(e.Expires) {
			continue
		}
		id := uint32(len(c.Rules))
		c.Rules = append(c.Rules, Rule{id, model.KindExemption, e.Name, model.Pass, e.Pos})
		one = append(one, e.CIDR)
		c.cidrs = append(c.cidrs, one[len(one)-1:])
		scopes = append(scopes, e.Scope)
		keys = append(keys, rangeKey{keyOf(e.CIDR.Prefix), id, 0})
	}
	qs := slices.Clone(pol.Quarantines)
	slices.SortFunc(qs, func(a, b Quarantine) int {
		return cmp.Or(model.ComparePrefix(a.CIDR.Prefix, b.CIDR.Prefix), slices.Compare(a.Scope, b.Scope))
	})
	for _, q := range qs {
		if !now.Before(q.Expires) {
			continue
		}
		id := uint32(len(c.Rules))
		c.Rules = append(c.Rules, Rule{id, model.KindQuarantine, q.Name, q.Verdict, q.Pos})
		one = append(one, q.CIDR)
		c.cidrs = append(c.cidrs, one[len(one)-1:])
		t.Quarantines = append(t.Quarantines, model.Entry{Prefix: q.CIDR.Prefix, Rule: id, Verdict: q.Verdict, Expires: q.Expires, Interfaces: q.Scope})
	}
	relays := slices.Clone(pol.Relays)
	slices.SortFunc(relays, func(a, b Relay) int { return cmp.Compare(a.Name, b.Name) })
	for _, r := range relays {
		id := uint32(len(c.Rules))
		c.Rules = append(c.Rules, Rule{id, model.KindRelay, r.Name, model.Pass, r.Pos})
		for _, p := range r.CIDRs {
			t.Relays = append(t.Relays, model.RelayEntry{Prefix: p.Prefix, Rule: id, Ports: slices.Clone(r.Ports), BlockQuarantined: r.BlockQuarantined})
			c.RelayPos[p.Prefix] = p.Pos
		}
	}
	slices.SortFunc(t.Relays, func(a, b model.RelayEntry) int { return model.ComparePrefix(a.Prefix, b.Prefix) })
	if len(c.Rules) > model.MaxRules {
		return nil, Errors{{Pos{pol.File, 1, 1}, fmt.Sprintf("the policy has %d rules (ranges + exemptions + quarantines + relays + default); the data plane counts at most %d: merge exemptions or ranges", len(c.Rules), model.MaxRules)}}
	}
	if n := len(pol.Interfaces()); n > model.MaxScopedInterfaces {
		return nil, Errors{{Pos{pol.File, 1, 1}, fmt.Sprintf("the policy's scopes name %d interfaces; the data plane holds at most %d: scope by fewer interfaces", n, model.MaxScopedInterfaces)}}
	}
	// keys are in rule order: sorted stably by prefix, they are by prefix, then rule.
	sortByKey(keys, func(k *rangeKey) pkey { return k.key })
	if len(keys) > 0 { // no ranges: nil, as appending would leave it
		t.Ranges = make([]model.Entry, len(keys))
		c.rangeAt = make([]uint32, len(keys))
	}
	for k, rk := range keys {
		t.Ranges[k] = model.Entry{Prefix: rk.key.prefix(), Rule: rk.rule, Verdict: c.Rules[rk.rule].Verdict, Interfaces: scopes[rk.rule]}
		c.rangeAt[k] = rk.i
	}
	if n := longIPv4Blocks(t.Ranges); n > model.MaxLongIPv4Blocks {
		return nil, Errors{{Pos{pol.File, 1, 1}, fmt.Sprintf("the policy's IPv4 ranges and exemptions longer than /24 lie in %d distinct /24s; the data plane's IPv4 table holds them for at most %d (PC_DIR8_GROUPS): cover whole /24s where you can, or build with a larger PC_DIR8_GROUPS", n, model.MaxLongIPv4Blocks)}}
	}
	c.ranges, c.quarantines = t.Ranges, t.Quarantines
	t.RuleNames = make([]string, 0, len(c.Rules))
	t.RuleKinds = make([]model.Kind, 0, len(c.Rules))
	for _, r := range c.Rules {
		t.RuleNames = append(t.RuleNames, r.Name)
		t.RuleKinds = append(t.RuleKinds, r.Kind)
	}
	c.Tables = t
	c.Hash = t.Hash()
	return c, nil
}

// longIPv4Blocks counts the /24s that hold IPv4 ranges longer than /24 applying on every
// interface (ranges sorted by prefix: those of one /24 are adjacent).
func longIPv4Blocks(ranges []model.Entry) int {
	n, last, seen := 0, uint32(0), false
	for _, e := range ranges {
		if b, ok := model.LongIPv4Block(e); ok && (!seen || b != last) {
			n, last, seen = n+1, b, true
		}
	}
	return n
}
