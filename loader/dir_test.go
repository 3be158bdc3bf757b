package loader

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/portcullis/portcullis/internal/testutil"
	"github.com/portcullis/portcullis/model"
)

// randomV4Tables is a policy of about n nested IPv4 ranges of every length from /8 to
// /32 around 100.64.0.0/14 (so that /24s get groups, ranges nest inside groups and
// across /24 boundaries), with mixed verdicts, plus a few quarantines.
func randomV4Tables(rng *rand.Rand, n int) *model.Tables {
	t := &model.Tables{DefaultVerdict: model.Reset, Governed: []uint16{25},
		RuleNames: []string{"default", "a", "b", "c", "q"}}
	seen := map[netip.Prefix]bool{}
	lens := []int{8, 12, 14, 16, 18, 20, 22, 23, 24, 24, 25, 26, 27, 28, 29, 30, 31, 32, 32, 32}
	for len(t.Ranges) < n {
		p := randomPrefix(rng, lens[rng.IntN(len(lens))])
		if seen[p] {
			continue
		}
		seen[p] = true
		t.Ranges = append(t.Ranges, model.Entry{Prefix: p, Rule: 1 + uint32(rng.IntN(3)), Verdict: []model.Verdict{model.Drop, model.Pass, model.Monitor}[rng.IntN(3)]})
	}
	for range 4 {
		t.Quarantines = append(t.Quarantines, model.Entry{Prefix: randomPrefix(rng, []int{20, 24, 30, 32}[rng.IntN(4)]), Rule: 4, Verdict: model.Drop})
	}
	return t
}

func randomPrefix(rng *rand.Rand, bits int) netip.Prefix {
	a := uint32(100)<<24 | 64<<16 | rng.Uint32()&(1<<18-1)
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)}), bits).Masked()
}

// probes are the addresses that tell a wrong paint: each prefix's first and last
// address and their neighbours outside, and some random ones.
func probes(rng *rand.Rand, prefixes []netip.Prefix) []netip.Addr {
	var out []netip.Addr
	for _, p := range prefixes {
		first := p.Addr()
		a := first.As4()
		last := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3]) | (1<<(32-p.Bits()) - 1)
		lastA := netip.AddrFrom4([4]byte{byte(last >> 24), byte(last >> 16), byte(last >> 8), byte(last)})
		out = append(out, first, first.Prev(), lastA, lastA.Next())
	}
	for range 64 {
		out = append(out, randomPrefix(rng, 32).Addr())
	}
	return out
}

// TestDIRAgainstModel: random nested IPv4 policies, then runtime ranges and quarantines
// added and removed one at a time (repainting /24s, making groups, painting inside
// them), judged by the program exactly as the model judges the same tables, at the
// addresses where a wrong paint would show.
func TestDIRAgainstModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(12, 34))
	p := loadProgram(t)
	check := func(tables *model.Tables, addrs []netip.Addr) {
		t.Helper()
		for _, a := range addrs {
			if !a.Is4() {
				continue
			}
			compareWithModel(t, p, tables, buildFrame(t, frameSpec{src: a, dst: dst4, sport: 1, dport: 25, syn: true}))
		}
	}
	for round := range 3 {
		live := randomV4Tables(rng, 150+100*round)
		if err := p.Apply(live); err != nil {
			t.Fatal(err)
		}
		var prefixes []netip.Prefix
		for _, e := range slices.Concat(live.Ranges, live.Quarantines) {
			prefixes = append(prefixes, e.Prefix)
		}
		check(live, probes(rng, prefixes))

		var added []model.TableEntry
		for i := range 60 {
			var e model.TableEntry
			add := len(added) == 0 || rng.IntN(3) > 0
			if add {
				p := randomPrefix(rng, []int{16, 22, 24, 25, 28, 30, 32}[rng.IntN(7)])
				e = model.TableEntry{Entry: model.Entry{Prefix: p, Rule: 1 + uint32(rng.IntN(3)), Verdict: []model.Verdict{model.Drop, model.Pass}[rng.IntN(2)]}, Quarantine: i%5 == 0}
				if e.Quarantine {
					e.Rule, e.Verdict = 4, model.Drop
				}
				if slices.ContainsFunc(slices.Concat(live.Ranges, live.Quarantines), func(x model.Entry) bool { return x.Prefix == p }) {
					continue
				}
				added = append(added, e)
			} else {
				j := rng.IntN(len(added))
				e = added[j]
				added = slices.Delete(added, j, j+1)
			}
			t.Logf("round %d step %d: add %v %s quarantine %v rule %d %v", round, i, add, e.Prefix, e.Quarantine, e.Rule, e.Verdict)
			live = step(t, p, live, e, add)
			around := []netip.Prefix{e.Prefix}
			for _, x := range live.Ranges {
				if x.Prefix.Overlaps(e.Prefix) {
					around = append(around, x.Prefix)
				}
			}
			check(live, probes(rng, around))
		}
		// What the data plane holds for each rule is what the tables hold, as prefixes
		// that decide somewhere.
		for rule := uint32(1); rule <= 3; rule++ {
			held, err := p.dirRuntime(p.slot, p.live[rule])
			if err != nil {
				t.Fatal(err)
			}
			for _, h := range held {
				if !slices.ContainsFunc(live.Ranges, func(x model.Entry) bool { return x.Prefix == h.Prefix && x.Rule == rule }) {
					t.Errorf("round %d: the data plane holds %s for rule %d, the tables do not", round, h.Prefix, rule)
				}
			}
		}
	}
}

// TestDIRGroupsRunOut: a policy with longer ranges in more /24s than the table has
// groups for is refused, and the policy in force stays.
func TestDIRGroupsRunOut(t *testing.T) {
	p := loadProgram(t)
	good := &model.Tables{DefaultVerdict: model.Pass, Governed: []uint16{25}, RuleNames: []string{"default", "r"},
		Ranges: []model.Entry{{Prefix: netip.MustParsePrefix("100.64.0.0/10"), Rule: 1, Verdict: model.Drop}}}
	for range 2 { // both slots: the idle one holds good too, for Rollback
		if err := p.Apply(good); err != nil {
			t.Fatal(err)
		}
	}
	bad := &model.Tables{DefaultVerdict: model.Pass, Governed: []uint16{25}, RuleNames: []string{"default", "r"}}
	for i := range dirGroups + 1 {
		a := uint32(100)<<24 + 64<<16 + uint32(i)<<8 + 7
		bad.Ranges = append(bad.Ranges, model.Entry{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)}), 32), Rule: 1, Verdict: model.Pass})
	}
	if err := p.Apply(bad); !errors.Is(err, ErrTooManyGroups) {
		t.Fatalf("apply with %d grouped /24s: %v, want ErrTooManyGroups", dirGroups+1, err)
	}
	compareWithModel(t, p, good, buildFrame(t, frameSpec{src: addr("100.64.0.7"), dst: dst4, sport: 1, dport: 25, syn: true}))
	// The failed Apply had begun on the idle slot: there is nothing to roll back to.
	if err := p.Rollback(); !errors.Is(err, ErrNoRollback) {
		t.Errorf("Rollback after a failed Apply: %v, want ErrNoRollback", err)
	}
}

// Pins from a Portcullis that kept the IPv4 ranges in a trie (ranges_v4) are refused
// with what to do, rather than adopted: this program would judge IPv4 by the default.
func TestPinsFromBeforeDIRRefused(t *testing.T) {
	testutil.RequireRoot(t)
	dir := filepath.Join(mountBPF(t), "portcullis")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	old, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if err := old.Pin(filepath.Join(dir, "ranges_v4")); err != nil {
		t.Fatal(err)
	}
	p, err := LoadPinned(dir)
	if !errors.Is(err, ErrIncompatiblePins) || !strings.Contains(err.Error(), "portcullis detach") {
		if p != nil {
			p.Close()
		}
		t.Fatalf("LoadPinned over pins with ranges_v4: %v, want ErrIncompatiblePins naming `portcullis detach`", err)
	}
	if err := Unpin(dir); err != nil {
		t.Fatal(err)
	}
}

// dirRuntime returns the IPv4 ranges of slot that count for stable rule id as the
// DIR-24-8 table paints them: each prefix that decides some address (a range that
// longer ones paint over everywhere is not seen).
func (p *Program) dirRuntime(slot, id uint32) ([]model.Entry, error) {
	all, err := p.dirRead(slot, 0, dirSlot)
	if err != nil {
		return nil, err
	}
	seen := map[netip.Prefix]bool{}
	var out []model.Entry
	found := func(a uint32, v uint32) {
		if v&dirHit == 0 || v&dirRule != id {
			return
		}
		pfx := netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)}), entryLen(v)).Masked()
		if !seen[pfx] {
			seen[pfx] = true
			out = append(out, model.Entry{Prefix: pfx, Rule: id, Verdict: model.Verdict(v >> dirVerdict & 3)})
		}
	}
	for i, c := range all {
		if c&dirGroup == 0 {
			found(uint32(i)<<8, c)
			continue
		}
		entries, err := p.groupRead(slot, c&dirGroupMask)
		if err != nil {
			return nil, err
		}
		for j, v := range entries {
			found(uint32(i)<<8|uint32(j), v)
		}
	}
	return out, nil
}
