package loader

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/cilium/ebpf"

	"github.com/portcullis/portcullis/bpf"
	"github.com/portcullis/portcullis/model"
)

// runtimeHeadroom is how many entries beyond its policy's each prefix table takes, for
// runtime entries added with UpdateEntry. The tables are NO_PREALLOC LPM tries: the
// bound costs no memory until used.
const runtimeHeadroom = 1 << 16

// UpdateEntry makes next the live tables, where next differs from them only by e
// (added when add, removed otherwise), in the live slot: for an IPv4 range, the
// aligned word writes that repaint the /24s it decides in the DIR-24-8 table (one for
// a /24 or longer) or one hash update for a range longer than /24 (and its /24's
// word); otherwise one update of its family's quarantine or ranges trie (an IPv4
// quarantine also marks the /24s it overlaps); and one in each scope group's trie it
// lies in. None is a map-in-map update, so there is no RCU wait, and a packet sees the
// tables with e or without it. next must have the live tables' rules.
func (p *Program) UpdateEntry(next *model.Tables, e model.TableEntry, add bool) error {
	if !p.hasPolicy || p.tables == nil {
		return ErrNoPolicy
	}
	if !slices.Equal(next.RuleNames, p.tables.RuleNames) {
		return fmt.Errorf("%w: the new tables name other rules than the live ones; apply them instead", ErrNotAnUpdate)
	}
	if int(e.Rule) >= len(p.live) {
		return fmt.Errorf("%w: entry %s names rule %d of %d", ErrNotAnUpdate, e.Prefix, e.Rule, len(p.live))
	}
	id := p.live[e.Rule]
	v4 := e.Prefix.Addr().Is4()
	val := bpf.PortcullisPcRule{Rule: id, Verdict: uint8(e.Verdict)}
	if !e.Expires.IsZero() {
		boot, err := bootNow()
		if err != nil {
			return err
		}
		val.Expires = bootTime(e.Expires, boot, timeNow())
	}
	switch {
	case v4 && !e.Quarantine:
		// The DIR-24-8 table: a few aligned word writes in the live slot.
		de := e.Entry
		de.Rule = id
		if err := p.updateDirRange(p.slot, de, add, next.Ranges, p.live); err != nil {
			return err
		}
	default:
		outer := p.objs.RangesV6
		switch {
		case e.Quarantine && v4:
			outer = p.objs.QuarantineV4
		case e.Quarantine:
			outer = p.objs.QuarantineV6
		}
		var inner *ebpf.Map
		if err := outer.Lookup(p.slot, &inner); err != nil {
			return fmt.Errorf("reading the live %s table: %w", outer, err)
		}
		var key any
		if v4 {
			key = bpf.PortcullisPcLpmV4{Prefixlen: uint32(e.Prefix.Bits()), Addr: e.Prefix.Masked().Addr().As4()}
		} else {
			key = bpf.PortcullisPcLpmV6{Prefixlen: uint32(e.Prefix.Bits()), Addr: e.Prefix.Masked().Addr().As16()}
		}
		err := write(inner, key, val, add)
		inner.Close()
		if err != nil {
			return err
		}
		// The entry first, then the mark that sends the /24's packets to it.
		if e.Quarantine && v4 && add {
			if err := p.markDirQuarantine(p.slot, e.Prefix); err != nil {
				return err
			}
		}
	}
	// The scope groups that hold e (an unscoped entry inside a scoped range).
	if !e.Quarantine {
		plan := next.Plan()
		if !add {
			plan = p.tables.Plan()
		}
		for _, ge := range plan.Ranges {
			if ge.Prefix != e.Prefix || ge.Rule != e.Rule {
				continue
			}
			scoped := p.objs.ScopedV6
			var k any
			if v4 {
				scoped = p.objs.ScopedV4
				k = bpf.PortcullisPcScopedV4{Prefixlen: 32 + uint32(e.Prefix.Bits()), Group: ge.Group, Addr: e.Prefix.Masked().Addr().As4()}
			} else {
				k = bpf.PortcullisPcScopedV6{Prefixlen: 32 + uint32(e.Prefix.Bits()), Group: ge.Group, Addr: e.Prefix.Masked().Addr().As16()}
			}
			var sm *ebpf.Map
			if err := scoped.Lookup(p.slot, &sm); err != nil {
				return fmt.Errorf("reading the live scoped table: %w", err)
			}
			err := write(sm, k, val, add)
			sm.Close()
			if err != nil {
				return err
			}
		}
	}
	p.tables = next
	return nil
}

func write(m *ebpf.Map, key any, val bpf.PortcullisPcRule, add bool) error {
	if add {
		if err := m.Put(key, val); err != nil {
			return fmt.Errorf("writing the entry: %w", err)
		}
		return nil
	}
	if err := m.Delete(key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("removing the entry: %w", err)
	}
	return nil
}

// AdoptTables says that the live policy (adopted from pinned maps) is t, without
// writing it: the daemon calls it when the policy in force is the one it would apply,
// so that later UpdateEntry calls know the live rules. The proof that follows holds
// the program to t.
func (p *Program) AdoptTables(t *model.Tables) error {
	if !p.hasPolicy {
		return ErrNoPolicy
	}
	p.labelsMu.Lock()
	ids, err := p.stableIDs(t)
	p.labelsMu.Unlock()
	if err != nil {
		return err
	}
	p.tables, p.live = t, ids
	return nil
}

// RuntimeInDataPlane returns the entries of the live tables that count for the rules
// labelled kind/name (the runtime entries' rules), as the data plane holds them: it
// tells a store that lost entries from one that never had them.
func (p *Program) RuntimeInDataPlane(kind model.Kind, name string) ([]model.TableEntry, error) {
	p.labelsMu.RLock()
	id, ok := p.labels[string(kind)+"/"+name]
	p.labelsMu.RUnlock()
	if !ok || !p.hasPolicy {
		return nil, nil
	}
	boot, err := bootNow()
	if err != nil {
		return nil, err
	}
	now := timeNow()
	ranges4, err := p.dirRuntime(p.slot, id)
	if err != nil {
		return nil, err
	}
	var out []model.TableEntry
	for _, e := range ranges4 {
		out = append(out, model.TableEntry{Entry: e})
	}
	for _, t := range []struct {
		outer      *ebpf.Map
		v4, quaran bool
	}{{p.objs.QuarantineV4, true, true}, {p.objs.QuarantineV6, false, true}, {p.objs.RangesV6, false, false}} {
		var inner *ebpf.Map
		if err := t.outer.Lookup(p.slot, &inner); err != nil {
			if errors.Is(err, ebpf.ErrKeyNotExist) {
				continue
			}
			return nil, fmt.Errorf("reading the live %s table: %w", t.outer, err)
		}
		var val bpf.PortcullisPcRule
		it := inner.Iterate()
		if t.v4 {
			var k bpf.PortcullisPcLpmV4
			for it.Next(&k, &val) {
				if val.Rule == id {
					out = append(out, runtimeEntry(prefixOf(k.Addr[:], k.Prefixlen), val, t.quaran, boot, now))
				}
			}
		} else {
			var k bpf.PortcullisPcLpmV6
			for it.Next(&k, &val) {
				if val.Rule == id {
					out = append(out, runtimeEntry(prefixOf(k.Addr[:], k.Prefixlen), val, t.quaran, boot, now))
				}
			}
		}
		err := it.Err()
		inner.Close()
		if err != nil {
			return nil, fmt.Errorf("reading the live %s table: %w", t.outer, err)
		}
	}
	return out, nil
}

// timeNow is time.Now, the wall clock that the boot-clock expiries are taken from.
var timeNow = time.Now

func prefixOf(addr []byte, bits uint32) netip.Prefix {
	a, _ := netip.AddrFromSlice(addr)
	return netip.PrefixFrom(a, int(bits))
}

func runtimeEntry(p netip.Prefix, v bpf.PortcullisPcRule, quarantine bool, boot time.Duration, now time.Time) model.TableEntry {
	e := model.TableEntry{Quarantine: quarantine, Entry: model.Entry{Prefix: p, Rule: v.Rule, Verdict: model.Verdict(v.Verdict)}}
	if v.Expires != 0 {
		e.Expires = wallTime(v.Expires, boot, now)
	}
	return e
}
