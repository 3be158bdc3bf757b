package vethbench

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/portcullis/portcullis/internal/testutil"
	"github.com/portcullis/portcullis/testenv"
)

var (
	roundLen = flag.Duration("vethbench.round", 2*time.Second, "measured length of one contender's round")
	warmup   = flag.Duration("vethbench.warmup", 500*time.Millisecond, "generator running before a round's measurement starts")
	rounds   = flag.Int("vethbench.rounds", 7, "rounds per policy size; each round runs every contender once, in a rotated order")
	sizes    = flag.String("vethbench.sizes", "10,100000,1000000", "policy sizes (prefixes), comma-separated")
	only     = flag.String("vethbench.only", "", "run only these contenders, comma-separated short names (plain, xdpdrop, portcullis, nft, iptables), for profiling one")
)

// The goals for Portcullis native XDP against each reference.
var goals = []struct {
	against string
	ratio   float64
}{{NFT, 1.5}, {IPTables, 3}, {BareDrop, 0.9}}

// sample is one contender's round.
type sample struct {
	pps       float64 // sub0's received packets per second over the measured window
	sent      uint64  // what trafgen says it sent over the whole run
	received  uint64  // sub0's received packets over the whole run
	forwarded uint64  // up0's transmitted packets over the whole run (towards the sink)
}

// BenchmarkVeth: real packets through a router namespace (testenv.Line) under each
// contender, for each policy size; see docs/BENCHMARKS.md. Root only; about 5 minutes
// with the defaults (3 sizes × 7 rounds × 5 contenders × 2.5 s, plus ≈ 50 s of loads,
// most of it nft -f of the 1M set).
//
//	go test -run '^$' -bench '^BenchmarkVeth$' -benchtime 1x -timeout 20m ./internal/vethbench/
func BenchmarkVeth(b *testing.B) {
	testutil.RequireRoot(b)
	if m := Missing(); len(m) > 0 {
		b.Skipf("needs %s (apt-get install netsniff-ng nftables iptables ipset util-linux)", strings.Join(m, ", "))
	}
	var ns []int
	for _, f := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			b.Fatalf("-vethbench.sizes: %v", err)
		}
		ns = append(ns, n)
	}
	if _, err := testenv.SweepStale(); err != nil {
		b.Logf("sweeping stale namespaces: %v", err)
	}
	line, err := testenv.NewLine()
	if err != nil {
		b.Fatal(err)
	}
	// Teardown on every exit: the cleanup on return or failure, the signal handler
	// on an interrupt (the test binary's cleanups do not run then). Deleting the
	// namespaces removes the veths, nftables tables and ipsets in them.
	// The load files (a 1M-prefix set is ≈ 40 MiB in each format) go in a directory
	// of our own rather than b.TempDir, so that the signal handler can remove it too.
	dir, err := os.MkdirTemp("", "vethbench-")
	if err != nil {
		line.Close()
		b.Fatal(err)
	}
	var (
		mu  sync.Mutex
		gen *Generator
	)
	teardown := func() {
		mu.Lock()
		defer mu.Unlock()
		if gen != nil {
			gen.Kill()
			gen = nil
		}
		if err := errors.Join(line.Close(), os.RemoveAll(dir)); err != nil {
			fmt.Fprintln(os.Stderr, "vethbench teardown:", err)
		}
	}
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	stop := make(chan struct{})
	go func() {
		select {
		case s := <-sigc:
			fmt.Fprintf(os.Stderr, "vethbench: %v: tearing down %s-*\n", s, line.ID)
			teardown()
			os.Exit(1)
		case <-stop:
		}
	}()
	b.Cleanup(func() { signal.Stop(sigc); close(stop); teardown() })

	cfg := filepath.Join(dir, "syn.trafgen")
	if err := os.WriteFile(cfg, []byte(TrafgenConfig(line.SubMAC, line.GenMAC)), 0o644); err != nil {
		b.Fatal(err)
	}
	// measure runs one round of c. A generator that fails (trafgen gives up now and
	// then with "Flushing TX_RING failed: Resource temporarily unavailable" when the
	// socket's send buffer is full) is an error the caller may retry; anything else
	// ends the benchmark. c is switched off again in every case.
	measure := func(b *testing.B, c Contender) (_ sample, genErr error) {
		stat := func(nsName string, get func() (uint64, error)) uint64 {
			v, err := get()
			if err != nil {
				b.Fatalf("%s: %v", nsName, err)
			}
			return v
		}
		rx := func() (uint64, error) { s, err := line.Router.Stats(testenv.LineSubIf); return s.RxPackets, err }
		tx := func() (uint64, error) { s, err := line.Router.Stats(testenv.LineUpIf); return s.TxPackets, err }
		if err := c.On(); err != nil {
			b.Fatalf("%s on: %v", c.Name, err)
		}
		defer func() {
			if err := c.Off(); err != nil {
				b.Fatalf("%s off: %v", c.Name, err)
			}
		}()
		rx0, tx0 := stat("sub0", rx), stat("up0", tx)
		g, err := StartGenerator(line, cfg, *warmup+*roundLen+5*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		mu.Lock()
		gen = g
		mu.Unlock()
		time.Sleep(*warmup)
		r1 := stat("sub0", rx)
		t1 := time.Now()
		time.Sleep(*roundLen)
		r2 := stat("sub0", rx)
		t2 := time.Now()
		exited := g.Exited()
		mu.Lock()
		sent, err := g.Stop()
		gen = nil
		mu.Unlock()
		if err != nil {
			return sample{}, err
		}
		if exited {
			b.Fatalf("%s: trafgen stopped before the round ended (sent %d): raise maxPPS", c.Name, sent)
		}
		return sample{pps: float64(r2-r1) / t2.Sub(t1).Seconds(), sent: sent,
			received: stat("sub0", rx) - rx0, forwarded: stat("up0", tx) - tx0}, nil
	}

	var results []result
	for _, n := range ns {
		b.Run(fmt.Sprintf("prefixes=%d", n), func(b *testing.B) {
			start := time.Now()
			set, err := Generate(n, 1)
			if err != nil {
				b.Fatal(err)
			}
			s, err := NewSetup(line, set, dir)
			if err != nil {
				b.Fatal(err)
			}
			defer func() {
				if err := s.Close(); err != nil {
					b.Error(err)
				}
			}()
			b.Logf("%d prefixes loaded in %v: Portcullis (load + apply) %v, nft -f %v, ipset restore %v",
				n, time.Since(start).Round(time.Millisecond), s.Load[Portcullis].Round(time.Millisecond),
				s.Load[NFT].Round(time.Millisecond), s.Load[IPTables].Round(time.Millisecond))
			res := result{n: n, samples: map[string][]sample{}}
			cs := s.Contenders
			if *only != "" {
				cs = slices.DeleteFunc(slices.Clone(cs), func(c Contender) bool {
					return !slices.Contains(strings.Split(*only, ","), shortName(c.Name))
				})
			}
			for r := range *rounds {
				for i := range cs {
					c := cs[(i+r)%len(cs)] // rotated: no contender always follows the same one
					for try := 1; ; try++ {
						sm, err := measure(b, c)
						if err == nil {
							res.samples[c.Name] = append(res.samples[c.Name], sm)
							break
						}
						if try == 3 {
							b.Fatalf("%s: %v (third try)", c.Name, err)
						}
						b.Logf("%s, round %d: %v: round repeated", c.Name, r+1, firstLine(err))
					}
				}
			}
			for _, c := range cs {
				var sent, received uint64
				for _, sm := range res.samples[c.Name] {
					sent, received = sent+sm.sent, received+sm.received
					// Every filter must have stopped every packet (all sources are in
					// the set), and plain forwarding forwarded them.
					if c.Name == Plain && float64(sm.forwarded) < 0.99*float64(sm.received) ||
						c.Name != Plain && float64(sm.forwarded) > 0.001*float64(sm.received) {
						b.Errorf("%s: %d of %d packets forwarded", c.Name, sm.forwarded, sm.received)
					}
				}
				// What the counter misses: frames trafgen sent that the router never
				// took in (a full veth queue drops them on the sending side).
				b.Logf("%-32s trafgen sent %d, sub0 received %d (%+.3f %%)", c.Name, sent, received,
					100*(float64(received)-float64(sent))/float64(sent))
				b.ReportMetric(median(res.samples[c.Name]), metricName(c.Name))
			}
			for _, g := range goals {
				if r := ratios(res.samples[Portcullis], res.samples[g.against]); len(r) > 0 {
					b.ReportMetric(medianOf(r), "pcx/"+metricName(g.against))
				}
			}
			results = append(results, res)
		})
	}
	if *only == "" {
		report(results)
	}
}

// result is one policy size's samples, by contender.
type result struct {
	n       int
	samples map[string][]sample
}

// report logs the results as the markdown table of docs/BENCHMARKS.md.
func report(results []result) {
	if len(results) == 0 {
		return
	}
	names := []string{Plain, BareDrop, Portcullis, NFT, IPTables}
	var w strings.Builder
	fmt.Fprintf(&w, "\nmedian pps over %d rounds of %v (min–max); packets handled = sub0's rx_packets in the router namespace;\n"+
		"ratios: median (min–max) of the rounds' own ratios, each between two contenders of the same round\n\n", *rounds, *roundLen)
	w.WriteString("| prefixes |")
	for _, nm := range names {
		fmt.Fprintf(&w, " %s |", nm)
	}
	w.WriteString(" Portcullis / nft | Portcullis / iptables | Portcullis / XDP_DROP |\n|---:|")
	w.WriteString(strings.Repeat("---:|", len(names)+3) + "\n")
	for _, r := range results {
		n, samples := r.n, r.samples
		fmt.Fprintf(&w, "| %s |", thousands(n))
		for _, nm := range names {
			lo, hi := span(samples[nm])
			fmt.Fprintf(&w, " %s (%s–%s) |", kpps(median(samples[nm])), kpps(lo), kpps(hi))
		}
		for _, g := range goals {
			r := ratios(samples[Portcullis], samples[g.against])
			ratio := medianOf(r)
			verdict := "met"
			if ratio < g.ratio {
				verdict = fmt.Sprintf("missed by %.0f %%", 100*(g.ratio-ratio)/g.ratio)
			}
			fmt.Fprintf(&w, " %.2f× (%.2f–%.2f); goal ≥ %.1f×: %s |", ratio, slices.Min(r), slices.Max(r), g.ratio, verdict)
		}
		w.WriteString("\n")
	}
	// Printed, not logged: a benchmark's own log is not shown once it has sub-benchmarks.
	fmt.Print(w.String())
}

func shortName(contender string) string {
	return map[string]string{Plain: "plain", BareDrop: "xdpdrop", Portcullis: "portcullis", NFT: "nft", IPTables: "iptables"}[contender]
}

func metricName(contender string) string { return shortName(contender) + "-pps" }

// ratios pairs the rounds of a and b: a's pps over b's, round by round. Contenders of
// one round run seconds apart, so the ratio of a pair holds up better than the ratio
// of medians on a machine whose load comes and goes.
func ratios(a, b []sample) []float64 {
	var out []float64
	for i := range min(len(a), len(b)) {
		out = append(out, a[i].pps/b[i].pps)
	}
	return out
}

func median(s []sample) float64 {
	v := make([]float64, len(s))
	for i, x := range s {
		v[i] = x.pps
	}
	return medianOf(v)
}

func medianOf(v []float64) float64 {
	v = slices.Clone(v)
	slices.Sort(v)
	if len(v) == 0 {
		return 0
	}
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

func span(s []sample) (lo, hi float64) {
	for i, x := range s {
		if i == 0 || x.pps < lo {
			lo = x.pps
		}
		if x.pps > hi {
			hi = x.pps
		}
	}
	return lo, hi
}

func kpps(v float64) string { return fmt.Sprintf("%.0fk", v/1000) }

func thousands(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	}
	return strconv.Itoa(n)
}

func firstLine(err error) string {
	s := err.Error()
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}
