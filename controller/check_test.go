package controller

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/portcullis/portcullis/internal/testutil"
)

// CheckFirst, without the kernel, refuses what Start could not apply on a first start:
// a broken or missing file, a scope naming an interface not configured, unless an
// override kept from an earlier run applies; with etcd there is nothing to check.
func TestCheckFirst(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.yaml", testutil.PolicyA)
	bad := write("bad.yaml", "version: 1\nranges:\n  - {name: dyn, verdict: block, cidrs: [100.64.0.0/10]}\n")
	scoped := write("scoped.yaml", "version: 1\nranges:\n  - {name: dyn, verdict: reset, cidrs: [100.64.0.0/10], interfaces: [eth9]}\n")
	now := time.Now()
	cfg := func(pol string) Config {
		return Config{Interfaces: []string{"eth1"}, Policy: pol, Store: filepath.Join(dir, "store", "runtime.db")}
	}
	if err := CheckFirst(cfg(good), now); err != nil {
		t.Fatalf("good policy: %v", err)
	}
	for _, tc := range []struct{ file, want string }{
		{bad, bad + ":3:26: verdict \"block\""},
		{scoped, "eth9"},
		{filepath.Join(dir, "absent.yaml"), filepath.Join(dir, "absent.yaml") + ": no such file"},
	} {
		if err := CheckFirst(cfg(tc.file), now); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.file, err, tc.want)
		}
	}
	etcd := cfg(bad)
	etcd.Source = SourceEtcd
	if err := CheckFirst(etcd, now); err != nil {
		t.Errorf("etcd: %v, want nothing to check", err)
	}

	// An override kept beside the store is what Start applies first: a good one
	// makes a broken file no obstacle; a broken one falls back on the file.
	c := &Controller{cfg: cfg(bad)}
	if err := c.saveOverride(&Override{File: "emergency.yaml", Who: "uid:0", At: now, Policy: []byte(testutil.PolicyA)}); err != nil {
		t.Fatal(err)
	}
	if err := CheckFirst(cfg(bad), now); err != nil {
		t.Errorf("a good override and a broken file: %v", err)
	}
	if err := c.saveOverride(&Override{File: "emergency.yaml", Who: "uid:0", At: now, Policy: []byte("version: 7\n")}); err != nil {
		t.Fatal(err)
	}
	if err := CheckFirst(cfg(good), now); err != nil {
		t.Errorf("a broken override and a good file: %v", err)
	}
	if err := CheckFirst(cfg(bad), now); err == nil || !strings.Contains(err.Error(), "override") || !strings.Contains(err.Error(), bad+":3:26") {
		t.Errorf("a broken override and a broken file: %v, want both named", err)
	}
}
