package controller

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/portcullis/portcullis/internal/testutil"
	"github.com/portcullis/portcullis/loader"
)

// BenchmarkProof is the proof the daemon runs after every Apply, by policy size: an
// ISP's mix (testutil.ISPTables, as the loader's benchmarks use) applied to the
// verifier-loaded program, then proven (every rule, sampled prefixes' edges, governed, protected and an
// ordinary port) with no-trace probes.
//
//	go test -run '^$' -bench '^BenchmarkProof$' -benchtime 3x ./controller/
func BenchmarkProof(b *testing.B) {
	testutil.RequireRoot(b)
	for _, n := range []int{100_000, 1 << 20} {
		t := testutil.ISPTables(n)
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

// TestProofHashedIPv6: the proof passes over a policy whose IPv6 ranges are many
// enough for the data plane's hash of prefix lengths (an ISP mix with 2,500 of them).
func TestProofHashedIPv6(t *testing.T) {
	testutil.RequireRoot(t)
	tables := testutil.ISPTables(10_000)
	prog, err := loader.Load()
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	if err := prog.Apply(tables); err != nil {
		t.Fatal(err)
	}
	p, err := prove(prog.ProbeAt, tables, []uint16{465, 587}, nil, time.Now(), rand.New(rand.NewPCG(3, 4)))
	if err != nil || !p.OK() {
		t.Fatalf("proof: %v %+v", err, p.Mismatches)
	}
	if p.Probes < 1000 {
		t.Fatalf("%d probes", p.Probes)
	}
}
