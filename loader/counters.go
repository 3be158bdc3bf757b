package loader

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"

	"github.com/portcullis/portcullis/bpf"
	"github.com/portcullis/portcullis/policy"
)

// Run passes one frame through the program (BPF_PROG_TEST_RUN) and returns the XDP
// action and the frame as the program left it. It counts like real traffic.
func (p *Program) Run(frame []byte) (policy.Action, []byte, error) {
	opts := &ebpf.RunOptions{Data: frame, DataOut: make([]byte, len(frame)+256)}
	ret, err := p.objs.Portcullis.Run(opts)
	if err != nil {
		return 0, nil, fmt.Errorf("test run: %w", err)
	}
	return policy.Action(ret), opts.DataOut, nil
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
	Outcome policy.Outcome
	Family  policy.Family
	Counter
}

const numOutcomes, numFamilies = 4, 2

func statsKey(rule uint32, o policy.Outcome, f policy.Family) uint32 {
	return (rule*numOutcomes+uint32(o))*numFamilies + uint32(f)
}

// RuleCounters returns the non-zero counters of rules 0..rules-1, summed across CPUs.
func (p *Program) RuleCounters(rules int) ([]RuleCounter, error) {
	var out []RuleCounter
	var per []bpf.PortcullisPcCounter
	for r := 0; r < rules && r < policy.MaxRules; r++ {
		for o := policy.Outcome(0); o < numOutcomes; o++ {
			for f := policy.Family(0); f < numFamilies; f++ {
				if err := p.objs.Stats.Lookup(statsKey(uint32(r), o, f), &per); err != nil {
					return nil, fmt.Errorf("reading counters: %w", err)
				}
				rc := RuleCounter{Rule: uint32(r), Outcome: o, Family: f}
				for _, v := range per {
					rc.add(v)
				}
				if rc.Packets != 0 {
					out = append(out, rc)
				}
			}
		}
	}
	return out, nil
}

// Reasons returns the reason counters summed across CPUs, indexed by policy.Reason.
func (p *Program) Reasons() ([policy.NumReasons]Counter, error) {
	var out [policy.NumReasons]Counter
	var per []bpf.PortcullisPcCounter
	for r := range out {
		if err := p.objs.Reasons.Lookup(uint32(r), &per); err != nil {
			return out, fmt.Errorf("reading reason counters: %w", err)
		}
		for _, v := range per {
			out[r].add(v)
		}
	}
	return out, nil
}

// Offender is one source's blocked (or monitored) attempts.
type Offender struct {
	Source    netip.Addr
	Count     uint64
	FirstSeen time.Time
	LastSeen  time.Time
	Rule      uint32         // rule that judged the last attempt
	Port      uint16         // destination port of the last attempt (0 if unknown)
	Outcome   policy.Outcome // outcome of the last attempt
}

// Offenders returns the offender table.
func (p *Program) Offenders() ([]Offender, error) {
	boot, err := bootNow()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	var (
		k   bpf.PortcullisPcSrc
		v   bpf.PortcullisPcOffender
		out []Offender
	)
	it := p.objs.Offenders.Iterate()
	for it.Next(&k, &v) {
		var a netip.Addr
		if k.Family == uint8(policy.IPv4) {
			a = netip.AddrFrom4([4]byte(k.Addr[:4]))
		} else {
			a = netip.AddrFrom16(k.Addr)
		}
		out = append(out, Offender{
			Source:    a,
			Count:     v.Count,
			FirstSeen: wallTime(v.FirstSeen, boot, now),
			LastSeen:  wallTime(v.LastSeen, boot, now),
			Rule:      v.Rule,
			Port:      ntohs(v.Port),
			Outcome:   policy.Outcome(v.Outcome),
		})
	}
	if err := it.Err(); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil, fmt.Errorf("reading offenders: %w", err)
	}
	return out, nil
}

func ntohs(v uint16) uint16 { return v>>8 | v<<8 }
