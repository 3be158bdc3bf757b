package loader

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/portcullis/portcullis/model"
	"github.com/portcullis/portcullis/overlay"
	"github.com/portcullis/portcullis/verify"
)

// TestUpdateEntry: runtime entries written one map update at a time, in the live
// slot and in the scope groups they lie in, judged as the model judges the merged
// tables; then removed again.
func TestUpdateEntry(t *testing.T) {
	now := time.Now()
	c := compileScopePolicy(t, now)
	live := overlay.Merge(c.Tables, nil)
	p := applied(t, live)
	s := scratch(t, p)
	entries := []overlay.Entry{
		{Kind: overlay.Unblock, Prefix: netip.MustParsePrefix("100.64.5.5/32"), Expires: now.Add(time.Hour)},
		{Kind: overlay.Unblock, Prefix: netip.MustParsePrefix("100.64.1.150/32"), Expires: now.Add(time.Hour)}, // inside partner-dyn on whl0, whl1
		{Kind: overlay.Quarantine, Prefix: netip.MustParsePrefix("100.64.5.6/32"), Expires: now.Add(time.Hour)},
		{Kind: overlay.Quarantine, Reset: true, Prefix: netip.MustParsePrefix("2001:db8:1000:5::6/128"), Expires: now.Add(time.Hour)},
	}
	check := func(tables *model.Tables, src string, iface string, want model.Action) {
		t.Helper()
		frame := buildFrame(t, frameSpec{src: addr(src), dst: addr(map[bool]string{true: "192.0.2.25", false: "2001:db8:ffff::25"}[addr(src).Is4()]), sport: 1, dport: 25, syn: true})
		in := model.Ingress{Interface: iface}
		act, out := runAt(t, s, p, in, frame)
		if act != want {
			t.Errorf("%s on %q: %v, want %v", src, iface, act, want)
		}
		if _, diffs := verify.Compare(tables, frame, now, verify.Observed{Interface: iface, Action: act, Out: out}); len(diffs) > 0 {
			t.Errorf("%s on %q: %s", src, iface, diffs[0].Msg)
		}
	}
	check(live, "100.64.5.5", "acc0", model.ActionTX)
	check(live, "100.64.1.150", "whl0", model.ActionDrop)
	var in []overlay.Entry
	for _, e := range entries {
		in = append(in, e)
		next := overlay.Merge(c.Tables, in)
		if err := p.UpdateEntry(next, overlay.TableEntry(next, e), true); err != nil {
			t.Fatalf("add %s: %v", e.Prefix, err)
		}
		live = next
	}
	check(live, "100.64.5.5", "acc0", model.ActionPass)
	check(live, "100.64.1.150", "whl0", model.ActionPass)
	check(live, "100.64.1.150", "whl1", model.ActionPass)
	check(live, "100.64.1.150", "acc0", model.ActionPass)
	check(live, "100.64.5.6", "acc0", model.ActionDrop)
	check(live, "2001:db8:1000:5::6", "acc0", model.ActionTX)

	got, err := p.RuntimeInDataPlane(model.KindRuntimeQuarantine, overlay.RuleName)
	if err != nil || len(got) != 2 {
		t.Fatalf("runtime quarantines in the data plane: %v %v", got, err)
	}
	for _, g := range got {
		if g.Expires.Sub(now.Add(time.Hour)).Abs() > time.Second {
			t.Errorf("%s expires %v, want %v", g.Prefix, g.Expires, now.Add(time.Hour))
		}
	}
	if got, _ := p.RuntimeInDataPlane(model.KindUnblock, overlay.RuleName); len(got) != 2 {
		t.Errorf("unblocks in the data plane: %v", got)
	}

	for i := len(entries) - 1; i >= 0; i-- {
		e := entries[i]
		in = in[:i]
		next := overlay.Merge(c.Tables, in)
		if err := p.UpdateEntry(next, overlay.TableEntry(live, e), false); err != nil {
			t.Fatalf("remove %s: %v", e.Prefix, err)
		}
		live = next
	}
	check(live, "100.64.5.5", "acc0", model.ActionTX)
	check(live, "100.64.1.150", "whl0", model.ActionDrop)
	check(live, "100.64.5.6", "acc0", model.ActionTX)
	if got, _ := p.RuntimeInDataPlane(model.KindRuntimeQuarantine, overlay.RuleName); len(got) != 0 {
		t.Errorf("runtime quarantines left: %v", got)
	}
	// Tables with other rules are not an update.
	if err := p.UpdateEntry(c.Tables, overlay.TableEntry(live, entries[0]), true); !errors.Is(err, ErrNotAnUpdate) {
		t.Errorf("tables with other rules: %v, want ErrNotAnUpdate", err)
	}
}
