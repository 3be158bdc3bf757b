package loader

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"github.com/portcullis/portcullis/internal/testutil"
	"github.com/portcullis/portcullis/model"
	"github.com/portcullis/portcullis/policy"
)

// spray is an XDP program that gives each run's frame a random source (the low bits
// of an IPv4 source under mask4 at offset 26, or of an IPv6 source's last word at
// offset 34), then tail-calls whatever sits in slot 0 of its program array: the honest
// way to make every BPF_PROG_TEST_RUN repeat judge a new source. Its own cost is
// measured by tail-calling a bare XDP_PASS.
func spray(tb testing.TB, v6 bool, base4, mask4 uint32) (*ebpf.Program, *ebpf.Map) {
	tb.Helper()
	pa, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.ProgramArray, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		tb.Fatal(err)
	}
	off, end := int16(26), int32(34)
	base, mask := int32(base4), int32(mask4)
	if v6 {
		off, end, base, mask = 34, 38, 0, -1
	}
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.FnGetPrandomU32.Call(),
		asm.Mov.Reg(asm.R7, asm.R0),
		asm.LoadMem(asm.R2, asm.R6, 0, asm.Word), // data
		asm.LoadMem(asm.R3, asm.R6, 4, asm.Word), // data_end
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, end),
		asm.JGT.Reg(asm.R4, asm.R3, "pass"),
		asm.And.Imm32(asm.R7, mask),
		asm.Or.Imm32(asm.R7, base),
		asm.HostTo(asm.BE, asm.R7, asm.Word),
		asm.StoreMem(asm.R2, off, asm.R7, asm.Word),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.LoadMapPtr(asm.R2, pa.FD()),
		asm.Mov.Imm(asm.R3, 0),
		asm.FnTailCall.Call(),
		asm.Mov.Imm(asm.R0, 2).WithSymbol("pass"),
		asm.Return(),
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, AttachType: ebpf.AttachXDP, License: "GPL", Instructions: insns}) // as passFloor
	if err != nil {
		pa.Close()
		tb.Fatal(err)
	}
	return prog, pa
}

// BenchmarkLookupScale is the program's cost per packet by policy size (testutil.ISPTables),
// for a SYN to 25 from a dropped pool and for ordinary traffic, hot (the same source
// every run) and cold (a new random source every run, through spray; spray's own
// cost, measured by tail-calling a bare XDP_PASS, is subtracted). Each figure is the
// median of seven rounds alternating with a bare XDP_PASS floor timed the same way,
// and is reported as a ratio to that floor.
//
//	go test -run '^$' -bench '^BenchmarkLookupScale$' -benchtime 1400000x ./loader/
func BenchmarkLookupScale(b *testing.B) {
	testutil.RequireRoot(b)
	floor := passFloor(b)
	p := loadProgram(b)
	for _, n := range []int{10, 1000, 10_000, 100_000, 1 << 20} {
		t := testutil.ISPTables(n)
		// Hot sources: the first addresses of a dropped pool that no customer entry
		// exempts.
		hot := func(base string) netip.Addr {
			a := addr(base)
			for t.LookupSource(a, time.Now()).Verdict != model.Drop {
				a = a.Next()
			}
			return a
		}
		hot4, hot6 := hot("100.64.200.1"), hot("2001:db8::1")
		start := time.Now()
		if err := p.Apply(t); err != nil {
			b.Fatal(err)
		}
		applyTook := time.Since(start)
		for _, c := range []struct {
			name  string
			frame frameSpec
			cold  bool
		}{
			{"tcp443", frameSpec{src: hot4, dst: dst4, sport: 40000, dport: 443, syn: true, tcpOpts: true}, false},
			{"tcp25-drop-v4-hot", frameSpec{src: hot4, dst: dst4, sport: 40000, dport: 25, syn: true, tcpOpts: true}, false},
			{"tcp25-v4-cold", frameSpec{src: hot4, dst: dst4, sport: 40000, dport: 25, syn: true, tcpOpts: true}, true},
			{"tcp25-drop-v6-hot", frameSpec{src: hot6, dst: dst6, sport: 40000, dport: 25, syn: true, tcpOpts: true}, false},
			{"tcp25-v6-cold", frameSpec{src: hot6, dst: dst6, sport: 40000, dport: 25, syn: true, tcpOpts: true}, true},
		} {
			b.Run(fmt.Sprintf("prefixes=%d/%s", len(t.Ranges), c.name), func(b *testing.B) {
				frame := buildFrame(b, c.frame)
				if act, _, err := p.Run(frame); err != nil || (c.frame.dport == 25 && !c.cold && act != model.ActionDrop) {
					b.Fatalf("hot frame: %v %v, want a drop", act, err)
				}
				lookupCost(b, p, floor, frame, c.cold)
				b.ReportMetric(applyTook.Seconds(), "apply-s")
			})
		}
	}
}

// lookupCost reports the program's cost on frame (hot: the same frame every run; cold:
// a new random source every run, through spray, whose own cost is subtracted): the
// median of seven rounds alternating with the bare XDP_PASS floor, and its ratio to it.
func lookupCost(b *testing.B, p *Program, floor *ebpf.Program, frame []byte, cold bool) {
	const rounds = 7
	reps := max(b.N/rounds, 1)
	run := func(prog *ebpf.Program) time.Duration {
		_, d, err := prog.Benchmark(frame, reps, nil)
		if err != nil {
			b.Fatal(err)
		}
		return d
	}
	var wrap *ebpf.Program
	var slot0 *ebpf.Map
	if cold {
		wrap, slot0 = spray(b, frame[12] == 0x86 && frame[13] == 0xdd, 100<<24|64<<16, 1<<22-1)
		defer wrap.Close()
		defer slot0.Close()
	}
	via := func(target *ebpf.Program) time.Duration {
		if err := slot0.Put(uint32(0), target); err != nil {
			b.Fatal(err)
		}
		return run(wrap)
	}
	var fs, ds []time.Duration
	for range rounds {
		f := run(floor)
		d := run(p.objs.Portcullis)
		if cold {
			d = via(p.objs.Portcullis) - via(floor) + f
		}
		fs, ds = append(fs, f), append(ds, d)
	}
	reportMedians(b, fs, ds)
}

// BenchmarkHash6Threshold is where the IPv6 ranges' hash (ranges_v6) starts to beat the
// trie: the cost of a SYN to 25 from a dropped IPv6 pool, hot and cold, with the IPv6
// part of testutil.ISPTables of each size in the trie and in the hash (hashMin6
// forced), as BenchmarkLookupScale measures it.
//
//	go test -run '^$' -bench '^BenchmarkHash6Threshold$' -benchtime 1400000x ./loader/
func BenchmarkHash6Threshold(b *testing.B) {
	testutil.RequireRoot(b)
	floor := passFloor(b)
	p := loadProgram(b)
	defer func(n int) { hashMin6 = n }(hashMin6)
	for _, n6 := range []int{16, 128, 512, 1024, 4096, 16384} {
		t := testutil.ISPTables(4 * n6)
		t.Ranges = slices.DeleteFunc(t.Ranges, func(e model.Entry) bool { return e.Prefix.Addr().Is4() })
		a := addr("2001:db8::1")
		for t.LookupSource(a, time.Now()).Verdict != model.Drop {
			a = a.Next()
		}
		for _, mode := range []string{"trie", "hash"} {
			hashMin6 = map[string]int{"trie": 1 << 30, "hash": 1}[mode]
			if err := p.Apply(t); err != nil {
				b.Fatal(err)
			}
			for _, cold := range []bool{false, true} {
				b.Run(fmt.Sprintf("v6=%d/%s/cold=%v", len(t.Ranges), mode, cold), func(b *testing.B) {
					frame := buildFrame(b, frameSpec{src: a, dst: dst6, sport: 40000, dport: 25, syn: true, tcpOpts: true})
					lookupCost(b, p, floor, frame, cold)
				})
			}
		}
	}
}

// BenchmarkPolicyLoad is a large policy end to end, as the daemon takes it: parse the
// YAML and its list files (cidrs_file), compile, Apply (write the idle slot, switch),
// then Release the replaced policy. The policy is testutil.ISPTables' mix, its pools and its
// customers each in a list file; "v4" keeps the IPv4 prefixes only. Each phase is
// reported in seconds; the slot written is never the empty one (a policy is applied
// before the timed loop).
//
//	go test -run '^$' -bench '^BenchmarkPolicyLoad$' -benchtime 3x ./loader/
func BenchmarkPolicyLoad(b *testing.B) {
	testutil.RequireRoot(b)
	for _, n := range []int{100_000, 1 << 20} {
		for _, mix := range []string{"v4", "v4+v6"} { // smallest first: see peak-rss-MiB
			t := testutil.ISPTables(n)
			if mix == "v4" {
				t.Ranges = slices.DeleteFunc(t.Ranges, func(e model.Entry) bool { return e.Prefix.Addr().Is6() })
			}
			dir := b.TempDir()
			var lists [3]strings.Builder
			for _, e := range t.Ranges {
				fmt.Fprintln(&lists[e.Rule], e.Prefix)
			}
			for i, name := range []string{"", "pools.txt", "customers.txt"} {
				if name != "" {
					if err := os.WriteFile(filepath.Join(dir, name), []byte(lists[i].String()), 0o644); err != nil {
						b.Fatal(err)
					}
				}
			}
			path := filepath.Join(dir, "policy.yaml")
			if err := os.WriteFile(path, []byte("version: 1\ngoverned_ports: [25]\ndefault: pass\nranges:\n"+
				"  - {name: pools, verdict: drop, cidrs_file: pools.txt}\n"+
				"  - {name: customers, verdict: pass, cidrs_file: customers.txt}\n"), 0o644); err != nil {
				b.Fatal(err)
			}
			b.Run(fmt.Sprintf("prefixes=%d/%s", len(t.Ranges), mix), func(b *testing.B) {
				p := applied(b, testTables(time.Now()))
				var parse, compile, apply, release time.Duration
				for b.Loop() {
					start := time.Now()
					pol, err := policy.ParseFile(path, time.Now())
					if err != nil {
						b.Fatal(err)
					}
					parsed := time.Now()
					c, err := policy.Compile(pol, time.Now())
					if err != nil {
						b.Fatal(err)
					}
					compiled := time.Now()
					if err := p.Apply(c.Tables); err != nil {
						b.Fatal(err)
					}
					applied := time.Now()
					if err := p.Release(); err != nil {
						b.Fatal(err)
					}
					parse, compile, apply, release = parse+parsed.Sub(start), compile+compiled.Sub(parsed), apply+applied.Sub(compiled), release+time.Since(applied)
				}
				var ru unix.Rusage
				if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
					b.Fatal(err)
				}
				// The process's peak so far: sizes run smallest first, so each row's
				// figure is its own size's (and the test binary's) peak.
				b.ReportMetric(float64(ru.Maxrss)/1024, "peak-rss-MiB")
				per := func(d time.Duration) float64 { return d.Seconds() / float64(b.N) }
				b.ReportMetric(per(parse), "parse-s")
				b.ReportMetric(per(compile), "compile-s")
				b.ReportMetric(per(apply), "apply-s")
				b.ReportMetric(per(parse+compile+apply), "end-to-end-s")
				b.ReportMetric(per(release), "release-s")
			})
		}
	}
}
