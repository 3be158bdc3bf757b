package loader

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/portcullis/portcullis/bpf"
	"github.com/portcullis/portcullis/internal/testutil"
	"github.com/portcullis/portcullis/model"
)

// offenderOf returns the offender record's entry for src, or fails.
func offenderOf(t *testing.T, offs []Offender, src netip.Addr) Offender {
	t.Helper()
	for _, o := range offs {
		if o.Source == src {
			return o
		}
	}
	t.Fatalf("no offender %v in %+v", src, offs)
	return Offender{}
}

// A blocked source alone is recorded with its exact count and what the abuse desk needs
// to find the subscriber: source MAC, VLAN ids, PPPoE session id, over every L2
// encapsulation the program parses (none of them on a raw-IP interface).
func TestOffenderLayer2(t *testing.T) {
	p := applied(t, testTables(time.Now()))
	type want struct {
		outer, inner, session uint16
		mac                   net.HardwareAddr
	}
	cases := map[encap]want{
		encPlain:        {mac: subMAC},
		encVLAN:         {outer: 100, mac: subMAC},
		encQinQ:         {outer: 200, inner: 300, mac: subMAC},
		encPPPoE:        {session: 0x1234, mac: subMAC},
		encVLANPPPoE:    {outer: 100, session: 0x1234, mac: subMAC},
		encPPPoEPFC:     {session: 0x1234, mac: subMAC},
		encVLANPPPoEPFC: {outer: 100, session: 0x1234, mac: subMAC},
		encQinQPPPoE:    {outer: 200, inner: 300, session: 0x1234, mac: subMAC},
		encPrioTags:     {mac: subMAC},
		encMaxTagsPPPoE: {outer: 100, session: 0x1234, mac: subMAC},
		encRawIP:        {},
	}
	start := time.Now()
	var total uint64
	for enc, w := range cases {
		for _, v6 := range []bool{false, true} {
			// One source per encapsulation and family, each sending its own count.
			src, dst := netip.AddrFrom4([4]byte{100, 64, 9, byte(enc)}), dst4
			if v6 {
				a := addr("2001:db8:100::900").As16()
				a[15] = byte(enc)
				src, dst = netip.AddrFrom16(a), dst6
			}
			n := 3 + int(enc)
			frame := buildFrame(t, frameSpec{enc: enc, src: src, dst: dst, sport: 1, dport: 25, syn: true})
			for range n {
				if act, _, err := p.RunOn(enc.link(), frame); err != nil || act != model.ActionDrop {
					t.Fatalf("%v %v: %v, %v", enc, src, act, err)
				}
			}
			total += uint64(n)
			t.Run(enc.String()+"/"+src.String(), func(t *testing.T) {
				offs, err := p.Offenders()
				if err != nil {
					t.Fatal(err)
				}
				o := offenderOf(t, offs, src)
				if o.Count != uint64(n) || o.OuterVLAN != w.outer || o.InnerVLAN != w.inner || o.PPPoESession != w.session ||
					o.MAC.String() != w.mac.String() || o.Rule != 1 || o.Port != 25 || o.Outcome != model.OutDrop {
					t.Errorf("%+v, want %d attempts, %+v, rule 1, port 25, drop", o, n, w)
				}
				if o.FirstSeen.Before(start.Add(-2*time.Second)) || o.LastSeen.Before(o.FirstSeen) {
					t.Errorf("seen %v..%v, test ran from %v", o.FirstSeen, o.LastSeen, start)
				}
			})
		}
	}
	rec, err := p.OffenderRecord()
	if err != nil {
		t.Fatal(err)
	}
	if rec.Attempts != total || len(rec.Sources) != 2*len(cases) {
		t.Errorf("%d attempts from %d sources, want %d from %d", rec.Attempts, len(rec.Sources), total, 2*len(cases))
	}
	if b, _ := OverCount(total, rec.Width, rec.Depth); rec.MaxOvercount != b || b == 0 {
		t.Errorf("bound %d, want %d", rec.MaxOvercount, b)
	}
}

// Go computes the program's hash: one attempt sets exactly the counters sketchCol names.
func TestOffenderSketchHashMatchesC(t *testing.T) {
	pinCPU(t)
	p := applied(t, testTables(time.Now()))
	for _, src := range []netip.Addr{dropSrc.v4, dropSrc.v6} {
		dst := dst4
		if src.Is6() {
			dst = dst6
		}
		if _, _, err := p.Run(buildFrame(t, frameSpec{src: src, dst: dst, sport: 1, dport: 25, syn: true})); err != nil {
			t.Fatal(err)
		}
	}
	var rows []bpf.PortcullisPcSketchRow
	depth := int(p.objs.OffenderSketch.MaxEntries() / p.objs.OffenderAttempts.MaxEntries())
	for k := range int(p.objs.OffenderSketch.MaxEntries()) {
		if err := p.objs.OffenderSketch.Lookup(uint32(k), &rows); err != nil {
			t.Fatal(err)
		}
		period, r := k/depth, k%depth
		want := map[int]uint32{}
		for _, src := range []netip.Addr{dropSrc.v4, dropSrc.v6} {
			if period != 0 { // never turned: the first period is the current one
				break
			}
			fam, a := uint8(model.IPv6), src.As16()
			if src.Is4() {
				fam, a = uint8(model.IPv4), [16]byte{}
				copy(a[:], src.AsSlice())
			}
			want[sketchCol(sourceHash(fam, a), r)]++
		}
		for c, n := range rows[0].Count {
			if n != want[c] {
				t.Errorf("period %d row %d column %d: %d, want %d", period, r, c, n, want[c])
			}
		}
	}
}

// A spray of one-off sources does not push out the sources that keep trying, and their
// counts stay within the stated bound of the truth. Deterministic: one CPU, fixed
// sources, no clock.
func TestOffenderSpray(t *testing.T) {
	pinCPU(t)
	tables := &model.Tables{DefaultVerdict: model.Pass, Governed: []uint16{25}, RuleNames: []string{"default", "spray"},
		Ranges: []model.Entry{
			{Prefix: pfx("100.64.0.0/10"), Rule: 1, Verdict: model.Drop},
			{Prefix: pfx("2001:db8:100::/48"), Rule: 1, Verdict: model.Drop},
		}}
	p := applied(t, tables)
	const spray, every = 200000, 20 // a persistent source's attempt after every 20 sprayed
	persistent := []struct {
		src netip.Addr
		enc encap
	}{
		{addr("100.64.0.1"), encPlain}, {addr("100.64.0.2"), encQinQPPPoE}, {addr("100.100.7.9"), encVLAN},
		{addr("100.127.255.254"), encPPPoE}, {addr("2001:db8:100::dead"), encQinQ},
	}
	frames := make([][]byte, len(persistent))
	for i, s := range persistent {
		dst := dst4
		if s.src.Is6() {
			dst = dst6
		}
		frames[i] = buildFrame(t, frameSpec{enc: s.enc, src: s.src, dst: dst, sport: 1, dport: 25, syn: true})
	}
	one := buildFrame(t, frameSpec{src: addr("100.64.0.0"), dst: dst4, sport: 1, dport: 25, syn: true})
	truth := make([]uint64, len(persistent))
	run := func(f []byte) {
		if act, _, err := p.Run(f); err != nil || act != model.ActionDrop {
			t.Fatalf("%v, %v", act, err)
		}
	}
	for i := range spray {
		// 100.80.0.0 + i: inside the drop range, never one of the persistent sources.
		binary.BigEndian.PutUint32(one[14+12:], 0x64500000+uint32(i))
		run(one)
		if i%every == 0 {
			j := i / every % len(persistent)
			run(frames[j])
			truth[j]++
		}
	}
	read := time.Now()
	rec, err := p.OffenderRecord()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("OffenderRecord read in %v", time.Since(read)) // what top and a scrape pay
	var sum uint64
	for _, n := range truth {
		sum += n
	}
	if rec.Attempts != spray+sum {
		t.Errorf("%d attempts recorded, want %d", rec.Attempts, spray+sum)
	}
	t.Logf("%d attempts, bound %d (p >= %.3f), %d sources held", rec.Attempts, rec.MaxOvercount, rec.Confidence, len(rec.Sources))
	for i, s := range persistent {
		o := offenderOf(t, rec.Sources, s.src)
		if o.Count < truth[i] || o.Count > truth[i]+rec.MaxOvercount {
			t.Errorf("%v: %d attempts, true %d, bound %d", s.src, o.Count, truth[i], rec.MaxOvercount)
		}
		if o.Rule != 1 || o.Port != 25 {
			t.Errorf("%v: %+v", s.src, o)
		}
		t.Logf("%v: %d attempts (true %d)", s.src, o.Count, truth[i])
	}
	if max := int(p.objs.OffenderSlots.MaxEntries()) * 2; len(rec.Sources) > max {
		t.Errorf("%d sources held on one CPU, at most %d fit", len(rec.Sources), max)
	}
}

// An upgrade from a bpffs holding the shared offender table of earlier versions
// (`offenders`, an LRU hash): top says what to do until the daemon of this version
// starts, which pins the per-CPU record and removes the old table's pin, keeping the
// other maps (counters) as they were. A pin of that name that is not such a table is
// left alone, and refused.
func TestLoadPinnedRetiresSharedOffenderTable(t *testing.T) {
	testutil.RequireRoot(t)
	dir := filepath.Join(mountBPF(t), "portcullis")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	p, err := LoadPinned(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Apply(testTables(time.Now())); err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.Run(buildFrame(t, frameSpec{src: dropSrc.v4, dst: dst4, sport: 1, dport: 25, syn: true})); err != nil {
		t.Fatal(err)
	}
	p.Close()
	// What an earlier version left: its shared table, and none of the new maps.
	for _, name := range []string{bpf.PortcullisMapOffenderSketch, bpf.PortcullisMapOffenderAttempts, bpf.PortcullisMapOffenderSlots, bpf.PortcullisMapOffenderPeriod} {
		if err := os.Remove(filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	old, err := ebpf.NewMapWithOptions(&ebpf.MapSpec{Name: "offenders", Type: ebpf.LRUHash, KeySize: 20, ValueSize: 40,
		MaxEntries: 65536, Pinning: ebpf.PinByName}, ebpf.MapOptions{PinPath: dir})
	if err != nil {
		t.Fatal(err)
	}
	old.Close()
	// And its reason counters, with room for 11 reasons, under their old name.
	if err := os.Remove(filepath.Join(dir, bpf.PortcullisMapReasonCounts)); err != nil {
		t.Fatal(err)
	}
	oldReasons, err := ebpf.NewMapWithOptions(&ebpf.MapSpec{Name: "reasons", Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 16,
		MaxEntries: 11, Pinning: ebpf.PinByName}, ebpf.MapOptions{PinPath: dir})
	if err != nil {
		t.Fatal(err)
	}
	oldReasons.Close()

	ro, err := OpenPinned(dir)
	if err != nil {
		t.Fatalf("OpenPinned on an earlier version's pins: %v", err)
	}
	if _, err := ro.Offenders(); !errors.Is(err, ErrNoOffenderRecord) {
		t.Errorf("Offenders on an earlier version's pins: %v, want ErrNoOffenderRecord", err)
	}
	if _, err := ro.Reasons(); err != nil {
		t.Errorf("Reasons on an earlier version's pins: %v", err)
	}
	ro.Close()

	p, err = LoadPinned(dir)
	if err != nil {
		t.Fatalf("LoadPinned over an earlier version's pins: %v", err)
	}
	for _, name := range []string{"offenders", "reasons"} {
		if _, err := os.Stat(filepath.Join(dir, name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the retired %s pin is still there: %v", name, err)
		}
	}
	for _, name := range []string{bpf.PortcullisMapOffenderSketch, bpf.PortcullisMapOffenderAttempts, bpf.PortcullisMapOffenderSlots, bpf.PortcullisMapOffenderPeriod} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("%s not pinned: %v", name, err)
		}
	}
	rc, err := p.idCounters(1)
	if err != nil || len(rc) != 1 || rc[0].Packets != 1 {
		t.Errorf("counters across the upgrade: %+v, %v", rc, err)
	}
	if _, _, err := p.Run(buildFrame(t, frameSpec{src: dropSrc.v4, dst: dst4, sport: 1, dport: 25, syn: true})); err != nil {
		t.Fatal(err)
	}
	p.Close()
	ro, err = OpenPinned(dir)
	if err != nil {
		t.Fatal(err)
	}
	offs, err := ro.Offenders()
	ro.Close()
	if err != nil || len(offs) != 1 || offs[0].Source != dropSrc.v4 || offs[0].Count != 1 {
		t.Errorf("offenders after the upgrade: %+v, %v", offs, err)
	}

	// Something else under the retired name is not removed.
	other, err := ebpf.NewMapWithOptions(&ebpf.MapSpec{Name: "offenders", Type: ebpf.Hash, KeySize: 4, ValueSize: 4,
		MaxEntries: 1, Pinning: ebpf.PinByName}, ebpf.MapOptions{PinPath: dir})
	if err != nil {
		t.Fatal(err)
	}
	other.Close()
	if p, err := LoadPinned(dir); !errors.Is(err, ErrIncompatiblePins) {
		if err == nil {
			p.Close()
		}
		t.Errorf("LoadPinned with another map named offenders: %v, want ErrIncompatiblePins", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "offenders")); err != nil {
		t.Errorf("a map that is not the old table was removed: %v", err)
	}
}

// A source whose packets arrive on several CPUs (RSS spreads its flows) is one offender:
// the CPUs' counts summed, first seen the earliest, the layer 2 of the latest attempt.
func TestOffenderAcrossCPUs(t *testing.T) {
	if runtime.NumCPU() < 2 {
		t.Skip("needs two CPUs")
	}
	runtime.LockOSThread()
	t.Cleanup(runtime.UnlockOSThread)
	onCPU := func(cpu int) {
		var set unix.CPUSet
		set.Set(cpu)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			t.Fatalf("pinning to CPU %d: %v", cpu, err)
		}
	}
	p := applied(t, testTables(time.Now()))
	send := func(cpu, n int, enc encap) {
		onCPU(cpu)
		frame := buildFrame(t, frameSpec{enc: enc, src: dropSrc.v4, dst: dst4, sport: 1, dport: 25, syn: true})
		for range n {
			if _, _, err := p.Run(frame); err != nil {
				t.Fatal(err)
			}
		}
	}
	send(0, 3, encPlain)
	send(1, 2, encQinQPPPoE)
	send(1, 1, encVLAN)
	// The record's clock is coarse (a tick, at most 10 ms): let one pass, so that the
	// last attempt's time differs from the first's.
	time.Sleep(25 * time.Millisecond)
	send(0, 4, encQinQPPPoE)
	offs, err := p.Offenders()
	if err != nil {
		t.Fatal(err)
	}
	if len(offs) != 1 {
		t.Fatalf("%d offenders, want 1: %+v", len(offs), offs)
	}
	o := offs[0]
	if o.Source != dropSrc.v4 || o.Count != 10 || o.OuterVLAN != 200 || o.InnerVLAN != 300 || o.PPPoESession != 0x1234 {
		t.Errorf("%+v, want %v, 10 attempts, the last attempt's QinQ 200.300 and PPPoE session 0x1234", o, dropSrc.v4)
	}
	if !o.FirstSeen.Before(o.LastSeen) {
		t.Errorf("first seen %v, last seen %v: want the first CPU's first attempt and the last one", o.FirstSeen, o.LastSeen)
	}
}

// The record turns: the daemon clears the older period and makes it current, so counts
// cover the last one to two periods. Attempts of the period before stay counted (and
// their sources named) until the next turn clears them.
func TestOffenderPeriods(t *testing.T) {
	p := applied(t, testTables(time.Now()))
	send := func(src netip.Addr, n int) {
		frame := buildFrame(t, frameSpec{enc: encQinQPPPoE, src: src, dst: dst4, sport: 1, dport: 25, syn: true})
		for range n {
			if _, _, err := p.Run(frame); err != nil {
				t.Fatal(err)
			}
		}
	}
	counts := func() map[netip.Addr]uint64 {
		rec, err := p.OffenderRecord()
		if err != nil {
			t.Fatal(err)
		}
		m := map[netip.Addr]uint64{}
		var sum uint64
		for _, o := range rec.Sources {
			m[o.Source] = o.Count
			sum += o.Count
		}
		if sum != rec.Attempts {
			t.Errorf("%d attempts recorded, the sources held count %d", rec.Attempts, sum)
		}
		return m
	}
	a, b := addr("100.64.7.1"), addr("100.64.7.2")
	t0 := time.Unix(1_800_000_000, 0)
	const period = time.Hour
	if turned, err := p.TurnOffenders(period, t0); err != nil || turned {
		t.Fatalf("first turn: %v, %v; want only the start noted", turned, err)
	}
	send(a, 3)
	if turned, err := p.TurnOffenders(period, t0.Add(period-time.Second)); err != nil || turned {
		t.Fatalf("turn within the period: %v, %v", turned, err)
	}
	if turned, err := p.TurnOffenders(period, t0.Add(period)); err != nil || !turned {
		t.Fatalf("turn after the period: %v, %v", turned, err)
	}
	send(a, 2)
	send(b, 4)
	if got := counts(); got[a] != 5 || got[b] != 4 || len(got) != 2 {
		t.Errorf("after one turn: %v, want %v 5 (both periods), %v 4", got, a, b)
	}
	rec, _ := p.OffenderRecord()
	if !rec.Since.Equal(t0) {
		t.Errorf("counted since %v, want %v", rec.Since, t0)
	}
	if turned, err := p.TurnOffenders(period, t0.Add(2*period)); err != nil || !turned {
		t.Fatalf("second turn: %v, %v", turned, err)
	}
	send(b, 1)
	if got := counts(); got[a] != 2 || got[b] != 5 || len(got) != 2 {
		t.Errorf("after two turns: %v, want %v 2 (the first period cleared), %v 5", got, a, b)
	}
	if turned, err := p.TurnOffenders(period, t0.Add(3*period)); err != nil || !turned {
		t.Fatalf("third turn: %v, %v", turned, err)
	}
	if got := counts(); got[a] != 0 || got[b] != 1 || len(got) != 1 {
		t.Errorf("after three turns: %v, want only %v 1", got, b)
	}
	rec, _ = p.OffenderRecord()
	if !rec.Since.Equal(t0.Add(2*period)) || rec.Attempts != 1 {
		t.Errorf("counted since %v (want %v), %d attempts (want 1)", rec.Since, t0.Add(2*period), rec.Attempts)
	}
}
