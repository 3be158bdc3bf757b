package loader

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Pins live as long as the bpffs that holds them is mounted somewhere. A bpffs mounted
// in a mount namespace of its own — `ip netns exec` gives every command one, with a
// fresh /sys and no /sys/fs/bpf — is unmounted when the last process in that namespace
// exits: the pins, the links they hold and so the XDP program go with it. These checks
// tell that case apart from the host's bpffs, which outlives the daemon.

// CheckPinsOutlive returns nil if pins made in dir will outlive this process: dir lies
// on a bpffs that is also mounted in PID 1's mount namespace, or on no bpffs yet while
// this process is in PID 1's mount namespace (so one that MountBPFFS mounts stays).
// Otherwise it returns ErrPinsWouldNotSurvive with what to do. When /proc does not say
// (not mounted, or hidden), it returns nil: the check cannot tell.
func CheckPinsOutlive(dir string) error {
	fs, err := bpffsOf(dir)
	if err != nil {
		return err
	}
	if fs.bpffs {
		if shared, known := mountedInInit(fs.dev); !known || shared {
			return nil
		}
		return fmt.Errorf("%w: the bpffs holding %s (device %d:%d) is mounted only in this process's mount namespace, not in the host's; "+
			"it, and every pin, link and the XDP program in it, would go when this namespace's last process exits (kill -9 included). %s",
			ErrPinsWouldNotSurvive, dir, unix.Major(fs.dev), unix.Minor(fs.dev), survivalAdvice("run"))
	}
	if same, known := inInitMountNS(); !known || same {
		return nil
	}
	return fmt.Errorf("%w: %s is not on a bpffs in this mount namespace, and this process has a mount namespace of its own "+
		"(`ip netns exec` makes one, with a fresh /sys and no /sys/fs/bpf); a bpffs mounted here would be unmounted when its last process exits, "+
		"taking every pin, link and the XDP program with it (kill -9 included), and port 25 would be open. %s",
		ErrPinsWouldNotSurvive, dir, survivalAdvice("run"))
}

// CheckPinsVisible returns ErrNoBPFFSHere, with what to do, when dir is on no bpffs
// and this process is in a mount namespace other than PID 1's (as under `ip netns
// exec`): pins the daemon made on the host's bpffs cannot be seen from here, so their
// absence says nothing. Otherwise it returns nil.
func CheckPinsVisible(dir string) error {
	fs, err := bpffsOf(dir)
	if err != nil || fs.bpffs {
		return nil
	}
	return pinsVisible(dir)
}

// pinsVisible is CheckPinsVisible for a dir already known to be on no bpffs.
func pinsVisible(dir string) error {
	if same, known := inInitMountNS(); !known || same {
		return nil
	}
	return fmt.Errorf("%w: %s cannot be read here: this command runs in a mount namespace of its own "+
		"(`ip netns exec` makes one, with a fresh /sys), where the host's bpffs, and the daemon's pins in it, are not visible. "+
		"Enter only the network namespace: `nsenter --net=/run/netns/%s portcullis ...`, or run it from the host",
		ErrNoBPFFSHere, dir, netnsNameOr("NAME"))
}

// explainMissing turns "no such pin in dir" into why, when no bpffs holds dir;
// otherwise it returns nil.
func explainMissing(dir string) error {
	fs, err := bpffsOf(dir)
	if err != nil || fs.bpffs {
		return nil
	}
	if err := pinsVisible(dir); err != nil {
		return err
	}
	return fmt.Errorf("nothing pinned in %s: no bpffs is mounted there (%s is %s); has `portcullis run` not been started since boot (it mounts one), or is it configured with another bpffs directory?",
		dir, fs.path, fs.kind)
}

// survivalAdvice says how to run verb so that it sees, and pins into, the host's bpffs.
func survivalAdvice(verb string) string {
	return fmt.Sprintf("Enter only the network namespace: `nsenter --net=/run/netns/%s portcullis %s ...`; "+
		"or make a bpffs of the host's mount namespace visible here and point bpffs: at it "+
		"(from the host, before starting: `mkdir -p /run/portcullis-bpffs && mount --bind /sys/fs/bpf /run/portcullis-bpffs`, "+
		"then bpffs: /run/portcullis-bpffs/portcullis). See docs/daemon.md, \"Running inside a network namespace\".", netnsNameOr("NAME"), verb)
}

type fsInfo struct {
	path  string // dir, or its nearest existing ancestor
	bpffs bool
	kind  string // filesystem, for messages
	dev   uint64 // st_dev of path
}

// bpffsOf reports on the filesystem that holds dir (or would, once created).
func bpffsOf(dir string) (fsInfo, error) {
	p := filepath.Clean(dir)
	for {
		var st unix.Stat_t
		err := unix.Stat(p, &st)
		if err == nil {
			var sf unix.Statfs_t
			if err := unix.Statfs(p, &sf); err != nil {
				return fsInfo{}, fmt.Errorf("bpffs: %s: %w", p, err)
			}
			kind := fmt.Sprintf("a filesystem of type %#x, not bpffs", sf.Type)
			switch sf.Type {
			case unix.BPF_FS_MAGIC:
				kind = "bpffs"
			case unix.SYSFS_MAGIC:
				kind = "sysfs, not bpffs"
			case unix.TMPFS_MAGIC:
				kind = "tmpfs, not bpffs"
			}
			return fsInfo{path: p, bpffs: sf.Type == unix.BPF_FS_MAGIC, kind: kind, dev: st.Dev}, nil
		}
		if !errors.Is(err, unix.ENOENT) || p == "/" || p == "." {
			return fsInfo{}, fmt.Errorf("bpffs: %s: %w", p, err)
		}
		p = filepath.Dir(p)
	}
}

// inInitMountNS reports whether this thread is in PID 1's mount namespace; known is
// false when /proc does not say. The namespace files of PID 1 may be closed to us
// (a non-dumpable init); its mountinfo then tells: mount ids are unique system-wide
// and each mount belongs to one namespace, so two namespaces are the same exactly when
// they list a common mount id.
func inInitMountNS() (same, known bool) {
	var self, init unix.Stat_t
	if unix.Stat("/proc/thread-self/ns/mnt", &self) == nil && unix.Stat("/proc/1/ns/mnt", &init) == nil {
		return self.Dev == init.Dev && self.Ino == init.Ino, true
	}
	mine, err := mountinfo("/proc/thread-self/mountinfo")
	if err != nil {
		return false, false
	}
	theirs, err := mountinfo("/proc/1/mountinfo")
	if err != nil {
		return false, false
	}
	ids := map[string]bool{}
	for _, m := range mine {
		ids[m.id] = true
	}
	for _, m := range theirs {
		if ids[m.id] {
			return true, true
		}
	}
	return false, true
}

// mountedInInit reports whether a filesystem with device dev is mounted in PID 1's
// mount namespace (anywhere: a bind mount at another path counts); known is false when
// PID 1's mountinfo cannot be read.
func mountedInInit(dev uint64) (mounted, known bool) {
	ms, err := mountinfo("/proc/1/mountinfo")
	if err != nil {
		return false, false
	}
	want := fmt.Sprintf("%d:%d", unix.Major(dev), unix.Minor(dev))
	for _, m := range ms {
		if m.dev == want {
			return true, true
		}
	}
	return false, true
}

type mountEntry struct{ id, dev string }

// mountinfo reads the first fields of a /proc/PID/mountinfo: mount id, parent id,
// major:minor.
func mountinfo(path string) ([]mountEntry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []mountEntry
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 3 {
			continue
		}
		out = append(out, mountEntry{id: fields[0], dev: fields[2]})
	}
	return out, sc.Err()
}

// netnsNameOr is the name under /run/netns of this thread's network namespace (as
// `ip netns identify` finds it), or def.
func netnsNameOr(def string) string {
	var self unix.Stat_t
	if unix.Stat("/proc/thread-self/ns/net", &self) != nil {
		return def
	}
	entries, err := os.ReadDir("/run/netns")
	if err != nil {
		return def
	}
	for _, e := range entries {
		var st unix.Stat_t
		if unix.Stat(filepath.Join("/run/netns", e.Name()), &st) == nil && st.Dev == self.Dev && st.Ino == self.Ino {
			return e.Name()
		}
	}
	return def
}

// IsBPFFS reports whether dir is on a mounted bpffs.
func IsBPFFS(dir string) bool {
	var st unix.Statfs_t
	return unix.Statfs(dir, &st) == nil && st.Type == unix.BPF_FS_MAGIC
}
