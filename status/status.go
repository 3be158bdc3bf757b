// Package status is what is enforced, assembled for people and programs: the pinned
// state (works while the daemon is down) merged with the running daemon's published
// snapshot; text and JSON.
//
// Read, ReadStats and ReadTop return plain values whose JSON form is the --json output
// of `portcullis status`, `stats` and `top`; their WriteText methods print the text
// form.
package status

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/portcullis/portcullis/controller"
	"github.com/portcullis/portcullis/daemon"
	"github.com/portcullis/portcullis/loader"
)

// Status is what is enforced: the interfaces the program is attached to and how, the
// policy in force, the last proof, and whether the daemon is running.
type Status struct {
	Daemon     string                 `json:"daemon"` // "running (pid N, since T)" or "not running (what the pins enforce)"
	Interfaces []Interface            `json:"interfaces"`
	Hash       string                 `json:"policy_hash"`
	Policy     string                 `json:"policy_file"`
	LoadedAt   string                 `json:"loaded_at"`
	Proof      controller.ProofStatus `json:"last_proof"`
	Failures   map[string]uint64      `json:"failures"`
	ModeNotes  map[string]string      `json:"mode_notes,omitempty"` // interface -> why it is not in the configured mode
	// Source and Runtime come from the running daemon (absent while it is down).
	Source  *controller.SourceStatus  `json:"source,omitempty"`
	Runtime *controller.RuntimeStatus `json:"runtime,omitempty"`
	// LastError is the last policy change refused or failed, until one applies.
	LastError *controller.ChangeStatus `json:"last_error,omitempty"`
	// BPFFS is the directory the pins were read from (text form only).
	BPFFS string `json:"-"`
}

// Interface is one pinned link: the interface, how XDP is attached to it now, and the
// program id.
type Interface struct {
	Name      string `json:"name"`
	Ifindex   int    `json:"ifindex"`
	Mode      string `json:"mode"` // a loader.Mode, "?" if the kernel did not say, or "detached (interface gone)"
	ProgramID uint32 `json:"program_id"`
	// NowNamed is the name the interface has now, when it was renamed since it was
	// attached: its pinned link (under the old name) still judges it.
	NowNamed string `json:"now_named,omitempty"`
	// NotConfigured: the running daemon's interfaces: do not list it (it was taken out
	// of the configuration); the pinned link still judges it, while its interface is
	// there (Ifindex not 0), until `detach --interface`.
	NotConfigured bool `json:"not_configured,omitempty"`
	// NotAttached is why a configured interface of the running daemon is not attached
	// (not found, another XDP program on it, ...): it is not judged. Such an interface
	// has no pinned link; its row comes from the daemon.
	NotAttached string `json:"not_attached,omitempty"`
}

// Read assembles the status from the pins in bpffs and, when a daemon answers on the
// control socket, its published snapshot (the proof, the source, the runtime entries
// and the mode notes are then the daemon's).
func Read(bpffs, socket string) (Status, error) {
	prog, err := loader.OpenPinned(bpffs)
	if err != nil {
		return Status{}, err
	}
	defer prog.Close()
	meta, err := prog.Meta()
	if err != nil {
		return Status{}, err
	}
	links, err := loader.PinnedLinks(bpffs)
	if err != nil {
		return Status{}, err
	}
	out := Status{Daemon: notRunning(meta.Hash, links), Hash: meta.Hash,
		Policy: meta.PolicyFile, LoadedAt: fmtTime(meta.LoadedAt),
		Proof:    controller.ProofStatus{At: meta.ProofAt, OK: meta.ProofOK, Probes: int(meta.ProofProbes)},
		Failures: map[string]uint64{"policy_load": meta.LoadFailures, "proof": meta.ProofFailures},
		BPFFS:    bpffs}
	var configured, notAttached map[string]string // the running daemon's interfaces
	if st, err := daemon.RemoteStatus(socket); err == nil {
		configured, notAttached = st.Interfaces, st.NotAttached
		out.Daemon = fmt.Sprintf("running (pid %d, since %s)", st.PID, fmtTime(st.Started))
		out.Proof = st.Proof
		out.ModeNotes = st.ModeNotes
		out.Source, out.Runtime, out.LastError = &st.Source, &st.Runtime, st.LastError
	}
	for _, l := range links {
		i := Interface{Name: l.Interface, Ifindex: l.Ifindex, ProgramID: uint32(l.ProgramID), Mode: "detached (interface gone)"}
		if _, ok := configured[l.Interface]; configured != nil && !ok {
			i.NotConfigured = true
		}
		if _, err := net.InterfaceByName(l.Interface); l.Ifindex == 0 && err == nil {
			i.Mode = "detached (the interface was deleted and made again: not judged until the daemon attaches it)"
		}
		if l.Ifindex != 0 {
			i.Mode = "?"
			if mode, err := loader.LinkMode(l.Ifindex); err == nil {
				i.Mode = string(mode)
			}
			if now, err := net.InterfaceByIndex(l.Ifindex); err == nil && now.Name != l.Interface {
				i.NowNamed = now.Name
			}
		}
		out.Interfaces = append(out.Interfaces, i)
	}
	var unattached []string
	for name := range notAttached {
		if !slices.ContainsFunc(out.Interfaces, func(i Interface) bool { return i.Name == name && i.Ifindex != 0 }) {
			unattached = append(unattached, name)
		}
	}
	slices.Sort(unattached)
	for _, name := range unattached {
		i := slices.IndexFunc(out.Interfaces, func(i Interface) bool { return i.Name == name })
		if i < 0 {
			out.Interfaces = append(out.Interfaces, Interface{Name: name})
			i = len(out.Interfaces) - 1
		}
		out.Interfaces[i].NotAttached = notAttached[name]
	}
	return out, nil
}

// notRunning is the daemon line when no daemon answers: what the pins still enforce.
func notRunning(hash string, links []loader.PinnedLink) string {
	attached := slices.ContainsFunc(links, func(l loader.PinnedLink) bool { return l.Ifindex != 0 })
	switch {
	case !attached:
		return "not running (maps pinned, but no interface attached: nothing is enforced)"
	case hash == "":
		return "not running (attached, but no policy in force: the program passes everything)"
	}
	if n := slices.IndexFunc(links, func(l loader.PinnedLink) bool { return l.Ifindex == 0 }); n >= 0 {
		return "not running (enforcement continues through the pinned links that are attached; not on every interface: see below)"
	}
	return "not running (enforcement continues through the pinned links)"
}

// WriteText prints the status for people: a summary, the interfaces, then the note of
// each interface not in its configured mode.
func (s Status) WriteText(out io.Writer) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "daemon:\t%s\n", s.Daemon)
	fmt.Fprintf(w, "policy:\t%s (%s), live since %s\n", cmp.Or(s.Hash, "(none)"), s.Policy, s.LoadedAt)
	proof := "never run"
	if !s.Proof.At.IsZero() {
		verdict := "all match the model"
		if !s.Proof.OK {
			verdict = "FAILED"
		}
		proof = fmt.Sprintf("%d probes, %s (%s)", s.Proof.Probes, verdict, fmtTime(s.Proof.At))
	}
	fmt.Fprintf(w, "last proof:\t%s\n", proof)
	fmt.Fprintf(w, "failures:\t%d policies rejected, %d proofs failed\n", s.Failures["policy_load"], s.Failures["proof"])
	if src := s.Source; src != nil {
		if src.Override != nil {
			configured := "the configured file " + src.File
			if src.Etcd != nil {
				configured = "the group's policy in etcd"
			}
			line := fmt.Sprintf("override applied by %s at %s (%s); %s", src.Override.Who, fmtTime(src.Override.At), src.Override.File, configured)
			if src.FilePending {
				line += fmt.Sprintf(" changed at %s and waits", fmtTime(src.FileChangedAt))
			} else {
				line += " waits"
			}
			fmt.Fprintf(w, "source:\t%s: `portcullis apply --release` returns to it\n", line)
		} else if src.Etcd != nil {
			fmt.Fprintf(w, "source:\t%s\n", etcdLine(src.Etcd))
		} else {
			fmt.Fprintf(w, "source:\tthe configured file %s\n", src.File)
		}
	}
	if e := s.LastError; e != nil {
		fmt.Fprintf(w, "last error:\t%s at %s, from %s (%s): %s\n", e.Outcome, fmtTime(e.At), e.Who, e.File, firstLine(e.Error))
	}
	if rt := s.Runtime; rt != nil {
		line := fmt.Sprintf("%d quarantines, %d unblocks (store %s)", rt.Quarantines, rt.Unblocks, rt.Store)
		if rt.StoreError != "" {
			line += "; STORE FAILED: " + rt.StoreError
		}
		if rt.StoreLost != "" {
			line += "; STORE LOST ENTRIES: " + rt.StoreLost
		}
		fmt.Fprintf(w, "runtime entries:\t%s\n", line)
	}
	fmt.Fprintf(w, "bpffs:\t%s\n", s.BPFFS)
	w.Flush()
	fmt.Fprintln(out)
	w = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "INTERFACE\tIFINDEX\tMODE\tPROGRAM")
	for _, i := range s.Interfaces {
		mode := i.Mode
		if s.ModeNotes[i.Name] != "" {
			mode += " (not the configured mode: see below)"
		}
		if i.NotAttached != "" {
			mode = "NOT ATTACHED, not judged: " + i.NotAttached
		}
		switch {
		case i.NotConfigured && i.Ifindex != 0:
			mode += " (not in the daemon's interfaces: still judged; portcullis detach --interface " + i.Name + ")"
		case i.NotConfigured: // its interface went away: the daemon attaches only those it lists
			mode += " (not in the daemon's interfaces: not judged, and not attached again; portcullis detach --interface " + i.Name + " removes its pin)"
		}
		if i.NowNamed != "" {
			mode += " (renamed " + i.NowNamed + " since: still judged; configure the new name)"
		}
		fmt.Fprintf(w, "%s\t%d\t%s\t%d\n", i.Name, i.Ifindex, mode, i.ProgramID)
	}
	if len(s.Interfaces) == 0 {
		fmt.Fprintln(w, "(none attached)")
	}
	if err := w.Flush(); err != nil {
		return err
	}
	for _, name := range slices.Sorted(maps.Keys(s.ModeNotes)) {
		fmt.Fprintf(out, "\n%s: %s\n", name, s.ModeNotes[name])
	}
	return nil
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.UTC().Format(time.RFC3339)
}

// etcdLine says which etcd revision is in force and how the connection is.
func etcdLine(e *controller.EtcdStatus) string {
	line := fmt.Sprintf("etcd: revision %d in force", e.Revision)
	if e.Revision == 0 {
		line = "etcd: no revision applied yet (what is pinned stays in force)"
	}
	if e.Offered > e.Revision {
		line += fmt.Sprintf(", revision %d offered and not in force (see last error)", e.Offered)
	}
	if h := e.Health; h != nil {
		if h.Connected {
			line += "; connected since " + fmtTime(h.Since)
		} else {
			line += "; NOT CONNECTED since " + fmtTime(h.Since)
			if e.Revision != 0 {
				line += fmt.Sprintf(": enforcing revision %d, the last it had", e.Revision)
			}
			if h.LastError != "" {
				line += " (" + firstLine(h.LastError) + ")"
			}
		}
	}
	return line
}

// firstLine is s up to its first line break.
func firstLine(s string) string {
	first, _, _ := strings.Cut(s, "\n")
	return first
}
