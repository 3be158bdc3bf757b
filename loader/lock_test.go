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
	time.Sleep(50 * time.Millisecond) // most often the waiter is waiting by now; it gets the lock either way
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
