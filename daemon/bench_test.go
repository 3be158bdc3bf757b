package daemon

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/portcullis/portcullis/controller"
	"github.com/portcullis/portcullis/overlay"
)

// benchPolicy writes a policy of n /30 prefixes out of 100.64.0.0/10 into dir, in a
// list file (cidrs_file) as an IPAM export would be, with verdict v, and returns the
// policy file's path and text.
func benchPolicy(b *testing.B, dir string, n int, v string) (string, []byte) {
	var list strings.Builder
	for i := range n {
		a := uint32(100)<<24 | uint32(64)<<16 | uint32(i)<<2
		fmt.Fprintf(&list, "%d.%d.%d.%d/30\n", a>>24, a>>16&0xff, a>>8&0xff, a&0xff)
	}
	if err := os.WriteFile(filepath.Join(dir, "customers-"+v+".txt"), []byte(list.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	text := fmt.Sprintf("version: 1\ndefault: pass\nranges:\n  - {name: customers, verdict: %s, cidrs_file: customers-%s.txt}\n", v, v)
	return filepath.Join(dir, "policy-"+v+".yaml"), []byte(text)
}

// BenchmarkReadersDuringApply measures what the readers (status and entries over the
// control socket, a Prometheus scrape over HTTP) answer in while a policy of 2^20
// prefixes is applied (parse, compile, load, swap, proof: seconds), against the same
// readers on an idle daemon in the same run. Readers take the published snapshot and
// never the controller's lock, so their latency must not follow the apply's length:
// the benchmark fails if any read takes more than 2 s (a generous bound: an apply
// takes about 10 s here) or if a reader answered fewer than 3 times during the apply.
//
//	go test -run '^$' -bench '^BenchmarkReadersDuringApply$' -benchtime 1x ./daemon/
func BenchmarkReadersDuringApply(b *testing.B) {
	d := newTestDaemon(b, nil, nil)
	dir := b.TempDir()
	ln, err := d.listenControl()
	if err != nil {
		b.Fatal(err)
	}
	defer d.serveControl(ln).Close()
	scrape := httptest.NewServer(promhttp.HandlerFor(d.metrics.reg, promhttp.HandlerOpts{}))
	defer scrape.Close()

	const n = 1 << 20
	fileA, textA := benchPolicy(b, dir, n, "drop")
	fileB, textB := benchPolicy(b, dir, n, "reset")
	if res := d.ctl.Apply(fileA, textA, "bench"); res.Err != nil {
		b.Fatal(res.Err)
	}
	for i := range 10 {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), 32)
		if _, err := d.ctl.AddEntry(overlay.Request{Kind: overlay.Quarantine, Prefix: p, Reason: "bench", Who: "bench"}); err != nil {
			b.Fatal(err)
		}
	}

	readers := []struct {
		name string
		read func() error
	}{
		{"status", func() error {
			st, err := RemoteStatus(d.cfg.ControlSocket)
			if err == nil && st.Hash == "" {
				err = fmt.Errorf("status without a policy hash")
			}
			return err
		}},
		{"entries", func() error {
			r, err := RemoteEntries(d.cfg.ControlSocket, false, "")
			if err == nil && len(r.Entries) != 10 {
				err = fmt.Errorf("%d entries, want 10", len(r.Entries))
			}
			return err
		}},
		{"scrape", func() error {
			resp, err := http.Get(scrape.URL)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err == nil && !strings.Contains(string(body), "portcullis_") {
				err = fmt.Errorf("a scrape without portcullis metrics (HTTP %d)", resp.StatusCode)
			}
			return err
		}},
	}
	// measure runs every reader in turn, a round every 10 ms (readers that spin would
	// take a CPU from the apply), until stop is closed (at least once each) and returns
	// each one's latencies.
	measure := func(stop <-chan struct{}) [][]time.Duration {
		lat := make([][]time.Duration, len(readers))
		for first := true; ; first = false {
			select {
			case <-stop:
				if !first {
					return lat
				}
			default:
			}
			for i, r := range readers {
				start := time.Now()
				if err := r.read(); err != nil {
					b.Fatalf("%s: %v", r.name, err)
				}
				lat[i] = append(lat[i], time.Since(start))
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	idleStop := make(chan struct{})
	go func() { time.Sleep(2 * time.Second); close(idleStop) }()
	idle := measure(idleStop)

	b.ResetTimer()
	var busy [][]time.Duration
	var took time.Duration
	for i := 0; b.Loop(); i++ {
		file, text := fileB, textB
		if i%2 == 1 {
			file, text = fileA, textA
		}
		done := make(chan controller.Result, 1)
		start := time.Now()
		go func() { done <- d.ctl.Apply(file, text, "bench") }()
		stop := make(chan struct{})
		var res controller.Result
		go func() { res = <-done; took = time.Since(start); close(stop) }()
		busy = measure(stop)
		if res.Err != nil || res.Outcome != "applied" {
			b.Fatalf("apply: %s %v", res.Outcome, res.Err)
		}
	}
	b.StopTimer()
	b.ReportMetric(took.Seconds(), "apply-s")
	for i, r := range readers {
		slices.Sort(idle[i])
		slices.Sort(busy[i])
		p := func(l []time.Duration, q float64) float64 {
			return float64(l[int(q*float64(len(l)-1))].Microseconds()) / 1000
		}
		b.ReportMetric(p(idle[i], 0.5), r.name+"-idle-p50-ms")
		b.ReportMetric(p(busy[i], 0.5), r.name+"-apply-p50-ms")
		b.ReportMetric(p(busy[i], 1), r.name+"-apply-max-ms")
		b.ReportMetric(float64(len(busy[i])), r.name+"-reads")
		if len(busy[i]) < 3 {
			b.Errorf("%s answered %d times during an apply of %s: it waits for the apply", r.name, len(busy[i]), took)
		}
		if m := busy[i][len(busy[i])-1]; m > 2*time.Second {
			b.Errorf("%s took %s during an apply of %s", r.name, m, took)
		}
	}
}
