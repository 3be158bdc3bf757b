package loader

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/cilium/ebpf"

	"github.com/portcullis/portcullis/bpf"
	"github.com/portcullis/portcullis/model"
)

// Run passes one frame through the program (BPF_PROG_TEST_RUN) and returns the XDP
// action and the frame as the program left it. It counts like real traffic.
func (p *Program) Run(frame []byte) (model.Action, []byte, error) {
	return p.RunOn(model.LinkEthernet, frame)
}

// RunOn is Run through the entry point for links of type l.
func (p *Program) RunOn(l model.Link, frame []byte) (model.Action, []byte, error) {
	return p.testRun(model.Ingress{Link: l}, frame, false)
}

// RunAt is Run through the entry point for in.Link, as if the frame arrived on
// interface in.Interface (a name given to SetInterfaces; "" for an interface no scope
// names). The interface must exist in this process's network namespace: the kernel
// looks it up.
func (p *Program) RunAt(in model.Ingress, frame []byte) (model.Action, []byte, error) {
	return p.testRun(in, frame, false)
}

// probeMagic is PC_PROBE_MAGIC: the XDP metadata word that marks a probe.
const probeMagic = 0x52504350

// xdpMD mirrors struct xdp_md as BPF_PROG_TEST_RUN takes it: Data is the length of
// the metadata in front of the frame.
type xdpMD struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}

// Probe passes one frame through the program like Run, marked as a probe: it is
// judged and answered exactly like traffic, but leaves no trace (no counters, no
// offender entry, no RST token spent). The daemon's proof uses it on the live program.
func (p *Program) Probe(frame []byte) (model.Action, []byte, error) {
	return p.ProbeOn(model.LinkEthernet, frame)
}

// ProbeOn is Probe through the entry point for links of type l.
func (p *Program) ProbeOn(l model.Link, frame []byte) (model.Action, []byte, error) {
	return p.testRun(model.Ingress{Link: l}, frame, true)
}

// ProbeAt is Probe as if the frame arrived at in (see RunAt).
func (p *Program) ProbeAt(in model.Ingress, frame []byte) (model.Action, []byte, error) {
	return p.testRun(in, frame, true)
}

// testRun runs frame through the entry point for at.Link with BPF_PROG_TEST_RUN, as if
// it arrived on at.Interface, as a probe (PC_PROBE_MAGIC in the metadata) or not.
func (p *Program) testRun(at model.Ingress, frame []byte, probe bool) (model.Action, []byte, error) {
	l := at.Link
	ifindex, err := p.ifindexOf(at.Interface)
	if err != nil {
		return 0, nil, err
	}
	what, in := "test run", frame
	if probe {
		what, in = "probe run", make([]byte, 4+len(frame))
		binary.NativeEndian.PutUint32(in, probeMagic)
		copy(in[4:], frame)
	}
	ctx := xdpMD{Data: uint32(len(in) - len(frame)), DataEnd: uint32(len(in)), IngressIfindex: ifindex}
	var ctxOut xdpMD
	opts := &ebpf.RunOptions{Data: in, DataOut: make([]byte, len(in)+256), Context: ctx, ContextOut: &ctxOut}
	ret, err := p.entry(l).Run(opts)
	if err != nil {
		return 0, nil, fmt.Errorf("%s: %w", what, err)
	}
	out := opts.DataOut
	if int(ctxOut.Data) > len(out) || ctxOut.DataEnd < ctxOut.Data || int(ctxOut.DataEnd) > len(out) {
		return 0, nil, fmt.Errorf("%s: context out of range (%+v, %d bytes)", what, ctxOut, len(out))
	}
	out = out[ctxOut.Data:ctxOut.DataEnd]
	act := model.Action(ret)
	if act == model.ActionTX && len(frame) > testRunLinear {
		out = replyOnly(l, out)
	}
	return act, out, nil
}

// testRunLinear is the most of a frame BPF_PROG_TEST_RUN hands an XDP program in its
// one buffer (a page less the XDP headroom and the skb_shared_info tailroom); the rest
// of a longer frame goes into fragments the program does not see, and the test run
// returns them after the RST the program built. A live interface never splits a frame
// like that for Portcullis: native drivers refuse a program that is not fragment-aware
// at such MTUs, and generic mode linearises the frame.
const testRunLinear = 4096 - 256 - 320

// replyOnly cuts the RST the program built for a frame longer than testRunLinear to the
// length its own IP header states.
func replyOnly(l model.Link, out []byte) []byte {
	p := model.DecodeOn(l, out)
	off, n := p.L3Off, len(out)
	switch p.Family {
	case model.IPv4:
		if len(out) >= off+4 {
			n = off + int(binary.BigEndian.Uint16(out[off+2:]))
		}
	case model.IPv6:
		if len(out) >= off+6 {
			n = off + 40 + int(binary.BigEndian.Uint16(out[off+4:]))
		}
	}
	return out[:min(n, len(out))]
}

// Benchmark runs frame through the program repeat times in the kernel and returns the
// average time per run.
func (p *Program) Benchmark(frame []byte, repeat int) (time.Duration, error) {
	_, d, err := p.objs.Portcullis.Benchmark(frame, repeat, nil)
	return d, err
}

// Counter is a packet and byte count.
type Counter struct {
	Packets uint64
	Bytes   uint64
}

func (c *Counter) add(v bpf.PortcullisPcCounter) {
	c.Packets += v.Packets
	c.Bytes += v.Bytes
}

// RuleCounter is the traffic one rule judged with one outcome in one family.
type RuleCounter struct {
	Rule    uint32
	Outcome model.Outcome
	Family  model.Family
	Counter
}

const numOutcomes, numFamilies = 4, 2

func statsKey(rule uint32, o model.Outcome, f model.Family) uint32 {
	return (rule*numOutcomes+uint32(o))*numFamilies + uint32(f)
}

// RuleCounters returns the non-zero counters of the live policy's rules 0..rules-1
// (its compiled ids), summed across CPUs.
func (p *Program) RuleCounters(rules int) ([]RuleCounter, error) {
	var out []RuleCounter
	for r := 0; r < rules && r < model.MaxRules; r++ {
		id := uint32(r)
		if r < len(p.live) {
			id = p.live[r]
		}
		rc, err := p.idCounters(id)
		if err != nil {
			return nil, err
		}
		for _, c := range rc {
			c.Rule = uint32(r)
			out = append(out, c)
		}
	}
	return out, nil
}

// idCounters returns the non-zero counters of one stable rule id.
func (p *Program) idCounters(id uint32) ([]RuleCounter, error) {
	var out []RuleCounter
	var per []bpf.PortcullisPcCounter
	for o := model.Outcome(0); o < numOutcomes; o++ {
		for f := model.Family(0); f < numFamilies; f++ {
			if err := p.objs.Stats.Lookup(statsKey(id, o, f), &per); err != nil {
				return nil, fmt.Errorf("reading counters: %w", err)
			}
			rc := RuleCounter{Rule: id, Outcome: o, Family: f}
			for _, v := range per {
				rc.add(v)
			}
			if rc.Packets != 0 {
				out = append(out, rc)
			}
		}
	}
	return out, nil
}

// CountersOf returns every counter (zero ones included) of each of the live policy's
// rules in rules (compiled ids, as for RuleCounters), summed across CPUs: a cheaper
// read than RuleCounters when only a few rules matter, such as those covering one
// source address. Rules that share a label share their counters.
func (p *Program) CountersOf(rules []uint32) ([]RuleCounter, error) {
	out := make([]RuleCounter, 0, len(rules)*numOutcomes*numFamilies)
	var per []bpf.PortcullisPcCounter
	for _, r := range rules {
		id := r
		if int(r) < len(p.live) {
			id = p.live[r]
		}
		if id >= model.MaxRules {
			return nil, fmt.Errorf("%w: rule id %d, limit %d", ErrTooManyRules, id, model.MaxRules)
		}
		for o := model.Outcome(0); o < numOutcomes; o++ {
			for f := model.Family(0); f < numFamilies; f++ {
				if err := p.objs.Stats.Lookup(statsKey(id, o, f), &per); err != nil {
					return nil, fmt.Errorf("reading counters: %w", err)
				}
				rc := RuleCounter{Rule: r, Outcome: o, Family: f}
				for _, v := range per {
					rc.add(v)
				}
				out = append(out, rc)
			}
		}
	}
	return out, nil
}

// Reasons returns the reason counters summed across CPUs, indexed by model.Reason.
func (p *Program) Reasons() ([model.NumReasons]Counter, error) {
	var out [model.NumReasons]Counter
	var per []bpf.PortcullisPcCounter
	for r := range out {
		if uint32(r) >= p.objs.ReasonCounts.MaxEntries() {
			break // an earlier version's map (OpenPinned): fewer reasons
		}
		if err := p.objs.ReasonCounts.Lookup(uint32(r), &per); err != nil {
			return out, fmt.Errorf("reading reason counters: %w", err)
		}
		for _, v := range per {
			out[r].add(v)
		}
	}
	return out, nil
}

func ntohs(v uint16) uint16 { return v>>8 | v<<8 }
