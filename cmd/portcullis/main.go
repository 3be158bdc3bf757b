// Command portcullis is the Portcullis control plane: see `portcullis help`.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"time"

	"github.com/portcullis/portcullis/buildinfo"
)

// env is what a subcommand may touch: injected so tests can drive run directly.
type env struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	now            func() time.Time
}

// exitError carries a specific exit code out of a subcommand.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// errUsage marks a command-line mistake (exit 2).
var errUsage = errors.New("usage")

type command struct {
	name    string
	summary string
	run     func(e *env, args []string) error
}

var commands []command

func init() {
	commands = []command{
		{"check", "check a policy file and summarise it", runCheck},
		{"explain", "say what happens to a packet from an address, and why", runExplain},
		{"diff", "show which address space changes verdict between two policies", runDiff},
		{"run", "run the daemon: attach, apply and prove the policy, serve metrics", runRun},
		{"apply", "apply a policy file on the running daemon (atomic, proved)", runApply},
		{"status", "show interfaces, program, policy in force and last proof", runStatus},
		{"stats", "show counters per policy entry and verdict", runStats},
		{"top", "list the sources with the most blocked port-25 attempts", runTop},
		{"quarantine", "quarantine an address or CIDR now (runtime entry: stored, proved, not in the policy file)", runQuarantine},
		{"unblock", "let an address through on port 25 for a while (a subscriber's opt-out)", runUnblock},
		{"release", "end a runtime quarantine (or, with --unblock, an unblock)", runRelease},
		{"entries", "list the runtime entries in force, and their history", runEntries},
		{"fleet", "routers that take their policy from etcd: status, push, history, rollback, fleet-wide entries", runFleet},
		{"detach", "remove Portcullis from every interface and delete its pins", runDetach},
		{"replay", "judge a pcap/pcapng capture with the real program and a policy", runReplay},
		{"demo", "build a test ISP in namespaces, send real mail through Portcullis, show the result", runDemo},
		{"version", "print the version", runVersion},
	}
}

// version is the release this tree is working towards; a binary built from a module
// version (go install ...@v1.2.3) reports that instead.
const version = "0.1.0-dev"

const versionHelp = `
Prints the version, the commit the binary was built from (with "with uncommitted
changes" if the tree was dirty), the SHA-256 of the BPF object compiled into it, and
the Go version. portcullis --version prints the same.`

func runVersion(e *env, args []string) error {
	fs := newFlags(e, "version", "", versionHelp)
	if done, err := parseVerb(fs, "no arguments", args, 0, 0); done || err != nil {
		return err
	}
	_, err := fmt.Fprint(e.stdout, versionText(buildinfo.Read(version)))
	return err
}

func versionText(in buildinfo.Info) string {
	commit := "unknown (built without VCS information)"
	if in.Revision != "" {
		commit = in.Revision
		if in.Modified {
			commit += ", with uncommitted changes"
		}
		if in.Time != "" {
			commit += " (" + in.Time + ")"
		}
	}
	goVersion := in.Go
	if goVersion == "" {
		goVersion = runtime.Version()
	}
	return fmt.Sprintf("portcullis %s\ncommit      %s\nbpf object  sha256:%s\ngo          %s\n", in.Version, commit, in.BPFObject, goVersion)
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: portcullis COMMAND [ARGS]\n\ncommands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nportcullis help COMMAND (or COMMAND -h) explains a command; portcullis --version says which build this is.")
}

func lookup(name string) (command, error) {
	for _, c := range commands {
		if c.name == name {
			return c, nil
		}
	}
	names := make([]string, len(commands))
	for i, c := range commands {
		names[i] = c.name
	}
	if s := suggest(name, names); s != "" {
		return command{}, fmt.Errorf("%w: unknown command %q: did you mean %q? (see portcullis help)", errUsage, name, s)
	}
	return command{}, fmt.Errorf("%w: unknown command %q (see portcullis help)", errUsage, name)
}

// run executes one command line and returns its error; main maps it to an exit code.
func run(e *env, args []string) error {
	switch {
	case len(args) == 0:
		usage(e.stdout)
		return fmt.Errorf("%w: no command given", errUsage)
	case args[0] == "-h" || args[0] == "--help" || args[0] == "-help" || args[0] == "help" && (len(args) == 1 || args[1] == "help"):
		usage(e.stdout)
		return nil
	case args[0] == "help": // help VERB is VERB -h
		c, err := lookup(args[1])
		if err != nil {
			return err
		}
		if len(args) > 2 {
			return fmt.Errorf("%w: help takes one command name", errUsage)
		}
		return c.run(e, []string{"-h"})
	case args[0] == "--version" || args[0] == "-version":
		return runVersion(e, args[1:])
	}
	c, err := lookup(args[0])
	if err != nil {
		return err
	}
	return c.run(e, args[1:])
}

func exitCode(err error) int {
	var ee *exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.code
	case errors.Is(err, errUsage):
		return 2
	}
	return 1
}

func main() {
	err := run(&env{stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv, now: time.Now}, os.Args[1:])
	if err != nil && !errors.Is(err, errChanged) {
		fmt.Fprintln(os.Stderr, "portcullis:", err)
	}
	os.Exit(exitCode(err))
}

// errChanged is diff's "something changed" (exit 1); it prints nothing more.
var errChanged = errors.New("policies differ")
