package loader

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"

	"github.com/portcullis/portcullis/bpf"
	"github.com/portcullis/portcullis/model"
)

// kernelMemory is what /proc/meminfo says the kernel holds outside the page cache
// that BPF maps allocate from: unreclaimable slab (LPM trie nodes, hash elements),
// per-CPU areas (per-CPU maps), vmalloc (large arrays). Bytes.
func kernelMemory(tb testing.TB) (slab, percpu, vmalloc int64) {
	tb.Helper()
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(fields[1], 10, 64)
		switch fields[0] {
		case "SUnreclaim:":
			slab = kb << 10
		case "Percpu:":
			percpu = kb << 10
		case "VmallocUsed:":
			vmalloc = kb << 10
		}
	}
	return slab, percpu, vmalloc
}

// lpmMemlock sums what the kernel reports as memlock for every LPM trie on the
// machine and every hash shaped like ranges_v6's (fdinfo's figure, which `bpftool map
// show` prints).
func lpmMemlock(tb testing.TB) int64 {
	keySize := uint32(unsafe.Sizeof(bpf.PortcullisPcV6Key{}))
	valueSize := uint32(unsafe.Sizeof(bpf.PortcullisPcV6Val{}))
	tb.Helper()
	var sum int64
	for id := ebpf.MapID(0); ; {
		next, err := ebpf.MapGetNextID(id)
		if err != nil {
			return sum
		}
		id = next
		m, err := ebpf.NewMapFromID(id)
		if err != nil {
			continue
		}
		if info, err := m.Info(); err == nil && (info.Type == ebpf.LPMTrie ||
			info.Type == ebpf.Hash && info.KeySize == keySize && info.ValueSize == valueSize) {
			if ml, ok := info.Memlock(); ok {
				sum += int64(ml)
			}
		}
		m.Close()
	}
}

// bigTables is a policy of about n IPv4 and n/4 IPv6 source prefixes, an ISP's mix:
// one in ten IPv4 entries a /24 (customer networks), the rest /32s; one in ten IPv6
// entries a /48, the rest /128s. seed varies the addresses so that two tables differ.
func bigTables(n, seed int) *model.Tables {
	t := &model.Tables{DefaultVerdict: model.Pass, Governed: []uint16{25}, RuleNames: []string{"default", "pools", "customers"}}
	for i := range n {
		var p netip.Prefix
		if i%10 == 0 { // 100.96.0.0/11 holds 8192 /24s; wrap into 100.112/12 past that
			j := uint32(i/10+seed) % (1 << 13)
			p = netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 96 + byte(j>>8), byte(j), 0}), 24)
		} else {
			a := uint32(100)<<24 | uint32(64)<<16 | uint32(i+seed)%(1<<21)
			p = netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)}), 32)
		}
		t.Ranges = append(t.Ranges, model.Entry{Prefix: p, Rule: 1 + uint32(i%2), Verdict: model.Drop})
	}
	for i := range n / 4 {
		b := netip.MustParseAddr("2001:db8:1000::").As16()
		bits := 128
		if i%10 == 0 {
			bits = 48
			b[4], b[5] = byte((i/10+seed)>>8), byte(i/10+seed)
		} else {
			v := uint32(i + seed)
			b[12], b[13], b[14], b[15] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
			b[6] = 0xff
		}
		t.Ranges = append(t.Ranges, model.Entry{Prefix: netip.PrefixFrom(netip.AddrFrom16(b), bits), Rule: 1, Verdict: model.Drop})
	}
	dedupe := map[netip.Prefix]bool{}
	out := t.Ranges[:0]
	for _, e := range t.Ranges {
		if !dedupe[e.Prefix] {
			dedupe[e.Prefix] = true
			out = append(out, e)
		}
	}
	t.Ranges = out
	return t
}

// BenchmarkTableMemory is the kernel memory the policy tables take, by size: what
// /proc/meminfo's unreclaimable slab, per-CPU and vmalloc figures grow by when a
// policy is applied into an empty idle slot; when a second one of the same size is
// applied (both slots full: the replaced policy kept for Rollback); and once Release
// has freed the replaced one (the steady state the daemon keeps after a proof). The
// DIR-24-8 arrays are allocated whole when the program loads, whatever the policy:
// that figure is reported apart, measured around the load. Beside them is what the
// kernel reports as memlock for the LPM trie and the IPv6 range hash, the figure
// `bpftool map show` prints.
// Run it on a quiet machine: the figures are system-wide.
//
//	go test -run '^$' -bench '^BenchmarkTableMemory$' -benchtime 1x ./loader/
func BenchmarkTableMemory(b *testing.B) {
	settle := func() (int64, int64) {
		runtime.GC()
		time.Sleep(2 * time.Second) // RCU frees and per-CPU caches settle
		s, pc, v := kernelMemory(b)
		return s + pc + v, lpmMemlock(b)
	}
	for _, n := range []int{100_000, 1 << 20} {
		b.Run(fmt.Sprintf("prefixes=%d", n), func(b *testing.B) {
			before, _ := settle()
			p := loadProgram(b)
			loaded, _ := settle()
			a, c := bigTables(n, 0), bigTables(n, 7)
			entries := len(a.Ranges)
			var one, two, released, mlOne int64
			for b.Loop() {
				base, mlBase := settle()
				if err := p.Apply(a); err != nil {
					b.Fatal(err)
				}
				after, ml := settle()
				if err := p.Apply(c); err != nil {
					b.Fatal(err)
				}
				both, _ := settle()
				if err := p.Release(); err != nil {
					b.Fatal(err)
				}
				rel, _ := settle()
				one, two, released, mlOne = after-base, both-base, rel-base, ml-mlBase
			}
			b.ReportMetric(float64(loaded-before)/(1<<20), "fixed-dir-MiB")
			b.ReportMetric(float64(entries), "prefixes")
			b.ReportMetric(float64(one)/float64(entries), "kernel-B/prefix")
			b.ReportMetric(float64(one)/(1<<20), "one-policy-MiB")
			b.ReportMetric(float64(two)/(1<<20), "two-slots-MiB")
			b.ReportMetric(float64(released)/(1<<20), "steady-after-release-MiB")
			b.ReportMetric(float64(mlOne)/(1<<20), "memlock-reported-MiB")
		})
	}
}
