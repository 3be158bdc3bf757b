package model

import (
	"encoding/binary"
	"time"
)

// Judge: the verdict, the counters and the reply the XDP program must produce for a
// frame, from the decoded packet (packet.go) and the tables (tables.go).

// Decision is the model's judgement of one frame.
type Decision struct {
	Packet  Packet
	Path    Reason   // the one path reason counted
	Flags   []Reason // flag reasons counted
	Judged  bool     // counted per rule x outcome x family
	Rule    uint32
	Verdict Verdict
	Outcome Outcome
	Action  Action
	Reply   []byte // the frame sent back, for ActionTX
	// Offender is true when the attempt is recorded in the offender record.
	Offender bool
	// Relay is true when a relay towards the destination decided (Rule is the relay's).
	Relay bool
}

// Judge returns what the program does with frame under t at time now. rstBudget says
// whether the RST rate limit has a token for this packet (true when unlimited).
func (t *Tables) Judge(frame []byte, now time.Time, rstBudget bool) Decision {
	return t.JudgeOn(LinkEthernet, frame, now, rstBudget)
}

// JudgeOn is Judge for a frame that arrived on a link of type l, on an interface that
// no scope names.
func (t *Tables) JudgeOn(l Link, frame []byte, now time.Time, rstBudget bool) Decision {
	return t.JudgeAt(Ingress{Link: l}, frame, now, rstBudget)
}

// Ingress is where a frame came in: the kind of link, and the interface's name as the
// policy's scopes write it ("" for an interface no scope names).
type Ingress struct {
	Link      Link
	Interface string
}

// JudgeAt is Judge for a frame that arrived at in.
func (t *Tables) JudgeAt(in Ingress, frame []byte, now time.Time, rstBudget bool) Decision {
	p := DecodeOn(in.Link, frame)
	d := Decision{Packet: p, Path: p.Class, Action: ActionPass}
	switch p.Class {
	case ReasonJudged:
		if !t.IsGoverned(p.DstPort) {
			d.Path = ReasonNotGoverned
			return d
		}
	case ReasonEvasion:
	case ReasonTooManyTags:
		d.Action = ActionDrop
		return d
	default:
		return d
	}

	d.Judged = true
	var src Source
	if p.Class == ReasonEvasion {
		// No port, so no relay: the source decides.
		src = t.LookupSourceOn(p.Src, in.Interface, now)
	} else {
		src, d.Relay = t.Decide(p.Src, p.Dst, p.DstPort, in.Interface, now)
	}
	d.Rule, d.Verdict = src.Rule, src.Verdict
	if src.Quarantine {
		d.Flags = append(d.Flags, ReasonQuarantine)
	}

	if p.Class == ReasonEvasion {
		switch {
		case src.Verdict.Blocks():
			d.Outcome, d.Action, d.Offender = OutDrop, ActionDrop, true
			d.Flags = append(d.Flags, ReasonUnparseableBlocked)
		case src.Verdict == Monitor:
			d.Outcome, d.Offender = OutMonitor, true
		default:
			d.Outcome = OutPass
		}
		return d
	}

	switch src.Verdict {
	case Drop:
		d.Outcome, d.Action, d.Offender = OutDrop, ActionDrop, true
	case Reset:
		d.Outcome, d.Action, d.Offender = OutDrop, ActionDrop, true
		if p.Flags&(tcpSYN|tcpACK|tcpRST) != tcpSYN || p.Fragment || p.VJ || p.GroupMAC {
			break
		}
		if !rstBudget {
			d.Flags = append(d.Flags, ReasonRateLimited)
			break
		}
		d.Outcome, d.Action = OutRST, ActionTX
		d.Flags = append(d.Flags, ReasonRSTSent)
		d.Reply = BuildRST(frame, &p)
	case Monitor:
		d.Outcome, d.Offender = OutMonitor, true
	default:
		d.Outcome = OutPass
	}
	return d
}

// BuildRST returns the RST+ACK the program sends for SYN p that arrived in frame: the
// L2 headers kept (MACs swapped, PPPoE version/type 0x11, code 0 and length fixed), a fresh IP header (TTL/hop limit
// RSTTTL, IPv4 DF, id 0) and a bare TCP header with seq 0, ack = seq + 1 + payload.
func BuildRST(frame []byte, p *Packet) []byte {
	out := make([]byte, p.L3Off, p.L3Off+60)
	copy(out, frame[:p.L3Off])
	if p.L3Off > 0 { // a raw-IP link has no MACs to swap
		copy(out[0:6], frame[6:12])
		copy(out[6:12], frame[0:6])
	}

	tcp := make([]byte, 20)
	binary.BigEndian.PutUint16(tcp[0:], p.DstPort)
	binary.BigEndian.PutUint16(tcp[2:], p.SrcPort)
	binary.BigEndian.PutUint32(tcp[8:], p.Seq+1+p.Payload)
	tcp[12] = 5 << 4
	tcp[13] = tcpRST | tcpACK

	var ip []byte
	if p.Family == IPv4 {
		ip = make([]byte, 20)
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], 40)
		binary.BigEndian.PutUint16(ip[6:], 0x4000)
		ip[8] = RSTTTL
		ip[9] = 6
		d, s := p.Dst.As4(), p.Src.As4()
		copy(ip[12:], d[:])
		copy(ip[16:], s[:])
		binary.BigEndian.PutUint16(ip[10:], Checksum(ip, 0))
		pseudo := append(append([]byte{}, ip[12:20]...), 0, 6, 0, 20)
		binary.BigEndian.PutUint16(tcp[16:], Checksum(tcp, sum16(pseudo)))
	} else {
		ip = make([]byte, 40)
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:], 20)
		ip[6] = 6
		ip[7] = RSTTTL
		d, s := p.Dst.As16(), p.Src.As16()
		copy(ip[8:], d[:])
		copy(ip[24:], s[:])
		pseudo := append(append([]byte{}, ip[8:40]...), 0, 0, 0, 20, 0, 0, 0, 6)
		binary.BigEndian.PutUint16(tcp[16:], Checksum(tcp, sum16(pseudo)))
	}
	if p.PPPoEOff != 0 {
		out[p.PPPoEOff], out[p.PPPoEOff+1] = 0x11, 0 // a well-formed session header
		pppLen := p.L3Off - p.PPPoEOff - 6           // the PPP protocol field: 1 or 2 bytes
		binary.BigEndian.PutUint16(out[p.PPPoEOff+4:], uint16(len(ip)+len(tcp)+pppLen))
	}
	out = append(out, ip...)
	return append(out, tcp...)
}

func sum16(b []byte) uint32 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	return s
}

// Checksum is the Internet checksum (RFC 1071) of b, starting from the partial sum
// initial (for a pseudo-header).
func Checksum(b []byte, initial uint32) uint16 {
	s := initial + sum16(b)
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}
