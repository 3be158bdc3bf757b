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

// UpdateEntry makes next the live tables, where next differs from them only by e
// (added when add, removed otherwise), in the live slot: for an IPv4 range, the
// aligned word writes that repaint the addresses it decides in the DIR-24-8 table
// (the /24 words it covers, or its group's words for a range longer than /24, with a
// new group written whole before its /24 names it), plus its record in the prefixes
// trie; otherwise one update of the trie (an IPv4 quarantine also marks the /24s it
// overlaps); and one in each scope group's table it lies in. None is a map-in-map
// update, so there is no RCU wait (but for reusing a freed group, see newGroup), and
// a packet sees the tables with e or without it. next must have the live tables'
// rules.
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
	boot, err := bootNow()
	if err != nil {
		return err
	}
	val := ruleEntry(model.Entry{Rule: id, Verdict: e.Verdict, Expires: e.Expires}, boot, timeNow())
	switch {
	case v4 && !e.Quarantine:
		// The DIR-24-8 table: a few aligned word writes in the live slot.
		de := e.Entry
		de.Rule = id
		if err := p.updateDirRange(p.slot, de, add, next.Ranges, p.live); err != nil {
			return err
		}
		// And the record RuntimeInDataPlane reads back.
		if err := p.writeEntry(prefixKey(tRuntime4, 0, e.Prefix), val, add); err != nil {
			return err
		}
	default:
		table := tRange6
		switch {
		case e.Quarantine && v4:
			table = tQuarantine4
		case e.Quarantine:
			table = tQuarantine6
		}
		rv := val
		if table == tRange6 {
			rv.Plen = uint8(e.Prefix.Bits())
		}
		if err := p.writeEntry(prefixKey(table, 0, e.Prefix), rv, add); err != nil {
			return err
		}
		// The entry first, then the mark that sends the /24's packets to it (the
		// config's flag for IPv6: the first IPv6 quarantine of the policy); on
		// removal the entry first, then the marks (the flag) no other quarantine
		// needs.
		switch {
		case table == tQuarantine4 && add:
			if err := p.markDirQuarantine(p.slot, e.Prefix); err != nil {
				return err
			}
		case table == tQuarantine4:
			if err := p.unmarkDirQuarantine(p.slot, e.Prefix, next.Quarantines); err != nil {
				return err
			}
		case table == tQuarantine6:
			need := add || slices.ContainsFunc(next.Quarantines, func(q model.Entry) bool {
				return q.Interfaces == nil && !q.Prefix.Addr().Is4()
			})
			if err := p.flagLiveConfig(cfgQuarantine6, need); err != nil {
				return err
			}
		case table == tRange6 && p.hashed[p.slot&1]:
			// The IPv6 ranges are in ranges_v6: the trie's runtime ones are looked at
			// only under the flag (set once the first is there, cleared once the last
			// has gone; kept when which are there is not known).
			set := p.runtime6[p.slot&1]
			if set != nil {
				if add {
					set[e.Prefix.Masked()] = true
				} else {
					delete(set, e.Prefix.Masked())
				}
			}
			if err := p.flagLiveConfig(cfgRuntime6, set == nil || len(set) > 0); err != nil {
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
		table := tScoped6
		if v4 {
			table = tScoped4
		}
		for _, ge := range plan.Ranges {
			if ge.Prefix != e.Prefix || ge.Rule != e.Rule {
				continue
			}
			if err := p.writeEntry(prefixKey(table, ge.Group, e.Prefix), val, add); err != nil {
				return err
			}
		}
	}
	p.tables = next
	return nil
}

// flagLiveConfig sets flag in the live config (clears it when !on), in place: the
// config map's value is written whole, but every byte but the flags' is written as it
// is, so a packet reads the config before or after, with or without the flag.
func (p *Program) flagLiveConfig(flag uint8, on bool) error {
	cm, err := p.liveConfig()
	if err != nil {
		return err
	}
	defer cm.Close()
	var cfg bpf.PortcullisPcConfig
	if err := cm.Lookup(uint32(0), &cfg); err != nil {
		return fmt.Errorf("reading the live config: %w", err)
	}
	if (cfg.Flags&flag != 0) == on {
		return nil
	}
	cfg.Flags ^= flag
	if err := cm.Put(uint32(0), &cfg); err != nil {
		return fmt.Errorf("writing the live config: %w", err)
	}
	return nil
}

// writeEntry adds (or removes) one entry of the live slot's prefixes trie in place.
func (p *Program) writeEntry(k bpf.PortcullisPcKey, val bpf.PortcullisPcEntry, add bool) error {
	m, err := p.trie(p.slot)
	if err != nil {
		return err
	}
	if m == nil {
		return fmt.Errorf("%w: the live slot has no prefix tables", ErrNoPolicy)
	}
	defer m.Close()
	if add {
		if err := m.Put(k, val); err != nil {
			return fmt.Errorf("writing the entry: %w", err)
		}
		return nil
	}
	if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
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
	m, err := p.trie(p.slot)
	if err != nil || m == nil {
		return nil, err
	}
	defer m.Close()
	var out []model.TableEntry
	var k bpf.PortcullisPcKey
	var v bpf.PortcullisPcEntry
	it := m.Iterate()
	for it.Next(&k, &v) {
		if v.Rule != id {
			continue
		}
		switch t := k.Table; t {
		case tQuarantine4, tQuarantine6, tRange6, tRuntime4:
			out = append(out, runtimeEntry(keyPrefix(k), v, t == tQuarantine4 || t == tQuarantine6, boot, now))
		}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("reading the prefix tables: %w", err)
	}
	return out, nil
}

// timeNow is time.Now, the wall clock that the boot-clock expiries are taken from.
var timeNow = time.Now

func prefixOf(addr []byte, bits uint32) netip.Prefix {
	a, _ := netip.AddrFromSlice(addr)
	return netip.PrefixFrom(a, int(bits))
}

func runtimeEntry(p netip.Prefix, v bpf.PortcullisPcEntry, quarantine bool, boot time.Duration, now time.Time) model.TableEntry {
	e := model.TableEntry{Quarantine: quarantine, Entry: model.Entry{Prefix: p, Rule: v.Rule, Verdict: model.Verdict(v.Verdict)}}
	if v.Expires != 0 {
		e.Expires = wallTime(v.Expires, boot, now)
	}
	return e
}
