package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/portcullis/portcullis/daemon"
	"github.com/portcullis/portcullis/loader"
)

const defaultConfig = "/etc/portcullis/portcullis.yaml"

const runHelp = `
Runs the daemon: attaches the XDP program to the configured subscriber-facing
interfaces (bpf_link, pinned under the bpffs directory), applies the policy file and
proves it, then serves metrics and the control socket. It re-applies the policy on
SIGHUP and when the file changes, and re-attaches interfaces that come back.

Stopping it (or a crash) leaves enforcement in place: links and maps stay pinned, and a
restarted daemon adopts them without a gap and without resetting counters. Only
"portcullis detach" removes them. See docs/daemon.md and deploy/.`

func runRun(e *env, args []string) error {
	fs := newFlags(e, "run", "[--config FILE] [--wait-for-interfaces] [--switch-mode]", runHelp)
	cfgPath := fs.String("config", defaultConfig, "configuration file")
	wait := fs.Bool("wait-for-interfaces", false, "a missing interface is a warning (attached when it appears), not an error")
	switchMode := fs.Bool("switch-mode", false, "re-attach interfaces whose pinned link is in another mode than the configured one (each is unjudged for a moment: the kernel cannot hold both modes at once)")
	if done, err := parseVerb(fs, "no arguments", args, 0, 0); done || err != nil {
		return err
	}
	cfg, err := daemon.LoadConfig(*cfgPath)
	if err != nil {
		return &exitError{2, err}
	}
	cfg.WaitForInterfaces = cfg.WaitForInterfaces || *wait
	cfg.SwitchMode = cfg.SwitchMode || *switchMode
	if os.Geteuid() != 0 {
		return errors.New("run needs root (CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN to mount bpffs); see deploy/portcullis.service")
	}
	var h slog.Handler = slog.NewTextHandler(e.stderr, nil)
	if cfg.LogFormat == "json" {
		h = slog.NewJSONHandler(e.stderr, nil)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return daemon.New(cfg, slog.New(h)).Run(ctx)
}

// paths are where the daemon keeps its pins and socket: from --config if given (or
// the default config if it exists), overridden by --bpffs and --socket.
type paths struct {
	config, bpffs, socket *string
}

func pathFlags(fs *flag.FlagSet) paths {
	return paths{
		config: fs.String("config", defaultConfig, "read bpffs and control_socket from this configuration, if it exists"),
		bpffs:  fs.String("bpffs", "", "bpffs directory of the pins (default: the configuration's, else "+loader.DefaultPinDir+")"),
		socket: fs.String("socket", "", "control socket (default: the configuration's, else "+daemon.DefaultControlSocket+")"),
	}
}

func (p paths) resolve() (bpffs, socket string, err error) {
	bpffs, socket = loader.DefaultPinDir, daemon.DefaultControlSocket
	if _, statErr := os.Stat(*p.config); statErr == nil {
		cfg, err := daemon.LoadConfig(*p.config)
		if err != nil {
			return "", "", err
		}
		bpffs, socket = cfg.BPFFS, cfg.ControlSocket
	} else if *p.config != defaultConfig {
		return "", "", fmt.Errorf("configuration %s: %w", *p.config, statErr)
	}
	if *p.bpffs != "" {
		bpffs = *p.bpffs
	}
	if *p.socket != "" {
		socket = *p.socket
	}
	return bpffs, socket, nil
}

const detachHelp = `
Removes Portcullis from every interface it is attached to and deletes its pinned maps
(counters, offender record, the policy in force). Nothing else ever detaches: stopping
or killing the daemon leaves enforcement in place. Stop the daemon first, or it
attaches again. The daemon's store (runtime quarantines and unblocks, and an override
applied with "apply") is left alone: the next start applies them again.

With --interface NAME it removes Portcullis from that interface only, and keeps every
other pin: for an interface taken out of the configuration's interfaces, whose pinned
link the daemon keeps (status marks it). It may run while the daemon runs, if the
daemon does not list NAME.`

func runDetach(e *env, args []string) error {
	fs := newFlags(e, "detach", "[--config FILE | --bpffs DIR --socket PATH] [--interface NAME]", detachHelp)
	p := pathFlags(fs)
	iface := fs.String("interface", "", "detach from this interface only, keeping the other pins")
	if done, err := parseVerb(fs, "no arguments", args, 0, 0); done || err != nil {
		return err
	}
	bpffs, socket, err := p.resolve()
	if err != nil {
		return &exitError{2, err}
	}
	if *iface != "" {
		return detachInterface(e, bpffs, socket, *iface)
	}
	if st, err := daemon.RemoteStatus(socket); err == nil {
		return fmt.Errorf("the daemon (pid %d) is running and would attach again: stop it first (systemctl stop portcullis), then detach", st.PID)
	}
	if err := loader.CheckPinsVisible(bpffs); err != nil {
		return err // "nothing to detach" would be wrong: the pins are elsewhere
	}
	lock, err := holdPins(bpffs)
	if errors.Is(err, loader.ErrPinsInUse) {
		return fmt.Errorf("a daemon is running with the pins in %s (its control socket is not %s) and would attach again: stop it first, then detach", bpffs, socket)
	} else if err != nil {
		return err
	}
	defer lock.Close()
	links, err := loader.PinnedLinks(bpffs)
	if err != nil {
		return err
	}
	if _, err := os.Stat(bpffs); errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(e.stdout, "nothing to detach: %s does not exist\n", bpffs)
		return nil
	}
	if err := loader.Unpin(bpffs); err != nil {
		return fmt.Errorf("detaching: %w", err)
	}
	for _, l := range links {
		fmt.Fprintf(e.stdout, "detached from %s\n", l.Interface)
	}
	fmt.Fprintf(e.stdout, "removed %s (maps and counters)\n", bpffs)
	fmt.Fprintln(e.stdout, "the daemon's store (runtime quarantines and unblocks, and an override) is kept: the next start applies it again")
	return nil
}

// detachInterface is detach --interface NAME.
func detachInterface(e *env, bpffs, socket, name string) error {
	if st, err := daemon.RemoteStatus(socket); err == nil {
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
	if err := loader.DetachLink(bpffs, name); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "detached from %s; the other pins in %s are kept\n", name, bpffs)
	return nil
}

// holdPins takes the lock of the pin directory bpffs for detach, which holds it while
// it removes pins: a daemon started meanwhile waits, and does not adopt pins that are
// going (asking whether one holds it and letting go at once left that gap).
// loader.ErrPinsInUse when a daemon holds it; no lock, and no error, when bpffs does
// not exist.
func holdPins(bpffs string) (*loader.PinLock, error) {
	lock, err := loader.LockPinDir(bpffs, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	return lock, err
}
