package fleet

import (
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/portcullis/portcullis/fleet/etcdtest"
)

// TestMain lets the test binary be a member of a test's etcd cluster
// (etcdtest.StartCluster runs it again as one).
func TestMain(m *testing.M) {
	etcdtest.MemberMain()
	os.Exit(m.Run())
}

// A quorum lost (two members of three gone): a router's source says it is cut off
// and offers nothing (the policy in force stays), the NOC is told that the members
// that answer have no leader, not that etcd is not running; with the quorum back the
// source takes the next push.
func TestQuorumLoss(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root (etcd members as processes; run as the other cluster tests)")
	}
	var specs []etcdtest.MemberSpec
	for i := range 3 {
		// Loopback addresses of the test's own namespace: no namespace, no route out.
		specs = append(specs, etcdtest.MemberSpec{Name: "q" + string(rune('0'+i)), Addr: netip.AddrFrom4([4]byte{127, 0, 0, byte(61 + i)})})
	}
	c := etcdtest.StartCluster(t, specs, nil)
	cli, err := Dial(Conn{Endpoints: c.Endpoints(), DialTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	r1 := mustPush(t, cli, "dsl", validPolicy(1), "alice@noc", 0)
	s := newSource(t, cli)
	ch := s.Offers(ctxT(t))
	if o := next(t, ch); o.Revision != r1 {
		t.Fatalf("first offer: revision %d, want %d", o.Revision, r1)
	}

	c.Kill(0)
	c.Kill(1)
	waitFor(t, "the source says it is cut off", func() bool { return !s.Health().Connected })
	waitFor(t, "the router's last error says the quorum is lost", func() bool {
		// Twice: a later failure keeps the note.
		return strings.Contains(s.Health().LastError, "no leader") && strings.Contains(s.Health().LastError, "quorum")
	})
	err = cli.Reachable(ctxT(t), 5*time.Second)
	t.Logf("the NOC, with the quorum lost: %v", err)
	if err == nil || !strings.Contains(err.Error(), "no leader") || !strings.Contains(err.Error(), "quorum") || !strings.Contains(err.Error(), c.Endpoint(2)) {
		t.Errorf("Reachable with the quorum lost: %v; want it to say that %s answers with no leader (the quorum lost)", err, c.Endpoint(2))
	}
	select {
	case o := <-ch:
		t.Fatalf("an offer with the quorum lost: %s", o.File)
	default:
	}

	c.Restart(0)
	waitFor(t, "the source is connected again", func() bool { return s.Health().Connected })
	if err := cli.Reachable(ctxT(t), 5*time.Second); err != nil {
		t.Fatalf("with the quorum back: %v", err)
	}
	r2 := mustPush(t, cli, "dsl", validPolicy(2), "bob@noc", r1)
	if o := next(t, ch); o.Revision != r2 {
		t.Fatalf("after the quorum is back: revision %d, want %d", o.Revision, r2)
	}
}
