package fleet

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// A policy too large for etcd's request limit (with its history record, the text
// twice in one transaction) is refused by etcd; the error says how large it is, the
// limit, and the fix.
func TestPushTooLarge(t *testing.T) {
	_, _, cli := newFleet(t)
	var b strings.Builder
	b.Write(validPolicy(1))
	b.WriteString("  - name: big-list\n    verdict: pass\n    description: many hosts\n    owner: noc\n    cidrs:\n")
	for i := range 34000 {
		fmt.Fprintf(&b, "      - 100.%d.%d.%d/32\n", 80+i/65536, (i/256)%256, i%256)
	}
	text := []byte(b.String())
	_, err := Push(ctxT(t), cli, "dsl", text, "alice@noc", "big", 0)
	t.Logf("a push of %d bytes: %v", len(text), err)
	if err == nil || !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "--max-request-bytes") || !strings.Contains(err.Error(), fmt.Sprint(len(text))) {
		t.Fatalf("a push of %d bytes: %v; want ErrTooLarge naming the size and --max-request-bytes", len(text), err)
	}
}
