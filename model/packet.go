package model

import (
	"encoding/binary"
	"net/netip"
)

// This file is the reference model of the XDP program (bpf/portcullis.c): given a raw
// Ethernet frame and the same Tables, Judge returns what the program must do, down to
// the bytes of an RST reply. It is written from the specification, not translated from
// the C, and the packet tests and the differential fuzzer hold the two together.

// Action is an XDP return code.
type Action uint32

const (
	ActionAborted Action = 0
	ActionDrop    Action = 1
	ActionPass    Action = 2
	ActionTX      Action = 3
)

func (a Action) String() string {
	switch a {
	case ActionDrop:
		return "XDP_DROP"
	case ActionPass:
		return "XDP_PASS"
	case ActionTX:
		return "XDP_TX"
	}
	return "XDP_ABORTED"
}

// Outcome is what happened to a judged packet (enum pc_outcome).
type Outcome uint8

const (
	OutPass    Outcome = 0
	OutDrop    Outcome = 1
	OutRST     Outcome = 2
	OutMonitor Outcome = 3
)

var outcomeNames = [...]string{"pass", "drop", "rst", "monitor"}

func (o Outcome) String() string {
	if int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return "outcome(" + itoa(int(o)) + ")"
}

// Family is an address family as the data plane numbers it (enum pc_family).
type Family uint8

const (
	IPv4 Family = 0
	IPv6 Family = 1
)

func (f Family) String() string {
	if f == IPv6 {
		return "ipv6"
	}
	return "ipv4"
}

// Reason is a reason counter (enum pc_reason). Every packet counts in one path reason
// (NoPolicy..TooManyTags); judged packets may also count in flag reasons (Quarantine..).
type Reason uint8

const (
	ReasonNoPolicy           Reason = 0
	ReasonNotTCP             Reason = 1
	ReasonMalformed          Reason = 2
	ReasonFragment           Reason = 3
	ReasonNotGoverned        Reason = 4
	ReasonJudged             Reason = 5
	ReasonEvasion            Reason = 6
	ReasonTooManyTags        Reason = 7 // more VLAN tags than MaxVLANTags: dropped
	ReasonQuarantine         Reason = 8
	ReasonRSTSent            Reason = 9
	ReasonRateLimited        Reason = 10
	ReasonUnparseableBlocked Reason = 11
	NumReasons                      = 12
)

var reasonNames = [...]string{"no_policy", "not_tcp", "malformed", "fragment", "not_governed",
	"judged", "evasion", "too_many_tags", "quarantine", "rst_sent", "rate_limited", "unparseable_blocked"}

// Path reports whether r is a path reason (every packet counts in exactly one), not a
// flag.
func (r Reason) Path() bool { return r < ReasonQuarantine }

func (r Reason) String() string {
	if int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return "reason(" + itoa(int(r)) + ")"
}

// Limits the program was built with (bpf/limits.h).
const (
	MaxExtHeaders = 8     // IPv6 extension headers walked
	MaxVLANTags   = 8     // VLAN tags walked (PC_MAX_VLAN_TAGS); a frame with more is dropped
	MaxRules      = 16384 // rules with counters
	RSTTTL        = 64    // TTL / hop limit of the RSTs sent
	// MaxLongIPv4Blocks is how many IPv4 /24s may hold ranges longer than /24 that
	// apply on every interface: the groups a slot of the DIR-24-8 table holds
	// (PC_DIR8_GROUPS).
	MaxLongIPv4Blocks = 32768
)

// LongIPv4Block is the /24 (its first three bytes, as a number) of an IPv4 range
// longer than /24 that applies on every interface: each distinct one takes one of the
// MaxLongIPv4Blocks groups. ok is false for any other entry.
func LongIPv4Block(e Entry) (block uint32, ok bool) {
	if e.Interfaces != nil || !e.Prefix.Addr().Is4() || e.Prefix.Bits() <= 24 {
		return 0, false
	}
	a := e.Prefix.Addr().As4()
	return uint32(a[0])<<16 | uint32(a[1])<<8 | uint32(a[2]), true
}

// Packet is what the parser made of a frame.
type Packet struct {
	Class     Reason // ReasonJudged for TCP with ports, ReasonEvasion, or why it passes
	Family    Family
	Src, Dst  netip.Addr
	SrcPort   uint16
	DstPort   uint16
	Flags     uint8
	Seq       uint32
	Payload   uint32 // TCP payload bytes from the IP length fields
	Fragment  bool   // first fragment of a fragmented datagram
	PortsOnly bool   // first fragment too short for a full TCP header
	L3Off     int    // 0 on a raw-IP link
	PPPoEOff  int    // 0 without PPPoE
	VJ        bool   // PPP VJ-uncompressed TCP: judged, never answered with an RST
	GroupMAC  bool   // a group (broadcast, multicast) Ethernet source or destination: never answered
}

const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

// Link says where a frame starts: at an Ethernet header, or (on tun, ppp, WireGuard and
// IP-tunnel interfaces) at the IP header. The program has one entry point for each.
type Link uint8

const (
	LinkEthernet Link = iota
	LinkRawIP
)

func (l Link) String() string {
	if l == LinkRawIP {
		return "raw-ip"
	}
	return "ethernet"
}

// PPP protocols the parser knows (RFC 1661, 1332, 5072, 1144).
const (
	pppIPv4     = 0x0021
	pppIPv6     = 0x0057
	pppVJUncomp = 0x002f // VJ uncompressed TCP/IP: IPv4 whose protocol byte is a VJ slot
)

// Decode parses a frame the way the program does: Ethernet, up to MaxVLANTags VLAN
// tags (0x8100/0x88a8; a frame still tagged after them is ReasonTooManyTags), optional
// PPPoE session (PPP protocol in 2 bytes or compressed to 1:
// IPv4, IPv6, VJ-uncompressed TCP), IPv4 with options or IPv6 with up to MaxExtHeaders
// extension headers, TCP.
func Decode(f []byte) Packet { return DecodeOn(LinkEthernet, f) }

// DecodeOn parses a frame that arrived on a link of type l.
func DecodeOn(l Link, f []byte) Packet {
	var p Packet
	if l == LinkRawIP {
		if len(f) < 1 {
			p.Class = ReasonMalformed
			return p
		}
		switch f[0] >> 4 {
		case 4:
			decodeIPv4(f, 0, &p)
		case 6:
			decodeIPv6(f, 0, &p)
		default:
			p.Class = ReasonNotTCP
		}
		return p
	}
	if len(f) < 14 {
		p.Class = ReasonMalformed
		return p
	}
	proto := binary.BigEndian.Uint16(f[12:])
	p.GroupMAC = (f[0]|f[6])&1 == 1
	off := 14
	tagged := func() bool { return proto == 0x8100 || proto == 0x88a8 }
	for i := 0; i < MaxVLANTags && tagged(); i++ {
		if len(f) < off+4 {
			p.Class = ReasonMalformed
			return p
		}
		proto = binary.BigEndian.Uint16(f[off+2:])
		off += 4
	}
	if tagged() {
		p.Class = ReasonTooManyTags
		return p
	}
	if proto == 0x8864 {
		if len(f) < off+7 {
			p.Class = ReasonMalformed
			return p
		}
		// Version/type and code are not checked: the kernel's pppoe_rcv does not.
		p.PPPoEOff = off
		off += 6
		// Protocol-field compression: an odd first byte is the whole protocol.
		var ppp uint16
		if f[off]&1 == 1 {
			ppp = uint16(f[off])
			off++
		} else {
			if len(f) < off+2 {
				p.Class = ReasonMalformed
				return p
			}
			ppp = binary.BigEndian.Uint16(f[off:])
			off += 2
		}
		switch ppp {
		case pppIPv4:
			proto = 0x0800
		case pppIPv6:
			proto = 0x86dd
		case pppVJUncomp:
			proto = 0x0800
			p.VJ = true
		default: // VJ compressed (no addresses or ports), LCP, CCP, ...: passed
			p.Class = ReasonNotTCP
			return p
		}
	}
	p.L3Off = off
	switch proto {
	case 0x0800:
		decodeIPv4(f, off, &p)
	case 0x86dd:
		decodeIPv6(f, off, &p)
	default:
		p.Class = ReasonNotTCP
	}
	return p
}

func decodeIPv4(f []byte, off int, p *Packet) {
	if len(f) < off+20 || f[off]>>4 != 4 {
		p.Class = ReasonMalformed
		return
	}
	hl := int(f[off]&0x0f) * 4
	if hl < 20 || len(f) < off+hl {
		p.Class = ReasonMalformed
		return
	}
	frag := binary.BigEndian.Uint16(f[off+6:])
	if frag&0x1fff != 0 {
		p.Class = ReasonFragment
		return
	}
	if f[off+9] != 6 && !p.VJ { // a VJ slot number, restored to TCP by the kernel
		p.Class = ReasonNotTCP
		return
	}
	p.Fragment = frag&0x2000 != 0
	p.Family = IPv4
	p.Src = netip.AddrFrom4([4]byte(f[off+12 : off+16]))
	p.Dst = netip.AddrFrom4([4]byte(f[off+16 : off+20]))
	tot := int(binary.BigEndian.Uint16(f[off+2:]))
	decodeTCP(f, off+hl, max(tot-hl, 0), p)
}

func isExtHeader(nh byte) bool {
	return nh == 0 || nh == 43 || nh == 60 || nh == 51 || nh == 44
}

func decodeIPv6(f []byte, off int, p *Packet) {
	if len(f) < off+40 || f[off]>>4 != 6 {
		p.Class = ReasonMalformed
		return
	}
	p.Family = IPv6
	p.Src = netip.AddrFrom16([16]byte(f[off+8 : off+24]))
	p.Dst = netip.AddrFrom16([16]byte(f[off+24 : off+40]))
	plen := int(binary.BigEndian.Uint16(f[off+4:]))
	nh := f[off+6]
	pos := off + 40
	ext := 0
	for i := 0; i < MaxExtHeaders && nh != 6; i++ {
		var hl int
		switch nh {
		case 0, 43, 60, 51:
			if len(f) < pos+2 {
				p.Class = truncated(p)
				return
			}
			if nh == 51 {
				hl = (int(f[pos+1]) + 2) * 4
			} else {
				hl = (int(f[pos+1]) + 1) * 8
			}
			nh = f[pos]
		case 44:
			if len(f) < pos+8 {
				p.Class = truncated(p)
				return
			}
			fo := binary.BigEndian.Uint16(f[pos+2:])
			if fo&0xfff8 != 0 {
				p.Class = ReasonFragment
				return
			}
			if fo&1 != 0 {
				p.Fragment = true
			}
			hl = 8
			nh = f[pos]
		default:
			p.Class = ReasonNotTCP
			return
		}
		if len(f) < pos+hl {
			p.Class = truncated(p)
			return
		}
		pos += hl
		ext += hl
	}
	if nh != 6 {
		if isExtHeader(nh) {
			p.Class = ReasonEvasion
		} else {
			p.Class = ReasonNotTCP
		}
		return
	}
	decodeTCP(f, pos, max(plen-ext, 0), p)
}

// truncated classifies a frame cut short before its ports: malformed (the receiver
// discards it), unless it is a first fragment, whose rest (and ports) a later fragment
// brings: then it is judged on its source, like an over-long IPv6 chain.
func truncated(p *Packet) Reason {
	if p.Fragment {
		return ReasonEvasion
	}
	return ReasonMalformed
}

func decodeTCP(f []byte, off, ipPayload int, p *Packet) {
	if len(f) < off+4 {
		p.Class = truncated(p)
		return
	}
	p.SrcPort = binary.BigEndian.Uint16(f[off:])
	p.DstPort = binary.BigEndian.Uint16(f[off+2:])
	if len(f) < off+20 {
		if !p.Fragment {
			p.Class = ReasonMalformed
			return
		}
		p.PortsOnly = true
		p.Class = ReasonJudged
		return
	}
	hl := int(f[off+12]>>4) * 4
	if hl < 20 {
		p.Class = ReasonMalformed
		return
	}
	p.Flags = f[off+13]
	p.Seq = binary.BigEndian.Uint32(f[off+4:])
	p.Payload = uint32(max(ipPayload-hl, 0))
	p.Class = ReasonJudged
}
