package testenv

import (
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/portcullis/portcullis/policy"
)

// Expect returns what a client at src should see when it sends mail to port under
// policy c at now, with the policy's explanation: pass and monitor deliver, reset is
// refused at once, drop times out.
func Expect(c *policy.Compiled, src netip.Addr, port uint16, now time.Time) (Outcome, policy.Explanation) {
	ex := c.Explain(policy.Query{Src: src, Port: port}, now)
	switch ex.Verdict {
	case policy.Reset:
		return Refused, ex
	case policy.Drop:
		return TimedOut, ex
	}
	return Delivered, ex
}

// Attempt is one SMTP attempt of a scenario: what the policy says and what happened.
type Attempt struct {
	Host   *Host
	Src    netip.Addr
	Dst    netip.Addr
	Port   uint16
	Expect Outcome
	Why    policy.Explanation
	Got    Outcome
	Err    error
	Took   time.Duration // until the client knew the outcome
}

// OK reports whether the attempt ended as the policy says.
func (a Attempt) OK() bool { return a.Got == a.Expect }

// Mail server address for src's family.
func mailAddr(src netip.Addr) netip.Addr {
	if src.Is4() {
		return MailV4
	}
	return MailV6
}

// Send sends one fresh message from h's address src to the mail server on port and
// returns the outcome. Delivered means the server recorded the message byte for byte
// from src; a session that completed without that is Failed.
func (t *Topology) Send(h *Host, src netip.Addr, port uint16, dialTimeout time.Duration) (Outcome, error, time.Duration) {
	m := NewMail(fmt.Sprintf("%s@%s.example.net", h.Name, h.Name), fmt.Sprintf("portcullis test from %s to port %d", src, port))
	start := time.Now()
	err := SendMail(h.NS, mailAddr(src), port, m, t.Mail.Roots, dialTimeout)
	took := time.Since(start)
	out := Classify(err)
	if out == Delivered && !t.Mail.Received(m, src, port) {
		return Failed, fmt.Errorf("the session completed but the server holds no byte-identical copy from %s", src), took
	}
	return out, err, took
}

// Scenario lists the standard attempts: every host, each of its addresses, each mail
// port, with the outcome policy c expects.
func (t *Topology) Scenario(c *policy.Compiled, now time.Time) []Attempt {
	var out []Attempt
	for _, h := range t.Hosts {
		for _, src := range h.Addresses() {
			for _, port := range Ports {
				exp, why := Expect(c, src, port, now)
				out = append(out, Attempt{Host: h, Src: src, Dst: mailAddr(src), Port: port, Expect: exp, Why: why})
			}
		}
	}
	return out
}

// Run carries out the attempts: hosts in parallel, each host's attempts in order. It
// fills Got, Err and Took.
func (t *Topology) Run(attempts []Attempt, dialTimeout time.Duration) {
	byHost := map[*Host][]int{}
	for i, a := range attempts {
		byHost[a.Host] = append(byHost[a.Host], i)
	}
	var wg sync.WaitGroup
	for _, idx := range byHost {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, i := range idx {
				a := &attempts[i]
				a.Got, a.Err, a.Took = t.Send(a.Host, a.Src, a.Port, dialTimeout)
			}
		}()
	}
	wg.Wait()
}
