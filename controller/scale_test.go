package controller

import (
	"net/netip"
	"testing"
	"time"

	"github.com/portcullis/portcullis/overlay"
)

// TestRuntimeScaleTimings logs what one runtime change costs with many entries and a
// long history in memory (synthetic, laid into the controller's state directly): the
// work done under the controller's lock grows with both. It asserts nothing about
// time; the log is for the commit message.
func TestRuntimeScaleTimings(t *testing.T) {
	if testing.Short() {
		t.Skip("timings: not with -short")
	}
	d := testController(t)
	if res := d.Apply("a.yaml", []byte(policyRuntime), "file"); res.Err != nil {
		t.Fatal(res.Err)
	}
	now := time.Now()
	synth := func(i int) overlay.Entry {
		a := netip.AddrFrom4([4]byte{100, 100 + byte(i>>16), byte(i >> 8), byte(i)})
		return overlay.Entry{Kind: overlay.Unblock, Prefix: netip.PrefixFrom(a, 32), Added: now,
			Expires: now.Add(24 * time.Hour), Reason: "synthetic", Who: "test"}
	}
	cycle := func(n int) time.Duration {
		start := time.Now()
		for range n {
			e, err := d.AddEntry(quarantine("100.64.9.9/32", "spam run"))
			if err != nil {
				t.Fatal(err)
			}
			if err := d.ReleaseEntry(e.Key(), "uid:0", "cleaned"); err != nil {
				t.Fatal(err)
			}
		}
		return time.Since(start) / time.Duration(2*n)
	}
	for _, h := range []int{0, 10_000, 100_000} {
		d.mu.Lock()
		d.overlay.History = d.overlay.History[:0:0]
		for i := range h {
			d.overlay.History = append(d.overlay.History, overlay.Event{Time: now, Action: overlay.Added, Entry: synth(i), Who: "test", Reason: "synthetic"})
		}
		d.mu.Unlock()
		t.Logf("history %6d events: %v per add or release", h, cycle(20))
	}
	for _, n := range []int{1_000, 10_000, 100_000} {
		d.mu.Lock()
		d.overlay.History = nil
		d.overlay.Entries = d.overlay.Entries[:0:0]
		for i := range n {
			d.overlay.Entries = append(d.overlay.Entries, synth(i))
		}
		d.mu.Unlock()
		t.Logf("entries %6d: %v per add or release", n, cycle(10))
	}
}
