package policy

import (
	"cmp"
	"encoding/binary"
	"net/netip"
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
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], k.hi)
	binary.BigEndian.PutUint64(b[8:], k.lo)
	a := netip.AddrFrom16(b)
	if k.fb>>8 == 0 {
		a = a.Unmap()
	}
	return a
}

// prefix returns the prefix k stands for.
func (k pkey) prefix() netip.Prefix { return netip.PrefixFrom(k.addr(), int(k.fb&0xff)) }

// compareAddr orders k and o by family and address only.
func (k pkey) compareAddr(o pkey) int {
	return cmp.Or(cmp.Compare(k.fb>>8, o.fb>>8), cmp.Compare(k.hi, o.hi), cmp.Compare(k.lo, o.lo))
}

// compare orders k and o as model.ComparePrefix orders their prefixes.
func (k pkey) compare(o pkey) int {
	if k.hi != o.hi || k.lo != o.lo || k.fb != o.fb {
		return cmp.Or(k.compareAddr(o), cmp.Compare(k.fb&0xff, o.fb&0xff))
	}
	return 0
}
