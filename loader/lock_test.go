package loader

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

// The pin directory's lock: a second holder is refused with the directory named (at
// once with no wait, or once its wait is over), one waiting gets it as soon as the
// first lets go (the restart after a kill -9 whose process the kernel is still ending),
// and one waiting for a directory that is removed meanwhile is told so.
func TestLockPinDir(t *testing.T) {
	dir := t.TempDir()
	first, err := LockPinDir(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LockPinDir(dir, 0); !errors.Is(err, ErrPinsInUse) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("second lock: %v, want ErrPinsInUse naming %s", err, dir)
	}
	// A wait is waited out before the refusal (the restart after a kill -9 relies on it).
	start := time.Now()
	if _, err := LockPinDir(dir, 100*time.Millisecond); !errors.Is(err, ErrPinsInUse) {
		t.Fatalf("a lock that waits while the first is held: %v, want ErrPinsInUse", err)
	} else if waited := time.Since(start); waited < 100*time.Millisecond {
		t.Fatalf("refused after %v, before its wait of 100ms", waited)
	}
	got := make(chan error, 1)
	go func() {
		l, err := LockPinDir(dir, 5*time.Minute)
		if err == nil {
			l.Close()
		}
		got <- err
	}()
	waitOpened(t, dir) // the waiter is waiting
	first.Close()
	if err := <-got; err != nil {
		t.Fatalf("the waiting lock after the first was released: %v", err)
	}
	again, err := LockPinDir(dir, 0)
	if err != nil {
		t.Fatalf("a lock once released: %v", err)
	}
	again.Close()
	if _, err := LockPinDir(dir+"/missing", 0); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the lock of a missing directory: %v, want ErrNotExist (detach: nothing to detach)", err)
	}

	// Removed while one waits for it (detach holds the lock while it removes the pins):
	// the waiter is told so, not given a lock of a directory that is gone.
	held, err := LockPinDir(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	got = make(chan error, 1)
	go func() {
		l, err := LockPinDir(dir, 5*time.Minute)
		l.Close()
		got <- err
	}()
	waitOpened(t, dir)
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	held.Close()
	if err := <-got; !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "removed while this waited") {
		t.Fatalf("the lock of a directory removed while waiting: %v", err)
	}
}

// waitOpened returns once this process has dir open twice, by the lock held and by a
// LockPinDir started in another goroutine: that one is at its flock, waiting.
func waitOpened(t *testing.T, dir string) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		fds, _ := os.ReadDir("/proc/self/fd")
		n := 0
		for _, fd := range fds {
			if target, err := os.Readlink("/proc/self/fd/" + fd.Name()); err == nil && target == dir {
				n++
			}
		}
		if n >= 2 {
			return
		}
	}
	t.Fatalf("%s was never opened by the waiting lock", dir)
}
