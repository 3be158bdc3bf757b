package controller

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/portcullis/portcullis/internal/testutil"
	"github.com/portcullis/portcullis/loader"
	"github.com/portcullis/portcullis/model"
	"github.com/portcullis/portcullis/overlay"
	"github.com/portcullis/portcullis/store"
	"golang.org/x/sys/unix"
)

const policyRuntime = testutil.PolicyA + `runtime:
  quarantine: {terms: [1h, 4h], verdict: drop}
  unblock: {max: 90d, forbidden_in: [mobile]}
`

func quarantine(p, reason string) overlay.Request {
	return overlay.Request{Kind: overlay.Quarantine, Prefix: netip.MustParsePrefix(p), Reason: reason, Ticket: "AB-1", Who: "uid:0"}
}

// Runtime entries through the daemon: each one is stored, written into the live
// program, and proved; releases undo it; repeats escalate; the policy's bounds hold.
func TestRuntimeEntries(t *testing.T) {
	d := testController(t)
	if res := d.Apply("a.yaml", []byte(policyRuntime), "file"); res.Err != nil {
		t.Fatal(res.Err)
	}
	if got := judge(t, d, "100.64.9.9"); got != model.ActionTX {
		t.Fatalf("before: %v", got)
	}
	e, err := d.AddEntry(quarantine("100.64.9.9/32", "spam run"))
	if err != nil {
		t.Fatal(err)
	}
	if got := judge(t, d, "100.64.9.9"); got != model.ActionDrop {
		t.Errorf("quarantined (drop): %v", got)
	}
	if e.Expires.Sub(e.Added) != time.Hour {
		t.Errorf("first term %v", e.Expires.Sub(e.Added))
	}
	// An unblock inside the dynamic range passes; one in the mobile range is refused.
	if _, err := d.AddEntry(overlay.Request{Kind: overlay.Unblock, Prefix: netip.MustParsePrefix("100.64.7.7/32"), Reason: "asked", Who: "api:portal"}); err != nil {
		t.Fatal(err)
	}
	if got := judge(t, d, "100.64.7.7"); got != model.ActionPass {
		t.Errorf("unblocked: %v", got)
	}
	_, err = d.AddEntry(overlay.Request{Kind: overlay.Unblock, Prefix: netip.MustParsePrefix("100.96.1.1/32"), Reason: "asked", Who: "api:portal"})
	if !errors.Is(err, overlay.ErrForbidden) {
		t.Errorf("unblock in the mobile range: %v", err)
	}
	if got := judge(t, d, "100.96.1.1"); got != model.ActionDrop {
		t.Errorf("refused unblock changed the data plane: %v", got)
	}
	// A policy change carries the entries along.
	if res := d.Apply("b.yaml", []byte(strings.Replace(policyRuntime, "name: mobile, verdict: drop", "name: mobile, verdict: reset", 1)), "file"); res.Err != nil {
		t.Fatal(res.Err)
	}
	if got := judge(t, d, "100.64.9.9"); got != model.ActionDrop {
		t.Errorf("quarantine after a policy change: %v", got)
	}
	// Release, then a repeat quarantine escalates.
	if err := d.ReleaseEntry(e.Key(), "uid:0", "cleaned"); err != nil {
		t.Fatal(err)
	}
	if got := judge(t, d, "100.64.9.9"); got != model.ActionTX {
		t.Errorf("released: %v", got)
	}
	if err := d.ReleaseEntry(e.Key(), "uid:0", ""); !errors.Is(err, overlay.ErrNotFound) {
		t.Errorf("release twice: %v", err)
	}
	e2, err := d.AddEntry(quarantine("100.64.9.9/32", "again"))
	if err != nil || e2.Level != 1 || e2.Expires.Sub(e2.Added) != 4*time.Hour {
		t.Fatalf("repeat: %+v %v", e2, err)
	}
	// Durable: the store holds what is in force, and the history.
	d.store.Close()
	st, err := store.Open(d.cfg.Store, false)
	if err != nil {
		t.Fatal(err)
	}
	state, err := st.Load()
	st.Close()
	if err != nil || len(state.Entries) != 2 || len(state.History) != 4 {
		t.Fatalf("stored: %+v %v", state, err)
	}
	if d.store, err = store.Open(d.cfg.Store, false); err != nil {
		t.Fatal(err)
	}
	// Nested quarantines are refused.
	if _, err := d.AddEntry(quarantine("100.64.9.0/24", "block")); !errors.Is(err, overlay.ErrInvalid) {
		t.Errorf("nested quarantine: %v", err)
	}
}

// A daemon started again over the same program finds its entries in the store; with
// the store damaged, it reports it, keeps what the data plane enforces (recovered
// from it) and refuses runtime changes; with the store gone, it recovers them too.
func TestRuntimeStoreRestart(t *testing.T) {
	testutil.RequireRoot(t)
	prog, err := loader.Load()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prog.Close() })
	dir := t.TempDir()
	path := filepath.Join(dir, "runtime.db")
	d := testControllerOn(t, prog, path)
	if res := d.Apply("a.yaml", []byte(policyRuntime), "file"); res.Err != nil {
		t.Fatal(res.Err)
	}
	if _, err := d.AddEntry(quarantine("100.64.9.9/32", "spam run")); err != nil {
		t.Fatal(err)
	}
	d.store.Close()
	d.store = nil

	// Started again: the entry is there, the data plane unchanged, the policy adopted.
	d2 := testControllerOn(t, prog, path)
	if res := d2.Apply("a.yaml", []byte(policyRuntime), "file"); res.Err != nil || res.Outcome != "unchanged" {
		t.Fatalf("restart: %s %v", res.Outcome, res.Err)
	}
	if es := d2.Entries(); len(es) != 1 || es[0].Prefix.String() != "100.64.9.9/32" {
		t.Fatalf("entries after restart: %+v", es)
	}
	if _, err := d2.AddEntry(quarantine("100.64.9.10/32", "more")); err != nil {
		t.Fatalf("add after restart: %v", err)
	}
	d2.store.Close()
	d2.store = nil

	// Damaged: reported, enforcement kept, changes refused.
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := 4096; i < len(data); i += 97 {
		data[i] ^= 0x5a
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	d3 := testControllerOn(t, prog, path)
	if d3.storeErr == nil || !errors.Is(d3.storeErr, ErrStoreFailed) {
		t.Fatalf("damaged store not reported: %v", d3.storeErr)
	}
	if res := d3.Apply("a.yaml", []byte(policyRuntime), "file"); res.Err != nil {
		t.Fatal(res.Err)
	}
	if got := judge(t, d3, "100.64.9.9"); got != model.ActionDrop {
		t.Errorf("with the store damaged the quarantine is not enforced: %v", got)
	}
	if len(d3.Entries()) != 2 {
		t.Errorf("recovered entries: %+v", d3.Entries())
	}
	// An unreadable store has not lost its entries: what it holds is not known, so
	// status says that it cannot be read (StoreError), not that entries were lost.
	if d3.storeLost != "" {
		t.Errorf("a store that cannot be read is reported as having lost entries: %q", d3.storeLost)
	}
	for _, e := range d3.Entries() {
		if e.Reason != "found in the data plane; the store cannot be read" {
			t.Errorf("recovered from the data plane with the store unreadable: reason %q", e.Reason)
		}
	}
	if _, err := d3.AddEntry(quarantine("100.64.9.11/32", "more")); !errors.Is(err, ErrStoreFailed) {
		t.Errorf("add with the store damaged: %v", err)
	}
	if st := d3.Snapshot(); st.Runtime.StoreError == "" {
		t.Errorf("status does not report the damaged store: %+v", st.Runtime)
	}

	// Gone: a fresh store, the entries recovered from the data plane and reported.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	d4 := testControllerOn(t, prog, path)
	if d4.storeErr != nil || d4.storeLost == "" || len(d4.Entries()) != 2 {
		t.Fatalf("lost store: err %v lost %q entries %+v", d4.storeErr, d4.storeLost, d4.Entries())
	}
	// The recovery is in the history as the store holds it, before any restart.
	if h := d4.History(netip.Prefix{}); len(h) != 2 || h[0].Who != recoveredBy || h[0].Action != overlay.Added {
		t.Errorf("history after the recovery: %+v", h)
	}
	if res := d4.Apply("a.yaml", []byte(policyRuntime), "file"); res.Err != nil {
		t.Fatal(res.Err)
	}
	if got := judge(t, d4, "100.64.9.10"); got != model.ActionDrop {
		t.Errorf("recovered quarantine not enforced: %v", got)
	}
}

// Releasing the policy's own quarantine (not a runtime entry) says where it is written.
func TestReleasePolicyQuarantine(t *testing.T) {
	d := testController(t)
	if res := d.Apply("q.yaml", []byte(policyRuntime), "file"); res.Err != nil { // PolicyA quarantines 198.51.100.66
		t.Fatal(res.Err)
	}
	err := d.ReleaseEntry(overlay.Key{Kind: overlay.Quarantine, Prefix: netip.MustParsePrefix("198.51.100.66/32")}, "uid:0", "")
	if !errors.Is(err, overlay.ErrNotFound) || !strings.Contains(err.Error(), "it is the policy's quarantine (q.yaml:") {
		t.Fatalf("release of the policy's quarantine: %v", err)
	}
}

var errCrash = errors.New("the daemon died here")

// A daemon that dies in the middle of a release (kill -9, a power cut) leaves the
// data plane and the store agreeing at the next start: the unblock is still an entry
// and still in force (the release was never answered: it is asked again), not a
// "lost store" whose entries are recovered from the data plane — which brought a
// withdrawn unblock back for a day with an alarm that the store had lost it.
func TestReleaseInterruptedByACrash(t *testing.T) {
	testutil.RequireRoot(t)
	// The daemon's pins on a bpffs of the test's own, so that a second program
	// loaded from them stands for the daemon started again.
	bpffs := t.TempDir()
	if err := unix.Mount("bpf", bpffs, "bpf", 0, "mode=0700"); err != nil {
		t.Fatalf("mounting bpffs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(bpffs, unix.MNT_DETACH); err != nil {
			t.Errorf("unmounting the test's bpffs: %v", err)
		}
	})
	pins := filepath.Join(bpffs, "portcullis")
	if err := os.Mkdir(pins, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { loader.Unpin(pins) })
	prog, err := loader.LoadPinned(pins)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "runtime.db")
	d := testControllerOn(t, prog, path)
	if res := d.Apply("a.yaml", []byte(policyRuntime), "file"); res.Err != nil {
		t.Fatal(res.Err)
	}
	ub := overlay.Request{Kind: overlay.Unblock, Prefix: netip.MustParsePrefix("100.64.7.7/32"), Reason: "asked", Who: "api:portal"}
	e, err := d.AddEntry(ub)
	if err != nil {
		t.Fatal(err)
	}
	d.crashPoint = func() { panic(errCrash) }
	func() {
		defer func() {
			if r := recover(); r != errCrash {
				t.Fatalf("the release did not reach the crash point: %v", r)
			}
		}()
		d.ReleaseEntry(e.Key(), "api:portal", "opt-out withdrawn")
	}()
	d.store.Close() // the process is gone: nothing more is written
	d.store = nil
	prog.Close()

	prog2, err := loader.LoadPinned(pins)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prog2.Close() })
	d2 := testControllerOn(t, prog2, path)
	if res := d2.Apply("a.yaml", []byte(policyRuntime), "file"); res.Err != nil {
		t.Fatal(res.Err)
	}
	if d2.storeLost != "" {
		t.Errorf("the interrupted release was taken for a lost store: %s", d2.storeLost)
	}
	es := d2.Entries()
	if len(es) != 1 || es[0].Who != "api:portal" {
		t.Fatalf("entries after the restart: %+v", es)
	}
	if got := judge(t, d2, "100.64.7.7"); got != model.ActionPass {
		t.Errorf("the unblock the store holds is not in force: %v", got)
	}
	// Asked again, the release is done in both.
	if err := d2.ReleaseEntry(e.Key(), "api:portal", "opt-out withdrawn"); err != nil {
		t.Fatal(err)
	}
	if got := judge(t, d2, "100.64.7.7"); got != model.ActionTX {
		t.Errorf("released: %v", got)
	}
}

// A policy change whose quarantine would nest with a live runtime quarantine is
// refused, naming both and the way out, as a runtime quarantine that would nest with
// the policy's is: otherwise the inner one's end lifts the outer one for its addresses
// (the data plane checks the most specific quarantine only).
func TestPolicyQuarantineNestsWithRuntime(t *testing.T) {
	d := testController(t)
	if res := d.Apply("a.yaml", []byte(policyRuntime), "file"); res.Err != nil {
		t.Fatal(res.Err)
	}
	if _, err := d.AddEntry(quarantine("100.64.9.9/32", "spam run")); err != nil {
		t.Fatal(err)
	}
	nested := strings.Replace(policyRuntime, "quarantines:\n", "quarantines:\n  - {cidr: 100.64.9.0/24, verdict: drop, reason: botnet, owner: noc, expires: 2099-01-01}\n", 1)
	res := d.Apply("b.yaml", []byte(nested), "file")
	if res.Err == nil || res.Outcome != "rejected" || !strings.Contains(res.Err.Error(), "the policy's quarantine 100.64.9.0/24 (b.yaml:") ||
		!strings.Contains(res.Err.Error(), "overlaps the runtime quarantine 100.64.9.9/32") || !strings.Contains(res.Err.Error(), "release the runtime quarantines first") {
		t.Fatalf("a policy nesting with a runtime quarantine: %s %v", res.Outcome, res.Err)
	}
	if got := judge(t, d, "100.64.9.10"); got != model.ActionTX {
		t.Errorf("the refused policy is in force: %v", got)
	}
	// Released, the policy applies.
	if err := d.ReleaseEntry(overlay.Key{Kind: overlay.Quarantine, Prefix: netip.MustParsePrefix("100.64.9.9/32")}, "uid:0", "cleaned"); err != nil {
		t.Fatal(err)
	}
	if res := d.Apply("b.yaml", []byte(nested), "file"); res.Err != nil || res.Outcome != "applied" {
		t.Fatalf("after the release: %s %v", res.Outcome, res.Err)
	}
}
