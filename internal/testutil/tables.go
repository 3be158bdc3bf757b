package testutil

import (
	"math/rand/v2"
	"net/netip"

	"github.com/portcullis/portcullis/model"
)

// ISPTables is an ISP's policy of about n source prefixes: a few hundred dynamic pools
// (/12-/20 in 100.64.0.0/10, dropped) and customer entries inside them (/24s and /32s,
// passed), with a quarter as many IPv6 entries (/32-/48 pools in 2001:db8::/32 and
// /64 and /128 customers). Deterministic.
func ISPTables(n int) *model.Tables {
	t := &model.Tables{DefaultVerdict: model.Pass, Governed: []uint16{25}, RuleNames: []string{"default", "pools", "customers"}}
	seen := map[netip.Prefix]bool{}
	add := func(p netip.Prefix, rule uint32, v model.Verdict) {
		p = p.Masked()
		if !seen[p] {
			seen[p] = true
			t.Ranges = append(t.Ranges, model.Entry{Prefix: p, Rule: rule, Verdict: v})
		}
	}
	v4 := func(a uint32, bits int) netip.Prefix {
		return netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)}), bits)
	}
	const cgnat = uint32(100)<<24 | 64<<16 // 100.64.0.0/10
	// The 4 /12s, then /16s and /20s: about min(300, n/2) pools.
	pools := min(300, max(n/2, 1))
	for i := range pools {
		switch {
		case i < 4:
			add(v4(cgnat|uint32(i)<<20, 12), 1, model.Drop)
		case i < 64:
			add(v4(cgnat|uint32(i)<<16, 16), 1, model.Drop)
		default:
			add(v4(cgnat|uint32(i*37%1024)<<12, 20), 1, model.Drop)
		}
	}
	x := uint32(2463534242) // xorshift: customers spread over the pools
	next := func() uint32 { x ^= x << 13; x ^= x >> 17; x ^= x << 5; return x }
	for len(t.Ranges) < n {
		a := cgnat | next()&(1<<22-1)
		if next()%10 == 0 {
			add(v4(a, 24), 2, model.Pass)
		} else {
			add(v4(a, 32), 2, model.Pass)
		}
	}
	n6 := max(n/4, 1)
	for i := 0; i < n6; i++ {
		b := netip.MustParseAddr("2001:db8::").As16()
		switch {
		case i < min(300, max(n6/2, 1)):
			bits := 32 + 8*(i%3) // /32, /40, /48
			if i == 0 {
				bits = 32
			} else {
				b[4], b[5] = byte(i>>8), byte(i)
			}
			add(netip.PrefixFrom(netip.AddrFrom16(b), bits), 1, model.Drop)
		default:
			v := next()
			b[4], b[5], b[6], b[7] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
			if v%10 == 0 {
				add(netip.PrefixFrom(netip.AddrFrom16(b), 64), 2, model.Pass)
			} else {
				w := next()
				b[12], b[13], b[14], b[15] = byte(w>>24), byte(w>>16), byte(w>>8), byte(w)
				add(netip.PrefixFrom(netip.AddrFrom16(b), 128), 2, model.Pass)
			}
		}
	}
	return t
}

// RandomV6Ranges is a random policy's unscoped IPv6 ranges: about n distinct prefixes
// of the lengths in lens (each length used), grown the way real tables nest: new
// prefixes anywhere, prefixes inside earlier ones (longer), around them (shorter) and
// beside them (the adjacent prefix of the same length). None lies in the IPv4-mapped
// space (::ffff:0:0/96), which policies keep as IPv4. Rules 1 to 8, verdicts of every
// kind; deterministic for a seed.
func RandomV6Ranges(seed uint64, n int, lens []int) []model.Entry {
	rng := rand.New(rand.NewPCG(seed, 0x76367636))
	seen := map[netip.Prefix]bool{}
	var out []model.Entry
	verdicts := []model.Verdict{model.Drop, model.Reset, model.Pass, model.Monitor}
	add := func(p netip.Prefix) {
		p = p.Masked()
		if seen[p] || (p.Bits() >= 96 && p.Addr().Is4In6()) {
			return
		}
		seen[p] = true
		out = append(out, model.Entry{Prefix: p, Rule: 1 + uint32(rng.IntN(8)), Verdict: verdicts[rng.IntN(len(verdicts))]})
	}
	randAddr := func() netip.Addr {
		var b [16]byte
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		if rng.IntN(2) == 0 { // most under 2001:db8::/32, so that they meet
			b[0], b[1], b[2], b[3] = 0x20, 0x01, 0x0d, 0xb8
		}
		return netip.AddrFrom16(b)
	}
	inside := func(p netip.Prefix) netip.Addr {
		b, r := p.Addr().As16(), randAddr().As16()
		for i := p.Bits(); i < 128; i++ {
			m := byte(0x80 >> (i % 8))
			b[i/8] = b[i/8]&^m | r[i/8]&m
		}
		return netip.AddrFrom16(b)
	}
	for _, l := range lens {
		add(netip.PrefixFrom(randAddr(), l))
	}
	for tries := 0; len(out) < n && tries < 20*n; tries++ {
		l := lens[rng.IntN(len(lens))]
		if len(out) == 0 {
			add(netip.PrefixFrom(randAddr(), l))
			continue
		}
		q := out[rng.IntN(len(out))].Prefix
		switch rng.IntN(4) {
		case 0:
			add(netip.PrefixFrom(randAddr(), l))
		case 1: // inside q
			if l > q.Bits() {
				add(netip.PrefixFrom(inside(q), l))
			}
		case 2: // around q
			if l < q.Bits() {
				add(netip.PrefixFrom(q.Addr(), l))
			}
		default: // beside q
			if q.Bits() > 0 {
				b := q.Addr().As16()
				i := q.Bits() - 1
				b[i/8] ^= 0x80 >> (i % 8)
				add(netip.PrefixFrom(netip.AddrFrom16(b), q.Bits()))
			}
		}
	}
	return out
}

// ProbeAddrs are the addresses that tell whether a lookup gets prefix p right: its
// first and last, one inside, and the ones just before and just after it.
func ProbeAddrs(p netip.Prefix, rng *rand.Rand) []netip.Addr {
	first := p.Masked().Addr()
	b := first.As16()
	for i := p.Bits(); i < 128; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	last := netip.AddrFrom16(b)
	in := first.As16()
	for i := p.Bits(); i < 128; i++ {
		if rng.IntN(2) == 0 {
			in[i/8] |= 0x80 >> (i % 8)
		}
	}
	out := []netip.Addr{first, last, netip.AddrFrom16(in)}
	if a := first.Prev(); a.IsValid() {
		out = append(out, a)
	}
	if a := last.Next(); a.IsValid() {
		out = append(out, a)
	}
	return out
}
