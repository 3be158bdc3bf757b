package main

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/portcullis/portcullis/model"
	"github.com/portcullis/portcullis/policy"
)

const explainHelp = `
Says what happens to a TCP packet from ADDRESS to PORT (default 25) under the policy in
FILE: the verdict, the entry that decides it, and every other entry that covers the
address and loses (most specific first), each with its file:line. Uses the same lookup
as the data plane.

--to DST asks about a packet towards DST: a relay covering it decides first. Without
it, no relay applies. --interface IF asks about a packet arriving on interface IF:
entries scoped to other interfaces do not apply. Without it, only entries without
interfaces apply (an interface no scope names).`

type explainJSON struct {
	Address   string         `json:"address"`
	To        string         `json:"to,omitempty"`
	Interface string         `json:"interface,omitempty"`
	Port      uint16         `json:"port"`
	Governed  bool           `json:"governed"`
	Protected bool           `json:"protected"`
	Verdict   string         `json:"verdict"`
	Reason    string         `json:"reason"`
	Decider   coveringJSON   `json:"decider"`
	Losers    []coveringJSON `json:"losers"`
	Relays    []coveringJSON `json:"relays,omitempty"`
	Hash      string         `json:"policy_hash"`
}

type coveringJSON struct {
	Kind       string   `json:"kind"`
	Name       string   `json:"name"`
	Prefix     string   `json:"prefix,omitempty"`
	Verdict    string   `json:"verdict"`
	At         string   `json:"at"`
	Interfaces []string `json:"interfaces,omitempty"`
	// NotHere: scoped to other interfaces than the one asked about.
	NotHere bool     `json:"other_interfaces,omitempty"`
	Ports   []uint16 `json:"ports,omitempty"`
}

func runExplain(e *env, args []string) error {
	fs := newFlags(e, "explain", "[--json] [--to DST] [--interface IF] FILE ADDRESS [PORT]", explainHelp)
	asJSON := fs.Bool("json", false, "print the result as JSON")
	to := fs.String("to", "", "destination address (relays covering it decide first)")
	ifname := fs.String("interface", "", "interface the packet arrives on (scoped entries apply only there)")
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
	var dst netip.Addr
	if *to != "" {
		if dst, err = netip.ParseAddr(*to); err != nil {
			return fmt.Errorf("%w: --to %q is not an IP address (write it like 192.0.2.25 or 2001:db8::25)", errUsage, *to)
		}
		if dst.Unmap().Is4() != a.Unmap().Is4() {
			return fmt.Errorf("%w: --to %s and %s are of different families; a packet has one", errUsage, dst, a)
		}
	}
	c, err := loadPolicy(e, fs.Arg(0))
	if err != nil {
		return rejectPolicy(e, fs.Arg(0), err, 1)
	}
	if *ifname != "" && !slices.Contains(c.Policy.Interfaces(), *ifname) {
		fmt.Fprintf(e.stderr, "note: no entry of %s is scoped to %s: it is judged like any interface no scope names\n", fs.Arg(0), *ifname)
	}
	ex := c.Explain(policy.Query{Src: a, Dst: dst, Port: uint16(port), Interface: *ifname}, e.now())
	out := explainJSON{Address: ex.Address.String(), Interface: ex.Interface, Port: ex.Port, Governed: ex.Governed, Protected: ex.Protected,
		Verdict: ex.Verdict.String(), Reason: ex.Reason, Hash: c.Hash, Losers: []coveringJSON{}}
	if ex.To.IsValid() {
		out.To = ex.To.String()
	}
	out.Decider = coveringOut(ex.Decider)
	for _, l := range ex.Losers {
		out.Losers = append(out.Losers, coveringOut(l))
	}
	for _, r := range ex.Relays {
		out.Relays = append(out.Relays, coveringOut(r))
	}
	if *asJSON {
		return writeJSON(e.stdout, out)
	}
	head := "TCP " + out.Address + " -> "
	if out.To != "" {
		head += out.To + " "
	}
	head += fmt.Sprintf("port %d", out.Port)
	if out.Interface != "" {
		head += " on " + out.Interface
	}
	fmt.Fprintf(e.stdout, "%s: %s\n", head, out.Verdict)
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
	for i, r := range out.Relays[min(1, len(out.Relays)):] {
		label := "            "
		if i == 0 {
			label = "  relays:  "
		}
		fmt.Fprintf(e.stdout, "%s %s\n", label, r)
	}
	fmt.Fprintf(e.stdout, "  policy:   %s\n", c.Hash)
	return nil
}

func (x coveringJSON) String() string {
	if x.Kind == string(model.KindDefault) {
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
	extra := ""
	if len(x.Ports) > 0 {
		extra += fmt.Sprintf(" ports %v", x.Ports)
	}
	if x.Interfaces != nil {
		extra += " on " + strings.Join(x.Interfaces, ", ")
		if x.NotHere {
			extra += " (not this interface)"
		}
	}
	return fmt.Sprintf("%s %q%s%s -> %s (%s)", x.Kind, x.Name, p, extra, x.Verdict, x.At)
}

func coveringOut(c policy.Covering) coveringJSON {
	out := coveringJSON{Kind: string(c.Kind), Name: c.Name, Verdict: c.Verdict.String(),
		Interfaces: c.Interfaces, NotHere: c.OtherInterfaces, Ports: c.Ports}
	if c.Pos.Line > 0 { // the built-in default is written nowhere
		out.At = c.Pos.String()
	}
	if c.Prefix.IsValid() {
		out.Prefix = c.Prefix.String()
	}
	return out
}
