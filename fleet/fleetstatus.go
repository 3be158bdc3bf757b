package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/portcullis/portcullis/overlay"
)

// States of a router in FleetStatus.
const (
	StateOK     = "ok"     // the group's current revision, proved, no error
	StateBehind = "behind" // another (older) revision, or a policy not from etcd
	StateFailed = "failed" // an error, or a failed proof: it refused the current revision
	StateStale  = "stale"  // its report is older than three TTLs, or says it is stale
	// StateWaiting: no policy in force yet and no error (the group has no policy, or
	// the first has not arrived): a new router, not a failing one.
	StateWaiting = "waiting"
	// StateDamaged: the router's key holds what is not a report, or one without a
	// lease (put by hand, or by the router's own credentials, which may write it):
	// its LastError names the key.
	StateDamaged = "damaged"
	// StateGone: known, without a report (GroupStatus.Gone; a count, not a row state).
	StateGone = "gone"
)

// RouterStatus is one router's report and the state FleetStatus makes of it.
type RouterStatus struct {
	Report
	State string `json:"state"`
}

// GroupStatus is one group: its current policy, its routers' reports, and the routers
// that reported once and have no report now.
type GroupStatus struct {
	Group    string         `json:"group"`
	Revision int64          `json:"revision"` // 0: the group has no policy
	Hash     string         `json:"hash"`     // from the revision's history record
	Who      string         `json:"who"`
	At       time.Time      `json:"at"`
	Routers  []RouterStatus `json:"routers"` // by name
	Gone     []string       `json:"gone"`    // known, without a report (lease ended), by name
	// Counts is how many routers are in each state (StateGone: len(Gone)); it
	// counts them all, also when Problems left out the ok ones.
	Counts map[string]int `json:"counts"`
	ReadAt int64          `json:"read_at"` // the etcd revision all of this was read at
}

// Problems is gs without the routers that are ok: what needs a look, in a fleet of
// hundreds. Counts still counts every router.
func Problems(gs []GroupStatus) []GroupStatus {
	out := make([]GroupStatus, 0, len(gs))
	for _, g := range gs {
		g.Routers = slices.DeleteFunc(slices.Clone(g.Routers), func(r RouterStatus) bool { return r.State == StateOK })
		out = append(out, g)
	}
	return out
}

// Summary is the group's counts as one line: "120 routers: 117 ok, 2 failed; 1 gone".
func (g GroupStatus) Summary() string {
	n := 0
	var parts []string
	for _, st := range []string{StateOK, StateBehind, StateWaiting, StateFailed, StateStale, StateDamaged} {
		if c := g.Counts[st]; c > 0 {
			n += c
			parts = append(parts, fmt.Sprintf("%d %s", c, st))
		}
	}
	word := "routers"
	if n == 1 {
		word = "router"
	}
	out := fmt.Sprintf("%d %s reporting", n, word)
	if len(parts) > 0 {
		out += ": " + strings.Join(parts, ", ")
	}
	if c := g.Counts[StateGone]; c > 0 {
		out += fmt.Sprintf("; %d gone", c)
	}
	return out
}

// FleetStatus returns the status of group ("": every group), by group name.
func FleetStatus(ctx context.Context, cli *Client, group string) ([]GroupStatus, error) {
	groups := []string{group}
	if group == "" {
		var err error
		if groups, err = Groups(ctx, cli); err != nil {
			return nil, err
		}
	} else if err := CheckName("group", group); err != nil {
		return nil, err
	}
	now := time.Now()
	out := make([]GroupStatus, 0, len(groups))
	for _, g := range groups {
		gs, err := groupStatus(ctx, cli, g, now)
		if err != nil {
			return nil, err
		}
		out = append(out, gs)
	}
	return out, nil
}

func groupStatus(ctx context.Context, cli *Client, group string, now time.Time) (GroupStatus, error) {
	gs := GroupStatus{Group: group, Routers: []RouterStatus{}, Gone: []string{}, Counts: map[string]int{}}
	// The policy, the reports and the known routers in one read, at one revision: a
	// router that starts (its known key, then its report) or stops meanwhile is never
	// half seen, as gone although it reports.
	txn, err := cli.etcd.Txn(ctx).Then(
		clientv3.OpGet(cli.policyKey(group), clientv3.WithKeysOnly()),
		clientv3.OpGet(cli.routersKey(group), clientv3.WithPrefix()),
		clientv3.OpGet(cli.knownKey(group), clientv3.WithPrefix(), clientv3.WithKeysOnly())).Commit()
	if err != nil {
		return gs, fmt.Errorf("reading group %s: %w", group, err)
	}
	gs.ReadAt = txn.Header.Revision
	pol, resp, known := txn.Responses[0].GetResponseRange(), txn.Responses[1].GetResponseRange(), txn.Responses[2].GetResponseRange()
	var rev int64
	if len(pol.Kvs) > 0 {
		rev = pol.Kvs[0].ModRevision
	}
	gs.Revision = rev
	if rev != 0 {
		if r, ok, err := recordAt(ctx, cli, group, rev); err != nil && !errors.Is(err, ErrDamagedRecord) {
			return gs, err
		} else if ok {
			gs.Hash, gs.Who, gs.At = r.Hash, r.Who, r.At
		}
	}
	have := map[string]bool{}
	for _, kv := range resp.Kvs {
		name := strings.TrimPrefix(string(kv.Key), cli.routersKey(group))
		have[name] = true
		var rep Report
		if err := json.Unmarshal(kv.Value, &rep); err != nil {
			// One bad key must not hide the other routers: it is listed as damaged.
			// A router rewrites its report every TTL/3, so one that stays damaged is
			// written so by whoever holds the key's credentials.
			gs.Routers = append(gs.Routers, RouterStatus{State: StateDamaged, Report: Report{Router: name, Group: group,
				LastError: fmt.Sprintf("not a report: if it stays (a router rewrites its own every TTL/3), etcdctl del %s and check who writes it (%v)", kv.Key, err)}})
			continue
		}
		rep.Router, rep.Group = name, group // the key says whose report it is, not the value
		if kv.Lease == 0 {
			// The Reporter writes only under its lease, which ends with the router: a
			// report without one would be shown for ever, whatever became of it.
			rep.LastError = strings.TrimPrefix(rep.LastError+"; ", "; ") + fmt.Sprintf("a report with no lease, which outlives its router: not written by a router's Reporter; etcdctl del %s, and check who writes it", kv.Key)
			gs.Routers = append(gs.Routers, RouterStatus{Report: rep, State: StateDamaged})
			continue
		}
		gs.Routers = append(gs.Routers, RouterStatus{Report: rep, State: State(rep, rev, now)})
	}
	slices.SortFunc(gs.Routers, func(a, b RouterStatus) int { return strings.Compare(a.Router, b.Router) })
	for _, r := range gs.Routers {
		gs.Counts[r.State]++
	}
	for _, kv := range known.Kvs {
		if name := strings.TrimPrefix(string(kv.Key), cli.knownKey(group)); !have[name] {
			gs.Gone = append(gs.Gone, name)
		}
	}
	slices.Sort(gs.Gone)
	if len(gs.Gone) > 0 {
		gs.Counts[StateGone] = len(gs.Gone)
	}
	return gs, nil
}

// State is the state of a router that reported rep, in a group at revision current,
// at now. Stale comes first (an old report's other facts are old too), then waiting
// (no policy yet, no error), failed, then behind.
func State(rep Report, current int64, now time.Time) string {
	switch {
	case rep.Stale || rep.At.IsZero() || ClockOff(rep, now) != 0: // no time: not the Reporter's
		return StateStale
	case rep.PolicyHash == "" && rep.LastError == "":
		return StateWaiting
	case rep.LastError != "" || !rep.ProofOK:
		return StateFailed
	case rep.PolicyRevision != current:
		return StateBehind
	}
	return StateOK
}

// ClockOff is how far the clock of the router that wrote rep seems off from now's
// (positive: ahead), when the report's time is more than three TTLs from now either
// way; 0 otherwise. A report lives one TTL under its lease, so one that seems older
// or younger than that was stamped by a clock that is off (the router's, or this
// host's). A router whose clock is ahead drops a fleet entry early, or never takes
// one shorter than its skew: that is why ahead counts as much as behind.
func ClockOff(rep Report, now time.Time) time.Duration {
	ttl := rep.TTL
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	if rep.At.IsZero() {
		return 0
	}
	if d := rep.At.Sub(now); d > 3*ttl || d < -3*ttl {
		return d
	}
	return 0
}

// WriteTable writes gs as an aligned table: one line for each group's current
// policy, then one per router, then one per router gone.
func WriteTable(w io.Writer, gs []GroupStatus) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "GROUP\tROUTER\tSTATE\tREVISION\tHASH\tPROOF\tAGE\tERROR")
	now := time.Now()
	age := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return now.Sub(t).Round(time.Second).String()
	}
	for _, g := range gs {
		state := "current"
		if g.Revision == 0 {
			state = "no policy"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", g.Group, "-", state, g.Revision, cell(short(g.Hash), 16), "-", age(g.At), g.Summary())
		for _, r := range g.Routers {
			proof := "ok"
			if !r.ProofOK {
				proof = "FAILED"
			}
			note := oneLine(r.LastError)
			if n := max(len(r.EntriesNotTaken), r.EntriesNotTakenCount); note == "" && n > 0 && len(r.EntriesNotTaken) > 0 {
				note = fmt.Sprintf("%d fleet entries not taken: %s", n, oneLine(r.EntriesNotTaken[0]))
			}
			if off := ClockOff(r.Report, now); note == "" && off != 0 {
				dir := "ahead of"
				if off < 0 {
					dir, off = "behind", -off
				}
				note = fmt.Sprintf("its clock seems %s %s this host's (report dated %s): check NTP on both; fleet entries end by the router's clock", off.Round(time.Second), dir, r.At.UTC().Format(time.RFC3339))
			}
			note = cell(note, maxNote)
			if o := r.LastOutage; note == "" && o != nil && now.Sub(o.To) < outageShown {
				note = fmt.Sprintf("was cut off from etcd for %s until %s ago (stale meanwhile)", o.To.Sub(o.From).Round(time.Second), age(o.To))
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", g.Group, cell(r.Router, maxName+2), r.State, r.PolicyRevision, cell(short(r.PolicyHash), 16), proof, age(r.At), note)
		}
		for _, name := range g.Gone {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", g.Group, cell(name, maxName+2), "gone", "-", "-", "-", "-", "no report: stopped, or cut off longer than its TTL")
		}
	}
	return tw.Flush()
}

// outageShown is how long after its return a router's outage is noted in the table.
const outageShown = 15 * time.Minute

// short is a hash's first 12 characters, as the table shows it.
func short(h string) string {
	if h == "" {
		return "-"
	}
	return h[:min(12, len(h))]
}

// maxNote bounds the table's last column: the whole error is in --json.
const maxNote = 160

// cell is s as a table cell: printable (a report is written with the router's
// credentials, which may put anything there: no terminal escape reaches the NOC's
// screen) and at most n bytes, cut with "...".
func cell(s string, n int) string {
	s = overlay.Printable(s)
	if len(s) <= n {
		return s
	}
	cut := n - 3
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

// oneLine keeps an error to its first line, for the table.
func oneLine(s string) string {
	first, _, _ := strings.Cut(s, "\n")
	return first
}
