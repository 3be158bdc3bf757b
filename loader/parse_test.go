package loader

import (
	"fmt"
	"testing"
	"time"

	"github.com/portcullis/portcullis/policy"
)

var (
	dropSrc  = sources[0]
	resetSrc = sources[1]
	passSrc  = sources[2]
)

type parseCase struct {
	name       string
	frame      frameSpec
	wantAction policy.Action
	wantPath   policy.Reason
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
			if act == policy.ActionTX {
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
				parseCase{fmt.Sprintf("%s/%s/reset-syn", o.name, enc), frameSpec{enc: enc, src: resetSrc.v4, dst: dst4, sport: 5, dport: 25, syn: true, seq: 7, ipOpts: o.opt, tcpOpts: true, payload: []byte("data")}, policy.ActionTX, policy.ReasonJudged},
				parseCase{fmt.Sprintf("%s/%s/drop", o.name, enc), frameSpec{enc: enc, src: dropSrc.v4, dst: dst4, sport: 5, dport: 25, syn: true, ipOpts: o.opt}, policy.ActionDrop, policy.ReasonJudged},
				parseCase{fmt.Sprintf("%s/%s/587", o.name, enc), frameSpec{enc: enc, src: dropSrc.v4, dst: dst4, sport: 5, dport: 587, syn: true, ipOpts: o.opt}, policy.ActionPass, policy.ReasonNotGoverned},
			)
		}
	}
	runParseCases(t, cases)
}

func TestIPv6ExtensionChains(t *testing.T) {
	var cases []parseCase
	kinds := []byte{0, 60, 43, 51} // hop-by-hop, destination options, routing, AH
	for n := 0; n <= policy.MaxExtHeaders+1; n++ {
		ext := make([]extHdr, n)
		for i := range ext {
			ext[i].proto = kinds[i%len(kinds)]
		}
		action, path := policy.ActionDrop, policy.ReasonJudged
		resetAction := policy.ActionTX
		passPath := policy.ReasonJudged
		if n > policy.MaxExtHeaders {
			// Past the limit: blocked sources are dropped as evasion, others pass.
			path, resetAction, passPath = policy.ReasonEvasion, policy.ActionDrop, policy.ReasonEvasion
		}
		cases = append(cases,
			parseCase{fmt.Sprintf("%d-headers/drop", n), frameSpec{src: dropSrc.v6, dst: dst6, sport: 5, dport: 25, syn: true, ext: ext}, action, path},
			parseCase{fmt.Sprintf("%d-headers/reset", n), frameSpec{enc: encVLAN, src: resetSrc.v6, dst: dst6, sport: 5, dport: 25, syn: true, ext: ext, payload: []byte("x")}, resetAction, path},
			parseCase{fmt.Sprintf("%d-headers/pass-range", n), frameSpec{src: passSrc.v6, dst: dst6, sport: 5, dport: 25, syn: true, ext: ext}, policy.ActionPass, passPath},
		)
		if n <= policy.MaxExtHeaders {
			cases = append(cases, parseCase{fmt.Sprintf("%d-headers/465", n), frameSpec{src: dropSrc.v6, dst: dst6, sport: 5, dport: 465, syn: true, ext: ext}, policy.ActionPass, policy.ReasonNotGoverned})
		}
	}
	runParseCases(t, cases)
}

func TestFragments(t *testing.T) {
	runParseCases(t, []parseCase{
		{"v4/non-first", frameSpec{src: dropSrc.v4, dst: dst4, sport: 5, dport: 25, ack: true, frag: &fragSpec{offset: 3, more: true}, payload: make([]byte, 24)}, policy.ActionPass, policy.ReasonFragment},
		{"v4/last", frameSpec{src: dropSrc.v4, dst: dst4, sport: 5, dport: 25, ack: true, frag: &fragSpec{offset: 3}}, policy.ActionPass, policy.ReasonFragment},
		{"v4/first", frameSpec{src: dropSrc.v4, dst: dst4, sport: 5, dport: 25, ack: true, frag: &fragSpec{more: true}, payload: make([]byte, 24)}, policy.ActionDrop, policy.ReasonJudged},
		{"v4/first-syn-reset-range", frameSpec{src: resetSrc.v4, dst: dst4, sport: 5, dport: 25, syn: true, frag: &fragSpec{more: true}, payload: make([]byte, 24)}, policy.ActionDrop, policy.ReasonJudged},
		{"v4/first-587", frameSpec{src: dropSrc.v4, dst: dst4, sport: 5, dport: 587, frag: &fragSpec{more: true}}, policy.ActionPass, policy.ReasonNotGoverned},
		{"v6/non-first", frameSpec{src: dropSrc.v6, dst: dst6, sport: 5, dport: 25, ext: []extHdr{{proto: 44, frag: fragSpec{offset: 2, more: true}}}}, policy.ActionPass, policy.ReasonFragment},
		{"v6/first", frameSpec{src: dropSrc.v6, dst: dst6, sport: 5, dport: 25, syn: true, ext: []extHdr{{proto: 44, frag: fragSpec{more: true}}}}, policy.ActionDrop, policy.ReasonJudged},
		{"v6/atomic-fragment-syn", frameSpec{src: resetSrc.v6, dst: dst6, sport: 5, dport: 25, syn: true, ext: []extHdr{{proto: 44}}}, policy.ActionTX, policy.ReasonJudged},
		{"v6/hop-then-non-first", frameSpec{src: dropSrc.v6, dst: dst6, sport: 5, dport: 25, ext: []extHdr{{proto: 0}, {proto: 44, frag: fragSpec{offset: 1}}}}, policy.ActionPass, policy.ReasonFragment},
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
	if act != policy.ActionDrop || !d.Packet.PortsOnly {
		t.Fatalf("tiny first fragment: %v (ports only %v), want drop", act, d.Packet.PortsOnly)
	}
	// The same truncation without MF is just a truncated packet: untouched.
	tiny[14+6] = 0
	if d, act := compareWithModel(t, p, tables, tiny); act != policy.ActionPass || d.Path != policy.ReasonMalformed {
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
			if d, act := compareWithModel(t, p, tables, frame); act != policy.ActionPass || d.Path != policy.ReasonMalformed {
				t.Fatalf("%v %v, want pass/malformed", act, d.Path)
			}
		})
	}
}

// Every truncation of every valid frame, byte by byte: the program agrees with the
// model, and never blocks a packet the model did not judge.
func TestTruncations(t *testing.T) {
	tables := testTables(time.Now())
	p := applied(t, tables)
	n := 0
	for _, full := range seedFrames(t) {
		for l := 14; l < len(full); l++ {
			d, act := compareWithModel(t, p, tables, full[:l])
			if act != policy.ActionPass && !d.Judged {
				t.Fatalf("truncated to %d: %v without judgement", l, act)
			}
			n++
		}
	}
	t.Logf("%d truncated frames agree", n)
}
