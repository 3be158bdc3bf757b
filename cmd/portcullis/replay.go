package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

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

	var w *replay.RSTWriter
	if *outPath != "" {
		if w, err = replay.CreateRSTFile(*outPath); err != nil {
			return &exitError{2, err}
		}
		defer w.Abort()
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
			if err := w.Write(r); err != nil {
				return err
			}
		}
		switch {
		case *asJSON:
			return enc.Encode(r.JSON())
		case *verbose:
			_, err := fmt.Fprintln(e.stdout, r.Line())
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
		if err := w.Close(); err != nil {
			return err
		}
	}

	out := replay.Report{Capture: capPath, Policy: *polPath, Hash: c.Hash, At: now.UTC().Format(time.RFC3339), Summary: sum, Written: *outPath}
	if rerr != nil {
		out.Error = rerr.Error()
	}
	if *asJSON {
		if err := enc.Encode(map[string]any{"summary": out}); err != nil {
			return err
		}
	} else {
		out.WriteText(e.stdout, c)
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
