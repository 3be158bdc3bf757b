package loader

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/cilium/ebpf"

	"github.com/portcullis/portcullis/bpf"
	"github.com/portcullis/portcullis/model"
)

// The offender record (bpf/portcullis.c, record_offender) is kept per CPU: a count-min
// sketch of attempts by source, and a small table per CPU of the sources it holds by
// name, each in two periods (the current one and the one before; TurnOffenders starts
// the next). This file reads them back: the sources of every CPU's table, merged, each
// with the estimate of the union sketch (the rows of every CPU and both periods summed,
// then the least row).

// ErrNoOffenderRecord means the pinned maps come from a Portcullis that kept offenders
// in one shared table (`offenders`), before the per-CPU record: the daemon of this
// version replaces that table when it starts.
var ErrNoOffenderRecord = errors.New("the pinned maps have no per-CPU offender record (made by an older Portcullis): start `portcullis run` of this version to upgrade them")

// sketchWidth is the number of counters in a row of the sketch (PC_SKETCH_WIDTH).
var sketchWidth = len(bpf.PortcullisPcSketchRow{}.Count)

// Offender is one source's blocked (or monitored) attempts, as the offender record
// holds it.
type Offender struct {
	Source netip.Addr
	// Count is the sketch's estimate of the attempts from Source: never less than the
	// true count, and more by at most MaxOvercount with probability Confidence (see
	// OffenderRecord).
	Count        uint64
	MaxOvercount uint64
	FirstSeen    time.Time     // first attempt since the source took its entry (the count may include earlier ones)
	LastSeen     time.Time     // last attempt
	Rule         uint32        // stable rule id that judged the last attempt
	Label        string        // its label, "kind/name"; "" if that entry is gone and its id reused
	Port         uint16        // destination port of the last attempt (0 if unknown)
	Outcome      model.Outcome // outcome of the last attempt
	// Where the last attempt came from at layer 2, to find the subscriber behind a
	// dynamic or shared address: source MAC (nil on a raw-IP interface), VLAN ids
	// (outer, inner; 0 for no tag) and PPPoE session id (0 if not PPPoE).
	MAC          net.HardwareAddr
	OuterVLAN    uint16
	InnerVLAN    uint16
	PPPoESession uint16
}

// OffenderRecord is the whole offender record: every source some CPU holds, and the
// error bound of their counts.
type OffenderRecord struct {
	// Attempts is the number of attempts counted (N): every CPU's, both periods'.
	Attempts uint64
	// Width and Depth are the sketch's: counters per row, rows.
	Width, Depth int
	// MaxOvercount is e·N/Width rounded up: a source's count exceeds its true count by at
	// most this many attempts with probability at least Confidence, 1 - e^-Depth.
	MaxOvercount uint64
	Confidence   float64
	// Since is when the counting began: the start of the period before the current one
	// (see TurnOffenders), or of the current one if there was none; zero if unknown
	// (maps never turned: counts since they were created).
	Since time.Time
	// Sources are the sources held, in no particular order.
	Sources []Offender
}

// OverCount is the count-min bound: with n attempts recorded in a sketch of width w
// and depth d, an estimate exceeds the true count by at most ceil(e·n/w) with
// probability at least 1 - e^-d.
func OverCount(n uint64, w, d int) (uint64, float64) {
	return uint64(math.Ceil(math.E * float64(n) / float64(w))), 1 - math.Exp(-float64(d))
}

// sourceHash is pc_src_hash (bpf/portcullis.c): the address words (little-endian, as
// the program loads them) folded with a multiply each, then mixed down.
func sourceHash(family uint8, addr [16]byte) uint64 {
	h := uint64(family) + 1
	for i := range 4 {
		h = (h ^ uint64(binary.LittleEndian.Uint32(addr[4*i:]))) * 0xff51afd7ed558ccd
	}
	return h ^ h>>29
}

// sketchMul are pc_sketch_col's constants, one per row.
var sketchMul = [...]uint64{0x9e3779b97f4a7c15, 0xc2b2ae3d27d4eb4f, 0x165667b19e3779f9, 0xd6e8feb86659fd93}

// sketchCol is pc_sketch_col: the column of hash h in row i.
func sketchCol(h uint64, i int) int {
	return int((h * sketchMul[i]) >> (64 - bits.TrailingZeros(uint(sketchWidth))))
}

type srcKey struct {
	family uint8
	addr   [16]byte
}

// Offenders returns the sources the offender record holds (OffenderRecord's Sources).
func (p *Program) Offenders() ([]Offender, error) {
	r, err := p.OffenderRecord()
	return r.Sources, err
}

// OffenderRecord reads the offender record: every CPU's table of sources, merged by
// source (a source's packets spread over the CPUs), each counted by the union of the
// CPUs' sketches. First seen is the earliest of its entries, the rest comes from the
// entry of its latest attempt.
func (p *Program) OffenderRecord() (OffenderRecord, error) {
	rec := OffenderRecord{Width: sketchWidth}
	if p.objs.OffenderSketch == nil || p.objs.OffenderSlots == nil || p.objs.OffenderAttempts == nil || p.objs.OffenderPeriod == nil {
		return rec, ErrNoOffenderRecord
	}
	periods := int(p.objs.OffenderAttempts.MaxEntries())
	rec.Depth = int(p.objs.OffenderSketch.MaxEntries()) / periods
	if rec.Depth > len(sketchMul) {
		return rec, fmt.Errorf("offender sketch of %d rows: this build hashes at most %d", rec.Depth, len(sketchMul))
	}
	boot, err := bootNow()
	if err != nil {
		return rec, err
	}
	mono, err := monoNow()
	if err != nil {
		return rec, err
	}
	now := time.Now()
	// The record's times are CLOCK_MONOTONIC(_COARSE); the boot clock is ahead by the
	// time the machine was suspended. As boot-clock times they compare with the rule
	// ages and convert to wall-clock time like every other time the program keeps.
	lead := uint64(max(boot-mono, 0))

	var per bpf.PortcullisPcOffenderPeriod
	if err := p.objs.OffenderPeriod.Lookup(uint32(0), &per); err != nil {
		return rec, fmt.Errorf("reading the offender period: %w", err)
	}
	if since := cmp.Or(per.PrevStarted, per.Started); since != 0 {
		rec.Since = time.Unix(0, int64(since))
	}
	var total []uint64
	for e := range periods {
		if err := p.objs.OffenderAttempts.Lookup(uint32(e), &total); err != nil {
			return rec, fmt.Errorf("reading offender attempts: %w", err)
		}
		for _, n := range total {
			rec.Attempts += n
		}
	}
	rec.MaxOvercount, rec.Confidence = OverCount(rec.Attempts, rec.Width, rec.Depth)

	// The latest entry of each source, and its earliest first attempt.
	type held struct {
		v     bpf.PortcullisPcOffender
		first uint64
	}
	srcs := map[srcKey]*held{}
	err = p.eachOffenderBucket(func(bk *bpf.PortcullisPcOffenderBucket) {
		for _, v := range bk.Way {
			if v.Est == 0 {
				continue
			}
			k := srcKey{v.Src.Family, v.Src.Addr}
			h := srcs[k]
			if h == nil {
				srcs[k] = &held{v, v.FirstSeen}
				continue
			}
			h.first = min(h.first, v.FirstSeen)
			if v.LastSeen > h.v.LastSeen {
				h.v = v
			}
		}
	})
	if err != nil {
		return rec, fmt.Errorf("reading offenders: %w", err)
	}
	if len(srcs) == 0 {
		return rec, nil
	}

	// The union sketch: each row summed over the CPUs and both periods (a sum of
	// count-min sketches with the same hashes is the sketch of all their attempts).
	cols := make([][]uint64, rec.Depth) // row -> column -> sum
	var rows []bpf.PortcullisPcSketchRow
	for r := range rec.Depth {
		cols[r] = make([]uint64, sketchWidth)
		for e := range periods {
			if err := p.objs.OffenderSketch.Lookup(uint32(e*rec.Depth+r), &rows); err != nil {
				return rec, fmt.Errorf("reading the offender sketch: %w", err)
			}
			for _, row := range rows {
				for c, n := range row.Count {
					cols[r][c] += uint64(n)
				}
			}
		}
	}

	p.labelsMu.RLock()
	defer p.labelsMu.RUnlock()
	for k, h := range srcs {
		est := uint64(math.MaxUint64)
		hash := sourceHash(k.family, k.addr)
		for r := range rec.Depth {
			est = min(est, cols[r][sketchCol(hash, r)])
		}
		v := h.v
		var a netip.Addr
		if k.family == uint8(model.IPv4) {
			a = netip.AddrFrom4([4]byte(k.addr[:4]))
		} else {
			a = netip.AddrFrom16(k.addr)
		}
		o := Offender{
			Source:       a,
			Count:        est,
			MaxOvercount: rec.MaxOvercount,
			FirstSeen:    wallTime(h.first+lead, boot, now),
			LastSeen:     wallTime(v.LastSeen+lead, boot, now),
			Rule:         v.Rule,
			Label:        p.labelAt(v.Rule, v.LastSeen+lead),
			Port:         ntohs(v.Port),
			Outcome:      model.Outcome(v.Outcome),
			OuterVLAN:    v.Vlan[0],
			InnerVLAN:    v.Vlan[1],
			PPPoESession: v.PppoeSid,
		}
		if v.Mac != ([6]byte{}) {
			o.MAC = net.HardwareAddr(v.Mac[:])
		}
		rec.Sources = append(rec.Sources, o)
	}
	return rec, nil
}

// TurnOffenders starts a new period of the offender record when the current one began
// period ago or more: it clears the older period's half of the maps (sketch, attempt
// count, table of sources) and makes it the current one, so that counts cover the last
// one to two periods and their error bound the attempts of those. The first call on
// maps that never turned only notes when the current period began. It reports whether
// it turned. Only the daemon calls it (one caller at a time): the half it clears is
// one no packet writes to, so nothing in flight is lost.
func (p *Program) TurnOffenders(period time.Duration, now time.Time) (bool, error) {
	if p.objs.OffenderPeriod == nil {
		return false, ErrNoOffenderRecord
	}
	var per bpf.PortcullisPcOffenderPeriod
	if err := p.objs.OffenderPeriod.Lookup(uint32(0), &per); err != nil {
		return false, fmt.Errorf("reading the offender period: %w", err)
	}
	if per.Started == 0 {
		per.Started = uint64(now.UnixNano())
		if err := p.objs.OffenderPeriod.Update(uint32(0), &per, ebpf.UpdateExist); err != nil {
			return false, fmt.Errorf("starting the offender period: %w", err)
		}
		return false, nil
	}
	if now.Sub(time.Unix(0, int64(per.Started))) < period {
		return false, nil
	}
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		return false, err
	}
	periods := p.objs.OffenderAttempts.MaxEntries()
	next := (per.Current + 1) % periods
	depth := p.objs.OffenderSketch.MaxEntries() / periods
	for r := range depth {
		if err := p.objs.OffenderSketch.Update(next*depth+r, make([]bpf.PortcullisPcSketchRow, cpus), ebpf.UpdateExist); err != nil {
			return false, fmt.Errorf("clearing the offender sketch: %w", err)
		}
	}
	if err := p.objs.OffenderAttempts.Update(next, make([]uint64, cpus), ebpf.UpdateExist); err != nil {
		return false, fmt.Errorf("clearing the offender attempts: %w", err)
	}
	buckets := p.objs.OffenderSlots.MaxEntries() / periods
	keys := make([]uint32, buckets)
	for i := range keys {
		keys[i] = next*buckets + uint32(i)
	}
	zero := make([]bpf.PortcullisPcOffenderBucket, int(buckets)*cpus)
	if _, err := p.objs.OffenderSlots.BatchUpdate(keys, zero, nil); errors.Is(err, ebpf.ErrNotSupported) {
		for _, k := range keys {
			if err := p.objs.OffenderSlots.Update(k, zero[:cpus], ebpf.UpdateExist); err != nil {
				return false, fmt.Errorf("clearing the offender table: %w", err)
			}
		}
	} else if err != nil {
		return false, fmt.Errorf("clearing the offender table: %w", err)
	}
	per = bpf.PortcullisPcOffenderPeriod{Current: next, Started: uint64(now.UnixNano()), PrevStarted: per.Started}
	if err := p.objs.OffenderPeriod.Update(uint32(0), &per, ebpf.UpdateExist); err != nil {
		return false, fmt.Errorf("turning the offender period: %w", err)
	}
	return true, nil
}

// eachOffenderBucket calls f with every CPU's copy of every bucket of the table of
// named sources, of both periods: in batches of 128 buckets (a syscall each, rather than one per bucket),
// or one at a time on a kernel without batch lookups (before 5.6).
func (p *Program) eachOffenderBucket(f func(*bpf.PortcullisPcOffenderBucket)) error {
	m := p.objs.OffenderSlots
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		return err
	}
	const batch = 128
	keys := make([]uint32, batch)
	vals := make([]bpf.PortcullisPcOffenderBucket, batch*cpus)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := m.BatchLookup(&cursor, keys, vals, nil)
		for i := range n * cpus {
			f(&vals[i])
		}
		switch {
		case errors.Is(err, ebpf.ErrKeyNotExist):
			return nil
		case errors.Is(err, ebpf.ErrNotSupported):
			var per []bpf.PortcullisPcOffenderBucket
			for b := range m.MaxEntries() {
				if err := m.Lookup(b, &per); err != nil {
					return err
				}
				for i := range per {
					f(&per[i])
				}
			}
			return nil
		case err != nil:
			return err
		}
	}
}

// Top returns the n sources with the most attempts, most first; ties go to the most
// recent, then by address: the order of `top`.
func (r OffenderRecord) Top(n int) []Offender {
	offs := slices.Clone(r.Sources)
	slices.SortFunc(offs, func(a, b Offender) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), b.LastSeen.Compare(a.LastSeen), a.Source.Compare(b.Source))
	})
	return offs[:min(len(offs), n)]
}

// VLAN is how the offender's VLAN ids read: "" for none, "100", or "200.300"
// (outer.inner).
func (o Offender) VLAN() string {
	switch {
	case o.OuterVLAN == 0 && o.InnerVLAN == 0:
		return ""
	case o.InnerVLAN == 0:
		return fmt.Sprint(o.OuterVLAN)
	}
	return fmt.Sprintf("%d.%d", o.OuterVLAN, o.InnerVLAN)
}
