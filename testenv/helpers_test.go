package testenv_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/portcullis/portcullis/internal/testutil"
	"github.com/portcullis/portcullis/loader"
	"github.com/portcullis/portcullis/policy"
	"github.com/portcullis/portcullis/testenv"
)

var modes = []testenv.Mode{testenv.Native, testenv.Generic}

// compile parses and compiles a policy written in a test.
func compile(t testing.TB, yaml string, now time.Time) *policy.Compiled {
	t.Helper()
	pol, err := policy.Parse("test.yaml", []byte(yaml), now)
	if err != nil {
		t.Fatalf("policy: %v\n%s", err, yaml)
	}
	c, err := policy.Compile(pol, now)
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	return c
}

// setup loads the program, applies c (if not nil) and builds a topology in mode with
// the program attached. Everything is torn down by t.Cleanup.
func setup(t testing.TB, mode testenv.Mode, c *policy.Compiled) (*testenv.Topology, *loader.Program) {
	t.Helper()
	return setupWith(t, mode, c, nil)
}

// setupWith is setup with the hosts given (nil: testenv.DefaultHosts).
func setupWith(t testing.TB, mode testenv.Mode, c *policy.Compiled, hosts []testenv.HostSpec) (*testenv.Topology, *loader.Program) {
	t.Helper()
	testutil.RequireRoot(t)
	p, err := loader.Load()
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	if c != nil {
		if err := p.Apply(c.Tables); err != nil {
			t.Fatalf("Apply: %v", err)
		}
	}
	top, err := testenv.New(testenv.Options{Mode: mode, XDP: p.XDP(), Hosts: hosts})
	if err != nil {
		t.Fatalf("topology: %v", err)
	}
	t.Cleanup(func() {
		if err := top.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return top, p
}

// e2ePolicy is examples/policy.yaml's shape with addresses for every host of the
// topology in both families, quarantines that lift at quarantineEnds, and the
// smarthost (smtp.isp.test) as a relay.
func e2ePolicy(quarantineEnds time.Time) string {
	return e2eBase(quarantineEnds) + relaySection("")
}

// e2eBase is e2ePolicy without its relays section.
func e2eBase(quarantineEnds time.Time) string {
	return fmt.Sprintf(`version: 1
default: pass
reset: {rate: 1000, burst: 200}
ranges:
  - name: dsl-dynamic
    verdict: reset
    cidrs: [100.64.0.0/12, 2001:db8:1000::/36]
  - name: mobile-dynamic
    verdict: drop
    cidrs: [100.96.0.0/11, 2001:db8:4000::/34]
  - name: wifi-hotspots
    verdict: monitor
    cidrs: [100.80.0.0/16, 2001:db8:c000::/36]
  - name: business-static
    verdict: pass
    cidrs: [198.51.100.0/24, 2001:db8:8000::/40]
exemptions:
  - {cidr: 100.64.12.25/32, name: mail-v4, reason: registered mail server, ticket: T-1}
  - {cidr: 2001:db8:1000:42::25/128, name: mail-v6, reason: registered mail server, ticket: T-1}
quarantines:
  - {cidr: 198.51.100.66/32, name: quar-v4, verdict: reset, reason: spam, ticket: T-2, expires: %[1]s}
  - {cidr: 2001:db8:8000:1::66/128, name: quar-v6, verdict: reset, reason: spam, ticket: T-2, expires: %[1]s}
`, quarantineEnds.UTC().Format(time.RFC3339))
}
