package main

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"github.com/portcullis/portcullis/model"
	"github.com/portcullis/portcullis/policy"
	"github.com/portcullis/portcullis/replay"
)

const replayHelp = `
Judges every frame of a pcap or pcapng CAPTURE with the real XDP program (a private,
verifier-loaded copy, run with BPF_PROG_TEST_RUN) under the policy in FILE, and with
the Go reference model. Prints a summary: frames per verdict and per deciding entry,
port-25 SYNs by verdict, frames that could not be parsed. Needs root (CAP_BPF and
CAP_NET_ADMIN); touches no interface and no live policy.

Link types: Ethernet; Linux cooked captures (SLL, SLL2: tcpdump -i any) and raw IP get
a synthetic Ethernet header. The whole capture is judged at one instant (now): the RST
rate limit is off, so every SYN the policy resets gets its RST (see docs/replay.md).
Relays apply as on the router. --interface IF judges every frame as arriving on IF,
for a policy whose entries are scoped to interfaces (without it: an interface no scope
names); IF need not exist on the machine replaying.

Exit status: 0 done, 2 bad input (policy, capture, arguments; frames before a damaged
record are still reported), 3 the program and the model disagreed on some frame, or an
RST was malformed: a bug, please report it with the capture. 3 wins over a damaged
capture (the damage is still reported).`

// replayFile is replay.File; tests replace it.
var replayFile = replay.File

// frameJSON is one line of --json output.
type frameJSON struct {
	Frame         int      `json:"frame"`
	Time          string   `json:"time,omitempty"`
	Verdict       string   `json:"verdict"`
	Entry         *string  `json:"entry"`
	Reason        string   `json:"reason"`
	Kind          string   `json:"kind,omitempty"`
	EntryVerdict  string   `json:"entry_verdict,omitempty"`
	Action        string   `json:"action"`
	Path          string   `json:"path"`
	Flags         []string `json:"flags,omitempty"`
	Family        string   `json:"family,omitempty"`
	Src           string   `json:"src,omitempty"`
	Dst           string   `json:"dst,omitempty"`
	SrcPort       uint16   `json:"sport,omitempty"`
	DstPort       uint16   `json:"dport,omitempty"`
	TCPFlags      string   `json:"tcp_flags,omitempty"`
	Length        int      `json:"length"`
	LinkType      string   `json:"link_type"`
	Unparseable   bool     `json:"unparseable,omitempty"`
	Snapped       bool     `json:"snapped,omitempty"`
	RST           string   `json:"rst,omitempty"`
	Disagreements []string `json:"disagreements,omitempty"`
}

type summaryJSON struct {
	Capture string `json:"capture"`
	Policy  string `json:"policy"`
	Hash    string `json:"policy_hash"`
	At      string `json:"judged_at"`
	*replay.Summary
	Written string `json:"rst_file,omitempty"`
	Error   string `json:"error,omitempty"`
}

func runReplay(e *env, args []string) error {
	fs := newFlags(e, "replay", "--policy FILE [--interface IF] [-v] [--json] [-w OUT.pcap] CAPTURE  (or: replay POLICY CAPTURE)", replayHelp)
	ifname := fs.String("interface", "", "judge the frames as arriving on interface `IF` (the policy's scopes apply)")
	polPath := fs.String("policy", "", "the policy `FILE` to judge with (required)")
	verbose := fs.Bool("v", false, "print one line per frame")
	asJSON := fs.Bool("json", false, "print one JSON object per frame per line, then {\"summary\": ...}")
	outPath := fs.String("w", "", "write the RSTs the program would send to `OUT.pcap` (Ethernet)")
	if done, err := parseVerb(fs, "one capture file and --policy FILE (or POLICY CAPTURE)", args, 1, 2); done || err != nil {
		return err
	}
	capPath := fs.Arg(0)
	if fs.NArg() == 2 { // like check, explain and diff: the policy first
		if *polPath != "" {
			return fmt.Errorf("%w: replay takes the policy once: --policy %s, or %s as the first argument, not both", errUsage, *polPath, fs.Arg(0))
		}
		*polPath, capPath = fs.Arg(0), fs.Arg(1)
	}
	if *polPath == "" {
		return fmt.Errorf("%w: replay needs --policy FILE (see portcullis replay -h)", errUsage)
	}

	now := e.now() // one instant for the whole replay: compile and judge
	pol, err := policy.ParseFile(*polPath, now)
	var c *policy.Compiled
	if err == nil {
		c, err = policy.Compile(pol, now)
	}
	if err != nil {
		return rejectPolicy(e, *polPath, err, 2)
	}

	var w *rstWriter
	if *outPath != "" {
		if w, err = newRSTWriter(*outPath); err != nil {
			return &exitError{2, err}
		}
		defer w.abort()
	}

	enc := json.NewEncoder(e.stdout)
	var problems []string
	if *ifname != "" && !slices.Contains(c.Policy.Interfaces(), *ifname) {
		fmt.Fprintf(e.stderr, "note: no entry of %s is scoped to %s: the frames are judged as on any interface no scope names\n", *polPath, *ifname)
	}
	sum, rerr := replayFile(capPath, c, now, replay.Options{Interface: *ifname}, func(r replay.Result) error {
		for _, p := range r.Problems {
			problems = append(problems, fmt.Sprintf("frame %d: %s", r.Frame, p))
		}
		if w != nil && r.Reply != nil {
			if err := w.write(r); err != nil {
				return err
			}
		}
		switch {
		case *asJSON:
			return enc.Encode(frameOut(r))
		case *verbose:
			_, err := fmt.Fprintln(e.stdout, frameLine(r))
			return err
		}
		return nil
	})
	// Nothing judged: the capture did not open or could not give a single frame, or
	// there is no program. The error says it all, once.
	if sum == nil || sum.Frames == 0 && errors.Is(rerr, replay.ErrCapture) {
		if errors.Is(rerr, replay.ErrCapture) {
			return &exitError{2, rerr}
		}
		return rerr
	}
	if rerr != nil && !errors.Is(rerr, replay.ErrCapture) {
		return rerr
	}
	if w != nil {
		if err := w.close(); err != nil {
			return err
		}
	}

	out := summaryJSON{Capture: capPath, Policy: *polPath, Hash: c.Hash, At: now.UTC().Format(time.RFC3339), Summary: sum, Written: *outPath}
	if rerr != nil {
		out.Error = rerr.Error()
	}
	if *asJSON {
		if err := enc.Encode(map[string]any{"summary": out}); err != nil {
			return err
		}
	} else {
		printSummary(e.stdout, out, c)
	}
	for _, p := range problems {
		fmt.Fprintln(e.stderr, p)
	}
	// A disagreement is a bug, the more important finding: it sets the exit status
	// (3) even when the capture was damaged further on, and the damage is reported
	// on stderr on its own line.
	var damage error
	if rerr != nil {
		damage = fmt.Errorf("%w (the %d frames before it were judged)", rerr, sum.Frames)
	}
	if len(problems) > 0 {
		if damage != nil {
			fmt.Fprintln(e.stderr, damage)
		}
		return &exitError{3, fmt.Errorf("the program and the model disagree on %d frame(s): a bug, please report it with the capture", sum.Problems)}
	}
	if damage != nil {
		return &exitError{2, damage}
	}
	return nil
}

func frameOut(r replay.Result) frameJSON {
	f := frameJSON{Frame: r.Frame, Verdict: r.Verdict, Reason: r.Reason, Action: r.Action.String(), Path: r.Path.String(),
		Length: r.Length, LinkType: r.LinkType.String(), Unparseable: r.Unparseable, Snapped: r.Snapped, Disagreements: r.Problems}
	if !r.Time.IsZero() {
		f.Time = r.Time.UTC().Format(time.RFC3339Nano)
	}
	if r.Judged {
		f.Entry = &r.Entry
		f.Kind, f.EntryVerdict = string(r.Kind), r.RuleVerdict.String()
	}
	for _, x := range r.Flags {
		f.Flags = append(f.Flags, x.String())
	}
	p := r.Packet
	if p.Src.IsValid() {
		f.Family, f.Src, f.Dst = p.Family.String(), p.Src.String(), p.Dst.String()
	}
	if p.Class == model.ReasonJudged {
		f.SrcPort, f.DstPort = p.SrcPort, p.DstPort
		if !p.PortsOnly {
			f.TCPFlags = tcpFlags(p.Flags)
		}
	}
	if r.Reply != nil {
		f.RST = hex.EncodeToString(r.Reply)
	}
	return f
}

func tcpFlags(f uint8) string {
	var b strings.Builder
	for i, c := range "FSRPAUEC" {
		if f&(1<<i) != 0 {
			b.WriteRune(c)
		}
	}
	if b.Len() == 0 {
		return "."
	}
	return b.String()
}

func frameLine(r replay.Result) string {
	p := r.Packet
	flow, flags := "-", ""
	switch {
	case p.Class == model.ReasonJudged:
		flow = replay.Addr(p.Src, p.SrcPort) + " > " + replay.Addr(p.Dst, p.DstPort)
		if !p.PortsOnly {
			flags = tcpFlags(p.Flags)
		}
	case p.Src.IsValid():
		flow = p.Src.String() + " > " + p.Dst.String()
	}
	entry := "-"
	if r.Judged {
		entry = r.Entry
	}
	line := fmt.Sprintf("%6d  %-47s %-4s %-8s %-16s %s", r.Frame, flow, flags, r.Verdict, entry, r.Reason)
	if len(r.Problems) > 0 {
		line += "  [DISAGREEMENT]"
	}
	return line
}

func printSummary(w io.Writer, s summaryJSON, c *policy.Compiled) {
	fmt.Fprintf(w, "%s: %d frames (%s), policy %s, judged at %s\n\n", s.Capture, s.Frames, strings.Join(s.LinkTypes, ", "), s.Hash, s.At)
	fmt.Fprintf(w, "%-10s %8s %14s\n", "VERDICT", "FRAMES", "PORT-25 SYNS")
	for _, v := range replay.Verdicts {
		fmt.Fprintf(w, "%-10s %8d %14d\n", v, s.Verdicts[v], s.Port25SYNs[v])
	}
	width := len("(none: not judged)")
	for name := range s.Entries {
		width = max(width, len(name))
	}
	fmt.Fprintf(w, "\n%-*s %8s %8s %8s %8s\n", width, "DECIDING ENTRY", "PASS", "DROP", "RESET", "MONITOR")
	row := func(name string, m map[string]int) {
		fmt.Fprintf(w, "%-*s %8d %8d %8d %8d\n", width, name, m["pass"], m["drop"], m["reset"], m["monitor"])
	}
	var seen []string
	for _, r := range c.Rules { // policy order: default, ranges, exemptions, quarantines
		if m, ok := s.Entries[r.Name]; ok && !slices.Contains(seen, r.Name) {
			row(r.Name, m)
			seen = append(seen, r.Name)
		}
	}
	row("(none: not judged)", s.NotJudged)
	fmt.Fprintf(w, "\nunparseable frames: %d", s.Unparseable)
	if s.Snapped > 0 {
		fmt.Fprintf(w, "   cut short by the capture's snap length: %d", s.Snapped)
	}
	fmt.Fprintln(w)
	if s.Written != "" {
		fmt.Fprintf(w, "RSTs written to %s: %d\n", s.Written, s.Resets)
	}
	if s.Problems == 0 {
		fmt.Fprintln(w, "program and model agree on every frame")
	} else {
		fmt.Fprintf(w, "program and model DISAGREE on %d frame(s)\n", s.Problems)
	}
	if s.Error != "" { // the error itself goes to stderr
		fmt.Fprintf(w, "stopped early at record %d: the capture is damaged there (see the error)\n", s.Frames+1)
	}
}

// rstWriter writes the RSTs to a temporary file renamed into place when done.
type rstWriter struct {
	path, tmp string
	f         *os.File
	w         *pcapgo.Writer
}

func newRSTWriter(path string) (*rstWriter, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return nil, fmt.Errorf("cannot write %s: %w", path, err)
	}
	w := &rstWriter{path: path, tmp: f.Name(), f: f, w: pcapgo.NewWriter(f)}
	if err := w.w.WriteFileHeader(65536, layers.LinkTypeEthernet); err != nil {
		w.abort()
		return nil, fmt.Errorf("writing %s: %w", path, err)
	}
	return w, nil
}

func (w *rstWriter) write(r replay.Result) error {
	ci := gopacket.CaptureInfo{Timestamp: r.Time, CaptureLength: len(r.Reply), Length: len(r.Reply)}
	if err := w.w.WritePacket(ci, r.Reply); err != nil {
		return fmt.Errorf("writing %s: %w", w.path, err)
	}
	return nil
}

func (w *rstWriter) close() error {
	if err := w.f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", w.path, err)
	}
	if err := os.Chmod(w.tmp, 0o644); err != nil {
		return err
	}
	if err := os.Rename(w.tmp, w.path); err != nil {
		return fmt.Errorf("writing %s: %w", w.path, err)
	}
	w.f = nil
	return nil
}

// abort removes the temporary file unless close renamed it.
func (w *rstWriter) abort() {
	if w.f != nil {
		w.f.Close()
		os.Remove(w.tmp)
		w.f = nil
	}
}
