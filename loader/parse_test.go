package loader

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/portcullis/portcullis/model"
)

var (
	dropSrc  = sources[0]
	resetSrc = sources[1]
	passSrc  = sources[2]
)

type parseCase struct {
	name       string
	frame      frameSpec
	wantAction model.Action
	wantPath   model.Reason
}

func runParseCases(t *testing.T, cases []parseCase) {
	tables := testTables(time.Now())
	p := applied(t, tables)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			frame := buildFrame(t, c.frame)
			d, act := compareWithModel(t, p, tables, frame)
			if act != c.wantAction {
				t.Errorf("action %v, want %v", act, c.wantAction)
			}
			if d.Path != c.wantPath {
				t.Errorf("model path %v, want %v", d.Path, c.wantPath)
			}
			if act == model.ActionTX {
				_, out, _ := p.Run(frame)
				checkRST(t, frame, out)
			}
		})
	}
}

func TestIPv4Options(t *testing.T) {
	routerAlert := []byte{0x94, 4, 0, 0}
	// 40 bytes: the most IPv4 allows (ihl 15); a record-route option padded out.
	longest := append([]byte{0x07, 39, 4}, make([]byte, 37)...)
	var cases []parseCase
	for _, o := range []struct {
		name string
		opt  []byte
	}{{"router-alert", routerAlert}, {"record-route-40", longest}} {
		for _, enc := range []encap{encPlain, encVLANPPPoE} {
			cases = append(cases,
				parseCase{fmt.Sprintf("%s/%s/reset-syn", o.name, enc), frameSpec{enc: enc, src: resetSrc.v4, dst: dst4, sport: 5, dport: 25, syn: true, seq: 7, ipOpts: o.opt, tcpOpts: true, payload: []byte("data")}, model.ActionTX, model.ReasonJudged},
				parseCase{fmt.Sprintf("%s/%s/drop", o.name, enc), frameSpec{enc: enc, src: dropSrc.v4, dst: dst4, sport: 5, dport: 25, syn: true, ipOpts: o.opt}, model.ActionDrop, model.ReasonJudged},
				parseCase{fmt.Sprintf("%s/%s/587", o.name, enc), frameSpec{enc: enc, src: dropSrc.v4, dst: dst4, sport: 5, dport: 587, syn: true, ipOpts: o.opt}, model.ActionPass, model.ReasonNotGoverned},
			)
		}
	}
	runParseCases(t, cases)
}

func TestIPv6ExtensionChains(t *testing.T) {
	var cases []parseCase
	kinds := []byte{0, 60, 43, 51} // hop-by-hop, destination options, routing, AH
	for n := 0; n <= model.MaxExtHeaders+1; n++ {
		ext := make([]extHdr, n)
		for i := range ext {
			ext[i].proto = kinds[i%len(kinds)]
		}
		action, path := model.ActionDrop, model.ReasonJudged
		resetAction := model.ActionTX
		passPath := model.ReasonJudged
		if n > model.MaxExtHeaders {
			// Past the limit: blocked sources are dropped as evasion, others pass.
			path, resetAction, passPath = model.ReasonEvasion, model.ActionDrop, model.ReasonEvasion
		}
		cases = append(cases,
			parseCase{fmt.Sprintf("%d-headers/drop", n), frameSpec{src: dropSrc.v6, dst: dst6, sport: 5, dport: 25, syn: true, ext: ext}, action, path},
			parseCase{fmt.Sprintf("%d-headers/reset", n), frameSpec{enc: encVLAN, src: resetSrc.v6, dst: dst6, sport: 5, dport: 25, syn: true, ext: ext, payload: []byte("x")}, resetAction, path},
			parseCase{fmt.Sprintf("%d-headers/pass-range", n), frameSpec{src: passSrc.v6, dst: dst6, sport: 5, dport: 25, syn: true, ext: ext}, model.ActionPass, passPath},
		)
		if n <= model.MaxExtHeaders {
			cases = append(cases, parseCase{fmt.Sprintf("%d-headers/465", n), frameSpec{src: dropSrc.v6, dst: dst6, sport: 5, dport: 465, syn: true, ext: ext}, model.ActionPass, model.ReasonNotGoverned})
		}
	}
	runParseCases(t, cases)
}

func TestFragments(t *testing.T) {
	runParseCases(t, []parseCase{
		{"v4/non-first", frameSpec{src: dropSrc.v4, dst: dst4, sport: 5, dport: 25, ack: true, frag: &fragSpec{offset: 3, more: true}, payload: make([]byte, 24)}, model.ActionPass, model.ReasonFragment},
		{"v4/last", frameSpec{src: dropSrc.v4, dst: dst4, sport: 5, dport: 25, ack: true, frag: &fragSpec{offset: 3}}, model.ActionPass, model.ReasonFragment},
		{"v4/first", frameSpec{src: dropSrc.v4, dst: dst4, sport: 5, dport: 25, ack: true, frag: &fragSpec{more: true}, payload: make([]byte, 24)}, model.ActionDrop, model.ReasonJudged},
		{"v4/first-syn-reset-range", frameSpec{src: resetSrc.v4, dst: dst4, sport: 5, dport: 25, syn: true, frag: &fragSpec{more: true}, payload: make([]byte, 24)}, model.ActionDrop, model.ReasonJudged},
		{"v4/first-587", frameSpec{src: dropSrc.v4, dst: dst4, sport: 5, dport: 587, frag: &fragSpec{more: true}}, model.ActionPass, model.ReasonNotGoverned},
		{"v6/non-first", frameSpec{src: dropSrc.v6, dst: dst6, sport: 5, dport: 25, ext: []extHdr{{proto: 44, frag: fragSpec{offset: 2, more: true}}}}, model.ActionPass, model.ReasonFragment},
		{"v6/first", frameSpec{src: dropSrc.v6, dst: dst6, sport: 5, dport: 25, syn: true, ext: []extHdr{{proto: 44, frag: fragSpec{more: true}}}}, model.ActionDrop, model.ReasonJudged},
		{"v6/atomic-fragment-syn", frameSpec{src: resetSrc.v6, dst: dst6, sport: 5, dport: 25, syn: true, ext: []extHdr{{proto: 44}}}, model.ActionTX, model.ReasonJudged},
		{"v6/hop-then-non-first", frameSpec{src: dropSrc.v6, dst: dst6, sport: 5, dport: 25, ext: []extHdr{{proto: 0}, {proto: 44, frag: fragSpec{offset: 1}}}}, model.ActionPass, model.ReasonFragment},
	})
}

// A first fragment that carries only the first 8 bytes of TCP (RFC 1858's tiny
// fragment) still shows the ports and is judged on them.
func TestTinyFirstFragment(t *testing.T) {
	tables := testTables(time.Now())
	p := applied(t, tables)
	full := buildFrame(t, frameSpec{src: dropSrc.v4, dst: dst4, sport: 5, dport: 25, syn: true, frag: &fragSpec{more: true}})
	tiny := append([]byte{}, full[:14+20+8]...)
	tiny[14+2], tiny[14+3] = 0, 28 // IPv4 total length
	d, act := compareWithModel(t, p, tables, tiny)
	if act != model.ActionDrop || !d.Packet.PortsOnly {
		t.Fatalf("tiny first fragment: %v (ports only %v), want drop", act, d.Packet.PortsOnly)
	}
	// The same truncation without MF is just a truncated packet: untouched.
	tiny[14+6] = 0
	if d, act := compareWithModel(t, p, tables, tiny); act != model.ActionPass || d.Path != model.ReasonMalformed {
		t.Fatalf("truncated non-fragment: %v %v, want pass/malformed", act, d.Path)
	}
}

func TestMalformed(t *testing.T) {
	tables := testTables(time.Now())
	p := applied(t, tables)
	base := buildFrame(t, frameSpec{src: dropSrc.v4, dst: dst4, sport: 5, dport: 25, syn: true})
	mutate := func(f func([]byte)) []byte {
		b := append([]byte{}, base...)
		f(b)
		return b
	}
	for name, frame := range map[string][]byte{
		"ihl-4":        mutate(func(b []byte) { b[14] = 0x44 }),
		"version-6":    mutate(func(b []byte) { b[14] = 0x65 }),
		"tcp-doff-4":   mutate(func(b []byte) { b[14+20+12] = 0x40 }),
		"ihl-past-end": mutate(func(b []byte) { b[14] = 0x4f }),
	} {
		t.Run(name, func(t *testing.T) {
			if d, act := compareWithModel(t, p, tables, frame); act != model.ActionPass || d.Path != model.ReasonMalformed {
				t.Fatalf("%v %v, want pass/malformed", act, d.Path)
			}
		})
	}
}

// Every truncation of every valid frame, byte by byte: the program agrees with the
// model, and never blocks a packet the model did not judge (but for one with more VLAN
// tags than the parse reads).
func TestTruncations(t *testing.T) {
	tables := testTables(time.Now())
	p := applied(t, tables)
	n := 0
	for _, full := range seedFrames(t) {
		for l := 14; l < len(full); l++ {
			for _, link := range []model.Link{model.LinkEthernet, model.LinkRawIP} {
				d, act := compareWithModelOn(t, link, p, tables, full[:l])
				if act != model.ActionPass && !d.Judged && d.Path != model.ReasonTooManyTags {
					t.Fatalf("%v link, truncated to %d: %v without judgement", link, l, act)
				}
				n++
			}
		}
	}
	t.Logf("%d truncated frames agree", n)
}

// TestPPPProtocols: what each PPP protocol the kernel may route does, in both forms of
// the protocol field (2 bytes, or 1 with protocol-field compression). Every frame is
// also compared with the model, byte for byte.
func TestPPPProtocols(t *testing.T) {
	tables := testTables(time.Now())
	p := applied(t, tables)
	syn := func(enc encap, src source, port uint16) []byte {
		return buildFrame(t, frameSpec{enc: enc, src: src.v4, dst: dst4, sport: 40000, dport: port, syn: true, seq: 7})
	}
	// vj turns a PPPoE IPv4 frame into PPP VJ-uncompressed TCP: protocol 0x002f and a VJ
	// slot number (3) where the IP header's protocol byte was.
	vj := func(f []byte, off int) []byte {
		f = setPPPProto(f, off, 0x002f)
		f[off+8+9] = 3
		return f
	}
	cases := []struct {
		name     string
		frame    []byte
		want     model.Action
		wantPath model.Reason
	}{
		{"pfc/ipv4/drop-range/25", syn(encPPPoEPFC, dropSrc, 25), model.ActionDrop, model.ReasonJudged},
		{"pfc/ipv4/reset-range/25", syn(encPPPoEPFC, resetSrc, 25), model.ActionTX, model.ReasonJudged},
		{"pfc/ipv4/drop-range/587", syn(encPPPoEPFC, dropSrc, 587), model.ActionPass, model.ReasonNotGoverned},
		{"pfc/ipv6/reset-range/25", buildFrame(t, frameSpec{enc: encVLANPPPoEPFC, src: resetSrc.v6, dst: dst6, sport: 1, dport: 25, syn: true}), model.ActionTX, model.ReasonJudged},
		{"vj-uncompressed/drop-range/25", vj(syn(encPPPoE, dropSrc, 25), 14), model.ActionDrop, model.ReasonJudged},
		// A VJ frame is never answered (the reply would need another PPP protocol): dropped.
		{"vj-uncompressed/reset-range/25", vj(syn(encPPPoE, resetSrc, 25), 14), model.ActionDrop, model.ReasonJudged},
		{"vj-uncompressed/drop-range/587", vj(syn(encPPPoE, dropSrc, 587), 14), model.ActionPass, model.ReasonNotGoverned},
		{"vj-uncompressed-pfc/drop-range/25", compressPPPProto(t, vj(syn(encPPPoE, dropSrc, 25), 14), 14), model.ActionDrop, model.ReasonJudged},
		// VJ compressed: no addresses, no ports; it only continues a judged 0x2f header.
		{"vj-compressed", setPPPProto(syn(encPPPoE, dropSrc, 25), 14, 0x002d), model.ActionPass, model.ReasonNotTCP},
		{"ccp-compressed", setPPPProto(syn(encPPPoE, dropSrc, 25), 14, 0x00fd), model.ActionPass, model.ReasonNotTCP},
		{"multilink", setPPPProto(syn(encPPPoE, dropSrc, 25), 14, 0x003d), model.ActionPass, model.ReasonNotTCP},
		{"mpls", setPPPProto(syn(encPPPoE, dropSrc, 25), 14, 0x0281), model.ActionPass, model.ReasonNotTCP},
		{"lcp", setPPPProto(syn(encPPPoE, dropSrc, 25), 14, 0xc021), model.ActionPass, model.ReasonNotTCP},
		// The kernel's pppoe_rcv checks neither the version/type nor the code byte.
		{"pppoe-ver-type-0x00", setByte(syn(encPPPoE, dropSrc, 25), 14, 0x00), model.ActionDrop, model.ReasonJudged},
		{"pppoe-ver-type-0x21", setByte(syn(encPPPoE, dropSrc, 25), 14, 0x21), model.ActionDrop, model.ReasonJudged},
		{"pppoe-code-0x09", setByte(syn(encPPPoE, dropSrc, 25), 15, 0x09), model.ActionDrop, model.ReasonJudged},
		{"pppoe-code-0xa7-pfc", setByte(syn(encPPPoEPFC, resetSrc, 25), 15, 0xa7), model.ActionTX, model.ReasonJudged},
		// 0x21 0x00: an odd first byte is the whole (1-byte) protocol, IPv4, so the IP
		// header would start at the 0x00: malformed, as the kernel finds it too.
		{"odd-first-byte-is-the-1-byte-form", setPPPProto(syn(encPPPoE, dropSrc, 25), 14, 0x2100), model.ActionPass, model.ReasonMalformed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d, act := compareWithModel(t, p, tables, c.frame)
			if act != c.want {
				t.Errorf("action %v, want %v", act, c.want)
			}
			if d.Path != c.wantPath {
				t.Errorf("path %v, want %v", d.Path, c.wantPath)
			}
			if act == model.ActionTX {
				_, out, _ := p.Run(c.frame)
				checkRST(t, c.frame, out)
			}
		})
	}
}

// TestPFCResetBytes: the RST for a SYN with a 1-byte PPP protocol keeps the 1-byte
// form and sets the PPPoE length to match, byte for byte.
func TestPFCResetBytes(t *testing.T) {
	tables := testTables(time.Now())
	p := applied(t, tables)
	frame := buildFrame(t, frameSpec{enc: encPPPoEPFC, src: resetSrc.v4, dst: dst4, sport: 40000, dport: 25, syn: true, seq: 0x11223344})
	act, out, err := p.Run(frame)
	if err != nil || act != model.ActionTX {
		t.Fatalf("action %v (%v), want TX", act, err)
	}
	want := mustHex(t, ""+
		"020000000001"+"020000000002"+"8864"+ // MACs swapped, PPPoE session
		"1100"+"1234"+"0029"+"21"+ // PPPoE: session 0x1234, length 41 = 1 + 20 + 20, PPP IPv4 (1 byte)
		"45000028000040004006"+"0000"+"c0000219"+"64410505"+ // IPv4 (checksum below)
		"0019"+"9c40"+"00000000"+"11223345"+"5014"+"0000"+"0000"+"0000") // RST+ACK, ack = seq+1
	// Fill in the checksums the test computes itself.
	ip := want[14+6+1:]
	binary.BigEndian.PutUint16(ip[10:], model.Checksum(ip[:20], 0))
	pseudo := append(append([]byte{}, ip[12:20]...), 0, 6, 0, 20)
	var sum uint32
	for i := 0; i < len(pseudo); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(pseudo[i:]))
	}
	binary.BigEndian.PutUint16(ip[20+16:], model.Checksum(ip[20:40], sum))
	if !bytes.Equal(out, want) {
		t.Fatalf("reply\n got %s\nwant %s", hex.EncodeToString(out), hex.EncodeToString(want))
	}
}

// TestMappedSources: an IPv6 packet whose source is IPv4-mapped (::ffff:a.b.c.d) is
// forwarded by Linux, so it is judged as the IPv4 address it maps, as the policy and
// explain read it; the RST still answers in IPv6.
func TestMappedSources(t *testing.T) {
	tables := testTables(time.Now())
	p := applied(t, tables)
	mapped := func(s source) netip.Addr { return netip.AddrFrom16(s.v4.As16()) }
	for _, c := range []struct {
		src  source
		port uint16
		want model.Action
	}{
		{sources[0], 25, model.ActionDrop},  // drop range
		{sources[1], 25, model.ActionTX},    // reset range
		{sources[4], 25, model.ActionTX},    // quarantined
		{sources[3], 25, model.ActionPass},  // exemption inside the drop range
		{sources[0], 587, model.ActionPass}, // never governed
	} {
		t.Run(fmt.Sprintf("%s/%d", c.src.name, c.port), func(t *testing.T) {
			frame := buildFrame(t, frameSpec{src: mapped(c.src), dst: dst6, sport: 40000, dport: c.port, syn: true, seq: 5})
			d, act := compareWithModel(t, p, tables, frame)
			if act != c.want {
				t.Fatalf("action %v, want %v", act, c.want)
			}
			if d.Packet.Family != model.IPv6 {
				t.Errorf("family %v, want IPv6", d.Packet.Family)
			}
			if act == model.ActionTX {
				_, out, _ := p.Run(frame)
				checkRST(t, frame, out)
			}
		})
	}
}

// setByte returns f with byte i set to v.
func setByte(f []byte, i int, v byte) []byte {
	out := append([]byte{}, f...)
	out[i] = v
	return out
}

// TestFirstFragmentWithoutPorts: a first fragment that ends before the TCP ports (an
// IPv6 header chain cut short, RFC 7112 forbids it but a receiver may still reassemble
// it; or a TCP header with fewer than 4 bytes) brings its ports in a later fragment,
// which passes as a non-first fragment. It is judged on its source, as an over-long
// chain is: dropped if the source's rule blocks. Without the fragment it is malformed.
func TestFirstFragmentWithoutPorts(t *testing.T) {
	tables := testTables(time.Now())
	p := applied(t, tables)
	// IPv6: fragment header (offset 0, more fragments), then a destination-options
	// header cut after its first 2 bytes: no TCP in this fragment.
	v6 := func(src source, frag bool) []byte {
		f := buildFrame(t, frameSpec{src: src.v6, dst: dst6, sport: 1, dport: 25, syn: true,
			ext: []extHdr{{proto: 44, frag: fragSpec{more: frag}}, {proto: 60}}})
		return f[:14+40+8+2]
	}
	// IPv4: first fragment carrying only 2 bytes of TCP.
	v4 := func(src source, frag bool) []byte {
		fs := frameSpec{src: src.v4, dst: dst4, sport: 1, dport: 25, syn: true}
		if frag {
			fs.frag = &fragSpec{more: true}
		}
		return buildFrame(t, fs)[:14+20+2]
	}
	cases := []struct {
		name     string
		frame    []byte
		want     model.Action
		wantPath model.Reason
	}{
		{"v6/drop-range", v6(dropSrc, true), model.ActionDrop, model.ReasonEvasion},
		{"v6/reset-range", v6(resetSrc, true), model.ActionDrop, model.ReasonEvasion},
		{"v6/pass-range", v6(passSrc, true), model.ActionPass, model.ReasonEvasion},
		{"v6/atomic-fragment-is-malformed", v6(dropSrc, false), model.ActionPass, model.ReasonMalformed},
		{"v4/drop-range", v4(dropSrc, true), model.ActionDrop, model.ReasonEvasion},
		{"v4/not-a-fragment-is-malformed", v4(dropSrc, false), model.ActionPass, model.ReasonMalformed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, link := range []model.Link{model.LinkEthernet, model.LinkRawIP} {
				frame := c.frame
				if link == model.LinkRawIP {
					frame = frame[14:]
					if len(frame) < 14 {
						continue // the kernel's test run takes no shorter frame
					}
				}
				d, act := compareWithModelOn(t, link, p, tables, frame)
				if act != c.want || d.Path != c.wantPath {
					t.Errorf("%v link: %v (%v), want %v (%v)", link, act, d.Path, c.want, c.wantPath)
				}
			}
		})
	}
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// withTags returns frame (an untagged Ethernet frame) with n VLAN tags after its MACs:
// the first with VLAN id vid, the rest priority tags (id 0), 802.1Q and 802.1ad by
// turns.
func withTags(frame []byte, n int, vid uint16) []byte {
	out := append([]byte{}, frame[:12]...)
	for i := range n {
		tpid, id := uint16(0x8100), uint16(0)
		if i%2 == 1 {
			tpid = 0x88a8
		}
		if i == 0 {
			id = vid
		}
		out = binary.BigEndian.AppendUint16(out, tpid)
		out = binary.BigEndian.AppendUint16(out, id)
	}
	return append(out, frame[12:]...)
}

// Linux strips any number of priority tags (VLAN id 0) and routes what is behind them
// (__netif_receive_skb_core), so every tag up to model.MaxVLANTags is read, and a
// frame still tagged after them is dropped, whatever it carries: one tag more than the
// parse reads must not carry a blocked subscriber's SYN past the policy.
func TestVLANTagStacks(t *testing.T) {
	tables := testTables(time.Now())
	p := applied(t, tables)
	before, err := p.Reasons()
	if err != nil {
		t.Fatal(err)
	}
	dropped := 0
	for _, n := range []int{3, 4, model.MaxVLANTags, model.MaxVLANTags + 1, 12} {
		for _, vid := range []uint16{0, 100} {
			for _, s := range sources {
				for _, port := range []uint16{25, 587} {
					for _, src := range []netip.Addr{s.v4, s.v6} {
						dst := dst4
						if src.Is6() {
							dst = dst6
						}
						frame := withTags(buildFrame(t, frameSpec{src: src, dst: dst, sport: 40000, dport: port, syn: true, seq: 7}), n, vid)
						d, act := compareWithModel(t, p, tables, frame)
						want := expectAction(s.name, false, port)
						if n > model.MaxVLANTags {
							want = model.ActionDrop
							dropped++
							if d.Path != model.ReasonTooManyTags {
								t.Errorf("%d tags, %s:%d: path %v, want too_many_tags", n, src, port, d.Path)
							}
						}
						if act != want {
							t.Errorf("%d tags (first id %d), %s %s:%d: %v, want %v", n, vid, s.name, src, port, act, want)
						}
					}
				}
			}
		}
	}
	after, err := p.Reasons()
	if err != nil {
		t.Fatal(err)
	}
	if got := after[model.ReasonTooManyTags].Packets - before[model.ReasonTooManyTags].Packets; got != uint64(dropped) {
		t.Errorf("too_many_tags counted %d, want %d", got, dropped)
	}
}

// A SYN from a reset range sent from or to a group MAC (broadcast, multicast) is
// dropped, not answered: the RST would go to every host of the segment, and Linux
// routes no frame sent to a group address. No RST token is spent on it.
func TestGroupMACNoRST(t *testing.T) {
	tables := testTables(time.Now())
	p := applied(t, tables)
	for name, set := range map[string]func([]byte){
		"broadcast-source": func(f []byte) { copy(f[6:12], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}) },
		"multicast-source": func(f []byte) { f[6] |= 1 },
		"multicast-dest":   func(f []byte) { copy(f[0:6], []byte{0x01, 0x00, 0x5e, 0, 0, 1}) },
		"broadcast-dest":   func(f []byte) { copy(f[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}) },
	} {
		for _, enc := range []encap{encPlain, encQinQPPPoE} {
			for _, src := range []netip.Addr{resetSrc.v4, resetSrc.v6} {
				dst := dst4
				if src.Is6() {
					dst = dst6
				}
				frame := buildFrame(t, frameSpec{enc: enc, src: src, dst: dst, sport: 40000, dport: 25, syn: true, seq: 7})
				set(frame)
				if d, act := compareWithModel(t, p, tables, frame); act != model.ActionDrop || d.Outcome != model.OutDrop {
					t.Errorf("%s %v %s: %v (%v), want a drop", name, enc, src, act, d.Outcome)
				}
			}
		}
	}
	// The same SYN from a unicast MAC is still answered.
	frame := buildFrame(t, frameSpec{src: resetSrc.v4, dst: dst4, sport: 40000, dport: 25, syn: true, seq: 7})
	if _, act := compareWithModel(t, p, tables, frame); act != model.ActionTX {
		t.Errorf("unicast: %v, want an RST", act)
	}
}
