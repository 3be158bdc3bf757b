package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portcullis/portcullis/fleet"
	"github.com/portcullis/portcullis/fleet/etcdtest"
)

// `portcullis fleet` against a real etcd, as the NOC uses it: push (checked locally
// first, with file:line errors), dry run, history, a stale push refused with exit 3
// naming who pushed since, two pushes at once (exactly one wins), rollback, and
// fleet-wide entries.
func TestFleetCLI(t *testing.T) {
	srv := etcdtest.Start(t)
	eps := strings.Join(srv.Endpoints, ",")
	dir := t.TempDir()
	a, b, bad := filepath.Join(dir, "a.yaml"), filepath.Join(dir, "b.yaml"), filepath.Join(dir, "bad.yaml")
	write(t, a, labPolicy)
	write(t, b, strings.Replace(labPolicy, "verdict: reset", "verdict: drop", 1))
	write(t, bad, strings.Replace(labPolicy, "verdict: reset", "verdict: block", 1))
	fl := func(args ...string) (string, string, int) {
		return runCmd(append([]string{"fleet"}, append(args, "--endpoints", eps)...)...)
	}

	if _, errs, code := fl("push", bad, "--group", "dsl"); code != 2 || !strings.Contains(errs, "bad.yaml:3:") {
		t.Fatalf("a bad policy: exit %d, %s", code, errs)
	}
	if out, _, code := fl("status", "--json"); code != 0 || strings.TrimSpace(out) != "null" && strings.TrimSpace(out) != "[]" {
		t.Fatalf("nothing written by a bad push: %d %s", code, out)
	}
	if _, errs, code := fl("push", a); code != 2 || !strings.Contains(errs, "--group") {
		t.Fatalf("push without a group: exit %d, %s", code, errs)
	}
	if _, errs, code := fl("push", a, "--group", "dsl", "--message", "first"); code != 1 || !strings.Contains(errs, "no such group dsl") || !strings.Contains(errs, "--new-group") {
		t.Fatalf("push A to a group etcd does not know, without --new-group: %d %s", code, errs)
	}
	if out, errs, code := fl("push", a, "--group", "dsl", "--message", "first", "--new-group"); code != 0 || !strings.Contains(out, "revision") || !strings.Contains(errs, "no router reports") {
		t.Fatalf("push A: %d %s %s", code, out, errs)
	}
	out, errs, code := fl("push", b, "--group", "dsl", "--dry-run")
	if code != 0 || !strings.Contains(out, "100.64.0.0/10") || !strings.Contains(out, "reset -> drop") {
		t.Fatalf("dry run of B: %d %s %s", code, out, errs)
	}
	var hist []fleet.Record
	out, _, _ = fl("history", "--group", "dsl", "--json")
	if err := json.Unmarshal([]byte(out), &hist); err != nil || len(hist) != 1 || hist[0].Message != "first" {
		t.Fatalf("history after A: %v %s", err, out)
	}
	revA := hist[0].Revision

	// Two engineers push B and A' from the revision both read: one wins, the other
	// learns it lost and to whom.
	var wg sync.WaitGroup
	codes, errOut := make([]int, 2), make([]string, 2)
	for i, f := range []string{b, a} {
		wg.Go(func() {
			_, errOut[i], codes[i] = fl("push", f, "--group", "dsl", "--expect-revision", itoa64(revA))
		})
	}
	wg.Wait()
	if codes[0]+codes[1] != 3 || (codes[0] != 0 && codes[1] != 0) {
		t.Fatalf("two pushes at once: exits %v, %q", codes, errOut)
	}
	loser := errOut[0] + errOut[1]
	if !strings.Contains(loser, "changed at revision") || !strings.Contains(loser, "since you read revision "+itoa64(revA)) {
		t.Fatalf("the losing push's error: %q", loser)
	}
	if _, errs, code := fl("push", b, "--group", "dsl", "--expect-revision", itoa64(revA)); code != 3 {
		t.Fatalf("a stale push: exit %d %s", code, errs)
	}
	if out, errs, code := fl("rollback", "--group", "dsl", "--to", itoa64(revA)); code != 0 || !strings.Contains(out, "in force again") {
		t.Fatalf("rollback: %d %s %s", code, out, errs)
	}
	out, _, _ = fl("history", "--group", "dsl", "--json")
	if err := json.Unmarshal([]byte(out), &hist); err != nil || len(hist) != 3 || hist[0].Hash != hist[2].Hash || !strings.Contains(hist[0].Message, "rollback") {
		t.Fatalf("history after rollback: %v %s", err, out)
	}

	// A colleague pushes after this engineer last edited the file: the push goes
	// ahead (it read the revision it replaces) but says whose push it replaced.
	fc0, err := fleet.Dial(fleet.Conn{Endpoints: srv.Endpoints})
	if err != nil {
		t.Fatal(err)
	}
	defer fc0.Close()
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(a, old, old); err != nil {
		t.Fatal(err)
	}
	_, cur, _ := fleet.Read(t.Context(), fc0, "dsl")
	bobRev, err := fleet.Push(t.Context(), fc0, "dsl", []byte(strings.Replace(labPolicy, "verdict: reset", "verdict: drop", 1)), "bob@noc", "CHG-7", cur)
	if err != nil {
		t.Fatal(err)
	}
	out, errs, code = fl("push", a, "--group", "dsl")
	if code != 0 || !strings.Contains(out, "over revision "+itoa64(bobRev)+" (pushed by bob@noc") || !strings.Contains(errs, "which bob@noc pushed after") || !strings.Contains(errs, "--to "+itoa64(bobRev)) {
		t.Fatalf("a push over a colleague's newer push: %d\n%s%s", code, out, errs)
	}

	// A long history is read as far as asked: each record holds a policy's text.
	out, errs, code = fl("history", "--group", "dsl", "--limit", "2")
	if code != 0 || strings.Count(out, "\n") != 3 || !strings.Contains(errs, "the newest 2 of group dsl's 5 history records") {
		t.Fatalf("history --limit 2: %d\n%s%s", code, out, errs)
	}

	if _, errs, code := fl("quarantine", "100.64.1.2", "--group", "dsl", "--reason", "spam"); code != 2 || !strings.Contains(errs, "--for") {
		t.Fatalf("fleet quarantine without --for: %d %s", code, errs)
	}
	// No router reports in dsl here: refused unless forced.
	if _, errs, code := fl("quarantine", "100.64.1.2", "--group", "dsl", "--for", "1h", "--reason", "spam run"); code != 1 || !strings.Contains(errs, "no router reports in group dsl") || !strings.Contains(errs, "--force") {
		t.Fatalf("fleet quarantine where no router reports: %d %s", code, errs)
	}
	if out, errs, code := fl("quarantine", "100.64.1.2", "--group", "dsl", "--for", "1h", "--reason", "spam run", "--ticket", "AB-9", "--force"); code != 0 || !strings.Contains(out, "no router reports") {
		t.Fatalf("fleet quarantine: %d %s %s", code, out, errs)
	}
	// Checked against the group's policy before it is written, as the routers will.
	if _, errs, code := fl("unblock", "100.64.0.0/16", "--group", "dsl", "--for", "1h", "--reason", "asked", "--force"); code != 1 || !strings.Contains(errs, "an unblock is at most a /24") || !strings.Contains(errs, "under group dsl's policy") {
		t.Fatalf("fleet unblock wider than the policy allows: %d %s", code, errs)
	}
	out, _, _ = fl("entries", "--group", "dsl")
	if !strings.Contains(out, "100.64.1.2/32") || !strings.Contains(out, "AB-9") {
		t.Fatalf("fleet entries: %s", out)
	}
	if _, errs, code := fl("release", "100.64.1.2", "--group", "dsl", "--unblock"); code != 1 || !strings.Contains(errs, "the group has a quarantine of it, not an unblock") {
		t.Fatalf("fleet release --unblock of a quarantine: %d %s", code, errs)
	}
	if _, _, code := fl("release", "100.64.1.2", "--group", "dsl"); code != 0 {
		t.Fatalf("fleet release: %d", code)
	}
	if _, errs, code := fl("release", "100.64.1.2", "--group", "dsl"); code != 1 || !strings.Contains(errs, "fleet entries --group dsl lists them") {
		t.Fatalf("fleet release of nothing: %d %s", code, errs)
	}
	if out, _, _ = fl("entries", "--group", "dsl"); strings.Contains(out, "100.64.1.2") {
		t.Fatalf("fleet entries after release: %s", out)
	}
	// A misspelt group: every verb says it does not exist, names the groups and the
	// one meant, and exits 1.
	for _, args := range [][]string{
		{"status", "--group", "dls"}, {"history", "--group", "dls"}, {"entries", "--group", "dls"},
		{"push", a, "--group", "dls"}, {"push", a, "--group", "dls", "--dry-run"},
		{"quarantine", "100.64.1.3", "--group", "dls", "--for", "1h", "--reason", "x"},
		{"release", "100.64.1.2", "--group", "dls"}, {"rollback", "--group", "dls", "--to", itoa64(revA)},
	} {
		if out, errs, code := fl(args...); code != 1 || !strings.Contains(errs, "no such group dls") || !strings.Contains(errs, "(groups: dsl)") || !strings.Contains(errs, "did you mean dsl?") {
			t.Errorf("fleet %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errs)
		}
	}
	// A router gone for good (decommissioned, moved to another group) is forgotten.
	if _, errs, code := fl("forget", "bng-old", "--group", "dsl"); code != 1 || !strings.Contains(errs, "no router bng-old") {
		t.Errorf("forgetting a router the group does not know: %d %s", code, errs)
	}
	fc, err := fleet.Dial(fleet.Conn{Endpoints: srv.Endpoints})
	if err != nil {
		t.Fatal(err)
	}
	defer fc.Close()
	if _, err := fc.Etcd().Put(t.Context(), fc.Prefix()+"groups/dsl/known/bng-old", "2026-01-01T00:00:00Z"); err != nil {
		t.Fatal(err)
	}
	if out, _, _ := fl("status", "--group", "dsl"); !strings.Contains(out, "bng-old") || !strings.Contains(out, "gone") {
		t.Fatalf("a known router without a report is gone: %s", out)
	}
	if out, _, _ := fl("status", "--group", "dsl", "--problems"); !strings.Contains(out, "0 routers reporting; 1 gone") || !strings.Contains(out, "bng-old") {
		t.Fatalf("status --problems: %s", out)
	}
	if out, errs, code := fl("forget", "bng-old", "--group", "dsl"); code != 0 || !strings.Contains(out, "forgotten") {
		t.Fatalf("fleet forget: %d %s %s", code, out, errs)
	}
	if out, _, _ := fl("status", "--group", "dsl"); strings.Contains(out, "bng-old") {
		t.Fatalf("a forgotten router is still listed: %s", out)
	}
	if _, errs, code := runCmd("fleet", "status"); code != 2 || !strings.Contains(errs, "--endpoints") {
		t.Fatalf("no endpoints: %d %s", code, errs)
	}
}

func itoa64(i int64) string { b, _ := json.Marshal(i); return string(b) }

// A group whose current policy does not compile (put by hand, or by a newer
// portcullis) does not block the push of a fix: the dry run says there is no diff and
// shows the new policy as a whole, the push goes ahead, and both point to rollback.
func TestFleetPushOverBrokenPolicy(t *testing.T) {
	srv := etcdtest.Start(t)
	eps := strings.Join(srv.Endpoints, ",")
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.yaml"), filepath.Join(dir, "b.yaml")
	write(t, a, labPolicy)
	write(t, b, strings.Replace(labPolicy, "verdict: reset", "verdict: drop", 1))
	fl := func(args ...string) (string, string, int) {
		return runCmd(append([]string{"fleet"}, append(args, "--endpoints", eps)...)...)
	}
	if out, errs, code := fl("push", a, "--group", "dsl", "--new-group"); code != 0 {
		t.Fatalf("push A: %d %s %s", code, out, errs)
	}
	if _, err := srv.Client(t).Put(t.Context(), fleet.DefaultPrefix+"groups/dsl/policy", strings.Replace(labPolicy, "verdict: reset", "verdict: pas", 1)); err != nil {
		t.Fatal(err)
	}
	out, errs, code := fl("push", b, "--group", "dsl", "--dry-run")
	if code != 0 || !strings.Contains(out, "does not compile") || !strings.Contains(out, "drop") || !strings.Contains(errs, "fleet rollback --group dsl") {
		t.Fatalf("dry run over a broken policy: exit %d\n%s\n%s", code, out, errs)
	}
	if out, errs, code = fl("push", b, "--group", "dsl", "--message", "fix"); code != 0 || !strings.Contains(out, "pushed") {
		t.Fatalf("push of the fix over a broken policy: exit %d\n%s\n%s", code, out, errs)
	}
	var hist []fleet.Record
	out, _, _ = fl("history", "--group", "dsl", "--json")
	if err := json.Unmarshal([]byte(out), &hist); err != nil || len(hist) != 2 || hist[0].Message != "fix" {
		t.Fatalf("history after the fix: %v %s", err, out)
	}
}

// A verb run with credentials whose role does not allow it (a router's, on the NOC's
// workstation; the NOC's, for grant) names the etcd user, what it may not do, and the
// grant that allows it, not just etcd's "permission denied".
func TestFleetCLIPermissionDenied(t *testing.T) {
	srv := etcdtest.Start(t)
	raw := srv.Client(t)
	etcdtest.EnableAuth(t, raw)
	dir := t.TempDir()
	pw := func(user string) string {
		f := filepath.Join(dir, user+".pw")
		write(t, f, user+"-pw\n")
		return f
	}
	eps := strings.Join(srv.Endpoints, ",")
	as := func(user string, args ...string) (string, string, int) {
		return runCmd(append([]string{"fleet"}, append(args, "--endpoints", eps, "--user", user, "--password-file", pw(user))...)...)
	}
	if _, errs, code := as("root", "grant", "noc", "--etcd-user", "noc", "--etcd-password-file", pw("noc")); code != 0 {
		t.Fatalf("grant noc: %s", errs)
	}
	if _, errs, code := as("root", "grant", "router", "--group", "dsl", "--router", "bng1", "--etcd-password-file", pw("bng1")); code != 0 {
		t.Fatalf("grant router: %s", errs)
	}
	a := filepath.Join(dir, "a.yaml")
	write(t, a, labPolicy)
	if _, errs, code := as("noc", "push", a, "--group", "dsl", "--new-group"); code != 0 {
		t.Fatalf("the NOC pushes: %s", errs)
	}
	for _, c := range []struct {
		user string
		args []string
		want string
	}{
		{"bng1", []string{"push", a, "--group", "dsl"}, "the NOC's credentials"},
		{"bng1", []string{"quarantine", "100.64.1.2", "--group", "dsl", "--for", "1h", "--reason", "x", "--force"}, "the NOC's credentials"},
		{"noc", []string{"grant", "router", "--group", "dsl", "--router", "bng2"}, "etcd's root"},
	} {
		_, errs, code := as(c.user, c.args...)
		t.Logf("fleet %s as %s: exit %d: %s", c.args[0], c.user, code, errs)
		if code != 1 || !strings.Contains(errs, "etcd user "+c.user+" may not") || !strings.Contains(errs, c.want) {
			t.Errorf("fleet %s as %s: exit %d, %q: want exit 1 naming the user and %q", c.args[0], c.user, code, errs, c.want)
		}
	}
}
