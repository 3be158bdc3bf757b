package daemon

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/portcullis/portcullis/policy"
)

// The proof judges each probe with verify.Compare: a program whose RSTs carry a wrong
// ack fails it, even with the right action, and so does one that rewrites a frame it
// passes; one that agrees passes.
func TestProofComparesRSTs(t *testing.T) {
	now := time.Now()
	tb := &policy.Tables{DefaultVerdict: policy.Pass, Governed: []uint16{25}, RuleNames: []string{"default", "pool"},
		Ranges: []policy.Entry{{Prefix: netip.MustParsePrefix("100.64.0.0/16"), Rule: 1, Verdict: policy.Reset}}}
	model := func(l policy.Link, frame []byte) (policy.Action, []byte, error) {
		d := tb.JudgeOn(l, frame, now, true)
		if d.Action == policy.ActionTX {
			return d.Action, d.Reply, nil
		}
		return d.Action, frame, nil
	}
	pr, err := prove(model, tb, nil, now, rand.New(rand.NewPCG(1, 2)))
	if err != nil || !pr.OK() || pr.Probes == 0 {
		t.Fatalf("the model against itself: %+v, %v", pr, err)
	}
	wrongAck := func(l policy.Link, frame []byte) (policy.Action, []byte, error) {
		act, out, err := model(l, frame)
		if act == policy.ActionTX {
			out = append([]byte(nil), out...)
			ack := len(out) - 20 + 8
			binary.BigEndian.PutUint32(out[ack:], binary.BigEndian.Uint32(out[ack:])+1)
		}
		return act, out, err
	}
	pr, err = prove(wrongAck, tb, nil, now, rand.New(rand.NewPCG(1, 2)))
	if err != nil || pr.OK() || !strings.Contains(pr.Mismatches[0].String(), "program XDP_TX, model XDP_TX (the RSTs differ)") {
		t.Fatalf("wrong ack: %+v, %v", pr, err)
	}
	scribbler := func(l policy.Link, frame []byte) (policy.Action, []byte, error) {
		act, out, err := model(l, frame)
		if act == policy.ActionPass {
			out = append([]byte(nil), out...)
			out[len(out)-1] ^= 0xff
		}
		return act, out, err
	}
	pr, err = prove(scribbler, tb, nil, now, rand.New(rand.NewPCG(1, 2)))
	if err != nil || pr.OK() || !strings.Contains(pr.Mismatches[0].String(), "program XDP_PASS, model XDP_PASS (program changed a frame it did not send back (XDP_PASS))") {
		t.Fatalf("a passed frame changed: %+v, %v", pr, err)
	}
}

// Both entry points are proven: a program whose raw-IP entry point judges otherwise than
// the model (here: passes everything) fails the proof, named as such.
func TestProofCoversRawIPEntryPoint(t *testing.T) {
	now := time.Now()
	tb := &policy.Tables{DefaultVerdict: policy.Pass, Governed: []uint16{25}, RuleNames: []string{"default", "pool"},
		Ranges: []policy.Entry{{Prefix: netip.MustParsePrefix("100.64.0.0/16"), Rule: 1, Verdict: policy.Drop}}}
	ethOnly := func(l policy.Link, frame []byte) (policy.Action, []byte, error) {
		if l == policy.LinkRawIP {
			return policy.ActionPass, frame, nil
		}
		return tb.JudgeOn(l, frame, now, true).Action, frame, nil
	}
	pr, err := prove(ethOnly, tb, nil, now, rand.New(rand.NewPCG(1, 2)))
	if err != nil || pr.OK() || !strings.Contains(pr.Mismatches[0].String(), "(raw-IP entry point): program XDP_PASS, model XDP_DROP") {
		t.Fatalf("raw-IP entry point passing everything: %+v, %v", pr, err)
	}
}
