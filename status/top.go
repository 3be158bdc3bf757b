package status

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/portcullis/portcullis/loader"
)

// Offenders are the sources with the most blocked (or monitored) attempts to governed
// ports, most first: the abuse desk's list of likely infected subscribers.
type Offenders []Offender

// Offender is one source of the offender record. Attempts is an estimate (a count-min
// sketch): never below the true count, above it by at most MaxOvercount attempts with
// probability at least Confidence. MAC, VLANs and PPPoE session are those of the
// source's last attempt: what finds the subscriber behind a dynamic or shared address.
type Offender struct {
	Source       string    `json:"source"`
	Attempts     uint64    `json:"attempts"`
	MaxOvercount uint64    `json:"attempts_max_overcount"`
	Confidence   float64   `json:"attempts_confidence"`
	CountedSince time.Time `json:"counted_since,omitzero"` // attempts counted from then (the start of the period before the current one)
	MAC          string    `json:"mac,omitempty"`
	VLAN         string    `json:"vlan,omitempty"` // "100", or "200.300" (outer.inner)
	OuterVLAN    uint16    `json:"outer_vlan,omitempty"`
	InnerVLAN    uint16    `json:"inner_vlan,omitempty"`
	PPPoESession uint16    `json:"pppoe_session,omitempty"`
	FirstSeen    time.Time `json:"first_seen"`
	LastSeen     time.Time `json:"last_seen"`
	Entry        string    `json:"entry"`
	Kind         string    `json:"kind"`
	LastPort     uint16    `json:"last_port"`
	LastOutcome  string    `json:"last_outcome"`
}

// ReadTop reads the pinned offender record in bpffs (the sources the CPUs hold: those
// that keep trying) and returns the n with the most attempts; ties go to the most
// recent, then by address.
func ReadTop(bpffs string, n int) (Offenders, error) {
	prog, err := loader.OpenPinned(bpffs)
	if err != nil {
		return nil, err
	}
	defer prog.Close()
	rec, err := prog.OffenderRecord()
	if err != nil {
		return nil, err
	}
	return Top(rec, n), nil
}

// Top is the n sources of rec with the most attempts, most first.
func Top(rec loader.OffenderRecord, n int) Offenders {
	out := Offenders{}
	for _, o := range rec.Top(n) {
		kind, name := loader.SplitLabel(o.Label)
		if o.Label == "" { // the entry that judged it is gone and its id was reused
			kind, name = "removed", "(entry since removed)"
		}
		x := Offender{Source: o.Source.String(), Attempts: o.Count, MaxOvercount: o.MaxOvercount, Confidence: rec.Confidence,
			VLAN: o.VLAN(), OuterVLAN: o.OuterVLAN, InnerVLAN: o.InnerVLAN, PPPoESession: o.PPPoESession,
			FirstSeen: o.FirstSeen.UTC().Round(time.Millisecond), LastSeen: o.LastSeen.UTC().Round(time.Millisecond),
			Entry: name, Kind: kind, LastPort: o.Port, LastOutcome: o.Outcome.String()}
		if !rec.Since.IsZero() {
			x.CountedSince = rec.Since.UTC().Round(time.Millisecond)
		}
		if o.MAC != nil {
			x.MAC = o.MAC.String()
		}
		out = append(out, x)
	}
	return out
}

func dash[T comparable](v T) string {
	var zero T
	if v == zero {
		return "-"
	}
	return fmt.Sprint(v)
}

// WriteText prints the offenders as a table, each count beside its error bound.
func (o Offenders) WriteText(out io.Writer) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "SOURCE\tATTEMPTS\tOVERCOUNT<=\tMAC\tVLAN\tPPPOE SESSION\tFIRST SEEN\tLAST SEEN\tENTRY\tLAST PORT\tLAST OUTCOME")
	for _, x := range o {
		fmt.Fprintf(w, "%s\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s %s\t%d\t%s\n", x.Source, x.Attempts, x.MaxOvercount, dash(x.MAC), dash(x.VLAN),
			dash(x.PPPoESession), x.FirstSeen.Format(time.RFC3339), x.LastSeen.Format(time.RFC3339), x.Kind, x.Entry, x.LastPort, x.LastOutcome)
	}
	if len(o) == 0 {
		fmt.Fprintln(w, "(no blocked attempts recorded)")
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if len(o) > 0 {
		since := ""
		if !o[0].CountedSince.IsZero() {
			since = " since " + o[0].CountedSince.Format(time.RFC3339)
		}
		_, err := fmt.Fprintf(out, "\nATTEMPTS%s are estimates (a count-min sketch): never below the true count, above it by at\nmost OVERCOUNT<= attempts with probability %.1f%%. MAC, VLAN (outer.inner), PPPoE session: the last attempt's.\n", since, 100*o[0].Confidence)
		return err
	}
	return nil
}
