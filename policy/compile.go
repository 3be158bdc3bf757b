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
	t := &model.Tables{DefaultVerdict: pol.Default, Governed: slices.Clone(pol.Governed),
		RSTRate: pol.RSTRate, RSTBurst: pol.RSTBurst}
	c.Rules = append(c.Rules, Rule{ID: 0, Kind: model.KindDefault, Name: "default", Verdict: pol.Default, Pos: pol.DefaultPos})

	ranges := slices.Clone(pol.Ranges)
	slices.SortFunc(ranges, func(a, b Range) int { return cmp.Compare(a.Name, b.Name) })
	for _, r := range ranges {
		id := uint32(len(c.Rules))
		c.Rules = append(c.Rules, Rule{id, model.KindRange, r.Name, r.Verdict, r.Pos})
		for _, p := range r.CIDRs {
			t.Ranges = append(t.Ranges, model.Entry{Prefix: p.Prefix, Rule: id, Verdict: r.Verdict, Interfaces: r.Scope})
			c.EntryPos[EntryKey{p.Prefix, id}] = p.Pos
		}
	}
	ex := slices.Clone(pol.Exemptions)
	slices.SortFunc(ex, func(a, b Exemption) int {
		return cmp.Or(model.ComparePrefix(a.CIDR.Prefix, b.CIDR.Prefix), slices.Compare(a.Scope, b.Scope))
	})
	for _, e := range ex {
		if !e.Expires.IsZero() && !now.Before(e.Expires) {
			continue
		}
		id := uint32(len(c.Rules))
		c.Rules = append(c.Rules, Rule{id, model.KindExemption, e.Name, model.Pass, e.Pos})
		t.Ranges = append(t.Ranges, model.Entry{Prefix: e.CIDR.Prefix, Rule: id, Verdict: model.Pass, Interfaces: e.Scope})
		c.EntryPos[EntryKey{e.CIDR.Prefix, id}] = e.CIDR.Pos
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
		t.Quarantines = append(t.Quarantines, model.Entry{Prefix: q.CIDR.Prefix, Rule: id, Verdict: q.Verdict, Expires: q.Expires, Interfaces: q.Scope})
		c.EntryPos[EntryKey{q.CIDR.Prefix, id}] = q.CIDR.Pos
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
	slices.SortFunc(t.Ranges, func(a, b model.Entry) int {
		return cmp.Or(model.ComparePrefix(a.Prefix, b.Prefix), cmp.Compare(a.Rule, b.Rule))
	})
	for _, r := range c.Rules {
		t.RuleNames = append(t.RuleNames, r.Name)
		t.RuleKinds = append(t.RuleKinds, r.Kind)
	}
	c.Tables = t
	c.Hash = t.Hash()
	return c, nil
}
