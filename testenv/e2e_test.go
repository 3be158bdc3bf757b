package testenv_test

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/portcullis/portcullis/internal/testutil"
	"github.com/portcullis/portcullis/loader"
	"github.com/portcullis/portcullis/model"
	"github.com/portcullis/portcullis/policy"
	"github.com/portcullis/portcullis/testenv"
)

// dialTimeout bounds a connection attempt: long enough for any answer on veth (well
// under a millisecond), short enough that the drop range's timeouts stay cheap. It is
// below the kernel's initial SYN retransmission timeout (1 s): a dropped attempt sends
// one SYN.
const dialTimeout = 700 * time.Millisecond

// What every host must see, written from the issue, independent of testenv.Expect.
var wantOutcome = map[string]testenv.Outcome{
	"dsl":         testenv.Refused,   // reset range: connection refused at once
	"dsl-vlan":    testenv.Refused,   // the same over 802.1Q
	"mobile":      testenv.TimedOut,  // drop range: nothing answers
	"hotspot":     testenv.Delivered, // monitor: counted, not blocked
	"business":    testenv.Delivered, // business range passes
	"mailserver":  testenv.Delivered, // exemption inside the reset range
	"quarantined": testenv.Refused,   // live quarantine (reset) inside business space
}

// TestEndToEnd sends real mail from every host, both families, to 25, 587 and 465,
// with the program attached natively and generically.
func TestEndToEnd(t *testing.T) {
	testutil.RequireRoot(t)
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			now := time.Now()
			c := compile(t, e2ePolicy(now.Add(time.Hour)), now)
			top, _ := setup(t, mode, c)
			attempts := top.Scenario(c, now)
			top.Run(attempts, dialTimeout)
			seen := map[string]int{}
			for _, a := range attempts {
				seen[a.Host.Name]++
				want := wantOutcome[a.Host.Name]
				if a.Port != testenv.PortSMTP {
					want = testenv.Delivered // 465 and 587 always pass
				}
				if a.Got != want || !a.OK() {
					t.Errorf("%s %s -> port %d: got %s, want %s (policy: %s; err %v)", a.Host.Name, a.Src, a.Port, a.Got, want, a.Expect, a.Err)
				}
				if a.Got == testenv.Refused && a.Took > 250*time.Millisecond {
					t.Errorf("%s %s -> port %d: refused after %v, want at once", a.Host.Name, a.Src, a.Port, a.Took)
				}
			}
			for name := range wantOutcome {
				if seen[name] != 6 { // 2 families x 3 ports
					t.Errorf("host %s: %d attempts, want 6", name, seen[name])
				}
			}
			// The server's record: submission only encrypted and authenticated.
			msgs := top.Mail.Messages()
			if want := countDelivered(attempts); len(msgs) != want {
				t.Errorf("server holds %d messages, %d attempts delivered", len(msgs), want)
			}
			for _, m := range msgs {
				sub := m.Port != testenv.PortSMTP
				if m.TLS != sub || (m.User == testenv.MailUser) != sub {
					t.Errorf("message on port %d from %s: TLS %v, user %q", m.Port, m.Remote, m.TLS, m.User)
				}
			}
		})
	}
}

func countDelivered(as []testenv.Attempt) int {
	n := 0
	for _, a := range as {
		if a.Got == testenv.Delivered {
			n++
		}
	}
	return n
}

// TestQuarantineLifts: the quarantined host cannot send on 25 until its quarantine
// expires, then can, without the policy being applied again: the data plane compares
// the expiry itself.
func TestQuarantineLifts(t *testing.T) {
	testutil.RequireRoot(t)
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			// The topology comes first, under a quarantine that lasts: building it can
			// take seconds on a busy machine, and must not eat the window.
			top, p := setup(t, mode, compile(t, e2ePolicy(time.Now().Add(time.Hour)), time.Now()))
			h := top.Host("quarantined")
			// The window before the expiry is derived from what an attempt costs here,
			// so that every address gets its attempts in however loaded the machine is.
			start := time.Now()
			for _, src := range h.Addresses() {
				if got, err, _ := top.Send(h, src, testenv.PortSMTP, dialTimeout); got != testenv.Refused {
					t.Fatalf("%s under the quarantine: %s (%v), want refused", src, got, err)
				}
			}
			window := max(3*time.Second, 10*time.Since(start))
			tail := max(2*time.Second, 10*time.Since(start)) // delivered sessions cost more
			now := time.Now()
			ends := now.Add(window).Truncate(time.Second).Add(time.Second) // RFC 3339 in the policy: whole seconds
			if err := p.Apply(compile(t, e2ePolicy(ends), now).Tables); err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			for _, src := range h.Addresses() {
				wg.Add(1)
				go func() {
					defer wg.Done()
					var before, after int
					for deadline := ends.Add(tail); time.Now().Before(deadline); time.Sleep(150 * time.Millisecond) {
						start := time.Now()
						got, err, _ := top.Send(h, src, testenv.PortSMTP, dialTimeout)
						switch {
						case start.Before(ends.Add(-50 * time.Millisecond)):
							if got != testenv.Refused {
								t.Errorf("%s at %v before the expiry: %s (%v), want refused", src, ends.Sub(start), got, err)
							}
							before++
						case start.After(ends.Add(50 * time.Millisecond)):
							if got != testenv.Delivered {
								t.Errorf("%s at %v after the expiry: %s (%v), want delivered", src, start.Sub(ends), got, err)
							}
							after++
						}
					}
					if before < 3 || after < 3 {
						t.Errorf("%s: %d attempts before the expiry, %d after; want 3 or more each", src, before, after)
					}
				}()
			}
			wg.Wait()
		})
	}
}

// TestPolicySwapUnderLoad applies two policies alternately while connections run.
//
// Policy A quarantines the dsl host (reset) inside a drop range; policy B lets the
// range pass. A SYN judged by A is refused, by B it connects. A SYN judged by A's
// ranges without A's quarantines — half a policy — would be dropped and time out, and
// would count as a drop for the range rule. None may: every port-25 attempt is refused
// or connects, the range rule never drops, and every submission (587, 465) delivers.
// The two policies of TestPolicySwapUnderLoad. RSTs are unlimited (rate 0): a
// rate-limited RST would be a drop, i.e. a timeout.
const (
	swapA = `version: 1
reset: {rate: 0}
ranges:
  - {name: pool, verdict: drop, cidrs: [100.64.0.0/12, 2001:db8:1000::/36]}
quarantines:
  - {cidr: 100.64.1.10/32, name: q4, verdict: reset, reason: swap test, ticket: T, expires: %[1]s}
  - {cidr: 2001:db8:1000:1::10/128, name: q6, verdict: reset, reason: swap test, ticket: T, expires: %[1]s}
`
	swapB = `version: 1
reset: {rate: 0}
ranges:
  - {name: pool, verdict: pass, cidrs: [100.64.0.0/12, 2001:db8:1000::/36]}
`
)

func TestPolicySwapUnderLoad(t *testing.T) {
	testutil.RequireRoot(t)
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			now := time.Now()
			ends := now.Add(time.Hour).UTC().Format(time.RFC3339)
			a := compile(t, fmt.Sprintf(swapA, ends), now)
			b := compile(t, swapB, now)
			top, p := setup(t, mode, a)
			h := top.Host("dsl")
			pool, q4, q6 := ruleID(t, a, "pool"), ruleID(t, a, "q4"), ruleID(t, a, "q6")
			if ruleID(t, b, "pool") != pool {
				t.Fatal("rule ids differ between the two policies")
			}

			var (
				stop               atomic.Bool
				refused, connected atomic.Int64
				delivered, swaps   atomic.Int64
				wg                 sync.WaitGroup
				mu                 sync.Mutex
				failures           []string
			)
			fail := func(f string, args ...any) {
				mu.Lock()
				defer mu.Unlock()
				if len(failures) < 20 {
					failures = append(failures, fmt.Sprintf(f, args...))
				}
			}
			for w := 0; w < 2; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; !stop.Load(); i++ {
						src := h.Addresses()[i%2]
						conn, err := h.NS.Dial("tcp", net.JoinHostPort(mailAddr(src).String(), "25"), dialTimeout)
						switch {
						case err == nil:
							connected.Add(1)
							conn.Close()
						case errors.Is(err, syscall.ECONNREFUSED):
							refused.Add(1)
						default:
							fail("port 25 from %s: %v (neither policy's outcome)", src, err)
						}
					}
				}()
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; !stop.Load(); i++ {
					src, port := h.Addresses()[i%2], testenv.Ports[1+(i/2)%2]
					if got, err, _ := top.Send(h, src, port, dialTimeout); got != testenv.Delivered {
						fail("port %d from %s: %s (%v)", port, src, got, err)
						continue
					}
					delivered.Add(1)
				}
			}()
			start := time.Now()
			for i := 1; time.Since(start) < 2*time.Second; i++ {
				next := b
				if i%2 == 0 {
					next = a
				}
				if err := p.Apply(next.Tables); err != nil {
					t.Fatalf("Apply: %v", err)
				}
				swaps.Add(1)
				time.Sleep(5 * time.Millisecond)
			}
			stop.Store(true)
			wg.Wait()
			for _, f := range failures {
				t.Error(f)
			}
			t.Logf("%d policy swaps; port 25: %d refused, %d connected; %d messages submitted", swaps.Load(), refused.Load(), connected.Load(), delivered.Load())
			if refused.Load() == 0 || connected.Load() == 0 || delivered.Load() == 0 || swaps.Load() < 10 {
				t.Errorf("the run did not exercise both policies with submissions running")
			}
			rc := counters(t, p, a)
			if n := rc[key{pool, model.OutDrop, model.IPv4}].Packets + rc[key{pool, model.OutDrop, model.IPv6}].Packets; n != 0 {
				t.Errorf("the range rule dropped %d packets: a packet was judged by half a policy", n)
			}
			// Each refusal is exactly one SYN answered by the program: nothing retransmits.
			rst := rc[key{q4, model.OutRST, model.IPv4}].Packets + rc[key{q6, model.OutRST, model.IPv6}].Packets
			if rst != uint64(refused.Load()) {
				t.Errorf("RST counters say %d, clients saw %d refusals", rst, refused.Load())
			}
		})
	}
}

func mailAddr(a netip.Addr) netip.Addr {
	if a.Is4() {
		return testenv.MailV4
	}
	return testenv.MailV6
}

func ruleID(t testing.TB, c *policy.Compiled, name string) uint32 {
	t.Helper()
	for _, r := range c.Rules {
		if r.Name == name {
			return r.ID
		}
	}
	t.Fatalf("no rule %q", name)
	return 0
}

type key struct {
	rule uint32
	out  model.Outcome
	fam  model.Family
}

func counters(t testing.TB, p *loader.Program, c *policy.Compiled) map[key]loader.Counter {
	t.Helper()
	rcs, err := p.RuleCounters(len(c.Rules))
	if err != nil {
		t.Fatal(err)
	}
	m := map[key]loader.Counter{}
	for _, rc := range rcs {
		m[key{rc.Rule, rc.Outcome, rc.Family}] = rc.Counter
	}
	return m
}

func offenders(t testing.TB, p *loader.Program) map[netip.Addr]loader.Offender {
	t.Helper()
	os, err := p.Offenders()
	if err != nil {
		t.Fatal(err)
	}
	m := map[netip.Addr]loader.Offender{}
	for _, o := range os {
		m[o.Source] = o
	}
	return m
}

// TestCountersExact sends known traffic, one host and family at a time, and checks
// that the rule counters and the offender table match it packet for packet. The
// oracle is each client namespace's own TCP stack: the segments it put on the wire
// (OutSegs + RetransSegs), every one of which crosses the gateway's XDP program.
func TestCountersExact(t *testing.T) {
	testutil.RequireRoot(t)
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			now := time.Now()
			c := compile(t, e2ePolicy(now.Add(time.Hour)), now)
			top, p := setup(t, mode, c)
			dsl, vlan, mobile, hotspot, business := top.Host("dsl"), top.Host("dsl-vlan"), top.Host("mobile"), top.Host("hotspot"), top.Host("business")
			rDSL, rMobile, rHotspot, rBusiness := ruleID(t, c, "dsl-dynamic"), ruleID(t, c, "mobile-dynamic"), ruleID(t, c, "wifi-hotspots"), ruleID(t, c, "business-static")

			// phase sends traffic from h and returns the segments h sent and the
			// change in every counter.
			phase := func(h *testenv.Host, send func()) (uint64, map[key]loader.Counter) {
				t.Helper()
				seg0, err := h.NS.TCPSegmentsSent()
				if err != nil {
					t.Fatal(err)
				}
				c0 := counters(t, p, c)
				send()
				seg := settle(t, h)
				c1 := counters(t, p, c)
				d := map[key]loader.Counter{}
				for k, v := range c1 {
					v.Packets -= c0[k].Packets
					v.Bytes -= c0[k].Bytes
					if v.Packets != 0 {
						d[k] = v
					}
				}
				return seg - seg0, d
			}
			only := func(what string, d map[key]loader.Counter, k key, want uint64) loader.Counter {
				t.Helper()
				if d[k].Packets != want || len(d) != 1 {
					t.Errorf("%s: counters changed by %v, want only rule %d %s %s += %d packets", what, d, k.rule, k.out, k.fam, want)
				}
				return d[k]
			}
			const n = 12
			refuse := func(h *testenv.Host, src netip.Addr) func() {
				return func() {
					for i := 0; i < n; i++ {
						if got, err, _ := top.Send(h, src, testenv.PortSMTP, dialTimeout); got != testenv.Refused {
							t.Errorf("%s: %s (%v), want refused", src, got, err)
						}
					}
				}
			}
			// Reset range: one SYN per attempt, answered by one RST.
			var synLen [2]uint64
			for fi, src := range dsl.Addresses() {
				fam := model.Family(fi)
				segs, d := phase(dsl, refuse(dsl, src))
				if segs != n {
					t.Errorf("dsl %s sent %d segments for %d refused attempts", src, segs, n)
				}
				got := only("dsl "+src.String(), d, key{rDSL, model.OutRST, fam}, segs)
				synLen[fi] = got.Bytes / max(got.Packets, 1)
			}
			// The same from the VLAN host: the program saw 4 more bytes per SYN, the
			// 802.1Q tag, and the RST made it back (the host drops untagged frames).
			for fi, src := range vlan.Addresses() {
				fam := model.Family(fi)
				segs, d := phase(vlan, refuse(vlan, src))
				got := only("dsl-vlan "+src.String(), d, key{rDSL, model.OutRST, fam}, segs)
				if got.Bytes != segs*(synLen[fi]+4) {
					t.Errorf("dsl-vlan %s: %d bytes in %d SYNs; untagged SYNs are %d bytes, want 4 more each", src, got.Bytes, got.Packets, synLen[fi])
				}
			}
			// Drop range: nothing answers. Two attempts outlive the SYN retransmission
			// timeout (1 s), so the counters must include the retransmitted SYNs too.
			segs, d := phase(mobile, func() {
				var wg sync.WaitGroup
				for _, timeout := range []time.Duration{200 * time.Millisecond, 1300 * time.Millisecond, 1300 * time.Millisecond} {
					wg.Add(1)
					go func() {
						defer wg.Done()
						if got, err, _ := top.Send(mobile, mobile.V4, testenv.PortSMTP, timeout); got != testenv.TimedOut {
							t.Errorf("mobile: %s (%v), want timed out", got, err)
						}
					}()
				}
				wg.Wait()
			})
			only("mobile", d, key{rMobile, model.OutDrop, model.IPv4}, segs)
			dropped := segs
			if segs < 5 {
				t.Errorf("mobile sent %d segments for 3 attempts, 2 of them past the retransmission timeout; want 5", segs)
			}
			// Pass and monitor: whole SMTP sessions, every segment judged.
			deliver := func(h *testenv.Host, src netip.Addr) func() {
				return func() {
					for i := 0; i < 3; i++ {
						if got, err, _ := top.Send(h, src, testenv.PortSMTP, dialTimeout); got != testenv.Delivered {
							t.Errorf("%s: %s (%v), want delivered", src, got, err)
						}
					}
				}
			}
			segs, d = phase(business, deliver(business, business.V6))
			only("business", d, key{rBusiness, model.OutPass, model.IPv6}, segs)
			segs, d = phase(hotspot, deliver(hotspot, hotspot.V4))
			only("hotspot", d, key{rHotspot, model.OutMonitor, model.IPv4}, segs)
			monitored := segs
			// Submission from the reset range: no rule counter moves at all.
			r0, _ := p.Reasons()
			segs, d = phase(dsl, func() {
				for _, src := range dsl.Addresses() {
					for _, port := range []uint16{testenv.PortSubmission, testenv.PortSubmissions} {
						if got, err, _ := top.Send(dsl, src, port, dialTimeout); got != testenv.Delivered {
							t.Errorf("%s port %d: %s (%v)", src, port, got, err)
						}
					}
				}
			})
			r1, _ := p.Reasons()
			if len(d) != 0 {
				t.Errorf("submission changed rule counters: %v", d)
			}
			// Native XDP on veth has seen every segment in every run so far, and is held
			// to it. Generic XDP sees skbs: Go's TLS ClientHello (with its ML-KEM key
			// share) is larger than the MSS and leaves as one two-segment GSO skb, which
			// the program sees once. Generic-mode packet counts are per skb.
			ng := r1[model.ReasonNotGoverned].Packets - r0[model.ReasonNotGoverned].Packets
			if (mode == testenv.Native && ng != segs) || ng == 0 || ng > segs {
				t.Errorf("submission: %d segments sent, %d counted as not governed", segs, ng)
			}

			// Offenders: one entry per blocked or monitored source, counting packets.
			off := offenders(t, p)
			for _, w := range []struct {
				src   netip.Addr
				rule  uint32
				out   model.Outcome
				count uint64
			}{
				{dsl.V4, rDSL, model.OutRST, n}, {dsl.V6, rDSL, model.OutRST, n},
				{vlan.V4, rDSL, model.OutRST, n}, {vlan.V6, rDSL, model.OutRST, n},
				{mobile.V4, rMobile, model.OutDrop, dropped},
				{hotspot.V4, rHotspot, model.OutMonitor, monitored},
			} {
				o, ok := off[w.src]
				if !ok || o.Count != w.count || o.Rule != w.rule || o.Outcome != w.out || o.Port != testenv.PortSMTP {
					t.Errorf("offender %s: %+v (present %v), want %d attempts, rule %d, %s, port 25", w.src, o, ok, w.count, w.rule, w.out)
				}
				delete(off, w.src)
			}
			for src, o := range off {
				t.Errorf("unexpected offender %s: %+v", src, o)
			}
		})
	}
}

// settle waits until h's stack has stopped sending (the last FINs and ACKs of closed
// sessions) and returns its segment count.
func settle(t testing.TB, h *testenv.Host) uint64 {
	t.Helper()
	last, err := h.NS.TCPSegmentsSent()
	if err != nil {
		t.Fatal(err)
	}
	for stable := 0; stable < 3; {
		time.Sleep(50 * time.Millisecond)
		v, err := h.NS.TCPSegmentsSent()
		if err != nil {
			t.Fatal(err)
		}
		if v == last {
			stable++
		} else {
			stable, last = 0, v
		}
	}
	return last
}
