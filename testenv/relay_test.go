package testenv_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/portcullis/portcullis/internal/testutil"
	"github.com/portcullis/portcullis/loader"
	"github.com/portcullis/portcullis/model"
	"github.com/portcullis/portcullis/policy"
	"github.com/portcullis/portcullis/testenv"
)

// patientTimeout bounds a connection attempt that the policy says will be answered
// (delivered or refused): far above anything veth needs, so that a loaded machine
// cannot turn an answer into a timeout. Attempts the policy says are dropped use
// dialTimeout; a drop where an answer was expected still shows, as a timeout.
const patientTimeout = 5 * time.Second

// runAll carries out attempts, each with the timeout its expectation calls for.
func runAll(top *testenv.Topology, attempts []testenv.Attempt) []testenv.Attempt {
	var quick, patient []testenv.Attempt
	for _, a := range attempts {
		if a.Expect == testenv.TimedOut {
			quick = append(quick, a)
		} else {
			patient = append(patient, a)
		}
	}
	top.Run(quick, dialTimeout)
	top.Run(patient, patientTimeout)
	return append(quick, patient...)
}

// relaySection lists smtp.isp.test as a relay, as examples/policy.yaml does (see
// e2ePolicy). quarantined is "" or "quarantined: block".
func relaySection(quarantined string) string {
	return fmt.Sprintf(`relays:
  - name: isp-smarthost
    cidrs: [%s/32, %s/128]
    ports: [25]
    reason: the ISP's smarthost
    owner: mail-ops
    %s
`, testenv.RelayV4, testenv.RelayV6, quarantined)
}

// TestRelay: under examples-like policy with the smarthost as a relay, every host's
// port-25 mail towards smtp.isp.test is delivered, whatever its range says towards the
// MX: the reset and drop pools, and the quarantined host, whose port 25 to the MX is
// refused. Submission to the smarthost delivers as to the MX. Then with `quarantined:
// block` the quarantined host is refused by the relay too, and everyone else still
// gets through. Outcomes are checked against a table written from the issue and
// against policy.Explain, and each message against the server it was sent to.
func TestRelay(t *testing.T) {
	testutil.RequireRoot(t)
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			now := time.Now()
			c := compile(t, e2ePolicy(now.Add(time.Hour)), now)
			top, p := setup(t, mode, c)
			attempts := slices.Concat(
				top.Plan(c, now, top.Hosts, []*testenv.MailServer{top.Mail}, []uint16{testenv.PortSMTP}),
				top.Plan(c, now, top.Hosts, []*testenv.MailServer{top.Relay}, testenv.Ports))
			attempts = runAll(top, attempts)
			delivered := map[*testenv.MailServer]int{}
			for _, a := range attempts {
				want := testenv.Delivered
				if a.Server == top.Mail {
					want = wantOutcome[a.Host.Name]
				}
				if a.Got != want || !a.OK() {
					t.Errorf("%s %s -> %s port %d: got %s, want %s (policy: %s, %s; err %v)", a.Host.Name, a.Src, a.Server.Hostname, a.Port, a.Got, want, a.Expect, a.Why.Reason, a.Err)
				}
				if a.Server == top.Relay && a.Port == testenv.PortSMTP && (a.Why.Decider.Kind != model.KindRelay || a.Why.Decider.Name != "isp-smarthost") {
					t.Errorf("%s %s -> %s port 25: decided by %s %q, want relay isp-smarthost", a.Host.Name, a.Src, a.Server.Hostname, a.Why.Decider.Kind, a.Why.Decider.Name)
				}
				if a.Got == testenv.Delivered {
					delivered[a.Server]++
				}
			}
			if n := len(top.Hosts) * 2 * len(testenv.Ports); delivered[top.Relay] != n {
				t.Errorf("%d of %d attempts to the smarthost delivered", delivered[top.Relay], n)
			}
			for _, srv := range top.Servers() {
				if got := len(srv.Messages()); got != delivered[srv] {
					t.Errorf("%s holds %d messages, %d attempts to it delivered", srv.Hostname, got, delivered[srv])
				}
			}
			// Every source reached the relay on 25, plainly; submission encrypted and
			// authenticated, as on the MX.
			from := map[string]bool{}
			for _, m := range top.Relay.Messages() {
				sub := m.Port != testenv.PortSMTP
				if m.TLS != sub || (m.User == testenv.MailUser) != sub {
					t.Errorf("smarthost: message on port %d from %s: TLS %v, user %q", m.Port, m.Remote, m.TLS, m.User)
				}
				if !sub {
					from[m.Remote.Addr().String()] = true
				}
			}
			for _, h := range top.Hosts {
				for _, a := range h.Addresses() {
					if !from[a.String()] {
						t.Errorf("the smarthost has no port-25 message from %s (%s)", a, h.Name)
					}
				}
			}

			// The relay's own counter took the passes, in both families.
			rc, relay := counters(t, p, c), ruleID(t, c, "isp-smarthost")
			for _, fam := range []model.Family{model.IPv4, model.IPv6} {
				if rc[key{relay, model.OutPass, fam}].Packets == 0 {
					t.Errorf("relay isp-smarthost counted no %s passes: %v", fam, rc)
				}
			}
			for k := range rc {
				if k.rule == relay && k.out != model.OutPass {
					t.Errorf("relay isp-smarthost counted %s %s", k.out, k.fam)
				}
			}

			// The demo's rows: the dsl host refused by the MX, delivered through the relay.
			rs := runAll(top, top.RelayScenario(c, now))
			if len(rs) != 4 {
				t.Fatalf("RelayScenario: %d attempts, want 4", len(rs))
			}
			for _, a := range rs {
				want := map[*testenv.MailServer]testenv.Outcome{top.Mail: testenv.Refused, top.Relay: testenv.Delivered}[a.Server]
				if a.Host.Name != "dsl" || a.Port != testenv.PortSMTP || a.Got != want || !a.OK() {
					t.Errorf("RelayScenario: %s %s -> %s port %d: got %s, want %s (policy: %s; err %v)", a.Host.Name, a.Src, a.Server.Hostname, a.Port, a.Got, want, a.Expect, a.Err)
				}
			}

			// quarantined: block. Only the quarantined host loses the relay.
			cb := compile(t, e2eBase(now.Add(time.Hour))+relaySection("quarantined: block"), now)
			if err := p.Apply(cb.Tables); err != nil {
				t.Fatal(err)
			}
			hosts := []*testenv.Host{top.Host("quarantined"), top.Host("dsl"), top.Host("mobile")}
			for _, a := range runAll(top, top.Plan(cb, now, hosts, []*testenv.MailServer{top.Relay}, []uint16{testenv.PortSMTP})) {
				want := testenv.Delivered
				if a.Host.Name == "quarantined" {
					want = testenv.Refused // the quarantine (reset) covers both its addresses
				}
				if a.Got != want || !a.OK() {
					t.Errorf("quarantined: block: %s %s -> %s port 25: got %s, want %s (policy: %s, %s; err %v)", a.Host.Name, a.Src, a.Server.Hostname, a.Got, want, a.Expect, a.Why.Reason, a.Err)
				}
			}
		})
	}
}

// The scope test's policy: the residential pool resets, and a partner's static /24
// and /64 inside it pass, on the wholesale port only. %s is the scope line.
const scopePolicy = `version: 1
reset: {rate: 1000, burst: 200}
ranges:
  - name: dsl-dynamic
    verdict: reset
    cidrs: [100.64.0.0/12, 2001:db8:1000::/36]
  - name: wholesale-partner
    verdict: pass
    cidrs: [100.64.1.0/24, 2001:db8:1000:1::/64]
    %s
`

// TestScope: one /24 (and /64), dynamic on the residential port (to-dsl) and a
// wholesale partner's static space on the wholesale port (to-wholesale). With the
// partner's range scoped to to-wholesale, the wholesale host delivers on 25 and the
// dsl host, in the same /24, is refused; with the scope removed, the partner's range
// is the most specific for both and the dsl host delivers too; scoped again, refused
// again. Each outcome against the table here and against policy.Explain with the
// attempt's interface.
func TestScope(t *testing.T) {
	testutil.RequireRoot(t)
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			now := time.Now()
			dslSpec := testenv.DefaultHosts[slices.IndexFunc(testenv.DefaultHosts, func(h testenv.HostSpec) bool { return h.Name == "dsl" })]
			top, p := setupHosts(t, mode, []testenv.HostSpec{dslSpec, testenv.WholesaleHost})
			if err := p.SetInterfaces(top.Interfaces()); err != nil {
				t.Fatalf("SetInterfaces(%v): %v", top.Interfaces(), err)
			}
			scoped := compile(t, fmt.Sprintf(scopePolicy, "interfaces: [to-wholesale]"), now)
			unscoped := compile(t, fmt.Sprintf(scopePolicy, ""), now)

			// The model alone: the wholesale host's address, asked about on an
			// interface no scope names, is the residential pool's.
			if ex := scoped.Explain(policy.Query{Src: testenv.WholesaleHost.V4, Dst: testenv.MailV4, Port: 25}, now); ex.Verdict != model.Reset {
				t.Errorf("Explain(%s, no interface) under the scoped policy: %s (%s), want reset", testenv.WholesaleHost.V4, ex.Verdict, ex.Reason)
			}

			for _, step := range []struct {
				name string
				c    *policy.Compiled
				want map[string]testenv.Outcome
				rule map[string]string // deciding range by host
			}{
				{"scoped", scoped,
					map[string]testenv.Outcome{"dsl": testenv.Refused, "wholesale": testenv.Delivered},
					map[string]string{"dsl": "dsl-dynamic", "wholesale": "wholesale-partner"}},
				{"scope removed", unscoped,
					map[string]testenv.Outcome{"dsl": testenv.Delivered, "wholesale": testenv.Delivered},
					map[string]string{"dsl": "wholesale-partner", "wholesale": "wholesale-partner"}},
				{"scoped again", scoped,
					map[string]testenv.Outcome{"dsl": testenv.Refused, "wholesale": testenv.Delivered},
					map[string]string{"dsl": "dsl-dynamic", "wholesale": "wholesale-partner"}},
			} {
				if err := p.Apply(step.c.Tables); err != nil {
					t.Fatalf("%s: Apply: %v", step.name, err)
				}
				attempts := runAll(top, top.Plan(step.c, now, top.Hosts, []*testenv.MailServer{top.Mail}, []uint16{testenv.PortSMTP}))
				if len(attempts) != 4 {
					t.Fatalf("%s: %d attempts, want 4 (2 hosts x 2 families)", step.name, len(attempts))
				}
				for _, a := range attempts {
					if want := step.want[a.Host.Name]; a.Got != want || !a.OK() {
						t.Errorf("%s: %s %s on %s -> port 25: got %s, want %s (policy: %s, %s; err %v)", step.name, a.Host.Name, a.Src, a.Host.GatewayIf, a.Got, want, a.Expect, a.Why.Reason, a.Err)
					}
					if d := a.Why.Decider; d.Kind != model.KindRange || d.Name != step.rule[a.Host.Name] {
						t.Errorf("%s: %s %s on %s: decided by %s %q, want range %s", step.name, a.Host.Name, a.Src, a.Host.GatewayIf, d.Kind, d.Name, step.rule[a.Host.Name])
					}
				}
			}
		})
	}
}

// setupHosts loads the program and builds a topology of hosts in mode with the program
// attached and no policy applied. Everything is torn down by t.Cleanup.
func setupHosts(t testing.TB, mode testenv.Mode, hosts []testenv.HostSpec) (*testenv.Topology, *loader.Program) {
	t.Helper()
	return setupWith(t, mode, nil, hosts)
}
