package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/portcullis/portcullis/fleet"
	"github.com/portcullis/portcullis/fleet/etcdtest"
	"github.com/portcullis/portcullis/internal/testutil"
	"github.com/portcullis/portcullis/testenv"
)

// TestMain lets the test binary be an etcd member of a fleet test's cluster
// (etcdtest.StartCluster runs it again as one, in the member's namespace), and fails
// the run if a testenv namespace of this process outlives the tests.
func TestMain(m *testing.M) {
	etcdtest.MemberMain()
	code := m.Run()
	ents, _ := os.ReadDir("/run/netns")
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), fmt.Sprintf("pcx-%d-", os.Getpid())) {
			fmt.Fprintf(os.Stderr, "FAIL: namespace left behind: %s\n", e.Name())
			code = 1
		}
	}
	os.Exit(code)
}

// fleetLab is a fleet in namespaces: a management network, etcd members on it (one
// namespace and one process each), and small test ISPs whose gateways are the routers,
// each connected to the management network and nothing else of the others'.
type fleetLab struct {
	mgmt    *testenv.Mgmt
	etcd    *etcdtest.Cluster
	isps    []*testenv.Topology
	mgmtIPs []string // each router's management address, by ISP
}

// dialFrom is a dialer whose connections start inside ns.
func dialFrom(ns *testenv.Namespace) etcdtest.DialFunc {
	return func(ctx context.Context, addr string) (net.Conn, error) { return ns.DialContext(ctx, "tcp", addr) }
}

// newFleetLab builds members etcd members and routers test ISPs (with just the dsl
// host: XDP is the daemons' business). Everything goes when the test ends.
func newFleetLab(t *testing.T, members, routers int) *fleetLab {
	t.Helper()
	requireRootNet(t)
	mgmt, err := testenv.NewMgmt()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := mgmt.Close(); err != nil {
			t.Errorf("closing the management network: %v", err)
		}
	})
	l := &fleetLab{mgmt: mgmt}
	for i := range routers {
		top, err := testenv.New(testenv.Options{Mode: testenv.Generic, Hosts: []testenv.HostSpec{testenv.DefaultHosts[0]}})
		if err != nil {
			t.Fatalf("ISP %d: %v", i+1, err)
		}
		t.Cleanup(func() { top.Close() })
		a, err := mgmt.Connect(top.Gateway)
		if err != nil {
			t.Fatal(err)
		}
		l.isps = append(l.isps, top)
		l.mgmtIPs = append(l.mgmtIPs, a.String())
	}
	var specs []etcdtest.MemberSpec
	for i := range members {
		name := fmt.Sprintf("etcd%d", i+1)
		ns, addr, err := mgmt.AddMember(name)
		if err != nil {
			t.Fatal(err)
		}
		specs = append(specs, etcdtest.MemberSpec{Name: name, Netns: ns.Name, Addr: addr})
	}
	// Registered after the namespaces: the members are killed before those go.
	l.etcd = etcdtest.StartCluster(t, specs, dialFrom(mgmt.NOC))
	return l
}

// client is an etcd client of every member whose connections start in ISP i's gateway
// namespace: what router i's daemon sees.
func (l *fleetLab) client(t *testing.T, i int) *clientv3.Client {
	return etcdtest.NewClient(t, l.etcd.Endpoints(), dialFrom(l.isps[i].Gateway))
}

// roundTrip writes a key from cli and reads it back, in a bounded time.
func roundTrip(cli *clientv3.Client, key string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	val := time.Now().String()
	if _, err := cli.Put(ctx, key, val); err != nil {
		return fmt.Errorf("put: %w", err)
	}
	resp, err := cli.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("get: %w", err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != val {
		return fmt.Errorf("get %s: %v, want %q", key, resp.Kvs, val)
	}
	return nil
}

// eventually polls cond until it returns nil, failing the test after within.
func eventually(t *testing.T, within time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, within, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// The fleet's network on its own (issue 14's infrastructure): three etcd members, each
// a process in its own namespace, and two routers (the gateways of two test ISPs)
// reaching them over the management network only. Both routers write and read; one
// member killed changes nothing; router 1 cut off fails within a bounded time while
// router 2 carries on, and its subscribers' mail still flows; healed, it works again;
// the killed member restarted rejoins.
func TestFleetNet(t *testing.T) {
	l := newFleetLab(t, 3, 2)
	clis := []*clientv3.Client{l.client(t, 0), l.client(t, 1)}
	works := func(i int) func() error {
		return func() error { return roundTrip(clis[i], fmt.Sprintf("/fleetnet/r%d", i+1)) }
	}
	for i := range clis {
		eventually(t, 30*time.Second, fmt.Sprintf("router %d reaches etcd", i+1), works(i))
	}

	t.Log("one member killed: both routers still write and read")
	l.etcd.Kill(0)
	for i := range clis {
		eventually(t, 30*time.Second, fmt.Sprintf("router %d with etcd1 dead", i+1), works(i))
	}

	t.Log("router 1 cut off: its requests fail, router 2's do not, its mail still flows")
	if err := l.mgmt.Partition(l.isps[0].Gateway); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "router 1's requests fail while cut off", func() error {
		if err := works(0)(); err == nil {
			return fmt.Errorf("router 1 still reaches etcd")
		}
		return nil
	})
	for range 3 {
		if err := works(0)(); err == nil {
			t.Fatal("router 1 reached etcd while cut off")
		}
	}
	if err := works(1)(); err != nil {
		t.Fatalf("router 2 while router 1 is cut off: %v", err)
	}
	for _, top := range l.isps {
		h := top.Host("dsl")
		if got, err, _ := top.Send(h, h.V4, 25, 2*time.Second); got != testenv.Delivered {
			t.Fatalf("%s's mail while router 1 is cut off: %s (%v)", top.ID, got, err)
		}
	}

	t.Log("healed: router 1 works again")
	if err := l.mgmt.Heal(l.isps[0].Gateway); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "router 1 after the heal", works(0))

	t.Log("the killed member restarted: it rejoins and serves")
	l.etcd.Restart(0)
	one := etcdtest.NewClient(t, []string{l.etcd.Endpoint(0)}, dialFrom(l.isps[1].Gateway))
	eventually(t, 30*time.Second, "etcd1 serves router 2 after its restart", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		resp, err := one.Get(ctx, "/fleetnet/r1")
		if err == nil && len(resp.Kvs) != 1 {
			err = fmt.Errorf("etcd1 has no /fleetnet/r1 after rejoining")
		}
		return err
	})
}

// fleetRouter is a real daemon (`portcullis run`, policy_source: etcd) on an ISP's
// gateway, attached to its subscriber-facing interfaces.
type fleetRouter struct {
	name  string
	top   *testenv.Topology
	cfg   string
	bpffs string
	cmd   *exec.Cmd
	log   *testutil.SyncBuffer
}

// startRouters starts one daemon per ISP, named r1, r2, ..., in group.
func (l *fleetLab) startRouters(t *testing.T, group string) []*fleetRouter {
	t.Helper()
	var rs []*fleetRouter
	for i, top := range l.isps {
		dir := t.TempDir()
		r := &fleetRouter{name: fmt.Sprintf("r%d", i+1), top: top, cfg: filepath.Join(dir, "portcullis.yaml"),
			bpffs: fmt.Sprintf("/sys/fs/bpf/pcfleet%d-%d", os.Getpid(), i+1), log: &testutil.SyncBuffer{}}
		var ifaces []string
		for _, h := range top.Hosts {
			ifaces = append(ifaces, h.GatewayIf)
		}
		write(t, r.cfg, fmt.Sprintf(`interfaces: [%s]
mode: generic
policy_source: etcd
listen: ""
control_socket: %s
bpffs: %s
audit_log: %s
store: %s
etcd:
  endpoints: [%s]
  group: %s
  router: %s
  lease_ttl: 3s
`, strings.Join(ifaces, ", "), filepath.Join(dir, "ctl.sock"), r.bpffs, filepath.Join(dir, "audit.jsonl"), filepath.Join(dir, "runtime.db"),
			strings.Join(l.etcd.Endpoints(), ", "), group, r.name))
		r.cmd = exec.Command("nsenter", "--net="+top.Gateway.Path(), binary(t), "run", "--config", r.cfg)
		r.cmd.Stdout, r.cmd.Stderr = r.log, r.log
		if err := r.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			r.cmd.Process.Kill()
			r.cmd.Wait()
			exec.Command(binary(t), "detach", "--bpffs", r.bpffs).Run()
			if t.Failed() {
				t.Logf("%s's log:\n%s", r.name, r.log)
			}
		})
		rs = append(rs, r)
	}
	return rs
}

// status is the router's own `portcullis status --json`, run in its namespace.
func (r *fleetRouter) status(t *testing.T) string {
	t.Helper()
	out, _ := exec.Command("nsenter", "--net="+r.top.Gateway.Path(), binary(t), "status", "--json", "--config", r.cfg).CombinedOutput()
	return string(out)
}

// etcdConnected is what the router's own status says of its connection to etcd.
func (r *fleetRouter) etcdConnected(t *testing.T) (bool, error) {
	t.Helper()
	var st struct {
		Source struct {
			Etcd struct {
				Health struct {
					Connected bool `json:"connected"`
				} `json:"health"`
			} `json:"etcd"`
		} `json:"source"`
	}
	out := r.status(t)
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return false, fmt.Errorf("status --json: %v\n%s", err, out)
	}
	return st.Source.Etcd.Health.Connected, nil
}

// mail sends one message from the ISP's dsl host to its MX on port.
func (r *fleetRouter) mail(t *testing.T, port uint16) testenv.Outcome {
	t.Helper()
	got, err := r.mailSettling(t, port)
	if err != nil {
		t.Fatalf("%s: dsl %v", r.name, err)
	}
	return got
}

// mailSettling sends a message from the dsl subscriber through r on port and returns
// the outcome, a failed session as an error: in an eventually loop while a block lands
// or lifts that is one more try (the block landed during the session), where mail
// fails the test on it.
func (r *fleetRouter) mailSettling(t *testing.T, port uint16) (testenv.Outcome, error) {
	t.Helper()
	h := r.top.Host("dsl")
	got, err, _ := r.top.Send(h, h.V4, port, 2*time.Second)
	if got == testenv.Failed {
		return got, fmt.Errorf("port %d: the session failed: %v", port, err)
	}
	return got, nil
}

// expectMail checks port 25 against want on each router, and that 587 delivers.
func expectMail(t *testing.T, want testenv.Outcome, rs ...*fleetRouter) {
	t.Helper()
	for _, r := range rs {
		if got := r.mail(t, 25); got != want {
			t.Fatalf("%s: dsl port 25: %s, want %s", r.name, got, want)
		}
		if got := r.mail(t, 587); got != testenv.Delivered {
			t.Fatalf("%s: dsl port 587: %s, want delivered", r.name, got)
		}
	}
}

// fleetCLI runs `portcullis fleet ARGS --endpoints ...` in the noc's namespace, as
// an operator's workstation there would.
func (l *fleetLab) fleetCLI(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	args = append(append([]string{"--net=" + l.mgmt.NOC.Path(), binary(t), "fleet"}, args...), "--endpoints", strings.Join(l.etcd.Endpoints(), ","))
	cmd := exec.Command("nsenter", args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("fleet %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

// push pushes text as FILE to group with the CLI and returns the new revision.
func (l *fleetLab) push(t *testing.T, group, name, text string, extra ...string) int64 {
	t.Helper()
	file := filepath.Join(t.TempDir(), name)
	write(t, file, text)
	out, errs, code := l.fleetCLI(t, append([]string{"push", file, "--group", group, "--message", name}, extra...)...)
	if code != 0 {
		t.Fatalf("fleet push %s: exit %d\n%s%s", name, code, out, errs)
	}
	var rev int64
	if _, err := fmt.Sscanf(out[strings.Index(out, "revision "):], "revision %d", &rev); err != nil {
		t.Fatalf("fleet push %s: no revision in %q", name, out)
	}
	return rev
}

// groupStatus is `portcullis fleet status --group G --json`.
func (l *fleetLab) groupStatus(t *testing.T, group string) fleet.GroupStatus {
	t.Helper()
	out, errs, code := l.fleetCLI(t, "status", "--group", group, "--json")
	if code != 0 {
		t.Fatalf("fleet status: exit %d\n%s%s", code, out, errs)
	}
	var gs []fleet.GroupStatus
	if err := json.Unmarshal([]byte(out), &gs); err != nil || len(gs) != 1 {
		t.Fatalf("fleet status --json: %v\n%s", err, out)
	}
	return gs[0]
}

// router is the status of the router named name, if it has a report.
func router(gs fleet.GroupStatus, name string) (fleet.RouterStatus, bool) {
	for _, r := range gs.Routers {
		if r.Router == name {
			return r, true
		}
	}
	return fleet.RouterStatus{}, false
}

// converge waits until each of rs reports state at revision rev in fleet status (and
// the group is at rev), and returns the last status.
func (l *fleetLab) converge(t *testing.T, group string, rev int64, state string, rs ...*fleetRouter) fleet.GroupStatus {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		gs := l.groupStatus(t, group)
		ok := gs.Revision == rev
		for _, r := range rs {
			rep, found := router(gs, r.name)
			if !found || rep.State != state || (state == fleet.StateOK && rep.PolicyRevision != rev) {
				ok = false
			}
		}
		if ok {
			return gs
		}
		if time.Now().After(deadline) {
			b, _ := json.MarshalIndent(gs, "", "  ")
			t.Fatalf("routers not %s at revision %d within 60s:\n%s", state, rev, b)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// Policies the fleet test pushes: the dsl pool passes, or is refused at once; and one
// every router refuses although it checks out on the NOC's side: it scopes the pool to
// an interface no router has (only a router knows its interfaces).
const (
	fleetPass   = "version: 1\nranges:\n  - {name: dsl, verdict: pass, cidrs: [100.64.0.0/12]}\n"
	fleetReset  = "version: 1\nranges:\n  - {name: dsl, verdict: reset, cidrs: [100.64.0.0/12]}\n"
	fleetNoSuch = "version: 1\nranges:\n  - {name: dsl, verdict: pass, cidrs: [100.64.0.0/12], interfaces: [nosuch0]}\n"
)

// Issue 14 end to end: three etcd members in namespaces, two real daemons (one per
// ISP's gateway, policy_source: etcd) and real SMTP from each ISP's dsl subscriber.
// A push converges everywhere and mail follows; a policy every router refuses is
// reported failed by both in `fleet status` and enforcement is unchanged; with one
// etcd member killed a push still converges; router 1 cut off from etcd keeps
// enforcing what it had while router 2 takes the next push, is shown not ok while cut
// off, and catches up once healed; two concurrent pushes from one revision: exactly
// one wins, the other is told of the conflict (exit 3), and both routers converge on
// the winner.
func TestFleetEndToEnd(t *testing.T) {
	const group = "dsl"
	l := newFleetLab(t, 3, 2)
	rs := l.startRouters(t, group)

	t.Log("no policy yet: nothing attached, mail flows")
	expectMail(t, testenv.Delivered, rs...)

	t.Log("push A (dsl passes), then B (dsl refused): both routers converge, mail follows")
	revA := l.push(t, group, "a.yaml", fleetPass, "--new-group") // the routers may not have reported yet
	l.converge(t, group, revA, fleet.StateOK, rs...)
	expectMail(t, testenv.Delivered, rs...)
	revB := l.push(t, group, "b.yaml", fleetReset)
	l.converge(t, group, revB, fleet.StateOK, rs...)
	expectMail(t, testenv.Refused, rs...)

	t.Log("a policy the routers refuse (interfaces: [nosuch0]): fleet push takes it, every router refuses it, B stays in force")
	revBad := l.push(t, group, "bad.yaml", fleetNoSuch)
	gs := l.converge(t, group, revBad, fleet.StateFailed, rs...)
	for _, r := range rs {
		rep, _ := router(gs, r.name)
		if rep.PolicyRevision != revB || !strings.Contains(rep.LastError, "nosuch0") {
			t.Errorf("%s after the bad push: revision %d (want %d still in force), error %q (want it to name nosuch0)", r.name, rep.PolicyRevision, revB, rep.LastError)
		}
	}
	if table, _, _ := l.fleetCLI(t, "status", "--group", group); strings.Count(table, " failed ") != 2 || !strings.Contains(table, "nosuch0") {
		t.Errorf("fleet status table after the bad push:\n%s", table)
	} else {
		t.Logf("portcullis fleet status, after the refused push:\n%s", table)
	}
	expectMail(t, testenv.Refused, rs...)

	t.Log("one etcd member killed: a push (A again) still converges")
	l.etcd.Kill(0)
	revA2 := l.push(t, group, "a2.yaml", fleetPass)
	l.converge(t, group, revA2, fleet.StateOK, rs...)
	expectMail(t, testenv.Delivered, rs...)

	t.Log("a fleet quarantine of the dsl subscriber: every router blocks its port 25, 587 still delivers; released: delivered again")
	if out, errs, code := l.fleetCLI(t, "quarantine", "100.64.1.10", "--group", group, "--for", "1h", "--reason", "spam run", "--ticket", "AB-7"); code != 0 {
		t.Fatalf("fleet quarantine: %d %s %s", code, out, errs)
	}
	for _, r := range rs {
		eventually(t, 60*time.Second, r.name+" blocks the quarantined subscriber", func() error {
			got, err := r.mailSettling(t, 25)
			if err != nil {
				return err
			}
			if got == testenv.Delivered {
				return fmt.Errorf("port 25 delivered")
			}
			return nil
		})
		if got := r.mail(t, 587); got != testenv.Delivered {
			t.Fatalf("%s: port 587 under a fleet quarantine: %s", r.name, got)
		}
	}
	if out, errs, code := l.fleetCLI(t, "release", "100.64.1.10", "--group", group); code != 0 {
		t.Fatalf("fleet release: %d %s %s", code, out, errs)
	}
	for _, r := range rs {
		eventually(t, 60*time.Second, r.name+" lets the released subscriber through", func() error {
			got, err := r.mailSettling(t, 25)
			if err != nil {
				return err
			}
			if got != testenv.Delivered {
				return fmt.Errorf("port 25: %s", got)
			}
			return nil
		})
	}

	t.Log("router 1 cut off from etcd: push C (dsl refused); router 2 takes it, router 1 keeps A and is not ok")
	if err := l.mgmt.Partition(rs[0].top.Gateway); err != nil {
		t.Fatal(err)
	}
	revC := l.push(t, group, "c.yaml", fleetReset)
	l.converge(t, group, revC, fleet.StateOK, rs[1])
	if table, _, _ := l.fleetCLI(t, "status", "--group", group); table != "" {
		t.Logf("portcullis fleet status, router 1 cut off:\n%s", table)
	}
	expectMail(t, testenv.Refused, rs[1])
	expectMail(t, testenv.Delivered, rs[0])
	eventually(t, 60*time.Second, "router 1 shown stale or gone while cut off", func() error {
		gs := l.groupStatus(t, group)
		if rep, ok := router(gs, rs[0].name); ok && rep.State != fleet.StateStale {
			return fmt.Errorf("router 1 is %s at revision %d", rep.State, rep.PolicyRevision)
		}
		return nil
	})
	eventually(t, 60*time.Second, "router 1's own status says it cannot reach etcd", func() error {
		if c, err := rs[0].etcdConnected(t); err != nil || c {
			return fmt.Errorf("connected %v (%v)", c, err)
		}
		return nil
	})
	gs = l.groupStatus(t, group)
	if rep, ok := router(gs, rs[0].name); ok && (rep.PolicyRevision == revC || rep.State != fleet.StateStale) {
		t.Errorf("router 1 reports %s at revision %d while cut off", rep.State, rep.PolicyRevision)
	}
	t.Logf("router 1 while cut off: gone %v", gs.Gone)
	expectMail(t, testenv.Delivered, rs[0]) // still enforcing A, cut off or not

	t.Log("healed: router 1 reports again and catches up to C")
	if err := l.mgmt.Heal(rs[0].top.Gateway); err != nil {
		t.Fatal(err)
	}
	var seen []string
	deadline := time.Now().Add(60 * time.Second)
	for {
		gs := l.groupStatus(t, group)
		rep, ok := router(gs, rs[0].name)
		if ok {
			s := fmt.Sprintf("%s@%d", rep.State, rep.PolicyRevision)
			if len(seen) == 0 || seen[len(seen)-1] != s {
				seen = append(seen, s)
			}
		}
		if ok && rep.State == fleet.StateOK && rep.PolicyRevision == revC {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("router 1 did not catch up to revision %d within 60s after the heal: states %v", revC, seen)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("router 1's reports after the heal: %v", seen)
	// Back, it reports what it enforced while cut off (A: stale, or behind while it
	// applies C) or already C; never anything else.
	for _, s := range seen {
		if !strings.HasSuffix(s, fmt.Sprintf("@%d", revA2)) && s != fmt.Sprintf("%s@%d", fleet.StateOK, revC) {
			t.Errorf("router 1 reported %s after the heal: want revision %d (what it kept) or ok at %d", s, revA2, revC)
		}
	}
	// On its return it says it was stale: the outage it had, in its report and in the
	// fleet status table.
	gs = l.groupStatus(t, group)
	if rep, ok := router(gs, rs[0].name); !ok || rep.LastOutage == nil || !rep.LastOutage.To.After(rep.LastOutage.From) {
		t.Errorf("router 1's report after the heal names no outage: %+v", rep.Report)
	} else {
		t.Logf("router 1 was cut off from %s to %s", rep.LastOutage.From.Format(time.RFC3339Nano), rep.LastOutage.To.Format(time.RFC3339Nano))
	}
	if table, _, _ := l.fleetCLI(t, "status", "--group", group); !strings.Contains(table, "was cut off from etcd") {
		t.Errorf("fleet status does not show router 1's outage:\n%s", table)
	} else {
		t.Logf("portcullis fleet status, after the heal:\n%s", table)
	}
	expectMail(t, testenv.Refused, rs...)

	t.Log("two concurrent pushes from the same revision: exactly one wins, the other is told of the conflict")
	files := []string{filepath.Join(t.TempDir(), "p.yaml"), filepath.Join(t.TempDir(), "r.yaml")}
	write(t, files[0], fleetPass)
	write(t, files[1], fleetReset+"# the other one\n")
	type result struct {
		out, errs string
		code      int
	}
	results := make([]result, 2)
	var wg sync.WaitGroup
	for i, f := range files {
		wg.Go(func() {
			out, errs, code := l.fleetCLI(t, "push", f, "--group", group, "--expect-revision", fmt.Sprint(revC), "--message", fmt.Sprintf("concurrent %d", i))
			results[i] = result{out, errs, code}
		})
	}
	wg.Wait()
	winner := -1
	for i, r := range results {
		switch r.code {
		case 0:
			if winner >= 0 {
				t.Fatalf("both pushes from revision %d won:\n%+v", revC, results)
			}
			winner = i
		case 3:
			if !strings.Contains(r.errs, "changed since it was read") || !strings.Contains(r.errs, fmt.Sprintf("concurrent %d", 1-i)) {
				t.Errorf("the losing push's error does not say conflict and who won: %q", r.errs)
			}
		default:
			t.Fatalf("push %d: exit %d\n%s%s", i, r.code, r.out, r.errs)
		}
	}
	if winner < 0 {
		t.Fatalf("neither push won:\n%+v", results)
	}
	var revW int64
	fmt.Sscanf(results[winner].out[strings.Index(results[winner].out, "revision "):], "revision %d", &revW)
	t.Logf("push %d won (revision %d); the other: %s", winner, revW, strings.TrimSpace(results[1-winner].errs))
	l.converge(t, group, revW, fleet.StateOK, rs...)
	want := testenv.Delivered
	if winner == 1 {
		want = testenv.Refused
	}
	expectMail(t, want, rs...)
}
