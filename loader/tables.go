package loader

import (
	"fmt"
	"time"

	"github.com/cilium/ebpf"

	"github.com/portcullis/portcullis/bpf"
	"github.com/portcullis/portcullis/policy"
)

// prefixTableBuilder builds one policy's prefix table for one family as a fresh map
// that the program reaches through a map-in-map slot. Today's implementation is the
// kernel LPM trie; a structure whose cost does not grow with the policy can replace it
// behind this interface.
type prefixTableBuilder interface {
	build(entries []policy.Entry, boot time.Duration, now time.Time) (*ebpf.Map, error)
}

type lpmBuilder struct {
	spec *ebpf.MapSpec // inner map template from the object
	v6   bool
}

func (b lpmBuilder) build(entries []policy.Entry, boot time.Duration, now time.Time) (*ebpf.Map, error) {
	spec := b.spec.Copy()
	spec.MaxEntries = uint32(max(len(entries), 1))
	m, err := ebpf.NewMap(spec)
	if err != nil {
		return nil, fmt.Errorf("creating prefix table: %w", err)
	}
	vals := make([]bpf.PortcullisPcRule, len(entries))
	for i, e := range entries {
		vals[i] = bpf.PortcullisPcRule{Rule: e.Rule, Verdict: uint8(e.Verdict)}
		if !e.Expires.IsZero() {
			vals[i].Expires = bootTime(e.Expires, boot, now)
		}
	}
	var n int
	if b.v6 {
		keys := make([]bpf.PortcullisPcLpmV6, len(entries))
		for i, e := range entries {
			keys[i] = bpf.PortcullisPcLpmV6{Prefixlen: uint32(e.Prefix.Bits()), Addr: e.Prefix.Masked().Addr().As16()}
		}
		if len(keys) > 0 {
			n, err = m.BatchUpdate(keys, vals, nil)
		}
	} else {
		keys := make([]bpf.PortcullisPcLpmV4, len(entries))
		for i, e := range entries {
			keys[i] = bpf.PortcullisPcLpmV4{Prefixlen: uint32(e.Prefix.Bits()), Addr: e.Prefix.Masked().Addr().As4()}
		}
		if len(keys) > 0 {
			n, err = m.BatchUpdate(keys, vals, nil)
		}
	}
	if err == nil && n != len(entries) {
		err = fmt.Errorf("wrote %d of %d entries", n, len(entries))
	}
	if err != nil {
		m.Close()
		return nil, fmt.Errorf("filling prefix table: %w", err)
	}
	return m, nil
}

// split sorts entries by family; the policy compiler has already unmapped
// IPv4-mapped IPv6 prefixes.
func split(entries []policy.Entry) (v4, v6 []policy.Entry) {
	for _, e := range entries {
		if e.Prefix.Addr().Is4() {
			v4 = append(v4, e)
		} else {
			v6 = append(v6, e)
		}
	}
	return v4, v6
}

// Apply makes t the live policy, atomically: t's tables are built in fresh maps in the
// idle slot, then a fresh config map naming that slot replaces the live one with a
// single map update. A packet is judged entirely by the old policy or entirely by t.
// On error the live policy is unchanged.
func (p *Program) Apply(t *policy.Tables) error {
	if len(t.RuleNames) > policy.MaxRules {
		return fmt.Errorf("%w: %d rules, limit %d", ErrTooManyRules, len(t.RuleNames), policy.MaxRules)
	}
	for _, tab := range [][]policy.Entry{t.Ranges, t.Quarantines} {
		for _, e := range tab {
			if e.Rule >= policy.MaxRules {
				return fmt.Errorf("%w: rule id %d, limit %d", ErrTooManyRules, e.Rule, policy.MaxRules)
			}
		}
	}
	ids, err := p.stableIDs(t)
	if err != nil {
		return err
	}
	boot, err := bootNow()
	if err != nil {
		return err
	}
	now := time.Now()
	next := uint32(0)
	if p.hasPolicy {
		next = p.slot ^ 1
	}

	ranges, err := withIDs(t.Ranges, ids)
	if err != nil {
		return err
	}
	quarantines, err := withIDs(t.Quarantines, ids)
	if err != nil {
		return err
	}
	r4, r6 := split(ranges)
	q4, q6 := split(quarantines)
	tables := []struct {
		outer   *ebpf.Map
		builder prefixTableBuilder
		entries []policy.Entry
	}{
		{p.objs.RangesV4, lpmBuilder{p.spec.Maps[bpf.PortcullisMapRangesV4].InnerMap, false}, r4},
		{p.objs.RangesV6, lpmBuilder{p.spec.Maps[bpf.PortcullisMapRangesV6].InnerMap, true}, r6},
		{p.objs.QuarantineV4, lpmBuilder{p.spec.Maps[bpf.PortcullisMapQuarantineV4].InnerMap, false}, q4},
		{p.objs.QuarantineV6, lpmBuilder{p.spec.Maps[bpf.PortcullisMapQuarantineV6].InnerMap, true}, q6},
	}
	for _, tb := range tables {
		m, err := tb.builder.build(tb.entries, boot, now)
		if err != nil {
			return err
		}
		// The kernel waits for running programs on a map-in-map update: once this
		// returns, no packet still reads the table it replaced in this idle slot.
		err = tb.outer.Put(next, m)
		m.Close() // the outer map holds its own reference
		if err != nil {
			return fmt.Errorf("installing prefix table: %w", err)
		}
	}

	cfg := bpf.PortcullisPcConfig{
		Slot:           next,
		DefaultVerdict: uint8(t.DefaultVerdict),
		RstRate:        t.RSTRate,
		RstBurst:       t.RSTBurst,
	}
	for _, port := range t.Governed {
		cfg.Governed[port/64] |= 1 << (port % 64)
	}
	cm, err := ebpf.NewMap(p.spec.Maps[bpf.PortcullisMapPolicy].InnerMap.Copy())
	if err != nil {
		return fmt.Errorf("creating config map: %w", err)
	}
	defer cm.Close()
	if err := cm.Put(uint32(0), &cfg); err != nil {
		return fmt.Errorf("writing config: %w", err)
	}
	// Keep the config being replaced: Rollback puts it back. Its slot's tables stay
	// as they are until the next Apply.
	var prev *ebpf.Map
	if p.hasPolicy {
		if err := p.objs.Policy.Lookup(uint32(0), &prev); err != nil {
			return fmt.Errorf("reading the live config: %w", err)
		}
	}
	// The switch: one update, after which new packets see only t.
	if err := p.objs.Policy.Put(uint32(0), cm); err != nil {
		if prev != nil {
			prev.Close()
		}
		return fmt.Errorf("switching policy: %w", err)
	}
	p.dropPrev()
	if prev != nil {
		p.prev = &previous{config: prev, slot: p.slot, tables: p.tables, live: p.live}
	}
	// The ages only order the reclaiming of ids; a write to an array key in range
	// cannot fail, and the switch above has happened either way.
	_ = p.retire(p.live, ids)
	p.slot, p.hasPolicy, p.tables, p.live = next, true, t, ids
	return nil
}

// previous is the policy an Apply replaced, kept for Rollback.
type previous struct {
	config *ebpf.Map
	slot   uint32
	tables *policy.Tables
	live   []uint32
}

func (p *Program) dropPrev() {
	if p.prev != nil {
		p.prev.config.Close()
		p.prev = nil
	}
}

// Rollback makes the policy replaced by the last Apply live again, with the same
// single update (its tables were left untouched in the other slot). It works once per
// Apply, also for a policy adopted from pinned maps whose tables this process never saw.
func (p *Program) Rollback() error {
	if p.prev == nil {
		return ErrNoRollback
	}
	if err := p.objs.Policy.Put(uint32(0), p.prev.config); err != nil {
		return fmt.Errorf("rolling back: %w", err)
	}
	_ = p.retire(p.live, p.prev.live) // as in Apply
	p.slot, p.tables, p.live = p.prev.slot, p.prev.tables, p.prev.live
	p.dropPrev()
	return nil
}

// withIDs returns entries with their compiled rule ids replaced by stable ids.
func withIDs(entries []policy.Entry, ids []uint32) ([]policy.Entry, error) {
	out := make([]policy.Entry, len(entries))
	for i, e := range entries {
		if int(e.Rule) >= len(ids) {
			return nil, fmt.Errorf("entry %s names rule %d, but the policy names only %d rules", e.Prefix, e.Rule, len(ids))
		}
		e.Rule = ids[e.Rule]
		out[i] = e
	}
	return out, nil
}
