// Package replay judges the frames of a pcap or pcapng capture with the real XDP
// program (BPF_PROG_TEST_RUN on a private, verifier-loaded copy of the program and its
// tables) and with the Go reference model, and reports per frame what the program did,
// which policy entry decided, and any disagreement between the two.
package replay

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/portcullis/portcullis/loader"
	"github.com/portcullis/portcullis/model"
	"github.com/portcullis/portcullis/policy"
	"github.com/portcullis/portcullis/verify"
)

// Verdicts as the replay reports them: what happened to the frame.
const (
	VerdictPass    = "pass"    // XDP_PASS, not counted as blocked
	VerdictDrop    = "drop"    // XDP_DROP
	VerdictReset   = "reset"   // XDP_TX with an RST+ACK in place of the frame
	VerdictMonitor = "monitor" // XDP_PASS, counted as "would block"
)

// Verdicts lists the verdicts in report order.
var Verdicts = []string{VerdictPass, VerdictDrop, VerdictReset, VerdictMonitor}

// Result is the judgement of one frame.
type Result struct {
	Frame    int // 1-based index in the capture
	Time     time.Time
	LinkType LinkType
	Length   int // bytes of the frame as the program saw it
	Snapped  bool

	// What the program did. Rule, Entry, Kind and RuleVerdict are set when a rule
	// judged the frame (Judged), from the program's own per-rule counters.
	Verdict     string
	Action      model.Action
	Judged      bool
	Rule        uint32
	Entry       string
	Kind        model.Kind
	RuleVerdict model.Verdict
	Outcome     model.Outcome  // the rule x outcome counter that moved
	Path        model.Reason   // the program's path reason counter
	Flags       []model.Reason // the program's flag reason counters
	Reason      string         // why, in a few words
	Reply       []byte         // the frame the program sends back (reset)
	Unparseable bool           // the link layer or the program's parser gave up

	// What the frame is, as the parser reads it (for display).
	Packet    model.Packet
	Port25SYN bool // a TCP SYN (no ACK) to port 25

	// Problems are disagreements between the program and the model, and faults
	// found in an RST the program built. Any of them means a bug.
	Problems []string
}

// Options are how the frames of a capture came in.
type Options struct {
	// Interface is the name of the interface the capture was taken on, as the policy's
	// scopes name it: entries scoped to it apply, those scoped elsewhere do not. ""
	// judges the frames as arriving on an interface no scope names.
	Interface string
}

// Replayer judges frames with a private copy of the program under one policy.
type Replayer struct {
	prog   *loader.Program
	c      *policy.Compiled
	tables *model.Tables
	now    time.Time
	in     model.Ingress

	reasons [model.NumReasons]uint64        // reason packet counts after the last frame
	rules   map[string][]loader.RuleCounter // per-rule counters after the last frame, by label
}

// New loads a private copy of the program (root, or CAP_BPF and CAP_NET_ADMIN) and
// installs c's tables, judged at the fixed time now for the whole replay:
//
//   - Quarantines are installed without expiry if they are live at now and left out
//     if not, so the program and the model (which judges at now) agree however long
//     the replay runs and whatever the clock says.
//   - The RST rate limit is off (rate 0 = unlimited): it is a per-CPU token bucket
//     that refills in real time, so a replay, running thousands of frames a second,
//     would exhaust it where the live router, seeing them over minutes, would not.
//     Every SYN that the policy resets gets its RST.
//   - With opts.Interface, the private program is told that loopback (ifindex 1, in
//     every network namespace) is that interface, and runs the frames as arriving on
//     it: a capture needs no interface of that name on the machine replaying it.
func New(c *policy.Compiled, now time.Time, opts Options) (*Replayer, error) {
	t := c.Tables
	// A field-by-field copy: model.Tables caches a lookup index built from its
	// slices, which must not be shared with the changed quarantine list.
	priv := &model.Tables{
		DefaultVerdict: t.DefaultVerdict,
		Governed:       slices.Clone(t.Governed),
		RSTRate:        0,
		RSTBurst:       t.RSTBurst,
		Ranges:         slices.Clone(t.Ranges),
		Relays:         slices.Clone(t.Relays),
		RuleNames:      slices.Clone(t.RuleNames),
		RuleKinds:      slices.Clone(t.RuleKinds),
	}
	for _, q := range t.Quarantines {
		if q.Expires.IsZero() || now.Before(q.Expires) {
			q.Expires = time.Time{}
			priv.Quarantines = append(priv.Quarantines, q)
		}
	}
	prog, err := loader.Load()
	if err != nil {
		return nil, fmt.Errorf("loading a private copy of the XDP program (needs root, or CAP_BPF and CAP_NET_ADMIN): %w", err)
	}
	if opts.Interface != "" {
		if err := prog.SetInterfaces(map[string]int{opts.Interface: loopbackIfindex}); err != nil {
			prog.Close()
			return nil, fmt.Errorf("naming the interface to the private program: %w", err)
		}
	}
	if err := prog.Apply(priv); err != nil {
		prog.Close()
		return nil, fmt.Errorf("installing the policy in the private program: %w", err)
	}
	return &Replayer{prog: prog, c: c, tables: priv, now: now, in: model.Ingress{Interface: opts.Interface},
		rules: map[string][]loader.RuleCounter{}}, nil
}

// Close unloads the private program.
func (r *Replayer) Close() error { return r.prog.Close() }

// Tables returns the tables the replay installed (see New).
func (r *Replayer) Tables() *model.Tables { return r.tables }

// Judge runs one frame through the program and the model. An error means the
// program could not be run or its counters read, not that the frame was odd.
func (r *Replayer) Judge(fr Frame) (Result, error) {
	res := Result{Frame: fr.Index, Time: fr.Time, LinkType: fr.LinkType, Length: len(fr.Data), Snapped: fr.Snapped,
		Verdict: VerdictPass, Action: model.ActionPass}
	if fr.LinkErr != "" {
		res.Unparseable, res.Path, res.Reason = true, model.ReasonMalformed, fr.LinkErr
		return res, nil
	}
	res.Packet = model.Decode(fr.Data)
	p := res.Packet
	res.Port25SYN = p.Class == model.ReasonJudged && !p.PortsOnly && p.DstPort == 25 && p.Flags&0x12 == 0x02
	if len(fr.Data) < ethLen {
		// BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header; no
		// such frame reaches XDP.
		res.Unparseable, res.Path = true, model.ReasonMalformed
		res.Reason = fmt.Sprintf("%d bytes, shorter than an Ethernet header (not run)", len(fr.Data))
		return res, nil
	}

	act, out, err := r.prog.RunAt(r.in, fr.Data)
	if err != nil {
		return res, fmt.Errorf("frame %d: %w", fr.Index, err)
	}
	res.Action = act
	if err := r.programJudgement(&res, p); err != nil {
		return res, fmt.Errorf("frame %d: %w", fr.Index, err)
	}
	switch act {
	case model.ActionTX:
		res.Verdict, res.Reply = VerdictReset, out
	case model.ActionDrop:
		res.Verdict = VerdictDrop
	case model.ActionPass:
		if res.Judged && res.Path != model.ReasonNotGoverned && res.Outcome == model.OutMonitor {
			res.Verdict = VerdictMonitor
		}
	default:
		res.Verdict = act.String()
		res.Problems = append(res.Problems, "program returned "+act.String())
	}
	res.Unparseable = res.Path == model.ReasonMalformed
	res.Reason = r.describe(res, p)

	r.compare(&res, fr.Data, out)
	return res, nil
}

// programJudgement reads what the program counted for the frame it just ran: the
// reason counters (one path reason, any flag reasons) and, for a judged frame, the
// one rule x outcome counter that moved. The program is private and nothing else runs
// it, so the differences from the previous frame's counts are this frame's exactly.
func (r *Replayer) programJudgement(res *Result, p model.Packet) error {
	rs, err := r.prog.Reasons()
	if err != nil {
		return err
	}
	paths := 0
	for i := range rs {
		d := rs[i].Packets - r.reasons[i]
		r.reasons[i] = rs[i].Packets
		if d == 0 {
			continue
		}
		if d != 1 {
			res.Problems = append(res.Problems, fmt.Sprintf("reason counter %s moved by %d", model.Reason(i), d))
		}
		if model.Reason(i).Path() {
			res.Path = model.Reason(i)
			paths++
		} else {
			res.Flags = append(res.Flags, model.Reason(i))
		}
	}
	if paths != 1 {
		res.Problems = append(res.Problems, fmt.Sprintf("program counted %d path reasons, want 1", paths))
	}
	if res.Path != model.ReasonJudged && res.Path != model.ReasonEvasion {
		return nil
	}

	// The deciding rule is one of those covering the source: read only theirs,
	// and fall back to every rule if none of them moved.
	cands := []uint32{0}
	if p.Src.IsValid() {
		ex := r.c.Explain(policy.Query{Src: p.Src, Dst: p.Dst, Port: p.DstPort, Interface: r.in.Interface}, r.now)
		cands = append(cands, ex.Decider.Rule)
		for _, l := range ex.Losers {
			cands = append(cands, l.Rule)
		}
		for _, l := range ex.Relays {
			cands = append(cands, l.Rule)
		}
		slices.Sort(cands)
		cands = slices.Compact(cands)
	}
	moved, err := r.moved(cands)
	if err != nil {
		return err
	}
	if len(moved) == 0 {
		all := make([]uint32, len(r.tables.RuleNames))
		for i := range all {
			all[i] = uint32(i)
		}
		if moved, err = r.moved(all); err != nil {
			return err
		}
	}
	if len(moved) != 1 {
		res.Problems = append(res.Problems, fmt.Sprintf("a judged frame moved %d rule counters, want 1", len(moved)))
		if len(moved) == 0 {
			return nil
		}
	}
	rc := moved[0]
	res.Judged, res.Rule, res.Outcome = true, rc.Rule, rc.Outcome
	res.Entry = r.tables.RuleName(rc.Rule)
	if int(rc.Rule) < len(r.c.Rules) {
		res.Kind, res.RuleVerdict = r.c.Rules[rc.Rule].Kind, r.c.Rules[rc.Rule].Verdict
	}
	return nil
}

// moved reads the counters of rules and returns those that moved since last read.
// Snapshots are kept by rule label (kind/name): rules sharing a label share their
// counters in the data plane, so they share a snapshot, and the first of them read
// stands for all (the counters cannot tell them apart; compare treats them as one).
func (r *Replayer) moved(rules []uint32) ([]loader.RuleCounter, error) {
	cs, err := r.prog.CountersOf(rules)
	if err != nil {
		return nil, err
	}
	var out []loader.RuleCounter
	for i := 0; i < len(cs); {
		rule := cs[i].Rule
		j := i
		for j < len(cs) && cs[j].Rule == rule {
			j++
		}
		label := r.tables.RuleLabel(rule)
		prev := r.rules[label]
		for k, c := range cs[i:j] {
			var before uint64
			if k < len(prev) {
				before = prev[k].Packets
			}
			if c.Packets != before {
				c.Packets -= before
				out = append(out, c)
			}
		}
		r.rules[label] = slices.Clone(cs[i:j])
		i = j
	}
	return out, nil
}

// compare adds to Problems every difference verify.Compare finds between the model's
// judgement and the program's: action, path and flag reasons, judging rule and
// outcome, and the frame sent back (byte for byte, and checked on its own).
func (r *Replayer) compare(res *Result, frame, out []byte) {
	got := verify.Observed{Interface: r.in.Interface, Action: res.Action, Out: out, Counted: &verify.Counted{
		Path: res.Path, Flags: res.Flags, Judged: res.Judged, Rule: res.Rule, Outcome: res.Outcome}}
	_, diffs := verify.Compare(r.tables, frame, r.now, got)
	for _, d := range diffs {
		res.Problems = append(res.Problems, d.Msg)
	}
}

// describe says in a few words why the program did what it did.
func (r *Replayer) describe(res Result, p model.Packet) string {
	switch res.Path {
	case model.ReasonNoPolicy:
		return "no policy loaded"
	case model.ReasonNotTCP:
		return "not TCP"
	case model.ReasonMalformed:
		return "headers malformed or cut short"
	case model.ReasonFragment:
		return "non-first fragment, no ports"
	case model.ReasonNotGoverned:
		if slices.Contains(r.c.Policy.Protected, p.DstPort) {
			return fmt.Sprintf("port %d protected: never governed", p.DstPort)
		}
		return fmt.Sprintf("port %d not governed", p.DstPort)
	case model.ReasonTooManyTags:
		return fmt.Sprintf("more than %d VLAN tags: dropped", model.MaxVLANTags)
	}
	who := string(res.Kind)
	if res.Kind == model.KindDefault {
		who = "default"
	}
	who += " says " + res.RuleVerdict.String()
	has := func(f model.Reason) bool { return slices.Contains(res.Flags, f) }
	if res.Path == model.ReasonEvasion {
		switch res.Verdict {
		case VerdictDrop:
			return "IPv6 extension chain too long to reach TCP; " + who + ": dropped"
		case VerdictMonitor:
			return "IPv6 extension chain too long to reach TCP; " + who + ": counted"
		}
		return "IPv6 extension chain too long to reach TCP; " + who
	}
	switch {
	case has(model.ReasonRSTSent):
		return who + ": SYN answered with RST"
	case has(model.ReasonRateLimited):
		return who + ": RST rate limit reached, dropped"
	case res.RuleVerdict == model.Reset && res.Verdict == VerdictDrop:
		if p.Fragment {
			return who + ": fragmented SYN dropped, no RST"
		}
		return who + ": not a bare SYN, dropped"
	case res.Verdict == VerdictMonitor:
		return who + ": passed, counted as would-block"
	}
	return who
}

// Summary counts the results of a replay.
type Summary struct {
	Frames      int                       `json:"frames"`
	Verdicts    map[string]int            `json:"verdicts"`
	Entries     map[string]map[string]int `json:"entries"`    // deciding entry -> verdict -> frames
	NotJudged   map[string]int            `json:"not_judged"` // frames no entry judged, by verdict
	Port25SYNs  map[string]int            `json:"port25_syns"`
	Reasons     map[string]int            `json:"reasons"` // program path reason -> frames
	Unparseable int                       `json:"unparseable"`
	Snapped     int                       `json:"snapped"`
	Resets      int                       `json:"resets"`
	Problems    int                       `json:"disagreements"` // frames with a problem
	LinkTypes   []string                  `json:"link_types"`
}

// NewSummary returns an empty summary.
func NewSummary() *Summary {
	s := &Summary{Verdicts: map[string]int{}, Entries: map[string]map[string]int{}, NotJudged: map[string]int{},
		Port25SYNs: map[string]int{}, Reasons: map[string]int{}, LinkTypes: []string{}}
	for _, v := range Verdicts {
		s.Verdicts[v], s.Port25SYNs[v] = 0, 0
	}
	return s
}

// Add counts one result.
func (s *Summary) Add(r Result) {
	s.Frames++
	s.Verdicts[r.Verdict]++
	if r.Judged {
		if s.Entries[r.Entry] == nil {
			s.Entries[r.Entry] = map[string]int{}
		}
		s.Entries[r.Entry][r.Verdict]++
	} else {
		s.NotJudged[r.Verdict]++
	}
	if r.Port25SYN {
		s.Port25SYNs[r.Verdict]++
	}
	s.Reasons[r.Path.String()]++
	if r.Unparseable {
		s.Unparseable++
	}
	if r.Snapped {
		s.Snapped++
	}
	if r.Verdict == VerdictReset {
		s.Resets++
	}
	if len(r.Problems) > 0 {
		s.Problems++
	}
	if lt := r.LinkType.String(); !slices.Contains(s.LinkTypes, lt) {
		s.LinkTypes = append(s.LinkTypes, lt)
	}
}

// File replays every frame of the capture at path under c, judged at now, calling fn
// with each result in order, and returns the summary. Frames are judged up to the
// first damaged record; the damage comes back as an error wrapping ErrCapture (with
// the summary of the frames before it). An error from fn stops the replay.
func File(path string, c *policy.Compiled, now time.Time, opts Options, fn func(Result) error) (*Summary, error) {
	capt, err := Open(path)
	if err != nil {
		return nil, err
	}
	defer capt.Close()
	r, err := New(c, now, opts)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	s := NewSummary()
	for {
		fr, err := capt.Next()
		if errors.Is(err, io.EOF) {
			return s, nil
		}
		if err != nil {
			return s, err
		}
		res, err := r.Judge(fr)
		if err != nil {
			return s, err
		}
		s.Add(res)
		if err := fn(res); err != nil {
			return s, err
		}
	}
}

// loopbackIfindex is the loopback interface's index, the same in every namespace.
const loopbackIfindex = 1
