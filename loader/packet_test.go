package loader

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/portcullis/portcullis/model"
	"github.com/portcullis/portcullis/verify"
)

// expectAction is the test's own statement of the policy for a SYN from source kind
// to (udp, port), independent of the model.
func expectAction(kind string, udp bool, port uint16) model.Action {
	if udp || port != 25 {
		return model.ActionPass
	}
	switch kind {
	case "drop-range":
		return model.ActionDrop
	case "reset-range", "quarantined":
		return model.ActionTX
	}
	return model.ActionPass
}

// matrixHashedTables is testTables with enough IPv6 ranges more for ranges_v6, none
// holding a source of the matrix (whose expected actions stay those of expectAction).
func matrixHashedTables(now time.Time) *model.Tables {
	t := testTables(now)
	for _, e := range hashedTestTables(now).Ranges[len(t.Ranges):] {
		if !slices.ContainsFunc(sources, func(s source) bool { return e.Prefix.Contains(s.v6) }) {
			t.Ranges = append(t.Ranges, e)
		}
	}
	return t
}

// TestPacketMatrix: every encapsulation, family, source kind and port, under the
// packet tests' policy, and under it with its IPv6 ranges in ranges_v6.
func TestPacketMatrix(t *testing.T) {
	now := time.Now()
	for _, hashed := range []bool{false, true} {
		tables := testTables(now)
		if hashed {
			tables = matrixHashedTables(now)
		}
		p := applied(t, tables)
		if got := liveFlags(t, p)&cfgHash6 != 0; got != hashed {
			t.Fatalf("IPv6 ranges hashed: %v, want %v", got, hashed)
		}
		t.Run(map[bool]string{false: "trie", true: "hash"}[hashed], func(t *testing.T) { packetMatrix(t, p, tables) })
	}
}

func packetMatrix(t *testing.T, p *Program, tables *model.Tables) {
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
						case model.ActionTX:
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
// program and the model: verify.CheckRST (fields swapped, flags, numbers, checksums
// recomputed by gopacket's serialiser), plus what only these tests' frames let it
// check: the L2 encapsulation kept, and the IP header's TTL, length and options.
func checkRST(t *testing.T, syn, rst []byte) {
	t.Helper()
	checkRSTOn(t, model.LinkEthernet, syn, rst)
}

// checkRSTOn is checkRST for frames of a link of type l (raw IP: no MACs to check).
func checkRSTOn(t *testing.T, l model.Link, syn, rst []byte) {
	t.Helper()
	for _, p := range verify.CheckRSTOn(l, syn, rst) {
		t.Error(p)
	}
	first := verify.FirstLayer(l, syn)
	in := gopacket.NewPacket(syn, first, gopacket.Default)
	out := gopacket.NewPacket(rst, first, gopacket.Default)
	// L2 encapsulation kept: same VLAN ids, same PPPoE session, PPPoE length right.
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
	if o4, ok := out.Layer(layers.LayerTypeIPv4).(*layers.IPv4); ok {
		if o4.TTL != model.RSTTTL || o4.IHL != 5 || o4.Length != 40 {
			t.Errorf("ipv4 ttl %d ihl %d len %d", o4.TTL, o4.IHL, o4.Length)
		}
	} else if o6, ok := out.Layer(layers.LayerTypeIPv6).(*layers.IPv6); ok {
		if o6.HopLimit != model.RSTTTL || o6.Length != 20 || o6.NextHeader != layers.IPProtocolTCP {
			t.Errorf("ipv6 hop limit %d len %d next %d", o6.HopLimit, o6.Length, o6.NextHeader)
		}
	}
	if otcp, ok := out.Layer(layers.LayerTypeTCP).(*layers.TCP); !ok || otcp.DataOffset != 5 || len(otcp.Options) != 0 || len(otcp.Payload) != 0 {
		t.Errorf("options or payload not stripped")
	}
}
