package main

import (
	"fmt"
	"io"

	"github.com/portcullis/portcullis/status"
)

// status, stats and top read the pinned maps (package status): they work while the
// daemon is down.

// jsonErrors makes the error of a verb run with --json come out as JSON too, for the
// script reading stdout: {"error": "..."}. The exit status, and the message main prints
// on stderr, stay as they are.
func jsonErrors(e *env, asJSON bool, err error) error {
	if err != nil && asJSON {
		writeJSON(e.stdout, map[string]string{"error": err.Error()})
	}
	return err
}

// show prints out as JSON (--json) or as text.
func show(e *env, asJSON bool, out interface{ WriteText(io.Writer) error }) error {
	if asJSON {
		return writeJSON(e.stdout, out)
	}
	return out.WriteText(e.stdout)
}

const statusHelp = `
Shows what is enforced: the interfaces the program is attached to and how, the program
id, the policy in force (hash, file, when it went live), the last proof, and whether
the daemon is running. Reads the pinned state, so it works while the daemon is down.`

func runStatus(e *env, args []string) (err error) {
	fs := newFlags(e, "status", "[--json] [--config FILE | --bpffs DIR --socket PATH]", statusHelp)
	p := pathFlags(fs)
	asJSON := fs.Bool("json", false, "print as JSON")
	defer func() { err = jsonErrors(e, *asJSON, err) }()
	if done, err := parseVerb(fs, "no arguments", args, 0, 0); done || err != nil {
		return err
	}
	bpffs, socket, err := p.resolve()
	if err != nil {
		return &exitError{2, err}
	}
	out, err := status.Read(bpffs, socket)
	if err != nil {
		return err
	}
	return show(e, *asJSON, out)
}

const statsHelp = `
Counters of the data plane, per policy entry, outcome and family: packets and bytes to
governed ports, kept by entry name across policy changes and daemon restarts, then the
path counters of every packet seen. Reads the pinned maps (works while the daemon is
down).`

func runStats(e *env, args []string) (err error) {
	fs := newFlags(e, "stats", "[--json] [--config FILE | --bpffs DIR]", statsHelp)
	p := pathFlags(fs)
	asJSON := fs.Bool("json", false, "print as JSON")
	defer func() { err = jsonErrors(e, *asJSON, err) }()
	if done, err := parseVerb(fs, "no arguments", args, 0, 0); done || err != nil {
		return err
	}
	bpffs, _, err := p.resolve()
	if err != nil {
		return &exitError{2, err}
	}
	out, err := status.ReadStats(bpffs)
	if err != nil {
		return err
	}
	return show(e, *asJSON, out)
}

const topHelp = `
The sources with the most blocked (or monitored) attempts to governed ports, most first:
the abuse desk's list of likely infected subscribers, with the source MAC, VLAN ids and
PPPoE session of each one's last attempt. Counts are count-min estimates, shown with
their error bound (never below the true count), over the last one to two offender
periods (offender_period, 24h by default). Reads the pinned offender record (the sources
that keep trying, up to 2048 per CPU; works while the daemon is down).`

func runTop(e *env, args []string) (err error) {
	fs := newFlags(e, "top", "[-n N] [--json] [--config FILE | --bpffs DIR]", topHelp)
	p := pathFlags(fs)
	n := fs.Int("n", 20, "how many sources")
	asJSON := fs.Bool("json", false, "print as JSON")
	defer func() { err = jsonErrors(e, *asJSON, err) }()
	if done, err := parseVerb(fs, "no arguments", args, 0, 0); done || err != nil {
		return err
	}
	if *n < 1 {
		return fmt.Errorf("%w: -n must be at least 1", errUsage)
	}
	bpffs, _, err := p.resolve()
	if err != nil {
		return &exitError{2, err}
	}
	out, err := status.ReadTop(bpffs, *n)
	if err != nil {
		return err
	}
	return show(e, *asJSON, out)
}
