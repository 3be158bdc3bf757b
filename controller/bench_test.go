package controller

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/portcullis/portcullis/internal/testutil"
	"github.com/portcullis/portcullis/loader"
	"github.com/portcullis/portcullis/model"
)

// BenchmarkProof is the proof the daemon runs after every Apply, by policy size: an
// ISP's pools (/16s in 100.64.0.0/10, dropped) with customer /24s and /32s inside them
// (passed) and a quarter as many IPv6 /48s and /128s, applied to the verifier-loaded
// program, then proven (every rule, sampled prefixes' edges, governed, protected and an
// ordinary port) with no-trace probes.
//
//	go test -run '^$' -bench '^BenchmarkProof$' -benchtime 3x ./controller/
func BenchmarkProof(b *testing.B) {
	testutil.RequireRoot(b)
	for _, n := range []int{100_000, 1 << 20} {
		t := &model.Tables{DefaultVerdict: model.Pass, Governed: []uint16{25}, RuleNames: []string{"default", "pools", "customers"}}
		for i := range 64 {
			t.Ranges = append(t.Ranges, model.Entry{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 64 + byte(i), 0, 0}), 16), Rule: 1, Verdict: model.Drop})
		}
		for i := range n - 64 - n/4 {
			a := uint32(100)<<24 | 64<<16 | uint32(i*7919)%(1<<22)
			bits := 32
			if i%10 == 0 {
				bits = 24
			}
			p := netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)}), bits).Masked()
			t.Ranges = append(t.Ranges, model.Entry{Prefix: p, Rule: 2, Verdict: model.Pass})
		}
		seen := map[netip.Prefix]bool{}
		ranges := t.Ranges[:0]
		for _, e := range t.Ranges {
			if !seen[e.Prefix] {
				seen[e.Prefix] = true
				ranges = append(ranges, e)
			}
		}
		t.Ranges = ranges
		for i := range n / 4 {
			a := netip.MustParseAddr("2001:db8::").As16()
			a[4], a[5], a[6], a[7] = byte(i>>24), byte(i>>16), byte(i>>8), byte(i)
			bits := 128
			if i%10 == 0 {
				bits = 48
				a[6], a[7] = 0, 0
				a[4], a[5] = byte(i>>8), byte(i)
			}
			p := netip.PrefixFrom(netip.AddrFrom16(a), bits).Masked()
			if !seen[p] {
				seen[p] = true
				t.Ranges = append(t.Ranges, model.Entry{Prefix: p, Rule: 1 + uint32(i%2), Verdict: model.Drop})
			}
		}
		b.Run(fmt.Sprintf("prefixes=%d", len(t.Ranges)), func(b *testing.B) {
			prog, err := loader.Load()
			if err != nil {
				b.Fatal(err)
			}
			defer prog.Close()
			if err := prog.Apply(t); err != nil {
				b.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(1, 2))
			var took time.Duration
			var probes int
			for b.Loop() {
				p, err := prove(prog.ProbeAt, t, []uint16{465, 587}, nil, time.Now(), rng)
				if err != nil || !p.OK() {
					b.Fatalf("proof: %v %+v", err, p.Mismatches)
				}
				took += p.Took
				probes = p.Probes
			}
			b.ReportMetric(took.Seconds()/float64(b.N), "proof-s")
			b.ReportMetric(float64(probes), "probes")
		})
	}
}
