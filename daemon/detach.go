package daemon

import (
	"errors"
	"fmt"
	"os"

	"github.com/portcullis/portcullis/loader"
)

// ErrNothingToDetach: the bpffs directory Detach was given does not exist.
var ErrNothingToDetach = errors.New("nothing to detach")

// Detach removes Portcullis from every interface it is attached to through the pins in
// bpffs and deletes those pins (`portcullis detach`); it returns the interfaces it
// detached from. It refuses while a daemon runs with them: one answering on socket,
// or one holding the lock of bpffs through another control socket. The lock is held
// while the pins go, so a daemon started meanwhile waits and does not adopt pins that
// are being removed. ErrNothingToDetach when bpffs does not exist.
func Detach(bpffs, socket string) ([]string, error) {
	if st, err := RemoteStatus(socket); err == nil {
		return nil, fmt.Errorf("the daemon (pid %d) is running and would attach again: stop it first (systemctl stop portcullis), then detach", st.PID)
	}
	if err := loader.CheckPinsVisible(bpffs); err != nil {
		return nil, err // "nothing to detach" would be wrong: the pins are elsewhere
	}
	lock, err := holdPins(bpffs)
	if errors.Is(err, loader.ErrPinsInUse) {
		return nil, fmt.Errorf("a daemon is running with the pins in %s (its control socket is not %s) and would attach again: stop it first, then detach", bpffs, socket)
	} else if err != nil {
		return nil, err
	}
	defer lock.Close()
	links, err := loader.PinnedLinks(bpffs)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(bpffs); errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s does not exist", ErrNothingToDetach, bpffs)
	}
	if err := loader.Unpin(bpffs); err != nil {
		return nil, fmt.Errorf("detaching: %w", err)
	}
	var names []string
	for _, l := range links {
		names = append(names, l.Interface)
	}
	return names, nil
}

// DetachInterface removes Portcullis from the interface name only, keeping every other
// pin in bpffs (`portcullis detach --interface`): for an interface taken out of the
// configuration, whose pinned link the daemon keeps. It may run while the daemon
// answering on socket runs, unless that daemon lists name (it would attach again);
// with none answering there, it refuses while another holds the lock of bpffs, and
// holds it itself meanwhile.
func DetachInterface(bpffs, socket, name string) error {
	if st, err := RemoteStatus(socket); err == nil {
		if _, ok := st.Interfaces[name]; ok {
			return fmt.Errorf("the daemon (pid %d) lists %s in its interfaces and would attach it again: take it out of interfaces: and restart the daemon first", st.PID, name)
		}
	} else if lock, err := holdPins(bpffs); errors.Is(err, loader.ErrPinsInUse) {
		return fmt.Errorf("a daemon is running with the pins in %s (its control socket is not %s): ask it with --socket, or stop it first", bpffs, socket)
	} else if err != nil {
		return err
	} else {
		defer lock.Close()
	}
	if err := loader.CheckPinsVisible(bpffs); err != nil {
		return err
	}
	return loader.DetachLink(bpffs, name)
}

// holdPins takes the lock of the pin directory bpffs for a detach, which holds it while
// it removes pins (asking whether a daemon holds it and letting go at once left a gap
// for one to start in). loader.ErrPinsInUse when a daemon holds it; no lock, and no
// error, when bpffs does not exist.
func holdPins(bpffs string) (*loader.PinLock, error) {
	lock, err := loader.LockPinDir(bpffs, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	return lock, err
}
