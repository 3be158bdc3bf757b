package loader

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/portcullis/portcullis/internal/testutil"
)

// mountBPF mounts a fresh bpffs on a temporary directory of this mount namespace and
// unmounts it at the end of the test.
func mountBPF(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		t.Fatalf("mounting bpffs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// Pins survive in the host's mount namespace, on its bpffs or on one it would mount; in
// a mount namespace of its own (what `ip netns exec` gives) only on a bpffs the host
// has mounted too. The private cases run in a child made with unshare(1).
func TestCheckPinsOutlive(t *testing.T) {
	testutil.RequireRoot(t)
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("needs unshare (util-linux)")
	}
	if same, known := inInitMountNS(); !known || !same {
		t.Skip("needs to run in PID 1's mount namespace, with /proc/1/mountinfo readable")
	}
	host := mountBPF(t)
	plain := t.TempDir()
	for _, dir := range []string{filepath.Join(host, "portcullis"), filepath.Join(plain, "bpf", "portcullis")} {
		if err := CheckPinsOutlive(dir); err != nil {
			t.Errorf("in the host's mount namespace, %s: %v", dir, err)
		}
	}

	// The child: the host's bpffs (copied into its namespace) is fine; no bpffs, or a
	// bpffs of its own, is not.
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", os.Args[0], "-test.run=^TestCheckPinsOutliveChild$", "-test.v")
	cmd.Env = append(os.Environ(), "PORTCULLIS_TEST_CHILD_HOST="+host, "PORTCULLIS_TEST_CHILD_PLAIN="+plain)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestCheckPinsOutliveChild") {
		t.Fatalf("in a mount namespace of its own: %v\n%s", err, out)
	}
}

func TestCheckPinsOutliveChild(t *testing.T) {
	host, plain := os.Getenv("PORTCULLIS_TEST_CHILD_HOST"), os.Getenv("PORTCULLIS_TEST_CHILD_PLAIN")
	if host == "" {
		t.Skip("run by TestCheckPinsOutlive in a mount namespace of its own")
	}
	if same, known := inInitMountNS(); !known || same {
		t.Fatalf("inInitMountNS in an unshared mount namespace: same %v, known %v", same, known)
	}
	if err := CheckPinsOutlive(filepath.Join(host, "portcullis")); err != nil {
		t.Errorf("the host's bpffs: %v", err)
	}
	noBPF := filepath.Join(plain, "bpf", "portcullis")
	err := CheckPinsOutlive(noBPF)
	if !errors.Is(err, ErrPinsWouldNotSurvive) || !strings.Contains(err.Error(), "nsenter --net=") {
		t.Errorf("no bpffs: %v, want ErrPinsWouldNotSurvive saying what to do", err)
	}
	if err := MountBPFFS(noBPF); !errors.Is(err, ErrPinsWouldNotSurvive) {
		t.Errorf("MountBPFFS with no bpffs: %v, want ErrPinsWouldNotSurvive", err)
	}
	var st unix.Statfs_t
	if unix.Statfs(filepath.Dir(noBPF), &st) == nil && st.Type == unix.BPF_FS_MAGIC {
		t.Errorf("MountBPFFS mounted a private bpffs before refusing")
	}
	if _, err := OpenPinned(noBPF); !errors.Is(err, ErrNoBPFFSHere) {
		t.Errorf("OpenPinned with no bpffs: %v, want ErrNoBPFFSHere", err)
	}
	private := t.TempDir()
	if err := unix.Mount("bpf", private, "bpf", 0, "mode=0700"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(private, unix.MNT_DETACH) })
	if err := CheckPinsOutlive(filepath.Join(private, "portcullis")); !errors.Is(err, ErrPinsWouldNotSurvive) || !strings.Contains(err.Error(), "mounted only in this process's mount namespace") {
		t.Errorf("a private bpffs: %v, want ErrPinsWouldNotSurvive", err)
	}
}
