package policy

import (
	"fmt"
	"math/big"
	"net/netip"
	"slices"
	"sort"
	"time"

	"github.com/portcullis/portcullis/model"
)

// Change is a block of address space whose verdict for the governed ports differs
// between two policies, with the entries that decide it on each side.
type Change struct {
	Prefix  netip.Prefix
	Old     model.Verdict
	New     model.Verdict
	OldRule string // deciding entry in the old policy ("default" when none)
	NewRule string
	// Interface is where the change applies: "" on every interface, OtherInterfaces on
	// every interface no scope of either policy names, or one interface's name.
	Interface string
}

// OtherInterfaces is Change.Interface for interfaces that no scope names.
const OtherInterfaces = "(other interfaces)"

// RelayChange is a relay destination added, removed or changed (Old or New "" when
// the prefix is not a relay on that side).
type RelayChange struct {
	Prefix   netip.Prefix
	Old, New string
}

// DiffResult is what changes between two policies.
type DiffResult struct {
	Changes     []Change // minimal CIDR list, in address order
	Addresses4  uint64   // IPv4 addresses that change verdict
	Addresses6  *big.Int // IPv6 addresses that change verdict
	GovernedOld []uint16
	GovernedNew []uint16
	Relays      []RelayChange // in address order
	// Moved is the address space that keeps its verdict but is decided by another
	// entry (a range renamed, a prefix moved to another range of the same verdict:
	// its counters move to that entry) or by the same quarantine or exemption with
	// another expiry (the OldRule and NewRule then say "until ..."). Minimal, in
	// address order, like Changes; Old == New.
	Moved []Change
	// Other is what else changes, one line each: protected ports, the RST budget,
	// the runtime: bounds; and, when nothing else differs but the compiled tables do,
	// a line that says so. Nothing here moves a verdict at the instant of the diff.
	Other []string
}

// Empty reports whether nothing changes: the two policies enforce and count alike,
// now and later, and bound runtime entries alike.
func (d *DiffResult) Empty() bool {
	return len(d.Changes) == 0 && len(d.Relays) == 0 && slices.Equal(d.GovernedOld, d.GovernedNew) &&
		len(d.Moved) == 0 && len(d.Other) == 0
}

// Diff returns the address space whose source verdict changes from a to b at now. The
// verdict is constant inside any prefix that contains no entry of either policy, so
// the walk splits only where an entry starts; sibling halves with the same change are
// merged back, which makes the list minimal.
//
// With scopes, the walk runs once for the interfaces no scope names and once per
// interface a scope of either policy names; a change the same everywhere is listed
// once. The address totals count the first walk and the changes on named interfaces
// that it does not have.
func Diff(a, b *Compiled, now time.Time) DiffResult {
	d := DiffResult{Addresses6: new(big.Int), GovernedOld: a.Tables.Governed, GovernedNew: b.Tables.Governed}
	ifaces := append(a.Policy.Interfaces(), b.Policy.Interfaces()...)
	slices.Sort(ifaces)
	ifaces = slices.Compact(ifaces)
	ea, eb := expiries(a), expiries(b)
	others := diffOn(a, b, "", now, ea, eb)
	named := make([][]Change, len(ifaces))
	for i, name := range ifaces {
		named[i] = diffOn(a, b, name, now, ea, eb)
	}
	same := func(x, y Change) bool {
		return x.Prefix == y.Prefix && x.Old == y.Old && x.New == y.New && x.OldRule == y.OldRule && x.NewRule == y.NewRule
	}
	count := func(ch Change) {
		if ch.Old == ch.New {
			return // moved, not changed
		}
		host := ch.Prefix.Addr().BitLen() - ch.Prefix.Bits()
		if ch.Prefix.Addr().Is4() {
			d.Addresses4 += 1 << host
		} else {
			d.Addresses6.Add(d.Addresses6, new(big.Int).Lsh(big.NewInt(1), uint(host)))
		}
	}
	for _, ch := range others {
		everywhere := true
		for i := range named {
			j := slices.IndexFunc(named[i], func(x Change) bool { return same(x, ch) })
			if j < 0 {
				everywhere = false
				continue
			}
			named[i] = slices.Delete(named[i], j, j+1)
		}
		if !everywhere {
			ch.Interface = OtherInterfaces
		}
		d.Changes = append(d.Changes, ch)
		count(ch)
	}
	for i, name := range ifaces {
		for _, ch := range named[i] {
			ch.Interface = name
			d.Changes = append(d.Changes, ch)
			if !slices.ContainsFunc(others, func(x Change) bool { return x.Prefix.Overlaps(ch.Prefix) }) {
				count(ch)
			}
		}
	}
	var changed []Change
	for _, ch := range d.Changes {
		if ch.Old == ch.New {
			d.Moved = append(d.Moved, ch)
		} else {
			changed = append(changed, ch)
		}
	}
	d.Changes = changed
	d.Relays = diffRelays(a, b)
	d.Other = diffOther(a, b)
	if d.Empty() && a.Hash != b.Hash {
		d.Other = append(d.Other, fmt.Sprintf("the compiled tables differ (policy %s -> %s), in nothing listed above", a.Hash, b.Hash))
	}
	return d
}

// MovedGroup is the part of DiffResult.Moved between one pair of deciding entries.
type MovedGroup struct {
	OldRule, NewRule, Interface string
	Verdict                     model.Verdict
	Blocks                      int          // prefixes of Moved in the group
	First                       netip.Prefix // the first of them, in address order
}

// MovedByEntry groups Moved by old and new deciding entry (and interface), in the
// order each pair first appears: a renamed range is one line, not one per block
// around its exemptions.
func (d *DiffResult) MovedByEntry() []MovedGroup {
	var out []MovedGroup
	for _, m := range d.Moved {
		i := slices.IndexFunc(out, func(g MovedGroup) bool {
			return g.OldRule == m.OldRule && g.NewRule == m.NewRule && g.Interface == m.Interface && g.Verdict == m.Old
		})
		if i < 0 {
			out = append(out, MovedGroup{OldRule: m.OldRule, NewRule: m.NewRule, Interface: m.Interface, Verdict: m.Old, First: m.Prefix})
			i = len(out) - 1
		}
		out[i].Blocks++
	}
	return out
}

// expiries maps the rule ids of c's exemptions and quarantines that expire to their
// expiry.
func expiries(c *Compiled) map[uint32]time.Time {
	m := map[uint32]time.Time{}
	for _, q := range c.Tables.Quarantines {
		if !q.Expires.IsZero() {
			m[q.Rule] = q.Expires
		}
	}
	at := map[Pos]time.Time{}
	for _, e := range c.Policy.Exemptions {
		if !e.Expires.IsZero() {
			at[e.Pos] = e.Expires
		}
	}
	for _, r := range c.Rules {
		if t, ok := at[r.Pos]; ok && r.Kind == model.KindExemption {
			m[r.ID] = t
		}
	}
	return m
}

// diffOther lists what changes outside the address space: protected ports, the RST
// budget and the runtime bounds (each with its default filled in, so that writing a
// default out changes nothing).
func diffOther(a, b *Compiled) []string {
	var out []string
	pa, pb := a.Policy, b.Policy
	if !slices.Equal(pa.Protected, pb.Protected) {
		out = append(out, fmt.Sprintf("protected ports %v -> %v", pa.Protected, pb.Protected))
	}
	budget := func(t *model.Tables) string {
		if t.RSTRate == 0 {
			return "unlimited"
		}
		return fmt.Sprintf("%d/s per CPU, burst %d", t.RSTRate, t.RSTBurst)
	}
	if x, y := budget(a.Tables), budget(b.Tables); x != y {
		out = append(out, fmt.Sprintf("RST budget %s -> %s", x, y))
	}
	ra, rb := pa.Runtime.settings(), pb.Runtime.settings()
	for i := range ra {
		if ra[i][1] != rb[i][1] {
			out = append(out, fmt.Sprintf("runtime.%s %s -> %s", ra[i][0], ra[i][1], rb[i][1]))
		}
	}
	return out
}

// diffOn is the walk for packets arriving on interface ifname; ea and eb are the
// expiries of a's and b's rules.
func diffOn(a, b *Compiled, ifname string, now time.Time, ea, eb map[uint32]time.Time) []Change {
	var out []Change
	for _, root := range []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")} {
		var ps []netip.Prefix
		for _, c := range []*Compiled{a, b} {
			for _, tab := range [][]model.Entry{c.Tables.Ranges, c.Tables.Quarantines} {
				for _, e := range tab {
					if e.Prefix.Addr().Is4() == root.Addr().Is4() {
						ps = append(ps, e.Prefix)
					}
				}
			}
		}
		slices.SortFunc(ps, model.ComparePrefix)
		ps = slices.Compact(ps)
		w := differ{a: a, b: b, now: now, ps: ps, ifname: ifname, ea: ea, eb: eb}
		out = append(out, w.walk(root)...)
	}
	return out
}

// diffRelays lists relay prefixes whose relay (name, ports, quarantined) differs.
func diffRelays(a, b *Compiled) []RelayChange {
	describe := func(c *Compiled) map[netip.Prefix]string {
		m := map[netip.Prefix]string{}
		for _, r := range c.Tables.Relays {
			ports := "every governed port"
			if len(r.Ports) > 0 {
				ports = fmt.Sprintf("ports %v", r.Ports)
			}
			q := "pass"
			if r.BlockQuarantined {
				q = "block"
			}
			m[r.Prefix] = fmt.Sprintf("relay %q (%s, quarantined: %s)", c.Tables.RuleName(r.Rule), ports, q)
		}
		return m
	}
	old, nu := describe(a), describe(b)
	var out []RelayChange
	for p, o := range old {
		if nu[p] != o {
			out = append(out, RelayChange{p, o, nu[p]})
		}
	}
	for p, n := range nu {
		if _, ok := old[p]; !ok {
			out = append(out, RelayChange{p, "", n})
		}
	}
	slices.SortFunc(out, func(x, y RelayChange) int { return model.ComparePrefix(x.Prefix, y.Prefix) })
	return out
}

type differ struct {
	a, b *Compiled
	now  time.Time
	ps   []netip.Prefix // all entry prefixes of this family, sorted
	// ifname is the interface the walk judges packets on.
	ifname string
	ea, eb map[uint32]time.Time // expiries of a's and b's rules (expiries)
}

// decider names the entry of c that decides, with its expiry when the same entry
// decides on the other side with another expiry (other).
func decider(c *Compiled, rule uint32, same bool, exp, other time.Time) string {
	name := c.Tables.RuleName(rule)
	if same && !exp.Equal(other) {
		if exp.IsZero() {
			return name + " (no expiry)"
		}
		return name + " (until " + exp.UTC().Format(time.RFC3339) + ")"
	}
	return name
}

// withBit returns a with bit i (counted from the most significant, within the
// address's own family) set.
func withBit(a netip.Addr, i int) netip.Addr {
	if a.Is4() {
		b := a.As4()
		b[i/8] |= 0x80 >> (i % 8)
		return netip.AddrFrom4(b)
	}
	b := a.As16()
	b[i/8] |= 0x80 >> (i % 8)
	return netip.AddrFrom16(b)
}

// LastAddr is the highest address in p.
func LastAddr(p netip.Prefix) netip.Addr {
	a := p.Addr()
	for i := p.Bits(); i < a.BitLen(); i++ {
		a = withBit(a, i)
	}
	return a
}

// split reports whether some entry lies strictly inside p.
func (w *differ) split(p netip.Prefix) bool {
	first, last := p.Addr(), LastAddr(p)
	i := sort.Search(len(w.ps), func(i int) bool { return w.ps[i].Addr().Compare(first) >= 0 })
	for ; i < len(w.ps) && w.ps[i].Addr().Compare(last) <= 0; i++ {
		if w.ps[i].Bits() > p.Bits() {
			return true
		}
	}
	return false
}

func (w *differ) walk(p netip.Prefix) []Change {
	if p.Bits() == p.Addr().BitLen() || !w.split(p) {
		sa := w.a.Tables.LookupSourceOn(p.Addr(), w.ifname, w.now)
		sb := w.b.Tables.LookupSourceOn(p.Addr(), w.ifname, w.now)
		xa, xb := w.ea[sa.Rule], w.eb[sb.Rule]
		same := w.a.Tables.RuleLabel(sa.Rule) == w.b.Tables.RuleLabel(sb.Rule)
		if sa.Verdict == sb.Verdict && same && xa.Equal(xb) {
			return nil
		}
		return []Change{{Prefix: p, Old: sa.Verdict, New: sb.Verdict, OldRule: decider(w.a, sa.Rule, same, xa, xb), NewRule: decider(w.b, sb.Rule, same, xb, xa)}}
	}
	lo := netip.PrefixFrom(p.Addr(), p.Bits()+1)
	hi := netip.PrefixFrom(withBit(p.Addr(), p.Bits()), p.Bits()+1)
	l, h := w.walk(lo), w.walk(hi)
	if len(l) == 1 && len(h) == 1 && l[0].Prefix == lo && h[0].Prefix == hi &&
		l[0].Old == h[0].Old && l[0].New == h[0].New && l[0].OldRule == h[0].OldRule && l[0].NewRule == h[0].NewRule {
		c := l[0]
		c.Prefix = p
		return []Change{c}
	}
	return append(l, h...)
}
