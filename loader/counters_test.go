package loader

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"github.com/portcullis/portcullis/bpf"
	"github.com/portcullis/portcullis/internal/testutil"
	"github.com/portcullis/portcullis/model"
)

// pinCPU keeps the test on one CPU: the RST budget and counters are per CPU, and
// BPF_PROG_TEST_RUN runs on the caller's CPU.
func pinCPU(t *testing.T) {
	runtime.LockOSThread()
	t.Cleanup(runtime.UnlockOSThread)
	var set unix.CPUSet
	set.Set(0)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		t.Fatalf("pinning to CPU 0: %v", err)
	}
}

func TestCountersReasonsOffenders(t *testing.T) {
	tables := testTables(time.Now())
	p := applied(t, tables)
	start := time.Now()

	send := func(n int, fs frameSpec) int {
		frame := buildFrame(t, fs)
		for i := 0; i < n; i++ {
			if _, _, err := p.Run(frame); err != nil {
				t.Fatal(err)
			}
		}
		return len(frame)
	}
	drop4 := send(3, frameSpec{src: dropSrc.v4, dst: dst4, sport: 1, dport: 25, syn: true})
	rst6 := send(2, frameSpec{enc: encVLAN, src: resetSrc.v6, dst: dst6, sport: 1, dport: 25, syn: true})
	data6 := send(1, frameSpec{enc: encVLAN, src: resetSrc.v6, dst: dst6, sport: 1, dport: 25, ack: true, payload: []byte("MAIL FROM")})
	mon4 := send(4, frameSpec{src: sources[7].v4, dst: dst4, sport: 1, dport: 25, syn: true})
	q4 := send(1, frameSpec{enc: encPPPoE, src: sources[4].v4, dst: dst4, sport: 1, dport: 25, syn: true})
	pass4 := send(2, frameSpec{src: passSrc.v4, dst: dst4, sport: 1, dport: 25, syn: true})
	send(5, frameSpec{src: dropSrc.v4, dst: dst4, sport: 1, dport: 443, syn: true})
	send(1, frameSpec{src: dropSrc.v4, dst: dst4, udp: true, sport: 1, dport: 25})
	send(1, frameSpec{src: dropSrc.v4, dst: dst4, sport: 1, dport: 25, frag: &fragSpec{offset: 8}})
	ev := send(1, frameSpec{src: dropSrc.v6, dst: dst6, sport: 1, dport: 25, syn: true, ext: make([]extHdr, model.MaxExtHeaders+1)})

	rc, err := p.RuleCounters(len(tables.RuleNames))
	if err != nil {
		t.Fatal(err)
	}
	type key struct {
		rule uint32
		o    model.Outcome
		f    model.Family
	}
	got := map[key]Counter{}
	for _, c := range rc {
		got[key{c.Rule, c.Outcome, c.Family}] = c.Counter
	}
	want := map[key]Counter{
		{1, model.OutDrop, model.IPv4}:    {3, uint64(3 * drop4)},
		{1, model.OutDrop, model.IPv6}:    {1, uint64(ev)},
		{2, model.OutRST, model.IPv6}:     {2, uint64(2 * rst6)},
		{2, model.OutDrop, model.IPv6}:    {1, uint64(data6)},
		{5, model.OutMonitor, model.IPv4}: {4, uint64(4 * mon4)},
		{6, model.OutRST, model.IPv4}:     {1, uint64(q4)},
		{3, model.OutPass, model.IPv4}:    {2, uint64(2 * pass4)},
	}
	if len(got) != len(want) {
		t.Errorf("counters %v, want %v", got, want)
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("rule %s %v %v: %+v, want %+v", tables.RuleName(k.rule), k.o, k.f, got[k], w)
		}
	}

	reasons, err := p.Reasons()
	if err != nil {
		t.Fatal(err)
	}
	wantReasons := map[model.Reason]uint64{
		model.ReasonJudged: 3 + 2 + 1 + 4 + 1 + 2, model.ReasonNotGoverned: 5, model.ReasonNotTCP: 1,
		model.ReasonFragment: 1, model.ReasonEvasion: 1, model.ReasonQuarantine: 1,
		model.ReasonRSTSent: 3, model.ReasonUnparseableBlocked: 1,
	}
	for r := model.Reason(0); r < model.NumReasons; r++ {
		if reasons[r].Packets != wantReasons[r] {
			t.Errorf("reason %v: %d packets, want %d", r, reasons[r].Packets, wantReasons[r])
		}
	}

	offs, err := p.Offenders()
	if err != nil {
		t.Fatal(err)
	}
	wantOff := map[string]struct {
		count uint64
		rule  uint32
		port  uint16
		out   model.Outcome
	}{
		dropSrc.v4.String():    {3, 1, 25, model.OutDrop},
		dropSrc.v6.String():    {1, 1, 0, model.OutDrop},
		resetSrc.v6.String():   {3, 2, 25, model.OutDrop},
		sources[7].v4.String(): {4, 5, 25, model.OutMonitor},
		sources[4].v4.String(): {1, 6, 25, model.OutRST},
	}
	if len(offs) != len(wantOff) {
		t.Errorf("%d offenders, want %d: %+v", len(offs), len(wantOff), offs)
	}
	for _, o := range offs {
		w, ok := wantOff[o.Source.String()]
		if !ok {
			t.Errorf("unexpected offender %v", o.Source)
			continue
		}
		if o.Count != w.count || o.Rule != w.rule || o.Port != w.port || o.Outcome != w.out {
			t.Errorf("offender %v: %+v, want %+v", o.Source, o, w)
		}
		slack := 2 * time.Second
		if o.FirstSeen.Before(start.Add(-slack)) || o.LastSeen.After(time.Now().Add(slack)) || o.LastSeen.Before(o.FirstSeen) {
			t.Errorf("offender %v: seen %v..%v, test ran from %v", o.Source, o.FirstSeen, o.LastSeen, start)
		}
	}
}

func TestRSTRateLimit(t *testing.T) {
	pinCPU(t)
	tables := testTables(time.Now())
	tables.RSTRate, tables.RSTBurst = 1, 3 // one per second, bursts of three
	p := applied(t, tables)
	frame := buildFrame(t, frameSpec{src: resetSrc.v4, dst: dst4, sport: 1, dport: 25, syn: true})
	var acts []model.Action
	for i := 0; i < 5; i++ {
		act, _, err := p.Run(frame)
		if err != nil {
			t.Fatal(err)
		}
		acts = append(acts, act)
	}
	want := []model.Action{model.ActionTX, model.ActionTX, model.ActionTX, model.ActionDrop, model.ActionDrop}
	for i := range want {
		if acts[i] != want[i] {
			t.Fatalf("actions %v, want %v", acts, want)
		}
	}
	reasons, _ := p.Reasons()
	if reasons[model.ReasonRateLimited].Packets != 2 || reasons[model.ReasonRSTSent].Packets != 3 {
		t.Errorf("rate_limited %d rst_sent %d, want 2 and 3", reasons[model.ReasonRateLimited].Packets, reasons[model.ReasonRSTSent].Packets)
	}
	// The budget refills: after a second one more RST goes out.
	time.Sleep(1100 * time.Millisecond)
	if act, _, _ := p.Run(frame); act != model.ActionTX {
		t.Errorf("after refill: %v, want XDP_TX", act)
	}
}

func TestKnobsGovernedPortsAndDefault(t *testing.T) {
	tables := testTables(time.Now())
	tables.Governed = []uint16{25, 2525}
	tables.DefaultVerdict = model.Drop
	p := applied(t, tables)
	unknown := sources[6]
	for _, c := range []struct {
		src  string
		port uint16
		want model.Action
	}{
		{unknown.v4.String(), 25, model.ActionDrop},   // default verdict now drop
		{unknown.v4.String(), 2525, model.ActionDrop}, // 2525 governed too
		{unknown.v4.String(), 587, model.ActionPass},
		{passSrc.v4.String(), 2525, model.ActionPass},
		{dropSrc.v4.String(), 2526, model.ActionPass},
		{unknown.v6.String(), 25, model.ActionDrop},
	} {
		a := addr(c.src)
		dst := dst4
		if a.Is6() {
			dst = dst6
		}
		if _, act := compareWithModel(t, p, tables, buildFrame(t, frameSpec{src: a, dst: dst, sport: 1, dport: c.port, syn: true})); act != c.want {
			t.Errorf("%s -> %d: %v, want %v", c.src, c.port, act, c.want)
		}
	}
}

func TestNoPolicyPassesEverything(t *testing.T) {
	p := loadProgram(t)
	act, _, err := p.Run(buildFrame(t, frameSpec{src: dropSrc.v4, dst: dst4, sport: 1, dport: 25, syn: true}))
	if err != nil || act != model.ActionPass {
		t.Fatalf("%v %v, want pass", act, err)
	}
	r, _ := p.Reasons()
	if r[model.ReasonNoPolicy].Packets != 1 {
		t.Errorf("no_policy %d, want 1", r[model.ReasonNoPolicy].Packets)
	}
}

func TestApplySwapsPolicy(t *testing.T) {
	a := testTables(time.Now())
	b := testTables(time.Now())
	b.Ranges[0].Verdict = model.Pass // dyn-drop v4 becomes pass
	p := applied(t, a)
	frame := buildFrame(t, frameSpec{src: dropSrc.v4, dst: dst4, sport: 1, dport: 25, syn: true})
	for i, tb := range []*model.Tables{b, a, b, a} {
		if err := p.Apply(tb); err != nil {
			t.Fatal(err)
		}
		want := model.ActionDrop
		if tb == b {
			want = model.ActionPass
		}
		if act, _, _ := p.Run(frame); act != want {
			t.Fatalf("swap %d: %v, want %v", i, act, want)
		}
	}
}

func TestApplyRejectsTooManyRules(t *testing.T) {
	p := loadProgram(t)
	tb := testTables(time.Now())
	tb.Ranges = append(tb.Ranges, model.Entry{Prefix: pfx("192.0.2.0/24"), Rule: model.MaxRules, Verdict: model.Drop})
	if err := p.Apply(tb); !errors.Is(err, ErrTooManyRules) {
		t.Fatalf("err %v, want ErrTooManyRules", err)
	}
}

// A verifier rejection must surface with the verifier's full log.
func TestVerifierErrorCarriesLog(t *testing.T) {
	testutil.RequireRoot(t)
	// Reads the packet without a bounds check: the verifier must refuse it.
	spec := &ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, 0, asm.Word),
		asm.LoadMem(asm.R0, asm.R2, 0, asm.Byte),
		asm.Return(),
	}}
	_, err := ebpf.NewProgram(spec)
	err = loadError(err)
	if !errors.Is(err, ErrVerifier) {
		t.Fatalf("err %v, want ErrVerifier", err)
	}
	if msg := err.Error(); !containsAll(msg, "invalid access to packet", "0: (61) r2 = *(u32 *)(r1 +0)") {
		t.Fatalf("verifier log missing from error:\n%s", msg)
	}
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// A probe is judged and answered like traffic but leaves no trace: no counters, no
// offender, no RST token.
func TestProbeLeavesNoTrace(t *testing.T) {
	tables := testTables(time.Now())
	tables.RSTRate, tables.RSTBurst = 1, 1
	p := applied(t, tables)
	for _, fam := range []source{resetSrc, dropSrc} {
		frame := buildFrame(t, frameSpec{src: fam.v4, dst: dst4, sport: 1234, dport: 25, syn: true})
		want := tables.Judge(frame, time.Now(), true)
		for range 3 { // over the burst of 1: a probe never runs out of tokens
			act, out, err := p.Probe(frame)
			if err != nil {
				t.Fatal(err)
			}
			if act != want.Action {
				t.Fatalf("%s: probe %v, model %v", fam.name, act, want.Action)
			}
			if want.Reply != nil && !bytes.Equal(out, want.Reply) {
				t.Fatalf("%s: probe reply differs from the model's:\n%x\n%x", fam.name, out, want.Reply)
			}
		}
	}
	rc, err := p.RuleCounters(len(tables.RuleNames))
	if err != nil {
		t.Fatal(err)
	}
	reasons, _ := p.Reasons()
	rec, err := p.OffenderRecord()
	if err != nil {
		t.Fatal(err)
	}
	var total uint64
	for _, r := range reasons {
		total += r.Packets
	}
	if len(rc) != 0 || total != 0 || len(rec.Sources) != 0 || rec.Attempts != 0 {
		t.Fatalf("probes left a trace: counters %v, reasons %d packets, offenders %v, %d attempts in the sketch", rc, total, rec.Sources, rec.Attempts)
	}
	// Nor a count in the sketch, which a source not held would still show.
	var rows []bpf.PortcullisPcSketchRow
	for r := range int(p.objs.OffenderSketch.MaxEntries()) {
		if err := p.objs.OffenderSketch.Lookup(uint32(r), &rows); err != nil {
			t.Fatal(err)
		}
		for _, row := range rows {
			if row.Count != ([len(row.Count)]uint32{}) {
				t.Fatalf("probes counted in row %d of the sketch", r)
			}
		}
	}
	// The token bucket is untouched: real traffic still gets its one RST.
	act, _, _ := p.Run(buildFrame(t, frameSpec{src: resetSrc.v4, dst: dst4, sport: 1, dport: 25, syn: true}))
	if act != model.ActionTX {
		t.Fatalf("first real SYN after probes: %v, want tx", act)
	}
}

// Counters are kept by label: a range keeps its counts across a swap to a policy that
// numbers its rules differently, and a new label never inherits another's counts.
func TestCountersKeptByLabelAcrossSwaps(t *testing.T) {
	mk := func(names ...string) *model.Tables {
		tb := &model.Tables{Governed: []uint16{25}, RuleNames: []string{"default"}, RuleKinds: []model.Kind{model.KindDefault}}
		for i, n := range names {
			id := uint32(i + 1)
			tb.RuleNames = append(tb.RuleNames, n)
			tb.RuleKinds = append(tb.RuleKinds, model.KindRange)
			tb.Ranges = append(tb.Ranges, model.Entry{Prefix: pfx(fmt.Sprintf("100.64.%d.0/24", n[0])), Rule: id, Verdict: model.Drop})
		}
		return tb
	}
	p := applied(t, mk("a", "b"))
	send := func(name byte, n int) {
		for range n {
			f := buildFrame(t, frameSpec{src: addr(fmt.Sprintf("100.64.%d.1", name)), dst: dst4, sport: 1, dport: 25, syn: true})
			if _, _, err := p.Run(f); err != nil {
				t.Fatal(err)
			}
		}
	}
	send('a', 2)
	send('b', 3)
	if err := p.Apply(mk("b", "c")); err != nil { // b is now rule 1, c rule 2
		t.Fatal(err)
	}
	send('b', 4)
	send('c', 5)
	got := map[string]uint64{}
	cs, err := p.Counters()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		got[c.Label] += c.Packets
	}
	want := map[string]uint64{"range/a": 2, "range/b": 7, "range/c": 5}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("counters by label %v, want %v", got, want)
	}
}

func TestRollback(t *testing.T) {
	a := testTables(time.Now())
	b := testTables(time.Now())
	b.Ranges[0].Verdict = model.Pass // dyn-drop v4 becomes pass
	p := applied(t, a)
	frame := buildFrame(t, frameSpec{src: dropSrc.v4, dst: dst4, sport: 1, dport: 25, syn: true})
	if err := p.Apply(b); err != nil {
		t.Fatal(err)
	}
	if act, _, _ := p.Run(frame); act != model.ActionPass {
		t.Fatalf("after apply: %v, want pass", act)
	}
	if err := p.Rollback(); err != nil {
		t.Fatal(err)
	}
	if act, _, _ := p.Run(frame); act != model.ActionDrop {
		t.Fatalf("after rollback: %v, want drop", act)
	}
	if p.Tables() != a {
		t.Fatal("Tables() is not the rolled-back policy")
	}
	if err := p.Rollback(); !errors.Is(err, ErrNoRollback) {
		t.Fatalf("second rollback: %v, want ErrNoRollback", err)
	}
	// The next Apply after a rollback builds in the idle slot, not over the live one.
	if err := p.Apply(b); err != nil {
		t.Fatal(err)
	}
	if act, _, _ := p.Run(frame); act != model.ActionPass {
		t.Fatalf("apply after rollback: %v, want pass", act)
	}
}

// labelled builds a policy of drop ranges (kind "range") and pass exemptions (kind
// "exemption"), each named entry on the /24 (or the .25/32 inside it) of 100.64.N.0
// where N is the first byte of its name.
func labelled(ranges, exemptions []string) *model.Tables {
	tb := &model.Tables{Governed: []uint16{25}, RuleNames: []string{"default"}, RuleKinds: []model.Kind{model.KindDefault}}
	for _, n := range ranges {
		tb.RuleNames, tb.RuleKinds = append(tb.RuleNames, n), append(tb.RuleKinds, model.KindRange)
		tb.Ranges = append(tb.Ranges, model.Entry{Prefix: pfx(fmt.Sprintf("100.64.%d.0/24", n[0])), Rule: uint32(len(tb.RuleNames) - 1), Verdict: model.Drop})
	}
	for _, n := range exemptions {
		tb.RuleNames, tb.RuleKinds = append(tb.RuleNames, n), append(tb.RuleKinds, model.KindExemption)
		tb.Ranges = append(tb.Ranges, model.Entry{Prefix: pfx(fmt.Sprintf("100.64.%d.25/32", n[0])), Rule: uint32(len(tb.RuleNames) - 1), Verdict: model.Pass})
	}
	return tb
}

// A range removed and added back keeps its counts, and the offenders it recorded keep
// its name, though other entries came and went in between (their new ids must not be
// the removed range's).
func TestCountersKeptByNameAcrossRemoval(t *testing.T) {
	p := applied(t, labelled([]string{"a", "b"}, []string{"e"}))
	send := func(src string, n int) {
		for range n {
			f := buildFrame(t, frameSpec{src: addr(src), dst: dst4, sport: 1, dport: 25, syn: true})
			if _, _, err := p.Run(f); err != nil {
				t.Fatal(err)
			}
		}
	}
	send("100.64.97.1", 2) // range a
	send("100.64.98.1", 1) // range b
	// a removed; exemption e swapped for x.
	must(t, p.Apply(labelled([]string{"b"}, []string{"x"})))
	send("100.64.120.25", 4) // exemption x (pass)
	// Another swap of exemptions, then a comes back.
	must(t, p.Apply(labelled([]string{"b"}, []string{"y"})))
	must(t, p.Apply(labelled([]string{"b", "a"}, []string{"y"})))
	send("100.64.97.1", 3)

	got := map[string]uint64{}
	cs, err := p.Counters()
	must(t, err)
	for _, c := range cs {
		got[c.Label] += c.Packets
	}
	want := map[string]uint64{"range/a": 5, "range/b": 1, "exemption/x": 4}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("counters by label %v, want %v", got, want)
	}
	offs, err := p.Offenders()
	must(t, err)
	byAddr := map[string]string{}
	for _, o := range offs {
		byAddr[fmt.Sprintf("%s %d", o.Source, o.Count)] = o.Label
	}
	wantOffs := map[string]string{"100.64.97.1 5": "range/a", "100.64.98.1 1": "range/b"}
	if fmt.Sprint(byAddr) != fmt.Sprint(wantOffs) {
		t.Errorf("offenders %v, want %v", byAddr, wantOffs)
	}
}

// When every counter id is taken, the label that left the live policy longest ago
// gives up its id, with its counts; an offender recorded under that id is no longer
// named after it, nor after the id's new owner.
func TestCounterIDsReclaimedOldestFirst(t *testing.T) {
	names := func(from, to int, extra ...string) *model.Tables {
		tb := &model.Tables{Governed: []uint16{25}, RuleNames: []string{"default"}, RuleKinds: []model.Kind{model.KindDefault}}
		add := func(n string, a netip.Addr) {
			tb.RuleNames, tb.RuleKinds = append(tb.RuleNames, n), append(tb.RuleKinds, model.KindRange)
			tb.Ranges = append(tb.Ranges, model.Entry{Prefix: netip.PrefixFrom(a, 32), Rule: uint32(len(tb.RuleNames) - 1), Verdict: model.Drop})
		}
		base := netip.MustParseAddr("100.64.0.0").As4()
		for i := from; i <= to; i++ {
			b := base
			b[2], b[3] = byte(i>>8), byte(i)
			add(fmt.Sprintf("r%d", i), netip.AddrFrom4(b))
		}
		for i, n := range extra {
			add(n, netip.AddrFrom4([4]byte{100, 65, 0, byte(i + 1)}))
		}
		return tb
	}
	last := model.MaxRules - 1 // ids 1..last: the whole id space
	p := applied(t, names(1, last))
	idOf := func(l string) uint32 { return p.labels[l] }
	r1, r2 := idOf("range/r1"), idOf("range/r2")
	f := buildFrame(t, frameSpec{src: addr("100.64.0.1"), dst: dst4, sport: 1, dport: 25, syn: true}) // r1
	if act, _, err := p.Run(f); err != nil || act != model.ActionDrop {
		t.Fatalf("r1: %v %v", act, err)
	}
	f2 := buildFrame(t, frameSpec{src: addr("100.64.0.2"), dst: dst4, sport: 1, dport: 25, syn: true}) // r2
	if act, _, err := p.Run(f2); err != nil || act != model.ActionDrop {
		t.Fatalf("r2: %v %v", act, err)
	}
	must(t, p.Apply(names(2, last))) // r1 leaves first
	must(t, p.Apply(names(3, last))) // then r2
	must(t, p.Apply(names(3, last, "new")))
	if got := idOf("range/new"); got != r1 {
		t.Fatalf("new label got id %d, want r1's %d (the label retired longest ago)", got, r1)
	}
	if got := idOf("range/r2"); got != r2 {
		t.Fatalf("r2 lost its id: %d, want %d", got, r2)
	}
	counts := map[string]uint64{}
	cs, err := p.Counters()
	must(t, err)
	for _, c := range cs {
		counts[c.Label] += c.Packets
	}
	if counts["range/new"] != 0 || counts["range/r1"] != 0 || counts["range/r2"] != 1 {
		t.Errorf("counts new=%d r1=%d r2=%d, want 0, 0 (gone with its id), 1", counts["range/new"], counts["range/r1"], counts["range/r2"])
	}
	offs, err := p.Offenders()
	must(t, err)
	for _, o := range offs {
		want := map[string]string{"100.64.0.1": "", "100.64.0.2": "range/r2"}[o.Source.String()]
		if o.Label != want {
			t.Errorf("offender %s named %q, want %q", o.Source, o.Label, want)
		}
	}
	if len(offs) != 2 {
		t.Errorf("%d offenders, want 2", len(offs))
	}
}
