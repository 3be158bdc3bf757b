package loader

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/portcullis/portcullis/bpf"
	"github.com/portcullis/portcullis/internal/testutil"
	"github.com/portcullis/portcullis/model"
	"github.com/portcullis/portcullis/overlay"
)

// withHashMin sets hashMin6 for the test.
func withHashMin(t *testing.T, n int) {
	old := hashMin6
	hashMin6 = n
	t.Cleanup(func() { hashMin6 = old })
}

// v6Tables is a policy of IPv6 ranges rs (rules 1 to 8 as RandomV6Ranges names them).
func v6Tables(rs []model.Entry, def model.Verdict) *model.Tables {
	return &model.Tables{
		DefaultVerdict: def, Governed: []uint16{25},
		RuleNames: []string{"default", "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8"},
		RuleKinds: []model.Kind{model.KindDefault, model.KindRange, model.KindRange, model.KindRange, model.KindRange,
			model.KindRange, model.KindRange, model.KindRange, model.KindRange},
		Ranges: rs,
	}
}

// liveFlags is the live config's flags.
func liveFlags(t *testing.T, p *Program) uint8 {
	t.Helper()
	cm, err := p.liveConfig()
	if err != nil {
		t.Fatal(err)
	}
	defer cm.Close()
	var cfg bpf.PortcullisPcConfig
	if err := cm.Lookup(uint32(0), &cfg); err != nil {
		t.Fatal(err)
	}
	return cfg.Flags
}

// checkV6 runs a SYN to 25 from each probe address of each prefix (and of extra)
// through the program and holds it to the model.
func checkV6(t *testing.T, p *Program, tables *model.Tables, rng *rand.Rand, prefixes []netip.Prefix) {
	t.Helper()
	for _, pr := range prefixes {
		for _, a := range testutil.ProbeAddrs(pr, rng) {
			frame := buildFrame(t, frameSpec{src: a, dst: dst6, sport: 40000, dport: 25, syn: true})
			compareWithModel(t, p, tables, frame)
		}
	}
}

func prefixesOf(es []model.Entry) []netip.Prefix {
	out := make([]netip.Prefix, len(es))
	for i, e := range es {
		out[i] = e.Prefix
	}
	return out
}

// TestHash6RandomPolicies: random IPv6 policies past the threshold (nested, adjacent,
// /0 and /128, up to PC_V6_MAX_LENS distinct lengths) in ranges_v6, judged through the
// verifier-loaded program as the model judges them at the first, last, an inside and
// the neighbouring addresses of every prefix; one more length and the policy stays in
// the trie, judged the same.
func TestHash6RandomPolicies(t *testing.T) {
	withHashMin(t, 64)
	p := loadProgram(t)
	all := make([]int, 129)
	for i := range all {
		all[i] = i
	}
	for i, c := range []struct {
		lens   []int
		n      int
		hashed bool
	}{
		{[]int{0, 128}, 200, true},
		{[]int{32, 40, 48, 64, 128}, 600, true},
		{[]int{1, 7, 8, 9, 16, 31, 32, 33, 47, 48, 56, 63, 64, 65, 96, 127, 128}, 800, true},
		{[]int{0, 3, 17, 29, 30, 31, 32, 33, 34, 35, 36, 40, 44, 48, 52, 56, 60, 61, 62, 63, 64, 72, 80, 88, 96, 100, 112, 120, 124, 126, 127, 128}, 1200, true},
		{append([]int{5}, []int{0, 3, 17, 29, 30, 31, 32, 33, 34, 35, 36, 40, 44, 48, 52, 56, 60, 61, 62, 63, 64, 72, 80, 88, 96, 100, 112, 120, 124, 126, 127, 128}...), 600, false},
		{[]int{48}, 100, true},
		{[]int{64}, 40, false}, // under the threshold
	} {
		t.Run(fmt.Sprintf("%d-lens=%d", i, len(c.lens)), func(t *testing.T) {
			rs := testutil.RandomV6Ranges(uint64(i+1), c.n, c.lens)
			def := []model.Verdict{model.Pass, model.Drop}[i%2]
			tables := v6Tables(rs, def)
			if err := p.Apply(tables); err != nil {
				t.Fatal(err)
			}
			if got := liveFlags(t, p)&cfgHash6 != 0; got != c.hashed {
				t.Fatalf("%d ranges of %d lengths: hashed %v, want %v", len(rs), len(c.lens), got, c.hashed)
			}
			checkV6(t, p, tables, rand.New(rand.NewPCG(uint64(i), 1)), prefixesOf(rs))
			if err := p.Release(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestHash6Markers: the entries buildHash6 writes for a small policy, as the paper
// places them: a marker at each length the search passes through on its way to a
// range, holding the longest range of its own prefix (none, or a shorter range).
func TestHash6Markers(t *testing.T) {
	withHashMin(t, 1)
	rs := []model.Entry{
		{Prefix: pfx("2001:db8::/32"), Rule: 1, Verdict: model.Drop},
		{Prefix: pfx("2001:db8:1::/48"), Rule: 2, Verdict: model.Pass},
		{Prefix: pfx("2001:db8:1:2::/64"), Rule: 3, Verdict: model.Drop},
		{Prefix: pfx("2001:db8:2:3::5/128"), Rule: 4, Verdict: model.Pass},
		{Prefix: pfx("2001:db9:1::/48"), Rule: 5, Verdict: model.Reset},
	}
	h, ok := buildHash6(rs)
	if !ok {
		t.Fatal("not hashed")
	}
	// Lengths 32 48 64 128: the search probes 48 first (the lower middle of 4), then
	// 64 and 128 on hits, 32 on a miss.
	if h.lens.N != 4 || !slices.Equal(h.lens.Len[:4], []uint8{32, 48, 64, 128}) {
		t.Fatalf("lengths %v", h.lens.Len[:h.lens.N])
	}
	got := map[netip.Prefix]bpf.PortcullisPcV6Val{}
	for i, k := range h.keys {
		got[netip.PrefixFrom(netip.AddrFrom16(k.Addr), int(k.Len))] = h.vals[i]
	}
	want := map[netip.Prefix]bpf.PortcullisPcV6Val{
		pfx("2001:db8::/32"):       {Rule: 1, Verdict: uint8(model.Drop), Len: 32, Hit: 1},
		pfx("2001:db8:1::/48"):     {Rule: 2, Verdict: uint8(model.Pass), Len: 48, Hit: 1},
		pfx("2001:db8:1:2::/64"):   {Rule: 3, Verdict: uint8(model.Drop), Len: 64, Hit: 1},
		pfx("2001:db8:2:3::5/128"): {Rule: 4, Verdict: uint8(model.Pass), Len: 128, Hit: 1},
		pfx("2001:db9:1::/48"):     {Rule: 5, Verdict: uint8(model.Reset), Len: 48, Hit: 1},
		// Markers: the /64 under the /48 needs none (its marker at 48 is the /48
		// itself); the /128 needs one at 48 and one at 64, whose bmp is the /32.
		pfx("2001:db8:2::/48"):   {Rule: 1, Verdict: uint8(model.Drop), Len: 32, Hit: 1},
		pfx("2001:db8:2:3::/64"): {Rule: 1, Verdict: uint8(model.Drop), Len: 32, Hit: 1},
	}
	if len(got) != len(want) {
		t.Errorf("%d entries, want %d: %v", len(got), len(want), got)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %+v, want %+v", k, got[k], v)
		}
	}
	// A range under no other: its markers hold no range.
	h, _ = buildHash6(append(rs, model.Entry{Prefix: pfx("2001:dba::1/128"), Rule: 6, Verdict: model.Drop}))
	found := 0
	for i, k := range h.keys {
		if pr := netip.PrefixFrom(netip.AddrFrom16(k.Addr), int(k.Len)); pr == pfx("2001:dba::/48") || pr == pfx("2001:dba::/64") {
			found++
			if h.vals[i] != (bpf.PortcullisPcV6Val{}) {
				t.Errorf("marker %s: %+v, want no range", pr, h.vals[i])
			}
		}
	}
	if found != 2 {
		t.Errorf("%d markers for 2001:dba::1, want 2", found)
	}
}

// TestHash6Runtime: runtime unblocks over a hashed policy go into the trie, one update
// each, and are judged as the model judges the merged tables (the longer match wins;
// inside and around the policy's ranges, and outside every one); RuntimeInDataPlane
// reads them back; the flag goes with the last. An Apply of the merged tables keeps
// them in the trie too.
func TestHash6Runtime(t *testing.T) {
	withHashMin(t, 64)
	rs := testutil.RandomV6Ranges(42, 500, []int{0, 16, 32, 40, 48, 56, 64, 96, 112, 128})
	base := v6Tables(rs, model.Pass)
	live := overlay.Merge(base, nil)
	p := applied(t, live)
	if liveFlags(t, p)&(cfgHash6|cfgRuntime6) != cfgHash6 {
		t.Fatalf("flags %#x", liveFlags(t, p))
	}
	rng := rand.New(rand.NewPCG(7, 7))
	var entries []overlay.Entry
	seen := map[netip.Prefix]bool{}
	for _, e := range rs {
		seen[e.Prefix] = true
	}
	for _, e := range rs[:40] {
		for _, l := range []int{e.Prefix.Bits() + 8, e.Prefix.Bits() - 4, 128} {
			if l < 0 || l > 128 {
				continue
			}
			pr := netip.PrefixFrom(testutil.ProbeAddrs(e.Prefix, rng)[2], l).Masked()
			if !seen[pr] {
				seen[pr] = true
				entries = append(entries, overlay.Entry{Kind: overlay.Unblock, Prefix: pr, Expires: time.Now().Add(time.Hour)})
			}
		}
	}
	entries = append(entries, overlay.Entry{Kind: overlay.Unblock, Prefix: pfx("3fff:1::/64"), Expires: time.Now().Add(time.Hour)})
	var in []overlay.Entry
	for _, e := range entries {
		in = append(in, e)
		next := overlay.Merge(base, in)
		if err := p.UpdateEntry(next, overlay.TableEntry(next, e), true); err != nil {
			t.Fatalf("add %s: %v", e.Prefix, err)
		}
		live = next
	}
	if liveFlags(t, p)&cfgRuntime6 == 0 {
		t.Fatal("runtime flag not set")
	}
	probe := append(prefixesOf(rs[:80]), func() []netip.Prefix {
		var ps []netip.Prefix
		for _, e := range entries {
			ps = append(ps, e.Prefix)
		}
		return ps
	}()...)
	checkV6(t, p, live, rng, probe)
	got, err := p.RuntimeInDataPlane(model.KindUnblock, overlay.RuleName)
	if err != nil || len(got) != len(entries) {
		t.Fatalf("RuntimeInDataPlane: %d entries, %v; want %d", len(got), err, len(entries))
	}

	// The merged tables applied whole: the unblocks stay in the trie.
	if err := p.Apply(live); err != nil {
		t.Fatal(err)
	}
	if liveFlags(t, p)&(cfgHash6|cfgRuntime6) != cfgHash6|cfgRuntime6 {
		t.Fatalf("flags after Apply %#x", liveFlags(t, p))
	}
	checkV6(t, p, live, rng, probe)
	if got, err := p.RuntimeInDataPlane(model.KindUnblock, overlay.RuleName); err != nil || len(got) != len(entries) {
		t.Fatalf("RuntimeInDataPlane after Apply: %d entries, %v; want %d", len(got), err, len(entries))
	}

	// Removed one by one; the flag goes with the last.
	for i := len(in) - 1; i >= 0; i-- {
		e := in[i]
		next := overlay.Merge(base, in[:i])
		if err := p.UpdateEntry(next, overlay.TableEntry(live, e), false); err != nil {
			t.Fatalf("remove %s: %v", e.Prefix, err)
		}
		live = next
		if i == len(in)/2 {
			checkV6(t, p, live, rng, probe)
		}
	}
	if liveFlags(t, p)&(cfgHash6|cfgRuntime6) != cfgHash6 {
		t.Fatalf("flags after removals %#x", liveFlags(t, p))
	}
	checkV6(t, p, live, rng, probe)
	if got, err := p.RuntimeInDataPlane(model.KindUnblock, overlay.RuleName); err != nil || len(got) != 0 {
		t.Fatalf("RuntimeInDataPlane after removals: %v, %v", got, err)
	}
}

// TestHash6Swap: swaps between a policy in ranges_v6 and one in the trie, both ways,
// with and without Release between (the hash filled in place, or replaced), and a
// Rollback each way: every policy judged as the model judges it.
func TestHash6Swap(t *testing.T) {
	withHashMin(t, 64)
	p := loadProgram(t)
	hashA := v6Tables(testutil.RandomV6Ranges(1, 400, []int{0, 24, 32, 48, 64, 128}), model.Drop)
	hashB := v6Tables(testutil.RandomV6Ranges(2, 1500, []int{20, 32, 44, 48, 60, 64, 100, 128}), model.Pass)
	trieC := v6Tables(testutil.RandomV6Ranges(3, 40, []int{32, 48, 64, 128}), model.Pass)
	rng := rand.New(rand.NewPCG(3, 3))
	check := func(tables *model.Tables, hashed bool) {
		t.Helper()
		if got := liveFlags(t, p)&cfgHash6 != 0; got != hashed {
			t.Fatalf("hashed %v, want %v", got, hashed)
		}
		// Every policy's prefixes: the others' addresses must miss as this one says.
		var ps []netip.Prefix
		for _, o := range []*model.Tables{hashA, hashB, trieC} {
			ps = append(ps, prefixesOf(o.Ranges[:min(len(o.Ranges), 120)])...)
		}
		checkV6(t, p, tables, rng, ps)
	}
	for _, step := range []struct {
		tables  *model.Tables
		hashed  bool
		release bool
	}{
		{trieC, false, true},
		{hashA, true, true},
		{trieC, false, false},
		{hashB, true, true}, // into the slot hashA left unreleased: a fresh hash
		{hashA, true, true}, // into the slot Release emptied: filled in place
		{trieC, false, true},
		{hashB, true, false},
	} {
		if err := p.Apply(step.tables); err != nil {
			t.Fatal(err)
		}
		check(step.tables, step.hashed)
		if step.release {
			if err := p.Release(); err != nil {
				t.Fatal(err)
			}
			check(step.tables, step.hashed)
		}
	}
	// hashB live, trieC in the other slot: roll back to the trie, forward to a hash.
	if err := p.Rollback(); err != nil {
		t.Fatal(err)
	}
	check(trieC, false)
	if err := p.Apply(hashA); err != nil {
		t.Fatal(err)
	}
	check(hashA, true)
	if err := p.Rollback(); err != nil {
		t.Fatal(err)
	}
	check(trieC, false)
}

// TestHash6Pins: a daemon starting on pins of a version without ranges_v6 and lens_v6
// (their pins absent) creates them and goes on with the trie policy in force, then
// hashes the next one; a daemon starting on pins whose live policy is hashed adopts it
// and adds runtime unblocks over it (which runtime ranges the trie held is then not
// known, so the flag stays once set).
func TestHash6Pins(t *testing.T) {
	withHashMin(t, 64)
	dir := filepath.Join(mountBPF(t), "portcullis")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	defer Unpin(dir)
	rng := rand.New(rand.NewPCG(9, 9))
	small := v6Tables(testutil.RandomV6Ranges(5, 40, []int{32, 48, 128}), model.Pass)
	big := v6Tables(testutil.RandomV6Ranges(6, 600, []int{0, 32, 40, 48, 64, 128}), model.Drop)
	p1, err := LoadPinned(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := p1.Apply(small); err != nil {
		t.Fatal(err)
	}
	p1.Close()
	for _, name := range []string{bpf.PortcullisMapRangesV6, bpf.PortcullisMapLensV6} {
		if err := os.Remove(filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}

	p2, err := LoadPinned(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{bpf.PortcullisMapRangesV6, bpf.PortcullisMapLensV6} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Fatalf("%s not pinned: %v", name, err)
		}
	}
	checkV6(t, p2, small, rng, prefixesOf(small.Ranges))
	if err := p2.Apply(big); err != nil {
		t.Fatal(err)
	}
	if liveFlags(t, p2)&cfgHash6 == 0 {
		t.Fatal("not hashed")
	}
	checkV6(t, p2, big, rng, prefixesOf(big.Ranges[:200]))
	p2.Close()

	p, err := LoadPinned(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	live := overlay.Merge(big, nil)
	checkV6(t, p, live, rng, prefixesOf(big.Ranges[:200]))
	if err := p.AdoptTables(live); err != nil {
		t.Fatal(err)
	}
	e := overlay.Entry{Kind: overlay.Unblock, Prefix: netip.PrefixFrom(testutil.ProbeAddrs(big.Ranges[7].Prefix, rng)[2], 128), Expires: time.Now().Add(time.Hour)}
	next := overlay.Merge(big, []overlay.Entry{e})
	if err := p.UpdateEntry(next, overlay.TableEntry(next, e), true); err != nil {
		t.Fatal(err)
	}
	if liveFlags(t, p)&cfgRuntime6 == 0 {
		t.Fatal("runtime flag not set")
	}
	checkV6(t, p, next, rng, []netip.Prefix{e.Prefix, big.Ranges[7].Prefix})
	if err := p.UpdateEntry(live, overlay.TableEntry(next, e), false); err != nil {
		t.Fatal(err)
	}
	checkV6(t, p, live, rng, []netip.Prefix{e.Prefix, big.Ranges[7].Prefix})
	if err := p.Apply(small); err != nil {
		t.Fatal(err)
	}
	if err := p.Release(); err != nil {
		t.Fatal(err)
	}
	checkV6(t, p, small, rng, prefixesOf(small.Ranges))
}
