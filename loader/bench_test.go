package loader

import (
	"encoding/binary"
	"fmt"
	"runtime"
	"slices"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/portcullis/portcullis/internal/testutil"
	"github.com/portcullis/portcullis/model"
	"github.com/portcullis/portcullis/policy"
)

// BenchmarkDataPlane measures the program's cost per packet with the kernel's own
// timer (BPF_PROG_TEST_RUN with repeat) and reports it next to a bare XDP_PASS floor
// measured in the same sub-benchmark, as a ratio ("x-floor").
//
// The reset case rewrites its input in place, so a kernel repeat would judge the RST
// it built; it is timed one run per syscall instead, against a floor timed the same way.
func BenchmarkDataPlane(b *testing.B) {
	p := applied(b, testTables(time.Now()))
	floor := passFloor(b)

	cases := []struct {
		name  string
		frame frameSpec
	}{
		{"tcp443", frameSpec{src: dropSrc.v4, dst: dst4, sport: 40000, dport: 443, syn: true, tcpOpts: true}},
		{"udp", frameSpec{src: dropSrc.v4, dst: dst4, udp: true, sport: 40000, dport: 53, payload: make([]byte, 40)}},
		{"tcp25-drop", frameSpec{src: dropSrc.v4, dst: dst4, sport: 40000, dport: 25, syn: true, tcpOpts: true}},
		{"tcp25-drop-v6", frameSpec{src: dropSrc.v6, dst: dst6, sport: 40000, dport: 25, syn: true, tcpOpts: true}},
		{"tcp25-drop-qinq-pppoe", frameSpec{enc: encVLANPPPoE, src: dropSrc.v4, dst: dst4, sport: 40000, dport: 25, syn: true, tcpOpts: true}},
		{"tcp25-drop-pppoe-pfc", frameSpec{enc: encPPPoEPFC, src: dropSrc.v4, dst: dst4, sport: 40000, dport: 25, syn: true, tcpOpts: true}},
		{"tcp25-drop-raw-ip", frameSpec{enc: encRawIP, src: dropSrc.v4, dst: dst4, sport: 40000, dport: 25, syn: true, tcpOpts: true}},
		{"tcp443-raw-ip", frameSpec{enc: encRawIP, src: dropSrc.v4, dst: dst4, sport: 40000, dport: 443, syn: true, tcpOpts: true}},
		{"tcp587-pass", frameSpec{src: dropSrc.v4, dst: dst4, sport: 40000, dport: 587, syn: true, tcpOpts: true}},
	}
	for _, c := range cases {
		frame := buildFrame(b, c.frame)
		b.Run(c.name, func(b *testing.B) {
			_, f, err := floor.Benchmark(frame, b.N, nil)
			if err != nil {
				b.Fatal(err)
			}
			_, d, err := p.entry(c.frame.enc.link()).Benchmark(frame, b.N, nil)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(d.Nanoseconds()), "ns/pkt")
			b.ReportMetric(float64(f.Nanoseconds()), "floor-ns/pkt")
			b.ReportMetric(float64(d)/float64(f), "x-floor")
		})
	}

	syn := buildFrame(b, frameSpec{src: resetSrc.v4, dst: dst4, sport: 40000, dport: 25, syn: true, tcpOpts: true})
	b.Run("tcp25-reset-syn-per-call", func(b *testing.B) {
		perCall := func(prog *ebpf.Program) time.Duration {
			out := make([]byte, len(syn)+256)
			start := time.Now()
			for i := 0; i < b.N; i++ {
				if _, err := prog.Run(&ebpf.RunOptions{Data: syn, DataOut: out}); err != nil {
					b.Fatal(err)
				}
			}
			return time.Since(start) / time.Duration(b.N)
		}
		f := perCall(floor)
		d := perCall(p.objs.Portcullis)
		b.ReportMetric(float64(d.Nanoseconds()), "ns/call")
		b.ReportMetric(float64(f.Nanoseconds()), "floor-ns/call")
		b.ReportMetric(float64(d)/float64(f), "x-floor")
	})

	b.Run("tcp25-drop-new-source-per-call", func(b *testing.B) { benchSpray(b, true, false) })
	b.Run("tcp25-drop-same-source-per-call", func(b *testing.B) { benchSpray(b, false, false) })
	b.Run("tcp25-drop-new-source-probe-per-call", func(b *testing.B) { benchSpray(b, true, true) })
}

// benchSpray measures a SYN to 25 from a drop range with a new source every packet
// (a botnet spraying from many addresses: every packet is a source the offender record
// has not seen), or the same source every packet (hot) timed the same way. A kernel
// repeat runs one frame, so each packet is its own BPF_PROG_TEST_RUN with repeat 1 and
// the kernel's own timing of that run is summed; a bare XDP_PASS floor is timed the same
// way on the same frame, interleaved packet by packet, so what the floor costs (the
// test-run timer, the copy of the frame) is measured, not assumed, and only it is
// subtracted ("above-floor-ns/pkt"). The sources walk a drop range of 2^22 addresses
// (100.64.0.0/10), so a run of up to 4M packets never repeats one.
//
// As a probe (PC_PROBE_MAGIC in the metadata) the same packet is judged alike but
// leaves no trace: no offender record, no counters. The difference to the same run as
// traffic is what recording (offenders and counters) costs.
func benchSpray(b *testing.B, newSource, probe bool) {
	tables := &model.Tables{DefaultVerdict: model.Pass, Governed: []uint16{25}, RuleNames: []string{"default", "spray"},
		Ranges: []model.Entry{{Prefix: pfx("100.64.0.0/10"), Rule: 1, Verdict: model.Drop}}}
	p := applied(b, tables)
	floor := passFloor(b)
	frame := buildFrame(b, frameSpec{src: addr("100.64.0.0"), dst: dst4, sport: 40000, dport: 25, syn: true, tcpOpts: true})
	srcOff := 14 + 12 // the IPv4 source address (the program checks no checksum)
	ctx := xdpMD{DataEnd: uint32(len(frame))}
	if probe {
		frame = append(binary.NativeEndian.AppendUint32(nil, probeMagic), frame...)
		srcOff += 4
		ctx = xdpMD{Data: 4, DataEnd: uint32(len(frame))}
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var d, f time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if newSource {
			binary.BigEndian.PutUint32(frame[srcOff:], 0x64400000|uint32(i)&(1<<22-1))
		}
		dp, err := kernelBench(p.objs.Portcullis, frame, ctx, 1)
		if err != nil {
			b.Fatal(err)
		}
		fp, err := kernelBench(floor, frame, ctx, 1)
		if err != nil {
			b.Fatal(err)
		}
		d += dp
		f += fp
	}
	n := float64(b.N)
	b.ReportMetric(float64(d.Nanoseconds())/n, "ns/pkt")
	b.ReportMetric(float64(f.Nanoseconds())/n, "floor-ns/pkt")
	b.ReportMetric(float64((d-f).Nanoseconds())/n, "above-floor-ns/pkt")
	b.ReportMetric(float64(d)/float64(f), "x-floor")
}

// BenchmarkRelayScope measures what relays and scopes cost on the port-25 path: the
// same drop-range SYN under a policy without either, with relays (missed, and hit),
// and with scopes (on an interface no scope names, on a scoped one where the scoped
// range decides, and on a scoped one where an unscoped range decides after the group
// tables missed). The packet must arrive on a named interface, so each measurement is
// a BPF_PROG_TEST_RUN with a context (the ingress ifindex) and a repeat, made directly
// (kernelBench: cilium/ebpf's Benchmark takes no context) and timed by the kernel, next
// to a bare XDP_PASS floor timed the same way on the same frame: seven alternating
// rounds of each per sub-benchmark, and the medians reported.
func BenchmarkRelayScope(b *testing.B) {
	testutil.RequireRoot(b)
	floor := passFloor(b)
	const base = `version: 1
ranges:
  - {name: dyn, verdict: drop, cidrs: [100.64.0.0/12, 2001:db8:1000::/36]}
  - {name: biz, verdict: pass, cidrs: [198.51.100.0/24]}
`
	const relays = `relays:
  - {name: smarthost, cidrs: [192.0.2.26, 2001:db8:ffff::26], reason: ours, owner: mail}
  - {name: mx, cidrs: [192.0.2.128/25], ports: [25], reason: ours, owner: mail}
`
	const scoped = `  - {name: partner, verdict: drop, cidrs: [100.64.1.0/24], interfaces: [whl0]}
  - {name: partner-b, verdict: pass, cidrs: [100.64.1.0/24], interfaces: [whl1]}
`
	compile := func(src string) *model.Tables {
		pol, err := policy.Parse("bench.yaml", []byte(src), time.Now())
		if err != nil {
			b.Fatal(err)
		}
		c, err := policy.Compile(pol, time.Now())
		if err != nil {
			b.Fatal(err)
		}
		return c.Tables
	}
	cases := []struct {
		name, policy, src, dst, iface string
	}{
		{"tcp25-drop-plain-policy", base, "100.64.5.5", "192.0.2.25", ""},
		{"tcp25-drop-relay-miss", base + relays, "100.64.5.5", "192.0.2.25", ""},
		{"tcp25-relay-hit", base + relays, "100.64.5.5", "192.0.2.26", ""},
		{"tcp25-drop-scoped-policy-unscoped-iface", base + scoped, "100.64.5.5", "192.0.2.25", "oth0"},
		{"tcp25-drop-scoped-iface-scoped-range", base + scoped, "100.64.1.5", "192.0.2.25", "whl0"},
		{"tcp25-drop-scoped-iface-unscoped-range", base + scoped, "100.64.5.5", "192.0.2.25", "whl0"},
		{"tcp25-drop-relays-and-scopes", base + scoped + relays, "100.64.1.5", "192.0.2.25", "whl0"},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			p := applied(b, compile(c.policy))
			s := scratch(b, p)
			frame := buildFrame(b, frameSpec{src: addr(c.src), dst: addr(c.dst), sport: 40000, dport: 25, syn: true, tcpOpts: true})
			ifindex, err := p.ifindexOf(c.iface)
			if err != nil {
				b.Fatal(err)
			}
			const rounds = 7
			n := max(b.N/rounds, 1)
			timed := func(prog *ebpf.Program) time.Duration {
				var d time.Duration
				err := s.Do(func() (err error) {
					d, err = kernelBench(prog, frame, xdpMD{DataEnd: uint32(len(frame)), IngressIfindex: ifindex}, n)
					return err
				})
				if err != nil {
					b.Fatal(err)
				}
				return d
			}
			var fs, ds []time.Duration
			for range rounds {
				fs = append(fs, timed(floor))
				ds = append(ds, timed(p.objs.Portcullis))
			}
			reportMedians(b, fs, ds)
		})
	}
}

// passFloor is a bare XDP_PASS program, the floor every per-packet figure is divided
// by. Its attach type is the entry points' (XDP), so that it can stand in a program
// array beside them (spray).
func passFloor(tb testing.TB) *ebpf.Program {
	tb.Helper()
	floor, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, AttachType: ebpf.AttachXDP, License: "GPL",
		Instructions: asm.Instructions{asm.LoadImm(asm.R0, 2, asm.DWord), asm.Return()}})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { floor.Close() })
	return floor
}

// reportMedians reports the medians of rounds of the program (ds) and of the floor
// (fs), and their ratio.
func reportMedians(b *testing.B, fs, ds []time.Duration) {
	slices.Sort(fs)
	slices.Sort(ds)
	f, d := fs[len(fs)/2], ds[len(ds)/2]
	b.ReportMetric(float64(d.Nanoseconds()), "ns/pkt")
	b.ReportMetric(float64(f.Nanoseconds()), "floor-ns/pkt")
	b.ReportMetric(float64(d)/float64(f), "x-floor")
}

// kernelBench runs prog repeat times on frame with context ctx (BPF_PROG_TEST_RUN) and
// returns the kernel's own average time per run.
func kernelBench(prog *ebpf.Program, frame []byte, ctx xdpMD, repeat int) (time.Duration, error) {
	out := make([]byte, len(frame)+256)
	var ctxOut xdpMD
	attr := struct {
		progFd, retval, dataSizeIn, dataSizeOut uint32
		dataIn, dataOut                         uint64
		repeat, duration                        uint32
		ctxSizeIn, ctxSizeOut                   uint32
		ctxIn, ctxOut                           uint64
		flags, cpu, batchSize                   uint32
		_                                       uint32
	}{
		progFd: uint32(prog.FD()), dataSizeIn: uint32(len(frame)), dataSizeOut: uint32(len(out)),
		dataIn: uint64(uintptr(unsafe.Pointer(&frame[0]))), dataOut: uint64(uintptr(unsafe.Pointer(&out[0]))),
		repeat: uint32(repeat), ctxSizeIn: uint32(unsafe.Sizeof(ctx)), ctxSizeOut: uint32(unsafe.Sizeof(ctxOut)),
		ctxIn: uint64(uintptr(unsafe.Pointer(&ctx))), ctxOut: uint64(uintptr(unsafe.Pointer(&ctxOut))),
	}
	for {
		_, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_TEST_RUN, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
		runtime.KeepAlive(frame)
		runtime.KeepAlive(out)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return 0, fmt.Errorf("BPF_PROG_TEST_RUN: %w", errno)
		}
		return time.Duration(attr.duration), nil
	}
}
