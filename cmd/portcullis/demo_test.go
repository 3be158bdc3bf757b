package main

import (
	"strings"
	"testing"

	"github.com/portcullis/portcullis/testenv"
)

// TestDemo runs the demo as a user would, with the built-in example policy.
func TestDemo(t *testing.T) {
	requireRoot(t)
	out, errs, code := runCmd("demo")
	if code != 0 {
		t.Fatalf("demo: exit %d\n%s\n%s", code, out, errs)
	}
	for _, want := range []string{"examples/policy.yaml (built in)", "All 42 attempts ended as the policy says",
		"Ports 465/587: 28 of 28 delivered", "reset (range dsl-dynamic 100.64.0.0/12)", "drop (range mobile-dynamic",
		"pass (exemption bakery-mail", "reset (quarantine 198.51.100.66/32)", "Offenders"} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	for _, h := range testenv.DefaultHosts {
		if strings.Count(out, "\n"+h.Name+" ") != 6 {
			t.Errorf("demo output: want 6 rows for %s:\n%s", h.Name, out)
		}
	}
}

// TestDemoMismatch: a policy whose RST budget (one per CPU, refilled once a second) is
// smaller than the three reset-range hosts that try port 25 at the same moment: some
// SYNs are dropped instead of answered, the clients time out where the policy's verdict
// says refused, and the demo says so and exits 1.
func TestDemoMismatch(t *testing.T) {
	requireRoot(t)
	p := writeFile(t, `version: 1
reset: {rate: 1, burst: 1}
ranges:
  - {name: pool, verdict: reset, cidrs: [100.64.0.0/10, 198.51.100.0/24, 2001:db8::/32]}
`)
	out, errs, code := runCmd("demo", "--mode", "generic", "--policy", p)
	if code != 1 || !strings.Contains(out, "<-- MISMATCH: policy says refused") || !strings.Contains(errs, "did not end as the policy says") {
		t.Fatalf("demo with a starved RST budget: exit %d\n%s\n%s", code, out, errs)
	}
}

func TestDemoErrors(t *testing.T) {
	if _, errs, code := runCmd("demo", "--mode", "turbo"); code != 2 || !strings.Contains(errs, `unknown XDP mode "turbo"`) {
		t.Errorf("bad mode: exit %d, %q", code, errs)
	}
	bad := writeFile(t, "version: 1\nranges:\n  - name: a\n    verdict: blok\n    cidrs: [100.64.0.0/10]\n")
	if _, errs, code := runCmd("demo", "--policy", bad); code != 2 || !strings.Contains(errs, bad+":4:14:") {
		t.Errorf("bad policy: exit %d, %q", code, errs)
	}
	defer func(f func() int) { geteuid = f }(geteuid)
	geteuid = func() int { return 1000 }
	if _, errs, code := runCmd("demo"); code != 2 || !strings.Contains(errs, "needs root") || !strings.Contains(errs, "sudo make demo") {
		t.Errorf("not root: exit %d, %q", code, errs)
	}
}
