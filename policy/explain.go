package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// Covering is a policy entry whose prefix contains an address.
type Covering struct {
	Kind    Kind         `json:"kind"`
	Name    string       `json:"name"`
	Prefix  netip.Prefix `json:"prefix"`
	Verdict Verdict      `json:"-"`
	Pos     Pos          `json:"-"`
	Rule    uint32       `json:"-"`
}

// Explanation answers "what happens to a TCP packet from Address to Port, and which
// entry decides".
type Explanation struct {
	Address   netip.Addr
	Port      uint16
	Governed  bool
	Protected bool
	Verdict   Verdict
	Reason    string
	Decider   Covering   // the deciding entry (the default when no prefix covers it)
	Losers    []Covering // other entries covering the address, most specific first
}

// Explain uses the same lookup as the data plane (LookupSource), then lists every
// other entry covering the address. It works at any policy size: lookups probe only
// the prefix lengths present.
func (c *Compiled) Explain(a netip.Addr, port uint16, now time.Time) Explanation {
	a = a.Unmap()
	t := c.Tables
	ex := Explanation{Address: a, Port: port, Governed: t.IsGoverned(port), Protected: slices.Contains(c.Policy.Protected, port)}

	var all []Covering
	ix := t.idx()
	for _, table := range []*prefixIndex{&ix.quarantines, &ix.ranges} {
		table.covering(a, func(e Entry) bool {
			r := c.Rules[e.Rule]
			p := e.Prefix.Masked()
			all = append(all, Covering{r.Kind, r.Name, p, e.Verdict, c.EntryPos[p], e.Rule})
			return true
		})
	}
	def := c.Rules[0]
	all = append(all, Covering{KindDefault, "default", netip.Prefix{}, t.DefaultVerdict, def.Pos, 0})

	src := t.LookupSource(a, now)
	// Covering entries come longest first, so the first with the deciding rule is
	// the one the lookup found; the default (rule 0) closes the list.
	decider := slices.IndexFunc(all, func(cv Covering) bool { return cv.Rule == src.Rule })
	ex.Decider = all[decider]
	ex.Losers = append(append([]Covering{}, all[:decider]...), all[decider+1:]...)

	switch {
	case ex.Protected:
		ex.Verdict = Pass
		ex.Reason = fmt.Sprintf("port %d is protected (protected ports: %v): no policy can govern it, the packet passes before any address lookup", port, c.Policy.Protected)
	case !ex.Governed:
		ex.Verdict = Pass
		ex.Reason = fmt.Sprintf("port %d is not governed (governed ports: %v): the packet passes before any address lookup", port, t.Governed)
	case src.Quarantine:
		ex.Verdict = src.Verdict
		ex.Reason = "a live quarantine covers the source; quarantines are checked before ranges"
	case ex.Decider.Kind == KindDefault:
		ex.Verdict = src.Verdict
		ex.Reason = "no range covers the source: the default verdict applies"
	default:
		ex.Verdict = src.Verdict
		ex.Reason = "the most specific prefix covering the source decides"
	}
	return ex
}
