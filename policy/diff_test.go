package policy

import (
	"slices"
	"strings"
	"testing"
)

// diff reports, besides verdicts, what changes how the router enforces and counts:
// a rename or a move between ranges of the same verdict (the counters move), an
// expiry, the RST budget, protected ports and the runtime: bounds. A policy that
// differs only in order and spelling, defaults written out included, diffs empty.
func TestDiffBeyondVerdicts(t *testing.T) {
	const base = `version: 1
ranges:
  - {name: dsl, verdict: reset, cidrs: [100.64.0.0/12]}
  - {name: ftth, verdict: reset, cidrs: [100.80.0.0/12]}
exemptions:
  - {cidr: 100.64.1.25, name: mail, reason: r, ticket: T, expires: 2027-06-30}
quarantines:
  - {cidr: 198.51.100.66, verdict: drop, reason: r, ticket: T, expires: 2027-03-31}
runtime:
  unblock:
    forbidden_in: [dsl, ftth]
`
	const spelled = `version: 1
governed_ports: [25]
protected_ports: [587, 465]
reset: {rate: 1000, burst: 200}
quarantines:
  - {cidr: "::ffff:198.51.100.66", verdict: drop, reason: other, ticket: U, expires: "2027-03-31T00:00:00Z"}
exemptions:
  - {cidr: 100.64.1.25/32, name: mail, reason: r, owner: o, expires: 2027-06-30T00:00:00Z}
ranges:
  - {name: ftth, verdict: reset, cidrs: [100.80.0.0/12]}
  - {name: dsl, verdict: reset, cidrs: [100.64.0.0/12]}
runtime:
  quarantine: {terms: [1h, 4h, 24h], memory: 30d, verdict: reset, max: 365d, forbidden_in: []}
  unblock: {default: 30d, max: 365d, widest_ipv4: 24, widest_ipv6: 48, forbidden_in: [ftth, dsl]}
`
	old := mustCompile(t, mustParse(t, base))
	if d := Diff(old, mustCompile(t, mustParse(t, spelled)), testNow); !d.Empty() {
		t.Errorf("spelling only: %+v", d)
	}
	cases := []struct {
		name, from, to string
		moved, other   []string // "prefix old -> new", lines of Other
	}{
		{name: "rename", from: "ftth", to: "fibre", moved: []string{"100.80.0.0/12 ftth -> fibre"}, other: []string{"runtime.unblock.forbidden_in [dsl, ftth] -> [dsl, fibre]"}},
		{name: "move", from: "cidrs: [100.80.0.0/12]", to: "cidrs: [192.0.2.0/24]}\n  - {name: x, verdict: pass, cidrs: [203.0.113.0/24]}\n  - {name: dsl2, verdict: reset, cidrs: [100.80.0.0/12]"},
		{name: "quarantine expiry", from: "expires: 2027-03-31", to: "expires: 2027-04-30",
			moved: []string{"198.51.100.66/32 quarantine 198.51.100.66/32 (until 2027-03-31T00:00:00Z) -> quarantine 198.51.100.66/32 (until 2027-04-30T00:00:00Z)"}},
		{name: "exemption expiry", from: "expires: 2027-06-30", to: "expires: 2027-12-31",
			moved: []string{"100.64.1.25/32 mail (until 2027-06-30T00:00:00Z) -> mail (until 2027-12-31T00:00:00Z)"}},
		{name: "rst budget", from: "version: 1\n", to: "version: 1\nreset: {rate: 10}\n", other: []string{"RST budget 1000/s per CPU, burst 200 -> 10/s per CPU, burst 200"}},
		{name: "protected", from: "version: 1\n", to: "version: 1\nprotected_ports: [465]\n", other: []string{"protected ports [465 587] -> [465]"}},
		{name: "runtime", from: "forbidden_in: [dsl, ftth]", to: "forbidden_in: [dsl]\n    max: 90d",
			other: []string{"runtime.unblock.max 365d -> 90d", "runtime.unblock.forbidden_in [dsl, ftth] -> [dsl]"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			src := strings.ReplaceAll(base, c.from, c.to)
			d := Diff(old, mustCompile(t, mustParse(t, src)), testNow)
			if d.Empty() {
				t.Fatalf("empty diff")
			}
			if c.name == "move" {
				c.moved = []string{"100.80.0.0/12 ftth -> dsl2", "203.0.113.0/24 default -> x"}
			}
			var moved []string
			for _, m := range d.Moved {
				if m.Old != m.New {
					t.Errorf("moved %v changes verdict", m)
				}
				moved = append(moved, m.Prefix.String()+" "+m.OldRule+" -> "+m.NewRule)
			}
			if !slices.Equal(moved, c.moved) {
				t.Errorf("moved %q, want %q", moved, c.moved)
			}
			if !slices.Equal(d.Other, c.other) {
				t.Errorf("other %q, want %q", d.Other, c.other)
			}
		})
	}
}
