package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"

	"github.com/portcullis/portcullis/examples"
	"github.com/portcullis/portcullis/loader"
	"github.com/portcullis/portcullis/model"
	"github.com/portcullis/portcullis/policy"
	"github.com/portcullis/portcullis/testenv"
)

const demoHelp = `
Builds a small ISP in network namespaces (subscribers in dynamic pools, business space,
a registered mail server, a quarantined host, one subscriber over 802.1Q; a gateway with
Portcullis on its subscriber-facing interfaces; an "internet" with two real SMTP servers
on 25, 587 and 465: mx.portcullis.test, a mail server of the world, and smtp.isp.test,
the ISP's smarthost), loads the policy (default: the built-in examples/policy.yaml),
sends real mail from every host in IPv4 and IPv6 to each port of the MX, then port-25
mail from the dsl subscriber to the MX and to the smarthost (a relay in the example
policy: refused towards the MX, delivered through the smarthost), prints what happened
next to what the policy says, prints the counters, and tears everything down.

Exit status: 0 when every attempt ended as the policy says, 1 when one did not, 2 when
the demo could not run (not root, no BPF/XDP, bad policy or flags).

Needs root on Linux 5.9 or newer with BPF, XDP, tc BPF, veth and network namespaces
(what stock Debian and Ubuntu kernels have). Nothing else: no iproute2, no SMTP tools.`

// geteuid is os.Geteuid; tests replace it.
var geteuid = os.Geteuid

// demoDialTimeout is how long a client waits for an answer before calling it dropped.
const demoDialTimeout = time.Second

func runDemo(e *env, args []string) error {
	fs := newFlags(e, "demo", "[--policy FILE] [--mode native|generic] [--hold]", demoHelp)
	polPath := fs.String("policy", "", "policy file (default: the built-in "+examples.PolicyName+")")
	modeName := fs.String("mode", "native", "XDP attach mode on the gateway: native or generic")
	hold := fs.Bool("hold", false, "keep the topology up after the scenario until interrupted (Ctrl-C)")
	if done, err := parseVerb(fs, "no arguments", args, 0, 0); done || err != nil {
		return err
	}
	mode, err := testenv.ParseMode(*modeName)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	name, c, err := demoPolicy(e, *polPath)
	if err != nil {
		return rejectPolicy(e, name, err, 2)
	}
	if err := demoPreflight(); err != nil {
		return &exitError{2, err}
	}
	if removed, err := testenv.SweepStale(); err != nil {
		fmt.Fprintf(e.stderr, "warning: %v\n", err)
	} else if len(removed) > 0 {
		fmt.Fprintf(e.stderr, "removed %d namespaces left by an earlier run that was killed\n", len(removed))
	}

	ctx, stop := demoContext()
	defer stop()

	prog, err := loader.Load()
	if err != nil {
		return &exitError{2, fmt.Errorf("loading the XDP program: %w", err)}
	}
	defer prog.Close()
	if err := prog.Apply(c.Tables); err != nil {
		return &exitError{2, fmt.Errorf("installing the policy: %w", err)}
	}
	top, err := testenv.New(testenv.Options{Mode: mode, XDP: prog.XDP()})
	if err != nil {
		if mode == testenv.Native {
			err = fmt.Errorf("%w\n(if the kernel cannot attach XDP natively to veth, try --mode generic)", err)
		}
		return &exitError{2, fmt.Errorf("building the test topology: %w", err)}
	}
	defer top.Close()

	out := &demoOut{w: e.stdout}
	w := out
	fmt.Fprintf(w, "Portcullis demo\n")
	fmt.Fprintf(w, "  policy:       %s, hash %s\n", name, c.Hash)
	fmt.Fprintf(w, "  gateway:      XDP in %s mode on %d subscriber interfaces\n", mode, len(top.Hosts))
	fmt.Fprintf(w, "  mail servers: %s at %s and %s (a mail server of the world)\n", top.Mail.Hostname, testenv.MailV4, testenv.MailV6)
	fmt.Fprintf(w, "                %s at %s and %s (the ISP's smarthost)\n", top.Relay.Hostname, testenv.RelayV4, testenv.RelayV6)
	fmt.Fprintf(w, "                each: 25 plain, 587 STARTTLS + AUTH, 465 TLS + AUTH\n")
	fmt.Fprintf(w, "  each client sends one real message to each port of the MX; %v without an answer is \"timed out\"\n\n", demoDialTimeout)

	now := e.now()
	attempts := top.Scenario(c, now)
	top.Run(attempts, demoDialTimeout)
	relayed := top.RelayScenario(c, now)
	top.Run(relayed, demoDialTimeout)
	if ctx.Err() != nil {
		return &exitError{2, errors.New("interrupted")}
	}
	bad := printAttempts(w, attempts)
	fmt.Fprintf(w, "\nThrough the smarthost: %s sends port-25 mail to the MX, and to %s for it to relay:\n\n", testenv.RelayHost, top.Relay.Hostname)
	bad += printRelayed(w, relayed)
	all := len(attempts) + len(relayed)
	fmt.Fprintln(w)
	if bad == 0 {
		fmt.Fprintf(w, "All %d attempts ended as the policy says.\n", all)
	} else {
		fmt.Fprintf(w, "%d of %d attempts did NOT end as the policy says (marked above).\n", bad, all)
	}
	fmt.Fprintln(w)
	if err := printCounters(w, prog, c, "Counters (every packet to a governed port, by deciding rule):"); err != nil {
		return err
	}

	var result error
	if bad > 0 {
		result = &exitError{1, fmt.Errorf("%d of %d attempts did not end as the policy says", bad, all)}
	}
	if out.err != nil { // nobody reads the output: no point holding
		return out.err
	}
	if *hold {
		printHold(w, top, attempts, relayed)
		<-ctx.Done()
		fmt.Fprintln(w, "\nStopping. Counters now, including what you sent by hand:")
		if err := printCounters(w, prog, c, ""); err != nil {
			return err
		}
	}
	return result
}

// demoContext is done when the demo is interrupted (Ctrl-C, SIGTERM): the demo then
// ends through its deferred teardown.
//
// SIGPIPE is ignored, not caught: once caught, it is delivered for a write to any
// broken connection, and the demo's own mail server writes to clients that hang up
// (the --hold hint `echo > /dev/tcp/.../25` does), which ended the demo. Ignored, a
// write to a closed stdout (`portcullis demo | head`) fails with EPIPE instead of
// killing the process and leaving its namespaces behind; demoOut notices that. It
// stays ignored after stop: the demo is the last thing the process does.
func demoContext() (context.Context, context.CancelFunc) {
	signal.Ignore(syscall.SIGPIPE)
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// demoOut is the demo's stdout, remembering the first write error: once stdout is
// gone the demo stops at its next check instead of running, or holding the
// topology, for nobody.
type demoOut struct {
	w   io.Writer
	err error
}

func (o *demoOut) Write(p []byte) (int, error) {
	if o.err != nil {
		return 0, o.err
	}
	n, err := o.w.Write(p)
	if err != nil {
		o.err = fmt.Errorf("writing the demo's output: %w", err)
	}
	return n, err
}

// demoPolicy returns the policy to demonstrate and the name it goes by.
func demoPolicy(e *env, path string) (string, *policy.Compiled, error) {
	if path != "" {
		c, err := loadPolicy(e, path)
		return path, c, err
	}
	now := e.now()
	pol, err := policy.Parse(examples.PolicyName, examples.Policy, now)
	if err != nil {
		return examples.PolicyName, nil, err
	}
	c, err := policy.Compile(pol, now)
	return examples.PolicyName + " (built in)", c, err
}

// demoPreflight names what is missing before anything is built.
func demoPreflight() error {
	if geteuid() != 0 {
		return errors.New("the demo needs root: it creates network namespaces and veth pairs (CAP_SYS_ADMIN, CAP_NET_ADMIN) and loads BPF programs (CAP_BPF); run as root: make demo (or: sudo make demo)")
	}
	var missing []string
	for _, c := range []struct {
		what string
		err  error
	}{
		{"XDP programs (BPF_PROG_TYPE_XDP; CONFIG_BPF_SYSCALL)", features.HaveProgramType(ebpf.XDP)},
		{"tc BPF programs (BPF_PROG_TYPE_SCHED_CLS), used for the 802.1Q subscriber", features.HaveProgramType(ebpf.SchedCLS)},
		{"LPM trie maps (BPF_MAP_TYPE_LPM_TRIE)", features.HaveMapType(ebpf.LPMTrie)},
		{"map-in-map (BPF_MAP_TYPE_ARRAY_OF_MAPS)", features.HaveMapType(ebpf.ArrayOfMaps)},
	} {
		if c.err != nil {
			missing = append(missing, fmt.Sprintf("%s: %v", c.what, c.err))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("this kernel lacks what the demo needs:\n  %s", strings.Join(missing, "\n  "))
	}
	return nil
}

// printAttempts prints the scenario table and its tally by port, and returns how many
// attempts did not end as the policy says.
func printAttempts(w io.Writer, attempts []testenv.Attempt) int {
	t := table{align: "llrllll"}
	t.add("client", "address", "port", "outcome", "time", "policy says", "")
	bad := 0
	count := map[bool]map[testenv.Outcome]int{true: {}, false: {}}
	var last *testenv.Host
	for _, a := range attempts {
		if last != nil && a.Host != last {
			t.add()
		}
		last = a.Host
		mark, miss := mismatch(a)
		bad += miss
		count[a.Port == testenv.PortSMTP][a.Got]++
		t.add(a.Host.Name, a.Src.String(), fmt.Sprint(a.Port), string(a.Got), fmtDur(a.Took), says(a.Why), mark)
	}
	t.write(w, "")
	fmt.Fprintln(w)
	n25 := 0
	for _, v := range count[true] {
		n25 += v
	}
	nsub := len(attempts) - n25
	fmt.Fprintf(w, "Port 25: %s. Ports 465/587: %d of %d delivered.\n", tally(count[true]), count[false][testenv.Delivered], nsub)
	return bad
}

// printRelayed prints attempts to several servers, one row each with the server's
// name, and returns how many did not end as the policy says.
func printRelayed(w io.Writer, attempts []testenv.Attempt) int {
	t := table{align: "lllrllll"}
	t.add("client", "address", "to", "port", "outcome", "time", "policy says", "")
	bad := 0
	for _, a := range attempts {
		mark, miss := mismatch(a)
		bad += miss
		t.add(a.Host.Name, a.Src.String(), a.Server.Hostname+" "+a.Dst.String(), fmt.Sprint(a.Port), string(a.Got), fmtDur(a.Took), says(a.Why), mark)
	}
	if len(attempts) == 0 {
		t.add("(no " + testenv.RelayHost + " host in this topology)")
	}
	t.write(w, "")
	return bad
}

// mismatch is the mark of an attempt that did not end as the policy says ("" and 0
// for one that did).
func mismatch(a testenv.Attempt) (string, int) {
	if a.OK() {
		return "", 0
	}
	return fmt.Sprintf("<-- MISMATCH: policy says %s (%v)", a.Expect, a.Err), 1
}

// table prints aligned columns ('l' or 'r' per column in align) with two spaces
// between them and no trailing blanks. A row without cells prints as an empty line.
type table struct {
	align string
	rows  [][]string
}

func (t *table) add(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) write(w io.Writer, indent string) {
	var width []int
	for _, r := range t.rows {
		for i, c := range r {
			if i >= len(width) {
				width = append(width, 0)
			}
			width[i] = max(width[i], len(c))
		}
	}
	for _, r := range t.rows {
		var b strings.Builder
		for i, c := range r {
			if i > 0 {
				b.WriteString("  ")
			}
			pad := strings.Repeat(" ", width[i]-len(c))
			if i < len(t.align) && t.align[i] == 'r' {
				b.WriteString(pad + c)
			} else {
				b.WriteString(c + pad)
			}
		}
		line := strings.TrimRight(b.String(), " ")
		if line != "" {
			line = indent + line
		}
		fmt.Fprintln(w, line)
	}
}

func tally(m map[testenv.Outcome]int) string {
	var parts []string
	for _, o := range []testenv.Outcome{testenv.Delivered, testenv.Refused, testenv.TimedOut, testenv.Failed} {
		if m[o] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", m[o], o))
		}
	}
	return strings.Join(parts, ", ")
}

// says is the policy's verdict and the entry that decides it, in a few words.
func says(ex policy.Explanation) string {
	if !ex.Governed {
		return fmt.Sprintf("pass (port %d not governed)", ex.Port)
	}
	d := ex.Decider
	if d.Kind == model.KindDefault {
		return ex.Verdict.String() + " (default)"
	}
	if strings.HasSuffix(d.Name, d.Prefix.String()) { // unnamed entries are named after their prefix
		return fmt.Sprintf("%s (%s %s)", ex.Verdict, d.Kind, d.Prefix)
	}
	return fmt.Sprintf("%s (%s %s %s)", ex.Verdict, d.Kind, d.Name, d.Prefix)
}

func fmtDur(d time.Duration) string {
	ms := float64(d) / float64(time.Millisecond)
	switch {
	case ms < 10:
		return fmt.Sprintf("%.1f ms", ms)
	case ms < 10000:
		return fmt.Sprintf("%.0f ms", ms)
	}
	return d.Round(time.Second).String()
}

func printCounters(w io.Writer, prog *loader.Program, c *policy.Compiled, title string) error {
	rcs, err := prog.RuleCounters(len(c.Rules))
	if err != nil {
		return err
	}
	if title != "" {
		fmt.Fprintln(w, title)
	}
	t := table{align: "lllrrr"}
	t.add("rule", "kind", "outcome", "family", "packets", "bytes")
	for _, rc := range rcs {
		r := c.Rules[rc.Rule]
		t.add(r.Name, string(r.Kind), rc.Outcome.String(), rc.Family.String(), fmt.Sprint(rc.Packets), fmt.Sprint(rc.Bytes))
	}
	if len(rcs) == 0 {
		t.add("(none)")
	}
	t.write(w, "  ")
	offs, err := prog.Offenders()
	if err != nil {
		return err
	}
	fmt.Fprintln(w, "\nOffenders (sources with blocked or monitored packets on a governed port):")
	t = offenderTable(offs)
	t.write(w, "  ")
	return nil
}

// offenderTable lists offenders by source with the rule that judged each one's last
// attempt. Offender.Rule is a stable counter id (the loader's numbering of labels),
// not a rule id of the compiled policy: the rule is named by its label.
func offenderTable(offs []loader.Offender) table {
	slices.SortFunc(offs, func(a, b loader.Offender) int { return a.Source.Compare(b.Source) })
	t := table{align: "lrllr"}
	t.add("source", "packets", "rule", "last outcome", "port")
	for _, o := range offs {
		_, name := loader.SplitLabel(o.Label)
		if o.Label == "" {
			name = fmt.Sprintf("(counter id %d)", o.Rule)
		}
		t.add(o.Source.String(), fmt.Sprint(o.Count), name, o.Outcome.String(), fmt.Sprint(o.Port))
	}
	if len(offs) == 0 {
		t.add("(none)")
	}
	return t
}

// printHold tells the user how to poke the running topology by hand: attempts are the
// scenario's, relayed RelayScenario's.
func printHold(w io.Writer, top *testenv.Topology, attempts, relayed []testenv.Attempt) {
	fmt.Fprintf(w, "\nThe topology stays up until you press Ctrl-C (or send SIGTERM). Namespaces:\n\n")
	t := table{align: "lll"}
	t.add(top.Gateway.Name, "", "gateway; XDP ("+top.Mode.String()+") on "+strings.Join(gatewayIfs(top), " "))
	t.add(top.Internet.Name, joinAddrs(top.Mail.Addrs), "internet; SMTP server "+top.Mail.Hostname)
	t.add("", joinAddrs(top.Relay.Addrs), "and the ISP's smarthost "+top.Relay.Hostname)
	for _, h := range top.Hosts {
		t.add(h.NS.Name, joinAddrs(h.Addresses()), h.Role)
	}
	t.write(w, "  ")
	fmt.Fprintf(w, "\nTry it by hand, as root (bash's /dev/tcp needs nothing installed; swaks: apt-get install swaks):\n\n")
	seen := map[testenv.Outcome]bool{}
	for _, a := range attempts {
		if a.Port != testenv.PortSMTP || seen[a.Expect] || !a.Src.Is4() {
			continue
		}
		seen[a.Expect] = true
		fmt.Fprintf(w, "  ip netns exec %s bash -c 'echo > /dev/tcp/%s/25'   # %s: %s\n", a.Host.NS.Name, a.Dst, a.Host.Name, byHand[a.Expect])
	}
	for _, a := range attempts {
		if a.Port == testenv.PortSMTP && a.Expect == testenv.Delivered && a.Src.Is4() {
			fmt.Fprintf(w, "  ip netns exec %s swaks --server %s --port 25 --from you@example.net --to postmaster@example.net\n", a.Host.NS.Name, a.Dst)
			break
		}
	}
	for _, a := range relayed {
		if a.Server == top.Relay && a.Expect == testenv.Delivered && a.Src.Is4() {
			fmt.Fprintf(w, "  ip netns exec %s swaks --server %s --port 25 --from you@example.net --to postmaster@example.net   # %s, through %s\n",
				a.Host.NS.Name, a.Dst, a.Host.Name, a.Server.Hostname)
			break
		}
	}
	for _, a := range attempts {
		if a.Port == testenv.PortSMTP && a.Expect != testenv.Delivered {
			ns := a.Host.NS.Name
			fmt.Fprintf(w, "  ip netns exec %s swaks --server %s --port 587 --tls --auth PLAIN --auth-user %s --auth-password %s --to postmaster@example.net\n",
				ns, a.Dst, testenv.MailUser, testenv.MailPassword)
			fmt.Fprintf(w, "  ip netns exec %s swaks --server %s --port 465 --tlsc --auth PLAIN --auth-user %s --auth-password %s --to postmaster@example.net\n",
				ns, a.Dst, testenv.MailUser, testenv.MailPassword)
			break
		}
	}
	fmt.Fprintln(w, "\nThe counters are printed again when you stop the demo.")
}

// byHand says what a bare connection to port 25 does, by expected outcome.
var byHand = map[testenv.Outcome]string{
	testenv.Refused:   "refused at once (reset)",
	testenv.TimedOut:  "hangs: dropped (Ctrl-C it)",
	testenv.Delivered: "connects",
}

func gatewayIfs(top *testenv.Topology) []string {
	var out []string
	for _, h := range top.Hosts {
		out = append(out, h.GatewayIf)
	}
	return out
}

func joinAddrs(as []netip.Addr) string {
	var s []string
	for _, a := range as {
		s = append(s, a.String())
	}
	return strings.Join(s, " ")
}
