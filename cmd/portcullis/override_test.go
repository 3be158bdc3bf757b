package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/portcullis/portcullis/status"
)

// `apply` on a full disk (the override's temporary file is /dev/full: ENOSPC on every
// write): the policy is applied and in force but not kept; the CLI says exactly that,
// exits 1, and does not claim the old policy stays.
func TestApplyNotKeptOnAFullDisk(t *testing.T) {
	l := newLab(t)
	l.start()
	l.expect(25, "refused")
	emergency := filepath.Join(l.dir, "emergency.yaml")
	write(t, emergency, "version: 1\nranges:\n  - {name: emergency, verdict: drop, cidrs: [100.64.0.0/10]}\n")
	if err := os.Symlink("/dev/full", filepath.Join(filepath.Dir(l.store), "override.json.new")); err != nil {
		t.Fatal(err)
	}
	out, stderr, code := l.cli("apply", "--config", l.cfg, emergency)
	if code != 1 || !strings.Contains(stderr, "no space left on device") || !strings.Contains(stderr, "applied and in force") || strings.Contains(stderr, "not applied") {
		t.Fatalf("apply on a full disk: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, stderr)
	}
	if !strings.Contains(out, "applied: ") {
		t.Errorf("apply did not show what was applied:\n%s", out)
	}
	st, _, _ := l.cli("status", "--json", "--config", l.cfg)
	var s status.Status
	if err := json.Unmarshal([]byte(st), &s); err != nil || s.Policy != emergency {
		t.Fatalf("status after apply: %v\n%s", err, st)
	}
	l.expect(25, "timeout")
}
