package replay

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// Frame builders and capture writers for the tests: real frames serialised by
// gopacket, written to captures with pcapgo (or by hand where pcapgo cannot: its link
// type is a byte, too small for SLL2).

type encap int

const (
	encPlain encap = iota
	encVLAN
	encQinQ
	encPPPoE
)

var (
	subMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01}
	gwMAC  = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x02}
)

type frameSpec struct {
	enc     encap
	src     string
	dst     string
	udp     bool
	sport   uint16
	dport   uint16
	syn     bool
	ack     bool
	seq     uint32
	payload []byte
	ext     []byte // IPv6 extension header protocol numbers (0, 43, 60), 8 bytes each
}

func l2Layers(enc encap, v6 bool) []gopacket.SerializableLayer {
	ipType, pppType := layers.EthernetTypeIPv4, layers.PPPTypeIPv4
	if v6 {
		ipType, pppType = layers.EthernetTypeIPv6, layers.PPPTypeIPv6
	}
	eth := &layers.Ethernet{SrcMAC: subMAC, DstMAC: gwMAC, EthernetType: ipType}
	switch enc {
	case encVLAN:
		eth.EthernetType = layers.EthernetTypeDot1Q
		return []gopacket.SerializableLayer{eth, &layers.Dot1Q{VLANIdentifier: 100, Type: ipType}}
	case encQinQ:
		eth.EthernetType = layers.EthernetTypeQinQ
		return []gopacket.SerializableLayer{eth,
			&layers.Dot1Q{VLANIdentifier: 200, Type: layers.EthernetTypeDot1Q},
			&layers.Dot1Q{VLANIdentifier: 300, Type: ipType}}
	case encPPPoE:
		eth.EthernetType = layers.EthernetTypePPPoESession
		return []gopacket.SerializableLayer{eth,
			&layers.PPPoE{Version: 1, Type: 1, Code: layers.PPPoECodeSession, SessionId: 0x1234},
			&layers.PPP{PPPType: pppType}}
	}
	return []gopacket.SerializableLayer{eth}
}

func buildFrame(t testing.TB, fs frameSpec) []byte {
	t.Helper()
	src, dst := netip.MustParseAddr(fs.src), netip.MustParseAddr(fs.dst)
	v6 := src.Is6()
	ls := l2Layers(fs.enc, v6)
	proto := layers.IPProtocolTCP
	if fs.udp {
		proto = layers.IPProtocolUDP
	}
	var netl gopacket.NetworkLayer
	if v6 {
		ip6 := &layers.IPv6{Version: 6, HopLimit: 64, SrcIP: src.AsSlice(), DstIP: dst.AsSlice(), NextHeader: proto}
		if len(fs.ext) > 0 {
			ip6.NextHeader = layers.IPProtocol(fs.ext[0])
		}
		netl = ip6
		ls = append(ls, ip6)
	} else {
		ip4 := &layers.IPv4{Version: 4, TTL: 64, Protocol: proto, SrcIP: src.AsSlice(), DstIP: dst.AsSlice(), Id: 7}
		netl = ip4
		ls = append(ls, ip4)
	}
	tb := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if fs.udp {
		u := &layers.UDP{SrcPort: layers.UDPPort(fs.sport), DstPort: layers.UDPPort(fs.dport)}
		u.SetNetworkLayerForChecksum(netl)
		must(t, gopacket.SerializeLayers(tb, opts, u, gopacket.Payload(fs.payload)))
	} else {
		tcp := &layers.TCP{SrcPort: layers.TCPPort(fs.sport), DstPort: layers.TCPPort(fs.dport),
			Seq: fs.seq, SYN: fs.syn, ACK: fs.ack, Window: 64240,
			Options: []layers.TCPOption{{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{0x05, 0xb4}}}}
		if fs.ack {
			tcp.Ack = 1000
		}
		tcp.SetNetworkLayerForChecksum(netl)
		must(t, gopacket.SerializeLayers(tb, opts, tcp, gopacket.Payload(fs.payload)))
	}
	var ext []byte
	for i, h := range fs.ext {
		next := byte(proto)
		if i+1 < len(fs.ext) {
			next = fs.ext[i+1]
		}
		if h == 43 {
			ext = append(ext, next, 0, 0, 0, 0, 0, 0, 0) // routing type 0, no segments left
		} else {
			ext = append(ext, next, 0, 1, 4, 0, 0, 0, 0) // PadN
		}
	}
	ls = append(ls, gopacket.Payload(append(ext, tb.Bytes()...)))
	buf := gopacket.NewSerializeBuffer()
	must(t, gopacket.SerializeLayers(buf, opts, ls...))
	return buf.Bytes()
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

var t0 = time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC)

// writePcap writes records with pcapgo's Writer. Link types above 255 get a
// hand-written file header (pcapgo's LinkType is a byte).
func writePcap(t testing.TB, name string, lt LinkType, recs [][]byte) string {
	t.Helper()
	var b bytes.Buffer
	w := pcapgo.NewWriter(&b)
	if lt < 256 {
		must(t, w.WriteFileHeader(65536, layers.LinkType(lt)))
	} else {
		h := make([]byte, 24)
		binary.LittleEndian.PutUint32(h[0:], 0xa1b2c3d4)
		binary.LittleEndian.PutUint16(h[4:], 2)
		binary.LittleEndian.PutUint16(h[6:], 4)
		binary.LittleEndian.PutUint32(h[16:], 65536)
		binary.LittleEndian.PutUint32(h[20:], uint32(lt))
		b.Write(h)
	}
	for i, r := range recs {
		ci := gopacket.CaptureInfo{Timestamp: t0.Add(time.Duration(i) * time.Millisecond), CaptureLength: len(r), Length: len(r)}
		must(t, w.WritePacket(ci, r))
	}
	return writeBytes(t, name, b.Bytes())
}

// writePcapNG writes records with pcapgo's NgWriter on one interface per link type
// given; record i goes out on interface ifaceOf(i).
func writePcapNG(t testing.TB, name string, lts []layers.LinkType, recs [][]byte, ifaceOf func(int) int) string {
	t.Helper()
	var b bytes.Buffer
	w, err := pcapgo.NewNgWriterInterface(&b, pcapgo.NgInterface{Name: "sub0", LinkType: lts[0], SnapLength: 65536}, pcapgo.DefaultNgWriterOptions)
	must(t, err)
	for i, lt := range lts[1:] {
		_, err := w.AddInterface(pcapgo.NgInterface{Name: "sub" + string(rune('1'+i)), LinkType: lt, SnapLength: 65536})
		must(t, err)
	}
	for i, r := range recs {
		ci := gopacket.CaptureInfo{Timestamp: t0.Add(time.Duration(i) * time.Millisecond), CaptureLength: len(r), Length: len(r), InterfaceIndex: ifaceOf(i)}
		must(t, w.WritePacket(ci, r))
	}
	must(t, w.Flush())
	return writeBytes(t, name, b.Bytes())
}

// writeNGByHand writes a little-endian pcapng file with one interface of link type lt
// (any 16-bit value) and one enhanced packet block per record.
func writeNGByHand(t testing.TB, name string, lt LinkType, recs [][]byte) string {
	t.Helper()
	var b bytes.Buffer
	le := binary.LittleEndian
	block := func(typ uint32, body []byte) {
		for len(body)%4 != 0 {
			body = append(body, 0)
		}
		n := uint32(12 + len(body))
		b.Write(le.AppendUint32(le.AppendUint32(nil, typ), n))
		b.Write(body)
		b.Write(le.AppendUint32(nil, n))
	}
	shb := le.AppendUint32(nil, 0x1a2b3c4d)
	shb = le.AppendUint16(le.AppendUint16(shb, 1), 0)
	shb = le.AppendUint64(shb, ^uint64(0))
	block(ngSHB, shb)
	idb := le.AppendUint16(nil, uint16(lt))
	idb = le.AppendUint16(idb, 0)
	idb = le.AppendUint32(idb, 65536)
	block(ngIDB, idb)
	for i, r := range recs {
		ts := uint64(t0.Add(time.Duration(i) * time.Millisecond).UnixMicro())
		epb := le.AppendUint32(nil, 0)
		epb = le.AppendUint32(epb, uint32(ts>>32))
		epb = le.AppendUint32(epb, uint32(ts))
		epb = le.AppendUint32(epb, uint32(len(r)))
		epb = le.AppendUint32(epb, uint32(len(r)))
		block(ngEPB, append(epb, r...))
	}
	return writeBytes(t, name, b.Bytes())
}

func writeBytes(t testing.TB, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	must(t, os.WriteFile(p, b, 0o644))
	return p
}

// toSLL turns an Ethernet frame into a Linux cooked (SLL) record: packet type 0
// (to us), ARPHRD_ETHER, the source MAC, the frame's ethertype, the rest.
func toSLL(f []byte) []byte {
	h := make([]byte, 14, 16+len(f)-14)
	binary.BigEndian.PutUint16(h[2:], 1)
	binary.BigEndian.PutUint16(h[4:], 6)
	copy(h[6:], f[6:12])
	return append(h, f[12:]...)
}

// toSLL2 turns an Ethernet frame into an SLL2 record.
func toSLL2(f []byte) []byte {
	h := make([]byte, 20, 20+len(f)-14)
	copy(h[0:2], f[12:14])
	binary.BigEndian.PutUint32(h[4:], 3) // ifindex
	binary.BigEndian.PutUint16(h[8:], 1)
	h[11] = 6
	copy(h[12:], f[6:12])
	return append(h, f[14:]...)
}

// tcpOf finds the TCP header of a frame, also behind an IPv6 fragment header (where
// gopacket stops decoding).
func tcpOf(p gopacket.Packet) *layers.TCP {
	if t, ok := p.Layer(layers.LayerTypeTCP).(*layers.TCP); ok {
		return t
	}
	if fl := p.Layer(layers.LayerTypeIPv6Fragment); fl != nil {
		tp := gopacket.NewPacket(fl.LayerPayload(), layers.LayerTypeTCP, gopacket.Default)
		if t, ok := tp.Layer(layers.LayerTypeTCP).(*layers.TCP); ok {
			return t
		}
	}
	return nil
}
