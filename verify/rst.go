package verify

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/portcullis/portcullis/model"
)

// CheckRST decodes the RST reply the program built for the frame syn with gopacket,
// independently of the program and the model, and returns what is wrong with it:
// RST+ACK only, MACs, addresses and ports swapped, ack = seq + 1 + payload, and IP and
// TCP checksums valid. Where gopacket cannot read the SYN down to its TCP header's
// fixed fields (a header cut short by the capture or by a PPPoE length field, which
// gopacket honours and the data plane does not; an IPv6 extension header gopacket does
// not decode, such as an AH shorter than its fixed fields) the addresses, ports and ack
// are not checked: the RST is then checked on its own (it decodes, RST+ACK, MACs
// swapped, checksums), and Compare's byte comparison with the model covers the rest.
func CheckRST(syn, rst []byte) []string { return CheckRSTOn(model.LinkEthernet, syn, rst) }

// FirstLayer is the gopacket layer a frame of a link of type l starts with: Ethernet,
// or on a raw-IP link the IP version its first byte names.
func FirstLayer(l model.Link, frame []byte) gopacket.LayerType {
	if l != model.LinkRawIP {
		return layers.LayerTypeEthernet
	}
	if len(frame) > 0 && frame[0]>>4 == 6 {
		return layers.LayerTypeIPv6
	}
	return layers.LayerTypeIPv4
}

// CheckRSTOn is CheckRST for frames of a link of type l: on a raw-IP link the frames
// start at the IP header and there are no MACs to check.
func CheckRSTOn(l model.Link, syn, rst []byte) []string {
	var probs []string
	bad := func(format string, args ...any) { probs = append(probs, "RST: "+fmt.Sprintf(format, args...)) }
	first := FirstLayer(l, syn)
	in := gopacket.NewPacket(syn, first, gopacket.Default)
	out := gopacket.NewPacket(rst, first, gopacket.Default)
	if el := out.ErrorLayer(); el != nil {
		bad("does not decode: %v", el.Error())
		return probs
	}
	if l == model.LinkEthernet {
		ie, _ := in.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
		oe, _ := out.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
		if ie == nil || oe == nil {
			bad("no Ethernet header")
			return probs
		}
		if !bytes.Equal(ie.SrcMAC, oe.DstMAC) || !bytes.Equal(ie.DstMAC, oe.SrcMAC) {
			bad("MACs not swapped")
		}
	}
	otcp, _ := out.Layer(layers.LayerTypeTCP).(*layers.TCP)
	if otcp == nil {
		bad("no TCP header")
		return probs
	}
	if !otcp.RST || !otcp.ACK || otcp.SYN || otcp.FIN || otcp.PSH || otcp.URG || otcp.ECE || otcp.CWR || otcp.NS {
		bad("flags are not RST+ACK")
	}
	itcp, ext := synTCP(in) // nil: the SYN-side checks cannot be made
	if itcp != nil {
		if otcp.SrcPort != itcp.DstPort || otcp.DstPort != itcp.SrcPort {
			bad("ports not swapped: %d>%d answered as %d>%d", itcp.SrcPort, itcp.DstPort, otcp.SrcPort, otcp.DstPort)
		}
		if want := itcp.Seq + 1 + synPayload(in, itcp, ext); otcp.Ack != want {
			bad("ack %d, want %d", otcp.Ack, want)
		}
	}
	var netl gopacket.NetworkLayer
	if o4, ok := out.Layer(layers.LayerTypeIPv4).(*layers.IPv4); ok {
		if i4, ok := in.Layer(layers.LayerTypeIPv4).(*layers.IPv4); itcp != nil && (!ok || !o4.SrcIP.Equal(i4.DstIP) || !o4.DstIP.Equal(i4.SrcIP)) {
			bad("IPv4 addresses not swapped")
		}
		cp := *o4
		if err := cp.SerializeTo(gopacket.NewSerializeBuffer(), gopacket.SerializeOptions{ComputeChecksums: true}); err != nil || cp.Checksum != o4.Checksum {
			bad("IPv4 header checksum %#04x, want %#04x", o4.Checksum, cp.Checksum)
		}
		netl = o4
	} else if o6, ok := out.Layer(layers.LayerTypeIPv6).(*layers.IPv6); ok {
		if i6, ok := in.Layer(layers.LayerTypeIPv6).(*layers.IPv6); itcp != nil && (!ok || !o6.SrcIP.Equal(i6.DstIP) || !o6.DstIP.Equal(i6.SrcIP)) {
			bad("IPv6 addresses not swapped")
		}
		netl = o6
	} else {
		bad("no IP header")
		return probs
	}
	cp := *otcp
	if err := cp.SetNetworkLayerForChecksum(netl); err == nil {
		err = cp.SerializeTo(gopacket.NewSerializeBuffer(), gopacket.SerializeOptions{ComputeChecksums: true})
		if err != nil || cp.Checksum != otcp.Checksum {
			bad("TCP checksum %#04x, want %#04x", otcp.Checksum, cp.Checksum)
		}
	}
	return probs
}

// synTCP finds the TCP header of a frame and the bytes of IPv6 extension headers in
// front of it, or nil if gopacket cannot decode that far. gopacket stops at an IPv6
// fragment header; an atomic fragment (offset 0, no more fragments) still gets an RST,
// so decoding goes on from the fragment header's next header. A TCP layer whose fixed
// 20 bytes did not decode (gopacket adds the layer even then, zeroed) does not count;
// one cut short in its options, or by the snap length, does: its ports, seq and data
// offset are read.
func synTCP(p gopacket.Packet) (tcp *layers.TCP, ext int) {
	ls := p.Layers()
	if fl, ok := p.Layer(layers.LayerTypeIPv6Fragment).(*layers.IPv6Fragment); ok && p.Layer(layers.LayerTypeTCP) == nil {
		ls = append(ls, gopacket.NewPacket(fl.LayerPayload(), fl.NextHeader.LayerType(), gopacket.Default).Layers()...)
	}
	for _, l := range ls {
		switch l.LayerType() {
		case layers.LayerTypeTCP:
			if t := l.(*layers.TCP); len(t.Contents) >= 20 {
				return t, ext
			}
			return nil, 0
		case layers.LayerTypeIPv6HopByHop, layers.LayerTypeIPv6Routing, layers.LayerTypeIPv6Fragment,
			layers.LayerTypeIPv6Destination, layers.LayerTypeIPSecAH:
			// Counted from their own layers: gopacket folds a hop-by-hop header
			// into the IPv6 layer and leaves it out of that layer's payload.
			ext += len(l.LayerContents())
		}
	}
	return nil, 0
}

// synPayload is the TCP payload length of SYN t in packet p as its IP header states it
// (the capture may hold fewer bytes), ext the bytes of IPv6 extension headers before
// it: what the RST's ack must count beyond seq + 1.
func synPayload(p gopacket.Packet, t *layers.TCP, ext int) uint32 {
	hl := int(t.DataOffset) * 4
	if i4, ok := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4); ok {
		// The total length as the header states it: gopacket replaces a zero (as
		// TSO leaves in host captures) by the bytes captured.
		tot := int(binary.BigEndian.Uint16(i4.Contents[2:4]))
		return uint32(max(tot-int(i4.IHL)*4-hl, 0))
	}
	if i6, ok := p.Layer(layers.LayerTypeIPv6).(*layers.IPv6); ok {
		// The IPv6 payload length covers the extension headers too.
		return uint32(max(int(i6.Length)-ext-hl, 0))
	}
	return uint32(len(t.Payload))
}
