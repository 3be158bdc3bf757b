package status

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/portcullis/portcullis/loader"
)

// Offenders are the sources with the most blocked (or monitored) attempts to governed
// ports, most first: the abuse desk's list of likely infected subscribers.
type Offenders []Offender

// Offender is one source of the offender table.
type Offender struct {
	Source      string    `json:"source"`
	Attempts    uint64    `json:"attempts"`
	FirstSeen   time.Time `json:"first_seen"`
	LastSeen    time.Time `json:"last_seen"`
	Entry       string    `json:"entry"`
	Kind        string    `json:"kind"`
	LastPort    uint16    `json:"last_port"`
	LastOutcome string    `json:"last_outcome"`
}

// ReadTop reads the pinned offender table in bpffs (the 65536 most recent sources) and
// returns the n with the most attempts; ties go to the most recent, then by address.
func ReadTop(bpffs string, n int) (Offenders, error) {
	prog, err := loader.OpenPinned(bpffs)
	if err != nil {
		return nil, err
	}
	defer prog.Close()
	offs, err := prog.Offenders()
	if err != nil {
		return nil, err
	}
	slices.SortFunc(offs, func(a, b loader.Offender) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), b.LastSeen.Compare(a.LastSeen), a.Source.Compare(b.Source))
	})
	offs = offs[:min(len(offs), n)]
	out := Offenders{}
	for _, o := range offs {
		kind, name := loader.SplitLabel(o.Label)
		if o.Label == "" { // the entry that judged it is gone and its id was reused
			kind, name = "removed", "(entry since removed)"
		}
		out = append(out, Offender{o.Source.String(), o.Count, o.FirstSeen.UTC().Round(time.Millisecond), o.LastSeen.UTC().Round(time.Millisecond), name, kind, o.Port, o.Outcome.String()})
	}
	return out, nil
}

// WriteText prints the offenders as a table.
func (o Offenders) WriteText(out io.Writer) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "SOURCE\tATTEMPTS\tFIRST SEEN\tLAST SEEN\tENTRY\tLAST PORT\tLAST OUTCOME")
	for _, x := range o {
		fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s %s\t%d\t%s\n", x.Source, x.Attempts, x.FirstSeen.Format(time.RFC3339), x.LastSeen.Format(time.RFC3339), x.Kind, x.Entry, x.LastPort, x.LastOutcome)
	}
	if len(o) == 0 {
		fmt.Fprintln(w, "(no blocked attempts recorded)")
	}
	return w.Flush()
}
