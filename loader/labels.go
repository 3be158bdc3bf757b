package loader

import (
	"fmt"
	"strings"

	"github.com/cilium/ebpf"

	"github.com/portcullis/portcullis/bpf"
	"github.com/portcullis/portcullis/policy"
)

// Counters are indexed by rule id, and a compiled policy numbers its rules afresh. So
// that a range keeps its counts across policy swaps and daemon restarts, the loader
// gives every rule label ("kind/name") a stable id of its own, recorded in the
// rule_names map (pinned with the counters): the same label always counts under the
// same id. Id 0 is the default rule.

// readLabels reads the rule_names map: label <-> stable id.
func (p *Program) readLabels() error {
	p.labels = map[string]uint32{}
	p.idLabels = map[uint32]string{}
	var (
		k uint32
		v bpf.PortcullisPcLabel
	)
	// rule_names is an array: iterate it whole, empty labels are free ids.
	it := p.objs.RuleNames.Iterate()
	for it.Next(&k, &v) {
		if l := labelString(v); l != "" {
			p.labels[l] = k
			p.idLabels[k] = l
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("reading rule labels: %w", err)
	}
	return nil
}

func labelString(v bpf.PortcullisPcLabel) string { return cString(v.Label[:]) }

// stableIDs returns, for each rule of t, its stable id, allocating ids (and recording
// their labels) for labels seen for the first time. When the id space is full, ids of
// labels in neither the live policy nor t are reclaimed: their counters are zeroed
// first, so a reused id never inherits another entry's counts.
func (p *Program) stableIDs(t *policy.Tables) ([]uint32, error) {
	n := max(len(t.RuleNames), 1)
	ids := make([]uint32, n)
	needed := map[uint32]bool{0: true}
	var fresh []int // rules whose label has no id yet
	for i := range n {
		if i == 0 {
			continue // the default is always id 0
		}
		l := t.RuleLabel(uint32(i))
		if len(l) >= len(bpf.PortcullisPcLabel{}.Label) {
			return nil, fmt.Errorf("rule label %q is too long for the counters (%d bytes at most)", l, len(bpf.PortcullisPcLabel{}.Label)-1)
		}
		if id, ok := p.labels[l]; ok {
			ids[i] = id
			needed[id] = true
		} else {
			fresh = append(fresh, i)
		}
	}
	for _, id := range p.live {
		needed[id] = true
	}
	next := uint32(1)
	assigned := map[string]uint32{}
	for _, i := range fresh {
		l := t.RuleLabel(uint32(i))
		if id, ok := assigned[l]; ok { // two rules with one label count together
			ids[i] = id
			continue
		}
		for ; next < policy.MaxRules; next++ {
			if old, used := p.idLabels[next]; !used || (!needed[next] && p.reclaim(next, old) == nil) {
				break
			}
		}
		if next >= policy.MaxRules {
			return nil, fmt.Errorf("%w: no free counter ids left for %q", ErrTooManyRules, l)
		}
		var v bpf.PortcullisPcLabel
		copy(v.Label[:], l)
		if err := p.objs.RuleNames.Put(next, &v); err != nil {
			return nil, fmt.Errorf("recording rule label: %w", err)
		}
		p.labels[l], p.idLabels[next] = next, l
		assigned[l] = next
		needed[next] = true
		ids[i] = next
		next++
	}
	return ids, nil
}

// reclaim frees id (labelled old, used by no policy in force): its counters are zeroed
// and its label removed.
func (p *Program) reclaim(id uint32, old string) error {
	zero := make([]bpf.PortcullisPcCounter, ebpf.MustPossibleCPU())
	for o := policy.Outcome(0); o < numOutcomes; o++ {
		for f := policy.Family(0); f < numFamilies; f++ {
			if err := p.objs.Stats.Put(statsKey(id, o, f), zero); err != nil {
				return err
			}
		}
	}
	if err := p.objs.RuleNames.Put(id, &bpf.PortcullisPcLabel{}); err != nil {
		return err
	}
	delete(p.labels, old)
	delete(p.idLabels, id)
	return nil
}

// SplitLabel splits a rule label "kind/name" (names may contain "/").
func SplitLabel(l string) (kind, name string) {
	kind, name, _ = strings.Cut(l, "/")
	return kind, name
}

// Label returns the label of a stable rule id ("kind/name"), or "" if none.
func (p *Program) Label(id uint32) string {
	if id == 0 {
		return "default/default"
	}
	return p.idLabels[id]
}

// LabelCounter is the traffic judged under one label with one outcome in one family.
type LabelCounter struct {
	Label   string // "kind/name"
	Outcome policy.Outcome
	Family  policy.Family
	Counter
}

// Counters returns the non-zero counters of every label ever used, summed across CPUs:
// a label's counts survive policy swaps and daemon restarts.
func (p *Program) Counters() ([]LabelCounter, error) {
	ids := []uint32{0}
	for id := range p.idLabels {
		if id != 0 {
			ids = append(ids, id)
		}
	}
	var out []LabelCounter
	for _, id := range ids {
		rc, err := p.idCounters(id)
		if err != nil {
			return nil, err
		}
		for _, c := range rc {
			out = append(out, LabelCounter{p.Label(id), c.Outcome, c.Family, c.Counter})
		}
	}
	return out, nil
}
