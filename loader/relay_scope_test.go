package loader

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/portcullis/portcullis/bpf"
	"github.com/portcullis/portcullis/internal/testutil"
	"github.com/portcullis/portcullis/model"
	"github.com/portcullis/portcullis/policy"
	"github.com/portcullis/portcullis/testenv"
	"github.com/portcullis/portcullis/verify"
)

// The policy of the relay and scope tests: a dynamic pool that resets, a wholesale
// partner's part of it (pass) on the interface whl0 only with a dynamic corner (drop)
// inside, an unscoped customer /32 inside that corner, a quarantine everywhere and one
// on whl0 only; the ISP's smarthost as a relay for every governed port, and an inbound
// MX relay for 2525 only that quarantined sources may not use.
const scopePolicy = `version: 1
governed_ports: [25, 2525]
default: pass
reset: {rate: 0}
ranges:
  - {name: dyn, verdict: reset, cidrs: [100.64.0.0/12, 2001:db8:1000::/36]}
  - {name: partner, verdict: pass, cidrs: [100.64.1.0/24, 2001:db8:1000:1::/64], interfaces: [whl0]}
  - {name: partner-dyn, verdict: drop, cidrs: [100.64.1.128/25, 2001:db8:1000:1:8000::/65], interfaces: [whl0, whl1]}
  - {name: customer, verdict: pass, cidrs: [100.64.1.200/32, 2001:db8:1000:1:8000::200/128]}
quarantines:
  - {cidr: 100.64.2.66/32, verdict: drop, reason: spam, ticket: AB-1, expires: %[1]s}
  - {cidr: 2001:db8:1000:2::66/128, verdict: drop, reason: spam, ticket: AB-1, expires: %[1]s}
  - {cidr: 100.64.1.77/32, verdict: drop, reason: spam via the partner, ticket: AB-2, expires: %[1]s, interfaces: [whl0]}
relays:
  - {name: smarthost, cidrs: [192.0.2.26/32, 2001:db8:ffff::26/128], reason: our smarthost, owner: mail}
  - {name: mx-in, cidrs: [192.0.2.128/25], ports: [2525], quarantined: block, reason: inbound MX, owner: mail}
`

var scopeIfaces = []string{"acc0", "whl0", "whl1", "oth0"}

func compileScopePolicy(t testing.TB, now time.Time) *policy.Compiled {
	t.Helper()
	src := fmt.Sprintf(scopePolicy, now.Add(time.Hour).UTC().Format(time.RFC3339))
	pol, err := policy.Parse("scope.yaml", []byte(src), now)
	if err != nil {
		t.Fatalf("policy: %v", err)
	}
	c, err := policy.Compile(pol, now)
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	return c
}

// scratch makes the interfaces test runs may arrive on (a namespace of dummies) and
// tells p their indexes.
func scratch(t testing.TB, p *Program) *testenv.Scratch {
	t.Helper()
	s, err := testenv.NewScratch(scopeIfaces...)
	if err != nil {
		t.Fatalf("scratch namespace: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	if err := p.SetInterfaces(s.Ifindex); err != nil {
		t.Fatalf("SetInterfaces: %v", err)
	}
	return s
}

// runAt runs frame through p as if it arrived on ifname, inside s.
func runAt(t testing.TB, s *testenv.Scratch, p *Program, in model.Ingress, frame []byte) (model.Action, []byte) {
	t.Helper()
	var act model.Action
	var out []byte
	err := s.Do(func() (err error) {
		act, out, err = p.RunAt(in, frame)
		return err
	})
	if err != nil {
		t.Fatalf("run on %q: %v", in.Interface, err)
	}
	return act, out
}

// TestRelaysAndScopes: SYNs from each kind of source to each kind of destination on
// each kind of interface, through the verifier-loaded program, against the test's own
// expectation (written here, not taken from the model) and then verify.Compare.
func TestRelaysAndScopes(t *testing.T) {
	now := time.Now()
	c := compileScopePolicy(t, now)
	p := applied(t, c.Tables)
	s := scratch(t, p)
	const (
		mx4, smart4, mxin4 = "192.0.2.25", "192.0.2.26", "192.0.2.130"
		mx6, smart6        = "2001:db8:ffff::25", "2001:db8:ffff::26"
		pass, drop, rst    = model.ActionPass, model.ActionDrop, model.ActionTX
	)
	cases := []struct {
		src, dst string
		port     uint16
		iface    string
		want     model.Action
		why      string
	}{
		{"100.64.5.5", mx4, 25, "acc0", rst, "dynamic pool resets"},
		{"100.64.5.5", smart4, 25, "acc0", pass, "relay: the smarthost"},
		{"100.64.5.5", smart4, 2525, "acc0", pass, "relay without ports: every governed port"},
		{"100.64.5.5", smart4, 587, "acc0", pass, "not governed"},
		{"100.64.5.5", mxin4, 2525, "acc0", pass, "relay mx-in, port 2525"},
		{"100.64.5.5", mxin4, 25, "acc0", rst, "mx-in relays 2525 only"},
		{"100.64.2.66", smart4, 25, "acc0", pass, "quarantined source may use the smarthost"},
		{"100.64.2.66", mxin4, 2525, "acc0", drop, "mx-in blocks quarantined sources"},
		{"100.64.2.66", mx4, 25, "acc0", drop, "quarantine drops"},
		{"100.64.1.10", mx4, 25, "whl0", pass, "partner range on whl0"},
		{"100.64.1.10", mx4, 25, "acc0", rst, "the same address on acc0 is dynamic"},
		{"100.64.1.10", mx4, 25, "", rst, "an interface no scope names"},
		{"100.64.1.10", mx4, 25, "whl1", rst, "partner is not scoped to whl1"},
		{"100.64.1.130", mx4, 25, "whl0", drop, "partner-dyn inside partner on whl0"},
		{"100.64.1.130", mx4, 25, "whl1", drop, "partner-dyn on whl1 too"},
		{"100.64.1.130", mx4, 25, "oth0", rst, "dynamic elsewhere"},
		{"100.64.1.200", mx4, 25, "whl0", pass, "unscoped customer /32 inside scoped ranges still decides"},
		{"100.64.1.200", mx4, 25, "acc0", pass, "customer everywhere"},
		{"100.64.1.77", mx4, 25, "whl0", drop, "quarantine scoped to whl0"},
		{"100.64.1.77", mx4, 25, "acc0", rst, "no quarantine on acc0: dynamic"},
		{"100.64.1.77", smart4, 25, "whl0", pass, "quarantined on whl0, smarthost open"},
		{"2001:db8:1000:5::5", mx6, 25, "acc0", rst, "dynamic pool resets (IPv6)"},
		{"2001:db8:1000:5::5", smart6, 25, "acc0", pass, "relay (IPv6)"},
		{"2001:db8:1000:1::10", mx6, 25, "whl0", pass, "partner on whl0 (IPv6)"},
		{"2001:db8:1000:1::10", mx6, 25, "acc0", rst, "dynamic on acc0 (IPv6)"},
		{"2001:db8:1000:1:8000::5", mx6, 25, "whl1", drop, "partner-dyn on whl1 (IPv6)"},
		{"2001:db8:1000:1:8000::200", mx6, 25, "whl0", pass, "customer /128 (IPv6)"},
		{"2001:db8:1000:2::66", smart6, 25, "acc0", pass, "quarantined, smarthost (IPv6)"},
		{"2001:db8:1000:2::66", mx6, 25, "acc0", drop, "quarantined (IPv6)"},
		{"::ffff:100.64.5.5", "::ffff:" + smart4, 25, "acc0", pass, "IPv4-mapped relay destination"},
	}
	for _, tc := range cases {
		for enc := encPlain; enc < numEncaps; enc += 3 { // plain, PPPoE, PPPoE-PFC... and raw IP
			name := fmt.Sprintf("%s->%s:%d@%s/%s", tc.src, tc.dst, tc.port, tc.iface, enc)
			t.Run(name, func(t *testing.T) {
				frame := buildFrame(t, frameSpec{enc: enc, src: addr(tc.src), dst: addr(tc.dst), sport: 40000, dport: tc.port, syn: true, seq: 7})
				in := model.Ingress{Link: enc.link(), Interface: tc.iface}
				act, out := runAt(t, s, p, in, frame)
				if act != tc.want {
					t.Errorf("%s: program %v, want %v", tc.why, act, tc.want)
				}
				_, diffs := verify.Compare(c.Tables, frame, now, verify.Observed{Link: in.Link, Interface: in.Interface, Action: act, Out: out})
				for _, d := range diffs {
					t.Errorf("%s: %s", tc.why, d.Msg)
				}
			})
		}
	}
}

// TestRelayCounters: a relayed SYN counts for the relay, as a pass.
func TestRelayCounters(t *testing.T) {
	now := time.Now()
	c := compileScopePolicy(t, now)
	p := applied(t, c.Tables)
	s := scratch(t, p)
	frame := buildFrame(t, frameSpec{src: addr("100.64.5.5"), dst: addr("192.0.2.26"), sport: 1, dport: 25, syn: true})
	for range 3 {
		runAt(t, s, p, model.Ingress{Interface: "acc0"}, frame)
	}
	ids := p.live
	var relay uint32
	for i, r := range c.Rules {
		if r.Kind == model.KindRelay && r.Name == "smarthost" {
			relay = ids[i]
		}
	}
	cs, err := p.CountersOf([]uint32{relay})
	if err != nil {
		t.Fatal(err)
	}
	var got uint64
	for _, rc := range cs {
		if rc.Outcome == model.OutPass && rc.Family == model.IPv4 {
			got += rc.Packets
		} else if rc.Packets != 0 {
			t.Errorf("relay counted %d packets as %v/%v", rc.Packets, rc.Outcome, rc.Family)
		}
	}
	if got != 3 {
		t.Errorf("relay smarthost counted %d passes, want 3", got)
	}
}

// TestNoRelaysNoScopesCostNothing: a policy without relays or scopes has no entries in
// their tables (and no lookup: the config flags are clear), and a swap from one with
// them clears them.
func TestNoRelaysNoScopesCostNothing(t *testing.T) {
	now := time.Now()
	p := applied(t, compileScopePolicy(t, now).Tables)
	plain := testTables(now)
	for range 2 { // both slots
		if err := p.Apply(plain); err != nil {
			t.Fatal(err)
		}
	}
	for slot := uint32(0); slot < 2; slot++ {
		for _, k := range trieKeys(t, p, slot) {
			switch k.Table {
			case tRelay4, tRelay6, tScoped4, tScoped6:
				t.Errorf("slot %d holds a relay or scoped entry (%s, table %d) under a policy without relays or scopes", slot, keyPrefix(k), k.Table)
			}
		}
	}
	var sk [8]byte
	var sv [4]byte
	if p.objs.Scopes.Iterate().Next(&sk, &sv) {
		t.Error("the interface table holds entries under a policy without scopes")
	}
	if flags := readConfig(t, p).Flags &^ cfgQuarantine6; flags != 0 {
		t.Errorf("config flags %#x under a policy without relays or scopes", flags)
	}
}

// readConfig returns the live policy's config.
func readConfig(t testing.TB, p *Program) bpf.PortcullisPcConfig {
	t.Helper()
	var cm *ebpf.Map
	if err := p.objs.Policy.Lookup(uint32(0), &cm); err != nil {
		t.Fatal(err)
	}
	defer cm.Close()
	var cfg bpf.PortcullisPcConfig
	if err := cm.Lookup(uint32(0), &cfg); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestSetInterfacesMovesAnInterface: renaming which ifindex is "whl0" changes the
// verdict of the live policy on the next packet, without an Apply.
func TestSetInterfacesMovesAnInterface(t *testing.T) {
	now := time.Now()
	c := compileScopePolicy(t, now)
	p := applied(t, c.Tables)
	s := scratch(t, p)
	frame := buildFrame(t, frameSpec{src: addr("100.64.1.10"), dst: addr("192.0.2.25"), sport: 1, dport: 25, syn: true})
	if act, _ := runAt(t, s, p, model.Ingress{Interface: "acc0"}, frame); act != model.ActionTX {
		t.Fatalf("acc0 before: %v, want XDP_TX", act)
	}
	// The interface acc0 now carries the partner's name.
	swapped := map[string]int{"whl0": s.Ifindex["acc0"], "acc0": s.Ifindex["whl0"], "whl1": s.Ifindex["whl1"], "oth0": s.Ifindex["oth0"]}
	if err := p.SetInterfaces(swapped); err != nil {
		t.Fatal(err)
	}
	// The test run names the interface; ask for the ifindex acc0 had, now called whl0.
	if act, _ := runAt(t, s, p, model.Ingress{Interface: "whl0"}, frame); act != model.ActionPass {
		t.Errorf("after SetInterfaces, the old acc0 (now whl0): %v, want XDP_PASS", act)
	}
	if act, _ := runAt(t, s, p, model.Ingress{Interface: "acc0"}, frame); act != model.ActionTX {
		t.Errorf("after SetInterfaces, the old whl0 (now acc0): %v, want XDP_TX", act)
	}
	// Forgetting every interface: no scope applies anywhere.
	if err := p.SetInterfaces(map[string]int{}); err != nil {
		t.Fatal(err)
	}
	var sk [8]byte
	var sv [4]byte
	if p.objs.Scopes.Iterate().Next(&sk, &sv) {
		t.Error("interface table not emptied")
	}
	if _, _, err := p.RunAt(model.Ingress{Interface: "whl0"}, frame); !errors.Is(err, ErrUnknownInterface) {
		t.Errorf("run on a forgotten interface: %v, want ErrUnknownInterface", err)
	}
}

// FuzzDestinationsAndInterfaces: the differential fuzzer for relays and scopes. It
// generates the source, the destination (relay addresses, their neighbours, random),
// the port and the ingress interface, and holds the program to the model.
func FuzzDestinationsAndInterfaces(f *testing.F) {
	testutil.RequireRoot(f)
	now := time.Now()
	c := compileScopePolicy(f, now)
	p := applied(f, c.Tables)
	s := scratch(f, p)
	for i := range 32 {
		f.Add(uint8(i), uint8(i*7), uint8(i%3), uint8(i%5), uint64(i)*0x9e3779b97f4a7c15, uint8(i))
	}
	srcs := []string{"100.64.5.5", "100.64.1.10", "100.64.1.130", "100.64.1.200", "100.64.1.77", "100.64.2.66", "198.51.100.1",
		"2001:db8:1000:5::5", "2001:db8:1000:1::10", "2001:db8:1000:1:8000::200", "2001:db8:1000:2::66", "::ffff:100.64.1.10"}
	dsts := []string{"192.0.2.25", "192.0.2.26", "192.0.2.27", "192.0.2.130", "192.0.2.127", "2001:db8:ffff::25", "2001:db8:ffff::26", "::ffff:192.0.2.26"}
	ports := []uint16{25, 2525, 587, 465}
	ifaces := append([]string{""}, scopeIfaces...)
	f.Fuzz(func(t *testing.T, si, di, pi, ii uint8, bits uint64, encB uint8) {
		r := rand.New(rand.NewPCG(bits, uint64(si)<<8|uint64(di)))
		src := mutate(addr(srcs[int(si)%len(srcs)]), r)
		dst := mutate(addr(dsts[int(di)%len(dsts)]), r)
		if src.Is4() != dst.Is4() {
			dst = netip.AddrFrom16(dst.As16()) // the family of the source
			if src.Is4() {
				dst = dst.Unmap()
			}
		}
		if src.Is4() != dst.Is4() {
			t.Skip("no address of that family")
		}
		enc := encap(int(encB) % int(numEncaps))
		frame := buildFrame(t, frameSpec{enc: enc, src: src, dst: dst, sport: 40000, dport: ports[int(pi)%len(ports)], syn: true, ack: bits&1 == 1, seq: uint32(bits)})
		in := model.Ingress{Link: enc.link(), Interface: ifaces[int(ii)%len(ifaces)]}
		act, out := runAt(t, s, p, in, frame)
		d, diffs := verify.Compare(c.Tables, frame, now, verify.Observed{Link: in.Link, Interface: in.Interface, Action: act, Out: out})
		if len(diffs) > 0 {
			var b strings.Builder
			for _, x := range diffs {
				b.WriteString("\n" + x.Msg)
			}
			t.Fatalf("%s -> %s:%d on %q (%v): program %v, model %v%s", src, dst, d.Packet.DstPort, in.Interface, enc, act, d.Action, b.String())
		}
	})
}

// mutate keeps a (most of the time, so the interesting prefixes stay hit) or flips a
// few of its low bits.
func mutate(a netip.Addr, r *rand.Rand) netip.Addr {
	if r.IntN(3) == 0 {
		return a
	}
	b := a.As16()
	for range 1 + r.IntN(3) {
		i := 15 - r.IntN(4)
		if a.Is4() {
			i = 15 - r.IntN(2)
		}
		b[i] ^= byte(1 << r.IntN(8))
	}
	out := netip.AddrFrom16(b)
	if a.Is4() {
		return out.Unmap()
	}
	return out
}
