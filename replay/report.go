package replay

import (
	"encoding/hex"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/portcullis/portcullis/model"
	"github.com/portcullis/portcullis/policy"
)

// FrameJSON is the judgement of one frame as `portcullis replay --json` prints it, one
// object a line.
type FrameJSON struct {
	Frame         int      `json:"frame"`
	Time          string   `json:"time,omitempty"`
	Verdict       string   `json:"verdict"`
	Entry         *string  `json:"entry"` // null when no entry judged the frame
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
	RST           string   `json:"rst,omitempty"` // the RST the program sent, in hex
	Disagreements []string `json:"disagreements,omitempty"`
}

// JSON returns the result in its --json form.
func (r Result) JSON() FrameJSON {
	f := FrameJSON{Frame: r.Frame, Verdict: r.Verdict, Reason: r.Reason, Action: r.Action.String(), Path: r.Path.String(),
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

// Line returns the result as one line of `portcullis replay -v`: frame, flow, TCP
// flags, verdict, deciding entry, reason, and a mark on a disagreement.
func (r Result) Line() string {
	p := r.Packet
	flow, flags := "-", ""
	switch {
	case p.Class == model.ReasonJudged:
		flow = addr(p.Src, p.SrcPort) + " > " + addr(p.Dst, p.DstPort)
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

// tcpFlags names the TCP flags as tcpdump does ("S", "SA", "." for none).
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

// addr formats an address and port for display.
func addr(a netip.Addr, port uint16) string {
	if !a.IsValid() {
		return "-"
	}
	return netip.AddrPortFrom(a, port).String()
}

// Report is the summary of a replay with what it was run on: the --json output's
// {"summary": ...} and the text printed at the end.
type Report struct {
	Capture string `json:"capture"`
	Policy  string `json:"policy"`
	Hash    string `json:"policy_hash"`
	At      string `json:"judged_at"`
	*Summary
	Written string `json:"rst_file,omitempty"` // where the RSTs were written (-w)
	Error   string `json:"error,omitempty"`    // the damage that stopped the replay early
}

// WriteText prints the report for people: frames per verdict and port-25 SYNs, frames
// per deciding entry in c's order, unparseable frames, and whether the program and the
// model agreed. c is the policy the capture was judged with.
func (s Report) WriteText(w io.Writer, c *policy.Compiled) {
	links := strings.Join(s.LinkTypes, ", ")
	if s.Frames == 0 {
		links = "the capture holds no packets"
	}
	fmt.Fprintf(w, "%s: %d frames (%s), policy %s, judged at %s\n\n", s.Capture, s.Frames, links, s.Hash, s.At)
	fmt.Fprintf(w, "%-10s %8s %14s\n", "VERDICT", "FRAMES", "PORT-25 SYNS")
	for _, v := range Verdicts {
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
