package policy

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/portcullis/portcullis/model"
)

// A policy whose IPv4 ranges longer than /24 lie in more /24s than the data plane's
// IPv4 table has groups for is refused by check (Compile), naming the limit, rather than
// at Apply; at the limit it compiles. Ranges of /24 or shorter, IPv6 and scoped ranges
// do not count.
func TestLongIPv4BlocksLimit(t *testing.T) {
	for _, n := range []int{model.MaxLongIPv4Blocks, model.MaxLongIPv4Blocks + 1} {
		dir := t.TempDir()
		var l strings.Builder
		for i := range n {
			a := uint32(10)<<24 + uint32(i)<<8 // the /24s of 10.0.0.0/9, and on (compile only: no packets)
			fmt.Fprintf(&l, "%d.%d.%d.7/32\n%d.%d.%d.64/28\n", a>>24, a>>16&255, a>>8&255, a>>24, a>>16&255, a>>8&255)
		}
		l.WriteString("10.0.0.0/24\n2001:db8::7/128\n")
		if err := os.WriteFile(filepath.Join(dir, "statics.txt"), []byte(l.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "policy.yaml")
		if err := os.WriteFile(path, []byte("version: 1\nranges:\n  - {name: pools, verdict: drop, cidrs: [10.0.0.0/9]}\n  - {name: statics, verdict: pass, cidrs_file: statics.txt}\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		pol, err := ParseFile(path, testNow)
		if err != nil {
			t.Fatal(err)
		}
		_, err = Compile(pol, testNow)
		switch {
		case n <= model.MaxLongIPv4Blocks && err != nil:
			t.Errorf("%d /24s with longer ranges: %v", n, err)
		case n > model.MaxLongIPv4Blocks && (err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%d distinct /24s", n)) || !strings.Contains(err.Error(), "PC_DIR8_GROUPS")):
			t.Errorf("%d /24s with longer ranges: %v, want the count and the limit named", n, err)
		}
	}
}
