package main

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/portcullis/portcullis/daemon"
	"github.com/portcullis/portcullis/policy"
)

const applyHelp = `
Sends the policy in FILE to the running daemon over its control socket (root only).
The daemon checks it (the same file:line:column errors as "check"), builds it in fresh
tables, switches to it with one update, and proves the live program against the
reference model; a failed proof rolls back. On any failure the policy in force stays.

An applied policy is an override: it stays in force, over restarts too, and changes of
the configured file wait (status shows them as pending) until "apply --release" hands
control back to the file, which is then applied. To change the policy for good, edit
the configured file and release. Exit 0 applied (or unchanged), 1 not applied (or
applied but not kept on disk, as on a full disk), 2 usage.`

func runApply(e *env, args []string) error {
	fs := newFlags(e, "apply", "[--json] [--socket PATH] FILE  (or: apply --release)", applyHelp)
	p := pathFlags(fs)
	asJSON := fs.Bool("json", false, "print the daemon's answer as JSON")
	release := fs.Bool("release", false, "end the override: back to the configured file")
	min := 1
	if slices.Contains(args, "--release") || slices.Contains(args, "-release") {
		min = 0
	}
	if done, err := parseVerb(fs, "FILE", args, min, 1); done || err != nil {
		return err
	}
	_, socket, err := p.resolve()
	if err != nil {
		return &exitError{2, err}
	}
	if *release {
		if fs.NArg() > 0 {
			return fmt.Errorf("%w: apply --release takes no file", errUsage)
		}
		resp, err := daemon.RemoteReleaseOverride(socket)
		if err != nil {
			return err
		}
		if *asJSON {
			writeJSON(e.stdout, resp)
		} else {
			printApply(e, resp)
		}
		if resp.Error != "" {
			return &exitError{1, fmt.Errorf("not released: %s", resp.Error)}
		}
		return nil
	}
	// The daemon reads the policy's list files itself (cidrs_file, relative to the
	// policy's directory) and names the file in status and the audit log: it gets the
	// absolute path, not one relative to this shell's directory.
	file, err := filepath.Abs(fs.Arg(0))
	if err != nil {
		return &exitError{2, fmt.Errorf("%s: %w", fs.Arg(0), err)}
	}
	data, err := policy.ReadFile(file)
	if err != nil {
		return &exitError{2, err}
	}
	resp, err := daemon.RemoteApply(socket, file, data)
	if err != nil {
		return err
	}
	if *asJSON {
		if err := writeJSON(e.stdout, resp); err != nil {
			return err
		}
	} else {
		printApply(e, resp)
	}
	if resp.Error != "" && resp.InForce() {
		return &exitError{1, fmt.Errorf("%s: applied and in force (%s), but not kept on disk: a restart returns to the override kept before, or to the configured file; make room and apply it again", file, resp.NewHash)}
	}
	if resp.Error != "" {
		return &exitError{1, fmt.Errorf("%s: not applied (%s); the policy in force stays (%s)", file, resp.Result, resp.OldHash)}
	}
	return nil
}

func printApply(e *env, r daemon.ApplyResponse) {
	if r.Error != "" {
		for _, l := range strings.Split(r.Error, "\n") {
			fmt.Fprintln(e.stderr, l)
		}
		for _, m := range r.Mismatches {
			fmt.Fprintln(e.stderr, "  mismatch:", m)
		}
		if !r.InForce() {
			return
		}
	}
	fmt.Fprintf(e.stdout, "%s: %s -> %s\n", r.Result, orNone(r.OldHash), r.NewHash)
	if d := r.Diff; d != nil {
		fmt.Fprintf(e.stdout, "changes: %d blocks, %d IPv4 and %s IPv6 addresses change verdict; governed ports %s\n",
			d.Blocks, d.Addresses4, d.Addresses6, d.Governed)
		for _, c := range d.First {
			fmt.Fprintln(e.stdout, "  "+c)
		}
		if more := d.Blocks - len(d.First); more > 0 && len(d.First) > 0 {
			fmt.Fprintf(e.stdout, "  ... and %d more (portcullis diff OLD NEW lists them all)\n", more)
		}
	}
	fmt.Fprintf(e.stdout, "proof: %d probes, all match the model\n", r.Probes)
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}
