package verify

import (
	"encoding/binary"
	"encoding/hex"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/portcullis/portcullis/model"
)

var now = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

func tables() *model.Tables {
	return &model.Tables{
		DefaultVerdict: model.Pass,
		Governed:       []uint16{25},
		RuleNames:      []string{"default", "dyn-reset", "dyn-drop"},
		Ranges: []model.Entry{
			{Prefix: netip.MustParsePrefix("100.64.0.0/16"), Rule: 1, Verdict: model.Reset},
			{Prefix: netip.MustParsePrefix("2001:db8:1::/48"), Rule: 1, Verdict: model.Reset},
			{Prefix: netip.MustParsePrefix("100.65.0.0/16"), Rule: 2, Verdict: model.Drop},
		},
	}
}

// syn builds a SYN to port 25 from src, behind the IPv6 extension headers ext (8
// bytes each, protocol numbers 0, 43, 60), carrying payload.
func syn(t *testing.T, src string, ext []byte, payload string) []byte {
	t.Helper()
	s := netip.MustParseAddr(src)
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}, EthernetType: layers.EthernetTypeIPv4}
	tcp := &layers.TCP{SrcPort: 40000, DstPort: 25, Seq: 0x11223344, SYN: true, Window: 64240}
	var ip gopacket.SerializableLayer
	if s.Is4() {
		ip4 := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: s.AsSlice(), DstIP: net.IP{192, 0, 2, 25}}
		tcp.SetNetworkLayerForChecksum(ip4)
		ip = ip4
	} else {
		eth.EthernetType = layers.EthernetTypeIPv6
		ip6 := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolTCP, SrcIP: s.AsSlice(), DstIP: net.ParseIP("2001:db8:ffff::25")}
		tcp.SetNetworkLayerForChecksum(ip6)
		if len(ext) > 0 {
			ip6.NextHeader = layers.IPProtocol(ext[0])
		}
		ip = ip6
	}
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	seg := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(seg, opts, tcp, gopacket.Payload(payload)); err != nil {
		t.Fatal(err)
	}
	var hdrs []byte
	for i, h := range ext {
		next := byte(layers.IPProtocolTCP)
		if i+1 < len(ext) {
			next = ext[i+1]
		}
		if h == 43 {
			hdrs = append(hdrs, next, 0, 0, 0, 0, 0, 0, 0)
		} else {
			hdrs = append(hdrs, next, 0, 1, 4, 0, 0, 0, 0) // PadN
		}
	}
	b := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(b, opts, eth, ip, gopacket.Payload(append(hdrs, seg.Bytes()...))); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func kinds(ds []Difference) map[Kind]string {
	m := map[Kind]string{}
	for _, d := range ds {
		m[d.Kind] += d.Msg + "; "
	}
	return m
}

// The model's own RST passes every check, behind extension headers too.
func TestCompareAgrees(t *testing.T) {
	tb := tables()
	for _, c := range []struct {
		src     string
		ext     []byte
		payload string
	}{
		{"100.64.1.1", nil, ""},
		{"100.64.1.1", nil, "fast open data"},
		{"2001:db8:1::5", nil, ""},
		{"2001:db8:1::5", []byte{0}, ""},
		{"2001:db8:1::5", []byte{0}, "fast open data"},
		{"2001:db8:1::5", []byte{0, 43, 60}, "data"},
		{"2001:db8:1::5", []byte{60}, ""},
	} {
		frame := syn(t, c.src, c.ext, c.payload)
		d := tb.Judge(frame, now, true)
		if d.Action != model.ActionTX {
			t.Fatalf("%s %v: model says %v", c.src, c.ext, d.Action)
		}
		_, diffs := Compare(tb, frame, now, Observed{Action: model.ActionTX, Out: d.Reply,
			Counted: &Counted{Path: d.Path, Flags: d.Flags, Judged: true, Rule: d.Rule, Outcome: d.Outcome}})
		if len(diffs) != 0 {
			t.Errorf("%s behind %v with %q: %v", c.src, c.ext, c.payload, diffs)
		}
	}
}

// A program RST with a wrong ack or checksum is reported twice: it differs from the
// model's, and the independent check finds the fault.
func TestCompareTamperedRST(t *testing.T) {
	tb := tables()
	for _, src := range []string{"100.64.1.1", "2001:db8:1::5"} {
		var ext []byte // IPv6: behind a hop-by-hop header
		if strings.Contains(src, ":") {
			ext = []byte{0}
		}
		frame := syn(t, src, ext, "")
		rst := tb.Judge(frame, now, true).Reply
		tcp := len(rst) - 20
		refix := func(b []byte) { // recompute the TCP checksum after a change
			b[tcp+16], b[tcp+17] = 0, 0
			var pseudo []byte
			if strings.Contains(src, ".") {
				pseudo = append(append([]byte{}, b[14+12:14+20]...), 0, 6, 0, 20)
			} else {
				pseudo = append(append([]byte{}, b[14+8:14+40]...), 0, 0, 0, 20, 0, 0, 0, 6)
			}
			var s uint32
			for i := 0; i < len(pseudo); i += 2 {
				s += uint32(binary.BigEndian.Uint16(pseudo[i:]))
			}
			binary.BigEndian.PutUint16(b[tcp+16:], model.Checksum(b[tcp:], s))
		}
		wrongAck := append([]byte(nil), rst...)
		binary.BigEndian.PutUint32(wrongAck[tcp+8:], binary.BigEndian.Uint32(rst[tcp+8:])+8)
		refix(wrongAck)
		wrongSum := append([]byte(nil), rst...)
		wrongSum[tcp+17] ^= 0x01
		for _, c := range []struct {
			name string
			out  []byte
			want string
		}{
			{"wrong ack", wrongAck, "RST: ack "},
			{"wrong TCP checksum", wrongSum, "RST: TCP checksum"},
		} {
			_, diffs := Compare(tb, frame, now, Observed{Action: model.ActionTX, Out: c.out})
			k := kinds(diffs)
			if !strings.Contains(k[DiffReply], "RST differs") || !strings.Contains(k[DiffRST], c.want) || len(k) != 2 {
				t.Errorf("%s, %s: %v; want a byte difference and %q", src, c.name, diffs, c.want)
			}
		}
	}
	// The IPv4 header checksum.
	frame := syn(t, "100.64.1.1", nil, "")
	bad := tb.Judge(frame, now, true).Reply
	bad[14+10] ^= 0x10
	if _, diffs := Compare(tb, frame, now, Observed{Action: model.ActionTX, Out: bad}); !strings.Contains(kinds(diffs)[DiffRST], "IPv4 header checksum") {
		t.Errorf("IPv4 checksum: %v", diffs)
	}
}

func TestCompareVerdictAndCounters(t *testing.T) {
	tb := tables()
	frame := syn(t, "100.65.1.1", nil, "") // drop range
	d := tb.Judge(frame, now, true)
	right := Counted{Path: model.ReasonJudged, Judged: true, Rule: 2, Outcome: model.OutDrop}
	if _, diffs := Compare(tb, frame, now, Observed{Action: model.ActionDrop, Out: frame, Counted: &right}); len(diffs) != 0 || d.Rule != 2 {
		t.Fatalf("agreeing drop: %v (rule %d)", diffs, d.Rule)
	}
	wrong := Counted{Path: model.ReasonNotGoverned, Flags: []model.Reason{model.ReasonRSTSent}, Judged: true, Rule: 1, Outcome: model.OutPass}
	changed := append([]byte(nil), frame...)
	changed[0] ^= 1
	_, diffs := Compare(tb, frame, now, Observed{Action: model.ActionPass, Out: changed, Counted: &wrong})
	k := kinds(diffs)
	for kind, want := range map[Kind]string{
		DiffAction:  "action XDP_DROP, program XDP_PASS",
		DiffPath:    "path reason judged, program not_governed",
		DiffFlags:   "flag reasons [], program [rst_sent]",
		DiffRule:    `entry "dyn-drop", program "dyn-reset"`,
		DiffOutcome: "outcome drop, program pass",
		DiffFrame:   "program changed a frame it did not send back (XDP_PASS)",
	} {
		if !strings.Contains(k[kind], want) {
			t.Errorf("kind %d: %q, want %q", kind, k[kind], want)
		}
	}
	// Without counters only the action and the frame are compared.
	if _, diffs := Compare(tb, frame, now, Observed{Action: model.ActionDrop, Out: frame}); len(diffs) != 0 {
		t.Errorf("no counters: %v", diffs)
	}
}

// SYNs the differential fuzzer found that gopacket reads otherwise than the data plane
// (PPPoE length fields, an IPv4 total length of 0, an AH shorter than its fixed
// fields behind a fragment header, a TCP header cut short): the model's RST for each
// must pass the independent check, which then checks only what gopacket can read.
func TestCheckRSTOddSYNs(t *testing.T) {
	tb := &model.Tables{DefaultVerdict: model.Pass, Governed: []uint16{25}, RuleNames: []string{"default", "pool"},
		Ranges: []model.Entry{{Prefix: netip.MustParsePrefix("100.65.0.0/16"), Rule: 1, Verdict: model.Reset},
			{Prefix: netip.MustParsePrefix("2001:db8:200::/48"), Rule: 1, Verdict: model.Reset}}}
	for _, h := range []string{
		"30303030303030303030303088641100303000200021453030303030000030063030644130303030303030300019303030303030303058423030303030303030303030303030303030303030303030303030",
		"3030303030303030303030308864110030300003002145303030303000003006303064413030303030303030001930303030303030305842303030303030",
		"303030303030303030303030080045300000303000003006303064413030303030303030001930303030303030305842303030303030303030303030303030303030303030303030303030",
		"02000000000202000000000186dd60000000004c004020010db802000000000000000000000520010db8ffff000000000000000000252b000104000000002c0000000000000033000000000000093c040000000000000000000000000000000000000000000006000104000000000001001900000000000000005002faf0573c0000",
		"020000000002020000000001886411001234003e00214500003c0007000040064f5664410505c000021904d200190000006300000000a002faf01c620000",
	} {
		frame, err := hex.DecodeString(h)
		if err != nil {
			t.Fatal(err)
		}
		d := tb.Judge(frame, now, true)
		if d.Action != model.ActionTX {
			t.Fatalf("%s: model says %v", h, d.Action)
		}
		if _, diffs := Compare(tb, frame, now, Observed{Action: model.ActionTX, Out: d.Reply}); len(diffs) != 0 {
			t.Errorf("%s: %v", h, diffs)
		}
	}
}
