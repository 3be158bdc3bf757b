package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/user"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/portcullis/portcullis/daemon"
	"github.com/portcullis/portcullis/fleet"
	"github.com/portcullis/portcullis/overlay"
	"github.com/portcullis/portcullis/policy"
)

const fleetHelp = `
The fleet: routers that take their policy from etcd (policy_source: etcd), by group.

  portcullis fleet status [--group G] [--problems] [--json]
      every router of every group (or of G): the revision it enforces, its proof, and
      its state: ok, behind (an older revision), waiting, failed (it refused the group's
      revision: the last error), stale (it writes its report but cannot read its
      group, or is catching up after an outage), damaged (its key holds no report:
      the error names it); routers that reported once and whose
      report's lease ended (stopped, or cut off from etcd longer than its TTL) are
      listed as gone. Each group's line counts its routers by state; --problems
      leaves out the ok ones
  portcullis fleet push FILE --group G [--dry-run] [--message TEXT] [--expect-revision N] [--new-group]
      checks FILE here, then replaces the group's policy with a compare-and-swap on the
      revision read (or N): if someone pushed since, nothing is written and the error
      says who; --dry-run shows what would change against what the group has. A group
      etcd does not know (no policy, no router ever reported in it) is refused as a
      typo unless --new-group says to create it. A current policy that does not
      compile here is replaced as a whole (or: fleet rollback)
  portcullis fleet history --group G [--limit N] [--json]
      the group's pushes, newest first (the newest 30 unless --limit; 0: all)
  portcullis fleet rollback --group G --to REV [--expect-revision N]
      pushes the policy of revision REV again, as a new revision
  portcullis fleet quarantine|unblock ADDRESS|CIDR --group G --for DURATION --reason TEXT [--ticket ID] [--force]
  portcullis fleet release ADDRESS|CIDR --group G [--unblock]
  portcullis fleet entries --group G [--json]
      runtime entries for every router of the group: each router adds them (checked
      against its own policy's bounds) and they end with their lease. An entry for a
      group in which no router reports now is refused (exit 1) unless --force
  portcullis fleet forget ROUTER --group G
      drops a router that no longer reports (decommissioned, renamed, moved to another
      group) from the group's known routers: fleet status lists it as gone until then
  A group name etcd does not know is an error (exit 1) naming the groups there are.
  portcullis fleet grant router --group G --router NAME [--entries] [--etcd-user U] [--etcd-password-file F]
  portcullis fleet grant noc --etcd-user U [--etcd-password-file F]
      with etcd's root credentials: the roles of docs/fleet.md. A router may read its
      group and write only its own status; the NOC's user may push. Without a password
      the user is a certificate's common name (etcd --client-cert-auth)

etcd is reached with --endpoints (or $PORTCULLIS_ETCD_ENDPOINTS) and --ca, --cert,
--key, or --user and --password-file; or with --config, a daemon configuration whose
etcd: section (and group) is used. The NOC's credentials push; a router's may only read
its group and write its own status (docs/fleet.md).`

// fleetConn are the flags every fleet verb takes to reach etcd.
type fleetConn struct {
	config, endpoints, ca, cert, key, user, password, prefix, group *string
}

func fleetFlags(e *env, verb, usage string) (*flag.FlagSet, fleetConn) {
	fs := newFlags(e, "fleet "+verb, usage, fleetHelp)
	return fs, fleetConn{
		config:    fs.String("config", "", "a daemon configuration: use its etcd: section and group"),
		endpoints: fs.String("endpoints", "", "etcd endpoints, comma-separated (default $PORTCULLIS_ETCD_ENDPOINTS)"),
		ca:        fs.String("ca", "", "CA certificate of the etcd servers"),
		cert:      fs.String("cert", "", "client certificate"),
		key:       fs.String("key", "", "client certificate's key"),
		user:      fs.String("user", "", "etcd user (when not by certificate)"),
		password:  fs.String("password-file", "", "file holding the etcd user's password"),
		prefix:    fs.String("prefix", "", "key prefix of the fleet (default "+fleet.DefaultPrefix+")"),
		group:     fs.String("group", "", "router group"),
	}
}

// dial connects as the flags say; with needGroup, a group must be named.
func (c fleetConn) dial(e *env, needGroup bool) (*fleet.Client, string, error) {
	conn, group := fleet.Conn{}, *c.group
	if *c.config != "" {
		cfg, err := daemon.LoadConfig(*c.config)
		if err != nil {
			return nil, "", err
		}
		conn = cfg.Etcd.Conn
		if group == "" {
			group = cfg.Etcd.Group
		}
	}
	eps := cmp.Or(*c.endpoints, e.getenv("PORTCULLIS_ETCD_ENDPOINTS"))
	if eps != "" {
		conn.Endpoints = strings.Split(eps, ",")
	}
	for dst, src := range map[*string]string{&conn.CA: *c.ca, &conn.Cert: *c.cert, &conn.Key: *c.key,
		&conn.User: *c.user, &conn.PasswordFile: *c.password, &conn.Prefix: *c.prefix} {
		if src != "" {
			*dst = src
		}
	}
	if len(conn.Endpoints) == 0 {
		return nil, "", fmt.Errorf("%w: no etcd endpoints: give --endpoints https://HOST:2379 (or $PORTCULLIS_ETCD_ENDPOINTS, or --config)", errUsage)
	}
	if needGroup && group == "" {
		return nil, "", fmt.Errorf("%w: name the router group: --group G (portcullis fleet status lists them)", errUsage)
	}
	if group != "" {
		if err := fleet.CheckName("group", group); err != nil {
			return nil, "", fmt.Errorf("%w: --group: %v", errUsage, err)
		}
	}
	cli, err := fleet.Dial(conn)
	return cli, group, err
}

// open connects as dial does, and gives every call the verb makes one deadline; done
// closes both.
func (c fleetConn) open(e *env, needGroup bool) (context.Context, *fleet.Client, string, func(), error) {
	cli, group, err := c.dial(e, needGroup)
	if err != nil {
		return nil, nil, "", nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), fleetTimeout)
	if err := cli.Reachable(ctx, 5*time.Second); err != nil {
		cancel()
		cli.Close()
		return nil, nil, "", nil, err
	}
	return ctx, cli, group, func() { cancel(); cli.Close() }, nil
}

// openGroup is open for a verb that works on an existing group: one that holds
// nothing is requireGroup's error, with the connection closed.
func (c fleetConn) openGroup(e *env) (context.Context, *fleet.Client, string, func(), error) {
	ctx, cli, group, done, err := c.open(e, true)
	if err != nil {
		return nil, nil, "", nil, err
	}
	if _, err := requireGroup(ctx, cli, group, ""); err != nil {
		done()
		return nil, nil, "", nil, err
	}
	return ctx, cli, group, done, nil
}

// requireGroup returns what group holds, or, if it holds nothing in etcd (a misspelt
// name, or a group still to be made), an error wrapping fleet.ErrNoGroup that lists
// the groups there are and the one meant; then says what to do instead.
func requireGroup(ctx context.Context, cli *fleet.Client, group, then string) (fleet.GroupInfo, error) {
	gi, err := fleet.Inspect(ctx, cli, group)
	if err != nil || gi.Exists {
		return gi, err
	}
	msg := "no policy, no router, nothing under it"
	// A router's credentials may not list the groups: then the name alone.
	if gs, err := fleet.Groups(ctx, cli); err == nil {
		if len(gs) == 0 {
			msg += " (there are no groups yet)"
		} else {
			msg += " (groups: " + strings.Join(gs, ", ") + ")"
		}
		if s := suggest(group, gs); s != "" {
			msg += fmt.Sprintf("; did you mean %s?", s)
		}
	}
	if then != "" {
		msg += "; " + then
	}
	return gi, fmt.Errorf("%w %s in etcd: %s", fleet.ErrNoGroup, group, msg)
}

// reporting says which routers report in a group now, for the output of a change.
func reporting(gi fleet.GroupInfo) string {
	switch n := len(gi.Reporting); n {
	case 0:
		return "no router reports in it now"
	case 1:
		return "1 router reports in it now (" + gi.Reporting[0] + ")"
	default:
		if n > 5 {
			return fmt.Sprintf("%d routers report in it now (%s, ...)", n, strings.Join(gi.Reporting[:5], ", "))
		}
		return fmt.Sprintf("%d routers report in it now (%s)", n, strings.Join(gi.Reporting, ", "))
	}
}

// who is the name a change is audited under: the user (through sudo too) at the host.
func who(e *env) string {
	u := cmp.Or(e.getenv("SUDO_USER"), e.getenv("USER"))
	if me, err := user.Current(); u == "" && err == nil {
		u = me.Username
	}
	host, _ := os.Hostname()
	return cmp.Or(u, "unknown") + "@" + cmp.Or(host, "unknown")
}

// fleetTimeout bounds each fleet verb: etcd down is an error, not a hang.
const fleetTimeout = 30 * time.Second

func runFleet(e *env, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintf(e.stdout, "usage: portcullis fleet VERB ...\n\n%s\n", strings.TrimSpace(fleetHelp))
		return nil
	}
	verbs := map[string]func(*env, []string) error{
		"status": runFleetStatus, "push": runFleetPush, "history": runFleetHistory, "rollback": runFleetRollback,
		"quarantine": func(e *env, a []string) error { return runFleetAdd(e, a, overlay.Quarantine) },
		"unblock":    func(e *env, a []string) error { return runFleetAdd(e, a, overlay.Unblock) },
		"release":    runFleetRelease, "entries": runFleetEntries, "grant": runFleetGrant, "forget": runFleetForget,
	}
	run, ok := verbs[args[0]]
	if !ok {
		return fmt.Errorf("%w: unknown fleet verb %q: one of status, push, history, rollback, quarantine, unblock, release, entries, forget, grant", errUsage, args[0])
	}
	return run(e, args[1:])
}

func runFleetStatus(e *env, args []string) error {
	fs, c := fleetFlags(e, "status", "[--group G] [--problems] [--json]")
	asJSON := fs.Bool("json", false, "print as JSON")
	problems := fs.Bool("problems", false, "leave out the routers that are ok (each group's line still counts them)")
	if done, err := parseVerb(fs, "no arguments", args, 0, 0); done || err != nil {
		return err
	}
	ctx, cli, group, done, err := c.open(e, false)
	if err != nil {
		return err
	}
	defer done()
	if group != "" {
		if _, err := requireGroup(ctx, cli, group, ""); err != nil {
			return err
		}
	}
	gs, err := fleet.FleetStatus(ctx, cli, group)
	if err != nil {
		return err
	}
	if *problems {
		gs = fleet.Problems(gs)
	}
	if *asJSON {
		return writeJSON(e.stdout, gs)
	}
	if len(gs) == 0 {
		fmt.Fprintln(e.stdout, "no groups (portcullis fleet push FILE --group G makes one)")
		return nil
	}
	return fleet.WriteTable(e.stdout, gs)
}

func runFleetPush(e *env, args []string) error {
	fs, c := fleetFlags(e, "push", "FILE --group G [--dry-run] [--message TEXT] [--expect-revision N]")
	dry := fs.Bool("dry-run", false, "show what would change; write nothing")
	msg := fs.String("message", "", "why (kept in the group's history)")
	expect := fs.Int64("expect-revision", -1, "push only if the group is still at this revision (default: the one read now; 0: the group must be new)")
	asJSON := fs.Bool("json", false, "--dry-run: print the diff as JSON")
	newGroup := fs.Bool("new-group", false, "the group does not exist yet: create it (without it, a group name etcd does not know is refused, as a typo)")
	if done, err := parseVerb(fs, "a policy FILE", args, 1, 1); done || err != nil {
		return err
	}
	file := fs.Arg(0)
	text, err := policy.ReadFile(file)
	if err != nil {
		return &exitError{2, err}
	}
	// Checked here as every router will: inline (a policy from etcd names no list files).
	pol, err := policy.ParseInline(file, text, e.now())
	if err == nil {
		_, err = policy.Compile(pol, e.now())
	}
	if err != nil {
		return rejectPolicy(e, file, err, 2)
	}
	ctx, cli, group, done, err := c.open(e, true)
	if err != nil {
		return err
	}
	defer done()
	then := "give --new-group to create it"
	if *dry {
		then = "a push would need --new-group to create it"
	}
	gi, err := fleet.Inspect(ctx, cli, group)
	if err != nil {
		return err
	}
	if !gi.Exists && !*newGroup {
		_, err := requireGroup(ctx, cli, group, then)
		return err
	}
	if len(gi.Reporting) == 0 {
		fmt.Fprintf(e.stderr, "portcullis: note: group %s: %s; routers with etcd.group: %s take the policy when they report\n", group, reporting(gi), group)
	}
	plan, err := fleet.DryRun(ctx, cli, group, file, text)
	if err != nil {
		return err
	}
	if plan.OldErr != nil {
		// Not a reason to refuse: a good policy over it is one way out, a rollback to
		// a revision that compiled is the other.
		fmt.Fprintf(e.stderr, "portcullis: group %s's current policy (revision %d) does not compile here, so there is no diff: the push replaces it as a whole (routers refuse such a revision and keep their last good one; `portcullis fleet rollback --group %s --to REV` brings back one from `portcullis fleet history`):\n  %s\n",
			group, plan.Revision, group, strings.ReplaceAll(plan.OldErr.Error(), "\n", "\n  "))
	}
	if *dry {
		switch {
		case plan.Revision == 0:
			fmt.Fprintf(e.stdout, "group %s has no policy yet: the push would create it (policy %s; --expect-revision 0)\n", group, plan.NewHash)
		case plan.OldErr != nil:
			fmt.Fprintf(e.stdout, "group %s at revision %d: the push would replace a policy that does not compile with policy %s:\n", group, plan.Revision, plan.NewHash)
			writePolicySummary(e, plan.New)
		default:
			fmt.Fprintf(e.stdout, "group %s at revision %d:\n", group, plan.Revision)
			return writeDiff(e, plan.OldHash, plan.NewHash, *plan.Diff, *asJSON)
		}
		return nil
	}
	rev := plan.Revision
	if *expect >= 0 {
		rev = *expect
	}
	newRev, err := fleet.Push(ctx, cli, group, text, who(e), *msg, rev)
	if errors.Is(err, fleet.ErrConflict) {
		return &exitError{3, err}
	}
	if err != nil {
		return err
	}
	over := ""
	if rev > 0 {
		// What was replaced, and by whom: the compare-and-swap guards only the moment
		// between this command's read and its write, not the time since the file was
		// edited, so a colleague's push meanwhile must at least be seen.
		over = fmt.Sprintf(", over revision %d", rev)
		if plan.Revision == rev && plan.By != "" {
			over += fmt.Sprintf(" (pushed by %s %s ago", overlay.Printable(plan.By), e.now().Sub(plan.At).Round(time.Second))
			if plan.Message != "" {
				over += fmt.Sprintf(": %q", plan.Message)
			}
			over += ")"
			if fi, err := os.Stat(file); err == nil && plan.By != who(e) && fi.ModTime().Before(plan.At) {
				fmt.Fprintf(e.stderr, "portcullis: note: this push replaced revision %d, which %s pushed after %s was last changed: if you did not mean to replace it, `portcullis fleet history --group %s` shows it and `portcullis fleet rollback --group %s --to %d` brings it back\n",
					rev, overlay.Printable(plan.By), file, group, group, rev)
			}
		}
	}
	fmt.Fprintf(e.stdout, "pushed %s to group %s: revision %d%s (policy %s); %s; `portcullis fleet status --group %s` shows the routers taking it\n",
		file, group, newRev, over, plan.NewHash, reporting(gi), group)
	return nil
}

// writePolicySummary shows a policy as a whole, range by range: what a push over a
// policy that does not compile shows instead of a diff.
func writePolicySummary(e *env, p *policy.Policy) {
	fmt.Fprintf(e.stdout, "  default %s; governed ports %v; protected ports %v\n", p.Default, p.Governed, p.Protected)
	for _, r := range p.Ranges {
		fmt.Fprintf(e.stdout, "  range %s: %s, prefixes: %d", r.Name, r.Verdict, len(r.CIDRs))
		if r.Scope != nil {
			fmt.Fprintf(e.stdout, ", interfaces %v", []string(r.Scope))
		}
		fmt.Fprintln(e.stdout)
	}
	if n := len(p.Exemptions) + len(p.Quarantines) + len(p.Relays); n > 0 {
		fmt.Fprintf(e.stdout, "  %d exemptions, %d quarantines, %d relays\n", len(p.Exemptions), len(p.Quarantines), len(p.Relays))
	}
}

func runFleetHistory(e *env, args []string) error {
	fs, c := fleetFlags(e, "history", "--group G [--limit N] [--json]")
	asJSON := fs.Bool("json", false, "print as JSON (with each revision's text)")
	limit := fs.Int64("limit", 30, "the newest N records (each holds its policy's text); 0: all")
	if done, err := parseVerb(fs, "no arguments", args, 0, 0); done || err != nil {
		return err
	}
	ctx, cli, group, done, err := c.openGroup(e)
	if err != nil {
		return err
	}
	defer done()
	if *limit < 0 {
		return fmt.Errorf("%w: --limit %d: give a number of records, or 0 for all", errUsage, *limit)
	}
	rs, total, err := fleet.HistoryLimit(ctx, cli, group, *limit)
	if err != nil && !errors.Is(err, fleet.ErrDamagedRecord) {
		return err
	}
	if n := total - int64(len(rs)); *limit > 0 && total > *limit && n > 0 {
		fmt.Fprintf(e.stderr, "portcullis: the newest %d of group %s's %d history records; --limit 0 shows them all\n", *limit, group, total)
	}
	listErr := err // damaged records: the good ones are listed, then the error
	if *asJSON {
		err = writeJSON(e.stdout, rs)
	} else {
		w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "REVISION\tAT\tWHO\tPOLICY\tMESSAGE")
		for _, r := range rs {
			fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\n", r.Revision, r.At.UTC().Format(time.RFC3339), overlay.Printable(r.Who), overlay.Printable(r.Hash), overlay.Printable(r.Message))
		}
		err = w.Flush()
	}
	if err == nil && listErr != nil {
		return &exitError{1, listErr}
	}
	return err
}

func runFleetRollback(e *env, args []string) error {
	fs, c := fleetFlags(e, "rollback", "--group G --to REV [--expect-revision N]")
	to := fs.Int64("to", 0, "the revision whose policy to push again (portcullis fleet history)")
	expect := fs.Int64("expect-revision", -1, "roll back only if the group is still at this revision (default: the one read now)")
	if done, err := parseVerb(fs, "no arguments", args, 0, 0); done || err != nil {
		return err
	}
	if *to <= 0 {
		return fmt.Errorf("%w: give --to REV (portcullis fleet history lists the revisions)", errUsage)
	}
	ctx, cli, group, done, err := c.openGroup(e)
	if err != nil {
		return err
	}
	defer done()
	rev := *expect
	if rev < 0 {
		if _, rev, err = fleet.Read(ctx, cli, group); err != nil {
			return err
		}
	}
	newRev, err := fleet.Rollback(ctx, cli, group, *to, who(e), rev)
	if errors.Is(err, fleet.ErrConflict) {
		return &exitError{3, err}
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "group %s: the policy of revision %d is in force again as revision %d\n", group, *to, newRev)
	return nil
}

func runFleetAdd(e *env, args []string, kind overlay.Kind) error {
	fs, c := fleetFlags(e, string(kind), "ADDRESS|CIDR --group G --for DURATION --reason TEXT [--ticket ID]")
	term := fs.String("for", "", "how long (required for a fleet entry: 24h, 90m, 30d)")
	reason := fs.String("reason", "", "why (required)")
	ticket := fs.String("ticket", "", "the ticket it belongs to")
	force := fs.Bool("force", false, "write the entry even if no router reports in the group now (routers take it when they report)")
	if done, err := parseVerb(fs, "ADDRESS|CIDR", args, 1, 1); done || err != nil {
		return err
	}
	if *reason == "" || *term == "" {
		return fmt.Errorf("%w: a fleet %s needs --for and --reason", errUsage, kind)
	}
	p, err := overlay.ParseTarget(fs.Arg(0))
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	d, err := policy.ParseDuration(*term)
	if err != nil {
		return fmt.Errorf("%w: --for: %v", errUsage, err)
	}
	ctx, cli, group, done, err := c.open(e, true)
	if err != nil {
		return err
	}
	defer done()
	gi, err := fleet.Inspect(ctx, cli, group)
	if err != nil {
		return err
	}
	if !gi.Exists && !*force {
		_, err := requireGroup(ctx, cli, group, "the entry would reach no router (--force writes it anyway)")
		return err
	}
	if len(gi.Reporting) == 0 && !*force {
		known := "no router ever reported in it"
		if len(gi.Known) > 0 {
			known = "gone: " + strings.Join(gi.Known, ", ")
		}
		return fmt.Errorf("no router reports in group %s now (%s): the entry would reach no router; is the group right? --force writes it anyway (routers take it when they report)", group, known)
	}
	req := overlay.Request{Kind: kind, Prefix: p, For: d, Reason: *reason, Ticket: *ticket, Who: who(e)}
	// Checked against the group's policy here, as every router will check it against
	// its own (the router's API does the same): a refusal is said now, not only in
	// fleet status. A group policy that does not parse is left to the routers.
	if text, rev, err := fleet.Read(ctx, cli, group); err == nil && rev > 0 {
		if pol, perr := policy.ParseInline(fmt.Sprintf("etcd:%s@%d", group, rev), text, e.now()); perr == nil {
			if verr := overlay.RulesFor(pol).Validate(req); verr != nil {
				return &exitError{1, fmt.Errorf("%s %s: %w (under group %s's policy, revision %d); nothing written", kind, p, verr, group, rev)}
			}
		}
	}
	if err := fleet.PutEntry(ctx, cli, group, req, who(e)); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "%s %s for group %s for %s: %s; each router checks it against its own policy (fleet status shows a refusal)\n", kind, p, group, d, reporting(gi))
	return nil
}

func runFleetRelease(e *env, args []string) error {
	fs, c := fleetFlags(e, "release", "ADDRESS|CIDR --group G [--unblock]")
	unblock := fs.Bool("unblock", false, "end an unblock (default: a quarantine)")
	if done, err := parseVerb(fs, "ADDRESS|CIDR", args, 1, 1); done || err != nil {
		return err
	}
	p, err := overlay.ParseTarget(fs.Arg(0))
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	kind := overlay.Quarantine
	if *unblock {
		kind = overlay.Unblock
	}
	ctx, cli, group, done, err := c.openGroup(e)
	if err != nil {
		return err
	}
	defer done()
	if err := fleet.DeleteEntry(ctx, cli, group, kind, p, who(e)); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "%s %s released for group %s\n", kind, p, group)
	return nil
}

func runFleetEntries(e *env, args []string) error {
	fs, c := fleetFlags(e, "entries", "--group G [--json]")
	asJSON := fs.Bool("json", false, "print as JSON")
	if done, err := parseVerb(fs, "no arguments", args, 0, 0); done || err != nil {
		return err
	}
	ctx, cli, group, done, err := c.openGroup(e)
	if err != nil {
		return err
	}
	defer done()
	es, _, err := fleet.ListEntries(ctx, cli, group)
	if err != nil && !errors.Is(err, fleet.ErrDamagedEntry) {
		return err
	}
	listErr := err // damaged keys: the good entries are listed, then the error
	if *asJSON {
		if err := writeJSON(e.stdout, es); err != nil {
			return err
		}
	} else {
		w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "KIND\tPREFIX\tUNTIL\tWHO\tTICKET\tREASON")
		for _, x := range es {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", x.Kind, x.Prefix, x.Expires.UTC().Format(time.RFC3339), overlay.Printable(x.Who), overlay.Printable(x.Ticket), overlay.Printable(x.Reason))
		}
		if err := w.Flush(); err != nil {
			return err
		}
	}
	if listErr != nil {
		return &exitError{1, listErr}
	}
	return nil
}

func runFleetForget(e *env, args []string) error {
	fs, c := fleetFlags(e, "forget", "ROUTER --group G")
	if done, err := parseVerb(fs, "a ROUTER name", args, 1, 1); done || err != nil {
		return err
	}
	router := fs.Arg(0)
	if err := fleet.CheckName("router", router); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	ctx, cli, group, done, err := c.openGroup(e)
	if err != nil {
		return err
	}
	defer done()
	if err := fleet.Forget(ctx, cli, group, router); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "router %s forgotten in group %s (it is known again if it reports)\n", router, group)
	return nil
}

func runFleetGrant(e *env, args []string) error {
	if len(args) == 0 || (args[0] != "router" && args[0] != "noc") {
		return fmt.Errorf("%w: fleet grant router --group G --router NAME, or fleet grant noc --etcd-user U", errUsage)
	}
	what := args[0]
	fs, c := fleetFlags(e, "grant "+what, "[--group G --router NAME] [--etcd-user U] [--etcd-password-file F]")
	router := fs.String("router", "", "the router's name (as its daemon reports under: etcd.router)")
	user := fs.String("etcd-user", "", "the etcd user to grant (default: the router's name)")
	pwFile := fs.String("etcd-password-file", "", "its password, in a file (none: a certificate's common name)")
	entries := fs.Bool("entries", false, "router: may write the group's fleet entries too (its HTTP API takes \"fleet\": true)")
	if done, err := parseVerb(fs, "no arguments", args[1:], 0, 0); done || err != nil {
		return err
	}
	password := ""
	if *pwFile != "" {
		b, err := os.ReadFile(*pwFile)
		if err != nil {
			return err
		}
		password = strings.TrimSpace(string(b))
	}
	ctx, cli, group, done, err := c.open(e, what == "router")
	if err != nil {
		return err
	}
	defer done()
	if what == "noc" {
		if *user == "" {
			return fmt.Errorf("%w: name the NOC's etcd user: --etcd-user U", errUsage)
		}
		if err := fleet.GrantNOC(ctx, cli, *user, password); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "etcd user %s may push, roll back and change fleet entries of every group\n", *user)
		return nil
	}
	if *router == "" {
		return fmt.Errorf("%w: name the router: --router NAME", errUsage)
	}
	u := cmp.Or(*user, *router)
	if err := fleet.GrantRouter(ctx, cli, group, *router, u, password); err != nil {
		return err
	}
	if *entries {
		if err := fleet.GrantRouterEntries(ctx, cli, group, *router); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "router %s may write group %s's fleet entries too\n", *router, group)
	}
	fmt.Fprintf(e.stdout, "etcd user %s (role %s) may read group %s and write only router %s's status\n", u, cli.RouterRole(group, *router), group, *router)
	return nil
}
