package loader

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/portcullis/portcullis/policy"
)

// expectAction is the test's own statement of the policy for a SYN from source kind
// to (udp, port), independent of the model.
func expectAction(kind string, udp bool, port uint16) policy.Action {
	if udp || port != 25 {
		return policy.ActionPass
	}
	switch kind {
	case "drop-range":
		return policy.ActionDrop
	case "reset-range", "quarantined":
		return policy.ActionTX
	}
	return policy.ActionPass
}

func TestPacketMatrix(t *testing.T) {
	now := time.Now()
	tables := testTables(now)
	p := applied(t, tables)

	ports := []struct {
		udp  bool
		port uint16
	}{{false, 25}, {false, 465}, {false, 587}, {false, 443}, {true, 25}}

	for enc := encPlain; enc < numEncaps; enc++ {
		for _, fam := range []string{"v4", "v6"} {
			for _, s := range sources {
				for _, pt := range ports {
					proto := "tcp"
					if pt.udp {
						proto = "udp"
					}
					name := fmt.Sprintf("%s/%s/%s/%s%d", enc, fam, s.name, proto, pt.port)
					t.Run(name, func(t *testing.T) {
						src, dst := s.v4, dst4
						if fam == "v6" {
							src, dst = s.v6, dst6
						}
						frame := buildFrame(t, frameSpec{enc: enc, src: src, dst: dst, udp: pt.udp,
							sport: 40000, dport: pt.port, syn: true, seq: 0x11223344, tcpOpts: true})
						act, out, err := p.RunOn(enc.link(), frame)
						if err != nil {
							t.Fatal(err)
						}
						want := expectAction(s.name, pt.udp, pt.port)
						if act != want {
							t.Fatalf("action %v, want %v", act, want)
						}
						d := tables.JudgeOn(enc.link(), frame, time.Now(), true)
						if d.Action != act {
							t.Fatalf("model says %v, program %v", d.Action, act)
						}
						switch act {
						case policy.ActionTX:
							if !bytes.Equal(out, d.Reply) {
								t.Fatalf("reply differs from model\nprog  %s\nmodel %s", hex.EncodeToString(out), hex.EncodeToString(d.Reply))
							}
							checkRSTOn(t, enc.link(), frame, out)
						default:
							if !bytes.Equal(out, frame) {
								t.Fatalf("frame modified on %v", act)
							}
						}
					})
				}
			}
		}
	}
}

// checkRST verifies the reply against the SYN with gopacket, independently of the
// program and the model: fields swapped, flags, numbers, lengths, and checksums
// recomputed by gopacket's serialiser.
func checkRST(t *testing.T, syn, rst []byte) {
	t.Helper()
	checkRSTOn(t, policy.LinkEthernet, syn, rst)
}

// checkRSTOn is checkRST for frames of a link of type l (raw IP: no MACs to check).
func checkRSTOn(t *testing.T, l policy.Link, syn, rst []byte) {
	t.Helper()
	first := layers.LayerTypeEthernet
	if l == policy.LinkRawIP {
		first = layers.LayerTypeIPv4
		if len(syn) > 0 && syn[0]>>4 == 6 {
			first = layers.LayerTypeIPv6
		}
	}
	in := gopacket.NewPacket(syn, first, gopacket.Default)
	out := gopacket.NewPacket(rst, first, gopacket.Default)
	if el := out.ErrorLayer(); el != nil {
		t.Fatalf("reply does not decode: %v", el.Error())
	}
	if l == policy.LinkEthernet {
		ie, oe := in.Layer(layers.LayerTypeEthernet).(*layers.Ethernet), out.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
		if !bytes.Equal(ie.SrcMAC, oe.DstMAC) || !bytes.Equal(ie.DstMAC, oe.SrcMAC) {
			t.Errorf("MACs not swapped: %v>%v became %v>%v", ie.SrcMAC, ie.DstMAC, oe.SrcMAC, oe.DstMAC)
		}
	}
	// L2 encapsulation kept: same VLAN ids, same PPPoE session.
	var iv, ov []uint16
	for _, l := range in.Layers() {
		if d, ok := l.(*layers.Dot1Q); ok {
			iv = append(iv, d.VLANIdentifier)
		}
	}
	for _, l := range out.Layers() {
		if d, ok := l.(*layers.Dot1Q); ok {
			ov = append(ov, d.VLANIdentifier)
		}
	}
	if fmt.Sprint(iv) != fmt.Sprint(ov) {
		t.Errorf("VLAN tags %v became %v", iv, ov)
	}
	if ip, ok := in.Layer(layers.LayerTypePPPoE).(*layers.PPPoE); ok {
		op, ok := out.Layer(layers.LayerTypePPPoE).(*layers.PPPoE)
		if !ok || op.SessionId != ip.SessionId {
			t.Fatalf("PPPoE session lost")
		}
		if int(op.Length) != len(op.Payload) {
			t.Errorf("PPPoE length %d, payload %d", op.Length, len(op.Payload))
		}
	}
	itcp, ok := in.Layer(layers.LayerTypeTCP).(*layers.TCP)
	if !ok {
		// gopacket stops at an IPv6 fragment header; the TCP header follows it.
		fl := in.Layer(layers.LayerTypeIPv6Fragment)
		if fl == nil {
			t.Fatal("cannot find the SYN's TCP header")
		}
		tp := gopacket.NewPacket(fl.LayerPayload(), layers.LayerTypeTCP, gopacket.Default)
		if itcp, ok = tp.Layer(layers.LayerTypeTCP).(*layers.TCP); !ok {
			t.Fatal("cannot find the SYN's TCP header")
		}
	}
	otcp, ok := out.Layer(layers.LayerTypeTCP).(*layers.TCP)
	if !ok {
		t.Fatal("reply has no TCP layer")
	}
	if otcp.SrcPort != itcp.DstPort || otcp.DstPort != itcp.SrcPort {
		t.Errorf("ports not swapped")
	}
	if !otcp.RST || !otcp.ACK || otcp.SYN || otcp.FIN || otcp.PSH {
		t.Errorf("flags: want RST+ACK only")
	}
	if otcp.Seq != 0 || otcp.Ack != itcp.Seq+1+uint32(len(itcp.Payload)) {
		t.Errorf("seq %d ack %d, want 0 and %d", otcp.Seq, otcp.Ack, itcp.Seq+1+uint32(len(itcp.Payload)))
	}
	if otcp.DataOffset != 5 || len(otcp.Options) != 0 || len(otcp.Payload) != 0 {
		t.Errorf("options or payload not stripped")
	}

	var netl gopacket.NetworkLayer
	if i4, ok := in.Layer(layers.LayerTypeIPv4).(*layers.IPv4); ok {
		o4 := out.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		if !o4.SrcIP.Equal(i4.DstIP) || !o4.DstIP.Equal(i4.SrcIP) {
			t.Errorf("addresses not swapped")
		}
		if o4.TTL != policy.RSTTTL || o4.IHL != 5 || o4.Length != 40 {
			t.Errorf("ipv4 ttl %d ihl %d len %d", o4.TTL, o4.IHL, o4.Length)
		}
		want := o4.Checksum
		cp := *o4
		b := gopacket.NewSerializeBuffer()
		must(t, cp.SerializeTo(b, gopacket.SerializeOptions{ComputeChecksums: true}))
		if cp.Checksum != want {
			t.Errorf("ipv4 checksum %#04x, want %#04x", want, cp.Checksum)
		}
		netl = o4
	} else {
		i6 := in.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
		o6 := out.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
		if !o6.SrcIP.Equal(i6.DstIP) || !o6.DstIP.Equal(i6.SrcIP) {
			t.Errorf("addresses not swapped")
		}
		if o6.HopLimit != policy.RSTTTL || o6.Length != 20 || o6.NextHeader != layers.IPProtocolTCP {
			t.Errorf("ipv6 hop limit %d len %d next %d", o6.HopLimit, o6.Length, o6.NextHeader)
		}
		netl = o6
	}
	want := otcp.Checksum
	cp := *otcp
	must(t, cp.SetNetworkLayerForChecksum(netl))
	b := gopacket.NewSerializeBuffer()
	must(t, cp.SerializeTo(b, gopacket.SerializeOptions{ComputeChecksums: true}))
	if cp.Checksum != want {
		t.Errorf("tcp checksum %#04x, want %#04x", want, cp.Checksum)
	}
}
