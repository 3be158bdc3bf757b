package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/portcullis/portcullis/daemon"
	"github.com/portcullis/portcullis/policy"
)

const checkHelp = `
Checks a policy file: syntax, types, verdict words, CIDRs, dates, duplicate prefixes,
governed ports that are also protected. Prints every error as file:line:column and
exits 1 if there is any; otherwise prints a summary (ranges, prefixes per family,
exemptions, active and expired quarantines, the policy hash) and exits 0. Warnings
do not fail the check: expired entries (ignored), exemptions that can never decide
(every address in them is decided by more specific entries, named), IPv4-mapped
prefixes (read as the IPv4 prefix they map), relays inside relays that relay fewer ports.

--config DAEMON.yaml also checks the policy against the daemon's configuration: every
interface a scope names must be one the daemon attaches to (interfaces:), which the
daemon checks too before it loads the policy.`

type checkSummary struct {
	File               string   `json:"file"`
	Valid              bool     `json:"valid"`
	Errors             []string `json:"errors,omitempty"`
	Warnings           []string `json:"warnings,omitempty"`
	Hash               string   `json:"hash,omitempty"`
	Ranges             int      `json:"ranges"`
	Prefixes4          int      `json:"prefixes_ipv4"`
	Prefixes6          int      `json:"prefixes_ipv6"`
	Exemptions         int      `json:"exemptions"`
	ExemptionsExpired  int      `json:"exemptions_expired"`
	QuarantinesActive  int      `json:"quarantines_active"`
	QuarantinesExpired int      `json:"quarantines_expired"`
	Governed           []uint16 `json:"governed_ports"`
	Protected          []uint16 `json:"protected_ports"`
	Default            string   `json:"default"`
	Relays             int      `json:"relays"`
	RelayPrefixes      int      `json:"relay_prefixes"`
	ScopedInterfaces   []string `json:"scoped_interfaces,omitempty"`
	RSTRate            *uint32  `json:"rst_rate,omitempty"`  // RSTs a second per CPU; 0: unlimited
	RSTBurst           *uint32  `json:"rst_burst,omitempty"` // (absent when the policy is invalid)
}

func runCheck(e *env, args []string) error {
	fs := newFlags(e, "check", "[--json] [--config DAEMON.yaml] FILE", checkHelp)
	asJSON := fs.Bool("json", false, "print the result as JSON")
	cfgPath := fs.String("config", "", "the daemon's configuration: refuse scopes naming interfaces it does not attach to")
	if done, err := parseVerb(fs, "one policy file", args, 1, 1); done || err != nil {
		return err
	}
	path := fs.Arg(0)
	s := checkSummary{File: path}
	var attached []string
	if *cfgPath != "" {
		cfg, err := daemon.LoadConfig(*cfgPath)
		if err != nil {
			return &exitError{2, err}
		}
		attached = cfg.Interfaces
	}
	c, err := loadPolicy(e, path)
	if err == nil && *cfgPath != "" {
		err = c.Policy.CheckInterfaces(attached, *cfgPath)
	}
	var fe *policy.FileError
	if errors.As(err, &fe) { // not read at all: say why, not "not a valid policy"
		if *asJSON {
			s.Errors = []string{fe.Error()}
			writeJSON(e.stdout, s)
		}
		return &exitError{1, fe}
	}
	if err != nil {
		s.Errors = errorList(err)
		if *asJSON {
			writeJSON(e.stdout, s)
		} else {
			for _, l := range s.Errors {
				fmt.Fprintln(e.stdout, l)
			}
			fmt.Fprintf(e.stdout, "%s: %d error(s); the policy was not accepted\n", path, len(s.Errors))
		}
		return &exitError{1, fmt.Errorf("%s is not a valid policy", path)}
	}
	now := e.now()
	p := c.Policy
	s.Valid, s.Hash = true, c.Hash
	s.Ranges = len(p.Ranges)
	for _, r := range p.Ranges {
		for _, x := range r.CIDRs {
			if x.Prefix.Addr().Is4() {
				s.Prefixes4++
			} else {
				s.Prefixes6++
			}
		}
	}
	for _, x := range p.Exemptions {
		s.Exemptions++
		if !x.Expires.IsZero() && !now.Before(x.Expires) {
			s.ExemptionsExpired++
		}
	}
	for _, q := range p.Quarantines {
		if now.Before(q.Expires) {
			s.QuarantinesActive++
		} else {
			s.QuarantinesExpired++
		}
	}
	for _, w := range p.Warnings {
		s.Warnings = append(s.Warnings, w.Error())
	}
	s.Governed, s.Protected, s.Default = p.Governed, p.Protected, p.Default.String()
	s.Relays = len(p.Relays)
	for _, r := range p.Relays {
		s.RelayPrefixes += len(r.CIDRs)
	}
	s.ScopedInterfaces = p.Interfaces()
	s.RSTRate, s.RSTBurst = &p.RSTRate, &p.RSTBurst
	if *asJSON {
		return writeJSON(e.stdout, s)
	}
	for _, w := range s.Warnings {
		fmt.Fprintln(e.stdout, "warning:", w)
	}
	fmt.Fprintf(e.stdout, "%s: valid (policy %s)\n", path, s.Hash)
	fmt.Fprintf(e.stdout, "  governed ports   %v   protected ports %v   default %s\n", s.Governed, s.Protected, s.Default)
	fmt.Fprintf(e.stdout, "  ranges           %d (%d IPv4 prefixes, %d IPv6 prefixes)\n", s.Ranges, s.Prefixes4, s.Prefixes6)
	fmt.Fprintf(e.stdout, "  exemptions       %d (%d expired)\n", s.Exemptions, s.ExemptionsExpired)
	fmt.Fprintf(e.stdout, "  quarantines      %d active, %d expired\n", s.QuarantinesActive, s.QuarantinesExpired)
	if s.Relays > 0 {
		fmt.Fprintf(e.stdout, "  relays           %d (%d prefixes)\n", s.Relays, s.RelayPrefixes)
	}
	if len(s.ScopedInterfaces) > 0 {
		fmt.Fprintf(e.stdout, "  scoped to        %s\n", strings.Join(s.ScopedInterfaces, ", "))
	}
	if p.RSTRate == 0 {
		fmt.Fprintln(e.stdout, "  RST budget       unlimited (reset.rate: 0)")
	} else {
		fmt.Fprintf(e.stdout, "  RST budget       %d/s per CPU, burst %d\n", p.RSTRate, p.RSTBurst)
	}
	return nil
}
