package testenv

import (
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/portcullis/portcullis/model"
	"github.com/portcullis/portcullis/policy"
)

// Expect returns what a client should see when it sends mail as q asks (from q.Src to
// q.Dst on q.Port, arriving at the gateway on q.Interface) under policy c at now, with
// the policy's explanation: pass and monitor deliver, reset is refused at once, drop
// times out.
func Expect(c *policy.Compiled, q policy.Query, now time.Time) (Outcome, policy.Explanation) {
	ex := c.Explain(q, now)
	switch ex.Verdict {
	case model.Reset:
		return Refused, ex
	case model.Drop:
		return TimedOut, ex
	}
	return Delivered, ex
}

// Attempt is one SMTP attempt of a scenario: what the policy says and what happened.
type Attempt struct {
	Host   *Host
	Src    netip.Addr
	Server *MailServer // the server it is sent to
	Dst    netip.Addr  // Server's address in Src's family
	Port   uint16
	Expect Outcome
	Why    policy.Explanation
	Got    Outcome
	Err    error
	Took   time.Duration // until the client knew the outcome
}

// OK reports whether the attempt ended as the policy says.
func (a Attempt) OK() bool { return a.Got == a.Expect }

// Send sends one fresh message from h's address src to the MX (mx.portcullis.test) on
// port; see SendTo.
func (t *Topology) Send(h *Host, src netip.Addr, port uint16, dialTimeout time.Duration) (Outcome, error, time.Duration) {
	return t.SendTo(h, src, t.Mail.Addr(src), port, dialTimeout)
}

// SendTo sends one fresh message from h's address src to the mail server at dst on port
// and returns the outcome. Delivered means that server (not just any) recorded the
// message byte for byte from src; a session that completed without that is Failed.
func (t *Topology) SendTo(h *Host, src, dst netip.Addr, port uint16, dialTimeout time.Duration) (Outcome, error, time.Duration) {
	srv := t.Server(dst)
	if srv == nil {
		return Failed, fmt.Errorf("no mail server of the topology listens on %s", dst), 0
	}
	m := NewMail(fmt.Sprintf("%s@%s.example.net", h.Name, h.Name), fmt.Sprintf("portcullis test from %s to %s port %d", src, srv.Hostname, port))
	start := time.Now()
	err := SendMail(h.NS, srv, dst, port, m, dialTimeout)
	took := time.Since(start)
	out := Classify(err)
	if out == Delivered && !srv.Received(m, src, port) {
		return Failed, fmt.Errorf("the session completed but %s holds no byte-identical copy from %s", srv.Hostname, src), took
	}
	return out, err, took
}

// Plan lists attempts from each address of each of hosts to each of servers (its
// address in that family) on each of ports, in that order, with the outcome policy c
// expects at now.
func (t *Topology) Plan(c *policy.Compiled, now time.Time, hosts []*Host, servers []*MailServer, ports []uint16) []Attempt {
	var out []Attempt
	for _, h := range hosts {
		for _, src := range h.Addresses() {
			for _, srv := range servers {
				dst := srv.Addr(src)
				if !dst.IsValid() {
					continue
				}
				for _, port := range ports {
					exp, why := Expect(c, policy.Query{Src: src, Dst: dst, Port: port, Interface: h.GatewayIf}, now)
					out = append(out, Attempt{Host: h, Src: src, Server: srv, Dst: dst, Port: port, Expect: exp, Why: why})
				}
			}
		}
	}
	return out
}

// Scenario lists the standard attempts: every host, each of its addresses, each mail
// port, to the MX, with the outcome policy c expects.
func (t *Topology) Scenario(c *policy.Compiled, now time.Time) []Attempt {
	return t.Plan(c, now, t.Hosts, []*MailServer{t.Mail}, Ports)
}

// RelayHost is the host RelayScenario sends from: a dynamic subscriber.
const RelayHost = "dsl"

// RelayScenario lists port-25 attempts from the dsl host (RelayHost), each of its
// addresses, to the MX and then to the ISP's smarthost: under a policy with a relay
// for smtp.isp.test, refused towards the MX and delivered through the relay. It is
// empty if the topology has no such host.
func (t *Topology) RelayScenario(c *policy.Compiled, now time.Time) []Attempt {
	h := t.Host(RelayHost)
	if h == nil {
		return nil
	}
	return t.Plan(c, now, []*Host{h}, []*MailServer{t.Mail, t.Relay}, []uint16{PortSMTP})
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
				a.Got, a.Err, a.Took = t.SendTo(a.Host, a.Src, a.Dst, a.Port, dialTimeout)
			}
		}()
	}
	wg.Wait()
}
