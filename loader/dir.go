package loader

import (
	"fmt"
	"math/bits"
	"net/netip"
	"os"
	"slices"
	"sync/atomic"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/portcullis/portcullis/bpf"
	"github.com/portcullis/portcullis/model"
)

// The IPv4 ranges that apply on every interface live in a DIR-24-8 table (see enum
// pc_dir_bits in bpf/types.h): dir_v4 holds one u32 per /24 of each slot, which
// decides every address of that /24 or names a group of 256 entries in dir8_v4 (for
// the /24s with ranges longer than /24), one per address. A lookup costs one or two
// array reads however many prefixes the policy holds. Both arrays are written through
// mmap: the idle slot in place (no packet reads it, since the last switch waited for
// every packet that could), the live slot by runtime entries one aligned word at a
// time, so a packet reads each word whole, before or after.

// Bits of an entry (enum pc_dir_bits).
const (
	dirRule       = uint32(bpf.PortcullisPcDirBitsPC_DIR_RULE)
	dirVerdict    = uint32(bpf.PortcullisPcDirBitsPC_DIR_VERDICT_SHIFT)
	dirLen        = uint32(bpf.PortcullisPcDirBitsPC_DIR_LEN_SHIFT)
	dirGroupMask  = uint32(bpf.PortcullisPcDirBitsPC_DIR_GROUP_MASK)
	dirHit        = uint32(bpf.PortcullisPcDirBitsPC_DIR_HIT)
	dirQuarantine = uint32(bpf.PortcullisPcDirBitsPC_DIR_QUARANTINE)
	dirGroup      = uint32(bpf.PortcullisPcDirBitsPC_DIR_GROUP)
	// dirDecision is the part of an entry that a range paints: which range decides.
	dirDecision = dirHit | dirRule | 3<<dirVerdict | 63<<dirLen

	dirSlot   = 1 << 24                           // dir_v4 entries per slot: one per /24
	dirChunk  = len(bpf.PortcullisPcDirChunk{}.E) // entries per array value
	dirChunks = dirSlot / dirChunk                // dir_v4 values per slot
)

// dirState is what this process knows of the DIR-24-8 tables it writes.
type dirState struct {
	mem, mem8 *mapping // dir_v4 and dir8_v4, mapped
	buf       []uint32 // one slot's dir_v4 being built; all zero between builds
	// touched[slot] marks the dir_v4 chunks of the slot holding anything (nil: not
	// known, as for tables adopted from pins: every chunk is written).
	touched [2][]uint64
	// groups[slot] is how many dir8_v4 groups the slot has handed out (-1: not known).
	groups [2]int
	// freed[slot] are groups that no /24 names any more (a runtime range's removal
	// folded them back into their /24's word), which a packet may still be reading;
	// ready[slot] are freed groups past an RCU wait, free to reuse.
	freed, ready [2][]uint32
}

// dirValue is what range e (with its stable rule id) paints.
func dirValue(e model.Entry) uint32 {
	return dirHit | uint32(e.Prefix.Bits())<<dirLen | uint32(e.Verdict)<<dirVerdict | e.Rule&dirRule
}

func entryLen(v uint32) int { return int(v >> dirLen & 63) }

// span24 is the first /24 index of prefix p (IPv4) and how many /24s it covers (1 for
// prefixes of /24 or longer).
func span24(p netip.Prefix) (first, n uint32) {
	a := p.Masked().Addr().As4()
	first = uint32(a[0])<<16 | uint32(a[1])<<8 | uint32(a[2])
	if p.Bits() >= 24 {
		return first, 1
	}
	return first, 1 << (24 - p.Bits())
}

// span8 is the first address of prefix p (longer than /24) within its /24, and how
// many addresses it covers.
func span8(p netip.Prefix) (first, n uint32) {
	return uint32(p.Masked().Addr().As4()[3]), 1 << (32 - p.Bits())
}

// dirGroups is how many dir8_v4 groups a slot holds (PC_DIR8_GROUPS: the ABI test
// holds it to the map's size).
const dirGroups = model.MaxLongIPv4Blocks

func (p *Program) dirMemory() error {
	if p.dir.mem == nil {
		mem, err := mapMemory(p.objs.DirV4)
		if err != nil {
			return fmt.Errorf("mapping %s: %w", bpf.PortcullisMapDirV4, err)
		}
		mem8, err := mapMemory(p.objs.Dir8V4)
		if err != nil {
			mem.unmap()
			return fmt.Errorf("mapping %s: %w", bpf.PortcullisMapDir8V4, err)
		}
		p.dir.mem, p.dir.mem8 = mem, mem8
		p.dir.groups = [2]int{-1, -1}
	}
	return nil
}

// writeDir makes slot's DIR-24-8 table hold ranges (IPv4, unscoped, stable rule ids)
// and mark the /24s that quarantines (IPv4, unscoped) overlap. No packet may read slot.
func (p *Program) writeDir(slot uint32, ranges, quarantines []model.Entry) error {
	if err := p.dirMemory(); err != nil {
		return err
	}
	d := &p.dir
	if d.buf == nil {
		d.buf = make([]uint32, dirSlot)
	}
	buf, touched := d.buf, make([]uint64, dirChunks/64)
	defer func() {
		for w, set := range touched {
			for set != 0 {
				c := w*64 + bits.TrailingZeros64(set)
				clear(buf[c*dirChunk : (c+1)*dirChunk])
				set &= set - 1
			}
		}
	}()
	mark := func(first, n uint32) {
		for c := first / uint32(dirChunk); c <= (first+n-1)/uint32(dirChunk); c++ {
			touched[c/64] |= 1 << (c % 64)
		}
	}
	// Shortest first, so that a longer range paints over the shorter ones it lies in.
	var byLen [33][]int32
	for i := range ranges {
		l := ranges[i].Prefix.Bits()
		byLen[l] = append(byLen[l], int32(i))
	}
	var groups []uint32 // dir8_v4 of the slot, 256 entries a group
	for l, idx := range byLen {
		for _, i := range idx {
			e := &ranges[i]
			first, n := span24(e.Prefix)
			v := dirValue(*e)
			mark(first, n)
			if l <= 24 {
				for x := first; x < first+n; x++ {
					buf[x] = v
				}
				continue
			}
			// Every range of /24 or shorter is painted: the /24's entry is its own
			// decision until its first longer range makes it name a group.
			if buf[first]&dirGroup == 0 {
				g := uint32(len(groups) / 256)
				if int(g) == dirGroups {
					return fmt.Errorf("%w: the policy has IPv4 ranges longer than /24 in more than %d /24s", ErrTooManyGroups, dirGroups)
				}
				base := buf[first]
				for range 256 {
					groups = append(groups, base)
				}
				buf[first] = dirGroup | g
			}
			g := buf[first] & dirGroupMask
			off, cnt := span8(e.Prefix)
			for x := off; x < off+cnt; x++ {
				groups[g*256+x] = v
			}
		}
	}
	for _, e := range quarantines {
		first, n := span24(e.Prefix)
		for i := first; i < first+n; i++ {
			buf[i] |= dirQuarantine
		}
		mark(first, n)
	}

	// Write what this table holds and what the slot held before.
	old := d.touched[slot]
	d.touched[slot], d.groups[slot] = nil, -1 // until written
	dirty := func(c int) bool {
		return old == nil || touched[c/64]&(1<<(c%64)) != 0 || old[c/64]&(1<<(c%64)) != 0
	}
	base := int64(slot) * dirSlot * 4
	for c := 0; c < dirChunks; {
		if !dirty(c) {
			c++
			continue
		}
		end := c + 1
		for end < dirChunks && dirty(end) {
			end++
		}
		if _, err := d.mem.WriteAt(u32Bytes(buf[c*dirChunk:end*dirChunk]), base+int64(c*dirChunk*4)); err != nil {
			return fmt.Errorf("writing %s: %w", bpf.PortcullisMapDirV4, err)
		}
		c = end
	}
	if len(groups) > 0 {
		if _, err := d.mem8.WriteAt(u32Bytes(groups), p.groupOffset(slot, 0, 0)); err != nil {
			return fmt.Errorf("writing %s: %w", bpf.PortcullisMapDir8V4, err)
		}
	}
	d.touched[slot], d.groups[slot] = touched, len(groups)/256
	d.freed[slot], d.ready[slot] = nil, nil
	return nil
}

func u32Bytes(w []uint32) []byte {
	if len(w) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&w[0])), len(w)*4)
}

// groupOffset is the byte offset in dir8_v4 of entry i of group g of slot.
func (p *Program) groupOffset(slot, g, i uint32) int64 {
	return (int64(slot)*int64(dirGroups)*256 + int64(g)*256 + int64(i)) * 4
}

// dirRead reads the dir_v4 entries [first, first+n) of slot.
func (p *Program) dirRead(slot, first, n uint32) ([]uint32, error) {
	if err := p.dirMemory(); err != nil {
		return nil, err
	}
	out := make([]uint32, n)
	if _, err := p.dir.mem.ReadAt(u32Bytes(out), int64(slot)*dirSlot*4+int64(first)*4); err != nil {
		return nil, fmt.Errorf("reading %s: %w", bpf.PortcullisMapDirV4, err)
	}
	return out, nil
}

// groupRead reads group g of slot.
func (p *Program) groupRead(slot, g uint32) ([]uint32, error) {
	if int(g) >= dirGroups {
		return nil, fmt.Errorf("%s names group %d of %d", bpf.PortcullisMapDirV4, g, dirGroups)
	}
	out := make([]uint32, 256)
	if _, err := p.dir.mem8.ReadAt(u32Bytes(out), p.groupOffset(slot, g, 0)); err != nil {
		return nil, fmt.Errorf("reading %s: %w", bpf.PortcullisMapDir8V4, err)
	}
	return out, nil
}

// store writes one word through mem at off: an aligned 4-byte store, which a packet
// reads whole, before or after. It is atomic (a release store), so that what was
// written before it (a new group) is seen by any CPU that sees it, on every
// architecture.
func store(mem *mapping, off int64, v uint32) error {
	if off < 0 || off%4 != 0 || off+4 > int64(len(mem.b)) {
		return fmt.Errorf("writing the entry: offset %d out of range", off)
	}
	atomic.StoreUint32((*uint32)(unsafe.Pointer(&mem.b[off])), v)
	return nil
}

// mapping is the memory of a BPF_F_MMAPABLE map, mapped shared. Unlike
// ebpf.Map.Memory, whose mapping lasts until the garbage collector finds it, it is
// unmapped by unmap (Program.Close): a mapping keeps its map, here 192 MiB of kernel
// memory, alive after every descriptor of the map is closed.
type mapping struct{ b []byte }

func mapMemory(m *ebpf.Map) (*mapping, error) {
	page := os.Getpagesize()
	size := (int(m.ValueSize())*int(m.MaxEntries()) + page - 1) / page * page
	b, err := unix.Mmap(m.FD(), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, err
	}
	return &mapping{b: b}, nil
}

func (mm *mapping) unmap() {
	if mm != nil && mm.b != nil {
		unix.Munmap(mm.b)
		mm.b = nil
	}
}

func (mm *mapping) ReadAt(b []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(b)) > int64(len(mm.b)) {
		return 0, fmt.Errorf("read of %d bytes at %d out of range", len(b), off)
	}
	return copy(b, mm.b[off:]), nil
}

func (mm *mapping) WriteAt(b []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(b)) > int64(len(mm.b)) {
		return 0, fmt.Errorf("write of %d bytes at %d out of range", len(b), off)
	}
	return copy(mm.b[off:], b), nil
}

// dirStore writes dir_v4 entry i of slot.
func (p *Program) dirStore(slot, i, v uint32) error {
	if err := store(p.dir.mem, int64(slot)*dirSlot*4+int64(i)*4, v); err != nil {
		return err
	}
	if t := p.dir.touched[slot]; t != nil {
		c := i / uint32(dirChunk)
		t[c/64] |= 1 << (c % 64)
	}
	return nil
}

// repaint is how an update changes one entry: adding range value v of length l
// paints the entries that no longer range decides; removing it gives the entries it
// decided (same length and rule) to repl, the range that decides once it is gone.
func repaint(x, v uint32, l int, add bool, repl uint32) uint32 {
	switch {
	case add && (x&dirHit == 0 || entryLen(x) <= l):
		return x&^dirDecision | v
	case !add && x&dirHit != 0 && entryLen(x) == l && x&dirRule == v&dirRule:
		return x&^dirDecision | repl
	}
	return x
}

// updateDirRange adds (or removes) IPv4 range e (stable rule id) in the live slot.
// On removal, the addresses that e decided go to the longest unscoped range of next
// (compiled ids, mapped through ids) shorter than e that covers it. A /24 that gets its
// first range longer than /24 gets a new group, written whole before the /24 names it.
func (p *Program) updateDirRange(slot uint32, e model.Entry, add bool, next []model.Entry, ids []uint32) error {
	if err := p.dirMemory(); err != nil {
		return err
	}
	v, l := dirValue(e), e.Prefix.Bits()
	var repl uint32
	if !add {
		best := -1
		for _, r := range next {
			if r.Prefix.Addr().Is4() && r.Interfaces == nil && r.Prefix.Bits() < l && r.Prefix.Bits() > best && r.Prefix.Contains(e.Prefix.Addr()) {
				id, err := stableID(ids, r.Rule, r.Prefix)
				if err != nil {
					return err
				}
				r.Rule = id
				best, repl = r.Prefix.Bits(), dirValue(r)
			}
		}
	}
	first, n := span24(e.Prefix)
	cur, err := p.dirRead(slot, first, n)
	if err != nil {
		return err
	}
	off, cnt := uint32(0), uint32(256)
	if l > 24 {
		off, cnt = span8(e.Prefix)
	}
	for i, c := range cur {
		x := first + uint32(i)
		if c&dirGroup == 0 {
			if l <= 24 {
				if nv := repaint(c, v, l, add, repl); nv != c {
					if err := p.dirStore(slot, x, nv); err != nil {
						return err
					}
				}
				continue
			}
			if !add {
				continue // not there
			}
			return p.newGroup(slot, x, c, off, cnt, v)
		}
		g := c & dirGroupMask
		entries, err := p.groupRead(slot, g)
		if err != nil {
			return err
		}
		for j := off; j < off+cnt; j++ {
			if nv := repaint(entries[j], v, l, add, repl); nv != entries[j] {
				if err := store(p.dir.mem8, p.groupOffset(slot, g, j), nv); err != nil {
					return err
				}
				entries[j] = nv
			}
		}
		// A group that no range longer than /24 decides any more goes back into its
		// /24's word, and waits to be reused.
		if entryLen(entries[0]) <= 24 && !slices.ContainsFunc(entries, func(e uint32) bool { return e != entries[0] }) {
			if err := p.dirStore(slot, x, entries[0]|c&dirQuarantine); err != nil {
				return err
			}
			p.dir.freed[slot] = append(p.dir.freed[slot], g)
		}
	}
	return nil
}

// newGroup gives /24 x of slot (entry c) a group: its own decision everywhere but at
// [off, off+cnt), where v decides. The group is written before the /24 names it. It
// is a group never handed out, else a freed one: those wait for one RCU grace period
// first (synchronize), since a packet that read its /24's word before the group was
// folded back may still be reading it.
func (p *Program) newGroup(slot, x, c, off, cnt, v uint32) error {
	d := &p.dir
	if d.groups[slot] < 0 { // not known (tables adopted from pins): what dir_v4 names
		all, err := p.dirRead(slot, 0, dirSlot)
		if err != nil {
			return err
		}
		named := make([]bool, dirGroups)
		used := 0
		for _, e := range all {
			if e&dirGroup != 0 && int(e&dirGroupMask) < len(named) {
				named[e&dirGroupMask] = true
				used = max(used, int(e&dirGroupMask)+1)
			}
		}
		d.groups[slot], d.freed[slot], d.ready[slot] = used, nil, nil
		for g := range used {
			if !named[g] {
				d.freed[slot] = append(d.freed[slot], uint32(g))
			}
		}
	}
	if len(d.ready[slot]) == 0 && d.groups[slot] >= dirGroups && len(d.freed[slot]) > 0 {
		if err := p.synchronize(); err != nil {
			return err
		}
		d.ready[slot], d.freed[slot] = d.freed[slot], nil
	}
	var g uint32
	switch {
	case d.groups[slot] < dirGroups:
		g = uint32(d.groups[slot])
	case len(d.ready[slot]) > 0:
		g = d.ready[slot][len(d.ready[slot])-1]
	default:
		return fmt.Errorf("%w: all %d are taken by ranges longer than /24 in distinct /24s", ErrTooManyGroups, dirGroups)
	}
	entries := make([]uint32, 256)
	for j := range entries {
		entries[j] = c & dirDecision
		if uint32(j) >= off && uint32(j) < off+cnt {
			entries[j] = v
		}
	}
	if _, err := d.mem8.WriteAt(u32Bytes(entries), p.groupOffset(slot, g, 0)); err != nil {
		return fmt.Errorf("writing %s: %w", bpf.PortcullisMapDir8V4, err)
	}
	if err := p.dirStore(slot, x, dirGroup|g|c&dirQuarantine); err != nil {
		return err
	}
	if d.groups[slot] < dirGroups {
		d.groups[slot]++
	} else {
		d.ready[slot] = d.ready[slot][:len(d.ready[slot])-1]
	}
	return nil
}

// synchronize returns once no program run that began before it is still running:
// the kernel waits for an RCU grace period on every map-in-map update, and putting the
// live config back in its own place is one that changes nothing else.
func (p *Program) synchronize() error {
	cm, err := p.liveConfig()
	if err != nil {
		return err
	}
	defer cm.Close()
	if err := p.objs.Policy.Put(uint32(0), cm); err != nil {
		return fmt.Errorf("waiting for running programs: %w", err)
	}
	return nil
}

// markDirQuarantine marks the /24s that quarantine prefix q overlaps in slot, so that
// their packets look in the quarantine trie (unmarkDirQuarantine clears them again).
func (p *Program) markDirQuarantine(slot uint32, q netip.Prefix) error {
	first, n := span24(q)
	cur, err := p.dirRead(slot, first, n)
	if err != nil {
		return err
	}
	for i, c := range cur {
		if c&dirQuarantine == 0 {
			if err := p.dirStore(slot, first+uint32(i), c|dirQuarantine); err != nil {
				return err
			}
		}
	}
	return nil
}

// unmarkDirQuarantine clears the marks of the /24s that quarantine prefix q overlapped
// in slot (its entry already gone from the trie) that no quarantine of remaining (the
// policy's quarantines after q's removal; the IPv4 ones that apply on every interface
// keep marks) overlaps, so that their packets skip the quarantine trie again. A packet
// that read a mark just before it is cleared looks in the trie and finds nothing
// there that it would not find after.
func (p *Program) unmarkDirQuarantine(slot uint32, q netip.Prefix, remaining []model.Entry) error {
	first, n := span24(q)
	keep := make([]uint64, (n+63)/64)
	for _, r := range remaining {
		if r.Interfaces != nil || !r.Prefix.Addr().Is4() || !r.Prefix.Overlaps(q) {
			continue
		}
		f, m := span24(r.Prefix)
		for i := max(f, first); i < min(f+m, first+n); i++ {
			keep[(i-first)/64] |= 1 << ((i - first) % 64)
		}
	}
	cur, err := p.dirRead(slot, first, n)
	if err != nil {
		return err
	}
	for i, c := range cur {
		if c&dirQuarantine != 0 && keep[i/64]&(1<<(i%64)) == 0 {
			if err := p.dirStore(slot, first+uint32(i), c&^dirQuarantine); err != nil {
				return err
			}
		}
	}
	return nil
}
