package loader

import (
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// BenchmarkDataPlane measures the program's cost per packet with the kernel's own
// timer (BPF_PROG_TEST_RUN with repeat) and reports it next to a bare XDP_PASS floor
// measured in the same sub-benchmark, as a ratio ("x-floor").
//
// The reset case rewrites its input in place, so a kernel repeat would judge the RST
// it built; it is timed one run per syscall instead, against a floor timed the same way.
func BenchmarkDataPlane(b *testing.B) {
	p := applied(b, testTables(time.Now()))
	floor, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL",
		Instructions: asm.Instructions{asm.LoadImm(asm.R0, 2, asm.DWord), asm.Return()}})
	if err != nil {
		b.Fatal(err)
	}
	defer floor.Close()

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
}
