package policy

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/portcullis/portcullis/internal/suggest"
	"github.com/portcullis/portcullis/model"
)

// This file parses the two parts of a policy that are about where a packet goes and
// where it came in, rather than who sent it: relays (destinations) and scopes
// (interfaces).

// MaxInterfaceName is the longest interface name Linux allows (IFNAMSIZ - 1).
const MaxInterfaceName = 15

// scope parses an `interfaces:` list: Linux interface names, each once, sorted.
func (p *parser) scope(n *node) Scope {
	items := p.list(n, "interfaces")
	if n.kind == sequenceNode && len(items) == 0 {
		p.errorf(n, "interfaces is empty; leave the key out to apply on every interface, or list the interfaces (like [eth2, eth3.200])")
		return nil
	}
	var out Scope
	at := map[string]*node{}
	for _, e := range items {
		name := p.text(e, "an interface name", "write a Linux interface name, like eth3.200")
		if name == "" {
			continue
		}
		if msg := ifnameProblem(name); msg != "" {
			p.errorf(e, "%q is not an interface name: %s", Clip(name), msg)
			continue
		}
		if prev, ok := at[name]; ok {
			p.errorf(e, "interface %s listed twice (first at line %d)", name, prev.line)
			continue
		}
		at[name] = e
		out = append(out, name)
	}
	slices.Sort(out)
	if len(items) > 0 && len(out) == 0 {
		return nil // errors reported; an empty scope must not read as "everywhere"
	}
	return out
}

// ifnameProblem says why Linux would refuse name as an interface name (dev_valid_name),
// or "".
func ifnameProblem(name string) string {
	switch {
	case len(name) > MaxInterfaceName:
		return fmt.Sprintf("it is %d bytes long; Linux interface names have at most %d", len(name), MaxInterfaceName)
	case name == "." || name == "..":
		return "Linux refuses it"
	case strings.ContainsAny(name, "/: \t\n"):
		return "Linux interface names have no '/', ':' or spaces"
	}
	return ""
}

var relayKeys = []string{"name", "cidrs", "ports", "reason", "ticket", "owner", "quarantined", "broad"}

func (p *parser) relay(n *node) (Relay, bool) {
	r := Relay{Pos: p.pos(n)}
	errs := len(p.errs)
	var hasName, hasCIDRs bool
	if !p.fields(n, "a relay", relayKeys, func(key string, _, v *node) {
		switch key {
		case "name":
			r.Name, hasName = p.name(v), true
		case "cidrs":
			hasCIDRs = true
			r.CIDRs = p.cidrs(v, "relay has no cidrs; list the relay's addresses")
		case "ports":
			r.Ports, r.portsAt = p.ports(v, "a relay's ports")
			if v.kind == sequenceNode && len(v.content) == 0 {
				p.errorf(v, "ports is empty; leave the key out to relay every governed port")
			}
			if len(r.Ports) > model.MaxRelayPorts {
				p.errorf(v, "a relay lists at most %d ports; leave ports out to relay every governed port", model.MaxRelayPorts)
			}
		case "reason":
			r.Reason = p.str(v, "reason")
		case "ticket":
			r.Ticket = p.str(v, "ticket")
		case "owner":
			r.Owner = p.str(v, "owner")
		case "quarantined":
			switch s := p.str(v, "quarantined"); s {
			case "pass":
			case "block":
				r.BlockQuarantined = true
			default:
				if s != "" {
					p.errorf(v, "quarantined %q is not pass or block (pass: quarantined sources may use this relay, the default; block: their quarantine applies here too)", Clip(s))
				}
			}
		case "broad":
			if v.kind != scalarNode || v.tag != "!!bool" {
				p.errorf(v, "broad must be true or false, not %s", kindName(v))
				return
			}
			r.Broad = v.value == "true"
		}
	}) {
		return r, false
	}
	if !hasName {
		p.errorf(n, "relay is missing name (counters are kept under it)")
	}
	if !hasCIDRs {
		p.errorf(n, "relay is missing cidrs (the relay's addresses)")
	}
	if r.Reason == "" {
		p.errorf(n, "relay is missing reason (say why, for the next person on shift)")
	}
	if r.Ticket == "" && r.Owner == "" {
		p.errorf(n, "relay needs a ticket or an owner (who runs it)")
	}
	for _, c := range r.CIDRs {
		bits, floor := c.Prefix.Bits(), MinRelayBits4
		if !c.Prefix.Addr().Is4() {
			floor = MinRelayBits6
		}
		switch {
		case bits == 0:
			p.errs = append(p.errs, Error{c.Pos, fmt.Sprintf("relay %s would let every source send to the whole address space: a relay lists the ISP's own mail servers", c.Prefix)})
		case bits < floor && !r.Broad:
			p.errs = append(p.errs, Error{c.Pos, fmt.Sprintf("relay %s is wider than /%d: towards it anyone may send on the governed ports, which defeats the policy; list the mail servers' own addresses, or add \"broad: true\" to the relay if you mean it", c.Prefix, floor)})
		}
	}
	return r, len(p.errs) == errs
}

// checkRelays: relay ports must be governed (a relay cannot open a port nobody
// blocks), names and prefixes unique among relays; a relay inside another that lets
// fewer ports through gets a warning, since inside it only its own ports pass.
func (p *parser) checkRelays(pol *Policy) {
	names := map[string]Pos{}
	seen := map[string]Pos{}
	for _, r := range pol.Relays {
		if prev, ok := names[r.Name]; ok {
			p.errs = append(p.errs, Error{r.Pos, fmt.Sprintf("relay name %q is already used at %s; names must be unique (counters are kept by name)", r.Name, prev)})
		}
		names[r.Name] = r.Pos
		for _, port := range r.Ports {
			if !slices.Contains(pol.Governed, port) {
				p.errs = append(p.errs, Error{p.pos(r.portsAt[port]), fmt.Sprintf("port %d is not governed (governed_ports: %v): it passes anyway; a relay's ports are among the governed ones", port, pol.Governed)})
			}
		}
		for _, c := range r.CIDRs {
			key := c.Prefix.String()
			if prev, ok := seen[key]; ok {
				p.errs = append(p.errs, Error{c.Pos, fmt.Sprintf("relay prefix %s appears twice (first at %s); list it once", c.Prefix, prev)})
			}
			seen[key] = c.Pos
		}
	}
	for _, inner := range pol.Relays {
		for _, ic := range inner.CIDRs {
			for _, outer := range pol.Relays {
				if len(inner.Ports) == 0 || slices.Equal(inner.Ports, outer.Ports) {
					continue
				}
				for _, oc := range outer.CIDRs {
					if oc.Prefix.Bits() >= ic.Prefix.Bits() || !oc.Prefix.Contains(ic.Prefix.Addr()) {
						continue
					}
					if len(outer.Ports) > 0 && !slices.ContainsFunc(outer.Ports, func(x uint16) bool { return !slices.Contains(inner.Ports, x) }) {
						continue
					}
					p.warns = append(p.warns, Error{ic.Pos, fmt.Sprintf("relay %q's %s lies inside relay %q's %s (%s) but lets only ports %v through: the most specific relay decides, so inside %s the other ports are not relayed", inner.Name, ic.Prefix, outer.Name, oc.Prefix, oc.Pos, inner.Ports, ic.Prefix)})
				}
			}
		}
	}
}

// Interfaces returns every interface some scope of the policy names, sorted.
func (pol *Policy) Interfaces() []string {
	var out []string
	add := func(s Scope) { out = append(out, s...) }
	for _, r := range pol.Ranges {
		add(r.Scope)
	}
	for _, e := range pol.Exemptions {
		add(e.Scope)
	}
	for _, q := range pol.Quarantines {
		add(q.Scope)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// ScopePos returns where the policy first names interface ifname in a scope.
func (pol *Policy) ScopePos(ifname string) (Pos, string) {
	for _, r := range pol.Ranges {
		if slices.Contains(r.Scope, ifname) {
			return r.Pos, "range " + strconv.Quote(r.Name)
		}
	}
	for _, e := range pol.Exemptions {
		if slices.Contains(e.Scope, ifname) {
			return e.Pos, "exemption " + strconv.Quote(e.Name)
		}
	}
	for _, q := range pol.Quarantines {
		if slices.Contains(q.Scope, ifname) {
			return q.Pos, "quarantine " + strconv.Quote(q.Name)
		}
	}
	return Pos{}, ""
}

// CheckInterfaces refuses a policy whose scopes name an interface outside attached,
// the interfaces the daemon attaches to: such an entry would never apply, which is
// nearly always a typo or a stale name.
func (pol *Policy) CheckInterfaces(attached []string, where string) error {
	var errs Errors
	for _, name := range pol.Interfaces() {
		if slices.Contains(attached, name) {
			continue
		}
		pos, what := pol.ScopePos(name)
		hint := ""
		if s := suggest.Closest(name, attached); s != "" {
			hint = fmt.Sprintf(" (did you mean %s?)", s)
		}
		errs = append(errs, Error{pos, fmt.Sprintf("%s is scoped to interface %s, which %s does not attach to%s; the daemon attaches to: %s. Fix the name, or add the interface to the daemon's configuration", what, name, where, hint, strings.Join(attached, ", "))})
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

// Runtime bounds the runtime entries (quarantines from the abuse desk, unblocks from
// the customer portal) that the daemon lays over this policy (`runtime:`).
type Runtime struct {
	// QuarantineTerms are the terms of a first, second, ... quarantine of the same
	// prefix within QuarantineMemory; the last repeats. Nil: 1h, 4h, 24h.
	QuarantineTerms  []time.Duration
	QuarantineMemory time.Duration // 0: 30 days
	QuarantineReset  bool          // runtime quarantines reset (default) or drop
	QuarantineMax    time.Duration // the longest term asked for; 0: 365 days
	UnblockDefault   time.Duration // 0: 30 days
	UnblockMax       time.Duration // 0: 365 days
	// UnblockWidest4 and UnblockWidest6 are the shortest prefix lengths an unblock may
	// have (0: 24 and 48): a portal unblocks a subscriber, not a pool.
	UnblockWidest4, UnblockWidest6 int
	// NoQuarantine and NoUnblock name the ranges inside which the kind may not be
	// added (an unblock in a CGNAT pool would open port 25 for every subscriber
	// behind the address).
	NoQuarantine, NoUnblock []string
	Pos                     Pos
}

var runtimeKeys = []string{"quarantine", "unblock"}

// Default widest runtime unblocks (runtime.unblock.widest_ipv4, widest_ipv6): a
// business customer's /24 or /48, not a pool.
const (
	DefaultUnblockWidest4 = 24
	DefaultUnblockWidest6 = 48
)

// MaxQuarantine is the longest runtime quarantine term: QuarantineMax, or its default.
func (rt Runtime) MaxQuarantine() time.Duration {
	return cmp.Or(rt.QuarantineMax, DefaultQuarantineMax)
}

// WidestUnblocks are the shortest prefix lengths of a runtime unblock, IPv4 and IPv6:
// UnblockWidest4 and UnblockWidest6, or their defaults.
func (rt Runtime) WidestUnblocks() (v4, v6 int) {
	return cmp.Or(rt.UnblockWidest4, DefaultUnblockWidest4), cmp.Or(rt.UnblockWidest6, DefaultUnblockWidest6)
}

// DefaultQuarantineMax is the longest runtime quarantine a policy allows when it says
// nothing (runtime.quarantine.max).
const DefaultQuarantineMax = 365 * 24 * time.Hour

// The other defaults of the runtime: section (overlay applies them).
var DefaultQuarantineTerms = []time.Duration{time.Hour, 4 * time.Hour, 24 * time.Hour}

const (
	DefaultQuarantineMemory = 30 * 24 * time.Hour
	DefaultUnblockTerm      = 30 * 24 * time.Hour
	DefaultUnblockMax       = 365 * 24 * time.Hour
)

// settings are rt's bounds as key and value, each default filled in, in a fixed
// order (diff compares two policies' settings by position).
func (rt Runtime) settings() [][2]string {
	terms := rt.QuarantineTerms
	if len(terms) == 0 {
		terms = DefaultQuarantineTerms
	}
	var ts []string
	for _, t := range terms {
		ts = append(ts, FormatDuration(t))
	}
	verdict := "drop"
	if rt.QuarantineReset {
		verdict = "reset"
	}
	names := func(l []string) string {
		l = slices.Sorted(slices.Values(l))
		return "[" + strings.Join(slices.Compact(l), ", ") + "]"
	}
	w4, w6 := rt.WidestUnblocks()
	return [][2]string{
		{"quarantine.terms", "[" + strings.Join(ts, ", ") + "]"},
		{"quarantine.memory", FormatDuration(cmp.Or(rt.QuarantineMemory, DefaultQuarantineMemory))},
		{"quarantine.verdict", verdict},
		{"quarantine.max", FormatDuration(rt.MaxQuarantine())},
		{"quarantine.forbidden_in", names(rt.NoQuarantine)},
		{"unblock.default", FormatDuration(cmp.Or(rt.UnblockDefault, DefaultUnblockTerm))},
		{"unblock.max", FormatDuration(cmp.Or(rt.UnblockMax, DefaultUnblockMax))},
		{"unblock.widest_ipv4", "/" + strconv.Itoa(w4)},
		{"unblock.widest_ipv6", "/" + strconv.Itoa(w6)},
		{"unblock.forbidden_in", names(rt.NoUnblock)},
	}
}

func (p *parser) runtime(n *node, pol *Policy) {
	rt := &pol.Runtime
	rt.Pos = p.pos(n)
	rt.QuarantineReset = true
	p.fields(n, "runtime", runtimeKeys, func(key string, _, v *node) {
		switch key {
		case "quarantine":
			p.fields(v, "runtime.quarantine", []string{"terms", "memory", "verdict", "max", "forbidden_in"}, func(key string, _, v *node) {
				switch key {
				case "terms":
					for _, t := range p.list(v, "runtime.quarantine.terms") {
						if d, ok := p.duration(t, "a quarantine term"); ok {
							rt.QuarantineTerms = append(rt.QuarantineTerms, d)
						}
					}
					if v.kind == sequenceNode && len(v.content) == 0 {
						p.errorf(v, "terms is empty; leave it out for 1h, 4h, 24h")
					}
				case "memory":
					rt.QuarantineMemory, _ = p.duration(v, "runtime.quarantine.memory")
				case "max":
					rt.QuarantineMax, _ = p.duration(v, "runtime.quarantine.max")
				case "verdict":
					rt.QuarantineReset = p.verdict(v, []model.Verdict{model.Drop, model.Reset}) == model.Reset
				case "forbidden_in":
					rt.NoQuarantine = p.rangeNames(v, "runtime.quarantine.forbidden_in")
				}
			})
		case "unblock":
			p.fields(v, "runtime.unblock", []string{"default", "max", "widest_ipv4", "widest_ipv6", "forbidden_in"}, func(key string, _, v *node) {
				switch key {
				case "widest_ipv4":
					if n, ok := p.uint(v, "runtime.unblock.widest_ipv4 (a prefix length)", 32); ok && n < 8 {
						p.errorf(v, "runtime.unblock.widest_ipv4 %d is wider than any runtime entry may be (/8)", n)
					} else if ok {
						rt.UnblockWidest4 = int(n)
					}
				case "widest_ipv6":
					if n, ok := p.uint(v, "runtime.unblock.widest_ipv6 (a prefix length)", 128); ok && n < 32 {
						p.errorf(v, "runtime.unblock.widest_ipv6 %d is wider than any runtime entry may be (/32)", n)
					} else if ok {
						rt.UnblockWidest6 = int(n)
					}
				case "default":
					rt.UnblockDefault, _ = p.duration(v, "runtime.unblock.default")
				case "max":
					rt.UnblockMax, _ = p.duration(v, "runtime.unblock.max")
				case "forbidden_in":
					rt.NoUnblock = p.rangeNames(v, "runtime.unblock.forbidden_in")
				}
			})
		}
	})
	if qmax := rt.MaxQuarantine(); slices.Max(append([]time.Duration{0}, rt.QuarantineTerms...)) > qmax {
		p.errorf(n, "runtime.quarantine.terms reach %s, longer than runtime.quarantine.max (%s)", FormatDuration(slices.Max(rt.QuarantineTerms)), FormatDuration(qmax))
	}
	if rt.UnblockMax > 0 && rt.UnblockDefault > rt.UnblockMax {
		p.errorf(n, "runtime.unblock.default (%s) is longer than runtime.unblock.max (%s)", FormatDuration(rt.UnblockDefault), FormatDuration(rt.UnblockMax))
	}
}

// rangeNames parses a list of range names; that they exist is checked once every
// range is read (checkRuntime).
func (p *parser) rangeNames(n *node, what string) []string {
	var out []string
	for _, e := range p.list(n, what) {
		if s := p.text(e, "a range name", "name a range of this policy, or leave the list empty"); s != "" {
			out = append(out, s)
			p.forbidden = append(p.forbidden, forbiddenName{s, p.pos(e)})
		}
	}
	return out
}

// checkRuntime: the ranges runtime: names exist.
func (p *parser) checkRuntime(pol *Policy, n *node) {
	if n == nil {
		return
	}
	// Every range written, with errors or not (p.ranges): a range with an error has
	// said so already.
	for _, f := range p.forbidden {
		if _, ok := p.ranges[f.name]; !ok {
			known := slices.Sorted(maps.Keys(p.ranges))
			hint := ""
			if s := suggest.Closest(f.name, known); s != "" {
				hint = fmt.Sprintf("; did you mean %q?", s)
			}
			p.errs = append(p.errs, Error{f.pos, fmt.Sprintf("runtime: forbidden_in names range %q, which the policy does not have%s", Clip(f.name), hint)})
		}
	}
}

// duration parses a duration: Go's (90m, 24h, 1h30m) or whole days (30d).
func (p *parser) duration(n *node, what string) (time.Duration, bool) {
	s := p.text(n, what, "write a duration like 4h, 90m or 30d, or leave the key out for the default")
	if s == "" {
		return 0, false
	}
	d, err := ParseDuration(s)
	if err != nil || d <= 0 {
		p.errorf(n, "%s %q is not a duration; write it like 4h, 90m or 30d", what, Clip(s))
		return 0, false
	}
	return d, true
}

// ParseDuration reads a duration as Go writes it (90m, 24h, 1h30m) or in whole days
// (30d). It must be more than zero. The policy's runtime: section, the CLI and the HTTP
// API all read terms with it.
func ParseDuration(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok && isDigits(n) {
		const maxDays = int64(1<<63-1) / int64(24*time.Hour)
		var days int64
		for _, c := range n {
			days = days*10 + int64(c-'0')
			if days > maxDays {
				return 0, fmt.Errorf("%q is too long", s)
			}
		}
		if days == 0 {
			return 0, fmt.Errorf("%q is not more than zero; give a positive duration like \"24h\" or \"30d\"", s)
		}
		return time.Duration(days) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil && goDuration.MatchString(s) {
		// Written as a duration, but past what one holds.
		return 0, fmt.Errorf("%q is too long: a duration is at most about 292 years (106751d)", s)
	}
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration; write a Go duration like \"90m\" or \"24h\", or days like \"30d\"", s)
	}
	if d <= 0 {
		return 0, fmt.Errorf("%q is not more than zero; give a positive duration like \"24h\" or \"30d\"", s)
	}
	return d, nil
}

// goDuration is the syntax time.ParseDuration takes (without a sign): what it refuses
// in this form is too long.
var goDuration = regexp.MustCompile(`^([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h)(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))*$`)

// FormatDuration writes d in days when it is whole days, else as Go does.
func FormatDuration(d time.Duration) string {
	if d > 0 && d%(24*time.Hour) == 0 {
		return strconv.Itoa(int(d/(24*time.Hour))) + "d"
	}
	return d.String()
}

// RuntimeForbids says why a runtime entry of kind ("quarantine" or "unblock") for
// prefix is forbidden by the policy, or "": the prefix overlaps a range the policy
// closes to that kind.
func (pol *Policy) RuntimeForbids(kind string, prefix netip.Prefix) string {
	names := pol.Runtime.NoUnblock
	if kind == "quarantine" {
		names = pol.Runtime.NoQuarantine
	}
	for _, r := range pol.Ranges {
		if !slices.Contains(names, r.Name) {
			continue
		}
		for _, c := range r.CIDRs {
			if c.Prefix.Overlaps(prefix) {
				return fmt.Sprintf("range %q (%s, %s) does not take runtime %ss (runtime.%s.forbidden_in at %s)", r.Name, c.Prefix, c.Pos, kind, kind, pol.Runtime.Pos)
			}
		}
	}
	return ""
}
