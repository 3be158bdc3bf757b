package loader

import (
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portcullis/portcullis/bpf"
	"github.com/portcullis/portcullis/model"
	"github.com/portcullis/portcullis/policy"
)

// Policies A and B differ in a range's verdict and in an exemption inside it. While
// several goroutines run packets through the program, the policy is swapped thousands
// of times; every verdict must be A's or B's for that packet, never a mix.
func TestSwapIsAtomicUnderLoad(t *testing.T) {
	now := time.Now()
	compile := func(src string) *model.Tables {
		pol, err := policy.Parse("p.yaml", []byte(src), now)
		if err != nil {
			t.Fatal(err)
		}
		c, err := policy.Compile(pol, now)
		if err != nil {
			t.Fatal(err)
		}
		return c.Tables
	}
	a := compile(`version: 1
ranges: [{name: dyn, verdict: reset, cidrs: [100.64.0.0/10, "2001:db8:1000::/36"]}]
exemptions: [{cidr: 100.64.1.25, name: mx, reason: mail server, ticket: T-1}, {cidr: "2001:db8:1000::25", name: mx6, reason: mail server, ticket: T-1}]
`)
	b := compile(`version: 1
ranges: [{name: dyn, verdict: drop, cidrs: [100.64.0.0/10, "2001:db8:1000::/36"]}]
`)
	p := applied(t, a)
	var frames [][]byte
	var want [][2]model.Action // A's and B's verdict per frame
	for _, src := range []string{"100.64.1.25", "100.64.9.9", "2001:db8:1000::25", "2001:db8:1000::9"} {
		s := addr(src)
		dst := dst4
		if s.Is6() {
			dst = dst6
		}
		f := buildFrame(t, frameSpec{src: s, dst: dst, sport: 40000, dport: 25, syn: true})
		frames = append(frames, f)
		want = append(want, [2]model.Action{a.Judge(f, now, true).Action, b.Judge(f, now, true).Action})
		if want[len(want)-1][0] == want[len(want)-1][1] {
			t.Fatalf("%s: A and B agree (%v); the test needs them to differ", src, want[len(want)-1][0])
		}
	}

	var stop atomic.Bool
	var runs, seenA, seenB atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan string, 16)
	for g := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; !stop.Load(); i++ {
				f := frames[i%len(frames)]
				act, _, err := p.Run(f)
				if err != nil {
					errs <- err.Error()
					return
				}
				w := want[i%len(frames)]
				switch act {
				case w[0]:
					seenA.Add(1)
				case w[1]:
					seenB.Add(1)
				default:
					errs <- "frame " + string(rune('0'+i%len(frames))) + ": " + act.String() + ", neither A's " + w[0].String() + " nor B's " + w[1].String()
					return
				}
				runs.Add(1)
			}
		}()
	}
	swaps := 2000
	if testing.Short() {
		swaps = 200
	}
	start := time.Now()
	for i := range swaps {
		next := b
		if i%2 == 1 {
			next = a
		}
		if err := p.Apply(next); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
	if seenA.Load() == 0 || seenB.Load() == 0 {
		t.Fatalf("verdicts A %d, B %d: the runs did not overlap the swaps", seenA.Load(), seenB.Load())
	}
	t.Logf("%d swaps in %v, %d packets judged concurrently (A %d, B %d)", swaps, time.Since(start), runs.Load(), seenA.Load(), seenB.Load())
}

// BenchmarkApply is the cost of one policy change as the daemon makes it: Apply
// (write the idle slot, switch: one RCU wait) then, the proof passed, Release (free the
// replaced policy's trie: one more, off the switch's path), each reported apart; and
// "apply-only", Apply after Apply without Release (a fresh trie put in: two waits),
// idle and while other goroutines run packets through the program.
func BenchmarkApply(b *testing.B) {
	a := testTables(time.Now())
	p := applied(b, a)
	frame := buildFrame(b, frameSpec{src: dropSrc.v4, dst: dst4, sport: 1, dport: 25, syn: true})
	for _, c := range []struct {
		name    string
		load    int
		release bool
	}{{"idle", 0, true}, {"under-load", 1, true}, {"apply-only-idle", 0, false}} {
		b.Run(c.name, func(b *testing.B) {
			var stop atomic.Bool
			var wg sync.WaitGroup
			for range c.load {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for !stop.Load() {
						p.Run(frame)
					}
				}()
			}
			var apply, release time.Duration
			for b.Loop() {
				start := time.Now()
				if err := p.Apply(a); err != nil {
					b.Fatal(err)
				}
				applied := time.Now()
				apply += applied.Sub(start)
				if c.release {
					if err := p.Release(); err != nil {
						b.Fatal(err)
					}
					release += time.Since(applied)
				}
			}
			stop.Store(true)
			wg.Wait()
			b.ReportMetric(float64(apply.Microseconds())/1000/float64(b.N), "apply-ms")
			b.ReportMetric(float64(release.Microseconds())/1000/float64(b.N), "release-ms")
		})
	}
}

// TestReleaseFreesTheIdleSlot: after Release the idle slot's trie is empty (the
// kernel keeps one policy, not two), Rollback is no longer
// offered, the live policy still judges as the model says, and the next Apply writes
// the freed slot as usual.
func TestReleaseFreesTheIdleSlot(t *testing.T) {
	now := time.Now()
	a, b := testTables(now), compileScopePolicy(t, now).Tables
	p := applied(t, a)
	if err := p.Apply(b); err != nil {
		t.Fatal(err)
	}
	slots := func() map[uint32]int {
		return map[uint32]int{0: len(trieKeys(t, p, 0)), 1: len(trieKeys(t, p, 1))}
	}
	if n := slots(); n[p.slot] == 0 || n[p.slot^1] == 0 {
		t.Fatalf("before Release: entries by slot %v, want both slots (the replaced policy kept for Rollback)", n)
	}
	if err := p.Release(); err != nil {
		t.Fatal(err)
	}
	if n := slots(); n[p.slot^1] != 0 || n[p.slot] == 0 {
		t.Fatalf("after Release: entries by slot %v, want the live slot's only", n)
	}
	if err := p.Rollback(); !errors.Is(err, ErrNoRollback) {
		t.Errorf("Rollback after Release: %v, want ErrNoRollback", err)
	}
	for _, s := range sources {
		for _, src := range []netip.Addr{s.v4, s.v6} {
			compareWithModel(t, p, b, buildFrame(t, frameSpec{src: src, dst: map[bool]netip.Addr{true: dst4, false: dst6}[src.Is4()], sport: 1, dport: 25, syn: true}))
		}
	}
	if err := p.Apply(a); err != nil {
		t.Fatal(err)
	}
	for _, s := range sources {
		compareWithModel(t, p, a, buildFrame(t, frameSpec{src: s.v4, dst: dst4, sport: 1, dport: 25, syn: true}))
	}
}

// trieKeys returns the keys of slot's prefixes trie.
func trieKeys(t testing.TB, p *Program, slot uint32) []bpf.PortcullisPcKey {
	t.Helper()
	m, err := p.trie(slot)
	if err != nil || m == nil {
		t.Fatalf("slot %d's trie: %v %v", slot, m, err)
	}
	defer m.Close()
	var keys []bpf.PortcullisPcKey
	var k bpf.PortcullisPcKey
	var v bpf.PortcullisPcEntry
	it := m.Iterate()
	for it.Next(&k, &v) {
		keys = append(keys, k)
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return keys
}
