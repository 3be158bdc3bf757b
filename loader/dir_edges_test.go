package loader

import (
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/portcullis/portcullis/model"
	"github.com/portcullis/portcullis/overlay"
	"github.com/portcullis/portcullis/verify"
)

// probeBoth judges a from IPv4 and as an IPv4-mapped IPv6 source.
func probeBoth(t *testing.T, p *Program, tables *model.Tables, addrs []netip.Addr) {
	t.Helper()
	for _, a := range addrs {
		if !a.IsValid() || !a.Is4() {
			continue
		}
		compareWithModel(t, p, tables, buildFrame(t, frameSpec{src: a, dst: dst4, sport: 1, dport: 25, syn: true}))
		m := netip.AddrFrom16(a.As16())
		compareWithModel(t, p, tables, buildFrame(t, frameSpec{src: m, dst: dst6, sport: 1, dport: 25, syn: true}))
	}
}

func cloneTables(t *model.Tables) *model.Tables {
	return &model.Tables{DefaultVerdict: t.DefaultVerdict, Governed: t.Governed, RuleNames: t.RuleNames,
		Relays: t.Relays, Ranges: slices.Clone(t.Ranges), Quarantines: slices.Clone(t.Quarantines)}
}

func step(t *testing.T, p *Program, live *model.Tables, e model.TableEntry, add bool) *model.Tables {
	t.Helper()
	next := cloneTables(live)
	if add {
		next.Add(e)
	} else {
		drop := func(x model.Entry) bool { return x.Prefix == e.Prefix }
		if e.Quarantine {
			next.Quarantines = slices.DeleteFunc(next.Quarantines, drop)
		} else {
			next.Ranges = slices.DeleteFunc(next.Ranges, drop)
		}
	}
	if err := p.UpdateEntry(next, e, add); err != nil {
		t.Fatalf("update %s add %v: %v", e.Prefix, add, err)
	}
	return next
}

// Boundary prefixes (/0, /1, /23, /24, /25, /31, /32) in the policy and as runtime
// entries added and removed, judged from IPv4 and IPv4-mapped sources.
func TestDIRBoundaryRuntime(t *testing.T) {
	p := loadProgram(t)
	live := &model.Tables{DefaultVerdict: model.Pass, Governed: []uint16{25},
		RuleNames: []string{"default", "a", "b", "q", "u"},
		Ranges: []model.Entry{
			{Prefix: pfx("0.0.0.0/0"), Rule: 1, Verdict: model.Drop},
			{Prefix: pfx("10.0.0.0/23"), Rule: 2, Verdict: model.Monitor},
			{Prefix: pfx("10.0.1.128/25"), Rule: 1, Verdict: model.Reset},
			{Prefix: pfx("10.0.1.255/32"), Rule: 2, Verdict: model.Pass},
		},
		Quarantines: []model.Entry{{Prefix: pfx("10.0.2.0/24"), Rule: 3, Verdict: model.Drop}},
	}
	if err := p.Apply(live); err != nil {
		t.Fatal(err)
	}
	pr := []netip.Prefix{pfx("0.0.0.0/1"), pfx("10.0.0.0/23"), pfx("10.0.1.128/25"), pfx("10.0.1.254/31"), pfx("10.0.2.0/24"), pfx("255.255.255.255/32"), pfx("0.0.0.0/32")}
	rng := rand.New(rand.NewPCG(1, 2))
	probeBoth(t, p, live, probes(rng, pr))
	seq := []struct {
		e   model.TableEntry
		add bool
	}{
		{model.TableEntry{Entry: model.Entry{Prefix: pfx("10.0.1.0/24"), Rule: 4, Verdict: model.Pass}}, true},
		{model.TableEntry{Entry: model.Entry{Prefix: pfx("0.0.0.0/1"), Rule: 4, Verdict: model.Pass}}, true},
		{model.TableEntry{Entry: model.Entry{Prefix: pfx("10.0.1.254/31"), Rule: 4, Verdict: model.Drop}}, true},
		{model.TableEntry{Entry: model.Entry{Prefix: pfx("255.255.255.255/32"), Rule: 4, Verdict: model.Monitor}}, true},
		{model.TableEntry{Entry: model.Entry{Prefix: pfx("10.0.2.7/32"), Rule: 3, Verdict: model.Reset}, Quarantine: true}, true},
		{model.TableEntry{Entry: model.Entry{Prefix: pfx("10.0.1.0/24"), Rule: 4, Verdict: model.Pass}}, false},
		{model.TableEntry{Entry: model.Entry{Prefix: pfx("0.0.0.0/1"), Rule: 4, Verdict: model.Pass}}, false},
		{model.TableEntry{Entry: model.Entry{Prefix: pfx("10.0.1.254/31"), Rule: 4, Verdict: model.Drop}}, false},
		{model.TableEntry{Entry: model.Entry{Prefix: pfx("255.255.255.255/32"), Rule: 4, Verdict: model.Monitor}}, false},
	}
	for i, s := range seq {
		live = step(t, p, live, s.e, s.add)
		t.Logf("step %d: %v %s", i, s.add, s.e.Prefix)
		probeBoth(t, p, live, probes(rng, append(pr, s.e.Prefix)))
	}
}

// A daemon restart from pins: the new process adopts the live policy (dir touched and
// groups not known, slot keys not known), then runtime entries (a new group),
// RuntimeInDataPlane, an Apply, Rollback and Release.
func TestDIRAdoptedFromPins(t *testing.T) {
	dir := filepath.Join(mountBPF(t), "portcullis")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	a := randomV4Tables(rng, 200)
	b := randomV4Tables(rng, 200)
	b.RuleNames = append(slices.Clone(b.RuleNames), "u")
	p1, err := LoadPinned(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := p1.Apply(a); err != nil {
		t.Fatal(err)
	}
	if err := p1.Apply(b); err != nil {
		t.Fatal(err)
	}
	live := step(t, p1, b, model.TableEntry{Entry: model.Entry{Prefix: pfx("100.64.7.9/32"), Rule: 5, Verdict: model.Pass}}, true)
	p1.Close()

	p, err := LoadPinned(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer Unpin(dir)
	defer p.Close()
	var pr []netip.Prefix
	for _, e := range slices.Concat(live.Ranges, live.Quarantines) {
		pr = append(pr, e.Prefix)
	}
	probeBoth(t, p, live, probes(rng, pr))
	if err := p.AdoptTables(live); err != nil {
		t.Fatal(err)
	}
	held, err := p.RuntimeInDataPlane("", "")
	_ = held
	if err != nil {
		t.Fatal(err)
	}
	// A /32 in a /24 that has no group yet (the first /24 outside the policy's space).
	for _, s := range []string{"100.68.1.1/32", "100.68.2.1/32", "100.64.7.0/24"} {
		e := model.TableEntry{Entry: model.Entry{Prefix: pfx(s), Rule: 5, Verdict: model.Pass}}
		live = step(t, p, live, e, true)
		probeBoth(t, p, live, probes(rng, append(pr, e.Prefix)))
	}
	probeBoth(t, p, live, probes(rng, pr))
	c := randomV4Tables(rng, 100)
	if err := p.Apply(c); err != nil {
		t.Fatal(err)
	}
	probeBoth(t, p, c, probes(rng, pr))
	if err := p.Rollback(); err != nil {
		t.Fatal(err)
	}
	probeBoth(t, p, live, probes(rng, pr))
	if err := p.Release(); err != nil {
		t.Fatal(err)
	}
	probeBoth(t, p, live, probes(rng, pr))
	if err := p.Apply(c); err != nil {
		t.Fatal(err)
	}
	probeBoth(t, p, c, probes(rng, pr))
	_ = time.Now
}

// Relays that block quarantined sources, with IPv4 quarantines the DIR-24-8 marks
// (from the policy and added at runtime), expired ones and mapped sources.
func TestDIRRelayQuarantined(t *testing.T) {
	p := loadProgram(t)
	now := time.Now()
	live := &model.Tables{DefaultVerdict: model.Drop, Governed: []uint16{25},
		RuleNames: []string{"default", "relay", "q", "r"},
		Relays:    []model.RelayEntry{{Prefix: pfx("192.0.2.0/24"), Rule: 1, BlockQuarantined: true}},
		Ranges:    []model.Entry{{Prefix: pfx("10.0.0.0/8"), Rule: 3, Verdict: model.Pass}, {Prefix: pfx("10.1.1.1/32"), Rule: 3, Verdict: model.Drop}},
		Quarantines: []model.Entry{
			{Prefix: pfx("10.1.1.0/24"), Rule: 2, Verdict: model.Reset, Expires: now.Add(time.Hour)},
			{Prefix: pfx("10.1.2.0/23"), Rule: 2, Verdict: model.Drop, Expires: now.Add(-time.Hour)},
		},
	}
	if err := p.Apply(live); err != nil {
		t.Fatal(err)
	}
	pr := []netip.Prefix{pfx("10.1.1.0/24"), pfx("10.1.2.0/23"), pfx("10.1.1.1/32"), pfx("10.9.9.0/28")}
	rng := rand.New(rand.NewPCG(7, 8))
	probeBoth(t, p, live, probes(rng, pr))
	live = step(t, p, live, model.TableEntry{Entry: model.Entry{Prefix: pfx("10.9.9.0/28"), Rule: 2, Verdict: model.Drop, Expires: now.Add(time.Hour)}, Quarantine: true}, true)
	probeBoth(t, p, live, probes(rng, pr))
	live = step(t, p, live, model.TableEntry{Entry: model.Entry{Prefix: pfx("10.9.9.0/28"), Rule: 2, Verdict: model.Drop, Expires: now.Add(time.Hour)}, Quarantine: true}, false)
	probeBoth(t, p, live, probes(rng, pr))
}

// Close gives the DIR-24-8 arrays (192 MiB of kernel memory) back: the mapping that
// Apply made of them must not keep them alive after the program is closed.
func TestCloseFreesDIR(t *testing.T) {
	p := loadProgram(t)
	if err := p.Apply(testTables(time.Now())); err != nil {
		t.Fatal(err)
	}
	info, err := p.objs.DirV4.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, _ := info.ID()
	p.Close()
	deadline := time.Now().Add(2 * time.Second)
	for {
		m, err := ebpf.NewMapFromID(id)
		if err != nil {
			break // freed
		}
		m.Close()
		if time.Now().After(deadline) {
			t.Fatalf("dir_v4 (map id %d) is still alive 2 s after Program.Close: its mmap (Map.Memory) is only unmapped when the GC runs its cleanup", id)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Runtime entries inside scoped ranges (the scope groups' tables and the DIR-24-8 both
// written), judged on every interface against the model, then taken out again.
func TestDIRScopedRuntime(t *testing.T) {
	now := time.Now()
	c := compileScopePolicy(t, now)
	live := overlay.Merge(c.Tables, nil)
	p := applied(t, live)
	s := scratch(t, p)
	q, u := overlay.RuleIDs(live)
	check := func(tables *model.Tables, addrs ...string) {
		t.Helper()
		for _, a := range addrs {
			for _, iface := range append([]string{""}, scopeIfaces...) {
				for _, dst := range []string{"192.0.2.25", "192.0.2.130"} {
					frame := buildFrame(t, frameSpec{src: addr(a), dst: addr(dst), sport: 40000, dport: 2525, syn: true, seq: 7})
					in := model.Ingress{Interface: iface}
					act, out := runAt(t, s, p, in, frame)
					_, diffs := verify.Compare(tables, frame, now, verify.Observed{Interface: iface, Action: act, Out: out})
					for _, d := range diffs {
						t.Errorf("%s@%s -> %s: %s", a, iface, dst, d.Msg)
					}
				}
			}
		}
	}
	probe := []string{"100.64.1.1", "100.64.1.10", "100.64.1.11", "100.64.1.130", "100.64.1.131", "100.64.1.200", "100.64.1.77", "100.64.2.66", "100.64.3.3", "100.64.1.255"}
	check(live, probe...)
	entries := []model.TableEntry{
		{Entry: model.Entry{Prefix: pfx("100.64.1.10/31"), Rule: u, Verdict: model.Pass}},
		{Entry: model.Entry{Prefix: pfx("100.64.1.128/26"), Rule: u, Verdict: model.Pass}},
		{Entry: model.Entry{Prefix: pfx("100.64.3.0/24"), Rule: q, Verdict: model.Drop, Expires: now.Add(time.Hour)}, Quarantine: true},
		{Entry: model.Entry{Prefix: pfx("100.64.1.130/32"), Rule: q, Verdict: model.Reset, Expires: now.Add(time.Hour)}, Quarantine: true},
	}
	for _, e := range entries {
		live = step(t, p, live, e, true)
		check(live, probe...)
	}
	for _, e := range entries {
		live = step(t, p, live, e, false)
		check(live, probe...)
	}
}

// A runtime quarantine's /24 marks (IPv4) and the config's IPv6 quarantine flag go
// when the last quarantine that needs them goes, and stay while another one (of the
// policy, or another runtime entry) overlaps; the verdicts match the model at every
// step.
func TestQuarantineMarksCleared(t *testing.T) {
	p := loadProgram(t)
	now := time.Now()
	live := &model.Tables{DefaultVerdict: model.Pass, Governed: []uint16{25},
		RuleNames:   []string{"default", "q", "r"},
		Ranges:      []model.Entry{{Prefix: pfx("10.0.0.0/8"), Rule: 2, Verdict: model.Pass}},
		Quarantines: []model.Entry{{Prefix: pfx("10.1.0.0/16"), Rule: 1, Verdict: model.Drop}},
	}
	if err := p.Apply(live); err != nil {
		t.Fatal(err)
	}
	marked := func(a string) bool {
		t.Helper()
		b := addr(a).As4()
		w, err := p.dirRead(p.slot, uint32(b[0])<<16|uint32(b[1])<<8|uint32(b[2]), 1)
		if err != nil {
			t.Fatal(err)
		}
		return w[0]&dirQuarantine != 0
	}
	want := func(marks map[string]bool, q6 bool) {
		t.Helper()
		for a, m := range marks {
			if got := marked(a); got != m {
				t.Errorf("%s: marked %v, want %v", a, got, m)
			}
		}
		if got := readConfig(t, p).Flags&cfgQuarantine6 != 0; got != q6 {
			t.Errorf("IPv6 quarantine flag %v, want %v", got, q6)
		}
		pr := []netip.Prefix{pfx("10.1.5.0/24"), pfx("10.2.0.0/22"), pfx("10.2.3.0/24"), pfx("10.3.0.0/24")}
		probeBoth(t, p, live, probes(rand.New(rand.NewPCG(1, 2)), pr))
		for _, a := range []string{"2001:db8::1", "2001:db8:1::1"} {
			compareWithModel(t, p, live, buildFrame(t, frameSpec{src: addr(a), dst: dst6, sport: 1, dport: 25, syn: true}))
		}
	}
	q := func(prefix string) model.TableEntry {
		return model.TableEntry{Entry: model.Entry{Prefix: pfx(prefix), Rule: 1, Verdict: model.Drop, Expires: now.Add(time.Hour)}, Quarantine: true}
	}
	want(map[string]bool{"10.1.5.0": true, "10.2.3.0": false, "10.3.0.0": false}, false)
	live = step(t, p, live, q("10.2.3.0/24"), true)
	live = step(t, p, live, q("10.2.0.0/22"), true)
	live = step(t, p, live, q("10.1.5.0/24"), true)
	live = step(t, p, live, q("2001:db8::/48"), true)
	want(map[string]bool{"10.1.5.0": true, "10.2.0.0": true, "10.2.3.0": true}, true)
	live = step(t, p, live, q("10.2.3.0/24"), false) // 10.2.0.0/22 still covers it
	live = step(t, p, live, q("10.1.5.0/24"), false) // the policy's /16 still covers it
	want(map[string]bool{"10.1.5.0": true, "10.2.0.0": true, "10.2.3.0": true}, true)
	live = step(t, p, live, q("10.2.0.0/22"), false)
	live = step(t, p, live, q("2001:db8::/48"), false)
	want(map[string]bool{"10.1.5.0": true, "10.1.255.0": true, "10.2.0.0": false, "10.2.3.0": false}, false)

	// A policy IPv6 quarantine keeps the flag when a runtime one goes.
	live.Quarantines = append(live.Quarantines, model.Entry{Prefix: pfx("2001:db8:1::/48"), Rule: 1, Verdict: model.Drop})
	if err := p.Apply(live); err != nil {
		t.Fatal(err)
	}
	live = step(t, p, live, q("2001:db8::/48"), true)
	live = step(t, p, live, q("2001:db8::/48"), false)
	want(map[string]bool{"10.1.5.0": true, "10.2.3.0": false}, true)
}
