package loader

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"

	"github.com/portcullis/portcullis/bpf"
	"github.com/portcullis/portcullis/model"
)

// prefixTableBuilder builds one policy's prefix table for one family as a fresh map
// that the program reaches through a map-in-map slot. Today's implementation is the
// kernel LPM trie; a structure whose cost does not grow with the policy can replace it
// behind this interface.
type prefixTableBuilder interface {
	build(entries []model.Entry, boot time.Duration, now time.Time) (*ebpf.Map, error)
}

type lpmBuilder struct {
	spec *ebpf.MapSpec // inner map template from the object
	v6   bool
}

func (b lpmBuilder) build(entries []model.Entry, boot time.Duration, now time.Time) (*ebpf.Map, error) {
	spec := b.spec.Copy()
	spec.MaxEntries = uint32(len(entries) + runtimeHeadroom)
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

// newTable creates an inner table from spec sized for n entries and fills it.
func newTable[K, V any](spec *ebpf.MapSpec, keys []K, vals []V) (*ebpf.Map, error) {
	spec = spec.Copy()
	spec.MaxEntries = uint32(len(keys) + runtimeHeadroom)
	m, err := ebpf.NewMap(spec)
	if err != nil {
		return nil, fmt.Errorf("creating %s table: %w", spec.Name, err)
	}
	if len(keys) > 0 {
		n, err := m.BatchUpdate(keys, vals, nil)
		if err == nil && n != len(keys) {
			err = fmt.Errorf("wrote %d of %d entries", n, len(keys))
		}
		if err != nil {
			m.Close()
			return nil, fmt.Errorf("filling %s table: %w", spec.Name, err)
		}
	}
	return m, nil
}

// relayTables builds the relay tables (IPv4, IPv6) of entries, rule ids already stable.
func (p *Program) relayTables(entries []model.RelayEntry) (v4, v6 func() (*ebpf.Map, error), n4, n6 int) {
	var k4 []bpf.PortcullisPcLpmV4
	var k6 []bpf.PortcullisPcLpmV6
	var r4, r6 []bpf.PortcullisPcRelay
	for _, e := range entries {
		v := bpf.PortcullisPcRelay{Rule: e.Rule, Nports: uint8(len(e.Ports))}
		copy(v.Ports[:], e.Ports)
		if e.BlockQuarantined {
			v.Flags |= uint8(bpf.PortcullisPcRelayFlagPC_RELAY_BLOCK_QUARANTINED)
		}
		if e.Prefix.Addr().Is4() {
			k4 = append(k4, bpf.PortcullisPcLpmV4{Prefixlen: uint32(e.Prefix.Bits()), Addr: e.Prefix.Masked().Addr().As4()})
			r4 = append(r4, v)
		} else {
			k6 = append(k6, bpf.PortcullisPcLpmV6{Prefixlen: uint32(e.Prefix.Bits()), Addr: e.Prefix.Masked().Addr().As16()})
			r6 = append(r6, v)
		}
	}
	v4 = func() (*ebpf.Map, error) { return newTable(p.spec.Maps[bpf.PortcullisMapRelaysV4].InnerMap, k4, r4) }
	v6 = func() (*ebpf.Map, error) { return newTable(p.spec.Maps[bpf.PortcullisMapRelaysV6].InnerMap, k6, r6) }
	return v4, v6, len(k4), len(k6)
}

// scopedTables builds the scoped tables (IPv4, IPv6) of a scope plan, rule ids stable.
func (p *Program) scopedTables(plan model.ScopePlan, boot time.Duration, now time.Time) (v4, v6 func() (*ebpf.Map, error), n4, n6 int) {
	var k4 []bpf.PortcullisPcScopedV4
	var k6 []bpf.PortcullisPcScopedV6
	var r4, r6 []bpf.PortcullisPcRule
	add := func(ge model.GroupEntry, group uint32) {
		v := bpf.PortcullisPcRule{Rule: ge.Rule, Verdict: uint8(ge.Verdict)}
		if !ge.Expires.IsZero() {
			v.Expires = bootTime(ge.Expires, boot, now)
		}
		if ge.Prefix.Addr().Is4() {
			k4 = append(k4, bpf.PortcullisPcScopedV4{Prefixlen: 32 + uint32(ge.Prefix.Bits()), Group: group, Addr: ge.Prefix.Masked().Addr().As4()})
			r4 = append(r4, v)
		} else {
			k6 = append(k6, bpf.PortcullisPcScopedV6{Prefixlen: 32 + uint32(ge.Prefix.Bits()), Group: group, Addr: ge.Prefix.Masked().Addr().As16()})
			r6 = append(r6, v)
		}
	}
	for _, ge := range plan.Ranges {
		add(ge, ge.Group)
	}
	for _, ge := range plan.Quarantines {
		add(ge, ge.Group|groupQuarantine)
	}
	v4 = func() (*ebpf.Map, error) { return newTable(p.spec.Maps[bpf.PortcullisMapScopedV4].InnerMap, k4, r4) }
	v6 = func() (*ebpf.Map, error) { return newTable(p.spec.Maps[bpf.PortcullisMapScopedV6].InnerMap, k6, r6) }
	return v4, v6, len(k4), len(k6)
}

// groupQuarantine is PC_GROUP_QUARANTINE.
const groupQuarantine = 0x80000000

// installOptional puts a table built by build into slot of outer, or, when the
// policy has no entries for it, makes sure the slot is empty. An empty slot that is
// already empty costs nothing: a policy without relays or scopes pays no map-in-map
// update (each is an RCU wait) for them.
func installOptional(outer *ebpf.Map, slot uint32, n int, build func() (*ebpf.Map, error)) error {
	if n == 0 {
		var id ebpf.MapID
		err := outer.Lookup(slot, &id)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if err := outer.Delete(slot); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("clearing %s: %w", outer, err)
		}
		return nil
	}
	m, err := build()
	if err != nil {
		return err
	}
	err = outer.Put(slot, m)
	m.Close()
	if err != nil {
		return fmt.Errorf("installing %s table: %w", outer, err)
	}
	return nil
}

// unscoped returns the entries that apply on every interface: the scoped ones live in
// the scoped tables (see model.ScopePlan).
func unscoped(entries []model.Entry) []model.Entry {
	out := entries[:0:0]
	for _, e := range entries {
		if e.Interfaces == nil {
			out = append(out, e)
		}
	}
	return out
}

// split sorts entries by family; the policy compiler has already unmapped
// IPv4-mapped IPv6 prefixes.
func split(entries []model.Entry) (v4, v6 []model.Entry) {
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
func (p *Program) Apply(t *model.Tables) error {
	if len(t.RuleNames) > model.MaxRules {
		return fmt.Errorf("%w: %d rules, limit %d", ErrTooManyRules, len(t.RuleNames), model.MaxRules)
	}
	for _, tab := range [][]model.Entry{t.Ranges, t.Quarantines} {
		for _, e := range tab {
			if e.Rule >= model.MaxRules {
				return fmt.Errorf("%w: rule id %d, limit %d", ErrTooManyRules, e.Rule, model.MaxRules)
			}
		}
	}
	for _, r := range t.Relays {
		if r.Rule >= model.MaxRules {
			return fmt.Errorf("%w: rule id %d, limit %d", ErrTooManyRules, r.Rule, model.MaxRules)
		}
		if len(r.Ports) > model.MaxRelayPorts {
			return fmt.Errorf("relay %s lists %d ports, the data plane holds %d", r.Prefix, len(r.Ports), model.MaxRelayPorts)
		}
	}
	p.labelsMu.Lock()
	ids, err := p.stableIDs(t)
	p.labelsMu.Unlock()
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
	r4, r6 := split(unscoped(ranges))
	q4, q6 := split(unscoped(quarantines))
	// No packet reads the idle slot (the last switch waited for them): its IPv4 ranges
	// are written in place.
	if err := p.writeDir(next, r4, q4); err != nil {
		return err
	}
	tables := []struct {
		outer   *ebpf.Map
		builder prefixTableBuilder
		entries []model.Entry
	}{
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

	// Relays and scopes: only for policies that have them.
	relays := make([]model.RelayEntry, len(t.Relays))
	for i, r := range t.Relays {
		if r.Rule, err = stableID(ids, r.Rule, r.Prefix); err != nil {
			return err
		}
		relays[i] = r
	}
	plan := t.Plan()
	if plan.Ranges, err = groupIDs(plan.Ranges, ids); err != nil {
		return err
	}
	if plan.Quarantines, err = groupIDs(plan.Quarantines, ids); err != nil {
		return err
	}
	rv4, rv6, rn4, rn6 := p.relayTables(relays)
	sv4, sv6, sn4, sn6 := p.scopedTables(plan, boot, now)
	for _, o := range []struct {
		outer *ebpf.Map
		n     int
		build func() (*ebpf.Map, error)
	}{
		{p.objs.RelaysV4, rn4, rv4}, {p.objs.RelaysV6, rn6, rv6},
		{p.objs.ScopedV4, sn4, sv4}, {p.objs.ScopedV6, sn6, sv6},
	} {
		if err := installOptional(o.outer, next, o.n, o.build); err != nil {
			return err
		}
	}
	if err := p.writeScopes(next, plan.Groups); err != nil {
		return err
	}

	cfg := bpf.PortcullisPcConfig{
		Slot:           next,
		DefaultVerdict: uint8(t.DefaultVerdict),
		RstRate:        t.RSTRate,
		RstBurst:       t.RSTBurst,
	}
	if len(relays) > 0 {
		cfg.Flags |= uint8(bpf.PortcullisPcConfigFlagPC_CFG_RELAYS)
	}
	if len(plan.Groups) > 0 {
		cfg.Flags |= uint8(bpf.PortcullisPcConfigFlagPC_CFG_SCOPED)
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
	p.labelsMu.Lock()
	_ = p.retire(p.live, ids)
	p.labelsMu.Unlock()
	p.slot, p.hasPolicy, p.tables, p.live = next, true, t, ids
	return nil
}

// previous is the policy an Apply replaced, kept for Rollback.
type previous struct {
	config *ebpf.Map
	slot   uint32
	tables *model.Tables
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
	p.labelsMu.Lock()
	_ = p.retire(p.live, p.prev.live) // as in Apply
	p.labelsMu.Unlock()
	p.slot, p.tables, p.live = p.prev.slot, p.prev.tables, p.prev.live
	p.dropPrev()
	return nil
}

// stableID is the stable id of compiled rule id rule (ids from stableIDs), for the
// entry of prefix.
func stableID(ids []uint32, rule uint32, prefix netip.Prefix) (uint32, error) {
	if int(rule) >= len(ids) {
		return 0, fmt.Errorf("entry %s names rule %d, but the policy names only %d rules", prefix, rule, len(ids))
	}
	return ids[rule], nil
}

// groupIDs is withIDs for the entries of a scope plan.
func groupIDs(entries []model.GroupEntry, ids []uint32) ([]model.GroupEntry, error) {
	out := make([]model.GroupEntry, len(entries))
	for i, e := range entries {
		var err error
		if e.Rule, err = stableID(ids, e.Rule, e.Prefix); err != nil {
			return nil, err
		}
		out[i] = e
	}
	return out, nil
}

// withIDs returns entries with their compiled rule ids replaced by stable ids.
func withIDs(entries []model.Entry, ids []uint32) ([]model.Entry, error) {
	out := make([]model.Entry, len(entries))
	for i, e := range entries {
		var err error
		if e.Rule, err = stableID(ids, e.Rule, e.Prefix); err != nil {
			return nil, err
		}
		out[i] = e
	}
	return out, nil
}
