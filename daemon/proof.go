package daemon

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

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
	Src     netip.Addr
	Port    uint16
	Link    policy.Link // the entry point probed: Ethernet or raw IP
	Program policy.Action
	Model   policy.Action
	Note    string
}

func (m Mismatch) String() string {
	via := ""
	if m.Link == policy.LinkRawIP {
		via = " (raw-IP entry point)"
	}
	return fmt.Sprintf("%s -> port %d%s: program %v, model %v%s", m.Src, m.Port, via, m.Program, m.Model, m.Note)
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
	probeDst4 = netip.MustParseAddr("192.0.2.25")
	probeDst6 = netip.MustParseAddr("2001:db8::25")
	probeMAC1 = net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
	probeMAC2 = net.HardwareAddr{0x02, 0, 0, 0, 0, 2}
)

// prove probes every rule (its first prefix) and a bounded random sample of the other
// prefixes of t: the first and last address of each, to every governed port (the first
// few), each protected port and an ordinary one (443). run is the live program's probe
// run through the entry point for a link type, which leaves production counters alone.
// Every probe goes through the Ethernet entry point; the default's and each rule's
// also through the raw-IP one (the same frame from its IP header on), which shares the
// tables and everything after the parse.
func prove(run func(policy.Link, []byte) (policy.Action, []byte, error), t *policy.Tables, protected []uint16, now time.Time, rng *rand.Rand) (Proof, error) {
	start := time.Now()
	ports := append([]uint16{}, t.Governed[:min(len(t.Governed), 4)]...)
	ports = append(ports, protected...)
	ports = append(ports, 443)

	var entries []policy.Entry
	seen := map[uint32]bool{}
	var rest []policy.Entry
	for _, tab := range [][]policy.Entry{t.Quarantines, t.Ranges} {
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
	perRule := 2 + 2*len(entries) // sources below: the default's and each rule's
	entries = append(entries, rest...)
	// The default: an address in no entry (the documentation prefix of the probes'
	// own destination is as good as any; if a policy covers it, it is judged by that).
	srcs := []netip.Addr{netip.MustParseAddr("203.0.113.254"), netip.MustParseAddr("2001:db8:ffff:ffff::fe")}
	for _, e := range entries {
		srcs = append(srcs, e.Prefix.Masked().Addr(), policy.LastAddr(e.Prefix))
	}

	var pr Proof
	for i, src := range srcs {
		links := []policy.Link{policy.LinkEthernet}
		if i < perRule {
			links = append(links, policy.LinkRawIP)
		}
		for _, port := range ports {
			eth, err := probeFrame(src, port)
			if err != nil {
				return pr, err
			}
			for _, link := range links {
				frame := eth
				if link == policy.LinkRawIP {
					frame = eth[14:] // from the IP header on
				}
				act, out, err := run(link, frame)
				if err != nil {
					return pr, err
				}
				pr.Probes++
				want, diffs := verify.Compare(t, frame, now, verify.Observed{Link: link, Action: act, Out: out})
				if len(diffs) == 0 {
					continue
				}
				if len(pr.Mismatches) < maxMismatches {
					pr.Mismatches = append(pr.Mismatches, Mismatch{Src: src, Port: port, Link: link, Program: act, Model: want.Action, Note: mismatchNote(diffs)})
				}
			}
		}
	}
	pr.Took = time.Since(start)
	return pr, nil
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

// probeFrame is a TCP SYN from src to port over plain Ethernet.
func probeFrame(src netip.Addr, port uint16) ([]byte, error) {
	eth := &layers.Ethernet{SrcMAC: probeMAC1, DstMAC: probeMAC2}
	tcp := &layers.TCP{SrcPort: 40000, DstPort: layers.TCPPort(port), SYN: true, Seq: 1000, Window: 64240}
	var ip gopacket.NetworkLayer
	if src.Is4() {
		eth.EthernetType = layers.EthernetTypeIPv4
		ip4 := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: src.AsSlice(), DstIP: probeDst4.AsSlice()}
		ip = ip4
	} else {
		eth.EthernetType = layers.EthernetTypeIPv6
		ip = &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolTCP, SrcIP: src.AsSlice(), DstIP: probeDst6.AsSlice()}
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
