package loader

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"net/netip"
	"slices"
	"sync/atomic"

	"github.com/cilium/ebpf"

	"github.com/portcullis/portcullis/bpf"
	"github.com/portcullis/portcullis/model"
)

// The IPv6 ranges of a policy with many of them live in a hash (ranges_v6), searched
// by binary search on prefix lengths with markers (Waldvogel, Varghese, Turner,
// Plattner 1997, "Scalable High Speed IP Routing Lookups"): one entry per (length,
// masked address) for each range (a real prefix) and for each length the search
// passes through on its way to one (a marker), each holding the best matching range
// of its own prefix (bmp: the longest range that holds it; a range's own). The search
// over the slot's k sorted distinct lengths (lens_v6) probes the middle one (the lower
// of two), goes on among the longer lengths on a hit (remembering its bmp) and among
// the shorter on a miss: ceil(log2(k+1)) probes, however many ranges. A small table
// stays in the trie, about as fast there (hashMin6). Runtime ranges stay in the trie
// (PC_CFG_RUNTIME_V6: the program takes the longer of the two matches).

// hashMin6 is how many unscoped IPv6 ranges (the runtime ones apart) a policy needs for
// them to go into ranges_v6 rather than the trie. BenchmarkHash6Threshold has the hash
// ahead hot from about a hundred ranges and cold from a few hundred, tied at a dozen
// (docs/BENCHMARKS.md, "IPv6 ranges in a hash"); below this the gain, if any, does not
// pay for the build at Apply, the hash's bucket array and Release's extra wait. A
// variable for the tests.
var hashMin6 = 256

// maxLens6 is PC_V6_MAX_LENS: a policy whose IPv6 ranges have more distinct lengths
// stays in the trie.
const maxLens6 = len(bpf.PortcullisPcV6Lens{}.Len)

// The config flags of the hashed IPv6 ranges (enum pc_config_flag).
const (
	cfgHash6    = uint8(bpf.PortcullisPcConfigFlagPC_CFG_HASH_V6)
	cfgRuntime6 = uint8(bpf.PortcullisPcConfigFlagPC_CFG_RUNTIME_V6)
)

// hash6 is what ranges_v6 and lens_v6 hold for one policy.
type hash6 struct {
	keys []bpf.PortcullisPcV6Key
	vals []bpf.PortcullisPcV6Val
	lens bpf.PortcullisPcV6Lens
}

// key6 is an IPv6 prefix as two big-endian words and a length.
type key6 struct {
	hi, lo uint64
	l      uint8
}

func mask6(l int) (uint64, uint64) {
	switch {
	case l <= 0:
		return 0, 0
	case l < 64:
		return ^uint64(0) << (64 - l), 0
	case l == 64:
		return ^uint64(0), 0
	case l < 128:
		return ^uint64(0), ^uint64(0) << (128 - l)
	}
	return ^uint64(0), ^uint64(0)
}

func (k key6) to(l int) key6 {
	mh, ml := mask6(l)
	return key6{k.hi & mh, k.lo & ml, uint8(l)}
}

// lengths6 returns the distinct prefix lengths of ranges r6, ascending.
func lengths6(r6 []model.Entry) []int {
	var seen [129]bool
	for _, e := range r6 {
		seen[e.Prefix.Bits()] = true
	}
	var lens []int
	for l, ok := range seen {
		if ok {
			lens = append(lens, l)
		}
	}
	return lens
}

// hashable6 reports whether ranges r6 (unscoped IPv6 ranges) go into ranges_v6: they
// are at least hashMin6, of at most maxLens6 distinct lengths.
func hashable6(r6 []model.Entry) bool {
	return len(r6) > 0 && len(r6) >= hashMin6 && len(lengths6(r6)) <= maxLens6
}

// buildHash6 returns the ranges_v6 entries and lengths of ranges r6 (unscoped IPv6
// ranges, stable rule ids), or false when they do not go there (hashable6). Of two
// ranges of one prefix the first decides, as in the model.
//
// The ranges are walked in address order (shorter first at one address), with the
// stack of those that hold the one at hand: its ancestors, shortest first, at most one
// per length. A marker's bmp is the longest ancestor no longer than the marker; and the
// ranges that share a marker are consecutive in that order, so each marker is written
// once by remembering the last one of each length. No map: a million ranges take a
// sort and a pass.
func buildHash6(r6 []model.Entry) (hash6, bool) {
	if len(r6) == 0 || len(r6) < hashMin6 {
		return hash6{}, false
	}
	lens := lengths6(r6)
	if len(lens) > maxLens6 {
		return hash6{}, false
	}
	var at [129]int // length -> its index in lens
	for i, l := range lens {
		at[l] = i
	}
	// paths[j]: the indexes in lens where the search towards lens[j] must hit (go
	// longer) before it gets there: the markers of a range of that length.
	paths := make([][]int, len(lens))
	for j := range lens {
		for lo, hi := 0, len(lens); lo < hi; {
			mid := (lo + hi - 1) / 2 // the lower middle, as find_range6
			if mid == j {
				break
			}
			if mid < j {
				paths[j] = append(paths[j], mid)
				lo = mid + 1
			} else {
				hi = mid
			}
		}
	}
	type rk struct {
		key6
		i int // index in r6
	}
	rs := make([]rk, len(r6))
	for i, e := range r6 {
		a := e.Prefix.Masked().Addr().As16()
		rs[i] = rk{key6{binary.BigEndian.Uint64(a[:8]), binary.BigEndian.Uint64(a[8:]), uint8(e.Prefix.Bits())}, i}
	}
	less := func(a, b rk) int {
		switch {
		case a.hi != b.hi:
			return cmpU64(a.hi, b.hi)
		case a.lo != b.lo:
			return cmpU64(a.lo, b.lo)
		case a.l != b.l:
			return int(a.l) - int(b.l)
		}
		return a.i - b.i
	}
	if !slices.IsSortedFunc(rs, less) {
		slices.SortFunc(rs, less)
	}
	val := func(i int) bpf.PortcullisPcV6Val {
		return bpf.PortcullisPcV6Val{Rule: r6[i].Rule, Verdict: uint8(r6[i].Verdict), Len: uint8(r6[i].Prefix.Bits()), Hit: 1}
	}
	h := hash6{keys: make([]bpf.PortcullisPcV6Key, 0, 2*len(rs)), vals: make([]bpf.PortcullisPcV6Val, 0, 2*len(rs))}
	emit := func(k key6, v bpf.PortcullisPcV6Val) {
		bk := bpf.PortcullisPcV6Key{Len: uint32(k.l)}
		binary.BigEndian.PutUint64(bk.Addr[:8], k.hi)
		binary.BigEndian.PutUint64(bk.Addr[8:], k.lo)
		h.keys, h.vals = append(h.keys, bk), append(h.vals, v)
	}
	var last [maxLens6]key6 // the last entry written at each length
	var written [maxLens6]bool
	var stack []rk
	for n, r := range rs {
		if n > 0 && r.key6 == rs[n-1].key6 {
			continue // a later range of the same prefix
		}
		for len(stack) > 0 && r.to(int(stack[len(stack)-1].l)) != stack[len(stack)-1].key6 {
			stack = stack[:len(stack)-1]
		}
		j := at[r.l]
		for _, m := range paths[j] {
			mk := r.to(lens[m])
			if written[m] && last[m] == mk {
				continue // a range, or the marker of a range before (same bmp)
			}
			last[m], written[m] = mk, true
			v := bpf.PortcullisPcV6Val{}
			for s := len(stack) - 1; s >= 0; s-- {
				if int(stack[s].l) <= lens[m] {
					v = val(stack[s].i)
					break
				}
			}
			emit(mk, v)
		}
		last[j], written[j] = r.key6, true
		emit(r.key6, val(r.i))
		stack = append(stack, r)
	}
	h.lens.N = uint32(len(lens))
	for i, l := range lens {
		h.lens.Len[i] = uint8(l)
		var m [16]byte
		mh, ml := mask6(l)
		binary.BigEndian.PutUint64(m[:8], mh)
		binary.BigEndian.PutUint64(m[8:], ml)
		for w := range 4 {
			h.lens.Mask[i][w] = binary.NativeEndian.Uint32(m[4*w:])
		}
	}
	return h, true
}

func cmpU64(a, b uint64) int {
	if a < b {
		return -1
	}
	return 1
}

// hashOf returns slot's ranges_v6 map (nil if the slot has none), for the caller to close.
func (p *Program) hashOf(slot uint32) (*ebpf.Map, error) {
	var m *ebpf.Map
	err := p.objs.RangesV6.Lookup(slot, &m)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the IPv6 range hash: %w", err)
	}
	return m, nil
}

// hashCap is the max_entries of a ranges_v6 map for n entries: the next power of two
// (the kernel gives a hash that many buckets anyway), at least 1024.
func hashCap(n int) uint32 {
	if n <= 1024 {
		return 1024
	}
	return 1 << bits.Len(uint(n-1))
}

// newHash6 creates an empty ranges_v6 map of capacity n.
func (p *Program) newHash6(n uint32) (*ebpf.Map, error) {
	spec := p.spec.Maps[bpf.PortcullisMapRangesV6].InnerMap.Copy()
	spec.MaxEntries = n
	m, err := ebpf.NewMap(spec)
	if err != nil {
		return nil, fmt.Errorf("creating the IPv6 range hash: %w", err)
	}
	return m, nil
}

// hashWrite is the writing of one policy's ranges_v6 entries into a slot's hash, in
// chunks that any number of writers take in turn (Apply's two: the DIR-24-8 writer
// joins once its table is written).
type hashWrite struct {
	slot    uint32
	h       hash6
	m       *ebpf.Map
	install bool // m is a fresh hash, to be put in the slot once full
	next    atomic.Int64
}

// prepareHash6 writes slot's lengths and returns the writing of h into its hash: the
// empty hash Release left, in place, when it is big enough (no map-in-map update, so
// the config switch stays the swap's one RCU wait); else a fresh one sized for h, which
// finish puts in the slot (a map-in-map update: an RCU wait, and the kernel frees the
// hash it replaces). No packet may read slot.
func (p *Program) prepareHash6(slot uint32, h hash6) (*hashWrite, error) {
	if err := p.objs.LensV6.Put(slot, &h.lens); err != nil {
		return nil, fmt.Errorf("writing the IPv6 prefix lengths: %w", err)
	}
	w := &hashWrite{slot: slot, h: h}
	empty := p.emptyHash[slot]
	p.emptyHash[slot] = false
	if empty {
		m, err := p.hashOf(slot)
		if err != nil {
			return nil, err
		}
		if m != nil && int(m.MaxEntries()) >= len(h.keys) {
			w.m = m
			return w, nil
		}
		if m != nil {
			m.Close()
		}
	}
	m, err := p.newHash6(hashCap(len(h.keys)))
	if err != nil {
		return nil, err
	}
	w.m, w.install = m, true
	return w, nil
}

// fill writes chunks of the entries until none is left.
func (w *hashWrite) fill() error {
	const chunk = 1 << 14
	for {
		i := int(w.next.Add(chunk)) - chunk
		if i >= len(w.h.keys) {
			return nil
		}
		j := min(i+chunk, len(w.h.keys))
		n, err := w.m.BatchUpdate(w.h.keys[i:j], w.h.vals[i:j], nil)
		if err == nil && n != j-i {
			err = fmt.Errorf("wrote %d of %d entries", n, j-i)
		}
		if err != nil {
			w.next.Store(int64(len(w.h.keys))) // the other writers stop too
			return fmt.Errorf("filling the IPv6 range hash: %w", err)
		}
	}
}

// finishHash6 puts a fresh hash in the slot once it is full (when ok: every write
// succeeded), and lets go of it.
func (p *Program) finishHash6(w *hashWrite, ok bool) error {
	defer w.m.Close() // the outer map holds its own reference
	if !w.install || !ok {
		return nil
	}
	if err := p.objs.RangesV6.Put(w.slot, w.m); err != nil {
		return fmt.Errorf("installing the IPv6 range hash: %w", err)
	}
	return nil
}

// releaseHash6 replaces slot's ranges_v6 map, if it may hold entries, with an empty one
// of the same capacity (one RCU wait, after which the kernel frees the old one whole),
// for the next Apply to fill in place.
func (p *Program) releaseHash6(slot uint32) error {
	if p.emptyHash[slot] {
		return nil
	}
	old, err := p.hashOf(slot)
	if err != nil || old == nil {
		return err
	}
	n := old.MaxEntries()
	old.Close()
	m, err := p.newHash6(n)
	if err != nil {
		return err
	}
	err = p.objs.RangesV6.Put(slot, m)
	m.Close()
	if err != nil {
		return fmt.Errorf("freeing the IPv6 range hash: %w", err)
	}
	p.emptyHash[slot] = true
	return nil
}

// splitRanges6 parts the unscoped IPv6 ranges r6 into those the hash may hold and the
// runtime ones (rules in unblock), which stay in the trie: UpdateEntry adds and removes
// those there with one update each, and RuntimeInDataPlane reads them back.
func splitRanges6(r6 []model.Entry, unblock map[uint32]bool) (policy, runtime []model.Entry) {
	if len(unblock) == 0 {
		return r6, nil
	}
	policy = make([]model.Entry, 0, len(r6))
	for _, e := range r6 {
		if unblock[e.Rule] {
			runtime = append(runtime, e)
		} else {
			policy = append(policy, e)
		}
	}
	return policy, runtime
}

// prefixSet is the set of prefixes of entries.
func prefixSet(entries []model.Entry) map[netip.Prefix]bool {
	s := make(map[netip.Prefix]bool, len(entries))
	for _, e := range entries {
		s[e.Prefix.Masked()] = true
	}
	return s
}
