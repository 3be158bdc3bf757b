package controller

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/portcullis/portcullis/internal/testutil"
	"github.com/portcullis/portcullis/loader"
	"github.com/portcullis/portcullis/model"
)

// testController is a controller on a private (unpinned, unattached) program: enough
// for the policy path (apply, proof, rollback, audit).
func testController(t *testing.T) *Controller {
	t.Helper()
	testutil.RequireRoot(t)
	prog, err := loader.Load()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prog.Close() })
	return testControllerOn(t, prog, filepath.Join(t.TempDir(), "runtime.db"))
}

// testControllerOn is testController on a given program and store: a second one on the
// same program stands for the daemon started again over its pinned maps.
func testControllerOn(t *testing.T, prog *loader.Program, storePath string) *Controller {
	t.Helper()
	cfg := Config{AuditLog: filepath.Join(t.TempDir(), "audit.jsonl"), Store: storePath}
	d, err := New(cfg, prog, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.audit.Close() })
	d.OpenStore()
	t.Cleanup(func() {
		if d.store != nil {
			d.store.Close()
		}
	})
	return d
}

func judge(t *testing.T, d *Controller, src string) model.Action {
	t.Helper()
	f, err := probeFrame(netip.MustParseAddr(src), probeDsts4[0], 25)
	if err != nil {
		t.Fatal(err)
	}
	act, _, err := d.prog.Run(f)
	if err != nil {
		t.Fatal(err)
	}
	return act
}

func audit(t *testing.T, d *Controller) []AuditRecord {
	t.Helper()
	f, err := os.Open(d.cfg.AuditLog)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []AuditRecord
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r AuditRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		out = append(out, r)
	}
	return out
}

func TestApplyProveAndReject(t *testing.T) {
	d := testController(t)
	res := d.Apply("a.yaml", []byte(testutil.PolicyA), "file")
	if res.Err != nil || res.Outcome != "applied" {
		t.Fatalf("apply A: %s %v", res.Outcome, res.Err)
	}
	if res.Proof.Probes == 0 || !res.Proof.OK() {
		t.Fatalf("proof of A: %+v", res.Proof)
	}
	if got := judge(t, d, "100.64.1.25"); got != model.ActionPass {
		t.Fatalf("exempt host under A: %v", got)
	}
	// An invalid policy: positioned errors, nothing changes.
	bad := strings.Replace(testutil.PolicyA, "verdict: drop, cidrs: [100.96.0.0/11]", "verdict: block, cidrs: [100.96.0.0/11]", 1)
	res = d.Apply("bad.yaml", []byte(bad), "uid:0")
	if res.Outcome != "rejected" || res.Err == nil || !strings.Contains(res.Err.Error(), "bad.yaml:5:29: verdict \"block\"") {
		t.Fatalf("bad policy: %s %v", res.Outcome, res.Err)
	}
	if got := judge(t, d, "100.96.0.1"); got != model.ActionDrop {
		t.Fatalf("after a rejected policy the mobile range gives %v, want drop (A still in force)", got)
	}
	if st := d.Snapshot(); st.LastError == nil || st.LastError.Who != "uid:0" || st.LastError.Outcome != "rejected" ||
		!strings.Contains(st.LastError.Error, "bad.yaml:5:29") || st.LastChange != st.LastError {
		t.Fatalf("status after a rejected policy: last error %+v, last change %+v", st.LastError, st.LastChange)
	}
	res = d.Apply("b.yaml", []byte(testutil.PolicyB), "signal")
	if res.Outcome != "applied" || res.Diff == nil || res.Diff.Blocks == 0 {
		t.Fatalf("apply B: %+v", res)
	}
	if st := d.Snapshot(); st.LastError != nil || st.LastChange == nil || st.LastChange.Outcome != "applied" || st.LastChange.Hash != res.NewHash {
		t.Fatalf("status after B applied: last error %+v, last change %+v", st.LastError, st.LastChange)
	}
	if got := judge(t, d, "100.64.1.25"); got != model.ActionDrop {
		t.Fatalf("former exempt host under B: %v, want drop", got)
	}
	recs := audit(t, d)
	var results []string
	for _, r := range recs {
		results = append(results, r.Who+":"+r.Result)
	}
	if got, want := strings.Join(results, " "), "file:applied uid:0:rejected signal:applied"; got != want {
		t.Fatalf("audit %q, want %q", got, want)
	}
	if recs[2].OldHash != recs[0].NewHash || recs[2].NewHash == recs[0].NewHash {
		t.Fatalf("audit hashes: %+v", recs)
	}
	if d.meta.LoadFailures != 1 {
		t.Fatalf("load failures %d, want 1", d.meta.LoadFailures)
	}
}

// A program that disagrees with the model fails the proof and the previous policy
// comes back.
func TestProofFailureRollsBack(t *testing.T) {
	d := testController(t)
	if res := d.Apply("a.yaml", []byte(testutil.PolicyA), "file"); res.Err != nil {
		t.Fatal(res.Err)
	}
	// The program gets B with the mobile range turned to pass; the model judges B.
	d.tamper = func(t *model.Tables) *model.Tables {
		c := *t
		c.Ranges = append([]model.Entry(nil), t.Ranges...)
		for i, e := range c.Ranges {
			if e.Prefix.String() == "100.96.0.0/11" {
				c.Ranges[i].Verdict = model.Pass
			}
		}
		return &c
	}
	res := d.Apply("b.yaml", []byte(testutil.PolicyB), "uid:0")
	if res.Outcome != "rolled-back" || res.Err == nil || !strings.Contains(res.Err.Error(), " port 25: program XDP_PASS, model XDP_DROP") {
		t.Fatalf("tampered B: %s %v", res.Outcome, res.Err)
	}
	if got := judge(t, d, "100.64.1.25"); got != model.ActionPass {
		t.Fatalf("after rollback the exempt host gives %v, want pass (A back in force)", got)
	}
	if got := judge(t, d, "100.64.9.9"); got != model.ActionTX {
		t.Fatalf("after rollback the dynamic range gives %v, want tx (A's reset)", got)
	}
	if d.meta.ProofFailures != 1 || d.meta.ProofOK {
		t.Fatalf("meta %+v", d.meta)
	}
	recs := audit(t, d)
	if last := recs[len(recs)-1]; last.Result != "rolled-back" || last.Who != "uid:0" {
		t.Fatalf("audit %+v", last)
	}
}

// Proof probes leave production counters alone.
func TestProofLeavesCountersAlone(t *testing.T) {
	d := testController(t)
	for range 3 {
		if res := d.Apply("a.yaml", []byte(testutil.PolicyA), "file"); res.Err != nil {
			t.Fatal(res.Err)
		}
		if res := d.Apply("b.yaml", []byte(testutil.PolicyB), "file"); res.Err != nil {
			t.Fatal(res.Err)
		}
	}
	cs, err := d.prog.Counters()
	if err != nil {
		t.Fatal(err)
	}
	offs, _ := d.prog.Offenders()
	if len(cs) != 0 || len(offs) != 0 {
		t.Fatalf("after six proofs: counters %v, offenders %v", cs, offs)
	}
}

// A huge policy proves within a bounded number of probes and time.
func TestProofBounded(t *testing.T) {
	d := testController(t)
	var b strings.Builder
	b.WriteString("version: 1\nranges:\n  - name: big\n    verdict: drop\n    cidrs:\n")
	for i := range 100000 {
		fmt.Fprintf(&b, "      - 10.%d.%d.%d/32\n", i>>16, i>>8&255, i&255)
	}
	res := d.Apply("big.yaml", []byte(b.String()), "file")
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	// Each address to 4 ports; the default's and the one rule's 4 addresses also through
	// the raw-IP entry point.
	if res.Proof.Probes > (2*(proofEntries+3)+4)*4 {
		t.Fatalf("%d probes for a 100k-prefix policy", res.Proof.Probes)
	}
	t.Logf("100k prefixes: %d probes in %v", res.Proof.Probes, res.Proof.Took)
}
