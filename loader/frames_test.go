package loader

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/portcullis/portcullis/model"
)

// Frame builders for the packet tests: real frames serialised by gopacket with
// correct lengths and checksums.

type encap int

const (
	encPlain encap = iota
	encVLAN
	encQinQ
	encPPPoE
	encVLANPPPoE
	encPPPoEPFC     // PPPoE with the PPP protocol compressed to one byte (RFC 1661 6.5)
	encVLANPPPoEPFC // the same behind a VLAN tag
	encRawIP        // no link layer: the frame starts at the IP header (tun, ppp, WireGuard)
	encQinQPPPoE    // PPPoE behind two VLAN tags (802.1ad outer, 802.1Q inner), as on a BNG
	encPrioTags     // three priority tags (VLAN id 0; Linux strips any number of them)
	encMaxTagsPPPoE // PPPoE behind model.MaxVLANTags tags: a VLAN, then priority tags (the longest L2 parsed)
	numEncaps
)

var encapNames = [...]string{"plain", "802.1Q", "QinQ", "PPPoE", "VLAN+PPPoE", "PPPoE-PFC", "VLAN+PPPoE-PFC", "raw-IP", "QinQ+PPPoE",
	"3-priority-tags", "8-tags+PPPoE"}

// link is the kind of interface a frame of this encapsulation arrives on.
func (e encap) link() model.Link {
	if e == encRawIP {
		return model.LinkRawIP
	}
	return model.LinkEthernet
}

func (e encap) pppoe() bool {
	return e == encPPPoE || e == encVLANPPPoE || e == encPPPoEPFC || e == encVLANPPPoEPFC || e == encQinQPPPoE || e == encMaxTagsPPPoE
}

// tags returns n VLAN tags in front of next: the first with VLAN id first (0: a
// priority tag), the others priority tags, their TPIDs alternating 802.1ad and 802.1Q.
func tags(eth *layers.Ethernet, n int, first uint16, next layers.EthernetType) []gopacket.SerializableLayer {
	tpid := func(i int) layers.EthernetType {
		if i%2 == 0 {
			return layers.EthernetTypeQinQ
		}
		return layers.EthernetTypeDot1Q
	}
	eth.EthernetType = tpid(0)
	out := []gopacket.SerializableLayer{eth}
	for i := range n {
		t := &layers.Dot1Q{Type: next}
		if i == 0 {
			t.VLANIdentifier = first
		}
		if i+1 < n {
			t.Type = tpid(i + 1)
		}
		out = append(out, t)
	}
	return out
}

func (e encap) String() string { return encapNames[e] }

var (
	subMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01}
	gwMAC  = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x02}
)

type frameSpec struct {
	enc     encap
	src     netip.Addr
	dst     netip.Addr
	udp     bool
	sport   uint16
	dport   uint16
	syn     bool
	ack     bool
	rst     bool
	seq     uint32
	payload []byte
	tcpOpts bool     // add MSS/SACK/timestamp options like a real SYN
	ipOpts  []byte   // IPv4 options (padded to 4 bytes by the caller)
	ext     []extHdr // IPv6 extension headers between IPv6 and TCP
	frag    *fragSpec
}

type fragSpec struct {
	offset uint16 // in 8-byte units
	more   bool
}

type extHdr struct {
	proto byte // 0 hop-by-hop, 43 routing, 44 fragment, 60 dest opts, 51 AH
	frag  fragSpec
}

// l2 returns the layers up to and including the point where the IP packet starts.
func l2Layers(enc encap, v6 bool) []gopacket.SerializableLayer {
	ipType := layers.EthernetTypeIPv4
	pppType := layers.PPPTypeIPv4
	if v6 {
		ipType = layers.EthernetTypeIPv6
		pppType = layers.PPPTypeIPv6
	}
	eth := &layers.Ethernet{SrcMAC: subMAC, DstMAC: gwMAC}
	pppoe := []gopacket.SerializableLayer{
		&layers.PPPoE{Version: 1, Type: 1, Code: layers.PPPoECodeSession, SessionId: 0x1234},
		&layers.PPP{PPPType: pppType},
	}
	switch enc {
	case encVLAN:
		eth.EthernetType = layers.EthernetTypeDot1Q
		return []gopacket.SerializableLayer{eth, &layers.Dot1Q{VLANIdentifier: 100, Type: ipType}}
	case encQinQ:
		eth.EthernetType = layers.EthernetTypeQinQ
		return []gopacket.SerializableLayer{eth,
			&layers.Dot1Q{VLANIdentifier: 200, Type: layers.EthernetTypeDot1Q},
			&layers.Dot1Q{VLANIdentifier: 300, Type: ipType}}
	case encPPPoE, encPPPoEPFC:
		eth.EthernetType = layers.EthernetTypePPPoESession
		return append([]gopacket.SerializableLayer{eth}, pppoe...)
	case encRawIP:
		return nil
	case encQinQPPPoE:
		eth.EthernetType = layers.EthernetTypeQinQ
		return append([]gopacket.SerializableLayer{eth,
			&layers.Dot1Q{VLANIdentifier: 200, Type: layers.EthernetTypeDot1Q},
			&layers.Dot1Q{VLANIdentifier: 300, Type: layers.EthernetTypePPPoESession}}, pppoe...)
	case encPrioTags:
		return tags(eth, 3, 0, ipType)
	case encMaxTagsPPPoE:
		return append(tags(eth, model.MaxVLANTags, 100, layers.EthernetTypePPPoESession), pppoe...)
	case encVLANPPPoE, encVLANPPPoEPFC:
		eth.EthernetType = layers.EthernetTypeDot1Q
		return append([]gopacket.SerializableLayer{eth,
			&layers.Dot1Q{VLANIdentifier: 100, Type: layers.EthernetTypePPPoESession}}, pppoe...)
	}
	eth.EthernetType = ipType
	return []gopacket.SerializableLayer{eth}
}

func buildFrame(t testing.TB, fs frameSpec) []byte {
	t.Helper()
	v6 := fs.src.Is6()
	ls := l2Layers(fs.enc, v6)

	var netl gopacket.NetworkLayer
	proto := layers.IPProtocolTCP
	if fs.udp {
		proto = layers.IPProtocolUDP
	}
	if v6 {
		ip6 := &layers.IPv6{Version: 6, HopLimit: 64, SrcIP: fs.src.AsSlice(), DstIP: fs.dst.AsSlice(), NextHeader: proto}
		netl = ip6
		ls = append(ls, ip6)
		if len(fs.ext) > 0 {
			ip6.NextHeader = layers.IPProtocol(fs.ext[0].proto)
		}
	} else {
		ip4 := &layers.IPv4{Version: 4, TTL: 64, Protocol: proto, SrcIP: fs.src.AsSlice(), DstIP: fs.dst.AsSlice(), Id: 7}
		if fs.frag != nil {
			ip4.FragOffset = fs.frag.offset
			if fs.frag.more {
				ip4.Flags = layers.IPv4MoreFragments
			}
		}
		if len(fs.ipOpts) > 0 {
			ip4.Options = []layers.IPv4Option{{OptionType: fs.ipOpts[0], OptionLength: uint8(len(fs.ipOpts)), OptionData: fs.ipOpts[2:]}}
		}
		netl = ip4
		ls = append(ls, ip4)
	}

	// The transport segment is serialised on its own (checksum over the real
	// pseudo-header) and carried as payload behind any extension headers.
	tb := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if fs.udp {
		u := &layers.UDP{SrcPort: layers.UDPPort(fs.sport), DstPort: layers.UDPPort(fs.dport)}
		u.SetNetworkLayerForChecksum(netl)
		must(t, gopacket.SerializeLayers(tb, opts, u, gopacket.Payload(fs.payload)))
	} else {
		tcp := &layers.TCP{SrcPort: layers.TCPPort(fs.sport), DstPort: layers.TCPPort(fs.dport),
			Seq: fs.seq, SYN: fs.syn, ACK: fs.ack, RST: fs.rst, Window: 64240}
		if fs.ack {
			tcp.Ack = 1
		}
		if fs.tcpOpts {
			tcp.Options = []layers.TCPOption{
				{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{0x05, 0xb4}},
				{OptionType: layers.TCPOptionKindSACKPermitted, OptionLength: 2},
				{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10, OptionData: make([]byte, 8)},
				{OptionType: layers.TCPOptionKindNop},
				{OptionType: layers.TCPOptionKindWindowScale, OptionLength: 3, OptionData: []byte{7}},
			}
		}
		tcp.SetNetworkLayerForChecksum(netl)
		must(t, gopacket.SerializeLayers(tb, opts, tcp, gopacket.Payload(fs.payload)))
	}
	seg := tb.Bytes()

	var ext []byte
	for i, h := range fs.ext {
		next := byte(proto)
		if i+1 < len(fs.ext) {
			next = fs.ext[i+1].proto
		}
		switch h.proto {
		case 44:
			fo := h.frag.offset << 3
			if h.frag.more {
				fo |= 1
			}
			ext = append(ext, next, 0, byte(fo>>8), byte(fo), 0, 0, 0, 9)
		case 51: // AH: length in 4-byte units minus 2; 12 bytes header + 12 ICV = 24
			ah := make([]byte, 24)
			ah[0], ah[1] = next, 4
			ext = append(ext, ah...)
		case 43: // routing header, type 0 with no addresses and no segments left
			ext = append(ext, next, 0, 0, 0, 0, 0, 0, 0)
		default: // 8 bytes: next, len 0, PadN option
			ext = append(ext, next, 0, 1, 4, 0, 0, 0, 0)
		}
	}
	ls = append(ls, gopacket.Payload(append(ext, seg...)))

	buf := gopacket.NewSerializeBuffer()
	must(t, gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...))
	f := buf.Bytes()
	if fs.enc == encPPPoEPFC || fs.enc == encVLANPPPoEPFC {
		f = compressPPPProto(t, f, pppoeOffset(fs.enc))
	}
	return f
}

// pppoeOffset is where the PPPoE header starts in a frame of encapsulation e.
func pppoeOffset(e encap) int {
	if e == encVLANPPPoE || e == encVLANPPPoEPFC {
		return 18
	}
	if e == encQinQPPPoE {
		return 22
	}
	if e == encMaxTagsPPPoE {
		return 14 + 4*model.MaxVLANTags
	}
	return 14
}

// compressPPPProto rewrites a PPPoE session frame's 2-byte PPP protocol 0x00XX into the
// 1-byte form XX (protocol-field compression), fixing the PPPoE length.
func compressPPPProto(t testing.TB, f []byte, off int) []byte {
	t.Helper()
	if f[off+6] != 0 || f[off+7]&1 == 0 {
		t.Fatalf("PPP protocol %#02x%02x cannot be compressed", f[off+6], f[off+7])
	}
	out := append(append([]byte{}, f[:off+6]...), f[off+7:]...)
	binary.BigEndian.PutUint16(out[off+4:], binary.BigEndian.Uint16(f[off+4:])-1)
	return out
}

// setPPPProto rewrites the PPP protocol of a PPPoE session frame (2-byte form).
func setPPPProto(f []byte, off int, proto uint16) []byte {
	out := append([]byte{}, f...)
	binary.BigEndian.PutUint16(out[off+6:], proto)
	return out
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
