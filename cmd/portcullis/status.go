package main

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/portcullis/portcullis/controller"
	"github.com/portcullis/portcullis/daemon"
	"github.com/portcullis/portcullis/loader"
	"github.com/portcullis/portcullis/model"
)

// status, stats and top read the pinned maps: they work while the daemon is down.

// openPinned opens the pinned maps the paths name, for reading.
func (p paths) openPinned() (prog *loader.Program, bpffs, socket string, err error) {
	bpffs, socket, err = p.resolve()
	if err != nil {
		return nil, "", "", &exitError{2, err}
	}
	prog, err = loader.OpenPinned(bpffs)
	return prog, bpffs, socket, err
}

// jsonErrors makes the error of a verb run with --json come out as JSON too, for the
// script reading stdout: {"error": "..."}. The exit status, and the message main prints
// on stderr, stay as they are.
func jsonErrors(e *env, asJSON bool, err error) error {
	if err != nil && asJSON {
		writeJSON(e.stdout, map[string]string{"error": err.Error()})
	}
	return err
}

const statusHelp = `
Shows what is enforced: the interfaces the program is attached to and how, the program
id, the policy in force (hash, file, when it went live), the last proof, and whether
the daemon is running. Reads the pinned state, so it works while the daemon is down.`

type statusJSON struct {
	Daemon     string                 `json:"daemon"` // "running (pid N)" or "not running"
	Interfaces []interfaceJSON        `json:"interfaces"`
	Hash       string                 `json:"policy_hash"`
	Policy     string                 `json:"policy_file"`
	LoadedAt   string                 `json:"loaded_at"`
	Proof      controller.ProofStatus `json:"last_proof"`
	Failures   map[string]uint64      `json:"failures"`
	ModeNotes  map[string]string      `json:"mode_notes,omitempty"` // interface -> why it is not in the configured mode
	// Source and Runtime come from the running daemon (absent while it is down).
	Source  *controller.SourceStatus  `json:"source,omitempty"`
	Runtime *controller.RuntimeStatus `json:"runtime,omitempty"`
}

type interfaceJSON struct {
	Name      string `json:"name"`
	Ifindex   int    `json:"ifindex"`
	Mode      string `json:"mode"`
	ProgramID uint32 `json:"program_id"`
}

func runStatus(e *env, args []string) (err error) {
	fs := newFlags(e, "status", "[--json] [--config FILE | --bpffs DIR --socket PATH]", statusHelp)
	p := pathFlags(fs)
	asJSON := fs.Bool("json", false, "print as JSON")
	defer func() { err = jsonErrors(e, *asJSON, err) }()
	if done, err := parseVerb(fs, "no arguments", args, 0, 0); done || err != nil {
		return err
	}
	prog, bpffs, socket, err := p.openPinned()
	if err != nil {
		return err
	}
	defer prog.Close()
	meta, err := prog.Meta()
	if err != nil {
		return err
	}
	links, err := loader.PinnedLinks(bpffs)
	if err != nil {
		return err
	}
	out := statusJSON{Daemon: "not running (enforcement continues through the pinned links)", Hash: meta.Hash,
		Policy: meta.PolicyFile, LoadedAt: fmtTime(meta.LoadedAt),
		Proof:    controller.ProofStatus{At: meta.ProofAt, OK: meta.ProofOK, Probes: int(meta.ProofProbes)},
		Failures: map[string]uint64{"policy_load": meta.LoadFailures, "proof": meta.ProofFailures}}
	if st, err := daemon.RemoteStatus(socket); err == nil {
		out.Daemon = fmt.Sprintf("running (pid %d, since %s)", st.PID, fmtTime(st.Started))
		out.Proof = st.Proof
		out.ModeNotes = st.ModeNotes
		out.Source, out.Runtime = &st.Source, &st.Runtime
	}
	for _, l := range links {
		ij := interfaceJSON{Name: l.Interface, Ifindex: l.Ifindex, ProgramID: uint32(l.ProgramID), Mode: "detached (interface gone)"}
		if l.Ifindex != 0 {
			ij.Mode = "?"
			if nl, err := netlink.LinkByIndex(l.Ifindex); err == nil && nl.Attrs().Xdp != nil {
				ij.Mode = string(loader.AttachedMode(nl.Attrs().Xdp.AttachMode))
			}
		}
		out.Interfaces = append(out.Interfaces, ij)
	}
	if *asJSON {
		return writeJSON(e.stdout, out)
	}
	w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "daemon:\t%s\n", out.Daemon)
	fmt.Fprintf(w, "policy:\t%s (%s), live since %s\n", orNone(out.Hash), out.Policy, out.LoadedAt)
	proof := "never run"
	if !out.Proof.At.IsZero() {
		verdict := "all match the model"
		if !out.Proof.OK {
			verdict = "FAILED"
		}
		proof = fmt.Sprintf("%d probes, %s (%s)", out.Proof.Probes, verdict, fmtTime(out.Proof.At))
	}
	fmt.Fprintf(w, "last proof:\t%s\n", proof)
	fmt.Fprintf(w, "failures:\t%d policies rejected, %d proofs failed\n", meta.LoadFailures, meta.ProofFailures)
	if src := out.Source; src != nil {
		if src.Override != nil {
			line := fmt.Sprintf("override applied by %s at %s (%s); the configured file %s", src.Override.Who, fmtTime(src.Override.At), src.Override.File, src.File)
			if src.FilePending {
				line += fmt.Sprintf(" changed at %s and waits", fmtTime(src.FileChangedAt))
			} else {
				line += " waits"
			}
			fmt.Fprintf(w, "source:\t%s: `portcullis apply --release` returns to it\n", line)
		} else {
			fmt.Fprintf(w, "source:\tthe configured file %s\n", src.File)
		}
	}
	if rt := out.Runtime; rt != nil {
		line := fmt.Sprintf("%d quarantines, %d unblocks (store %s)", rt.Quarantines, rt.Unblocks, rt.Store)
		if rt.StoreError != "" {
			line += "; STORE FAILED: " + rt.StoreError
		}
		if rt.StoreLost != "" {
			line += "; STORE LOST ENTRIES: " + rt.StoreLost
		}
		fmt.Fprintf(w, "runtime entries:\t%s\n", line)
	}
	fmt.Fprintf(w, "bpffs:\t%s\n", bpffs)
	w.Flush()
	fmt.Fprintln(e.stdout)
	w = tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "INTERFACE\tIFINDEX\tMODE\tPROGRAM")
	for _, i := range out.Interfaces {
		mode := i.Mode
		if out.ModeNotes[i.Name] != "" {
			mode += " (not the configured mode: see below)"
		}
		fmt.Fprintf(w, "%s\t%d\t%s\t%d\n", i.Name, i.Ifindex, mode, i.ProgramID)
	}
	if len(out.Interfaces) == 0 {
		fmt.Fprintln(w, "(none attached)")
	}
	if err := w.Flush(); err != nil {
		return err
	}
	for _, name := range slices.Sorted(maps.Keys(out.ModeNotes)) {
		fmt.Fprintf(e.stdout, "\n%s: %s\n", name, out.ModeNotes[name])
	}
	return nil
}

const statsHelp = `
Counters of the data plane, per policy entry, outcome and family: packets and bytes to
governed ports, kept by entry name across policy changes and daemon restarts, then the
path counters of every packet seen. Reads the pinned maps (works while the daemon is
down).`

type statsJSON struct {
	Entries []entryStat       `json:"entries"`
	Reasons map[string]uint64 `json:"reasons"`
}

type entryStat struct {
	Kind    string `json:"kind"`
	Entry   string `json:"entry"`
	Outcome string `json:"outcome"`
	Family  string `json:"family"`
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

func runStats(e *env, args []string) (err error) {
	fs := newFlags(e, "stats", "[--json] [--config FILE | --bpffs DIR]", statsHelp)
	p := pathFlags(fs)
	asJSON := fs.Bool("json", false, "print as JSON")
	defer func() { err = jsonErrors(e, *asJSON, err) }()
	if done, err := parseVerb(fs, "no arguments", args, 0, 0); done || err != nil {
		return err
	}
	prog, _, _, err := p.openPinned()
	if err != nil {
		return err
	}
	defer prog.Close()
	cs, err := prog.Counters()
	if err != nil {
		return err
	}
	reasons, err := prog.Reasons()
	if err != nil {
		return err
	}
	out := statsJSON{Entries: []entryStat{}, Reasons: map[string]uint64{}}
	for _, c := range cs {
		kind, name := loader.SplitLabel(c.Label)
		out.Entries = append(out.Entries, entryStat{kind, name, c.Outcome.String(), c.Family.String(), c.Packets, c.Bytes})
	}
	slices.SortFunc(out.Entries, func(a, b entryStat) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Entry, b.Entry), cmp.Compare(a.Outcome, b.Outcome), cmp.Compare(a.Family, b.Family))
	})
	for r, c := range reasons {
		out.Reasons[reasonName(r)] = c.Packets
	}
	if *asJSON {
		return writeJSON(e.stdout, out)
	}
	w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "KIND\tENTRY\tOUTCOME\tFAMILY\tPACKETS\tBYTES\t")
	for _, s := range out.Entries {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%d\t\n", s.Kind, s.Entry, s.Outcome, s.Family, s.Packets, s.Bytes)
	}
	if len(out.Entries) == 0 {
		fmt.Fprintln(w, "(no packets to governed ports judged yet)\t\t\t\t\t\t")
	}
	w.Flush()
	fmt.Fprintln(e.stdout)
	w = tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "PATH\tPACKETS\t")
	for r, c := range reasons {
		fmt.Fprintf(w, "%s\t%d\t\n", reasonName(r), c.Packets)
	}
	return w.Flush()
}

const topHelp = `
The sources with the most blocked (or monitored) attempts to governed ports, most first:
the abuse desk's list of likely infected subscribers. Reads the pinned offender table
(the 65536 most recent sources; works while the daemon is down).`

type offenderJSON struct {
	Source      string    `json:"source"`
	Attempts    uint64    `json:"attempts"`
	FirstSeen   time.Time `json:"first_seen"`
	LastSeen    time.Time `json:"last_seen"`
	Entry       string    `json:"entry"`
	Kind        string    `json:"kind"`
	LastPort    uint16    `json:"last_port"`
	LastOutcome string    `json:"last_outcome"`
}

func runTop(e *env, args []string) (err error) {
	fs := newFlags(e, "top", "[-n N] [--json] [--config FILE | --bpffs DIR]", topHelp)
	p := pathFlags(fs)
	n := fs.Int("n", 20, "how many sources")
	asJSON := fs.Bool("json", false, "print as JSON")
	defer func() { err = jsonErrors(e, *asJSON, err) }()
	if done, err := parseVerb(fs, "no arguments", args, 0, 0); done || err != nil {
		return err
	}
	if *n < 1 {
		return fmt.Errorf("%w: -n must be at least 1", errUsage)
	}
	prog, _, _, err := p.openPinned()
	if err != nil {
		return err
	}
	defer prog.Close()
	offs, err := prog.Offenders()
	if err != nil {
		return err
	}
	slices.SortFunc(offs, func(a, b loader.Offender) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), b.LastSeen.Compare(a.LastSeen), a.Source.Compare(b.Source))
	})
	offs = offs[:min(len(offs), *n)]
	out := []offenderJSON{}
	for _, o := range offs {
		kind, name := loader.SplitLabel(o.Label)
		if o.Label == "" { // the entry that judged it is gone and its id was reused
			kind, name = "removed", "(entry since removed)"
		}
		out = append(out, offenderJSON{o.Source.String(), o.Count, o.FirstSeen.UTC().Round(time.Millisecond), o.LastSeen.UTC().Round(time.Millisecond), name, kind, o.Port, o.Outcome.String()})
	}
	if *asJSON {
		return writeJSON(e.stdout, out)
	}
	w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "SOURCE\tATTEMPTS\tFIRST SEEN\tLAST SEEN\tENTRY\tLAST PORT\tLAST OUTCOME")
	for _, o := range out {
		fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s %s\t%d\t%s\n", o.Source, o.Attempts, o.FirstSeen.Format(time.RFC3339), o.LastSeen.Format(time.RFC3339), o.Kind, o.Entry, o.LastPort, o.LastOutcome)
	}
	if len(out) == 0 {
		fmt.Fprintln(w, "(no blocked attempts recorded)")
	}
	return w.Flush()
}

func reasonName(r int) string { return model.Reason(r).String() }
