package controller

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/portcullis/portcullis/internal/testutil"
	"github.com/portcullis/portcullis/loader"
	"github.com/portcullis/portcullis/model"
	"github.com/portcullis/portcullis/overlay"
)

// offerSource is a configured source fed by the test (standing for etcd).
type offerSource struct{ ch chan Offer }

func (s offerSource) Name() string                        { return SourceEtcd }
func (s offerSource) Offers(context.Context) <-chan Offer { return s.ch }

// waitFor polls cond until it holds, failing after a generous deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// With etcd as the configured source: nothing to apply before the first offer; each
// revision applied is kept beside the store and shown in status; a refused revision
// leaves the last good one in force and shows as the last error; an override
// outranks etcd, whose offers then wait and apply on release; and a controller
// started again (etcd unreachable) applies the last revision kept.
func TestEtcdSourceKeepsLastGood(t *testing.T) {
	testutil.RequireRoot(t)
	prog, err := loader.Load()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prog.Close() })
	store := filepath.Join(t.TempDir(), "runtime.db")
	open := func() *Controller {
		cfg := Config{AuditLog: filepath.Join(t.TempDir(), "audit.jsonl"), Store: store, Source: SourceEtcd,
			EtcdHealth: func() EtcdHealth { return EtcdHealth{Connected: true} }}
		d, err := New(cfg, prog, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		d.OpenStore()
		t.Cleanup(func() { d.audit.Close() })
		return d
	}
	d := open()
	if res := d.Start(); res.Outcome != "waiting" || prog.HasPolicy() {
		t.Fatalf("start without an etcd policy: %s %v (policy loaded: %v)", res.Outcome, res.Err, prog.HasPolicy())
	}
	ctx, cancel := context.WithCancel(context.Background())
	src, over := offerSource{make(chan Offer)}, NewOverrideSource()
	done := make(chan struct{})
	go func() { d.Run(ctx, src, over); close(done) }()
	stop := func() {
		cancel()
		<-done
		d.store.Close()
	}
	offer := func(rev int64, text string) {
		src.ch <- Offer{Who: "etcd:alice", File: "etcd:dsl@" + strconv.FormatInt(rev, 10), Policy: []byte(text), Revision: rev}
	}
	revision := func() int64 { return d.Snapshot().Source.Etcd.Revision }

	offer(7, testutil.PolicyA)
	waitFor(t, "revision 7 in force", func() bool { return revision() == 7 })
	st := d.Snapshot()
	if st.Source.InForce != SourceEtcd || st.Policy != "etcd:dsl@7" || st.Source.Etcd.Health == nil || !st.Source.Etcd.Health.Connected {
		t.Fatalf("status after revision 7: %+v", st.Source)
	}
	if got := judge(t, d, "100.64.1.25"); got != model.ActionPass {
		t.Fatalf("exempt host under revision 7: %v", got)
	}

	bad := strings.Replace(testutil.PolicyA, "verdict: drop,", "verdict: block,", 1)
	offer(8, bad)
	waitFor(t, "revision 8 refused", func() bool { return d.Snapshot().LastError != nil })
	if st := d.Snapshot(); st.Source.Etcd.Revision != 7 || st.Source.Etcd.Offered != 8 || !strings.Contains(st.LastError.Error, "etcd:dsl@8:") {
		t.Fatalf("after a bad revision: etcd %+v, last error %+v", st.Source.Etcd, st.LastError)
	}

	if res := over.Apply("emergency.yaml", []byte(testutil.PolicyB), "uid:0"); res.Err != nil {
		t.Fatal(res.Err)
	}
	if st := d.Snapshot(); st.Source.InForce != SourceOverride || st.Source.Etcd.Revision != 0 || st.Source.Etcd.LastApplied != 7 {
		t.Fatalf("with the override in force: %+v %+v", st.Source, st.Source.Etcd)
	}
	// A release while etcd offers only a revision that does not apply: refused, and
	// the override stands (its policy is what is enforced).
	offer(9, bad)
	waitFor(t, "the bad revision 9 pending", func() bool { return d.Snapshot().Source.Etcd.Offered == 9 })
	if res := over.Release("uid:0"); res.Err == nil || !strings.Contains(res.Err.Error(), "the override stays in force") {
		t.Fatalf("release onto a bad revision: %s %v", res.Outcome, res.Err)
	}
	if st := d.Snapshot(); st.Source.InForce != SourceOverride || st.Source.Override == nil {
		t.Fatalf("after a refused release: %+v", st.Source)
	}
	if got := judge(t, d, "100.64.1.25"); got != model.ActionDrop {
		t.Fatalf("the override's policy after a refused release: %v", got)
	}
	offer(10, testutil.PolicyA)
	waitFor(t, "revision 10 pending", func() bool { return d.Snapshot().Source.Etcd.Offered == 10 })
	if got := judge(t, d, "100.64.1.25"); got != model.ActionDrop {
		t.Fatalf("the override must stay in force over etcd's revision 10: %v", got)
	}
	if res := over.Release("uid:0"); res.Err != nil || revision() != 10 {
		t.Fatalf("release: %s %v, revision %d", res.Outcome, res.Err, revision())
	}
	if got := judge(t, d, "100.64.1.25"); got != model.ActionPass {
		t.Fatalf("revision 10 after release: %v", got)
	}
	offer(11, testutil.PolicyB)
	waitFor(t, "revision 11 in force", func() bool { return revision() == 11 })
	stop()

	// Started again with etcd unreachable: revision 11 is what it enforces, from disk.
	d = open()
	if res := d.Start(); res.Err != nil || (res.Outcome != "applied" && res.Outcome != "unchanged") {
		t.Fatalf("start with a kept revision: %s %v", res.Outcome, res.Err)
	}
	if st := d.Snapshot(); st.Source.Etcd.Revision != 11 || st.Policy != "etcd:dsl@11" {
		t.Fatalf("after a restart: %+v %s", st.Source.Etcd, st.Policy)
	}
	if got := judge(t, d, "100.64.1.25"); got != model.ActionDrop {
		t.Fatalf("revision 11 after a restart: %v", got)
	}
	d.store.Close()
}

// An override is kept with the list files it was applied with: a restart applies the
// same policy even when a list file has gone since, and runtime entries go on working.
// One that no longer passes the checks at a start is put aside
// (override.json.rejected) and the configured file applied; it does not come back by
// itself at a later start.
func TestOverrideKeepsItsListFiles(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(file, []byte(testutil.PolicyA), 0o644); err != nil {
		t.Fatal(err)
	}
	list := filepath.Join(dir, "listed.txt")
	if err := os.WriteFile(list, []byte("100.64.0.0/10\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	emergency := filepath.Join(dir, "emergency.yaml")
	overrideText := []byte("version: 1\nranges:\n  - {name: listed, verdict: drop, cidrs_file: listed.txt}\n")
	store := filepath.Join(dir, "store", "runtime.db")
	open, load := fileControllers(t, file, store)
	prog := load()
	d := open(prog)
	if res := d.Start(); res.Err != nil {
		t.Fatal(res.Err)
	}
	if res := d.ApplyOverride(emergency, overrideText, "uid:0"); res.Err != nil {
		t.Fatal(res.Err)
	}
	if got := judge(t, d, "100.64.1.25"); got != model.ActionDrop {
		t.Fatalf("under the override: %v", got)
	}
	d.store.Close()

	// Started again, on the pinned program and on a fresh one, the list file gone: the
	// override applies as it was, and a runtime entry can be added.
	if err := os.Remove(list); err != nil {
		t.Fatal(err)
	}
	for _, p := range []*loader.Program{prog, load()} {
		d = open(p)
		res := d.Start()
		if st := d.Snapshot(); res.Err != nil || st.Source.InForce != SourceOverride {
			t.Fatalf("restart without the override's list file: %s %v; source %+v", res.Outcome, res.Err, st.Source)
		}
		if got := judge(t, d, "100.64.1.25"); got != model.ActionDrop {
			t.Fatalf("the override's policy after the restart: %v", got)
		}
		if _, err := d.AddEntry(overlay.Request{Kind: overlay.Quarantine, Prefix: netip.MustParsePrefix("198.51.100.9/32"), Reason: "spam", Who: "uid:0"}); err != nil {
			t.Fatalf("a runtime entry under the kept override: %v", err)
		}
		d.store.Close()
	}

	// An override that no longer passes the checks (as a later version might find):
	// the configured file, and the override put aside for good.
	var o Override
	if _, err := readJSONFile(d.overridePath(), &o); err != nil {
		t.Fatal(err)
	}
	o.Policy = []byte("version: 7\n")
	if err := writeJSONFile(d.overridePath(), &o); err != nil {
		t.Fatal(err)
	}
	d = open(prog)
	if res := d.Start(); res.Err != nil || d.Snapshot().Source.InForce != SourceFile {
		t.Fatalf("an override that no longer applies: %s %v, %+v", res.Outcome, res.Err, d.Snapshot().Source)
	}
	if got := judge(t, d, "100.64.1.25"); got != model.ActionPass {
		t.Fatalf("the configured file's policy: %v", got)
	}
	if _, err := os.Stat(d.overridePath() + ".rejected"); err != nil {
		t.Fatalf("the override is not kept aside: %v", err)
	}
	d.store.Close()
	d = open(prog)
	if res := d.Start(); res.Err != nil || d.Snapshot().Source.InForce != SourceFile {
		t.Fatalf("the put-aside override came back: %s %v, %+v", res.Outcome, res.Err, d.Snapshot().Source)
	}
}

// A configured policy file that disappears is logged once (the policy in force
// stays), and one that comes back is offered.
func TestFileSourceGone(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(path, []byte(testutil.PolicyA), 0o644); err != nil {
		t.Fatal(err)
	}
	logs := &testutil.SyncBuffer{}
	s := NewFileSource(path, 5*time.Millisecond, slog.New(slog.NewTextHandler(logs, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	offers := s.Offers(ctx)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the file logged as gone", func() bool { return strings.Contains(logs.String(), "the policy file is gone") })
	time.Sleep(50 * time.Millisecond) // ten more checks: still one message
	if n := strings.Count(logs.String(), "the policy file is gone"); n != 1 {
		t.Fatalf("logged %d times:\n%s", n, logs.String())
	}
	if err := os.WriteFile(path, []byte(testutil.PolicyB), 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case o := <-offers:
		if o.Who != "file" || o.File != path {
			t.Fatalf("offer %+v", o)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the file that came back was not offered")
	}
}

// Runtime unblocks longer than /24 each hold one of the data plane's groups
// (model.MaxLongIPv4Blocks). When they push a policy that fits on its own over the
// limit: with a policy in force the change is refused, saying that the unblocks hold
// the groups; at a first start (nothing in force: after a reboot or detach) the newest
// unblocks that do not fit are suspended, with a history event, and the rest applied:
// a start never leaves nothing enforced because of runtime entries.
func TestUnblocksThatDoNotFitAtStart(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "policy.yaml")
	statics := func(n int) string {
		var b strings.Builder
		b.WriteString("version: 1\nranges:\n  - {name: dsl, verdict: reset, cidrs: [100.64.0.0/10]}\n  - name: statics\n    verdict: pass\n    cidrs:\n")
		for i := range n {
			fmt.Fprintf(&b, "      - 10.%d.%d.1\n", i>>8, i&255)
		}
		return b.String()
	}
	const max = model.MaxLongIPv4Blocks
	if err := os.WriteFile(file, []byte(statics(max-2)), 0o644); err != nil {
		t.Fatal(err)
	}
	store := filepath.Join(dir, "store", "runtime.db")
	open, load := fileControllers(t, file, store)
	prog := load()
	d := open(prog)
	if res := d.Start(); res.Err != nil {
		t.Fatal(res.Err)
	}
	unblock := func(a string) overlay.Request {
		return overlay.Request{Kind: overlay.Unblock, Prefix: netip.MustParsePrefix(a + "/32"), Reason: "opt-out", Who: "api:portal"}
	}
	for _, a := range []string{"100.64.200.7", "100.64.201.7"} { // the last two groups
		if _, err := d.AddEntry(unblock(a)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := d.AddEntry(unblock("100.64.202.7")); !errors.Is(err, loader.ErrTooManyGroups) {
		t.Fatalf("an unblock past the last group: %v", err)
	}

	// A policy edit that fits on its own (one more /32 in a new /24), with the policy
	// in force: refused, and the message says what holds the groups.
	if err := os.WriteFile(file, []byte(statics(max-1)), 0o644); err != nil {
		t.Fatal(err)
	}
	res := d.applyFile(file, "signal")
	if res.Err == nil || !strings.Contains(res.Err.Error(), fmt.Sprintf("the policy holds IPv4 ranges longer than /24 in %d /24s, and runtime unblocks longer than /24 need 2 more", max-1)) {
		t.Fatalf("the edit with the unblocks in force: %s %v", res.Outcome, res.Err)
	}
	if got := judge(t, d, "100.64.201.7"); got != model.ActionPass {
		t.Fatalf("the unblocks stay in force: %v", got)
	}
	d.store.Close()

	// A first start (a fresh program: nothing pinned) with that policy file: the newest
	// unblock is suspended, the older one and the policy are enforced.
	d = open(load())
	if res := d.Start(); res.Err != nil {
		t.Fatalf("first start: %s %v", res.Outcome, res.Err)
	}
	if got := judge(t, d, "100.64.200.7"); got != model.ActionPass {
		t.Errorf("the older unblock: %v, want pass", got)
	}
	if got := judge(t, d, "100.64.201.7"); got != model.ActionTX {
		t.Errorf("the suspended unblock: %v, want the policy's reset", got)
	}
	st := d.Snapshot()
	if len(d.overlay.Entries) != 1 {
		t.Errorf("entries after the start: %+v", d.overlay.Entries)
	}
	last := d.overlay.History[len(d.overlay.History)-1]
	if last.Action != overlay.Suspended || last.Entry.Prefix != netip.MustParsePrefix("100.64.201.7/32") || !strings.Contains(last.Reason, "no room in the data plane") {
		t.Errorf("history: %+v (status %+v)", last, st.Source)
	}
}

// fileControllers returns open, which makes a controller of policy file file and store
// store on a program (a second one on the same program stands for the daemon started
// again over its pins), and load, which loads a fresh program (a first start).
func fileControllers(t *testing.T, file, store string) (open func(*loader.Program) *Controller, load func() *loader.Program) {
	open = func(prog *loader.Program) *Controller {
		cfg := Config{AuditLog: filepath.Join(t.TempDir(), "audit.jsonl"), Store: store, Policy: file}
		d, err := New(cfg, prog, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		d.OpenStore()
		t.Cleanup(func() { d.audit.Close(); d.store.Close() })
		return d
	}
	load = func() *loader.Program {
		prog, err := loader.Load()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { prog.Close() })
		return prog
	}
	return open, load
}

// An override that cannot be written (the disk is full: the temporary file is
// /dev/full here, which fails every write with ENOSPC, as a full file system does) is
// said to be applied but not kept, and the override kept before stays on disk intact:
// a restart applies that one, not an empty file taken for damaged and the configured
// file in its place.
func TestOverrideOnAFullDisk(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(file, []byte(testutil.PolicyA), 0o644); err != nil {
		t.Fatal(err)
	}
	store := filepath.Join(dir, "store", "runtime.db")
	open, load := fileControllers(t, file, store)
	prog := load()
	d := open(prog)
	if res := d.Start(); res.Err != nil {
		t.Fatal(res.Err)
	}
	first := []byte("version: 1\nranges:\n  - {name: emergency, verdict: drop, cidrs: [100.64.0.0/10]}\n")
	if res := d.ApplyOverride(filepath.Join(dir, "emergency.yaml"), first, "uid:0"); res.Err != nil {
		t.Fatal(res.Err)
	}
	kept, err := os.ReadFile(d.overridePath())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/dev/full", d.overridePath()+".new"); err != nil {
		t.Fatal(err)
	}
	second := []byte("version: 1\nranges:\n  - {name: emergency2, verdict: reset, cidrs: [100.64.0.0/10]}\n")
	res := d.ApplyOverride(filepath.Join(dir, "emergency2.yaml"), second, "uid:0")
	if res.Err == nil || !strings.Contains(res.Err.Error(), "will not survive a restart") || !strings.Contains(res.Err.Error(), "no space left on device") {
		t.Fatalf("an override that could not be written: %v, want the write's error and that it will not survive a restart", res.Err)
	}
	if got, err := os.ReadFile(d.overridePath()); err != nil || !bytes.Equal(got, kept) {
		t.Fatalf("the override kept before was replaced (%d bytes, was %d; %v)", len(got), len(kept), err)
	}
	os.Remove(d.overridePath() + ".new")
	d.store.Close()

	d = open(prog)
	if res := d.Start(); res.Err != nil {
		t.Fatal(res.Err)
	}
	if st := d.Snapshot(); st.Source.InForce != SourceOverride || st.Policy != filepath.Join(dir, "emergency.yaml") {
		t.Fatalf("after the restart: source %+v, file %s; want the override kept before", st.Source, st.Policy)
	}
	if got := judge(t, d, "100.64.1.25"); got != model.ActionDrop {
		t.Fatalf("after the restart: %v, want the kept override's drop", got)
	}
}
