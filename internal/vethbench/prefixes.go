// Package vethbench is the real-packet benchmark of issue 12: SYNs to port 25 from
// random sources, written by trafgen into a router namespace (testenv.Line), against
// plain forwarding, a bare XDP_DROP, Portcullis in native XDP, nftables' netdev ingress
// hook with an interval set and iptables REJECT with an ipset, under policies of the
// same N prefixes. This file builds the prefix sets and writes them in each filter's
// own load format; contenders.go switches the filters on and off, trafgen.go drives the
// generator. BenchmarkVeth (bench_test.go) runs it; docs/BENCHMARKS.md has the results.
package vethbench

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"

	"github.com/portcullis/portcullis/model"
)

// TrafficNet is where the benchmark's sources are drawn from: a /12 of 100.64.0.0/10,
// every address of it covered by each prefix set Generate returns.
var TrafficNet = netip.MustParsePrefix("100.64.0.0/12")

// SpaceNet is the space the prefix sets are carved from.
var SpaceNet = netip.MustParsePrefix("100.64.0.0/10")

// Prefix is one entry of a set: a dynamic pool (/12–/20) or a customer assignment
// (/24–/32).
type Prefix struct {
	netip.Prefix
	Pool bool
}

const (
	maxPools = 300  // "a few hundred" dynamic pools
	blockLen = 20   // the traffic /12 is laid out in /20 blocks: pool or customer space
	blocks   = 256  // /20 blocks in the traffic /12
	perBlock = 3200 // customer entries a /20 holds, roughly, with customerLen's mix (alignment makes most of them /32s)
)

// Generate returns n prefixes of SpaceNet, none overlapping another, that cover every
// address of TrafficNet: an ISP's mix of a few hundred dynamic pools (/14–/20) and
// customer assignments (/24–/32, mostly /32). Inside TrafficNet the two interleave (up
// to a quarter of the set's customers, in up to a quarter of the /12's /20 blocks,
// spread through it) so that a lookup of a random source meets both; the remaining
// customers follow from 100.80.0.0 up, and pools beyond what the /12 holds (at most one
// a /20 block) lie in 100.112.0.0/12. The same n and seed give the same set. n must be at least 4 (the
// fewest pools that cover the /12 within the pools' lengths).
func Generate(n int, seed uint64) ([]Prefix, error) {
	if n < 4 {
		return nil, fmt.Errorf("%d prefixes cannot cover %s with pools no larger than /14", n, TrafficNet)
	}
	rng := rand.New(rand.NewPCG(seed, 0x70637862656e6368))
	pools := min(maxPools, n/2)
	custBlocks := min(blocks/4, n/4/perBlock)
	if custBlocks > 0 {
		pools = min(pools, n-custBlocks*perBlock*2) // leave room for the customers
	}
	// Customer blocks spread evenly through the /12; the runs between them are pools.
	isCust := make([]bool, blocks)
	for i := range custBlocks {
		isCust[(2*i+1)*blocks/(2*custBlocks)] = true
	}
	var poolSet []netip.Prefix
	for i := 0; i < blocks; {
		if isCust[i] {
			i++
			continue
		}
		j := i
		for j < blocks && !isCust[j] {
			j++
		}
		poolSet = append(poolSet, cover(blockAddr(i), blockAddr(j), 14)...)
		i = j
	}
	// Split pools at random (never below /20) until there are as many as wanted.
	for len(poolSet) < pools {
		k := rng.IntN(len(poolSet))
		p := poolSet[k]
		if p.Bits() >= blockLen {
			if !canSplit(poolSet) {
				break
			}
			continue
		}
		lo, hi := halves(p)
		poolSet[k] = lo
		poolSet = append(poolSet, hi)
	}
	// More pools, if wanted, in the /10's top /12 (the customers outside the traffic's
	// /12 stay below it).
	poolNet := netip.MustParsePrefix("100.112.0.0/12")
	pa, pEnd := addrU32(poolNet.Addr()), addrU32(poolNet.Addr())+1<<(32-poolNet.Bits())
	for len(poolSet) < pools && pa < pEnd {
		bits := 16 + rng.IntN(5)
		for pa%(1<<(32-bits)) != 0 {
			bits++
		}
		poolSet = append(poolSet, netip.PrefixFrom(u32Addr(pa), bits))
		pa += 1 << (32 - bits)
	}
	if len(poolSet) > n {
		return nil, fmt.Errorf("%d prefixes cannot cover %s: its pools alone take %d", n, TrafficNet, len(poolSet))
	}
	out := make([]Prefix, 0, n)
	for _, p := range poolSet {
		out = append(out, Prefix{p, true})
	}
	// Customers: first the blocks inside the /12, then from the /12's end upwards.
	for i := 0; i < blocks; i++ {
		if isCust[i] {
			out = customers(out, rng, blockAddr(i), blockAddr(i+1), -1)
		}
	}
	end := addrAt(TrafficNet.Masked().Addr(), 1<<(32-TrafficNet.Bits()))
	out = customers(out, rng, end, addrU32(poolNet.Addr()), n)
	if len(out) != n {
		return nil, fmt.Errorf("%s cannot hold %d prefixes of this mix (%d made)", SpaceNet, n, len(out))
	}
	return out, nil
}

// customers tiles [from, to) with customer assignments until out holds limit entries
// (-1: the whole range), each prefix aligned and inside the range.
func customers(out []Prefix, rng *rand.Rand, from, to uint32, limit int) []Prefix {
	for a := from; a < to && (limit < 0 || len(out) < limit); {
		bits := customerLen(rng)
		for bits < 32 && (a%(1<<(32-bits)) != 0 || a+1<<(32-bits) > to) {
			bits++
		}
		out = append(out, Prefix{netip.PrefixFrom(u32Addr(a), bits), false})
		a += 1 << (32 - bits)
	}
	return out
}

// customerLen draws a customer assignment's length: 83 % single addresses, 10 % /30,
// 5 % /29, 1.5 % /28, 0.5 % /24 (about 3.2 addresses an entry).
func customerLen(rng *rand.Rand) int {
	switch r := rng.IntN(1000); {
	case r < 5:
		return 24
	case r < 20:
		return 28
	case r < 70:
		return 29
	case r < 170:
		return 30
	default:
		return 32
	}
}

// cover returns the fewest aligned prefixes, none shorter than minBits, that tile
// [from, to).
func cover(from, to uint32, minBits int) []netip.Prefix {
	var out []netip.Prefix
	for a := from; a < to; {
		bits := minBits
		for a%(1<<(32-bits)) != 0 || uint64(a)+1<<(32-bits) > uint64(to) {
			bits++
		}
		out = append(out, netip.PrefixFrom(u32Addr(a), bits))
		a += 1 << (32 - bits)
	}
	return out
}

func canSplit(ps []netip.Prefix) bool {
	for _, p := range ps {
		if p.Bits() < blockLen {
			return true
		}
	}
	return false
}

func halves(p netip.Prefix) (lo, hi netip.Prefix) {
	a := addrU32(p.Addr())
	return netip.PrefixFrom(p.Addr(), p.Bits()+1), netip.PrefixFrom(u32Addr(a+1<<(31-p.Bits())), p.Bits()+1)
}

func blockAddr(i int) uint32 {
	return addrU32(TrafficNet.Masked().Addr()) + uint32(i)<<(32-blockLen)
}

func addrAt(base netip.Addr, off uint32) uint32 { return addrU32(base) + off }

func addrU32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func u32Addr(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// Tables is the Portcullis policy of set: every prefix a drop range (pools and
// customers as two rules), port 25 governed, everything else passed.
func Tables(set []Prefix) *model.Tables {
	t := &model.Tables{
		DefaultVerdict: model.Pass,
		Governed:       []uint16{25},
		RuleNames:      []string{"default", "dynamic-pools", "customers"},
		RuleKinds:      []model.Kind{model.KindDefault, model.KindRange, model.KindRange},
		Ranges:         make([]model.Entry, 0, len(set)),
	}
	for _, p := range set {
		rule := uint32(2)
		if p.Pool {
			rule = 1
		}
		t.Ranges = append(t.Ranges, model.Entry{Prefix: p.Prefix, Rule: rule, Verdict: model.Drop})
	}
	return t
}

// Names of what the filters' load files create.
const (
	NFTTable = "pcxbench" // netdev table holding the interval set
	NFTSet   = "src"
	IPSet    = "pcxbench" // hash:net set
)

// WriteNFT writes an `nft -f` file that creates the netdev table NFTTable with set in
// the interval set NFTSet. The table has no chain: contenders.go adds the ingress chain
// for a round and deletes it after, so the set costs nothing between rounds.
func WriteNFT(w io.Writer, set []Prefix) error {
	bw := bufio.NewWriterSize(w, 1<<20)
	fmt.Fprintf(bw, "table netdev %s {\n\tset %s {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t}\n}\n", NFTTable, NFTSet)
	const batch = 4096 // elements per add command: one huge line is slow to parse
	for i := 0; i < len(set); i += batch {
		fmt.Fprintf(bw, "add element netdev %s %s {", NFTTable, NFTSet)
		for j, p := range set[i:min(i+batch, len(set))] {
			if j > 0 {
				bw.WriteByte(',')
			}
			bw.WriteString(p.Prefix.String())
		}
		bw.WriteString("}\n")
	}
	return bw.Flush()
}

// WriteIPSet writes an `ipset restore` file that creates the hash:net set IPSet with
// set.
func WriteIPSet(w io.Writer, set []Prefix) error {
	bw := bufio.NewWriterSize(w, 1<<20)
	hs := 1024
	for hs < len(set) {
		hs <<= 1
	}
	fmt.Fprintf(bw, "create %s hash:net family inet hashsize %d maxelem %d\n", IPSet, hs, max(65536, 2*len(set)))
	for _, p := range set {
		fmt.Fprintf(bw, "add %s %s\n", IPSet, p.Prefix)
	}
	return bw.Flush()
}
