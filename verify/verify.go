// Package verify holds the one comparison of the XDP program against the reference
// model: given a frame, what the program did with it and the tables it ran under, it
// says every way the program's action, counters and output frame differ from
// model.Tables.Judge (and model.BuildRST), and checks each RST on its own with
// gopacket. The replay, the daemon's proof and the differential fuzzer all call
// Compare; each reports the differences in its own format.
//
// verify is pure Go, like policy: it never touches the kernel, so the loader's own
// tests can use it without an import cycle.
package verify

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"slices"
	"time"

	"github.com/portcullis/portcullis/model"
)

// Observed is what the program did with one frame.
type Observed struct {
	// Link is the kind of interface the frame came in on (the zero value: Ethernet).
	Link model.Link
	// Interface is the name of the interface it came in on, as the policy's scopes
	// write it ("" for one no scope names).
	Interface string
	Action    model.Action
	// Out is the frame as the program left it: the reply for XDP_TX, and the frame
	// unchanged for every other action.
	Out []byte
	// Counted is what the program counted for the frame, when the caller could read
	// it (the replay reads the private program's counters); nil when it could not (a
	// probe leaves no counts). Only then are reasons, rule and outcome compared.
	Counted *Counted
}

// Counted is what the program's counters say about one frame.
type Counted struct {
	Path    model.Reason   // the one path reason counter that moved
	Flags   []model.Reason // the flag reason counters that moved
	Judged  bool           // a rule x outcome counter moved
	Rule    uint32         // which rule, as an id of the compared tables
	Outcome model.Outcome  // and which outcome
}

// Kind says what a Difference is about.
type Kind int

const (
	DiffAction  Kind = iota // the XDP action
	DiffPath                // the path reason
	DiffFlags               // the flag reasons
	DiffJudged              // whether a rule judged the frame
	DiffRule                // which rule
	DiffOutcome             // the rule's outcome
	DiffReply               // the RST's bytes differ from the model's
	DiffFrame               // a frame the program did not send back was changed
	DiffRST                 // the RST fails the independent check (CheckRST)
)

// Difference is one way the program and the model disagree, or one fault of an RST.
type Difference struct {
	Kind Kind
	// Msg says it in a line, naming the model's side first: "model disagrees:
	// action XDP_PASS, program XDP_DROP", "RST: ack 1, want 9", ...
	Msg string
}

func (d Difference) String() string { return d.Msg }

// Compare judges frame with the model (t.JudgeAt got's link and interface at now, with an RST token: callers run
// the program with no RST rate limit, or as a probe that spends none) and returns the
// model's decision and every difference from what the program did, in a fixed order:
// action, counters (if counted), then the frame out. Rules are the same rule when their
// labels are: rules sharing a label share their counters in the data plane.
func Compare(t *model.Tables, frame []byte, now time.Time, got Observed) (model.Decision, []Difference) {
	d := t.JudgeAt(model.Ingress{Link: got.Link, Interface: got.Interface}, frame, now, true)
	var diffs []Difference
	add := func(k Kind, format string, args ...any) {
		diffs = append(diffs, Difference{k, "model disagrees: " + fmt.Sprintf(format, args...)})
	}
	if d.Action != got.Action {
		add(DiffAction, "action %v, program %v", d.Action, got.Action)
	}
	if c := got.Counted; c != nil {
		if d.Path != c.Path {
			add(DiffPath, "path reason %v, program %v", d.Path, c.Path)
		}
		mf, pf := slices.Clone(d.Flags), slices.Clone(c.Flags)
		slices.Sort(mf)
		slices.Sort(pf)
		if !slices.Equal(mf, pf) {
			add(DiffFlags, "flag reasons %v, program %v", mf, pf)
		}
		if d.Judged != c.Judged {
			add(DiffJudged, "judged %v, program %v", d.Judged, c.Judged)
		} else if d.Judged {
			if d.Rule != c.Rule && t.RuleLabel(d.Rule) != t.RuleLabel(c.Rule) {
				add(DiffRule, "entry %q, program %q", t.RuleName(d.Rule), t.RuleName(c.Rule))
			}
			if d.Outcome != c.Outcome {
				add(DiffOutcome, "outcome %v, program %v", d.Outcome, c.Outcome)
			}
		}
	}
	switch {
	case got.Action == model.ActionTX:
		if d.Action == model.ActionTX && !bytes.Equal(d.Reply, got.Out) {
			add(DiffReply, "RST differs\n  model   %s\n  program %s", hex.EncodeToString(d.Reply), hex.EncodeToString(got.Out))
		}
		for _, p := range CheckRSTOn(got.Link, frame, got.Out) {
			diffs = append(diffs, Difference{DiffRST, p})
		}
	case !bytes.Equal(got.Out, frame):
		diffs = append(diffs, Difference{DiffFrame, fmt.Sprintf("program changed a frame it did not send back (%v)\n  in  %s\n  out %s",
			got.Action, hex.EncodeToString(frame), hex.EncodeToString(got.Out))})
	}
	return d, diffs
}
