package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/portcullis/portcullis/model"
)

// Covering is a policy entry whose prefix contains an address.
type Covering struct {
	Kind    model.Kind    `json:"kind"`
	Name    string        `json:"name"`
	Prefix  netip.Prefix  `json:"prefix"`
	Verdict model.Verdict `json:"-"`
	Pos     Pos           `json:"-"`
	Rule    uint32        `json:"-"`
	// Interfaces is the entry's scope (nil: every interface); OtherInterfaces is true
	// when it does not apply on the interface asked about.
	Interfaces      []string `json:"interfaces,omitempty"`
	OtherInterfaces bool     `json:"other_interfaces,omitempty"`
	// Ports are a relay's ports (nil: every governed port).
	Ports []uint16 `json:"ports,omitempty"`
}

// Query is the packet Explain is asked about: TCP from Src to Dst:Port, arriving on
// Interface. A zero Dst is "any destination that no relay covers"; an empty Interface
// is "an interface that no scope names".
type Query struct {
	Src, Dst  netip.Addr
	Port      uint16
	Interface string
}

// Explanation answers "what happens to a TCP packet from Address to Port, and which
// entry decides".
type Explanation struct {
	Address   netip.Addr
	To        netip.Addr // the destination asked about (zero: none)
	Interface string     // the interface asked about ("" : one no scope names)
	Port      uint16
	Governed  bool
	Protected bool
	Verdict   model.Verdict
	Reason    string
	Decider   Covering   // the deciding entry (the default when no prefix covers it)
	Losers    []Covering // other entries covering the source, most specific first
	Relays    []Covering // relays covering the destination, most specific first
}

// Explain uses the same lookups as the data plane (Decide), then lists every other
// entry covering the source, and the relays covering the destination. It works at any
// policy size: lookups probe only the prefix lengths present.
func (c *Compiled) Explain(q Query, now time.Time) Explanation {
	a, port := q.Src.Unmap(), q.Port
	t := c.Tables
	ex := Explanation{Address: a, To: q.Dst.Unmap(), Interface: q.Interface, Port: port,
		Governed: t.IsGoverned(port), Protected: slices.Contains(c.Policy.Protected, port)}

	var all []Covering
	t.Covering(a, func(e model.Entry) bool {
		r := c.Rules[e.Rule]
		p := e.Prefix.Masked()
		all = append(all, Covering{Kind: r.Kind, Name: r.Name, Prefix: p, Verdict: e.Verdict,
			Pos: c.EntryPos(EntryKey{p, e.Rule}), Rule: e.Rule,
			Interfaces: e.Interfaces, OtherInterfaces: !e.AppliesOn(q.Interface)})
		return true
	})
	def := c.Rules[0]
	all = append(all, Covering{Kind: model.KindDefault, Name: "default", Verdict: t.DefaultVerdict, Pos: def.Pos})
	if ex.To.IsValid() {
		t.CoveringRelays(ex.To, func(r model.RelayEntry) bool {
			ex.Relays = append(ex.Relays, Covering{Kind: model.KindRelay, Name: t.RuleName(r.Rule), Prefix: r.Prefix,
				Verdict: model.Pass, Pos: c.RelayPos[r.Prefix], Rule: r.Rule, Ports: r.Ports})
			return true
		})
	}

	var src model.Source
	var relayed bool
	if ex.Governed && !ex.Protected {
		src, relayed = t.Decide(a, ex.To, port, q.Interface, now)
	} else {
		src = t.LookupSourceOn(a, q.Interface, now)
	}
	top, hasRelay := t.LookupRelay(ex.To)
	relayCovers := hasRelay && top.Covers(port)
	if relayed {
		ex.Decider = ex.Relays[0]
		ex.Losers = all
	} else {
		// Covering entries come longest first, so the first in scope with the deciding
		// rule is the one the lookup found; the default (rule 0) closes the list.
		decider := slices.IndexFunc(all, func(cv Covering) bool { return cv.Rule == src.Rule && !cv.OtherInterfaces })
		ex.Decider = all[decider]
		ex.Losers = append(append([]Covering{}, all[:decider]...), all[decider+1:]...)
	}

	switch {
	case ex.Protected:
		ex.Verdict = model.Pass
		ex.Reason = fmt.Sprintf("port %d is protected (protected ports: %v): no policy can govern it, the packet passes before any address lookup", port, c.Policy.Protected)
	case !ex.Governed:
		ex.Verdict = model.Pass
		ex.Reason = fmt.Sprintf("port %d is not governed (governed ports: %v): the packet passes before any address lookup", port, t.Governed)
	case relayed:
		ex.Verdict = model.Pass
		ex.Reason = fmt.Sprintf("the destination is relay %q: towards it port %d passes whoever the source is", ex.Decider.Name, port)
		if _, quarantined := t.LookupQuarantine(a, q.Interface, now); quarantined {
			ex.Reason += " (quarantined sources too: the source is quarantined)"
		}
	case src.Quarantine && relayCovers:
		ex.Verdict = src.Verdict
		ex.Reason = fmt.Sprintf("a live quarantine covers the source, and relay %q is closed to quarantined sources (quarantined: block)", ex.Relays[0].Name)
	case src.Quarantine:
		ex.Verdict = src.Verdict
		ex.Reason = "a live quarantine covers the source; quarantines are checked before ranges"
	case ex.Decider.Kind == model.KindDefault:
		ex.Verdict = src.Verdict
		ex.Reason = "no range covers the source: the default verdict applies"
	default:
		ex.Verdict = src.Verdict
		ex.Reason = "the most specific prefix covering the source decides"
	}
	if hasRelay && !relayCovers && ex.Governed && !ex.Protected {
		ex.Reason += fmt.Sprintf("; relay %q covers the destination but not port %d", ex.Relays[0].Name, port)
	}
	if ex.Decider.Interfaces != nil {
		ex.Reason += fmt.Sprintf(" (on %s: the entry is scoped to %s)", q.Interface, strings.Join(ex.Decider.Interfaces, ", "))
	}
	return ex
}
