package policy

import (
	"fmt"
	"strings"
	"testing"
)

// Reading a list file allocates nothing a line, IPv6 lines included: a million-line
// export must not make a million small allocations (the check for prefixes written
// several to a line looks only at lines with a separator).
func TestReadListAllocatesNothingALine(t *testing.T) {
	var b strings.Builder
	for i := range 200 {
		fmt.Fprintf(&b, "2001:db8:%x::/48\n100.64.%d.0/24 # pool\n", i, i)
	}
	text := b.String()
	out := make([]CIDR, strings.Count(text, "\n")+1)
	var p parser
	if n := testing.AllocsPerRun(5, func() {
		p.errs, p.warns = p.errs[:0], p.warns[:0]
		if got, ok := p.readList(text, "l.txt", 1, out); !ok || got != 400 {
			t.Fatalf("read %d prefixes (%v), want 400", got, ok)
		}
	}); n != 0 {
		t.Errorf("%v allocations to read 400 lines, want 0", n)
	}
}
