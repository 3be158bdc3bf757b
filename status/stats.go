package status

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"

	"github.com/portcullis/portcullis/loader"
	"github.com/portcullis/portcullis/model"
)

// Stats are the counters of the data plane: packets and bytes to governed ports per
// policy entry, outcome and family (kept by entry name across policy changes and
// daemon restarts), and the path counters of every packet seen.
type Stats struct {
	Entries []EntryStat       `json:"entries"`
	Reasons map[string]uint64 `json:"reasons"` // model.Reason's name -> packets
}

// EntryStat is the count of one entry, outcome and family.
type EntryStat struct {
	Kind    string `json:"kind"`
	Entry   string `json:"entry"`
	Outcome string `json:"outcome"`
	Family  string `json:"family"`
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

// ReadStats reads the counters from the pins in bpffs, the entries sorted by kind,
// entry, outcome and family.
func ReadStats(bpffs string) (Stats, error) {
	prog, err := loader.OpenPinned(bpffs)
	if err != nil {
		return Stats{}, err
	}
	defer prog.Close()
	cs, err := prog.Counters()
	if err != nil {
		return Stats{}, err
	}
	reasons, err := prog.Reasons()
	if err != nil {
		return Stats{}, err
	}
	out := Stats{Entries: []EntryStat{}, Reasons: map[string]uint64{}}
	for _, c := range cs {
		kind, name := loader.SplitLabel(c.Label)
		out.Entries = append(out.Entries, EntryStat{kind, name, c.Outcome.String(), c.Family.String(), c.Packets, c.Bytes})
	}
	slices.SortFunc(out.Entries, func(a, b EntryStat) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Entry, b.Entry), cmp.Compare(a.Outcome, b.Outcome), cmp.Compare(a.Family, b.Family))
	})
	for r, c := range reasons {
		out.Reasons[model.Reason(r).String()] = c.Packets
	}
	return out, nil
}

// WriteText prints the entries' table, then the path counters in model.Reason order.
func (s Stats) WriteText(out io.Writer) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "KIND\tENTRY\tOUTCOME\tFAMILY\tPACKETS\tBYTES\t")
	for _, e := range s.Entries {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%d\t\n", e.Kind, e.Entry, e.Outcome, e.Family, e.Packets, e.Bytes)
	}
	if len(s.Entries) == 0 {
		fmt.Fprintln(w, "(no packets to governed ports judged yet)\t\t\t\t\t\t")
	}
	w.Flush()
	fmt.Fprintln(out)
	w = tabwriter.NewWriter(out, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "PATH\tPACKETS\t")
	for r := range model.NumReasons {
		name := model.Reason(r).String()
		fmt.Fprintf(w, "%s\t%d\t\n", name, s.Reasons[name])
	}
	return w.Flush()
}
