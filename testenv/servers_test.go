package testenv_test

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/portcullis/portcullis/internal/testutil"
	"github.com/portcullis/portcullis/testenv"
)

// TestServersAndWholesale builds the topology without Portcullis, with the optional
// wholesale host, and checks the parts that relays and interface scope rest on:
//   - the internet namespace listens on exactly the MX's and the smarthost's addresses ×
//     25/587/465, each server on its own addresses only;
//   - every host delivers to each server on each port, and each message is on the
//     server it was sent to and on no other;
//   - a client that expects the MX but reaches the smarthost's address fails (the
//     certificates name each server), so one server cannot stand in for the other;
//   - the dsl and wholesale hosts, two /32s of one /24 on two unnumbered links, are
//     each routed out of their own gateway interface, and the servers see each one's
//     own address;
//   - Interfaces names exactly the subscriber-facing interfaces with their ifindex in
//     the gateway namespace.
func TestServersAndWholesale(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	top, err := testenv.New(testenv.Options{Mode: testenv.Generic, Hosts: append(slices.Clone(testenv.DefaultHosts), testenv.WholesaleHost)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := top.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})

	// Listening sockets of the internet namespace.
	var want []string
	for _, a := range []netip.Addr{testenv.MailV4, testenv.MailV6, testenv.RelayV4, testenv.RelayV6} {
		for _, p := range testenv.Ports {
			want = append(want, netip.AddrPortFrom(a, p).String())
		}
	}
	slices.Sort(want)
	if got := listening(t, top.Internet); !slices.Equal(got, want) {
		t.Errorf("the internet namespace listens on %v, want exactly %v", got, want)
	}
	if top.Mail.Hostname != testenv.MailHostname || top.Relay.Hostname != testenv.RelayHostname ||
		top.Server(testenv.RelayV6) != top.Relay || top.Server(testenv.MailV4) != top.Mail || top.Server(netip.MustParseAddr("192.0.2.27")) != nil {
		t.Errorf("servers: mx %q, relay %q; Server(%s) = %p, relay %p", top.Mail.Hostname, top.Relay.Hostname, testenv.RelayV6, top.Server(testenv.RelayV6), top.Relay)
	}

	// Every host, both families, both servers, every port; nothing in the way.
	attempts := top.Plan(compile(t, "version: 1\n", time.Now()), time.Now(), top.Hosts, top.Servers(), testenv.Ports)
	top.Run(attempts, 5*time.Second)
	perServer := map[*testenv.MailServer]int{}
	for _, a := range attempts {
		if a.Got != testenv.Delivered || !a.OK() {
			t.Errorf("%s %s -> %s %s port %d: %s (%v), want delivered", a.Host.Name, a.Src, a.Server.Hostname, a.Dst, a.Port, a.Got, a.Err)
		}
		perServer[a.Server]++
	}
	if n := len(top.Hosts) * 2 * 3; perServer[top.Mail] != n || perServer[top.Relay] != n {
		t.Errorf("attempts per server: %v, want %d each", perServer, n)
	}
	for _, srv := range top.Servers() {
		msgs := srv.Messages()
		if len(msgs) != perServer[srv] {
			t.Errorf("%s holds %d messages, %d were sent to it", srv.Hostname, len(msgs), perServer[srv])
		}
		for _, m := range msgs {
			if !strings.Contains(string(m.Data), " to "+srv.Hostname+" port ") {
				t.Errorf("%s holds a message sent elsewhere: %q", srv.Hostname, firstLines(m.Data))
			}
		}
	}

	// The MX's name and trust anchor at the smarthost's address: the TLS check fails.
	dsl := top.Host("dsl")
	err = testenv.SendMail(dsl.NS, top.Mail, testenv.RelayV4, testenv.PortSubmissions, testenv.NewMail("x@example.net", "wrong server"), 5*time.Second)
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("a session to %s expecting %s: %v, want a certificate error", testenv.RelayV4, testenv.MailHostname, err)
	}

	// Routing inside the shared /24 and /64.
	wholesale := top.Host(testenv.WholesaleHost.Name)
	for _, h := range []*testenv.Host{dsl, wholesale} {
		for _, a := range h.Addresses() {
			if got := routeOut(t, top, a); got != h.GatewayIf {
				t.Errorf("the gateway routes %s (%s) out of %s, want %s", a, h.Name, got, h.GatewayIf)
			}
		}
	}
	if wholesale.GatewayIf != "to-wholesale" || dsl.GatewayIf != "to-dsl" {
		t.Errorf("gateway interfaces %q and %q, want to-dsl and to-wholesale", dsl.GatewayIf, wholesale.GatewayIf)
	}
	if p := netip.PrefixFrom(dsl.V4, 24).Masked(); !p.Contains(wholesale.V4) || !netip.PrefixFrom(dsl.V6, 64).Masked().Contains(wholesale.V6) {
		t.Errorf("dsl %v and wholesale %v are not in one /24 and /64", dsl.Addresses(), wholesale.Addresses())
	}

	// Interfaces against the gateway namespace's own view.
	links := map[string]int{}
	err = top.Gateway.Do(func() error {
		ls, err := netlink.LinkList()
		for _, l := range ls {
			if n := l.Attrs().Name; n != "lo" && n != "uplink0" {
				links[n] = l.Attrs().Index
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := top.Interfaces(); fmt.Sprint(got) != fmt.Sprint(links) || len(got) != len(top.Hosts) || got["to-wholesale"] == got["to-dsl"] {
		t.Errorf("Interfaces() = %v, the gateway namespace has %v", got, links)
	}
}

// listening returns the TCP sockets in LISTEN state in ns, as "addr:port", sorted.
// /proc/net follows the process's main thread, hence /proc/thread-self/net.
func listening(t testing.TB, ns *testenv.Namespace) []string {
	t.Helper()
	var out []string
	err := ns.Do(func() error {
		for _, f := range []string{"tcp", "tcp6"} {
			b, err := os.ReadFile("/proc/thread-self/net/" + f)
			if err != nil {
				return err
			}
			for _, line := range strings.Split(string(b), "\n")[1:] {
				fs := strings.Fields(line)
				if len(fs) < 4 || fs[3] != "0A" { // TCP_LISTEN
					continue
				}
				ap, err := procAddrPort(fs[1])
				if err != nil {
					return fmt.Errorf("%s: %q: %w", f, line, err)
				}
				out = append(out, ap.String())
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// procAddrPort reads /proc/net/tcp's "0100007F:0019": the address as 32-bit words in
// host (little-endian) order, the port in hex.
func procAddrPort(s string) (netip.AddrPort, error) {
	a, p, ok := strings.Cut(s, ":")
	raw, err := hex.DecodeString(a)
	if !ok || err != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.AddrPort{}, fmt.Errorf("bad address %q", s)
	}
	for i := 0; i < len(raw); i += 4 {
		binary.BigEndian.PutUint32(raw[i:], binary.LittleEndian.Uint32(raw[i:]))
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return netip.AddrPort{}, err
	}
	addr, _ := netip.AddrFromSlice(raw)
	return netip.AddrPortFrom(addr.Unmap(), uint16(port)), nil
}

// routeOut returns the gateway interface its routing table sends dst out of.
func routeOut(t testing.TB, top *testenv.Topology, dst netip.Addr) string {
	t.Helper()
	var name string
	err := top.Gateway.Do(func() error {
		rs, err := netlink.RouteGet(net.IP(dst.AsSlice()))
		if err != nil {
			return err
		}
		if len(rs) == 0 {
			return fmt.Errorf("no route to %s", dst)
		}
		l, err := netlink.LinkByIndex(rs[0].LinkIndex)
		if err != nil {
			return err
		}
		name = l.Attrs().Name
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return name
}

func firstLines(b []byte) string {
	s := string(b)
	if i := strings.Index(s, "\r\n\r\n"); i >= 0 {
		s = s[:i]
	}
	return s
}
