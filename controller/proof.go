package controller

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/portcullis/portcullis/model"
	"github.com/portcullis/portcullis/policy"
	"github.com/portcullis/portcullis/verify"
)

// Proof is the result of running synthetic packets through the live program and
// comparing each verdict and frame out with the reference model's (verify.Compare,
// the comparison the replay and the differential fuzzer use too).
type Proof struct {
	Probes     int
	Mismatches []Mismatch // at most maxMismatches are kept
	Took       time.Duration
}

// OK reports whether every probe matched the model.
func (p Proof) OK() bool { return len(p.Mismatches) == 0 }

// Mismatch is one probe on which the program and the model disagree.
type Mismatch struct {
	Src       netip.Addr
	Dst       netip.Addr
	Port      uint16
	Link      model.Link // the entry point probed: Ethernet or raw IP
	Interface string     // the interface it was probed as arriving on ("": one no scope names)
	Program   model.Action
	Model     model.Action
	Note      string
}

func (m Mismatch) String() string {
	via := ""
	if m.Link == model.LinkRawIP {
		via = " (raw-IP entry point)"
	}
	if m.Interface != "" {
		via += " on " + m.Interface
	}
	return fmt.Sprintf("%s -> %s port %d%s: program %v, model %v%s", m.Src, m.Dst, m.Port, via, m.Program, m.Model, m.Note)
}

const (
	maxMismatches = 10
	// proofEntries bounds the prefixes probed beyond one per rule, so that a policy of
	// a million prefixes proves in a second or two.
	proofEntries = 4096
	// A quarantine expiring this close to now may lift between the program's clock
	// and the model's: its edges are not probed.
	expirySlack = 5 * time.Second
)

var (
	probeMAC1 = net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
	probeMAC2 = net.HardwareAddr{0x02, 0, 0, 0, 0, 2}
	// Destinations of the source probes, the first of each family that no relay
	// covers (a relayed probe would not exercise the source lookup).
	probeDsts4 = []netip.Addr{netip.MustParseAddr("192.0.2.25"), netip.MustParseAddr("198.51.100.25"), netip.MustParseAddr("203.0.113.25"), netip.MustParseAddr("100.127.255.25")}
	probeDsts6 = []netip.Addr{netip.MustParseAddr("2001:db8::25"), netip.MustParseAddr("2001:db8:ffff:ffff::25"), netip.MustParseAddr("3fff::25")}
)

// probe is one frame's worth of a proof: from Src to Dst:Port, arriving on Interface,
// through the entry points in Links.
type probe struct {
	src, dst netip.Addr
	port     uint16
	ifname   string
	links    []model.Link
}

// prove probes every rule (its first prefix) and a bounded random sample of the other
// prefixes of t: the first and last address of each, to every governed port (the first
// few), each protected port and an ordinary one (443). run is the live program's probe
// run at an ingress (entry point by link type, interface), which leaves production
// counters alone. Every probe goes through the Ethernet entry point; the default's and
// each rule's also through the raw-IP one (the same frame from its IP header on), which
// shares the tables and everything after the parse.
//
// Scoped entries are probed on an interface of their scope that the program knows
// (known: the names given to SetInterfaces) and on an interface no scope names; every
// relay prefix is probed from the default's source and, if there is one, from a
// quarantined source, on the governed ports.
func prove(run func(model.Ingress, []byte) (model.Action, []byte, error), t *model.Tables, protected []uint16, known []string, now time.Time, rng *rand.Rand) (Proof, error) {
	start := time.Now()
	governed := t.Governed[:min(len(t.Governed), 4)]
	ports := append([]uint16{}, governed...)
	ports = append(ports, protected...)
	ports = append(ports, 443)
	dst4, dst6 := unrelayed(t, probeDsts4), unrelayed(t, probeDsts6)
	dstFor := func(src netip.Addr) netip.Addr {
		if src.Is4() {
			return dst4
		}
		return dst6
	}

	var entries []model.Entry
	seen := map[uint32]bool{}
	var rest []model.Entry
	for _, tab := range [][]model.Entry{t.Quarantines, t.Ranges} {
		for _, e := range tab {
			if !e.Expires.IsZero() && e.Expires.Sub(now).Abs() < expirySlack {
				continue
			}
			if !seen[e.Rule] {
				seen[e.Rule] = true
				entries = append(entries, e)
			} else {
				rest = append(rest, e)
			}
		}
	}
	if len(rest) > proofEntries {
		rng.Shuffle(len(rest), func(i, j int) { rest[i], rest[j] = rest[j], rest[i] })
		rest = rest[:proofEntries]
	}
	entries = append(entries, rest...)
	// The default: an address in no entry (the documentation prefix of the probes'
	// own destination is as good as any; if a policy covers it, it is judged by that).
	def4, def6 := netip.MustParseAddr("203.0.113.254"), netip.MustParseAddr("2001:db8:ffff:ffff::fe")
	both := []model.Link{model.LinkEthernet, model.LinkRawIP}
	eth := []model.Link{model.LinkEthernet}
	var probes []probe
	addSrc := func(src netip.Addr, ifname string, links []model.Link) {
		for _, port := range ports {
			probes = append(probes, probe{src, dstFor(src), port, ifname, links})
		}
	}
	addSrc(def4, "", both)
	addSrc(def6, "", both)
	for i, e := range entries {
		links := eth
		if i < len(seen) {
			links = both // the first entry of each rule
		}
		for _, src := range []netip.Addr{e.Prefix.Masked().Addr(), policy.LastAddr(e.Prefix)} {
			addSrc(src, "", links)
			if e.Interfaces == nil {
				continue
			}
			for _, ifname := range e.Interfaces {
				if slices.Contains(known, ifname) {
					addSrc(src, ifname, links) // in scope; "" above is out of scope
					break
				}
			}
		}
	}
	// Relays are probed from the default's source, from a blocked source of each
	// family and from a quarantined one: a relay must open what they would block.
	var relaySrcs []netip.Addr
	for _, fam4 := range []bool{true, false} {
		for _, tab := range [][]model.Entry{t.Ranges, t.Quarantines} {
			for _, e := range tab {
				live := e.Expires.IsZero() || now.Before(e.Expires.Add(-expirySlack))
				if e.Interfaces == nil && e.Verdict.Blocks() && live && e.Prefix.Addr().Is4() == fam4 {
					relaySrcs = append(relaySrcs, e.Prefix.Masked().Addr())
					break
				}
			}
		}
	}
	for i, r := range t.Relays {
		links := eth
		if i == 0 {
			links = both
		}
		for _, dst := range []netip.Addr{r.Prefix.Masked().Addr(), policy.LastAddr(r.Prefix)} {
			srcs := []netip.Addr{def4}
			if dst.Is6() {
				srcs[0] = def6
			}
			for _, q := range relaySrcs {
				if q.Is4() == dst.Is4() {
					srcs = append(srcs, q)
				}
			}
			for _, src := range srcs {
				for _, port := range governed {
					probes = append(probes, probe{src, dst, port, "", links})
				}
			}
		}
	}

	pr, err := runProbes(run, t, probes, now)
	pr.Took = time.Since(start)
	return pr, err
}

// runProbes runs every probe through run and compares it with the model of t.
func runProbes(run func(model.Ingress, []byte) (model.Action, []byte, error), t *model.Tables, probes []probe, now time.Time) (Proof, error) {
	start := time.Now()
	var pr Proof
	for _, pb := range probes {
		frame, err := probeFrame(pb.src, pb.dst, pb.port)
		if err != nil {
			return pr, err
		}
		for _, link := range pb.links {
			f := frame
			if link == model.LinkRawIP {
				f = frame[14:] // from the IP header on
			}
			in := model.Ingress{Link: link, Interface: pb.ifname}
			act, out, err := run(in, f)
			if err != nil {
				return pr, err
			}
			pr.Probes++
			want, diffs := verify.Compare(t, f, now, verify.Observed{Link: link, Interface: pb.ifname, Action: act, Out: out})
			if len(diffs) == 0 {
				continue
			}
			if len(pr.Mismatches) < maxMismatches {
				pr.Mismatches = append(pr.Mismatches, Mismatch{Src: pb.src, Dst: pb.dst, Port: pb.port, Link: link, Interface: pb.ifname,
					Program: act, Model: want.Action, Note: mismatchNote(diffs)})
			}
		}
	}
	pr.Took = time.Since(start)
	return pr, nil
}

// unrelayed returns the first of candidates that no relay of t covers (the first one
// if every one is: its probes are then relayed, and still compared with the model).
func unrelayed(t *model.Tables, candidates []netip.Addr) netip.Addr {
	for _, a := range candidates {
		if _, ok := t.LookupRelay(a); !ok {
			return a
		}
	}
	return candidates[0]
}

// mismatchNote says what differs beyond the actions, if they agree: " (the RSTs
// differ)" when the program's RST is not the model's, else the first fault found.
func mismatchNote(diffs []verify.Difference) string {
	note := ""
	for _, d := range diffs {
		switch d.Kind {
		case verify.DiffAction:
			return ""
		case verify.DiffReply:
			note = " (the RSTs differ)"
		}
	}
	if note == "" {
		first, _, _ := strings.Cut(diffs[0].Msg, "\n")
		note = " (" + first + ")"
	}
	return note
}

// probeFrame is a TCP SYN from src to dst:port over plain Ethernet.
func probeFrame(src, dst netip.Addr, port uint16) ([]byte, error) {
	eth := &layers.Ethernet{SrcMAC: probeMAC1, DstMAC: probeMAC2}
	tcp := &layers.TCP{SrcPort: 40000, DstPort: layers.TCPPort(port), SYN: true, Seq: 1000, Window: 64240}
	var ip gopacket.NetworkLayer
	if src.Is4() {
		eth.EthernetType = layers.EthernetTypeIPv4
		ip4 := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
		ip = ip4
	} else {
		eth.EthernetType = layers.EthernetTypeIPv6
		ip = &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolTCP, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	}
	if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
		return nil, err
	}
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, eth, ip.(gopacket.SerializableLayer), tcp); err != nil {
		return nil, fmt.Errorf("building probe: %w", err)
	}
	return buf.Bytes(), nil
}
