package main

import (
	"flag"
	"fmt"
	"slices"
	"time"

	"github.com/portcullis/portcullis/daemon"
	"github.com/portcullis/portcullis/overlay"
)

const quarantineHelp = `
Quarantines ADDRESS or CIDR on the running daemon: TCP to the governed ports from it is
blocked (reset or drop, as the policy's runtime.quarantine.verdict says) until the term
ends, checked before the policy's ranges and lifted by the data plane itself on time.
The NOC's policy file is not touched. Without --for the term escalates with each repeat
quarantine of the same source (the policy's runtime.quarantine.terms, default 1h, 4h,
24h). The entry is stored (it survives daemon restarts), audited with --reason and
--ticket, written into the live data plane with single map updates and proved.`

const unblockHelp = `
Unblocks ADDRESS or CIDR on the running daemon: TCP to the governed ports from it
passes until the term ends (a subscriber's opt-out of the port-25 block; a quarantine
still wins). The policy may forbid unblocks in some ranges (runtime.unblock.forbidden_in,
e.g. CGNAT pools) and bound their term (runtime.unblock.max).`

const releaseHelp = `
Ends a runtime quarantine of ADDRESS or CIDR now (with --unblock: ends an unblock).`

const entriesHelp = `
Lists the runtime entries in force (kind, prefix, until, who, ticket, reason), with
--history the history. --prefix narrows both to what concerns one address or network:
its own entries and those of the networks that hold it (or lie within it).`

func entryFlags(e *env, verb, usage, help string) (*flag.FlagSet, paths, *string, *string, *string) {
	fs := newFlags(e, verb, usage, help)
	p := pathFlags(fs)
	term := fs.String("for", "", "how long (24h, 90m, 30d)")
	reason := fs.String("reason", "", "why (required; audited)")
	ticket := fs.String("ticket", "", "the ticket it belongs to (audited)")
	return fs, p, term, reason, ticket
}

func runQuarantine(e *env, args []string) error {
	return runAddEntry(e, args, overlay.Quarantine, "quarantine", quarantineHelp)
}
func runUnblock(e *env, args []string) error {
	return runAddEntry(e, args, overlay.Unblock, "unblock", unblockHelp)
}

func runAddEntry(e *env, args []string, kind overlay.Kind, verb, help string) error {
	fs, p, term, reason, ticket := entryFlags(e, verb, "[--for DURATION] --reason TEXT [--ticket ID] [--socket PATH] ADDRESS|CIDR", help)
	asJSON := fs.Bool("json", false, "print the entry as JSON")
	if done, err := parseVerb(fs, "ADDRESS|CIDR", args, 1, 1); done || err != nil {
		return err
	}
	if *reason == "" {
		return fmt.Errorf("%w: %s needs --reason (say why, for the next person on shift)", errUsage, verb)
	}
	_, socket, err := p.resolve()
	if err != nil {
		return &exitError{2, err}
	}
	ev, err := daemon.RemoteAddEntry(socket, daemon.EntryRequest{Kind: kind, Prefix: fs.Arg(0), For: *term, Reason: *reason, Ticket: *ticket})
	ent := ev.Entry
	if err != nil {
		return &exitError{1, fmt.Errorf("%s %s: %w; nothing changed", verb, fs.Arg(0), err)}
	}
	if *asJSON {
		return writeJSON(e.stdout, ent)
	}
	what := "quarantined"
	if kind == overlay.Unblock {
		what = "unblocked"
	}
	level := ""
	switch {
	case ev.Action == overlay.Extended && kind == overlay.Quarantine:
		level = " (in force already: extended, not escalated)"
	case ev.Action == overlay.Extended:
		level = " (in force already: extended)"
	case ent.Level > 0 && *term == "":
		level = fmt.Sprintf(" (repeat %d: escalated)", ent.Level+1)
	case ent.Level > 0:
		level = fmt.Sprintf(" (repeat %d: for the term asked)", ent.Level+1)
	}
	fmt.Fprintf(e.stdout, "%s %s until %s%s\n", what, ent.Prefix, ent.Expires.UTC().Format(time.RFC3339), level)
	return nil
}

func runRelease(e *env, args []string) error {
	fs := newFlags(e, "release", "[--unblock] [--reason TEXT] [--socket PATH] ADDRESS|CIDR", releaseHelp)
	p := pathFlags(fs)
	unblock := fs.Bool("unblock", false, "end an unblock instead of a quarantine")
	reason := fs.String("reason", "", "why (audited)")
	if done, err := parseVerb(fs, "ADDRESS|CIDR", args, 1, 1); done || err != nil {
		return err
	}
	_, socket, err := p.resolve()
	if err != nil {
		return &exitError{2, err}
	}
	kind := overlay.Quarantine
	if *unblock {
		kind = overlay.Unblock
	}
	if err := daemon.RemoteRelease(socket, kind, fs.Arg(0), *reason); err != nil {
		return &exitError{1, fmt.Errorf("release %s: %w", fs.Arg(0), err)}
	}
	fmt.Fprintf(e.stdout, "released %s %s\n", kind, fs.Arg(0))
	return nil
}

func runEntries(e *env, args []string) error {
	fs := newFlags(e, "entries", "[--json] [--history] [--prefix ADDRESS|CIDR] [--socket PATH]", entriesHelp)
	p := pathFlags(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	history := fs.Bool("history", false, "show the history too")
	prefix := fs.String("prefix", "", "only the entries and history that concern this address or network (its own, and those of networks that hold it or lie within it)")
	if done, err := parseVerb(fs, "no arguments", args, 0, 0); done || err != nil {
		return err
	}
	_, socket, err := p.resolve()
	if err != nil {
		return &exitError{2, err}
	}
	resp, err := daemon.RemoteEntries(socket, *history || *prefix != "", *prefix)
	if err != nil {
		return err
	}
	if *prefix != "" { // the daemon filtered the history; the entries too
		want, err := overlay.ParseTarget(*prefix)
		if err != nil {
			return &exitError{2, fmt.Errorf("--prefix: %w", err)}
		}
		resp.Entries = slices.DeleteFunc(resp.Entries, func(x overlay.Entry) bool { return !overlay.Concerns(x.Prefix, want) })
	}
	if *asJSON {
		return writeJSON(e.stdout, resp)
	}
	if len(resp.Entries) == 0 && *prefix != "" {
		fmt.Fprintf(e.stdout, "no runtime entry for %s\n", *prefix)
	} else if len(resp.Entries) == 0 {
		fmt.Fprintln(e.stdout, "no runtime entries")
	} else {
		fmt.Fprintf(e.stdout, "%-10s %-24s %-20s %-18s %-12s %s\n", "KIND", "PREFIX", "UNTIL", "WHO", "TICKET", "REASON")
		for _, x := range resp.Entries {
			fmt.Fprintf(e.stdout, "%-10s %-24s %-20s %-18s %-12s %s\n", x.Kind, x.Prefix, x.Expires.UTC().Format(time.RFC3339), overlay.Printable(x.Who), orDash(overlay.Printable(x.Ticket)), overlay.Printable(x.Reason))
		}
	}
	for _, ev := range resp.History {
		fmt.Fprintf(e.stdout, "%s  %-9s %-10s %-24s by %s until %s  %s\n", ev.Time.UTC().Format(time.RFC3339), ev.Action, ev.Entry.Kind, ev.Entry.Prefix, overlay.Printable(ev.Who),
			ev.Entry.Expires.UTC().Format(time.RFC3339), overlay.Printable(ev.Reason))
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
