package policy

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/portcullis/portcullis/model"
)

// randomPolicy builds a policy whose prefixes crowd into 100.64.0.0/16 and
// 2001:db8::/112 so that they nest and overlap a lot.
func randomPolicy(r *rand.Rand) *Policy {
	p := &Policy{File: "r.yaml", Governed: []uint16{25}, Protected: []uint16{465, 587},
		Default: model.Verdict(r.IntN(4)), RSTRate: 10, RSTBurst: 1}
	used := map[netip.Prefix]bool{}
	randPrefix := func() netip.Prefix {
		for {
			var pf netip.Prefix
			if r.IntN(3) == 0 {
				a := netip.MustParseAddr("2001:db8::").As16()
				a[14], a[15] = byte(r.IntN(256)), byte(r.IntN(256))
				pf, _ = netip.AddrFrom16(a).Prefix(112 + r.IntN(17))
			} else {
				pf, _ = netip.AddrFrom4([4]byte{100, 64, byte(r.IntN(256)), byte(r.IntN(256))}).Prefix(16 + r.IntN(17))
			}
			if !used[pf] {
				used[pf] = true
				return pf
			}
		}
	}
	for i := 0; i < 1+r.IntN(6); i++ {
		rg := Range{Name: fmt.Sprintf("r%d", i), Verdict: model.Verdict(r.IntN(4))}
		for j := 0; j < 1+r.IntN(4); j++ {
			rg.CIDRs = append(rg.CIDRs, CIDR{Prefix: randPrefix()})
		}
		p.Ranges = append(p.Ranges, rg)
	}
	for i := 0; i < r.IntN(4); i++ {
		pf := randPrefix()
		p.Exemptions = append(p.Exemptions, Exemption{Listing{Name: "e" + pf.String(), CIDR: CIDR{Prefix: pf}}})
	}
	// Quarantines: host prefixes only, so they never nest.
	for i := 0; i < r.IntN(3); i++ {
		a := netip.AddrFrom4([4]byte{100, 64, byte(r.IntN(256)), byte(r.IntN(256))})
		pf := netip.PrefixFrom(a, 32)
		if used[pf] {
			continue
		}
		used[pf] = true
		exp := testNow.Add(time.Hour)
		if r.IntN(3) == 0 {
			exp = testNow.Add(-time.Hour)
		}
		p.Quarantines = append(p.Quarantines, Quarantine{Listing: Listing{Name: "q" + pf.String(), CIDR: CIDR{Prefix: pf}, Expires: exp}, Verdict: model.Verdict(1 + r.IntN(2))})
	}
	return p
}

func mustCompile(t *testing.T, p *Policy) *Compiled {
	t.Helper()
	c, err := Compile(p, testNow)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// sampleAddrs: random addresses in the crowded space plus the first and last address
// of every prefix and their neighbours.
func sampleAddrs(r *rand.Rand, cs ...*Compiled) []netip.Addr {
	var out []netip.Addr
	for i := 0; i < 400; i++ {
		out = append(out, netip.AddrFrom4([4]byte{100, 64, byte(r.IntN(256)), byte(r.IntN(256))}))
		a := netip.MustParseAddr("2001:db8::").As16()
		a[14], a[15] = byte(r.IntN(256)), byte(r.IntN(256))
		out = append(out, netip.AddrFrom16(a))
	}
	for _, c := range cs {
		for _, tab := range [][]model.Entry{c.Tables.Ranges, c.Tables.Quarantines} {
			for _, e := range tab {
				first, last := e.Prefix.Addr(), LastAddr(e.Prefix)
				out = append(out, first, last, first.Prev(), last.Next())
			}
		}
	}
	return out
}

func TestExplainAgreesWithModel(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 200; i++ {
		c := mustCompile(t, randomPolicy(r))
		for _, a := range sampleAddrs(r, c) {
			if !a.IsValid() {
				continue
			}
			ex := c.Explain(Query{Src: a, Port: 25}, testNow)
			src := c.Tables.LookupSource(a, testNow)
			if ex.Verdict != src.Verdict {
				t.Fatalf("policy %d, %s: explain %v, model %v", i, a, ex.Verdict, src.Verdict)
			}
			if ex.Decider.Kind != model.KindDefault && !ex.Decider.Prefix.Contains(a) {
				t.Fatalf("%s: decider %v does not contain it", a, ex.Decider.Prefix)
			}
			if ex2 := c.Explain(Query{Src: a, Port: 587}, testNow); ex2.Verdict != model.Pass {
				t.Fatalf("%s port 587: %v", a, ex2.Verdict)
			}
		}
	}
}

func TestDiffSelfIsEmpty(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 100; i++ {
		c := mustCompile(t, randomPolicy(r))
		if d := Diff(c, c, testNow); !d.Empty() {
			t.Fatalf("diff(A, A) = %+v", d.Changes)
		}
	}
}

// For random policy pairs, diff's CIDR list is exactly the set of sampled addresses
// whose model verdict differs, with the right old and new verdicts.
func TestDiffMatchesModel(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for i := 0; i < 200; i++ {
		a, b := mustCompile(t, randomPolicy(r)), mustCompile(t, randomPolicy(r))
		d := Diff(a, b, testNow)
		for j := 1; j < len(d.Changes); j++ {
			if d.Changes[j-1].Prefix.Overlaps(d.Changes[j].Prefix) {
				t.Fatalf("overlapping changes %v %v", d.Changes[j-1].Prefix, d.Changes[j].Prefix)
			}
		}
		for _, x := range append(sampleAddrs(r, a, b), netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("::1")) {
			if !x.IsValid() {
				continue
			}
			va, vb := a.Tables.LookupSource(x, testNow).Verdict, b.Tables.LookupSource(x, testNow).Verdict
			var hit *Change
			for k := range d.Changes {
				if d.Changes[k].Prefix.Contains(x) {
					hit = &d.Changes[k]
				}
			}
			switch {
			case va != vb && hit == nil:
				t.Fatalf("pair %d: %s changes %v -> %v but no CIDR in the diff covers it", i, x, va, vb)
			case va == vb && hit != nil:
				t.Fatalf("pair %d: %s does not change (%v) but %v is in the diff", i, x, va, hit.Prefix)
			case hit != nil && (hit.Old != va || hit.New != vb):
				t.Fatalf("pair %d: %s: diff says %v -> %v, model %v -> %v", i, x, hit.Old, hit.New, va, vb)
			}
		}
	}
}
