package loader

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/portcullis/portcullis/internal/testutil"
)

// Unpin detaches before it returns: `portcullis detach` says "detached" right after.
// (An unpinned link alone is released only after an RCU grace period and a work item.)
func TestUnpinDetachesAtOnce(t *testing.T) {
	testutil.RequireRoot(t)
	ifname := fmt.Sprintf("pcu%d", os.Getpid()%100000)
	if out, err := exec.Command("ip", "link", "add", ifname, "type", "veth", "peer", "name", ifname+"p").CombinedOutput(); err != nil {
		t.Skipf("needs veth: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "link", "del", ifname).Run() })
	if out, err := exec.Command("ip", "link", "set", ifname, "up").CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	for i := range 20 {
		dir := filepath.Join(mountBPF(t), "portcullis")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		p, err := LoadPinned(dir)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Attach(dir, ifname, ModeGeneric); err != nil {
			t.Fatal(err)
		}
		p.Close()
		if err := Unpin(dir); err != nil {
			t.Fatal(err)
		}
		l, err := netlink.LinkByName(ifname)
		if err != nil {
			t.Fatal(err)
		}
		if x := l.Attrs().Xdp; x != nil && x.Attached {
			t.Fatalf("round %d: XDP program %d still attached right after Unpin", i, x.ProgId)
		}
	}
}

// HasPinnedPolicy tells a first start (nothing pinned, or maps without a policy) from
// pins that enforce; RemovePins empties the directory and keeps it.
func TestHasPinnedPolicy(t *testing.T) {
	testutil.RequireRoot(t)
	dir := filepath.Join(mountBPF(t), "portcullis")
	has := func(want bool, what string) {
		t.Helper()
		if got, err := HasPinnedPolicy(dir); err != nil || got != want {
			t.Fatalf("%s: HasPinnedPolicy %v, %v; want %v", what, got, err, want)
		}
	}
	has(false, "no directory")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	p, err := LoadPinned(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	has(false, "maps pinned, no policy")
	if err := p.Apply(testTables(time.Now())); err != nil {
		t.Fatal(err)
	}
	has(true, "a policy applied")
	if err := RemovePins(dir); err != nil {
		t.Fatal(err)
	}
	if entries, err := os.ReadDir(dir); err != nil || len(entries) != 0 {
		t.Fatalf("after RemovePins: %v %v, want an empty directory", entries, err)
	}
	has(false, "pins removed")
}
