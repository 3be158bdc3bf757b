package demo

import (
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/portcullis/portcullis/loader"
	"github.com/portcullis/portcullis/model"
	"github.com/portcullis/portcullis/policy"
	"github.com/portcullis/portcullis/testenv"
)

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

// offenderTable lists offenders by source with where their last attempt came from at
// layer 2 (MAC, VLAN ids outer.inner, PPPoE session; "-" for none) and the rule that
// judged it. Offender.Rule is a stable counter id (the loader's numbering of labels),
// not a rule id of the compiled policy: the rule is named by its label.
func offenderTable(offs []loader.Offender) table {
	slices.SortFunc(offs, func(a, b loader.Offender) int { return a.Source.Compare(b.Source) })
	t := table{align: "lrlllllr"}
	t.add("source", "packets", "mac", "vlan", "pppoe", "rule", "last outcome", "port")
	for _, o := range offs {
		_, name := loader.SplitLabel(o.Label)
		if o.Label == "" {
			name = fmt.Sprintf("(counter id %d)", o.Rule)
		}
		mac, vlan, pppoe := "-", "-", "-"
		if o.MAC != nil {
			mac = o.MAC.String()
		}
		if v := o.VLAN(); v != "" {
			vlan = v
		}
		if o.PPPoESession != 0 {
			pppoe = fmt.Sprint(o.PPPoESession)
		}
		t.add(o.Source.String(), fmt.Sprint(o.Count), mac, vlan, pppoe, name, o.Outcome.String(), fmt.Sprint(o.Port))
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
