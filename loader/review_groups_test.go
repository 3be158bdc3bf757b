package loader

import (
	"net/netip"
	"testing"

	"github.com/portcullis/portcullis/model"
)

// Runtime /32s (portal unblocks) come and go in distinct /24s: each one gives its /24 a
// DIR-24-8 group, and taking it out again never gives the group back, so after
// PC_DIR8_GROUPS of them a new one is refused with ErrTooManyGroups although the live
// tables hold a single entry longer than /24. The controller never applies to pack them.
func TestReviewRuntimeGroupsLeak(t *testing.T) {
	p := loadProgram(t)
	live := &model.Tables{DefaultVerdict: model.Pass, Governed: []uint16{25}, RuleNames: []string{"default", "r", "u"},
		Ranges: []model.Entry{{Prefix: pfx("10.0.0.0/8"), Rule: 1, Verdict: model.Drop}}}
	if err := p.Apply(live); err != nil {
		t.Fatal(err)
	}
	for i := range p.dirGroups() + 1 {
		a := [4]byte{10, byte(i >> 8), byte(i), 7}
		e := model.TableEntry{Entry: model.Entry{Prefix: netip.PrefixFrom(netip.AddrFrom4(a), 32), Rule: 2, Verdict: model.Pass}}
		next := cloneTables(live)
		next.Add(e)
		if err := p.UpdateEntry(next, e, true); err != nil {
			t.Fatalf("unblock %d (%s), with no other runtime entry in the tables: %v", i, e.Prefix, err)
		}
		if err := p.UpdateEntry(live, e, false); err != nil {
			t.Fatal(err)
		}
	}
}
