package loader

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cilium/ebpf"

	"github.com/portcullis/portcullis/bpf"
	"github.com/portcullis/portcullis/model"
)

// Counters are indexed by rule id, and a compiled policy numbers its rules afresh. So
// that a range keeps its counts across policy swaps and daemon restarts, the loader
// gives every rule label ("kind/name") a stable id of its own, recorded in the
// rule_names map (pinned with the counters): the same label always counts under the
// same id, also after it left the policy and came back. Id 0 is the default rule.
//
// An id is taken back only when every id is in use: then the label that left the live
// policy longest ago gives up its id (and its counts). rule_ages records when each id
// got its label, so an offender whose last attempt predates that is not named after
// the new owner.

// labelAge is one id's rule_ages entry.
type labelAge = bpf.PortcullisPcLabelAge

// readLabels reads the rule_names map (label <-> stable id) and rule_ages.
func (p *Program) readLabels() error {
	p.labels = map[string]uint32{}
	p.idLabels = map[uint32]string{}
	p.ages = map[uint32]labelAge{}
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
	if p.objs.RuleAges == nil {
		return nil // pins from a version without rule_ages (read-only)
	}
	// Only the labelled ids have an age: look those up, not the whole array.
	for id := range p.idLabels {
		var a labelAge
		if err := p.objs.RuleAges.Lookup(id, &a); err != nil {
			return fmt.Errorf("reading rule ages: %w", err)
		}
		p.ages[id] = a
	}
	return nil
}

func labelString(v bpf.PortcullisPcLabel) string { return cString(v.Label[:]) }

// stableIDs returns, for each rule of t, its stable id, allocating ids (and recording
// their labels) for labels seen for the first time: a never-used id if there is one,
// else the id of the label that left the live policy longest ago (its counters are
// zeroed first, so a reused id never inherits another entry's counts). Ids of the live
// policy and of t are never taken.
func (p *Program) stableIDs(t *model.Tables) ([]uint32, error) {
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
	if len(fresh) == 0 {
		return ids, nil
	}
	for _, id := range p.live {
		needed[id] = true
	}
	boot, err := bootNow()
	if err != nil {
		return nil, err
	}
	next := uint32(1)   // scan position for never-used ids
	var oldest []uint32 // reclaimable ids, oldest retirement first (built when needed)
	assigned := map[string]uint32{}
	for _, i := range fresh {
		l := t.RuleLabel(uint32(i))
		if id, ok := assigned[l]; ok { // two rules with one label count together
			ids[i] = id
			continue
		}
		for ; next < model.MaxRules; next++ {
			if _, used := p.idLabels[next]; !used {
				break
			}
		}
		id := next
		if next < model.MaxRules {
			next++
		} else {
			if oldest == nil {
				oldest = p.reclaimable(needed)
			}
			if len(oldest) == 0 {
				return nil, fmt.Errorf("%w: no free counter ids left for %q", ErrTooManyRules, l)
			}
			id, oldest = oldest[0], oldest[1:]
			if err := p.reclaim(id, p.idLabels[id]); err != nil {
				return nil, fmt.Errorf("reclaiming counter id %d: %w", id, err)
			}
		}
		var v bpf.PortcullisPcLabel
		copy(v.Label[:], l)
		if err := p.objs.RuleNames.Put(id, &v); err != nil {
			return nil, fmt.Errorf("recording rule label: %w", err)
		}
		age := labelAge{Born: uint64(boot)}
		if err := p.objs.RuleAges.Put(id, &age); err != nil {
			return nil, fmt.Errorf("recording rule age: %w", err)
		}
		p.labels[l], p.idLabels[id], p.ages[id] = id, l, age
		assigned[l] = id
		needed[id] = true
		ids[i] = id
	}
	return ids, nil
}

// reclaimable lists the labelled ids in neither the live policy nor the next one,
// those whose label left the live policy longest ago first.
func (p *Program) reclaimable(needed map[uint32]bool) []uint32 {
	var out []uint32
	for id := range p.idLabels {
		if !needed[id] {
			out = append(out, id)
		}
	}
	slices.SortFunc(out, func(a, b uint32) int {
		return cmp.Or(cmp.Compare(p.ages[a].Retired, p.ages[b].Retired), cmp.Compare(a, b))
	})
	return out
}

// retire records, after a swap from the ids in old to the ids in live, when each label
// left the live policy (and that the ones back in it are live again).
func (p *Program) retire(old, live []uint32) error {
	in := map[uint32]bool{}
	for _, id := range live {
		in[id] = true
	}
	now := uint64(time.Now().UnixNano())
	for _, id := range old {
		if id == 0 || in[id] {
			continue
		}
		if a, ok := p.ages[id]; ok && a.Retired == 0 {
			a.Retired = now
			if err := p.objs.RuleAges.Put(id, &a); err != nil {
				return fmt.Errorf("recording rule age: %w", err)
			}
			p.ages[id] = a
		}
	}
	for id := range in {
		if a, ok := p.ages[id]; ok && a.Retired != 0 {
			a.Retired = 0
			if err := p.objs.RuleAges.Put(id, &a); err != nil {
				return fmt.Errorf("recording rule age: %w", err)
			}
			p.ages[id] = a
		}
	}
	return nil
}

// reclaim frees id (labelled old, used by no policy in force): its counters are zeroed
// and its label removed.
func (p *Program) reclaim(id uint32, old string) error {
	zero := make([]bpf.PortcullisPcCounter, ebpf.MustPossibleCPU())
	for o := model.Outcome(0); o < numOutcomes; o++ {
		for f := model.Family(0); f < numFamilies; f++ {
			if err := p.objs.Stats.Put(statsKey(id, o, f), zero); err != nil {
				return err
			}
		}
	}
	if err := p.objs.RuleNames.Put(id, &bpf.PortcullisPcLabel{}); err != nil {
		return err
	}
	if err := p.objs.RuleAges.Put(id, &labelAge{}); err != nil {
		return err
	}
	delete(p.labels, old)
	delete(p.idLabels, id)
	delete(p.ages, id)
	return nil
}

// labelAt returns the label id had when an attempt was recorded at boot-clock time
// seen: "" if the id has been given to another entry since (the one that judged the
// attempt is gone).
func (p *Program) labelAt(id uint32, seen uint64) string {
	if a, ok := p.ages[id]; ok && id != 0 && a.Born > seen {
		return ""
	}
	return p.label(id)
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
	p.labelsMu.RLock()
	defer p.labelsMu.RUnlock()
	return p.label(id)
}

// label is Label with labelsMu held.
func (p *Program) label(id uint32) string {
	if id == 0 {
		return "default/default"
	}
	return p.idLabels[id]
}

// LabelCounter is the traffic judged under one label with one outcome in one family.
type LabelCounter struct {
	Label   string // "kind/name"
	Outcome model.Outcome
	Family  model.Family
	Counter
}

// Counters returns the non-zero counters of every label ever used, summed across CPUs:
// a label's counts survive policy swaps and daemon restarts.
func (p *Program) Counters() ([]LabelCounter, error) {
	ids := []uint32{0}
	p.labelsMu.RLock()
	for id := range p.idLabels {
		if id != 0 {
			ids = append(ids, id)
		}
	}
	p.labelsMu.RUnlock()
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
