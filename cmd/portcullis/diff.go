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
deciding entries, then totals per family. Exits 0 when nothing changes, 1 when
something does (like diff(1)), 2 on error.`

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
}

type changeJSON struct {
	Prefix  string `json:"prefix"`
	Old     string `json:"old"`
	New     string `json:"new"`
	OldRule string `json:"old_entry"`
	NewRule string `json:"new_entry"`
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
	out := diffJSON{Old: cs[0].Hash, New: cs[1].Hash, Changes: []changeJSON{}, Addresses4: d.Addresses4,
		Addresses6: d.Addresses6, GovernedOld: d.GovernedOld, GovernedNew: d.GovernedNew}
	for _, c := range d.Changes {
		out.Changes = append(out.Changes, changeJSON{c.Prefix.String(), c.Old.String(), c.New.String(), c.OldRule, c.NewRule})
	}
	if *asJSON {
		if err := writeJSON(e.stdout, out); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(e.stdout, "policy %s -> %s\n", out.Old, out.New)
		if !slices.Equal(d.GovernedOld, d.GovernedNew) {
			fmt.Fprintf(e.stdout, "governed ports %v -> %v\n", d.GovernedOld, d.GovernedNew)
		}
		if len(out.Changes) == 0 {
			fmt.Fprintln(e.stdout, "no address changes verdict")
		} else {
			fmt.Fprintf(e.stdout, "%-43s %-18s %s\n", "PREFIX", "VERDICT", "DECIDED BY (old -> new)")
			for _, c := range out.Changes {
				fmt.Fprintf(e.stdout, "%-43s %-18s %s -> %s\n", c.Prefix, c.Old+" -> "+c.New, c.OldRule, c.NewRule)
			}
		}
		fmt.Fprintf(e.stdout, "IPv4 addresses changed: %d\nIPv6 addresses changed: %s\n", out.Addresses4, out.Addresses6)
	}
	if d.Empty() {
		return nil
	}
	return &exitError{1, errChanged}
}
