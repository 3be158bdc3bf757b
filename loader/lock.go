package loader

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// ErrPinsInUse: another process holds the lock of a pin directory (LockPinDir), that
// is another `portcullis run` with the same bpffs directory.
var ErrPinsInUse = errors.New("another portcullis daemon is running with these pins")

// PinLock is the lock LockPinDir took; Close releases it (so does the process's exit,
// kill -9 included: the lock is the kernel's, on the open directory).
type PinLock struct{ f *os.File }

// Close releases the lock.
func (l *PinLock) Close() error {
	if l == nil || l.f == nil {
		return nil
	}
	return l.f.Close()
}

// LockPinDir takes the exclusive lock of the pin directory dir (flock on the directory
// itself: bpffs holds no regular files), without waiting. One daemon at a time may load
// with, attach through and write the maps pinned in dir: two would each take the other's
// live slot for their idle one and write a policy into the tables being judged, and
// each would replace the other's program in the pinned links. A second daemon gets
// ErrPinsInUse, naming dir, before it has changed anything, once wait has passed.
func LockPinDir(dir string, wait time.Duration) (*PinLock, error) {
	deadline := time.Now().Add(wait)
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("locking the pin directory: %w", err)
	}
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			// The holder may have removed the directory meanwhile (a first start that
			// failed undoes its pins, bpffs with them): the lock must be of the
			// directory there now.
			held, herr := f.Stat()
			now, nerr := os.Stat(dir)
			if herr == nil && nerr == nil && os.SameFile(held, now) {
				return &PinLock{f: f}, nil
			}
			f.Close()
			if errors.Is(nerr, os.ErrNotExist) {
				return nil, fmt.Errorf("locking the pin directory %s: it was removed while this waited for its lock (by portcullis detach, or a first start that stopped): start again: %w", dir, nerr)
			}
			if nerr != nil {
				return nil, fmt.Errorf("locking the pin directory: %w", nerr)
			}
			if f, err = os.Open(dir); err != nil {
				return nil, fmt.Errorf("locking the pin directory: %w", err)
			}
			continue
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("locking the pin directory %s: %w", dir, err)
		}
		if !time.Now().Before(deadline) {
			f.Close()
			return nil, fmt.Errorf("bpffs %s: %w (waited %s; its control socket may be another one): stop it first, or give this one a bpffs directory of its own", dir, ErrPinsInUse, wait)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// PinLockWait is how long a start waits for the lock of its pin directory: a daemon
// killed a moment ago (kill -9, then a supervisor's restart) holds it until the kernel
// has finished with the process.
const PinLockWait = 2 * time.Second
