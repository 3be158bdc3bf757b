package policy

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// A large list file is read in two halves at once (readLists); what it gives must be
// what one reading gives (readList): the same prefixes in order, and the same errors
// and warnings at the same lines, whether the errors are few, in either half, at the
// limit where one reading stops, or past it.
func TestReadListsHalves(t *testing.T) {
	const lines = 150_000 // ≈ 2 MiB: over listSplit
	build := func(bad []int, tail string) string {
		isBad := map[int]bool{}
		for _, l := range bad {
			isBad[l] = true
		}
		var b strings.Builder
		for l := 1; l <= lines; l++ {
			switch {
			case isBad[l]:
				fmt.Fprintf(&b, "100.64.%d.300/32\n", l%256)
			case l%50_000 == 7:
				b.WriteString("::ffff:100.64.0.7\n") // a warning
			case l%1000 == 3:
				b.WriteString("# a comment\n")
			case l%1000 == 5:
				b.WriteString(" \t\n")
			case l%2 == 0:
				fmt.Fprintf(&b, "2001:db8:%x:%x::/64 # pool\n", l>>16, l&0xffff)
			default:
				fmt.Fprintf(&b, "  100.%d.%d.%d/32\n", 64+l>>16&63, l>>8&255, l&255)
			}
		}
		b.WriteString(tail)
		return b.String()
	}
	spread := func(n int) []int { // n bad lines across both halves
		out := make([]int, n)
		for i := range out {
			out[i] = 1 + i*(lines/max(n, 1))
		}
		return out
	}
	cases := map[string]string{
		"clean":                     build(nil, ""),
		"no final newline":          build(nil, "2001:db8::1"),
		"a byte-order mark":         "\ufeff" + build([]int{2, lines - 1}, ""), // off before the halves: line 1 reads as it would without
		"a few errors, both halves": build([]int{5, lines/2 - 1, lines/2 + 1, lines - 2}, ""),
		"errors in the second half": build([]int{lines - 10, lines - 9}, ""),
		"one under the limit":       build(spread(MaxListErrors-1), ""),
		"at the limit":              build(spread(MaxListErrors), ""),
		"at the limit, last line":   build(append(spread(MaxListErrors-1), lines), ""),
		"past the limit":            build(spread(MaxListErrors+5), ""),
	}
	for name, text := range cases {
		if len(text) < listSplit {
			t.Fatalf("%s: %d bytes, under listSplit: the halves are not exercised", name, len(text))
		}
		slots := strings.Count(text, "\n") + 1
		var one, two parser
		outOne, outTwo := make([]CIDR, slots), make([]CIDR, slots)
		n1, ok1 := one.readList(strings.TrimPrefix(text, "\ufeff"), "l.txt", 1, outOne) // readLists takes the mark off
		n2, ok2 := two.readLists(text, "l.txt", outTwo)
		if n1 != n2 || ok1 != ok2 {
			t.Errorf("%s: halves read %d prefixes (whole: %v), one reading %d (%v)", name, n2, ok2, n1, ok1)
		}
		if !reflect.DeepEqual(outOne[:n1], outTwo[:n2]) {
			t.Errorf("%s: halves give other prefixes or positions than one reading", name)
		}
		if !reflect.DeepEqual(one.errs, two.errs) || !reflect.DeepEqual(one.warns, two.warns) {
			t.Errorf("%s: halves give errors %v\nwarnings %v\none reading %v\n%v", name, two.errs, two.warns, one.errs, one.warns)
		}
		if name == "a few errors, both halves" && (len(two.errs) != 4 || two.errs[3].Pos.Line != lines-2) {
			t.Errorf("%s: errors %v, want 4, the last at line %d", name, two.errs, lines-2)
		}
		if name == "clean" && (n2 != lines-2*(lines/1000) || len(two.warns) != 3) {
			t.Errorf("%s: %d prefixes and %d warnings", name, n2, len(two.warns))
		}
	}
}
