package loader

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// The pin directory's lock: a second holder is refused with the directory named (at
// once with no wait), detach's question sees it, and one waiting gets it as soon as the
// first lets go (the restart after a kill -9 whose process the kernel is still ending).
func TestLockPinDir(t *testing.T) {
	dir := t.TempDir()
	first, err := LockPinDir(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LockPinDir(dir, 0); !errors.Is(err, ErrPinsInUse) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("second lock: %v, want ErrPinsInUse naming %s", err, dir)
	}
	if inUse, err := PinDirInUse(dir); err != nil || !inUse {
		t.Fatalf("PinDirInUse while held: %v, %v", inUse, err)
	}
	got := make(chan error, 1)
	go func() {
		l, err := LockPinDir(dir, 5*time.Minute)
		if err == nil {
			l.Close()
		}
		got <- err
	}()
	first.Close()
	if err := <-got; err != nil {
		t.Fatalf("the waiting lock after the first was released: %v", err)
	}
	if inUse, err := PinDirInUse(dir); err != nil || inUse {
		t.Fatalf("PinDirInUse once released: %v, %v", inUse, err)
	}
	if inUse, err := PinDirInUse(dir + "/missing"); err != nil || inUse {
		t.Fatalf("PinDirInUse of a missing directory: %v, %v", inUse, err)
	}
}
