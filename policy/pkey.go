package policy

import (
	"cmp"
	"encoding/binary"
	"net/netip"
	"slices"
	"sync"
)

// pkey is a prefix as plain integers, ordered as model.ComparePrefix orders prefixes
// (IPv4 before IPv6, then address, then length). The checks and the compile sort a
// million of them for a large policy: unlike netip.Prefix (which holds a pointer for
// its family) they hold no pointers, so the garbage collector never scans those
// slices and sorting them moves plain words, without write barriers.
type pkey struct {
	hi, lo uint64 // the address, 16 bytes big-endian (IPv4 as ::ffff:a.b.c.d)
	fb     uint16 // family (0 IPv4, 1 IPv6) << 8 | prefix length
}

func keyOf(p netip.Prefix) pkey {
	a := p.Addr()
	if a.Is4() { // what As16 gives, without the copy
		b := a.As4()
		return pkey{0, 0xffff<<32 | uint64(binary.BigEndian.Uint32(b[:])), uint16(p.Bits())}
	}
	b := a.As16()
	fb := uint16(p.Bits())
	if !a.Is4() {
		fb |= 1 << 8
	}
	return pkey{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:]), fb}
}

// addrKey is a's family and address as in pkey (length 0).
func addrKey(a netip.Addr) pkey { return keyOf(netip.PrefixFrom(a, 0)) }

// addr returns the address of k.
func (k pkey) addr() netip.Addr {
	if k.fb>>8 == 0 {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], uint32(k.lo))
		return netip.AddrFrom4(b)
	}
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], k.hi)
	binary.BigEndian.PutUint64(b[8:], k.lo)
	return netip.AddrFrom16(b)
}

// prefix returns the prefix k stands for.
func (k pkey) prefix() netip.Prefix { return netip.PrefixFrom(k.addr(), int(k.fb&0xff)) }

// compareAddr orders k and o by family and address only.
func (k pkey) compareAddr(o pkey) int {
	switch {
	case k.fb>>8 != o.fb>>8:
		return cmp.Compare(k.fb>>8, o.fb>>8)
	case k.hi != o.hi:
		return cmp.Compare(k.hi, o.hi)
	}
	return cmp.Compare(k.lo, o.lo)
}

// compare orders k and o as model.ComparePrefix orders their prefixes.
func (k pkey) compare(o pkey) int {
	if c := k.compareAddr(o); c != 0 {
		return c
	}
	return cmp.Compare(k.fb&0xff, o.fb&0xff)
}

// digit returns the d-th 16-bit digit of k's order, least significant first: the
// length, the address from its last 16 bits to its first, then the family.
func (k pkey) digit(d int) uint16 {
	switch {
	case d == 0:
		return k.fb & 0xff
	case d <= 4:
		return uint16(k.lo >> (16 * (d - 1)))
	case d <= 8:
		return uint16(k.hi >> (16 * (d - 5)))
	}
	return k.fb >> 8
}

const keyDigits = 10

// sortByKey sorts xs by key, stably: a prefix repeated stays in the order it came.
// Large slices get an LSD radix sort on 16-bit digits, where a digit that is the
// same in every key (the family; the first 96 bits of every IPv4 address) costs no
// pass: at a million prefixes it takes a few passes over plain memory where a
// comparison sort took twenty times as long. A sorted slice costs one pass.
func sortByKey[T any](xs []T, key func(*T) pkey) {
	less := func(a, b T) int { return key(&a).compare(key(&b)) }
	if len(xs) < 1024 {
		slices.SortStableFunc(xs, less)
		return
	}
	sorted := true
	for i := 1; i < len(xs); i++ {
		if key(&xs[i-1]).compare(key(&xs[i])) > 0 {
			sorted = false
			break
		}
	}
	if sorted {
		return
	}
	// Both families: IPv4 first (as the order has it), stably, then each part sorted
	// on its own, the two at once. A mixed slice pays a pass for every digit either
	// family varies in, for every key (IPv4's zero upper words differ from IPv6's);
	// apart, IPv4 costs its length and address digits only, and IPv6 skips the digits
	// its prefixes share (an ISP's /32).
	n4 := 0
	for i := range xs {
		if key(&xs[i]).fb>>8 == 0 {
			n4++
		}
	}
	if n4 > 0 && n4 < len(xs) {
		parts := make([]T, len(xs))
		a, b := 0, n4
		for i := range xs {
			if key(&xs[i]).fb>>8 == 0 {
				parts[a], a = xs[i], a+1
			} else {
				parts[b], b = xs[i], b+1
			}
		}
		copy(xs, parts)
		var wg sync.WaitGroup
		wg.Go(func() { sortByKey(xs[:n4], key) })
		sortByKey(xs[n4:], key)
		wg.Wait()
		return
	}
	// One pass counts every digit; a digit whose count is all in one bucket is skipped.
	counts := make([][1 << 16]uint32, keyDigits)
	for i := range xs {
		k := key(&xs[i])
		for d := range keyDigits {
			counts[d][k.digit(d)]++
		}
	}
	src, dst := xs, make([]T, len(xs))
	for d := range keyDigits {
		c := &counts[d]
		if c[key(&src[0]).digit(d)] == uint32(len(src)) {
			continue
		}
		var sum uint32
		for i, n := range c {
			c[i] = sum
			sum += n
		}
		for i := range src {
			b := key(&src[i]).digit(d)
			dst[c[b]] = src[i]
			c[b]++
		}
		src, dst = dst, src
	}
	if &src[0] != &xs[0] {
		copy(xs, src)
	}
}
