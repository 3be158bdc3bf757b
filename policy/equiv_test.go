package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The golden outputs in testdata/equiv.golden were written by the parser and compiler
// of main at e861264, before the million-prefix speed-up (issue 12): that work must
// not change a byte of what a policy parses, checks and compiles to (errors and their
// order, warnings, rule ids, entries, positions, hash). Regenerate only for a change
// that means to change behaviour: go test -run TestEquivalentToGolden -update ./policy/
var updateGolden = flag.Bool("update", false, "rewrite testdata/equiv.golden")

// equivCase is one policy: the YAML and the list files beside it.
type equivCase struct {
	name  string
	yaml  string
	lists map[string]string
}

// dumpOutcome is everything parse + check + compile say about a policy, as text.
func dumpOutcome(t *testing.T, c equivCase) string {
	t.Helper()
	dir := t.TempDir()
	t.Chdir(dir) // positions name files relative to here: the same on every machine
	for name, body := range c.lists {
		if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(name, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile("policy.yaml", []byte(c.yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	p, err := ParseFile("policy.yaml", testNow)
	if err != nil {
		fmt.Fprintf(&b, "error:\n%v\n", err)
		return b.String()
	}
	fmt.Fprintf(&b, "warnings:\n%v\n", p.Warnings)
	comp, err := Compile(p, testNow)
	if err != nil {
		fmt.Fprintf(&b, "compile error:\n%v\n", err)
		return b.String()
	}
	tb := comp.Tables
	fmt.Fprintf(&b, "hash %s\ndefault %v governed %v rst %d/%d\n", comp.Hash, tb.DefaultVerdict, tb.Governed, tb.RSTRate, tb.RSTBurst)
	for _, r := range comp.Rules {
		fmt.Fprintf(&b, "rule %d %s %q %v %s\n", r.ID, r.Kind, r.Name, r.Verdict, r.Pos)
	}
	fmt.Fprintf(&b, "names %q kinds %v\n", tb.RuleNames, tb.RuleKinds)
	for _, e := range tb.Ranges {
		if e.Prefix != netip.MustParsePrefix(e.Prefix.String()) {
			t.Errorf("%s: entry %s is not the prefix netip parses from its text", c.name, e.Prefix)
		}
		fmt.Fprintf(&b, "range %s rule %d %v exp %v if %q at %s\n", e.Prefix, e.Rule, e.Verdict, e.Expires, e.Interfaces, entryPos(comp, e.Prefix, e.Rule))
	}
	for _, e := range tb.Quarantines {
		fmt.Fprintf(&b, "quarantine %s rule %d %v exp %v if %q at %s\n", e.Prefix, e.Rule, e.Verdict, e.Expires, e.Interfaces, entryPos(comp, e.Prefix, e.Rule))
	}
	for _, r := range tb.Relays {
		fmt.Fprintf(&b, "relay %s rule %d ports %v block %v at %s\n", r.Prefix, r.Rule, r.Ports, r.BlockQuarantined, comp.RelayPos[r.Prefix])
	}
	return b.String()
}

func entryPos(c *Compiled, p netip.Prefix, rule uint32) Pos { return c.EntryPos(EntryKey{p, rule}) }

// equivCases are hand-written policies for every check on the prefixes, then random
// ones (fixed seeds) over a small address space, so that duplicates, nesting and
// shadowed exemptions are common.
func equivCases() []equivCase {
	cases := []equivCase{
		{name: "lists and inline, both families, scopes", yaml: `version: 1
ranges:
  - {name: dsl, verdict: reset, cidrs_file: pools/dsl.txt, cidrs: [2001:db8:1000::/36]}
  - {name: ftth, verdict: drop, cidrs_file: ftth.txt}
  - {name: partner, verdict: pass, cidrs_file: partner.txt, interfaces: [eth3]}
  - {name: mon, verdict: monitor, cidrs: [198.51.100.0/24, "::ffff:203.0.113.0/120"]}
exemptions:
  - {cidr: 100.64.1.25, reason: mail, ticket: T-1}
  - {cidr: 100.64.2.0/24, reason: covered, ticket: T-2}
  - {cidr: 2001:db8:1000::25, name: v6 mail, reason: mail, owner: noc, expires: 2027-01-01}
  - {cidr: 100.64.3.3, reason: old, owner: noc, expires: 2026-01-01}
  - {cidr: 100.65.0.0/24, reason: partner mail, owner: noc, interfaces: [eth3]}
quarantines:
  - {cidr: 100.64.9.9, verdict: drop, reason: spam, owner: abuse, expires: 2027-01-01}
  - {cidr: 2001:db8:1000::/64, verdict: reset, reason: spam, owner: abuse, expires: 2027-01-01, interfaces: [eth0, eth3]}
  - {cidr: 198.51.100.7, verdict: reset, reason: spam, owner: abuse, expires: 2026-01-01}
relays:
  - {name: smarthost, cidrs: [192.0.2.26, 2001:db8:ffff::26], reason: ours, owner: mail}
`, lists: map[string]string{
			"pools/dsl.txt": "# DSL\n100.64.0.0/12\n\n100.80.0.0/16   # FTTH\n  100.81.1.1\r\n2001:db8:2000::/36\n100.64.2.0/25\n100.64.2.128/25\n",
			"ftth.txt":      "10.0.0.0/8\n::ffff:11.0.0.0/104\n",
			"partner.txt":   "100.65.0.0/16\n100.82.0.0/16\n",
		}},
		{name: "list errors", yaml: "version: 1\nranges:\n  - {name: a, verdict: drop, cidrs_file: a.txt}\n  - {name: b, verdict: drop, cidrs_file: b.txt}\n", lists: map[string]string{
			"a.txt": "100.64.0.0/12\n100.64.0.1/12\n300.1.1.1\n1.2.3\n10.0.0.0/33\n10.0.0.0/x\n10.0.0.0/\n/8\n2001:db8:::1/64\n2001:db8::/129\nfe80::1%eth0\n010.0.0.0/8\n10.0.0.0/08\nmail.example.com\n::ffff:0:0/80\n",
			"b.txt": "100.64.0.0/12\n10.9.9.9 # a host\n10.9.9.9/32\n",
		}},
		{name: "duplicates across files and inline", yaml: "version: 1\nranges:\n  - {name: a, verdict: drop, cidrs_file: a.txt, cidrs: [10.1.0.0/16]}\n  - {name: b, verdict: drop, cidrs_file: b.txt}\nexemptions:\n  - {cidr: 10.0.0.1, reason: r, owner: o}\nquarantines:\n  - {cidr: 10.2.0.0/16, verdict: drop, reason: r, owner: o, expires: 2027-01-01}\n  - {cidr: 10.2.3.0/24, verdict: drop, reason: r, owner: o, expires: 2027-01-01}\n", lists: map[string]string{
			"a.txt": "10.0.0.0/8\n10.1.0.0/16\n2001:db8::/32\n10.0.0.1\n",
			"b.txt": "10.0.0.0/8\n2001:db8:0::/32\n10.2.0.0/16\n::ffff:10.0.0.1\n10.0.0.0/8\n",
		}},
		{name: "scoped duplicates", yaml: "version: 1\nranges:\n  - {name: a, verdict: drop, cidrs_file: a.txt, interfaces: [eth0]}\n  - {name: b, verdict: pass, cidrs_file: b.txt, interfaces: [eth1]}\n  - {name: c, verdict: pass, cidrs: [10.0.0.0/8], interfaces: [eth1, eth2]}\n  - {name: d, verdict: pass, cidrs: [10.0.0.0/8]}\n", lists: map[string]string{
			"a.txt": "10.0.0.0/8\n10.1.0.0/16\n",
			"b.txt": "10.0.0.0/8\n10.1.0.0/16\n",
		}},
		{name: "too many errors", yaml: "version: 1\nranges:\n  - {name: a, verdict: drop, cidrs_file: a.txt}\n  - {name: b, verdict: drop, cidrs_file: empty.txt}\n  - {name: c, verdict: drop, cidrs_file: missing.txt}\n", lists: map[string]string{
			"a.txt":     strings.Repeat("not a prefix\n", 30),
			"empty.txt": "# nothing\n\n",
		}},
	}
	for seed := range uint64(800) {
		cases = append(cases, randomCase(seed))
	}
	for seed, n := range []int{3000, 20000, 50000} {
		cases = append(cases, largeCase(uint64(seed), n, false), largeCase(uint64(seed), n, true))
	}
	for _, bad := range []int{0, 6, 11, 19, 25} {
		cases = append(cases, bigListCase(bad))
	}
	return cases
}

// randomCase is a random policy: prefixes from a few small blocks of both families
// (so they nest and repeat), some spelled badly, in inline lists and list files;
// scopes, expired and live exemptions and quarantines.
func randomCase(seed uint64) equivCase {
	r := rand.New(rand.NewPCG(seed, 12))
	bases := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/16"), netip.MustParsePrefix("10.1.0.0/16"),
		netip.MustParsePrefix("2001:db8::/48"), netip.MustParsePrefix("2001:db8:1::/48")}
	// Most policies are valid (no repeats, no bad spellings, unique names), so that the
	// checks that run only on valid ones (shadowed exemptions) and the compile are held
	// to main's output too.
	repeats, bad, names := r.IntN(3) == 0, r.IntN(3) == 0, r.IntN(3) == 0
	used := map[netip.Prefix]bool{}
	var order []netip.Prefix
	prefix := func() string {
		if repeats && len(order) > 0 && r.IntN(12) == 0 {
			return order[r.IntN(len(order))].String() // a repeat
		}
		var p netip.Prefix
		for range 20 { // a fresh one, mostly
			b := bases[r.IntN(len(bases))]
			bits := b.Bits() + r.IntN(5)
			if r.IntN(8) == 0 {
				bits = b.Addr().BitLen()
			}
			a := b.Addr().As16()
			for i := b.Bits(); i < bits; i++ {
				if r.IntN(2) == 0 {
					off := i
					if b.Addr().Is4() {
						off += 96
					}
					a[off/8] |= 0x80 >> (off % 8)
				}
			}
			addr := netip.AddrFrom16(a)
			if b.Addr().Is4() {
				addr = addr.Unmap()
			}
			if p = netip.PrefixFrom(addr, bits); !used[p] {
				break
			}
		}
		bits := p.Bits()
		if !used[p] {
			used[p] = true
			order = append(order, p)
		}
		if !bad && r.IntN(2) == 0 {
			return p.String()
		}
		switch r.IntN(40) {
		case 0:
			return p.Addr().Next().String() + "/" + fmt.Sprint(bits) // host bits, maybe
		case 1:
			return "300.0.0.0/8"
		case 2:
			if p.Addr().Is4() {
				return "::ffff:" + p.Addr().String() + "/" + fmt.Sprint(bits+96)
			}
		case 3:
			if bits == p.Addr().BitLen() {
				return p.Addr().String()
			}
		}
		return p.String()
	}
	scope := func() string {
		switch r.IntN(6) {
		case 0:
			return ", interfaces: [eth0]"
		case 1:
			return ", interfaces: [eth1]"
		case 2:
			return ", interfaces: [eth0, eth1]"
		}
		return ""
	}
	expires := func(required bool) string {
		switch r.IntN(4) {
		case 0:
			return ", expires: 2026-01-01"
		case 1:
			if !required {
				return ""
			}
		}
		return ", expires: 2027-06-30"
	}
	verdicts := []string{"pass", "drop", "reset", "monitor"}
	c := equivCase{name: fmt.Sprintf("random %d", seed), lists: map[string]string{}}
	var y strings.Builder
	y.WriteString("version: 1\nranges:\n")
	for i := range 1 + r.IntN(4) {
		name := i
		if names {
			name = r.IntN(5)
		}
		fmt.Fprintf(&y, "  - {name: r%d, verdict: %s%s", name, verdicts[r.IntN(4)], scope())
		list := r.IntN(3) > 0
		if list {
			var l strings.Builder
			for range 1 + r.IntN(12) {
				switch r.IntN(10) {
				case 0:
					l.WriteString("# comment\n\n")
				case 1:
					fmt.Fprintf(&l, "  %s  # tail\n", prefix())
				default:
					l.WriteString(prefix() + "\n")
				}
			}
			name := fmt.Sprintf("list%d.txt", i)
			c.lists[name] = l.String()
			fmt.Fprintf(&y, ", cidrs_file: %s", name)
		}
		if !list || r.IntN(2) == 0 {
			fmt.Fprintf(&y, ", cidrs: [%q", prefix())
			for range r.IntN(4) {
				fmt.Fprintf(&y, ", %q", prefix())
			}
			y.WriteString("]")
		}
		y.WriteString("}\n")
	}
	// Exemptions split in halves by a range (and a half split again): shadowed, unless
	// scopes or a gap say otherwise.
	var shadowed []string
	half := func(p netip.Prefix, hi bool) netip.Prefix {
		a := p.Addr().As16()
		if off := p.Bits() + 128 - p.Addr().BitLen(); hi {
			a[off/8] |= 0x80 >> (off % 8)
		}
		addr := netip.AddrFrom16(a)
		if p.Addr().Is4() {
			addr = addr.Unmap()
		}
		return netip.PrefixFrom(addr, p.Bits()+1)
	}
	for i := range r.IntN(3) {
		q := order[r.IntN(len(order))]
		if q.Bits()+3 > q.Addr().BitLen() {
			continue
		}
		x := half(q, r.IntN(2) == 0)
		parts := []netip.Prefix{half(x, false), half(x, true)}
		if r.IntN(2) == 0 {
			parts = append(parts[:1], half(parts[1], false), half(parts[1], true))
		}
		if r.IntN(4) == 0 {
			parts = parts[1:] // a gap
		}
		fmt.Fprintf(&y, "  - {name: s%d, verdict: drop%s, cidrs: [", i, scope())
		for k, p := range parts {
			if k > 0 {
				y.WriteString(", ")
			}
			y.WriteString(p.String())
		}
		y.WriteString("]}\n")
		shadowed = append(shadowed, x.String())
	}
	if n := r.IntN(5); n+len(shadowed) > 0 {
		y.WriteString("exemptions:\n")
		for _, x := range shadowed {
			fmt.Fprintf(&y, "  - {cidr: %s, reason: r, owner: o%s%s}\n", x, expires(false), scope())
		}
		for range n {
			name := ""
			if r.IntN(3) == 0 {
				name = fmt.Sprintf(", name: ex%d", r.IntN(9))
			}
			fmt.Fprintf(&y, "  - {cidr: %q, reason: r, owner: o%s%s%s}\n", prefix(), name, expires(false), scope())
		}
	}
	if n := r.IntN(4); n > 0 {
		y.WriteString("quarantines:\n")
		for range n {
			fmt.Fprintf(&y, "  - {cidr: %q, verdict: %s, reason: r, owner: o%s%s}\n", prefix(), []string{"drop", "reset"}[r.IntN(2)], expires(true), scope())
		}
	}
	c.yaml = y.String()
	return c
}

// largeCase is a policy of n random prefixes of both families, unsorted, in three list
// files and an inline list (large enough for the sorts of many prefixes), with
// scopes, exemptions (some shadowed) and quarantines; clashes adds repeated prefixes
// (in one file, across files, between scopes) and bad lines.
func largeCase(seed uint64, n int, clashes bool) equivCase {
	r := rand.New(rand.NewPCG(seed, 99))
	used := map[netip.Prefix]bool{}
	var order []netip.Prefix
	fresh := func() netip.Prefix {
		for {
			var p netip.Prefix
			if r.IntN(3) > 0 {
				p = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))}), 16+r.IntN(17)).Masked()
			} else {
				a := netip.MustParseAddr("2001:db8::").As16()
				for i := 4; i < 16; i++ {
					a[i] = byte(r.IntN(256))
				}
				p = netip.PrefixFrom(netip.AddrFrom16(a), 40+r.IntN(89)).Masked()
			}
			if !used[p] {
				used[p] = true
				order = append(order, p)
				return p
			}
		}
	}
	c := equivCase{name: fmt.Sprintf("large %d %d %v", seed, n, clashes), lists: map[string]string{}}
	lists := make([]strings.Builder, 3)
	var inline []string
	for i := range n {
		p := fresh().String()
		switch k := i % 7; {
		case k < 2:
			lists[0].WriteString(p + "\n")
		case k < 4:
			lists[1].WriteString(p + "   # pool\n")
		case k < 6:
			lists[2].WriteString(p + "\n")
		default:
			if len(inline) < 200 {
				inline = append(inline, p)
			} else {
				lists[0].WriteString(p + "\n")
			}
		}
	}
	if clashes {
		for range 40 {
			lists[r.IntN(3)].WriteString(order[r.IntN(len(order))].String() + "\n")
		}
		lists[1].WriteString("10.0.0.1/8\n300.1.2.3\n")
	}
	var y strings.Builder
	y.WriteString("version: 1\nranges:\n")
	y.WriteString("  - {name: a, verdict: reset, cidrs_file: pool0.txt}\n")
	y.WriteString("  - {name: b, verdict: drop, cidrs_file: pool1.txt, interfaces: [eth0]}\n")
	fmt.Fprintf(&y, "  - {name: c, verdict: monitor, cidrs_file: pool2.txt, cidrs: [%s]}\n", strings.Join(inline, ", "))
	y.WriteString("exemptions:\n")
	for i := range 30 {
		q := order[r.IntN(len(order))]
		if q.Bits() == q.Addr().BitLen() {
			continue
		}
		// The lower half of q; with an upper neighbour and q's own prefix
		// listed, exemptions inside q are often shadowed or partly so.
		x := netip.PrefixFrom(q.Addr(), q.Bits()+1)
		if used[x] {
			continue
		}
		used[x] = true
		scope := ""
		if i%5 == 0 {
			scope = ", interfaces: [eth0]"
		}
		exp := ""
		if i%7 == 0 {
			exp = ", expires: 2026-01-01"
		}
		fmt.Fprintf(&y, "  - {cidr: %s, reason: r, owner: o%s%s}\n", x, scope, exp)
		if i%3 == 1 && x.Bits() < x.Addr().BitLen() {
			// Both halves of x in range c (every interface): x is shadowed.
			upper, _ := LastAddr(x).Prefix(x.Bits() + 1)
			for _, h := range []netip.Prefix{netip.PrefixFrom(x.Addr(), x.Bits()+1), upper} {
				if !used[h] {
					used[h] = true
					lists[2].WriteString(h.String() + "\n")
				}
			}
		}
		if i%3 == 0 && x.Bits() < x.Addr().BitLen() {
			lo := netip.PrefixFrom(x.Addr(), x.Bits()+1)
			if !used[lo] {
				used[lo] = true
				fmt.Fprintf(&y, "  - {cidr: %s, name: inner %d, reason: r, owner: o}\n", lo, i)
			}
		}
	}
	y.WriteString("quarantines:\n")
	for range 10 {
		fmt.Fprintf(&y, "  - {cidr: %s, verdict: drop, reason: r, owner: o, expires: 2027-01-01}\n", fresh())
	}
	if clashes {
		fmt.Fprintf(&y, "  - {cidr: %s, verdict: drop, reason: r, owner: o, expires: 2027-01-01}\n", order[0])
	}
	for i := range lists {
		name := fmt.Sprintf("pool%d.txt", i)
		c.lists[name] = lists[i].String()
	}
	c.yaml = y.String()
	return c
}

// bigListCase is a list file of over a megabyte (one the parser may read in halves)
// with comments, blank lines and IPv4-mapped spellings (warnings) all through it,
// and bad lines spread over both halves: fewer than MaxListErrors in all, or more.
func bigListCase(bad int) equivCase {
	const n = 90000
	var l strings.Builder
	for i := range n {
		switch {
		case i%1000 == 0:
			l.WriteString("# block\n\n")
		case i%9000 == 1:
			fmt.Fprintf(&l, "::ffff:10.%d.%d.%d/128\n", i>>16, i>>8&0xff, i&0xff)
		case bad > 0 && i%(n/bad) == 2:
			fmt.Fprintf(&l, "10.%d.%d.%d/8\n", i>>16, i>>8&0xff, i&0xff)
		case i%3 == 0:
			fmt.Fprintf(&l, "2001:db8::%x:%x/128  # six\n", i>>16, i&0xffff)
		default:
			fmt.Fprintf(&l, "10.%d.%d.%d\n", i>>16, i>>8&0xff, i&0xff)
		}
	}
	return equivCase{name: fmt.Sprintf("big list %d bad", bad),
		yaml:  "version: 1\nranges:\n  - {name: big, verdict: drop, cidrs_file: big.txt, cidrs: [192.0.2.0/24]}\nexemptions:\n  - {cidr: 10.0.0.0/24, reason: r, owner: o}\n",
		lists: map[string]string{"big.txt": l.String()}}
}

// TestEquivalentToGolden holds parse + check + compile to main's outputs: full text for
// the hand-written cases, a SHA-256 of it for the random and large ones and the big
// lists (EQUIV_FULL=1 with -update
// writes the random ones in full too, to see what differs: check out the golden's
// commit, write it there, and diff).
func TestEquivalentToGolden(t *testing.T) {
	var out strings.Builder
	valid, withWarnings := 0, 0
	for _, c := range equivCases() {
		d := dumpOutcome(t, c)
		if strings.HasPrefix(d, "warnings:\n\n") {
			valid++
		} else if strings.HasPrefix(d, "warnings:") {
			valid++
			withWarnings++
		}
		if !strings.HasPrefix(c.name, "random") && !strings.HasPrefix(c.name, "large") && !strings.HasPrefix(c.name, "big") || os.Getenv("EQUIV_FULL") != "" {
			fmt.Fprintf(&out, "== %s\n%s", c.name, d)
		} else {
			sum := sha256.Sum256([]byte(d))
			fmt.Fprintf(&out, "== %s %s\n", c.name, hex.EncodeToString(sum[:8]))
		}
	}
	t.Logf("%d policies valid, %d of them with warnings", valid, withWarnings)
	golden := filepath.Join(testdataDir, "equiv.golden")
	if *updateGolden {
		if err := os.WriteFile(golden, []byte(out.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got := out.String(); got != string(want) {
		gl, wl := strings.Split(got, "\n"), strings.Split(string(want), "\n")
		for i := range max(len(gl), len(wl)) {
			var g, w string
			if i < len(gl) {
				g = gl[i]
			}
			if i < len(wl) {
				w = wl[i]
			}
			if g != w {
				t.Fatalf("line %d differs from main's output:\n got %s\nwant %s", i+1, g, w)
			}
		}
	}
}

// testdataDir is policy/testdata, absolute: the test changes directory.
var testdataDir = func() string {
	d, err := filepath.Abs("testdata")
	if err != nil {
		panic(err)
	}
	return d
}()
