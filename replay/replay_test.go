package replay

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/portcullis/portcullis/internal/testutil"
	"github.com/portcullis/portcullis/model"
	"github.com/portcullis/portcullis/policy"
	"github.com/portcullis/portcullis/verify"
)

var testNow = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

// testPolicy has one entry of every kind. Its RST budget is one RST a second: the
// replay must lift it (see New), or the second reset SYN in a capture would be dropped.
const testPolicy = `version: 1
governed_ports: [25]
default: pass
reset:
  rate: 1
  burst: 1
ranges:
  - name: dyn-reset
    verdict: reset
    cidrs: [100.64.0.0/16, 2001:db8:1::/48]
  - name: dyn-drop
    verdict: drop
    cidrs: [100.65.0.0/16, 2001:db8:2::/48]
  - name: staged
    verdict: monitor
    cidrs: [100.66.0.0/16, 2001:db8:3::/48]
  - name: business
    verdict: pass
    cidrs: [198.51.100.0/24]
exemptions:
  - cidr: 100.64.7.25/32
    name: bakery-mail
    reason: registered mail server
    ticket: NOC-1
quarantines:
  - cidr: 198.51.100.66/32
    name: spam-host
    verdict: reset
    reason: spam
    ticket: ABUSE-1
    expires: 2026-11-26T13:00:00Z
  - cidr: 198.51.100.77/32
    name: old-spam-host
    verdict: drop
    reason: spam
    ticket: ABUSE-2
    expires: 2026-11-26T11:00:00Z
`

func compileTestPolicy(t testing.TB) *policy.Compiled {
	t.Helper()
	p := filepath.Join(t.TempDir(), "policy.yaml")
	must(t, os.WriteFile(p, []byte(testPolicy), 0o644))
	pol, err := policy.ParseFile(p, testNow)
	must(t, err)
	c, err := policy.Compile(pol, testNow)
	must(t, err)
	return c
}

// expectation is one frame of the test capture and what the test, not the model,
// says must happen to it.
type expectation struct {
	name    string
	spec    frameSpec
	raw     []byte // instead of spec
	verdict string
	entry   string // "" = no entry judged it
	unparse bool
}

const dst4, dst6 = "192.0.2.25", "2001:db8:ffff::25"

func syn(enc encap, src string, port uint16) frameSpec {
	dst := dst4
	if strings.Contains(src, ":") {
		dst = dst6
	}
	return frameSpec{enc: enc, src: src, dst: dst, sport: 40000, dport: port, syn: true, seq: 0x11223344}
}

// expectations returns the test capture for encapsulation enc. IPv6 extension
// headers are 8 bytes each; the program walks at most model.MaxExtHeaders.
func expectations(enc encap) []expectation {
	ack := syn(enc, "100.64.1.1", 25)
	ack.syn, ack.ack, ack.payload = false, true, []byte("EHLO x\r\n")
	udp := syn(enc, "100.64.1.1", 25)
	udp.udp = true
	ext := syn(enc, "2001:db8:2::5", 25)
	ext.ext = []byte{0, 60, 43}
	long := syn(enc, "2001:db8:2::5", 25)
	long.ext = []byte{0, 60, 60, 60, 60, 60, 60, 60, 60}
	longPass := long
	longPass.src = "2001:db8:99::5"
	withData := syn(enc, "100.64.2.2", 25)
	withData.payload = []byte("fast open data")
	return []expectation{
		{name: "reset range SYN", spec: syn(enc, "100.64.1.1", 25), verdict: "reset", entry: "dyn-reset"},
		{name: "reset range SYN to 587", spec: syn(enc, "100.64.1.1", 587), verdict: "pass"},
		{name: "reset range SYN to 465", spec: syn(enc, "100.64.1.1", 465), verdict: "pass"},
		{name: "reset range ACK+data", spec: ack, verdict: "drop", entry: "dyn-reset"},
		{name: "second reset SYN, over the policy's RST budget", spec: syn(enc, "100.64.1.2", 25), verdict: "reset", entry: "dyn-reset"},
		{name: "SYN with data", spec: withData, verdict: "reset", entry: "dyn-reset"},
		{name: "drop range SYN", spec: syn(enc, "100.65.1.1", 25), verdict: "drop", entry: "dyn-drop"},
		{name: "monitor range SYN", spec: syn(enc, "100.66.1.1", 25), verdict: "monitor", entry: "staged"},
		{name: "exempt mail server", spec: syn(enc, "100.64.7.25", 25), verdict: "pass", entry: "bakery-mail"},
		{name: "quarantined host", spec: syn(enc, "198.51.100.66", 25), verdict: "reset", entry: "spam-host"},
		{name: "expired quarantine", spec: syn(enc, "198.51.100.77", 25), verdict: "pass", entry: "business"},
		{name: "unknown source", spec: syn(enc, "203.0.113.9", 25), verdict: "pass", entry: "default"},
		{name: "UDP to 25", spec: udp, verdict: "pass"},
		{name: "IPv6 reset range SYN", spec: syn(enc, "2001:db8:1::5", 25), verdict: "reset", entry: "dyn-reset"},
		{name: "IPv6 monitor", spec: syn(enc, "2001:db8:3::5", 25), verdict: "monitor", entry: "staged"},
		{name: "IPv6 extension headers", spec: ext, verdict: "drop", entry: "dyn-drop"},
		{name: "IPv6 chain too long, blocked source", spec: long, verdict: "drop", entry: "dyn-drop"},
		{name: "IPv6 chain too long, default source", spec: longPass, verdict: "pass", entry: "default"},
		{name: "IPv6 SYN to 443", spec: syn(enc, "2001:db8:1::5", 443), verdict: "pass"},
	}
}

func buildAll(t testing.TB, es []expectation) [][]byte {
	out := make([][]byte, len(es))
	for i, e := range es {
		if e.raw != nil {
			out[i] = e.raw
		} else {
			out[i] = buildFrame(t, e.spec)
		}
	}
	return out
}

// replayAll replays path and checks every frame against es.
func replayAll(t *testing.T, path string, es []expectation) (*Summary, []Result) {
	t.Helper()
	var got []Result
	s, err := File(path, compileTestPolicy(t), testNow, Options{}, func(r Result) error {
		got = append(got, r)
		return nil
	})
	if err != nil {
		t.Fatalf("replay %s: %v", path, err)
	}
	if len(got) != len(es) || s.Frames != len(es) {
		t.Fatalf("%d results, summary %d frames, want %d", len(got), s.Frames, len(es))
	}
	for i, e := range es {
		r := got[i]
		if r.Frame != i+1 {
			t.Errorf("result %d is frame %d", i, r.Frame)
		}
		if r.Verdict != e.verdict || r.Entry != e.entry || r.Judged != (e.entry != "") || r.Unparseable != e.unparse {
			t.Errorf("frame %d (%s): verdict %s entry %q unparseable %v (%s), want %s %q %v",
				r.Frame, e.name, r.Verdict, r.Entry, r.Unparseable, r.Reason, e.verdict, e.entry, e.unparse)
		}
		if len(r.Problems) > 0 {
			t.Errorf("frame %d (%s): %s", r.Frame, e.name, strings.Join(r.Problems, "; "))
		}
		if r.Reason == "" {
			t.Errorf("frame %d (%s): no reason", r.Frame, e.name)
		}
		if (r.Verdict == "reset") != (r.Reply != nil) {
			t.Errorf("frame %d (%s): verdict %s with reply %x", r.Frame, e.name, r.Verdict, r.Reply)
		}
	}
	return s, got
}

func TestReplayEthernetEncapsulations(t *testing.T) {
	testutil.RequireRoot(t)
	for _, enc := range []encap{encPlain, encVLAN, encQinQ, encPPPoE} {
		t.Run([]string{"plain", "vlan", "qinq", "pppoe"}[enc], func(t *testing.T) {
			es := expectations(enc)
			frames := buildAll(t, es)
			s, got := replayAll(t, writePcap(t, "eth.pcap", LinkTypeEthernet, frames), es)
			// The RSTs: decoded here with gopacket, independently of CheckRST.
			for i, r := range got {
				if r.Reply != nil {
					checkReply(t, frames[i], r.Reply, enc)
				}
			}
			want := map[string]int{}
			for _, e := range es {
				want[e.verdict]++
			}
			for _, v := range Verdicts {
				if s.Verdicts[v] != want[v] {
					t.Errorf("summary: %d %s, want %d", s.Verdicts[v], v, want[v])
				}
			}
			if s.Entries["dyn-reset"]["reset"] != 4 || s.Entries["dyn-reset"]["drop"] != 1 || s.Entries["spam-host"]["reset"] != 1 {
				t.Errorf("summary entries: %v", s.Entries)
			}
			// Port-25 SYNs: every SYN spec to 25 over TCP.
			// Port-25 SYNs as the parser sees them: not the two whose IPv6 chain
			// is too long to reach TCP.
			if s.Port25SYNs["reset"] != 5 || s.Port25SYNs["drop"] != 2 || s.Port25SYNs["monitor"] != 2 || s.Port25SYNs["pass"] != 3 {
				t.Errorf("port-25 SYNs: %v", s.Port25SYNs)
			}
			if s.Resets != 5 || s.Problems != 0 || s.Unparseable != 0 {
				t.Errorf("summary: %+v", s)
			}
		})
	}
}

// checkReply decodes an RST the program built for syn.
func checkReply(t *testing.T, syn, rst []byte, enc encap) {
	t.Helper()
	in := gopacket.NewPacket(syn, layers.LayerTypeEthernet, gopacket.Default)
	out := gopacket.NewPacket(rst, layers.LayerTypeEthernet, gopacket.Default)
	if out.ErrorLayer() != nil {
		t.Fatalf("RST does not decode: %v", out.ErrorLayer().Error())
	}
	itcp := tcpOf(in)
	otcp, ok := out.Layer(layers.LayerTypeTCP).(*layers.TCP)
	if !ok || itcp == nil {
		t.Fatal("no TCP layer")
	}
	if !otcp.RST || !otcp.ACK || otcp.SYN || otcp.SrcPort != itcp.DstPort || otcp.DstPort != itcp.SrcPort {
		t.Errorf("RST flags/ports wrong: %v", otcp)
	}
	if otcp.Ack != itcp.Seq+1+uint32(len(itcp.Payload)) {
		t.Errorf("ack %d, want %d", otcp.Ack, itcp.Seq+1+uint32(len(itcp.Payload)))
	}
	if enc == encPPPoE && out.Layer(layers.LayerTypePPPoE) == nil {
		t.Errorf("RST lost its PPPoE header")
	}
	if (enc == encVLAN || enc == encQinQ) && out.Layer(layers.LayerTypeDot1Q) == nil {
		t.Errorf("RST lost its VLAN tag")
	}
	var netl gopacket.NetworkLayer
	if o4, ok := out.Layer(layers.LayerTypeIPv4).(*layers.IPv4); ok {
		i4 := in.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		if !o4.SrcIP.Equal(i4.DstIP) || !o4.DstIP.Equal(i4.SrcIP) {
			t.Errorf("addresses not swapped")
		}
		cp := *o4
		must(t, cp.SerializeTo(gopacket.NewSerializeBuffer(), gopacket.SerializeOptions{ComputeChecksums: true}))
		if cp.Checksum != o4.Checksum {
			t.Errorf("IPv4 checksum %#x, want %#x", o4.Checksum, cp.Checksum)
		}
		netl = o4
	} else {
		o6 := out.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
		i6 := in.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
		if !o6.SrcIP.Equal(i6.DstIP) || !o6.DstIP.Equal(i6.SrcIP) {
			t.Errorf("addresses not swapped")
		}
		netl = o6
	}
	cp := *otcp
	must(t, cp.SetNetworkLayerForChecksum(netl))
	must(t, cp.SerializeTo(gopacket.NewSerializeBuffer(), gopacket.SerializeOptions{ComputeChecksums: true}))
	if cp.Checksum != otcp.Checksum {
		t.Errorf("TCP checksum %#x, want %#x", otcp.Checksum, cp.Checksum)
	}
}

// ethernetFrames returns the plain test capture plus frames the link layers must
// carry: an ARP request and an IPv4 header cut short.
func plainExpectations(t testing.TB) []expectation {
	es := expectations(encPlain)
	arp := gopacket.NewSerializeBuffer()
	must(t, gopacket.SerializeLayers(arp, gopacket.SerializeOptions{FixLengths: true},
		&layers.Ethernet{SrcMAC: subMAC, DstMAC: gwMAC, EthernetType: layers.EthernetTypeARP},
		&layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
			Operation: 1, SourceHwAddress: subMAC, SourceProtAddress: []byte{100, 64, 1, 1}, DstHwAddress: make([]byte, 6), DstProtAddress: []byte{100, 64, 0, 1}}))
	short := buildFrame(t, syn(encPlain, "100.64.1.1", 25))[:14+12]
	return append(es,
		expectation{name: "ARP", raw: arp.Bytes(), verdict: "pass"},
		expectation{name: "IPv4 header cut short", raw: short, verdict: "pass", unparse: true})
}

func TestReplayLinkTypes(t *testing.T) {
	testutil.RequireRoot(t)
	es := plainExpectations(t)
	frames := buildAll(t, es)
	var sll, sll2 [][]byte
	for _, f := range frames {
		sll = append(sll, toSLL(f))
		sll2 = append(sll2, toSLL2(f))
	}
	// Raw IP has no ARP: judge the IP frames only.
	var rawES []expectation
	var raw [][]byte
	for i, e := range es {
		if et := layers.EthernetType(uint16(frames[i][12])<<8 | uint16(frames[i][13])); et == layers.EthernetTypeIPv4 || et == layers.EthernetTypeIPv6 {
			rawES, raw = append(rawES, e), append(raw, frames[i][14:])
		}
	}
	cases := []struct {
		name string
		path string
		es   []expectation
	}{
		{"pcap Ethernet", writePcap(t, "eth.pcap", LinkTypeEthernet, frames), es},
		{"pcap gzipped", gzipFile(t, writePcap(t, "eth.pcap", LinkTypeEthernet, frames)), es},
		{"pcapng Ethernet", writePcapNG(t, "eth.pcapng", []layers.LinkType{layers.LinkTypeEthernet}, frames, func(int) int { return 0 }), es},
		{"pcap SLL", writePcap(t, "sll.pcap", LinkTypeLinuxSLL, sll), es},
		{"pcapng SLL", writePcapNG(t, "sll.pcapng", []layers.LinkType{layers.LinkTypeLinuxSLL}, sll, func(int) int { return 0 }), es},
		{"pcap SLL2", writePcap(t, "sll2.pcap", LinkTypeLinuxSLL2, sll2), es},
		{"pcapng SLL2", writeNGByHand(t, "sll2.pcapng", LinkTypeLinuxSLL2, sll2), es},
		{"pcap raw IP", writePcap(t, "raw.pcap", LinkTypeRaw, raw), rawES},
		{"pcap raw IPv4/IPv6 (228)", writePcap(t, "raw4.pcap", LinkTypeIPv4, raw[:1]), rawES[:1]},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, got := replayAll(t, c.path, c.es)
			if s.Unparseable != 1 && len(c.es) > 2 {
				t.Errorf("unparseable %d, want 1", s.Unparseable)
			}
			for i, r := range got {
				if r.Reply != nil {
					// The reply answers the synthetic Ethernet frame: its
					// MACs are ours, the rest must be right.
					if probs := verify.CheckRST(buildFrame(t, c.es[i].spec), r.Reply); len(probs) > 0 {
						t.Errorf("frame %d: %v", r.Frame, probs)
					}
				}
			}
		})
	}
}

// A pcapng with two interfaces of different link types: each record is given an
// Ethernet header by its own interface's type.
func TestReplayPcapNGMixedInterfaces(t *testing.T) {
	testutil.RequireRoot(t)
	es := expectations(encPlain)
	frames := buildAll(t, es)
	recs := make([][]byte, len(frames))
	for i, f := range frames {
		recs[i] = f
		if i%2 == 1 {
			recs[i] = toSLL(f)
		}
	}
	p := writePcapNG(t, "mixed.pcapng", []layers.LinkType{layers.LinkTypeEthernet, layers.LinkTypeLinuxSLL}, recs, func(i int) int { return i % 2 })
	s, _ := replayAll(t, p, es)
	if len(s.LinkTypes) != 2 {
		t.Errorf("link types %v", s.LinkTypes)
	}
}

// The replay must report it when the program and the model disagree: here the model
// is handed tables that differ from the ones the program holds.
func TestReplayReportsDisagreement(t *testing.T) {
	testutil.RequireRoot(t)
	c := compileTestPolicy(t)
	r, err := New(c, testNow, Options{})
	must(t, err)
	defer r.Close()
	frame := buildFrame(t, syn(encPlain, "100.65.1.1", 25))
	res, err := r.Judge(Frame{Index: 1, Data: frame, LinkType: LinkTypeEthernet})
	must(t, err)
	if res.Verdict != "drop" || len(res.Problems) != 0 {
		t.Fatalf("before: %s %v", res.Verdict, res.Problems)
	}
	for i := range r.tables.Ranges {
		if r.tables.RuleName(r.tables.Ranges[i].Rule) == "dyn-drop" {
			r.tables.Ranges[i].Verdict = model.Pass
		}
	}
	*r.tables = model.Tables{DefaultVerdict: r.tables.DefaultVerdict, Governed: r.tables.Governed,
		Ranges: r.tables.Ranges, Quarantines: r.tables.Quarantines, RuleNames: r.tables.RuleNames} // drop the cached index
	res, err = r.Judge(Frame{Index: 2, Data: frame, LinkType: LinkTypeEthernet})
	must(t, err)
	if res.Verdict != "drop" || len(res.Problems) == 0 || !strings.Contains(strings.Join(res.Problems, " "), "action XDP_PASS, program XDP_DROP") {
		t.Fatalf("after: %s %v", res.Verdict, res.Problems)
	}
}

func TestCheckRSTFindsFaults(t *testing.T) {
	testutil.RequireRoot(t)
	c := compileTestPolicy(t)
	r, err := New(c, testNow, Options{})
	must(t, err)
	defer r.Close()
	frame := buildFrame(t, syn(encPlain, "100.64.1.1", 25))
	res, err := r.Judge(Frame{Index: 1, Data: frame, LinkType: LinkTypeEthernet})
	must(t, err)
	if res.Reply == nil || len(verify.CheckRST(frame, res.Reply)) != 0 {
		t.Fatalf("reply %x: %v", res.Reply, verify.CheckRST(frame, res.Reply))
	}
	for _, tc := range []struct {
		off  int
		want string
	}{
		{len(res.Reply) - 7, "flags"},        // TCP flags byte
		{len(res.Reply) - 4, "TCP checksum"}, // TCP checksum
		{14 + 10, "IPv4 header checksum"},    // IP checksum
		{14 + 12, "addresses not swapped"},   // source address
		{len(res.Reply) - 20, "ports"},       // source port
		{0, "MACs"},
	} {
		bad := append([]byte(nil), res.Reply...)
		bad[tc.off] ^= 0x40
		probs := strings.Join(verify.CheckRST(frame, bad), "; ")
		if !strings.Contains(probs, tc.want) {
			t.Errorf("byte %d flipped: %q, want it to mention %q", tc.off, probs, tc.want)
		}
	}
}

// Capture errors need no program: they are found before or while reading.
func TestCaptureErrors(t *testing.T) {
	frames := buildAll(t, expectations(encPlain))[:3]
	good := writePcap(t, "good.pcap", LinkTypeEthernet, frames)
	gb, _ := os.ReadFile(good)
	goodNG := writePcapNG(t, "good.pcapng", []layers.LinkType{layers.LinkTypeEthernet}, frames, func(int) int { return 0 })
	nb, _ := os.ReadFile(goodNG)

	hugeLen := append([]byte(nil), gb...)
	copy(hugeLen[24+8:], []byte{0xff, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff, 0x7f}) // first record's lengths
	badBlock := append([]byte(nil), nb...)
	// The last block's leading length, made impossible.
	last := len(nb) - int(uint32(nb[len(nb)-4])|uint32(nb[len(nb)-3])<<8)
	badBlock[last+4] = 0xfe
	wrongLT := append([]byte(nil), gb...)
	wrongLT[20] = 105 // IEEE 802.11

	cases := []struct {
		name   string
		path   string
		frames int // judged before the error
		want   []string
	}{
		{"missing", filepath.Join(t.TempDir(), "nope.pcap"), 0, []string{"nope.pcap: cannot open: no such file"}},
		{"directory", t.TempDir(), 0, []string{"is a directory"}},
		{"empty", writeBytes(t, "empty.pcap", nil), 0, []string{"empty.pcap: empty file"}},
		{"text", writeBytes(t, "notes.txt", []byte("hello, this is not a capture\n")), 0, []string{"notes.txt: not a pcap or pcapng capture (the file starts with 0x68656c6c)"}},
		{"pcap header cut", writeBytes(t, "hdr.pcap", gb[:20]), 0, []string{"hdr.pcap: file header truncated"}},
		{"pcap cut in a record", writeBytes(t, "cut.pcap", gb[:len(gb)-10]), 2, []string{"cut.pcap: record 3: truncated"}},
		{"pcap cut in a record header", writeBytes(t, "cuth.pcap", gb[:24+16+len(frames[0])+5]), 1, []string{"cuth.pcap: record 2: truncated"}},
		{"pcap huge record", writeBytes(t, "huge.pcap", hugeLen), 0, []string{"huge.pcap: record 1: corrupt"}},
		{"pcap wrong link type", writeBytes(t, "wifi.pcap", wrongLT), 0, []string{"wifi.pcap: unsupported link type 105 (802.11)", "replay reads Ethernet"}},
		{"pcapng cut", writeBytes(t, "cut.pcapng", nb[:len(nb)-10]), 2, []string{"cut.pcapng: record 3: truncated: block at offset"}},
		{"pcapng bad block length", writeBytes(t, "bad.pcapng", badBlock), 2, []string{"bad.pcapng: record 3: corrupt"}},
		{"pcapng header only", writeBytes(t, "shb.pcapng", nb[:8]), 0, []string{"shb.pcapng: damaged pcapng section header"}},
		{"pcapng unknown link type", writeNGByHand(t, "lt.pcapng", 300, frames), 0, []string{"lt.pcapng: record 1: unsupported link type 300 (LINKTYPE 300)"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n, err := readAll(c.path)
			if err == nil || !errors.Is(err, ErrCapture) {
				t.Fatalf("read %d frames, err %v; want an ErrCapture", n, err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if n != c.frames {
				t.Errorf("%d frames before the error, want %d", n, c.frames)
			}
		})
	}
	for _, p := range []string{good, goodNG} {
		if n, err := readAll(p); err != nil || n != 3 {
			t.Errorf("%s: %d frames, %v", p, n, err)
		}
	}
}

// gzipFile writes a gzipped copy of the file at path and returns its path.
func gzipFile(t *testing.T, path string) string {
	b, err := os.ReadFile(path)
	must(t, err)
	var z bytes.Buffer
	w := gzip.NewWriter(&z)
	_, err = w.Write(b)
	must(t, err)
	must(t, w.Close())
	return writeBytes(t, "capture.pcap.gz", z.Bytes())
}

func readAll(path string) (int, error) {
	c, err := Open(path)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	n := 0
	for {
		_, err := c.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return n, nil
			}
			return n, err
		}
		n++
	}
}

// FuzzCapture feeds arbitrary bytes to the capture reader: it may fail, never panic
// nor allocate without bound.
func FuzzCapture(f *testing.F) {
	frames := buildAll(f, expectations(encPlain))[:2]
	for _, p := range []string{
		writePcap(f, "a.pcap", LinkTypeEthernet, frames),
		writePcapNG(f, "a.pcapng", []layers.LinkType{layers.LinkTypeEthernet}, frames, func(int) int { return 0 }),
		writeNGByHand(f, "b.pcapng", LinkTypeLinuxSLL2, [][]byte{toSLL2(frames[0])}),
	} {
		b, _ := os.ReadFile(p)
		f.Add(b)
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		p := filepath.Join(dir, fmt.Sprintf("f%d", os.Getpid()))
		must(t, os.WriteFile(p, b, 0o644))
		if _, err := readAll(p); err != nil && !errors.Is(err, ErrCapture) {
			t.Fatalf("error not marked ErrCapture: %v", err)
		}
	})
}

// Frames the kernel refuses to run (shorter than an Ethernet header) and records too
// short for their link-layer header are unparseable passes, judged by nobody.
func TestReplayShortFrames(t *testing.T) {
	testutil.RequireRoot(t)
	r, err := New(compileTestPolicy(t), testNow, Options{})
	must(t, err)
	defer r.Close()
	for _, fr := range []Frame{
		{Index: 1, LinkType: LinkTypeEthernet, Data: make([]byte, 10)},
		{Index: 2, LinkType: LinkTypeLinuxSLL, LinkErr: "8 bytes, shorter than a Linux cooked (SLL) header"},
	} {
		res, err := r.Judge(fr)
		must(t, err)
		if res.Verdict != "pass" || !res.Unparseable || res.Judged || res.Reason == "" || len(res.Problems) > 0 {
			t.Errorf("frame %d: %+v", fr.Index, res)
		}
	}
	if f, why, err := toEthernet(LinkTypeLinuxSLL2, make([]byte, 19)); f != nil || err != nil || !strings.Contains(why, "SLL2") {
		t.Errorf("short SLL2: %x %q %v", f, why, err)
	}
}

// Two exemptions with one name share their counters in the data plane (by label). The
// replay must neither report a phantom second rule nor blame the wrong one.
func TestReplaySharedLabel(t *testing.T) {
	testutil.RequireRoot(t)
	src := strings.Replace(testPolicy, "exemptions:\n", `exemptions:
  - cidr: 100.64.8.0/24
    name: shared-mail
    reason: mail servers
    ticket: NOC-2
  - cidr: 100.64.9.0/24
    name: shared-mail
    reason: mail servers
    ticket: NOC-2
  - cidr: 100.64.8.8/32
    name: inner-mail
    reason: one server
    ticket: NOC-3
`, 1)
	p := filepath.Join(t.TempDir(), "policy.yaml")
	must(t, os.WriteFile(p, []byte(src), 0o644))
	pol, err := policy.ParseFile(p, testNow)
	must(t, err)
	c, err := policy.Compile(pol, testNow)
	must(t, err)
	r, err := New(c, testNow, Options{})
	must(t, err)
	defer r.Close()
	for i, tc := range []struct{ src, entry string }{
		{"100.64.9.1", "shared-mail"}, {"100.64.8.8", "inner-mail"}, {"100.64.8.1", "shared-mail"}, {"100.64.1.1", "dyn-reset"},
	} {
		res, err := r.Judge(Frame{Index: i + 1, LinkType: LinkTypeEthernet, Data: buildFrame(t, syn(encPlain, tc.src, 25))})
		must(t, err)
		if res.Entry != tc.entry || len(res.Problems) > 0 {
			t.Errorf("%s: entry %q, want %q; %v", tc.src, res.Entry, tc.entry, res.Problems)
		}
	}
}

// A SYN behind IPv6 extension headers (hop-by-hop first, as a router-alert or jumbo
// option would put it) from a reset range gets an RST whose ack counts only the TCP
// payload: the extension headers are part of the IPv6 payload length, not of TCP's.
func TestReplayExtensionHeaderSYNReset(t *testing.T) {
	testutil.RequireRoot(t)
	var es []expectation
	for _, ext := range [][]byte{{0}, {0, 60}, {60}, {0, 43, 60}} {
		s := syn(encPlain, "2001:db8:1::5", 25)
		s.ext = ext
		es = append(es, expectation{name: fmt.Sprintf("SYN behind %v", ext), spec: s, verdict: "reset", entry: "dyn-reset"})
		d := s
		d.payload = []byte("fast open data")
		es = append(es, expectation{name: fmt.Sprintf("SYN with data behind %v", ext), spec: d, verdict: "reset", entry: "dyn-reset"})
	}
	frames := buildAll(t, es)
	s, got := replayAll(t, writePcap(t, "hbh.pcap", LinkTypeEthernet, frames), es)
	if s.Problems != 0 || s.Resets != len(es) {
		t.Errorf("summary: %d disagreements, %d resets; want 0, %d", s.Problems, s.Resets, len(es))
	}
	for i, r := range got {
		if r.Reply != nil {
			checkReply(t, frames[i], r.Reply, encPlain)
		}
	}
}

// A SYN longer than the kernel's test run hands the program in one buffer (a jumbo
// frame, as a capture on a 9000-byte MTU holds) is judged on its headers, and its RST
// compared as the program built it: not as a disagreement because the test run
// returns the frame's unseen fragments after it.
func TestReplayJumboSYNReset(t *testing.T) {
	testutil.RequireRoot(t)
	var es []expectation
	for _, src := range []string{"100.64.1.1", "2001:db8:1::5"} {
		s := syn(encPlain, src, 25)
		s.payload = make([]byte, 8900)
		es = append(es, expectation{name: "jumbo SYN from " + src, spec: s, verdict: "reset", entry: "dyn-reset"})
	}
	frames := buildAll(t, es)
	s, got := replayAll(t, writePcap(t, "jumbo.pcap", LinkTypeEthernet, frames), es)
	if s.Problems != 0 || s.Resets != len(es) {
		t.Errorf("summary: %d disagreements, %d resets; want 0, %d", s.Problems, s.Resets, len(es))
	}
	for i, r := range got {
		if r.Reply != nil {
			checkReply(t, frames[i], r.Reply, encPlain)
		}
	}
}

// Relays and scopes replay as on the router: a SYN to the relay passes from a reset
// range; a scoped range decides only with --interface naming its interface, which need
// not exist on the machine replaying.
func TestReplayRelaysAndInterface(t *testing.T) {
	testutil.RequireRoot(t)
	src := `version: 1
ranges:
  - {name: dyn, verdict: reset, cidrs: [100.64.0.0/12]}
  - {name: partner, verdict: pass, cidrs: [100.64.1.0/24], interfaces: [wholesale0]}
relays:
  - {name: smarthost, cidrs: [192.0.2.26], reason: ours, owner: mail}
`
	pol, err := policy.Parse("p.yaml", []byte(src), testNow)
	must(t, err)
	c, err := policy.Compile(pol, testNow)
	must(t, err)
	toRelay := syn(encPlain, "100.64.5.5", 25)
	toRelay.dst = "192.0.2.26"
	frames := []struct {
		spec          frameSpec
		ifname        string
		verdict, rule string
	}{
		{syn(encPlain, "100.64.5.5", 25), "", "reset", "dyn"},
		{toRelay, "", "pass", "smarthost"},
		{syn(encPlain, "100.64.1.10", 25), "", "reset", "dyn"},
		{syn(encPlain, "100.64.1.10", 25), "wholesale0", "pass", "partner"},
		{syn(encPlain, "100.64.1.10", 25), "other0", "reset", "dyn"},
	}
	for i, f := range frames {
		r, err := New(c, testNow, Options{Interface: f.ifname})
		must(t, err)
		res, err := r.Judge(Frame{Index: i + 1, Data: buildFrame(t, f.spec), LinkType: LinkTypeEthernet})
		r.Close()
		must(t, err)
		if res.Verdict != f.verdict || res.Entry != f.rule || len(res.Problems) != 0 {
			t.Errorf("%s -> %s on %q: %s by %q, want %s by %q (problems %v)", f.spec.src, f.spec.dst, f.ifname, res.Verdict, res.Entry, f.verdict, f.rule, res.Problems)
		}
	}
}
