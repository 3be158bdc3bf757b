package controller

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/portcullis/portcullis/model"
	"github.com/portcullis/portcullis/policy"
)

// The proof judges each probe with verify.Compare: a program whose RSTs carry a wrong
// ack fails it, even with the right action, and so does one that rewrites a frame it
// passes; one that agrees passes.
func TestProofComparesRSTs(t *testing.T) {
	now := time.Now()
	tb := &model.Tables{DefaultVerdict: model.Pass, Governed: []uint16{25}, RuleNames: []string{"default", "pool"},
		Ranges: []model.Entry{{Prefix: netip.MustParsePrefix("100.64.0.0/16"), Rule: 1, Verdict: model.Reset}}}
	oracle := func(in model.Ingress, frame []byte) (model.Action, []byte, error) {
		d := tb.JudgeAt(in, frame, now, true)
		if d.Action == model.ActionTX {
			return d.Action, d.Reply, nil
		}
		return d.Action, frame, nil
	}
	pr, err := prove(oracle, tb, nil, nil, now, rand.New(rand.NewPCG(1, 2)))
	if err != nil || !pr.OK() || pr.Probes == 0 {
		t.Fatalf("the model against itself: %+v, %v", pr, err)
	}
	wrongAck := func(in model.Ingress, frame []byte) (model.Action, []byte, error) {
		act, out, err := oracle(in, frame)
		if act == model.ActionTX {
			out = append([]byte(nil), out...)
			ack := len(out) - 20 + 8
			binary.BigEndian.PutUint32(out[ack:], binary.BigEndian.Uint32(out[ack:])+1)
		}
		return act, out, err
	}
	pr, err = prove(wrongAck, tb, nil, nil, now, rand.New(rand.NewPCG(1, 2)))
	if err != nil || pr.OK() || !strings.Contains(pr.Mismatches[0].String(), "program XDP_TX, model XDP_TX (the RSTs differ)") {
		t.Fatalf("wrong ack: %+v, %v", pr, err)
	}
	scribbler := func(in model.Ingress, frame []byte) (model.Action, []byte, error) {
		act, out, err := oracle(in, frame)
		if act == model.ActionPass {
			out = append([]byte(nil), out...)
			out[len(out)-1] ^= 0xff
		}
		return act, out, err
	}
	pr, err = prove(scribbler, tb, nil, nil, now, rand.New(rand.NewPCG(1, 2)))
	if err != nil || pr.OK() || !strings.Contains(pr.Mismatches[0].String(), "program XDP_PASS, model XDP_PASS (program changed a frame it did not send back (XDP_PASS))") {
		t.Fatalf("a passed frame changed: %+v, %v", pr, err)
	}
}

// Both entry points are proven: a program whose raw-IP entry point judges otherwise than
// the model (here: passes everything) fails the proof, named as such.
func TestProofCoversRawIPEntryPoint(t *testing.T) {
	now := time.Now()
	tb := &model.Tables{DefaultVerdict: model.Pass, Governed: []uint16{25}, RuleNames: []string{"default", "pool"},
		Ranges: []model.Entry{{Prefix: netip.MustParsePrefix("100.64.0.0/16"), Rule: 1, Verdict: model.Drop}}}
	ethOnly := func(in model.Ingress, frame []byte) (model.Action, []byte, error) {
		if in.Link == model.LinkRawIP {
			return model.ActionPass, frame, nil
		}
		return tb.JudgeAt(in, frame, now, true).Action, frame, nil
	}
	pr, err := prove(ethOnly, tb, nil, nil, now, rand.New(rand.NewPCG(1, 2)))
	if err != nil || pr.OK() || !strings.Contains(pr.Mismatches[0].String(), "(raw-IP entry point): program XDP_PASS, model XDP_DROP") {
		t.Fatalf("raw-IP entry point passing everything: %+v, %v", pr, err)
	}
}

// Relays and scopes are proven: a program that ignores the relays, or judges every
// interface as one no scope names, fails the proof, and the mismatch names the
// destination or the interface.
func TestProofCoversRelaysAndScopes(t *testing.T) {
	now := time.Now()
	src := `version: 1
ranges:
  - {name: dyn, verdict: drop, cidrs: [100.64.0.0/12]}
  - {name: partner, verdict: pass, cidrs: [100.64.1.0/24], interfaces: [whl0]}
relays:
  - {name: smarthost, cidrs: [192.0.2.26], reason: ours, owner: mail}
`
	pol, err := policy.Parse("p.yaml", []byte(src), now)
	if err != nil {
		t.Fatal(err)
	}
	c, err := policy.Compile(pol, now)
	if err != nil {
		t.Fatal(err)
	}
	tb := c.Tables
	noRelays := *tb
	noRelays.Relays = nil
	ignoresRelays := func(in model.Ingress, frame []byte) (model.Action, []byte, error) {
		return noRelays.JudgeAt(in, frame, now, true).Action, frame, nil
	}
	pr, err := prove(ignoresRelays, tb, nil, []string{"whl0"}, now, rand.New(rand.NewPCG(1, 2)))
	if err != nil || pr.OK() || !strings.Contains(pr.Mismatches[0].String(), "-> 192.0.2.26 port 25") {
		t.Fatalf("a program without relays: %+v, %v", pr, err)
	}
	ignoresScopes := func(in model.Ingress, frame []byte) (model.Action, []byte, error) {
		in.Interface = ""
		return tb.JudgeAt(in, frame, now, true).Action, frame, nil
	}
	pr, err = prove(ignoresScopes, tb, nil, []string{"whl0"}, now, rand.New(rand.NewPCG(1, 2)))
	if err != nil || pr.OK() || !strings.Contains(pr.Mismatches[0].String(), "on whl0: program XDP_DROP, model XDP_PASS") {
		t.Fatalf("a program without scopes: %+v, %v", pr, err)
	}
	right := func(in model.Ingress, frame []byte) (model.Action, []byte, error) {
		return tb.JudgeAt(in, frame, now, true).Action, frame, nil
	}
	if pr, err = prove(right, tb, nil, []string{"whl0"}, now, rand.New(rand.NewPCG(1, 2))); err != nil || !pr.OK() {
		t.Fatalf("the model against itself: %+v, %v", pr, err)
	}
}
