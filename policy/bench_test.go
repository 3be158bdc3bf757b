package policy

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// bigPolicy writes a policy of n /30 prefixes (n <= 2^20) out of 100.64.0.0/10, spread
// over four ranges, plus a few exemptions.
func bigPolicy(n int) []byte {
	var b strings.Builder
	b.WriteString("version: 1\nranges:\n")
	per := n / 4
	for r := 0; r < 4; r++ {
		fmt.Fprintf(&b, "  - name: pool%d\n    verdict: drop\n    cidrs:\n", r)
		for i := r * per; i < (r+1)*per; i++ {
			a := uint32(100)<<24 | uint32(64)<<16 | uint32(i)<<2
			fmt.Fprintf(&b, "      - %d.%d.%d.%d/30\n", a>>24, a>>16&0xff, a>>8&0xff, a&0xff)
		}
	}
	b.WriteString("exemptions:\n  - {cidr: 100.64.0.1, reason: mail, owner: noc}\n")
	return []byte(b.String())
}

// BenchmarkParseCompile measures parse + check + compile of large policies
// (go test -run '^$' -bench ParseCompile -benchtime 1x ./policy/).
func BenchmarkParseCompile(b *testing.B) {
	for _, n := range benchSizes {
		src := bigPolicy(n)
		b.Run(fmt.Sprintf("prefixes=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(src)))
			runtime.GC()
			cpu := cpuTime()
			for b.Loop() {
				p, err := Parse("big.yaml", src, testNow)
				if err != nil {
					b.Fatal(err)
				}
				c, err := Compile(p, testNow)
				if err != nil {
					b.Fatal(err)
				}
				if len(c.Tables.Ranges) != n+1 {
					b.Fatalf("%d entries", len(c.Tables.Ranges))
				}
			}
			b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N)/1e6, "cpu-ms/op")
		})
	}
}

var benchSizes = []int{10_000, 100_000, 1 << 20}

// BenchmarkParseCompileListFile is BenchmarkParseCompile with the prefixes in list
// files (cidrs_file), one per range, as an IPAM export would write them.
func BenchmarkParseCompileListFile(b *testing.B) {
	for _, n := range benchSizes {
		benchListFiles(b, n, false)
	}
}

// BenchmarkParseCompileListFileShuffled is the million prefixes of
// BenchmarkParseCompileListFile with the lines of each list in random order (the
// same order every run), for lists that are not sorted: the checks and the compile
// then pay for their sorts.
func BenchmarkParseCompileListFileShuffled(b *testing.B) {
	benchListFiles(b, 1<<20, true)
}

func benchListFiles(b *testing.B, n int, shuffle bool) {
	dir := b.TempDir()
	var pol strings.Builder
	pol.WriteString("version: 1\nranges:\n")
	per := n / 4
	r := rand.New(rand.NewPCG(1, 2))
	for rg := 0; rg < 4; rg++ {
		lines := make([]string, 0, per)
		for i := rg * per; i < (rg+1)*per; i++ {
			a := uint32(100)<<24 | uint32(64)<<16 | uint32(i)<<2
			lines = append(lines, fmt.Sprintf("%d.%d.%d.%d/30\n", a>>24, a>>16&0xff, a>>8&0xff, a&0xff))
		}
		if shuffle {
			r.Shuffle(len(lines), func(i, j int) { lines[i], lines[j] = lines[j], lines[i] })
		}
		name := fmt.Sprintf("pool%d.txt", rg)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(strings.Join(lines, "")), 0o644); err != nil {
			b.Fatal(err)
		}
		fmt.Fprintf(&pol, "  - {name: pool%d, verdict: drop, cidrs_file: %s}\n", rg, name)
	}
	path := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(path, []byte(pol.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	b.Run(fmt.Sprintf("prefixes=%d", n), func(b *testing.B) {
		b.ReportAllocs()
		runtime.GC() // the setup's garbage is not the policy's
		cpu := cpuTime()
		for b.Loop() {
			p, err := ParseFile(path, testNow)
			if err != nil {
				b.Fatal(err)
			}
			c, err := Compile(p, testNow)
			if err != nil {
				b.Fatal(err)
			}
			if len(c.Tables.Ranges) != 4*per {
				b.Fatalf("%d entries", len(c.Tables.Ranges))
			}
		}
		// CPU time (every thread: the GC's too) says what the work costs when the
		// machine is shared and the wall clock does not.
		b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N)/1e6, "cpu-ms/op")
	})
}
