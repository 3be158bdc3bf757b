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
		if err := daemon.DetachInterface(bpffs, socket, *iface); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "detached from %s; the other pins in %s are kept\n", *iface, bpffs)
		return nil
	}
	detached, err := daemon.Detach(bpffs, socket)
	if errors.Is(err, daemon.ErrNothingToDetach) {
		fmt.Fprintln(e.stdout, err)
		return nil
	} else if err != nil {
		return err
	}
	for _, name := range detached {
		fmt.Fprintf(e.stdout, "detached from %s\n", name)
	}
	fmt.Fprintf(e.stdout, "removed %s (maps and counters)\n", bpffs)
	fmt.Fprintln(e.stdout, "the daemon's store (runtime quarantines and unblocks, and an override) is kept: the next start applies it again")
	return nil
}
