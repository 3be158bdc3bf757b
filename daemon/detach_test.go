package daemon

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/portcullis/portcullis/internal/testutil"
	"github.com/portcullis/portcullis/loader"
)

// detach with no daemon on its control socket: nothing to detach where bpffs is not
// there; refused, with the pins kept, while a daemon of another control socket holds
// the directory's lock; done once it is free.
func TestDetachRespectsThePinLock(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "none.sock")
	dir := scratchPinDir(t, "detach")
	if _, err := Detach(dir, socket); !errors.Is(err, ErrNothingToDetach) {
		t.Fatalf("detach of a directory that is not there: %v", err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	held, err := loader.LockPinDir(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	for what, err := range map[string]error{"detach": func() error { _, err := Detach(dir, socket); return err }(), "detach --interface": DetachInterface(dir, socket, "sub1")} {
		if err == nil || !strings.Contains(err.Error(), "a daemon is running with the pins in "+dir) {
			t.Errorf("%s while a daemon holds the lock: %v", what, err)
		}
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("a refused detach removed the pins: %v", err)
	}
	held.Close()
	if names, err := Detach(dir, socket); err != nil || len(names) != 0 {
		t.Fatalf("detach once the lock is free: %v %v", names, err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s after detach: %v", dir, err)
	}
}

// scratchPinDir is a pin directory of the test's own on the host's bpffs, not made
// yet, and removed with what is pinned in it when the test ends.
func scratchPinDir(t *testing.T, what string) string {
	t.Helper()
	testutil.RequireRoot(t)
	if !loader.IsBPFFS("/sys/fs/bpf") {
		t.Skip("no bpffs at /sys/fs/bpf")
	}
	dir := fmt.Sprintf("/sys/fs/bpf/pc%s-%d", what, os.Getpid())
	t.Cleanup(func() { loader.Unpin(dir) })
	return dir
}
