package daemon

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/portcullis/portcullis/api"
	"github.com/portcullis/portcullis/controller"
	"github.com/portcullis/portcullis/loader"
)

// A start checks everything it can before it touches the kernel (preflight): a
// mistake in the configuration, the API's clients or certificates, a missing
// interface, a port in use or, on a first start, a policy that cannot be used fails
// with nothing loaded, attached or pinned. Pinned links keep enforcing when the
// daemon is gone; a start that failed half-way must not leave them (or ~200 MiB of
// maps) behind, and under systemd's Restart= it would fail again and again.
//
// On a first start (no policy pinned: loader.HasPinnedPolicy) that fails after all,
// once the maps are pinned but before the policy is in force and the interfaces
// attached, Run removes the pins again (undoFirstStart). Pins of an earlier run that
// enforces are never removed: a restart that fails leaves them judging as they were.

// preflight is what a start found before it touched the kernel: the listeners, bound
// (Run serves them once the controller runs), the API server, and what was pinned.
type preflight struct {
	control, metrics, api net.Listener
	apiSrv                *api.Server
	// lock: the pin directory's (loader.LockPinDir), taken here when bpffs exists, else
	// by Run once MountBPFFS has made it; held until Run returns.
	lock *loader.PinLock
	// first: no policy is pinned in bpffs (nothing there, or maps an earlier start
	// left without applying one); dirExisted: bpffs existed before this start.
	first, dirExisted bool
}

// close closes the listeners not yet handed to a server. The lock stays: Run releases
// it last.
func (p *preflight) close() {
	for _, ln := range []net.Listener{p.control, p.metrics, p.api} {
		if ln != nil {
			ln.Close()
		}
	}
}

// preflight checks, in the order a person would fix them, what can be checked without
// the kernel, and binds the listeners. On an error nothing is left open.
func (d *Daemon) preflight() (_ *preflight, err error) {
	p := &preflight{}
	made := false // bpffs made here, removed again if the start stops here
	defer func() {
		if err != nil {
			p.close()
			if made && p.lock != nil {
				// Empty: nothing is pinned before preflight ends. Only with its lock: a
				// start that made the directory but lost the lock to one started at the
				// same moment would remove the directory of the daemon that runs.
				os.Remove(d.cfg.BPFFS)
			}
			p.lock.Close()
		}
	}()
	if err := loader.CheckPinsOutlive(d.cfg.BPFFS); err != nil {
		return nil, err
	}
	// One daemon per pin directory, whatever its control socket and store: the lock is
	// taken before anything here looks at the pins or binds the control socket (a
	// second daemon started at the same moment would remove the first one's socket
	// file). A bpffs directory that is not there yet is made for it, on a bpffs that is
	// mounted; where bpffs itself is still to be mounted, Run locks it once it has.
	_, statErr := os.Stat(d.cfg.BPFFS)
	p.dirExisted = statErr == nil
	if !p.dirExisted && loader.IsBPFFS(filepath.Dir(d.cfg.BPFFS)) {
		if err := os.Mkdir(d.cfg.BPFFS, 0o700); err == nil {
			made = true
			if d.madeBPFFS != nil {
				d.madeBPFFS()
			}
		} else if !errors.Is(err, os.ErrExist) { // made by a daemon started at the same moment
			return nil, fmt.Errorf("bpffs: %w", err)
		}
	}
	// Only a directory on a bpffs: one elsewhere is hidden by the bpffs MountBPFFS
	// mounts over it, and a lock of it would keep out no daemon started after that.
	if loader.IsBPFFS(d.cfg.BPFFS) {
		if p.lock, err = loader.LockPinDir(d.cfg.BPFFS, loader.PinLockWait); err != nil {
			return nil, err
		}
	}
	if d.cfg.API.Listen != "" {
		// The API's configuration, its clients file and its certificates. The audit
		// hook reaches the controller, which exists before the API serves.
		if p.apiSrv, err = api.New(d.cfg.API, backend{d}, func(r api.Record) { d.ctl.AuditAPI(r) }); err != nil {
			return nil, fmt.Errorf("api: %w", err)
		}
	}
	for _, name := range d.cfg.Interfaces {
		if _, err := net.InterfaceByName(name); err != nil {
			if !d.cfg.WaitForInterfaces {
				return nil, fmt.Errorf("interface %s: not found (check the name with `ip link`, or start with --wait-for-interfaces to attach when it appears)", name)
			}
			d.log.Warn("interface not found; will attach when it appears", "interface", name)
			d.gone[name] = true
		}
	}

	pinned, err := loader.HasPinnedPolicy(d.cfg.BPFFS)
	if err != nil {
		// Cannot tell: treat what is there as enforcing (keep it; loading says more).
		d.log.Warn("cannot tell whether a policy is pinned; keeping whatever is", "bpffs", d.cfg.BPFFS, "error", err)
		pinned = true
	}
	p.first = !pinned
	if p.first {
		// With a policy pinned, a configured policy that cannot be used leaves that one
		// in force (Run logs it); on a first start there is none to fall back on.
		if err := controller.CheckFirst(controllerConfig(d.cfg, nil), time.Now()); err != nil {
			return nil, fmt.Errorf("no policy in force and the configured one cannot be used:\n%w", err)
		}
	}

	if p.control, err = d.listenControl(); err != nil {
		return nil, err
	}
	if d.cfg.Listen != "" {
		if p.metrics, err = net.Listen("tcp", d.cfg.Listen); err != nil {
			return nil, fmt.Errorf("metrics listener %s: %w", d.cfg.Listen, err)
		}
	}
	if p.apiSrv != nil {
		if p.api, err = net.Listen("tcp", d.cfg.API.Listen); err != nil {
			return nil, fmt.Errorf("api listener %s: %w", d.cfg.API.Listen, err)
		}
	}
	return p, nil
}

// undoFirstStart removes the pins of a first start that failed (or was stopped)
// before a policy was in force with the interfaces attached: nothing was enforced
// through them. A link pinned meanwhile is not this process's (it attaches only once
// the policy is in force): then everything stays.
func (d *Daemon) undoFirstStart(p *preflight) {
	links, err := loader.PinnedLinks(d.cfg.BPFFS)
	if err != nil {
		d.log.Warn("stopping before enforcing, and the pinned links cannot be listed: the pins stay (`portcullis detach` removes them)", "bpffs", d.cfg.BPFFS, "error", err)
		return
	}
	if len(links) > 0 {
		d.log.Warn("stopping before enforcing, but links are pinned that this start did not make: the pins stay", "bpffs", d.cfg.BPFFS, "links", len(links))
		return
	}
	remove, what := loader.Unpin, "removed the pinned maps and "+d.cfg.BPFFS
	if p.dirExisted {
		remove, what = loader.RemovePins, "removed the pinned maps from "+d.cfg.BPFFS
	}
	if err := remove(d.cfg.BPFFS); err != nil && !errors.Is(err, os.ErrNotExist) {
		d.log.Error("stopping before enforcing, and the pins could not all be removed (`portcullis detach` removes them)", "bpffs", d.cfg.BPFFS, "error", err)
		return
	}
	d.log.Info("nothing was enforced yet: " + what + " (a first start that stops before it enforces leaves nothing pinned)")
}
