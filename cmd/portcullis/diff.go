package main

import (
	"fmt"
	"math/big"
	"slices"

	"github.com/portcullis/portcullis/policy"
)

const diffHelp = `
Shows which address space changes verdict (for the governed ports) between the policy
in OLD and the one in NEW: a minimal list of CIDRs with old -> new verdict and the
deciding entries, then totals per family. With interface scopes, a change that differs
per interface is listed per interface ("(other interfaces)": those no scope names).
Relays added, removed or changed are listed after the address changes; then the space
that keeps its verdict but changes deciding entry (a rename, a prefix moved to another
range: its counters move) or expiry, and other changes (protected ports, RST budget,
runtime: bounds). Exits 0 when nothing changes, 1 when something does (like diff(1)),
2 on error.`

// diffJSON is the --json output. Both totals are JSON numbers, exact: an IPv6 total
// can pass 2^64 (read it as a big integer: json.Number in Go, plain int in Python).
type diffJSON struct {
	Old         string       `json:"old_hash"`
	New         string       `json:"new_hash"`
	Changes     []changeJSON `json:"changes"`
	Addresses4  uint64       `json:"ipv4_addresses"`
	Addresses6  *big.Int     `json:"ipv6_addresses"`
	GovernedOld []uint16     `json:"governed_old"`
	GovernedNew []uint16     `json:"governed_new"`
	Relays      []relayJSON  `json:"relays"`
	Moved       []changeJSON `json:"moved"` // same verdict, another deciding entry or expiry
	Other       []string     `json:"other"` // protected ports, RST budget, runtime bounds
}

type relayJSON struct {
	Prefix string `json:"prefix"`
	Old    string `json:"old"` // "" when not a relay in OLD
	New    string `json:"new"` // "" when not a relay in NEW
}

type changeJSON struct {
	Prefix  string `json:"prefix"`
	Old     string `json:"old"`
	New     string `json:"new"`
	OldRule string `json:"old_entry"`
	NewRule string `json:"new_entry"`
	// Interface: "" on every interface, else one interface or "(other interfaces)".
	Interface string `json:"interface,omitempty"`
}

func runDiff(e *env, args []string) error {
	fs := newFlags(e, "diff", "[--json] OLD NEW", diffHelp)
	asJSON := fs.Bool("json", false, "print the result as JSON")
	if done, err := parseVerb(fs, "two policy files, OLD and NEW", args, 2, 2); done || err != nil {
		return err
	}
	var cs [2]*policy.Compiled
	for i := range cs {
		c, err := loadPolicy(e, fs.Arg(i))
		if err != nil {
			return rejectPolicy(e, fs.Arg(i), err, 2)
		}
		cs[i] = c
	}
	d := policy.Diff(cs[0], cs[1], e.now())
	if err := writeDiff(e, cs[0].Hash, cs[1].Hash, d, *asJSON); err != nil {
		return err
	}
	if d.Empty() {
		return nil
	}
	return &exitError{1, errChanged}
}

// writeDiff prints d, the diff from the policy hashed oldHash to newHash (diff, and
// fleet push --dry-run).
func writeDiff(e *env, oldHash, newHash string, d policy.DiffResult, asJSON bool) error {
	out := diffJSON{Old: oldHash, New: newHash, Changes: []changeJSON{}, Relays: []relayJSON{}, Addresses4: d.Addresses4,
		Addresses6: d.Addresses6, GovernedOld: d.GovernedOld, GovernedNew: d.GovernedNew, Moved: []changeJSON{}, Other: []string{}}
	for _, c := range d.Changes {
		out.Changes = append(out.Changes, changeJSON{c.Prefix.String(), c.Old.String(), c.New.String(), c.OldRule, c.NewRule, c.Interface})
	}
	for _, c := range d.Moved {
		out.Moved = append(out.Moved, changeJSON{c.Prefix.String(), c.Old.String(), c.New.String(), c.OldRule, c.NewRule, c.Interface})
	}
	out.Other = append(out.Other, d.Other...)
	scoped := false
	for _, c := range append(slices.Clone(d.Changes), d.Moved...) {
		scoped = scoped || c.Interface != ""
	}
	for _, r := range d.Relays {
		out.Relays = append(out.Relays, relayJSON{r.Prefix.String(), r.Old, r.New})
	}
	if asJSON {
		return writeJSON(e.stdout, out)
	}
	fmt.Fprintf(e.stdout, "policy %s -> %s\n", out.Old, out.New)
	if !slices.Equal(d.GovernedOld, d.GovernedNew) {
		fmt.Fprintf(e.stdout, "governed ports %v -> %v\n", d.GovernedOld, d.GovernedNew)
	}
	table := func(changes []changeJSON) {
		if scoped {
			fmt.Fprintf(e.stdout, "%-43s %-18s %-20s %s\n", "PREFIX", "VERDICT", "INTERFACE", "DECIDED BY (old -> new)")
		} else {
			fmt.Fprintf(e.stdout, "%-43s %-18s %s\n", "PREFIX", "VERDICT", "DECIDED BY (old -> new)")
		}
		for _, c := range changes {
			if scoped {
				where := c.Interface
				if where == "" {
					where = "(every interface)"
				}
				fmt.Fprintf(e.stdout, "%-43s %-18s %-20s %s -> %s\n", c.Prefix, c.Old+" -> "+c.New, where, c.OldRule, c.NewRule)
			} else {
				fmt.Fprintf(e.stdout, "%-43s %-18s %s -> %s\n", c.Prefix, c.Old+" -> "+c.New, c.OldRule, c.NewRule)
			}
		}
	}
	if len(out.Changes) == 0 {
		fmt.Fprintln(e.stdout, "no address changes verdict")
	} else {
		table(out.Changes)
	}
	if groups := d.MovedByEntry(); len(groups) > 0 {
		fmt.Fprintln(e.stdout, "same verdict, decided by another entry (its counters move) or with another expiry:")
		for _, g := range groups {
			where := ""
			if g.Interface != "" {
				where = " on " + g.Interface
			}
			more := ""
			if g.Blocks > 1 {
				more = fmt.Sprintf(" and %d more blocks (--json lists them)", g.Blocks-1)
			}
			fmt.Fprintf(e.stdout, "  %s -> %s (%s)%s: %s%s\n", g.OldRule, g.NewRule, g.Verdict, where, g.First, more)
		}
	}
	for _, r := range out.Relays {
		switch {
		case r.Old == "":
			fmt.Fprintf(e.stdout, "relay %s added: %s\n", r.Prefix, r.New)
		case r.New == "":
			fmt.Fprintf(e.stdout, "relay %s removed: was %s\n", r.Prefix, r.Old)
		default:
			fmt.Fprintf(e.stdout, "relay %s changed: %s -> %s\n", r.Prefix, r.Old, r.New)
		}
	}
	for _, o := range out.Other {
		fmt.Fprintln(e.stdout, o)
	}
	fmt.Fprintf(e.stdout, "IPv4 addresses changed: %d\nIPv6 addresses changed: %s\n", out.Addresses4, out.Addresses6)
	return nil
}
