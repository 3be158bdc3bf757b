package loader

import (
	"net/netip"
	"testing"

	"github.com/portcullis/portcullis/model"
	"github.com/portcullis/portcullis/overlay"
)

// Runtime /32s (portal unblocks) come and go in distinct /24s: each one gives its /24 a
// DIR-24-8 group, and taking it out again folds the group back into the /24's word and
// frees it, so more of them than PC_DIR8_GROUPS come and go without ErrTooManyGroups
// (the freed groups are reused after an RCU wait), judged as the model judges them.
func TestRuntimeGroupsComeBack(t *testing.T) {
	p := loadProgram(t)
	live := &model.Tables{DefaultVerdict: model.Pass, Governed: []uint16{25}, RuleNames: []string{"default", "r", "u"},
		Ranges: []model.Entry{{Prefix: pfx("10.0.0.0/8"), Rule: 1, Verdict: model.Drop}}}
	if err := p.Apply(live); err != nil {
		t.Fatal(err)
	}
	for i := range dirGroups + 1 {
		a := [4]byte{10, byte(i >> 8), byte(i), 7}
		e := model.TableEntry{Entry: model.Entry{Prefix: netip.PrefixFrom(netip.AddrFrom4(a), 32), Rule: 2, Verdict: model.Pass}}
		next := cloneTables(live)
		next.Add(e)
		if err := p.UpdateEntry(next, e, true); err != nil {
			t.Fatalf("unblock %d (%s), with no other runtime entry in the tables: %v", i, e.Prefix, err)
		}
		if i%4096 == 0 || i == dirGroups { // and once a freed group is reused
			for _, a := range []netip.Addr{e.Prefix.Addr(), e.Prefix.Addr().Next(), e.Prefix.Addr().Prev()} {
				compareWithModel(t, p, next, buildFrame(t, frameSpec{src: a, dst: dst4, sport: 1, dport: 25, syn: true}))
			}
		}
		if err := p.UpdateEntry(live, e, false); err != nil {
			t.Fatal(err)
		}
	}
	compareWithModel(t, p, live, buildFrame(t, frameSpec{src: addr("10.0.0.7"), dst: dst4, sport: 1, dport: 25, syn: true}))
}

// An unblock that longer policy ranges paint over everywhere is in the live tables and
// in what RuntimeInDataPlane reads back (its record in the prefixes trie): else the
// daemon's restart would count one entry fewer than the tables hold (adopt fails, the
// policy is applied again) and a store that lost it would not get it back.
func TestRuntimeInDataPlanePaintedOver(t *testing.T) {
	p := loadProgram(t)
	base := &model.Tables{DefaultVerdict: model.Pass, Governed: []uint16{25}, RuleNames: []string{"default", "dyn", "biz"},
		RuleKinds: []model.Kind{model.KindDefault, model.KindRange, model.KindRange},
		Ranges: []model.Entry{
			{Prefix: pfx("10.0.0.0/8"), Rule: 1, Verdict: model.Drop},
			{Prefix: pfx("10.1.2.0/25"), Rule: 2, Verdict: model.Pass},
			{Prefix: pfx("10.1.2.128/25"), Rule: 2, Verdict: model.Pass},
		}}
	live := overlay.Merge(base, nil)
	if err := p.Apply(live); err != nil {
		t.Fatal(err)
	}
	_, u := overlay.RuleIDs(live)
	next := overlay.Merge(base, nil)
	for _, s := range []string{"10.1.3.0/24", "10.1.2.0/24"} { // seen, then painted over
		e := model.TableEntry{Entry: model.Entry{Prefix: pfx(s), Rule: u, Verdict: model.Pass}}
		prev := next
		next = cloneTables(prev)
		next.RuleKinds = prev.RuleKinds
		next.Add(e)
		if err := p.UpdateEntry(next, e, true); err != nil {
			t.Fatal(err)
		}
	}
	held, err := p.RuntimeInDataPlane(model.KindUnblock, overlay.RuleName)
	if err != nil {
		t.Fatal(err)
	}
	if len(held) != 2 {
		t.Errorf("RuntimeInDataPlane(unblock) = %v, the live tables hold 10.1.3.0/24 and 10.1.2.0/24", held)
	}
}
