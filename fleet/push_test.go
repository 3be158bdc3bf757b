package fleet

import (
	"bytes"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/portcullis/portcullis/policy"
)

func TestPushRead(t *testing.T) {
	_, _, cli := newFleet(t)
	ctx := ctxT(t)
	text, rev, err := Read(ctx, cli, "dsl")
	if err != nil || rev != 0 || text != nil {
		t.Fatalf("empty group: %q %d %v", text, rev, err)
	}
	r1, err := Push(ctx, cli, "dsl", validPolicy(1), "alice@noc", "first", 0)
	if err != nil {
		t.Fatal(err)
	}
	text, rev, err = Read(ctx, cli, "dsl")
	if err != nil || rev != r1 || !bytes.Equal(text, validPolicy(1)) {
		t.Fatalf("read back: rev %d (pushed %d), err %v, text %q", rev, r1, err, text)
	}
	r2 := mustPush(t, cli, "dsl", validPolicy(2), "bob@noc", r1)
	if r2 <= r1 {
		t.Fatalf("second push revision %d not after %d", r2, r1)
	}
	// Pushing from revision 0 again (as if the group were empty) is a conflict.
	if _, err := Push(ctx, cli, "dsl", validPolicy(3), "carol@noc", "", 0); !errors.Is(err, ErrConflict) {
		t.Fatalf("push over an existing group from 0: %v, want ErrConflict", err)
	}
}

func TestPushConcurrentOneWins(t *testing.T) {
	_, _, cli := newFleet(t)
	ctx := ctxT(t)
	base := mustPush(t, cli, "dsl", validPolicy(1), "alice@noc", 0)
	start := make(chan struct{})
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, who := range []string{"bob@noc", "carol@noc"} {
		wg.Go(func() {
			<-start
			_, errs[i] = Push(ctx, cli, "dsl", validPolicy(10+i), who, "concurrent", base)
		})
	}
	close(start)
	wg.Wait()
	var won, lost int
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case errors.Is(err, ErrConflict):
			lost++
			if !strings.Contains(err.Error(), "since you read revision") || !strings.Contains(err.Error(), "@noc") {
				t.Errorf("the conflict does not say who changed what since: %v", err)
			}
		default:
			t.Errorf("unexpected error: %v", err)
		}
	}
	if won != 1 || lost != 1 {
		t.Fatalf("won %d, conflicts %d (errors %v): want exactly one of each", won, lost, errs)
	}
	hist, err := History(ctx, cli, "dsl")
	if err != nil || len(hist) != 2 {
		t.Fatalf("history after one winner: %d records, %v", len(hist), err)
	}
}

func TestPushInvalidWritesNothing(t *testing.T) {
	_, _, cli := newFleet(t)
	ctx := ctxT(t)
	base := mustPush(t, cli, "dsl", validPolicy(1), "alice@noc", 0)
	_, err := Push(ctx, cli, "dsl", invalidPolicy, "bob@noc", "typo", base)
	var perrs policy.Errors
	if !errors.As(err, &perrs) {
		t.Fatalf("invalid policy: %v (%T), want policy.Errors", err, err)
	}
	if perrs[0].Pos.Line != 6 || !strings.Contains(err.Error(), "etcd:dsl:6:") {
		t.Errorf("error not positioned at line 6 of etcd:dsl: %v", err)
	}
	text, rev, err := Read(ctx, cli, "dsl")
	if err != nil || rev != base || !bytes.Equal(text, validPolicy(1)) {
		t.Fatalf("the key changed after a refused push: rev %d (was %d), %v", rev, base, err)
	}
	if hist, _ := History(ctx, cli, "dsl"); len(hist) != 1 {
		t.Fatalf("history has %d records after a refused push, want 1", len(hist))
	}
	if _, err := Push(ctx, cli, "DSL/x", validPolicy(1), "bob", "", 0); !errors.Is(err, ErrName) {
		t.Fatalf("bad group name: %v, want ErrName", err)
	}
}

func TestHistoryRollback(t *testing.T) {
	_, raw, cli := newFleet(t)
	ctx := ctxT(t)
	r1 := mustPush(t, cli, "dsl", validPolicy(1), "alice@noc", 0)
	r2 := mustPush(t, cli, "dsl", validPolicy(2), "bob@noc", r1)
	r3 := mustPush(t, cli, "dsl", validPolicy(3), "carol@noc", r2)
	// Compaction keeps the records: they are written once.
	if _, err := raw.Compact(ctx, r3); err != nil {
		t.Fatal(err)
	}
	hist, err := History(ctx, cli, "dsl")
	if err != nil {
		t.Fatal(err)
	}
	if len(hist) != 3 {
		t.Fatalf("%d records, want 3", len(hist))
	}
	for i, want := range []struct {
		rev  int64
		who  string
		text []byte
	}{{r3, "carol@noc", validPolicy(3)}, {r2, "bob@noc", validPolicy(2)}, {r1, "alice@noc", validPolicy(1)}} {
		h := hist[i]
		if h.Revision != want.rev || h.Who != want.who || !bytes.Equal(h.Text, want.text) || h.Seq != int64(3-i) || h.Hash == "" {
			t.Errorf("record %d: rev %d seq %d who %s hash %q, want rev %d who %s", i, h.Revision, h.Seq, h.Who, h.Hash, want.rev, want.who)
		}
	}
	if _, err := Rollback(ctx, cli, "dsl", r1, "dave@noc", r2); !errors.Is(err, ErrConflict) {
		t.Fatalf("rollback from a stale revision: %v, want ErrConflict", err)
	}
	if _, err := Rollback(ctx, cli, "dsl", r3+100, "dave@noc", r3); !errors.Is(err, ErrNoRevision) {
		t.Fatalf("rollback to an unknown revision: %v, want ErrNoRevision", err)
	}
	r4, err := Rollback(ctx, cli, "dsl", r1, "dave@noc", r3)
	if err != nil {
		t.Fatal(err)
	}
	text, rev, _ := Read(ctx, cli, "dsl")
	if rev != r4 || !bytes.Equal(text, validPolicy(1)) {
		t.Fatalf("after rollback: rev %d (want %d), text of revision 1: %v", rev, r4, bytes.Equal(text, validPolicy(1)))
	}
	hist, _ = History(ctx, cli, "dsl")
	if hist[0].Revision != r4 || hist[0].Who != "dave@noc" || hist[0].Hash != hist[3].Hash || !strings.Contains(hist[0].Message, "rollback to") {
		t.Fatalf("rollback record: %+v", hist[0])
	}
}

func TestDryRun(t *testing.T) {
	_, _, cli := newFleet(t)
	ctx := ctxT(t)
	p, err := DryRun(ctx, cli, "dsl", "new.yaml", validPolicy(1))
	if err != nil || p.Revision != 0 || p.Diff != nil || p.NewHash == "" {
		t.Fatalf("dry run on an empty group: %+v %v", p, err)
	}
	r1 := mustPush(t, cli, "dsl", validPolicy(1), "alice@noc", 0)
	p, err = DryRun(ctx, cli, "dsl", "new.yaml", validPolicy(2))
	if err != nil {
		t.Fatal(err)
	}
	// validPolicy(2) passes 203.0.113.2/32 instead of .1/32: both outside every
	// other range, so both pass before and after: no verdict changes, but each
	// moves between business-static and the default (its counters with it).
	if p.Revision != r1 || p.OldHash == p.NewHash || p.Diff == nil || len(p.Diff.Changes) != 0 || len(p.Diff.Moved) != 2 {
		t.Fatalf("plan: %+v", p)
	}
	changed := bytes.Replace(validPolicy(1), []byte("verdict: reset"), []byte("verdict: drop"), 1)
	p, err = DryRun(ctx, cli, "dsl", "new.yaml", changed)
	if err != nil || p.Diff.Empty() || p.Diff.Changes[0].Prefix.String() != "100.64.0.0/12" {
		t.Fatalf("plan of reset -> drop: %+v %v", p.Diff, err)
	}
	if _, err := DryRun(ctx, cli, "dsl", "new.yaml", invalidPolicy); err == nil || !strings.Contains(err.Error(), "new.yaml:6:") {
		t.Fatalf("dry run of an invalid file: %v, want new.yaml:6:", err)
	}
}

// A group whose current policy does not compile (put by hand, or by a newer
// portcullis) is no obstacle to pushing a good one over it: the dry run says why
// there is no diff, and the push goes ahead with the compare-and-swap.
func TestDryRunOverBrokenPolicy(t *testing.T) {
	_, raw, cli := newFleet(t)
	ctx := ctxT(t)
	mustPush(t, cli, "dsl", validPolicy(1), "alice@noc", 0)
	put, err := raw.Put(ctx, cli.policyKey("dsl"), string(invalidPolicy))
	if err != nil {
		t.Fatal(err)
	}
	broken := put.Header.Revision
	p, err := DryRun(ctx, cli, "dsl", "fix.yaml", validPolicy(2))
	if err != nil {
		t.Fatalf("dry run over a broken policy: %v", err)
	}
	if p.Revision != broken || p.OldErr == nil || !strings.Contains(p.OldErr.Error(), Origin("dsl", broken)+":6:") || p.Diff != nil || p.New == nil {
		t.Fatalf("plan over a broken policy: %+v", p)
	}
	rev, err := Push(ctx, cli, "dsl", validPolicy(2), "bob@noc", "fix", p.Revision)
	if err != nil {
		t.Fatalf("pushing the fix: %v", err)
	}
	if text, got, _ := Read(ctx, cli, "dsl"); got != rev || !bytes.Equal(text, validPolicy(2)) {
		t.Fatalf("after the fix: revision %d, want %d", got, rev)
	}
}

// A history record that is not one (put by hand with etcdctl: routers may not write
// history) must not stop the NOC from pushing or rolling back, nor hide the other
// records; and history survives compaction and defragmentation together.
func TestHistoryWithADamagedRecord(t *testing.T) {
	srv, raw, cli := newFleet(t)
	ctx := ctxT(t)
	r1 := mustPush(t, cli, "dsl", validPolicy(1), "alice@noc", 0)
	// The last record damaged, and a key that is no record number at all.
	bad := cli.recordKey("dsl", 2)
	if _, err := raw.Put(ctx, bad, "{not json"); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Put(ctx, cli.historyKey("dsl")+"zzz-notes", "hand-written"); err != nil {
		t.Fatal(err)
	}
	r3, err := Push(ctx, cli, "dsl", validPolicy(3), "bob@noc", "after the damage", r1)
	if err != nil {
		t.Fatalf("a push after a damaged history record: %v", err)
	}
	resp, err := raw.Compact(ctx, r3)
	if err != nil || resp == nil {
		t.Fatal(err)
	}
	for _, ep := range srv.Endpoints {
		if _, err := raw.Defragment(ctx, ep); err != nil {
			t.Fatal(err)
		}
	}
	hist, err := History(ctx, cli, "dsl")
	if !errors.Is(err, ErrDamagedRecord) || !strings.Contains(err.Error(), bad) {
		t.Errorf("History with a damaged record: %v, want ErrDamagedRecord naming %s", err, bad)
	}
	if len(hist) != 2 || hist[0].Revision != r3 || hist[0].Seq != 3 || hist[1].Revision != r1 || hist[1].Seq != 1 {
		t.Fatalf("the good records: %+v", hist)
	}
	r4, err := Rollback(ctx, cli, "dsl", r1, "carol@noc", r3)
	if err != nil {
		t.Fatalf("a rollback with a damaged record in the history: %v", err)
	}
	if text, rev, _ := Read(ctx, cli, "dsl"); rev != r4 || !bytes.Equal(text, validPolicy(1)) {
		t.Fatalf("after the rollback: revision %d, want %d with revision %d's text", rev, r4, r1)
	}
	if _, err := Rollback(ctx, cli, "dsl", r4+50, "carol@noc", r4); !errors.Is(err, ErrNoRevision) {
		t.Fatalf("rollback to an unknown revision: %v", err)
	}
}

// A policy naming a list file (cidrs_file) cannot be pushed: a router would read it
// from its own file system (a file the NOC never saw, or one that is not a list).
// The refusal has the position and the fix; nothing is written.
func TestPushRefusesCIDRsFile(t *testing.T) {
	_, _, cli := newFleet(t)
	ctx := ctxT(t)
	text := append(validPolicy(1), "  - {name: listed, verdict: drop, cidrs_file: /etc/passwd}\n"...)
	_, err := Push(ctx, cli, "dsl", text, "alice@noc", "", 0)
	if err == nil || !strings.Contains(err.Error(), "etcd:dsl:") || !strings.Contains(err.Error(), "list the prefixes under cidrs") {
		t.Fatalf("a push with cidrs_file: %v", err)
	}
	if _, rev, _ := Read(ctx, cli, "dsl"); rev != 0 {
		t.Fatalf("written at revision %d", rev)
	}
}
