package testutil

import (
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
