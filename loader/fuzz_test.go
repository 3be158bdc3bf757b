package loader

import (
	"encoding/hex"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portcullis/portcullis/internal/testutil"
	"github.com/portcullis/portcullis/model"
	"github.com/portcullis/portcullis/verify"
)

// seedFrames are valid frames of every shape the parser knows, for fuzz seeds and the
// truncation test.
func seedFrames(t testing.TB) [][]byte {
	var out [][]byte
	for enc := encPlain; enc < numEncaps; enc++ {
		for _, s := range sources[:2] {
			out = append(out,
				buildFrame(t, frameSpec{enc: enc, src: s.v4, dst: dst4, sport: 1234, dport: 25, syn: true, seq: 99, tcpOpts: true}),
				buildFrame(t, frameSpec{enc: enc, src: s.v6, dst: dst6, sport: 1234, dport: 25, syn: true, seq: 99, payload: []byte("hi")}),
			)
		}
	}
	out = append(out,
		buildFrame(t, frameSpec{src: sources[1].v4, dst: dst4, sport: 1, dport: 25, syn: true, ipOpts: []byte{0x94, 4, 0, 0}}),
		buildFrame(t, frameSpec{src: sources[0].v4, dst: dst4, sport: 1, dport: 25, ack: true, frag: &fragSpec{more: true}, payload: make([]byte, 16)}),
		buildFrame(t, frameSpec{src: sources[1].v6, dst: dst6, sport: 1, dport: 25, syn: true,
			ext: []extHdr{{proto: 0}, {proto: 43}, {proto: 44}, {proto: 51}, {proto: 60}}}),
		buildFrame(t, frameSpec{enc: encQinQ, src: sources[0].v6, dst: dst6, sport: 1, dport: 25, syn: true,
			ext: make([]extHdr, model.MaxExtHeaders+1)}),
		buildFrame(t, frameSpec{src: sources[7].v4, dst: dst4, udp: true, sport: 1, dport: 25}),
		// An IPv4-mapped IPv6 source, judged as the IPv4 address it maps.
		buildFrame(t, frameSpec{src: netip.AddrFrom16(sources[1].v4.As16()), dst: dst6, sport: 1, dport: 25, syn: true}),
		// One tag more than the parse reads (dropped whatever it carries), and a reset
		// range's SYN from a broadcast MAC (dropped, not answered).
		withTags(buildFrame(t, frameSpec{src: sources[0].v4, dst: dst4, sport: 1, dport: 587, syn: true}), model.MaxVLANTags+1, 0),
		func() []byte {
			f := buildFrame(t, frameSpec{src: sources[1].v4, dst: dst4, sport: 1, dport: 25, syn: true})
			copy(f[6:12], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
			return f
		}(),
		// PPP VJ-uncompressed TCP (0x002f, a VJ slot in the IPv4 protocol byte).
		func() []byte {
			f := setPPPProto(buildFrame(t, frameSpec{enc: encPPPoE, src: sources[0].v4, dst: dst4, sport: 1, dport: 25, syn: true}), 14, 0x002f)
			f[14+8+9] = 1
			return f
		}(),
	)
	return out
}

var (
	fuzzOnce  sync.Once
	fuzzProg  *Program
	fuzzHash  *Program // the policy's IPv6 ranges in ranges_v6 (hashedTestTables)
	fuzzErr   error
	fuzzHashT *model.Tables
)

// hashedTestTables is testTables with enough IPv6 ranges more (in and around its own,
// in 2001:db8::/32, nested, of many lengths) for them to go into ranges_v6.
func hashedTestTables(now time.Time) *model.Tables {
	t := testTables(now)
	more := testutil.RandomV6Ranges(11, 2*hashMin6, []int{0, 20, 32, 40, 44, 48, 52, 56, 60, 64, 96, 112, 127, 128})
	for _, e := range more {
		e.Rule = 1 + e.Rule%uint32(len(t.RuleNames)-1) // rules of testTables
		t.Ranges = append(t.Ranges, e)
	}
	return t
}

// compareWithModel runs frame through the program and fails on any difference
// verify.Compare finds (the comparison the replay and the daemon's proof use): the
// action, and the frame the program leaves (the RST byte for byte and checked on its
// own, any other frame unchanged).
func compareWithModel(t testing.TB, p *Program, tables *model.Tables, frame []byte) (model.Decision, model.Action) {
	t.Helper()
	return compareWithModelOn(t, model.LinkEthernet, p, tables, frame)
}

// compareWithModelOn is compareWithModel through the entry point for links of type l.
func compareWithModelOn(t testing.TB, l model.Link, p *Program, tables *model.Tables, frame []byte) (model.Decision, model.Action) {
	t.Helper()
	act, out, err := p.RunOn(l, frame)
	if err != nil {
		t.Fatalf("run (%v): %v", l, err)
	}
	d, diffs := verify.Compare(tables, frame, time.Now(), verify.Observed{Link: l, Action: act, Out: out})
	if len(diffs) > 0 {
		var b strings.Builder
		for _, x := range diffs {
			b.WriteString("\n" + x.Msg)
		}
		t.Fatalf("%v link: program %v, model %v (%+v)%s\nframe %s", l, act, d.Action, d.Packet, b.String(), hex.EncodeToString(frame))
	}
	return d, act
}

// FuzzProgramVsModel feeds random and mutated frames to the verifier-loaded program
// and to the reference model: they must agree on every one, read as a frame of an
// Ethernet interface and as one of a raw-IP interface (both entry points), under the
// packet tests' policy and under it with enough IPv6 ranges for ranges_v6.
func FuzzProgramVsModel(f *testing.F) {
	testutil.RequireRoot(f)
	for _, fr := range seedFrames(f) {
		f.Add(fr)
	}
	tables := testTables(time.Now())
	f.Fuzz(func(t *testing.T, frame []byte) {
		fuzzOnce.Do(func() {
			fuzzProg, fuzzErr = Load()
			if fuzzErr == nil {
				fuzzErr = fuzzProg.Apply(tables)
			}
			if fuzzErr == nil {
				fuzzHashT = hashedTestTables(time.Now())
				fuzzHash, fuzzErr = Load()
			}
			if fuzzErr == nil {
				fuzzErr = fuzzHash.Apply(fuzzHashT)
			}
		})
		if fuzzErr != nil {
			t.Fatal(fuzzErr)
		}
		// BPF_PROG_TEST_RUN takes frames from an Ethernet header up to a page; a
		// real interface never hands XDP anything outside that either.
		if len(frame) < 14 || len(frame) > 1514 {
			t.Skip("outside the frame sizes XDP sees")
		}
		compareWithModelOn(t, model.LinkEthernet, fuzzProg, tables, frame)
		compareWithModelOn(t, model.LinkRawIP, fuzzProg, tables, frame)
		compareWithModelOn(t, model.LinkEthernet, fuzzHash, fuzzHashT, frame)
		compareWithModelOn(t, model.LinkRawIP, fuzzHash, fuzzHashT, frame)
	})
}
