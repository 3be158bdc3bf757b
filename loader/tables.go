package loader

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/cilium/ebpf"

	"github.com/portcullis/portcullis/bpf"
	"github.com/portcullis/portcullis/model"
)

// The tables of the prefixes trie (enum pc_table).
const (
	tQuarantine4 = uint32(bpf.PortcullisPcTablePC_T_QUARANTINE_V4)
	tQuarantine6 = uint32(bpf.PortcullisPcTablePC_T_QUARANTINE_V6)
	tRange6      = uint32(bpf.PortcullisPcTablePC_T_RANGE_V6)
	tRelay4      = uint32(bpf.PortcullisPcTablePC_T_RELAY_V4)
	tRelay6      = uint32(bpf.PortcullisPcTablePC_T_RELAY_V6)
	tScoped4     = uint32(bpf.PortcullisPcTablePC_T_SCOPED_V4)
	tScoped6     = uint32(bpf.PortcullisPcTablePC_T_SCOPED_V6)
	tRuntime4    = uint32(bpf.PortcullisPcTablePC_T_RUNTIME_V4)
)

// prefixKey is a slot's prefixes trie's key of prefix p in table (of p's family), in
// scope group group (0 outside the scoped tables).
func prefixKey(table, group uint32, p netip.Prefix) bpf.PortcullisPcKey {
	k := bpf.PortcullisPcKey{Prefixlen: 64 + uint32(p.Bits()), Table: table, Group: group}
	if a := p.Masked().Addr(); a.Is4() {
		b := a.As4()
		copy(k.Addr[:], b[:])
	} else {
		k.Addr = a.As16()
	}
	return k
}

// keyPrefix is the prefix of a prefixes key.
func keyPrefix(k bpf.PortcullisPcKey) netip.Prefix {
	bits := int(k.Prefixlen) - 64
	switch k.Table {
	case tQuarantine4, tRelay4, tScoped4, tRuntime4:
		return netip.PrefixFrom(netip.AddrFrom4([4]byte(k.Addr[:4])), bits)
	}
	return netip.PrefixFrom(netip.AddrFrom16(k.Addr), bits)
}

// ruleEntry is the prefixes value of a rule's entry (its rule id already stable).
func ruleEntry(e model.Entry, boot time.Duration, now time.Time) bpf.PortcullisPcEntry {
	v := bpf.PortcullisPcEntry{Rule: e.Rule, Verdict: uint8(e.Verdict)}
	if !e.Expires.IsZero() {
		v.Expires = bootTime(e.Expires, boot, now)
	}
	return v
}

// slotEntries are the keys and values of a slot's prefixes trie that hold a policy:
// its quarantines of both families and IPv6 ranges that apply everywhere (those that
// ranges_v6 does not hold: see hash6.go), the record
// of its IPv4 runtime ranges (rt4), its relays and its scope groups' entries (rule
// ids already stable).
func slotEntries(q4, q6, r6, rt4 []model.Entry, relays []model.RelayEntry, plan model.ScopePlan, boot time.Duration, now time.Time) ([]bpf.PortcullisPcKey, []bpf.PortcullisPcEntry) {
	n := len(q4) + len(q6) + len(r6) + len(rt4) + len(relays) + len(plan.Ranges) + len(plan.Quarantines)
	keys, vals := make([]bpf.PortcullisPcKey, 0, n), make([]bpf.PortcullisPcEntry, 0, n)
	for _, t := range []struct {
		table   uint32
		entries []model.Entry
	}{{tQuarantine4, q4}, {tQuarantine6, q6}, {tRange6, r6}, {tRuntime4, rt4}} {
		for _, e := range t.entries {
			v := ruleEntry(e, boot, now)
			if t.table == tRange6 {
				v.Plen = uint8(e.Prefix.Bits())
			}
			keys = append(keys, prefixKey(t.table, 0, e.Prefix))
			vals = append(vals, v)
		}
	}
	for _, r := range relays {
		v := bpf.PortcullisPcEntry{Rule: r.Rule, Nports: uint8(len(r.Ports))}
		copy(v.Ports[:], r.Ports)
		if r.BlockQuarantined {
			v.Flags |= uint8(bpf.PortcullisPcRelayFlagPC_RELAY_BLOCK_QUARANTINED)
		}
		table := tRelay6
		if r.Prefix.Addr().Is4() {
			table = tRelay4
		}
		keys, vals = append(keys, prefixKey(table, 0, r.Prefix)), append(vals, v)
	}
	add := func(ge model.GroupEntry, group uint32) {
		table := tScoped6
		if ge.Prefix.Addr().Is4() {
			table = tScoped4
		}
		keys = append(keys, prefixKey(table, group, ge.Prefix))
		vals = append(vals, ruleEntry(model.Entry{Rule: ge.Rule, Verdict: ge.Verdict, Expires: ge.Expires}, boot, now))
	}
	for _, ge := range plan.Ranges {
		add(ge, ge.Group)
	}
	for _, ge := range plan.Quarantines {
		add(ge, ge.Group|groupQuarantine)
	}
	return keys, vals
}

// cfgQuarantine6 is PC_CFG_QUARANTINE_V6.
const cfgQuarantine6 = uint8(bpf.PortcullisPcConfigFlagPC_CFG_QUARANTINE_V6)

// groupQuarantine is PC_GROUP_QUARANTINE.
const groupQuarantine = 0x80000000

// trie returns slot's prefixes trie (nil if the slot has none), for the caller to close.
func (p *Program) trie(slot uint32) (*ebpf.Map, error) {
	var m *ebpf.Map
	err := p.objs.Prefixes.Lookup(slot, &m)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the prefix tables: %w", err)
	}
	return m, nil
}

// writeSlot makes keys and vals slot's prefixes trie; no packet may read slot. The
// empty trie Release left is filled in place; else a fresh one replaces the slot's
// (a map-in-map update: an RCU wait, and the kernel frees the trie it replaces).
func (p *Program) writeSlot(slot uint32, keys []bpf.PortcullisPcKey, vals []bpf.PortcullisPcEntry) error {
	fill := func(m *ebpf.Map) error {
		if len(keys) == 0 {
			return nil
		}
		n, err := m.BatchUpdate(keys, vals, nil)
		if err == nil && n != len(keys) {
			err = fmt.Errorf("wrote %d of %d entries", n, len(keys))
		}
		if err != nil {
			return fmt.Errorf("filling the prefix tables: %w", err)
		}
		return nil
	}
	empty := p.emptyTrie[slot]
	p.emptyTrie[slot] = false
	if empty {
		m, err := p.trie(slot)
		if err != nil {
			return err
		}
		if m != nil {
			defer m.Close()
			return fill(m)
		}
	}
	m, err := ebpf.NewMap(p.spec.Maps[bpf.PortcullisMapPrefixes].InnerMap.Copy())
	if err != nil {
		return fmt.Errorf("creating the prefix tables: %w", err)
	}
	defer m.Close() // the outer map holds its own reference
	if err := fill(m); err != nil {
		return err
	}
	if err := p.objs.Prefixes.Put(slot, m); err != nil {
		return fmt.Errorf("installing the prefix tables: %w", err)
	}
	return nil
}

// byFamily returns the entries that apply on every interface (the scoped ones live in
// the scoped tables, see model.ScopePlan), IPv4 and IPv6 apart, with their compiled
// rule ids replaced by stable ids: one pass and one copy, since a policy may hold a
// million of them (the compiler has already unmapped IPv4-mapped IPv6 prefixes).
func byFamily(entries []model.Entry, ids []uint32) (v4, v6 []model.Entry, err error) {
	n4, n6 := 0, 0
	for i := range entries {
		switch {
		case entries[i].Interfaces != nil:
		case entries[i].Prefix.Addr().Is4():
			n4++
		default:
			n6++
		}
	}
	v4, v6 = make([]model.Entry, 0, n4), make([]model.Entry, 0, n6)
	for i := range entries {
		e := &entries[i]
		if e.Interfaces != nil {
			continue
		}
		id, err := stableID(ids, e.Rule, e.Prefix)
		if err != nil {
			return nil, nil, err
		}
		x := model.Entry{Prefix: e.Prefix, Rule: id, Verdict: e.Verdict, Expires: e.Expires}
		if e.Prefix.Addr().Is4() {
			v4 = append(v4, x)
		} else {
			v6 = append(v6, x)
		}
	}
	return v4, v6, nil
}

// Apply makes t the live policy, atomically: t's tables are written into the idle
// slot, then a fresh config map naming that slot replaces the live one with a single
// map update, the swap's only RCU wait. A packet is judged entirely by the old policy
// or entirely by t. On error the live policy is unchanged. The replaced policy stays
// in the other slot for Rollback until Release or the next Apply.
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

	r4, r6, err := byFamily(t.Ranges, ids)
	if err != nil {
		return err
	}
	q4, q6, err := byFamily(t.Quarantines, ids)
	if err != nil {
		return err
	}
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

	// No packet reads the idle slot (the last switch waited for them): it is written
	// in place. From here on the policy it held cannot be rolled back to, even if this
	// Apply fails.
	p.dropPrev()
	// The IPv4 runtime ranges (unblocks) are also recorded as entered: painted into the
	// DIR-24-8 table, a range that longer ones paint over could not be read back.
	var rt4 []model.Entry
	unblock := map[uint32]bool{}
	if len(t.RuleKinds) == len(t.RuleNames) {
		for i, k := range t.RuleKinds {
			if k == model.KindUnblock {
				unblock[ids[i]] = true
			}
		}
		for _, e := range r4 {
			if unblock[e.Rule] {
				rt4 = append(rt4, e)
			}
		}
	}
	// Many IPv6 ranges go into ranges_v6 (hash6.go), but for the runtime ones: those
	// stay in the trie, as UpdateEntry puts them there.
	trie6 := r6
	pol6, rt6 := splitRanges6(r6, unblock)
	hashed := hashable6(pol6)
	if hashed {
		trie6 = rt6
	}
	keys, vals := slotEntries(q4, q6, trie6, rt4, relays, plan, boot, now)
	if limit := int(p.spec.Maps[bpf.PortcullisMapPrefixes].InnerMap.MaxEntries); len(keys) > limit {
		return fmt.Errorf("%w: %d IPv6 ranges, quarantines, relays and scoped entries; the data plane holds %d (PC_MAX_PREFIXES)", ErrTooManyPrefixes, len(keys), limit)
	}
	// The trie (its entries go in through the kernel), then the IPv6 range hash (built
	// here, written through the kernel), and the DIR-24-8 table (painted here, written
	// through mmap) at once: neither reads the other's state. The DIR-24-8 writer then
	// helps write the hash.
	var trieErr, hashErr error
	var hw *hashWrite
	ready := make(chan struct{}) // hw is set (or nil: nothing to help with)
	var wg sync.WaitGroup
	wg.Go(func() {
		trieErr = p.writeSlot(next, keys, vals)
		if trieErr != nil || !hashed {
			close(ready)
			return
		}
		h6, _ := buildHash6(pol6)
		hw, trieErr = p.prepareHash6(next, h6)
		close(ready)
		if trieErr == nil {
			trieErr = hw.fill()
		}
	})
	dirErr := p.writeDir(next, r4, q4)
	<-ready
	if hw != nil && dirErr == nil {
		hashErr = hw.fill()
	}
	wg.Wait()
	if hw != nil {
		ok := trieErr == nil && hashErr == nil && dirErr == nil
		if err := p.finishHash6(hw, ok); err != nil && ok {
			hashErr = err
		}
	}
	if trieErr != nil {
		return trieErr
	}
	if hashErr != nil {
		return hashErr
	}
	if dirErr != nil {
		return dirErr
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
	if len(q6) > 0 {
		cfg.Flags |= cfgQuarantine6
	}
	if hashed {
		cfg.Flags |= cfgHash6
		if len(trie6) > 0 {
			cfg.Flags |= cfgRuntime6
		}
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
	// as they are until Release or the next Apply.
	var prev *ebpf.Map
	if p.hasPolicy {
		if prev, err = p.liveConfig(); err != nil {
			return err
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
	p.hashed[next], p.runtime6[next] = hashed, nil
	if hashed {
		p.runtime6[next] = prefixSet(trie6)
	}
	return nil
}

// liveConfig returns the live policy's config map (for the caller to close).
func (p *Program) liveConfig() (*ebpf.Map, error) {
	var cm *ebpf.Map
	if err := p.objs.Policy.Lookup(uint32(0), &cm); err != nil {
		return nil, fmt.Errorf("reading the live config: %w", err)
	}
	return cm, nil
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

// Release frees what the idle slot holds (the policy the last Apply replaced, or the
// one a Rollback left), so that the kernel keeps one policy's tables, not two:
// Rollback is not possible after it. An empty trie replaces the slot's (one RCU wait,
// after which the kernel frees the old trie whole), and the next Apply fills it in
// place; so is the slot's IPv6 range hash, if it has one (a second RCU wait). The last
// switch waited for every packet that could read that slot. The
// daemon calls it once the new policy's proof passed. The fixed-size DIR-24-8 arrays
// stay as they are (the next Apply rewrites them).
func (p *Program) Release() error {
	if !p.hasPolicy {
		return nil
	}
	idle := p.slot ^ 1
	p.dropPrev()
	if !p.emptyTrie[idle] {
		m, err := ebpf.NewMap(p.spec.Maps[bpf.PortcullisMapPrefixes].InnerMap.Copy())
		if err != nil {
			return fmt.Errorf("creating the prefix tables: %w", err)
		}
		err = p.objs.Prefixes.Put(idle, m)
		m.Close()
		if err != nil {
			return fmt.Errorf("freeing the prefix tables: %w", err)
		}
		p.emptyTrie[idle] = true
	}
	if err := p.releaseHash6(idle); err != nil {
		return err
	}
	return p.writeScopes(idle, nil)
}

// stableID is the stable id of compiled rule id rule (ids from stableIDs), for the
// entry of prefix.
func stableID(ids []uint32, rule uint32, prefix netip.Prefix) (uint32, error) {
	if int(rule) >= len(ids) {
		return 0, fmt.Errorf("entry %s names rule %d, but the policy names only %d rules", prefix, rule, len(ids))
	}
	return ids[rule], nil
}

// groupIDs returns the entries of a scope plan with their compiled rule ids replaced
// by stable ids.
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
