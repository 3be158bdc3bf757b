package replay

import (
	"testing"

	"github.com/portcullis/portcullis/internal/testutil"
)

// BenchmarkReplay replays a capture of 10,000 frames, nine in ten of them ordinary
// traffic (TCP to 443), the rest SYNs to 25 from the test policy's ranges, and reports
// frames per second. Each frame costs a test run plus the counter reads that find the
// program's reason and deciding entry, plus the model.
func BenchmarkReplay(b *testing.B) {
	testutil.RequireRoot(b)
	srcs := []string{"100.64.1.1", "100.65.1.1", "100.66.1.1", "198.51.100.66", "203.0.113.9", "2001:db8:1::5"}
	var frames [][]byte
	for i := range 10000 {
		s := syn(encPlain, srcs[i%len(srcs)], 443)
		if i%10 == 0 {
			s.dport = 25
		}
		s.sport = uint16(1024 + i%60000)
		frames = append(frames, buildFrame(b, s))
	}
	path := writePcap(b, "bench.pcap", LinkTypeEthernet, frames)
	c := compileTestPolicy(b)
	for b.Loop() {
		s, err := File(path, c, testNow, Options{}, func(Result) error { return nil })
		if err != nil || s.Frames != len(frames) || s.Problems != 0 {
			b.Fatalf("%v %+v", err, s)
		}
	}
	b.ReportMetric(float64(len(frames)*b.N)/b.Elapsed().Seconds(), "frames/s")
	b.ReportMetric(0, "ns/op")
}
