package fleet

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// testLease is a lease for reports a test writes itself (a Reporter's are always
// under one; one without is not a router's), long enough to outlive the test.
func testLease(t *testing.T, cli *Client) clientv3.LeaseID {
	t.Helper()
	l, err := cli.etcd.Grant(ctxT(t), 3600)
	if err != nil {
		t.Fatal(err)
	}
	return l.ID
}

// reportKey reads router's report in group dsl: the report, its lease, and whether
// it is there.
func reportKey(t *testing.T, cli *Client, router string) (Report, clientv3.LeaseID, bool) {
	t.Helper()
	resp, err := cli.etcd.Get(ctxT(t), cli.routersKey("dsl")+router)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return Report{}, 0, false
	}
	var r Report
	if err := json.Unmarshal(resp.Kvs[0].Value, &r); err != nil {
		t.Fatal(err)
	}
	return r, clientv3.LeaseID(resp.Kvs[0].Lease), true
}

func TestReporterCloseRemovesAtOnce(t *testing.T) {
	_, raw, cli := newFleet(t)
	var rev atomic.Int64
	rev.Store(7)
	r, err := StartReporter(cli, "dsl", "bng-1", 2*time.Second, func() Report {
		return Report{PolicyRevision: rev.Load(), ProofOK: true, Source: SourceName}
	}, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the report is written", func() bool { _, _, ok := reportKey(t, cli, "bng-1"); return ok })
	rep, lease, _ := reportKey(t, cli, "bng-1")
	if rep.Router != "bng-1" || rep.Group != "dsl" || rep.PolicyRevision != 7 || lease == 0 || rep.TTL != 2*time.Second {
		t.Fatalf("report %+v under lease %x", rep, lease)
	}
	rev.Store(8)
	r.Changed()
	waitFor(t, "Changed writes the new report", func() bool { rep, _, _ := reportKey(t, cli, "bng-1"); return rep.PolicyRevision == 8 })

	// A lease lost (revoked here, as etcd does after a partition longer than the
	// TTL): the reporter takes a new one and writes again.
	if _, err := raw.Revoke(ctxT(t), lease); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the report is back under a new lease", func() bool {
		_, l, ok := reportKey(t, cli, "bng-1")
		return ok && l != lease
	})

	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, ok := reportKey(t, cli, "bng-1"); ok {
		t.Fatal("the report is still there right after Close")
	}
}

func TestReporterCrashExpires(t *testing.T) {
	srv, _, cli := newFleet(t)
	own := srv.Client(t) // the reporter's own connection, closed below as a crash would
	ownFleet, _ := New(own, "")
	r, err := StartReporter(ownFleet, "dsl", "bng-2", 2*time.Second, func() Report { return Report{ProofOK: true} }, quiet())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	waitFor(t, "the report is written", func() bool { _, _, ok := reportKey(t, cli, "bng-2"); return ok })
	own.Close() // no revoke
	waitFor(t, "the report is gone after its TTL", func() bool { _, _, ok := reportKey(t, cli, "bng-2"); return !ok })
	gs, err := FleetStatus(ctxT(t), cli, "dsl")
	if err != nil {
		t.Fatal(err)
	}
	if len(gs) != 1 || len(gs[0].Routers) != 0 || len(gs[0].Gone) != 1 || gs[0].Gone[0] != "bng-2" {
		t.Fatalf("fleet status after the crash: %+v", gs)
	}
}

func TestFleetStatusStates(t *testing.T) {
	_, _, cli := newFleet(t)
	ctx := ctxT(t)
	r1 := mustPush(t, cli, "dsl", validPolicy(1), "alice@noc", 0)
	r2 := mustPush(t, cli, "dsl", validPolicy(2), "bob@noc", r1)
	mustPush(t, cli, "mobile", validPolicy(3), "alice@noc", 0)
	now := time.Now().UTC()
	fresh := func(name string, rev int64) Report {
		return Report{Router: name, Group: "dsl", PolicyRevision: rev, ProofOK: true, At: now, TTL: 10 * time.Second, PolicyHash: "61e42f9472389abc"}
	}
	reports := map[string]Report{"ok-1": fresh("ok-1", r2), "behind-1": fresh("behind-1", r1)}
	reports["failed-err"] = fresh("failed-err", r1)
	reports["failed-err"] = func(r Report) Report { r.LastError = "proof failed: 3 of 40 probes disagree\nsecond line"; return r }(reports["failed-err"])
	reports["failed-proof"] = func(r Report) Report { r.ProofOK = false; return r }(fresh("failed-proof", r2))
	reports["stale-old"] = func(r Report) Report { r.At = now.Add(-time.Hour); return r }(fresh("stale-old", r2))
	reports["stale-flag"] = func(r Report) Report { r.Stale = true; return r }(fresh("stale-flag", r2))
	lease := testLease(t, cli)
	for _, rep := range reports {
		if _, err := putReport(ctx, cli, rep, lease); err != nil {
			t.Fatal(err)
		}
		if err := markKnown(ctx, cli, "dsl", rep.Router); err != nil {
			t.Fatal(err)
		}
	}
	if err := markKnown(ctx, cli, "dsl", "bng-gone"); err != nil {
		t.Fatal(err)
	}
	gs, err := FleetStatus(ctx, cli, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(gs) != 2 || gs[0].Group != "dsl" || gs[1].Group != "mobile" {
		t.Fatalf("groups: %+v", gs)
	}
	d := gs[0]
	if d.Revision != r2 || d.Who != "bob@noc" || d.Hash == "" {
		t.Fatalf("group dsl: revision %d by %s hash %q, want %d by bob@noc", d.Revision, d.Who, d.Hash, r2)
	}
	want := map[string]string{"ok-1": StateOK, "behind-1": StateBehind, "failed-err": StateFailed, "failed-proof": StateFailed, "stale-old": StateStale, "stale-flag": StateStale}
	if len(d.Routers) != len(want) {
		t.Fatalf("%d routers, want %d", len(d.Routers), len(want))
	}
	for _, r := range d.Routers {
		if r.State != want[r.Router] {
			t.Errorf("router %s: state %s, want %s", r.Router, r.State, want[r.Router])
		}
	}
	if len(d.Gone) != 1 || d.Gone[0] != "bng-gone" {
		t.Errorf("gone: %v, want [bng-gone]", d.Gone)
	}
	if got, want := d.Summary(), "6 routers reporting: 1 ok, 1 behind, 2 failed, 2 stale; 1 gone"; got != want {
		t.Errorf("summary %q, want %q", got, want)
	}
	if p := Problems(gs)[0]; len(p.Routers) != 5 || p.Summary() != d.Summary() || len(d.Routers) != 6 {
		t.Errorf("problems: %d routers (want 5, the ok one left out), summary %q", len(p.Routers), p.Summary())
	}
	if d.ReadAt < d.Revision {
		t.Errorf("read at revision %d, before the group's %d", d.ReadAt, d.Revision)
	}
	var b bytes.Buffer
	if err := WriteTable(&b, gs); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	t.Log("\n" + b.String())
	if len(lines) != 1+1+6+1+1 || !strings.HasPrefix(lines[0], "GROUP") {
		t.Fatalf("table has %d lines:\n%s", len(lines), b.String())
	}
	// Aligned: every column starts at the same offset on each line.
	col := strings.Index(lines[0], "STATE")
	for _, l := range lines[1:] {
		if l[col-1] != ' ' || l[col] == ' ' {
			t.Errorf("STATE column not aligned at %d: %q", col, l)
		}
	}
	if !strings.Contains(lines[1], "6 routers reporting: 1 ok") {
		t.Errorf("the group's line has no summary: %q", lines[1])
	}
	if !strings.Contains(b.String(), "proof failed: 3 of 40 probes disagree") || strings.Contains(b.String(), "second line") {
		t.Errorf("the error column should hold the error's first line:\n%s", b.String())
	}
}

func TestStateTable(t *testing.T) {
	now := time.Now()
	for _, c := range []struct {
		name string
		rep  Report
		cur  int64
		want string
	}{
		{"current and proved", Report{PolicyHash: "h", PolicyRevision: 5, ProofOK: true, At: now}, 5, StateOK},
		{"older revision", Report{PolicyHash: "h", PolicyRevision: 4, ProofOK: true, At: now}, 5, StateBehind},
		{"not from etcd", Report{PolicyHash: "h", PolicyRevision: 0, ProofOK: true, At: now}, 5, StateBehind},
		{"refused the current one", Report{PolicyHash: "h", PolicyRevision: 4, ProofOK: true, LastError: "etcd:dsl@5:3:5: unknown verdict", At: now}, 5, StateFailed},
		{"proof failed", Report{PolicyHash: "h", PolicyRevision: 5, At: now}, 5, StateFailed},
		{"three TTLs old", Report{PolicyHash: "h", PolicyRevision: 5, ProofOK: true, TTL: 2 * time.Second, At: now.Add(-7 * time.Second)}, 5, StateStale},
		{"within three TTLs", Report{PolicyHash: "h", PolicyRevision: 5, ProofOK: true, TTL: 2 * time.Second, At: now.Add(-5 * time.Second)}, 5, StateOK},
		{"clock three TTLs ahead", Report{PolicyHash: "h", PolicyRevision: 5, ProofOK: true, TTL: 2 * time.Second, At: now.Add(7 * time.Second)}, 5, StateStale},
		{"clock a little ahead", Report{PolicyHash: "h", PolicyRevision: 5, ProofOK: true, TTL: 2 * time.Second, At: now.Add(5 * time.Second)}, 5, StateOK},
		{"no time at all (not written by a Reporter)", Report{PolicyHash: "h", PolicyRevision: 5, ProofOK: true}, 5, StateStale},
		{"says stale", Report{PolicyHash: "h", PolicyRevision: 5, ProofOK: true, Stale: true, At: now}, 5, StateStale},
		{"no policy yet", Report{At: now}, 5, StateWaiting},
		{"no policy yet, and an error", Report{LastError: "etcd:dsl@5:3:5: unknown verdict", At: now}, 5, StateFailed},
	} {
		if got := State(c.rep, c.cur, now); got != c.want {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
	}
	// The table says which way the clock is off.
	ahead := Report{Router: "bng-ahead", PolicyHash: "h", PolicyRevision: 5, ProofOK: true, TTL: 10 * time.Second, At: now.Add(2 * time.Hour)}
	behind := Report{Router: "bng-behind", PolicyHash: "h", PolicyRevision: 5, ProofOK: true, TTL: 10 * time.Second, At: now.Add(-2 * time.Hour)}
	var b bytes.Buffer
	WriteTable(&b, []GroupStatus{{Group: "dsl", Revision: 5, Routers: []RouterStatus{
		{Report: ahead, State: State(ahead, 5, now)}, {Report: behind, State: State(behind, 5, now)}}}})
	t.Log("\n" + b.String())
	if !strings.Contains(b.String(), "its clock seems 2h0m0s ahead of this host's") || !strings.Contains(b.String(), "its clock seems 2h0m0s behind this host's") {
		t.Errorf("the table does not say whose clock is off:\n%s", b.String())
	}
}

// A report that is not one (put by hand with etcdctl, or by a router's own
// credentials, which may write its key) must not blind the NOC to the rest of the
// fleet; and what a router writes into its report reaches the NOC's terminal only as
// printable text of bounded length (its credentials may write anything there).
func TestFleetStatusDamagedAndHostileReports(t *testing.T) {
	_, raw, cli := newFleet(t)
	ctx := ctxT(t)
	rev := mustPush(t, cli, "dsl", validPolicy(1), "alice@noc", 0)
	now := time.Now().UTC()
	good := Report{Router: "bng-ok", Group: "dsl", PolicyRevision: rev, ProofOK: true, At: now, TTL: 10 * time.Second, PolicyHash: "61e42f9472389abc"}
	lease := testLease(t, cli)
	if _, err := putReport(ctx, cli, good, lease); err != nil {
		t.Fatal(err)
	}
	hostile := good
	hostile.Router = "bng-evil"
	hostile.LastError = "\x1b[2J\x1b]0;pwned\x07" + strings.Repeat("A", 100000)
	hostile.PolicyHash = "\x1b[31mred"
	hostile.EntriesNotTaken = []string{"\x1b[1mbold"}
	if _, err := putReport(ctx, cli, hostile, lease); err != nil {
		t.Fatal(err)
	}
	// A report without a lease would outlive its router (shown ok for ever): the
	// Reporter never writes one; the router's credentials could.
	frozen := good
	frozen.Router = "bng-frozen"
	if _, err := putReport(ctx, cli, frozen, 0); err != nil {
		t.Fatal(err)
	}
	damagedKey := cli.routersKey("dsl") + "bng-damaged"
	if _, err := raw.Put(ctx, damagedKey, "not json {"); err != nil {
		t.Fatal(err)
	}
	// A key under a "group" no portcullis name can be (etcdctl put by hand).
	if _, err := raw.Put(ctx, cli.groupsKey()+"Not A Group\x1b/policy", "x"); err != nil {
		t.Fatal(err)
	}
	gs, err := FleetStatus(ctx, cli, "")
	if err != nil {
		t.Fatalf("one damaged report made the whole fleet status fail: %v", err)
	}
	if len(gs) != 1 || len(gs[0].Routers) != 4 {
		t.Fatalf("status: %+v", gs)
	}
	states := map[string]RouterStatus{}
	for _, r := range gs[0].Routers {
		states[r.Router] = r
	}
	if s := states["bng-ok"].State; s != StateOK {
		t.Errorf("the good router: %s, want ok", s)
	}
	d := states["bng-damaged"]
	if d.State != StateDamaged || !strings.Contains(d.LastError, damagedKey) || !strings.Contains(d.LastError, "etcdctl del") {
		t.Errorf("the damaged report: state %s, error %q: want %s naming the key and the fix", d.State, d.LastError, StateDamaged)
	}
	if f := states["bng-frozen"]; f.State != StateDamaged || !strings.Contains(f.LastError, "no lease") {
		t.Errorf("a report without a lease: state %s, error %q: want %s saying it has no lease", f.State, f.LastError, StateDamaged)
	}
	var b bytes.Buffer
	if err := WriteTable(&b, gs); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + b.String())
	if strings.ContainsRune(b.String(), '\x1b') || strings.ContainsRune(b.String(), '\x07') {
		t.Errorf("control characters from a report reached the table")
	}
	for _, l := range strings.Split(b.String(), "\n") {
		if len(l) > 400 {
			t.Errorf("a line of %d bytes: a report's error is not bounded in the table", len(l))
		}
	}
}

// Two routers reporting under one name (a router reinstalled, or its replacement
// started, while the old one still runs with the same etcd.router): each would
// overwrite the other's report every TTL/3, and fleet status would show whichever
// wrote last as if it were the only one. Each says so instead.
func TestReporterDuplicateName(t *testing.T) {
	srv, _, cli := newFleet(t)
	start := func(who string) *Reporter {
		own, _ := New(srv.Client(t), "")
		r, err := StartReporter(own, "dsl", "bng-1", 2*time.Second, func() Report {
			return Report{PolicyHash: "h-" + who, PolicyRevision: 1, ProofOK: true, Source: SourceName}
		}, testLog(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		return r
	}
	old := start("old")
	waitFor(t, "the old router's report", func() bool { rep, _, ok := reportKey(t, cli, "bng-1"); return ok && rep.PolicyHash == "h-old" })
	// A crashed router restarted under its name is no duplicate: its first report
	// replaces the one its old lease still holds. Seen here as the new one's first
	// write not being called a duplicate.
	start("new")
	for _, who := range []string{"h-old", "h-new"} {
		waitFor(t, "the report written by "+who+" says another router reports as bng-1", func() bool {
			rep, _, ok := reportKey(t, cli, "bng-1")
			return ok && rep.PolicyHash == who && strings.Contains(rep.LastError, "another router also reports as bng-1")
		})
	}
	gs, err := FleetStatus(ctxT(t), cli, "dsl")
	if err != nil {
		t.Fatal(err)
	}
	if len(gs[0].Routers) != 1 || gs[0].Routers[0].State != StateFailed {
		t.Fatalf("fleet status with two routers named bng-1: %+v", gs[0].Routers)
	}
	// The old one stops: the new one alone reports, and clean again after a while.
	old.Close()
	waitFor(t, "the remaining router's report is clean again", func() bool {
		rep, _, ok := reportKey(t, cli, "bng-1")
		return ok && rep.PolicyHash == "h-new" && rep.LastError == ""
	})
}

// A router decommissioned or moved to another group stays "gone" in fleet status
// until it is forgotten; one that reports is not forgotten.
func TestForget(t *testing.T) {
	_, _, cli := newFleet(t)
	ctx := ctxT(t)
	mustPush(t, cli, "dsl", validPolicy(1), "alice@noc", 0)
	for _, r := range []string{"bng-old", "bng-live"} {
		if err := markKnown(ctx, cli, "dsl", r); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := putReport(ctx, cli, Report{Router: "bng-live", Group: "dsl", At: time.Now()}, testLease(t, cli)); err != nil {
		t.Fatal(err)
	}
	if err := Forget(ctx, cli, "dsl", "bng-live"); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "stop it first") {
		t.Errorf("forgetting a router that reports: %v", err)
	}
	if err := Forget(ctx, cli, "dsl", "bng-old"); err != nil {
		t.Fatal(err)
	}
	if err := Forget(ctx, cli, "dsl", "bng-old"); !errors.Is(err, ErrNoRouter) {
		t.Errorf("forgetting it again: %v, want ErrNoRouter", err)
	}
	gs, err := FleetStatus(ctx, cli, "dsl")
	if err != nil {
		t.Fatal(err)
	}
	if len(gs[0].Gone) != 0 || len(gs[0].Routers) != 1 {
		t.Errorf("after forgetting bng-old: routers %d, gone %v", len(gs[0].Routers), gs[0].Gone)
	}
}

// fleet status of a group of 300 routers: one read for the group, whatever its size,
// and a table of one line per router with the counts on the group's line.
func TestFleetStatusAtScale(t *testing.T) {
	_, _, cli := newFleet(t)
	ctx := ctxT(t)
	rev := mustPush(t, cli, "dsl", validPolicy(1), "alice@noc", 0)
	now := time.Now().UTC()
	const n = 300
	lease := testLease(t, cli)
	for i := range n {
		name := fmt.Sprintf("bng-%03d", i)
		rep := Report{Router: name, Group: "dsl", PolicyRevision: rev, ProofOK: true, At: now, TTL: 10 * time.Second, PolicyHash: "61e42f9472389abc",
			Interfaces: map[string]string{"eth1": "native", "eth2.100": "native"}}
		if i%100 == 7 {
			rep.LastError = "etcd:dsl@9:3:5: unknown verdict"
		}
		if _, err := putReport(ctx, cli, rep, lease); err != nil {
			t.Fatal(err)
		}
		if err := markKnown(ctx, cli, "dsl", name); err != nil {
			t.Fatal(err)
		}
	}
	t0 := time.Now()
	gs, err := FleetStatus(ctx, cli, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("fleet status of %d routers: %s", n, time.Since(t0))
	if got := gs[0].Summary(); got != "300 routers reporting: 297 ok, 3 failed" {
		t.Errorf("summary %q", got)
	}
	var b bytes.Buffer
	if err := WriteTable(&b, Problems(gs)); err != nil {
		t.Fatal(err)
	}
	if lines := strings.Count(b.String(), "\n"); lines != 1+1+3 {
		t.Errorf("--problems table of %d lines, want 5:\n%s", lines, b.String())
	}
}

// A router's known key removed while it runs (the group's keys deleted by hand with
// etcdctl del --prefix, say) is written again with its next report: otherwise the
// router, once stopped, would vanish from fleet status instead of being gone.
func TestReporterRewritesKnown(t *testing.T) {
	_, raw, cli := newFleet(t)
	r, err := StartReporter(cli, "dsl", "bng-3", 2*time.Second, func() Report { return Report{ProofOK: true} }, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	known := func() bool {
		resp, err := raw.Get(ctxT(t), cli.knownKey("dsl")+"bng-3", clientv3.WithCountOnly())
		return err == nil && resp.Count == 1
	}
	waitFor(t, "the known key is written", known)
	if _, err := raw.Delete(ctxT(t), cli.groupKey("dsl"), clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the known key is written again", known)
	r.Close()
	gs, err := FleetStatus(ctxT(t), cli, "dsl")
	if err != nil {
		t.Fatal(err)
	}
	if len(gs) != 1 || len(gs[0].Gone) != 1 || gs[0].Gone[0] != "bng-3" {
		t.Fatalf("after the router stopped: %+v", gs)
	}
}

// A router refusing thousands of fleet entries, or with a long error, writes a
// report of bounded size every TTL/3: all counted, the first listed.
func TestReportBounded(t *testing.T) {
	_, _, cli := newFleet(t)
	var refused []string
	for i := range 5000 {
		refused = append(refused, fmt.Sprintf("quarantine 100.64.%d.%d/32: forbidden by this router's policy (runtime: forbidden ranges)", i/256, i%256))
	}
	long := strings.Repeat("etcd:dsl@9:3:5: unknown verdict \"dorp\"\n", 5000)
	r, err := StartReporter(cli, "dsl", "bng-4", 2*time.Second, func() Report {
		return Report{ProofOK: true, LastError: long, EntriesNotTaken: slices.Clone(refused)}
	}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	waitFor(t, "the report is written", func() bool { _, _, ok := reportKey(t, cli, "bng-4"); return ok })
	resp, err := cli.etcd.Get(ctxT(t), cli.routersKey("dsl")+"bng-4")
	if err != nil {
		t.Fatal(err)
	}
	if n := len(resp.Kvs[0].Value); n > 16<<10 {
		t.Errorf("a report of %d bytes", n)
	}
	rep, _, _ := reportKey(t, cli, "bng-4")
	if rep.EntriesNotTakenCount != 5000 || len(rep.EntriesNotTaken) != 20 || !strings.Contains(rep.LastError, "bytes in all") {
		t.Errorf("count %d, listed %d, error ends %q", rep.EntriesNotTakenCount, len(rep.EntriesNotTaken), rep.LastError[max(0, len(rep.LastError)-80):])
	}
	var b bytes.Buffer
	WriteTable(&b, []GroupStatus{{Group: "dsl", Routers: []RouterStatus{{Report: Report{Router: "bng-4", ProofOK: true, EntriesNotTaken: rep.EntriesNotTaken, EntriesNotTakenCount: 5000}, State: StateOK}}}})
	if !strings.Contains(b.String(), "5000 fleet entries not taken") {
		t.Errorf("the table does not count them all:\n%s", b.String())
	}
}
