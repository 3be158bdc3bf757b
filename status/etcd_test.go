package status

import (
	"strings"
	"testing"

	"github.com/portcullis/portcullis/controller"
)

// Cut off from etcd, the line names the revision enforced, and claims none when the
// router has none yet (a first start while etcd is down).
func TestEtcdLineNotConnected(t *testing.T) {
	down := &controller.EtcdHealth{LastError: "policy: context deadline exceeded"}
	for _, c := range []struct {
		rev       int64
		want, not string
	}{
		{7, "NOT CONNECTED since never: enforcing revision 7, the last it had (policy: context deadline exceeded)", ""},
		{0, "no revision applied yet", "enforcing"},
	} {
		line := etcdLine(&controller.EtcdStatus{Revision: c.rev, Health: down})
		if !strings.Contains(line, c.want) || c.not != "" && strings.Contains(line, c.not) {
			t.Errorf("revision %d: %q, want %q (and not %q)", c.rev, line, c.want, c.not)
		}
	}
}
