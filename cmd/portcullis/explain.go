package main

import (
	"fmt"
	"net/netip"
	"strconv"

	"github.com/portcullis/portcullis/policy"
)

const explainHelp = `
Says what happens to a TCP packet from ADDRESS to PORT (default 25) under the policy in
FILE: the verdict, the entry that decides it, and every other entry that covers the
address and loses (most specific first), each with its file:line. Uses the same lookup
as the data plane.`

type explainJSON struct {
	Address   string         `json:"address"`
	Port      uint16         `json:"port"`
	Governed  bool           `json:"governed"`
	Protected bool           `json:"protected"`
	Verdict   string         `json:"verdict"`
	Reason    string         `json:"reason"`
	Decider   coveringJSON   `json:"decider"`
	Losers    []coveringJSON `json:"losers"`
	Hash      string         `json:"policy_hash"`
}

type coveringJSON struct {
	Kind    string `json:"kind"`
	Name    string `json:"name"`
	Prefix  string `json:"prefix,omitempty"`
	Verdict string `json:"verdict"`
	At      string `json:"at"`
}

func runExplain(e *env, args []string) error {
	fs := newFlags(e, "explain", "[--json] FILE ADDRESS [PORT]", explainHelp)
	asJSON := fs.Bool("json", false, "print the result as JSON")
	if done, err := parseVerb(fs, "FILE ADDRESS [PORT]", args, 2, 3); done || err != nil {
		return err
	}
	a, err := netip.ParseAddr(fs.Arg(1))
	if err != nil {
		return fmt.Errorf("%w: %q is not an IP address (write it like 100.64.1.2 or 2001:db8::1)", errUsage, fs.Arg(1))
	}
	port := uint64(25)
	if fs.NArg() == 3 {
		port, err = strconv.ParseUint(fs.Arg(2), 10, 16)
		if err != nil || port == 0 {
			return fmt.Errorf("%w: %q is not a port number %s", errUsage, fs.Arg(2), policy.PortRange)
		}
	}
	c, err := loadPolicy(e, fs.Arg(0))
	if err != nil {
		return rejectPolicy(e, fs.Arg(0), err, 1)
	}
	ex := c.Explain(a, uint16(port), e.now())
	out := explainJSON{Address: ex.Address.String(), Port: ex.Port, Governed: ex.Governed, Protected: ex.Protected,
		Verdict: ex.Verdict.String(), Reason: ex.Reason, Hash: c.Hash, Losers: []coveringJSON{}}
	out.Decider = coveringOut(ex.Decider)
	for _, l := range ex.Losers {
		out.Losers = append(out.Losers, coveringOut(l))
	}
	if *asJSON {
		return writeJSON(e.stdout, out)
	}
	fmt.Fprintf(e.stdout, "TCP %s -> port %d: %s\n", out.Address, out.Port, out.Verdict)
	fmt.Fprintf(e.stdout, "  why:      %s\n", out.Reason)
	if out.Governed {
		fmt.Fprintf(e.stdout, "  decided:  %s\n", out.Decider)
	} else {
		fmt.Fprintf(e.stdout, "  on governed ports the source would get: %s\n", out.Decider)
	}
	for i, l := range out.Losers {
		label := "            "
		if i == 0 {
			label = "  overruled:"
		}
		fmt.Fprintf(e.stdout, "%s %s\n", label, l)
	}
	fmt.Fprintf(e.stdout, "  policy:   %s\n", c.Hash)
	return nil
}

func (x coveringJSON) String() string {
	if x.Kind == string(policy.KindDefault) {
		at := x.At
		if at == "" {
			at = "built in: the file has no default: key"
		}
		return fmt.Sprintf("default -> %s (%s)", x.Verdict, at)
	}
	p := ""
	if x.Prefix != "" {
		p = " " + x.Prefix
	}
	return fmt.Sprintf("%s %q%s -> %s (%s)", x.Kind, x.Name, p, x.Verdict, x.At)
}

func coveringOut(c policy.Covering) coveringJSON {
	out := coveringJSON{Kind: string(c.Kind), Name: c.Name, Verdict: c.Verdict.String()}
	if c.Pos.Line > 0 { // the built-in default is written nowhere
		out.At = c.Pos.String()
	}
	if c.Prefix.IsValid() {
		out.Prefix = c.Prefix.String()
	}
	return out
}
