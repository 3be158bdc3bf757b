package policy

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/portcullis/portcullis/model"
)

const scopedPolicy = `version: 1
governed_ports: [25, 2525]
ranges:
  - {name: dyn, verdict: reset, cidrs: [100.64.0.0/12]}
  - {name: partner, verdict: pass, cidrs: [100.64.1.0/24], interfaces: [whl0]}
  - {name: partner-b, verdict: drop, cidrs: [100.64.1.0/24], interfaces: [whl1, whl2]}
  - {name: customer, verdict: pass, cidrs: [100.64.1.200/32]}
exemptions:
  - {cidr: 100.64.2.25, reason: mail server, ticket: T-1, interfaces: [acc0]}
quarantines:
  - {cidr: 100.64.3.66/32, verdict: drop, reason: spam, owner: abuse, expires: 2027-01-01, interfaces: [acc0]}
relays:
  - name: smarthost
    cidrs: [192.0.2.26, 2001:db8:ffff::26/128]
    reason: our smarthost
    owner: mail
  - name: mx-in
    cidrs: [192.0.2.128/25]
    ports: [2525]
    quarantined: block
    reason: inbound MX
    ticket: NOC-1
`

func TestRelaysAndScopesParse(t *testing.T) {
	pol, err := Parse("p.yaml", []byte(scopedPolicy), testNow)
	if err != nil {
		t.Fatal(err)
	}
	if got := pol.Interfaces(); !slices.Equal(got, []string{"acc0", "whl0", "whl1", "whl2"}) {
		t.Errorf("interfaces %v", got)
	}
	c := mustCompile(t, pol)
	if len(c.Tables.Relays) != 3 {
		t.Fatalf("relays %+v", c.Tables.Relays)
	}
	cases := []struct {
		src, dst string
		port     uint16
		iface    string
		want     model.Verdict
		relay    bool
	}{
		{"100.64.1.10", "192.0.2.25", 25, "whl0", model.Pass, false},
		{"100.64.1.10", "192.0.2.25", 25, "whl1", model.Drop, false},
		{"100.64.1.10", "192.0.2.25", 25, "whl2", model.Drop, false},
		{"100.64.1.10", "192.0.2.25", 25, "acc0", model.Reset, false},
		{"100.64.1.10", "192.0.2.25", 25, "", model.Reset, false},
		{"100.64.1.200", "192.0.2.25", 25, "whl1", model.Pass, false},
		{"100.64.2.25", "192.0.2.25", 25, "acc0", model.Pass, false},
		{"100.64.2.25", "192.0.2.25", 25, "whl0", model.Reset, false},
		{"100.64.3.66", "192.0.2.25", 25, "acc0", model.Drop, false},
		{"100.64.3.66", "192.0.2.25", 25, "whl0", model.Reset, false},
		{"100.64.1.10", "192.0.2.26", 25, "acc0", model.Pass, true},
		{"100.64.3.66", "192.0.2.26", 25, "acc0", model.Pass, true},
		{"100.64.3.66", "192.0.2.130", 2525, "acc0", model.Drop, false},
		{"100.64.3.66", "192.0.2.130", 2525, "whl0", model.Pass, true},
		{"100.64.1.10", "192.0.2.130", 25, "acc0", model.Reset, false},
	}
	for _, tc := range cases {
		s, relay := c.Tables.Decide(addr_(tc.src), addr_(tc.dst), tc.port, tc.iface, testNow)
		if s.Verdict != tc.want || relay != tc.relay {
			t.Errorf("%s -> %s:%d on %q: %v (relay %v), want %v (relay %v)", tc.src, tc.dst, tc.port, tc.iface, s.Verdict, relay, tc.want, tc.relay)
		}
		ex := c.Explain(Query{Src: addr_(tc.src), Dst: addr_(tc.dst), Port: tc.port, Interface: tc.iface}, testNow)
		if ex.Verdict != tc.want {
			t.Errorf("explain %s -> %s:%d on %q: %v, want %v (%s)", tc.src, tc.dst, tc.port, tc.iface, ex.Verdict, tc.want, ex.Reason)
		}
		if tc.relay != (ex.Decider.Kind == model.KindRelay) {
			t.Errorf("explain %s -> %s on %q: decided by %s %q", tc.src, tc.dst, tc.iface, ex.Decider.Kind, ex.Decider.Name)
		}
	}
	ex := c.Explain(Query{Src: addr_("100.64.1.10"), Dst: addr_("192.0.2.26"), Port: 25}, testNow)
	if ex.Decider.Name != "smarthost" || ex.Decider.Pos.Line != 14 || !strings.Contains(ex.Reason, `relay "smarthost"`) {
		t.Errorf("explain names %+v: %s", ex.Decider, ex.Reason)
	}
	ex = c.Explain(Query{Src: addr_("100.64.1.10"), Port: 25, Interface: "whl0"}, testNow)
	if ex.Decider.Name != "partner" || !strings.Contains(ex.Reason, "scoped to whl0") {
		t.Errorf("explain on whl0: %+v: %s", ex.Decider, ex.Reason)
	}
	var others []string
	for _, l := range ex.Losers {
		if l.OtherInterfaces {
			others = append(others, l.Name)
		}
	}
	if !slices.Equal(others, []string{"partner-b"}) {
		t.Errorf("losers scoped elsewhere: %v", others)
	}
}

func TestRelayAndScopeErrors(t *testing.T) {
	relay := func(body string) string {
		return "version: 1\nrelays:\n  - {name: r, reason: x, owner: y, " + body + "}\n"
	}
	cases := []struct{ name, src, want string }{
		{"everything", relay("cidrs: [0.0.0.0/0]"), "relay 0.0.0.0/0 would let every source send to the whole address space"},
		{"broad v4", relay("cidrs: [10.0.0.0/8]"), `relay 10.0.0.0/8 is wider than /16`},
		{"broad v6", relay("cidrs: [2001:db8::/31]"), `relay 2001:db8::/31 is wider than /32`},
		{"ungoverned port", relay("cidrs: [192.0.2.26], ports: [587]"), "port 587 is not governed"},
		{"too many ports", "version: 1\ngoverned_ports: [25, 26, 27, 28, 29, 30, 31, 32, 33]\nrelays:\n  - {name: r, reason: x, owner: y, cidrs: [192.0.2.26], ports: [25, 26, 27, 28, 29, 30, 31, 32, 33]}\n", "a relay lists at most 8 ports"},
		{"bad quarantined", relay("cidrs: [192.0.2.26], quarantined: maybe"), `quarantined "maybe" is not pass or block`},
		{"no reason", "version: 1\nrelays:\n  - {name: r, owner: y, cidrs: [192.0.2.26]}\n", "relay is missing reason"},
		{"same prefix twice", "version: 1\nrelays:\n  - {name: r, reason: x, owner: y, cidrs: [192.0.2.26, 192.0.2.26/32]}\n", "relay prefix 192.0.2.26/32 appears twice"},
		{"empty interfaces", "version: 1\nranges:\n  - {name: a, verdict: drop, cidrs: [192.0.2.0/24], interfaces: []}\n", "interfaces is empty"},
		{"bad interface", "version: 1\nranges:\n  - {name: a, verdict: drop, cidrs: [192.0.2.0/24], interfaces: [eth0/1]}\n", `"eth0/1" is not an interface name`},
		{"long interface", "version: 1\nranges:\n  - {name: a, verdict: drop, cidrs: [192.0.2.0/24], interfaces: [abcdefghijklmnop]}\n", "at most 15"},
		{"overlapping scopes", "version: 1\nranges:\n  - {name: a, verdict: drop, cidrs: [192.0.2.0/24], interfaces: [eth1, eth2]}\n  - {name: b, verdict: pass, cidrs: [192.0.2.0/24], interfaces: [eth2]}\n", "192.0.2.0/24 appears twice on the same interfaces"},
		{"scoped and unscoped", "version: 1\nranges:\n  - {name: a, verdict: drop, cidrs: [192.0.2.0/24]}\n  - {name: b, verdict: pass, cidrs: [192.0.2.0/24], interfaces: [eth2]}\n", "appears twice on the same interfaces"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("p.yaml", []byte(c.src), testNow)
			var es Errors
			if !errors.As(err, &es) || len(es) != 1 {
				t.Fatalf("err %v, want one error", err)
			}
			if !strings.Contains(es[0].Error(), c.want) {
				t.Errorf("%q, want %q", es[0].Error(), c.want)
			}
		})
	}
	// Broad with the flag, disjoint scopes: accepted.
	for _, ok := range []string{
		relay("cidrs: [10.0.0.0/8], broad: true"),
		"version: 1\nranges:\n  - {name: a, verdict: drop, cidrs: [192.0.2.0/24], interfaces: [eth1]}\n  - {name: b, verdict: pass, cidrs: [192.0.2.0/24], interfaces: [eth2]}\n",
	} {
		if _, err := Parse("p.yaml", []byte(ok), testNow); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	// A relay narrowing the ports of one around it is a warning.
	pol, err := Parse("p.yaml", []byte("version: 1\ngoverned_ports: [25, 2525]\nrelays:\n  - {name: a, reason: x, owner: y, cidrs: [192.0.2.0/24]}\n  - {name: b, reason: x, owner: y, cidrs: [192.0.2.26], ports: [2525]}\n"), testNow)
	if err != nil || len(pol.Warnings) != 1 || !strings.Contains(pol.Warnings[0].Msg, "the most specific relay decides") {
		t.Errorf("narrowing relay: %v, warnings %v", err, pol)
	}
}

func TestCheckInterfaces(t *testing.T) {
	pol, err := Parse("p.yaml", []byte(scopedPolicy), testNow)
	if err != nil {
		t.Fatal(err)
	}
	if err := pol.CheckInterfaces([]string{"acc0", "whl0", "whl1", "whl2", "eth9"}, "the daemon"); err != nil {
		t.Errorf("all attached: %v", err)
	}
	err = pol.CheckInterfaces([]string{"acc0", "whl0", "whl1", "wh12"}, "portcullis.yaml")
	var es Errors
	if !errors.As(err, &es) || len(es) != 1 || !strings.Contains(es[0].Error(), "p.yaml:6:5: range \"partner-b\" is scoped to interface whl2, which portcullis.yaml does not attach to") {
		t.Errorf("missing whl2: %v", err)
	}
}

// TestPlanEqualsModel: the data plane's group tables (ScopePlan, looked up in the
// program's order) give the same answer as LookupSourceOn for random policies with
// scopes, addresses and interfaces.
func TestPlanEqualsModel(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 11))
	ifaces := []string{"a", "b", "c", "d"}
	for round := 0; round < 200; round++ {
		pol := randomPolicy(r)
		// Scope some of the ranges and exemptions; duplicate a few prefixes on
		// disjoint interfaces.
		for i := range pol.Ranges {
			if r.IntN(2) == 0 {
				pol.Ranges[i].Scope = randomScope(r, ifaces)
			}
		}
		for i := range pol.Exemptions {
			if r.IntN(3) == 0 {
				pol.Exemptions[i].Scope = randomScope(r, ifaces)
			}
		}
		c, err := Compile(pol, testNow)
		if err != nil {
			t.Fatal(err)
		}
		plan := c.Tables.Plan()
		for _, a := range sampleAddrs(r, c) {
			for _, ifname := range append(ifaces, "") {
				want := c.Tables.LookupSourceOn(a, ifname, testNow)
				got := planLookup(c.Tables, plan, a, ifname)
				if got != want {
					t.Fatalf("round %d: %s on %q: plan %+v, model %+v", round, a, ifname, got, want)
				}
			}
		}
	}
}

func randomScope(r *rand.Rand, ifaces []string) Scope {
	var s Scope
	for _, i := range ifaces {
		if r.IntN(2) == 0 {
			s = append(s, i)
		}
	}
	if s == nil {
		s = Scope{ifaces[r.IntN(len(ifaces))]}
	}
	return s
}

// planLookup does what the program does with a ScopePlan.
func planLookup(t *model.Tables, plan model.ScopePlan, a netip.Addr, ifname string) model.Source {
	g := plan.Groups[ifname]
	lookup := func(es []model.GroupEntry, group uint32, unscoped []model.Entry) (model.Entry, bool) {
		if group != 0 {
			var sel []model.Entry
			for _, e := range es {
				if e.Group == group {
					sel = append(sel, e.Entry)
				}
			}
			if e, ok := longestMatch(sel, a, ifname); ok {
				return e, true
			}
		}
		var un []model.Entry
		for _, e := range unscoped {
			if e.Interfaces == nil {
				un = append(un, e)
			}
		}
		return longestMatch(un, a, "")
	}
	if e, ok := lookup(plan.Quarantines, g, t.Quarantines); ok && (e.Expires.IsZero() || testNow.Before(e.Expires)) {
		return model.Source{Rule: e.Rule, Verdict: e.Verdict, Quarantine: true}
	}
	if e, ok := lookup(plan.Ranges, g, t.Ranges); ok {
		return model.Source{Rule: e.Rule, Verdict: e.Verdict}
	}
	return model.Source{Rule: 0, Verdict: t.DefaultVerdict}
}

func TestDiffScopesAndRelays(t *testing.T) {
	a := mustCompile(t, mustParse(t, "version: 1\nranges:\n  - {name: dyn, verdict: reset, cidrs: [100.64.0.0/12]}\n"))
	b := mustCompile(t, mustParse(t, scopedPolicy))
	d := Diff(a, b, testNow)
	// Addresses per (interface, old > new, deciding entry): the /24 splits around the
	// customer's /32, which changes the same way everywhere and is listed once.
	got := map[string]int{}
	for _, ch := range d.Changes {
		k := ch.Interface + " " + ch.Old.String() + ">" + ch.New.String() + " " + ch.NewRule
		got[k] += 1 << (32 - ch.Prefix.Bits())
	}
	want := map[string]int{
		"whl0 reset>pass partner":                   255,
		"whl1 reset>drop partner-b":                 255,
		"whl2 reset>drop partner-b":                 255,
		" reset>pass customer":                      1,
		"acc0 reset>pass exemption 100.64.2.25/32":  1,
		"acc0 reset>drop quarantine 100.64.3.66/32": 1,
	}
	if len(got) != len(want) {
		t.Errorf("changes %v, want %v", got, want)
	}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("%q: %d addresses, want %d (all: %v)", k, got[k], n, got)
		}
	}
	if len(d.Relays) != 3 || d.Relays[0].Old != "" || !strings.Contains(d.Relays[0].New, `relay "smarthost"`) {
		t.Errorf("relay changes %+v", d.Relays)
	}
	if d.Empty() {
		t.Error("diff says empty")
	}
}

func mustParse(t *testing.T, src string) *Policy {
	t.Helper()
	p, err := Parse("p.yaml", []byte(src), testNow)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// A range's prefixes may come from a list file beside the policy: one per line,
// comments allowed, errors at file:line; a missing file is an error at the key.
func TestCIDRsFile(t *testing.T) {
	dir := t.TempDir()
	pol := filepath.Join(dir, "policy.yaml")
	list := filepath.Join(dir, "pools", "dsl.txt")
	if err := os.MkdirAll(filepath.Dir(list), 0o755); err != nil {
		t.Fatal(err)
	}
	src := "version: 1\nranges:\n  - name: dsl\n    verdict: reset\n    cidrs_file: pools/dsl.txt\n    cidrs: [2001:db8:1000::/36]\n"
	write := func(p, s string) {
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(pol, src)
	write(list, "# DSL pools, exported from the IPAM\n100.64.0.0/12\n\n100.80.0.0/16   # FTTH\n  100.81.1.1\n")
	p, err := ParseFile(pol, testNow)
	if err != nil {
		t.Fatal(err)
	}
	c := mustCompile(t, p)
	if len(c.Tables.Ranges) != 4 {
		t.Fatalf("ranges %+v", c.Tables.Ranges)
	}
	// A policy from etcd has no directory on the router: a list file is an error
	// there, even one that exists relative to where the router runs.
	if _, err := ParseInline("etcd:dsl@7", []byte(src), testNow); err == nil || !strings.Contains(err.Error(), "etcd:dsl@7:5:17: cidrs_file cannot be used") {
		t.Errorf("cidrs_file in a policy from etcd: %v", err)
	}
	ex := c.Explain(Query{Src: addr_("100.80.3.3"), Port: 25}, testNow)
	if ex.Decider.Pos.String() != list+":4:1" {
		t.Errorf("explain names %s", ex.Decider.Pos)
	}
	write(list, "100.64.0.0/12\n100.64.0.1/12\n300.1.1.1\n")
	_, err = ParseFile(pol, testNow)
	var es Errors
	if !errors.As(err, &es) || len(es) != 2 {
		t.Fatalf("errors: %v", err)
	}
	for i, want := range []string{list + ":2:1: 100.64.0.1/12 has host bits set", list + ":3:1: \"300.1.1.1\" is not an address"} {
		if !strings.HasPrefix(es[i].Error(), want) {
			t.Errorf("error %d: %q, want %q", i, es[i].Error(), want)
		}
	}
	write(list, "100.64.0.0/12\n# again\n100.64.0.0/12\n")
	if _, err := ParseFile(pol, testNow); err == nil || !strings.HasPrefix(err.Error(), list+":3:1: 100.64.0.0/12 appears twice: here in range \"dsl\" and at "+list+":1:1") {
		t.Errorf("duplicate in the list: %v", err)
	}
	write(pol, strings.Replace(src, "pools/dsl.txt", "pools/missing.txt", 1))
	if _, err := ParseFile(pol, testNow); err == nil || !strings.Contains(err.Error(), "policy.yaml:5:17: "+filepath.Join(dir, "pools/missing.txt")+": no such file") {
		t.Errorf("missing list: %v", err)
	}
	write(pol, src)
	write(list, strings.Repeat("not a prefix\n", 100))
	if _, err := ParseFile(pol, testNow); !errors.As(err, &es) || len(es) != MaxListErrors+1 {
		t.Errorf("a file of the wrong kind: %d errors", len(es))
	}
}

// longestMatch is the entry with the longest prefix containing a among those that
// apply on ifname, found by brute force (independent of the model's index).
func longestMatch(es []model.Entry, a netip.Addr, ifname string) (best model.Entry, found bool) {
	for _, e := range es {
		if e.Prefix.Contains(a) && e.AppliesOn(ifname) && (!found || e.Prefix.Bits() > best.Prefix.Bits()) {
			best, found = e, true
		}
	}
	return best, found
}
