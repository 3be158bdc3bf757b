package vethbench

import (
	"bytes"
	"net"
	"slices"
	"strings"
	"testing"
)

// TestGenerate: each size gives exactly n prefixes of 100.64.0.0/10, none overlapping,
// pools /14–/20 and customers /24–/32, covering every address of TrafficNet, with pools
// and customers both inside it at the large sizes; the same seed gives the same set.
func TestGenerate(t *testing.T) {
	for _, n := range []int{4, 10, 1000, 100_000, 1_000_000} {
		set, err := Generate(n, 1)
		if err != nil {
			t.Fatalf("n=%d: %v", n, err)
		}
		if len(set) != n {
			t.Fatalf("n=%d: %d prefixes", n, len(set))
		}
		sorted := slices.Clone(set)
		slices.SortFunc(sorted, func(a, b Prefix) int { return a.Addr().Compare(b.Addr()) })
		var covered uint64
		var pools, custIn int
		end := uint64(0)
		for _, p := range sorted {
			lo := uint64(addrU32(p.Addr()))
			if lo < end {
				t.Fatalf("n=%d: %s overlaps the prefix before it", n, p)
			}
			end = lo + 1<<(32-p.Bits())
			if !SpaceNet.Contains(p.Addr()) || p.Bits() < SpaceNet.Bits() {
				t.Fatalf("n=%d: %s outside %s", n, p, SpaceNet)
			}
			if p.Pool && (p.Bits() < 14 || p.Bits() > 20) || !p.Pool && p.Bits() < 24 {
				t.Fatalf("n=%d: %s (pool %v) has the wrong length", n, p, p.Pool)
			}
			if TrafficNet.Contains(p.Addr()) {
				covered += 1 << (32 - p.Bits())
				if !p.Pool {
					custIn++
				}
			}
			if p.Pool {
				pools++
			}
		}
		if covered != 1<<(32-TrafficNet.Bits()) {
			t.Errorf("n=%d: %d of %s's addresses covered", n, covered, TrafficNet)
		}
		if n >= 100_000 && (pools < 200 || custIn < n/8) {
			t.Errorf("n=%d: %d pools, %d customers inside %s", n, pools, custIn, TrafficNet)
		}
		again, _ := Generate(n, 1)
		if !slices.Equal(set, again) {
			t.Errorf("n=%d: not deterministic", n)
		}
	}
	if _, err := Generate(3, 1); err == nil {
		t.Error("3 prefixes: no error")
	}
}

// TestLoadFiles: the nft and ipset files name every prefix once, in their syntax.
func TestLoadFiles(t *testing.T) {
	set, err := Generate(10_000, 2)
	if err != nil {
		t.Fatal(err)
	}
	var nft, ips bytes.Buffer
	if err := WriteNFT(&nft, set); err != nil {
		t.Fatal(err)
	}
	if err := WriteIPSet(&ips, set); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(nft.String(), "table netdev pcxbench {\n\tset src {\n\t\ttype ipv4_addr\n\t\tflags interval\n") {
		t.Errorf("nft file starts:\n%.200s", nft.String())
	}
	if got := strings.Count(nft.String(), "/"); got != len(set) {
		t.Errorf("nft file: %d prefixes, want %d", got, len(set))
	}
	if got := strings.Count(ips.String(), "\nadd pcxbench "); got != len(set) {
		t.Errorf("ipset file: %d adds, want %d", got, len(set))
	}
	if !strings.HasPrefix(ips.String(), "create pcxbench hash:net family inet hashsize 16384 maxelem 65536\n") {
		t.Errorf("ipset file starts: %.100s", ips.String())
	}
}

// TestTrafgenConfig: the frame's addresses, ports and the /12's second octets.
func TestTrafgenConfig(t *testing.T) {
	dst, _ := net.ParseMAC("02:00:00:00:00:01")
	src, _ := net.ParseMAC("02:00:00:00:00:02")
	c := TrafgenConfig(dst, src)
	for _, want := range []string{
		"0x02, 0x00, 0x00, 0x00, 0x00, 0x01,\n  0x02, 0x00, 0x00, 0x00, 0x00, 0x02,",
		"100, dinc(64, 79), drnd(2),", "203, 0, 113, 25,", "c16(25)", "csumip(14, 33)", "csumtcp(14, 34)",
	} {
		if !strings.Contains(c, want) {
			t.Errorf("config lacks %q:\n%s", want, c)
		}
	}
}
