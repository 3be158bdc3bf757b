package policy

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/portcullis/portcullis/model"
)

// TestSortByKey: the radix sort orders as model.ComparePrefix does and keeps repeated
// prefixes in the order they came, for both families mixed, sorted or not.
func TestSortByKey(t *testing.T) {
	type item struct {
		key pkey
		at  int
	}
	r := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{0, 1, 10, 1023, 1024, 5000, 70000} {
		items := make([]item, n)
		for i := range items {
			var p netip.Prefix
			switch r.IntN(3) {
			case 0:
				p = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(r.IntN(4)), byte(r.IntN(256)), 0}), 8+r.IntN(25))
			case 1:
				var a [16]byte
				a[0], a[1], a[15] = 0x20, byte(r.IntN(3)), byte(r.IntN(256))
				p = netip.PrefixFrom(netip.AddrFrom16(a), r.IntN(129))
			default:
				p = netip.PrefixFrom(netip.AddrFrom16([16]byte{15: byte(r.IntN(3))}), 128) // IPv6 low addresses
			}
			p = p.Masked()
			if got := keyOf(p).prefix(); got != p {
				t.Fatalf("key of %s is %s", p, got)
			}
			items[i] = item{keyOf(p), i}
		}
		want := slices.Clone(items)
		slices.SortStableFunc(want, func(a, b item) int { return model.ComparePrefix(a.key.prefix(), b.key.prefix()) })
		for _, in := range [][]item{items, slices.Clone(want)} {
			got := slices.Clone(in)
			sortByKey(got, func(x *item) pkey { return x.key })
			if !slices.Equal(got, want) {
				t.Fatalf("n=%d: sortByKey differs from a stable sort by ComparePrefix", n)
			}
		}
	}
}

// BenchmarkSortByKeyMixed sorts an ISP mix's keys in random order: a million IPv4
// prefixes and a quarter as many IPv6 ones in one 2001:db8::/32.
//
//	go test -run '^$' -bench SortByKeyMixed ./policy/
func BenchmarkSortByKeyMixed(b *testing.B) {
	r := rand.New(rand.NewPCG(5, 6))
	keys := make([]pkey, 0, 1<<20+1<<18)
	for range 1 << 20 {
		keys = append(keys, keyOf(netip.PrefixFrom(netip.AddrFrom4([4]byte{100, byte(64 + r.IntN(64)), byte(r.IntN(256)), byte(r.IntN(256))}), 32)))
	}
	for range 1 << 18 {
		a := [16]byte{0x20, 0x01, 0x0d, 0xb8}
		for i := 4; i < 16; i++ {
			a[i] = byte(r.IntN(256))
		}
		keys = append(keys, keyOf(netip.PrefixFrom(netip.AddrFrom16(a), 128)))
	}
	r.Shuffle(len(keys), func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
	xs := make([]pkey, len(keys))
	for b.Loop() {
		copy(xs, keys)
		sortByKey(xs, func(k *pkey) pkey { return *k })
	}
}
