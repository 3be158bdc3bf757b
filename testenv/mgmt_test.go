package testenv_test

import (
	"net"
	"net/netip"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/portcullis/portcullis/internal/testutil"
	"github.com/portcullis/portcullis/testenv"
)

// TestMgmt: two members and the gateways of two ISPs on one management network. Each
// gateway reaches each member and the other gateway; its only new routes are the
// noc's and 203.0.113.0/24's, its internet's stays on its uplink; every address and
// route is a documentation prefix. Partitioned, a
// gateway reaches no member (while the other does, and its subscribers still reach
// their MX); healed, it does again. Close leaves nothing (TestMain checks).
func TestMgmt(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	m, err := testenv.NewMgmt()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	var isps []*testenv.Topology
	var routerIPs []netip.Addr
	for range 2 {
		top, err := testenv.New(testenv.Options{Mode: testenv.Generic, Hosts: []testenv.HostSpec{testenv.DefaultHosts[0]}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { top.Close() })
		a, err := m.Connect(top.Gateway)
		if err != nil {
			t.Fatal(err)
		}
		isps, routerIPs = append(isps, top), append(routerIPs, a)
	}
	if again, err := m.Connect(isps[0].Gateway); err != nil || again != routerIPs[0] {
		t.Errorf("Connect twice: %v %v, want %v", again, err, routerIPs[0])
	}
	if want := []netip.Addr{netip.MustParseAddr("203.0.113.101"), netip.MustParseAddr("203.0.113.102")}; !slices.Equal(routerIPs, want) {
		t.Errorf("router addresses %v, want %v", routerIPs, want)
	}
	var members []netip.Addr
	for _, role := range []string{"etcd1", "etcd2"} {
		ns, a, err := m.AddMember(role)
		if err != nil {
			t.Fatal(err)
		}
		members = append(members, a)
		serve(t, ns, a)
	}
	for i, top := range isps {
		serve(t, top.Gateway, routerIPs[i])
	}
	if _, _, err := m.AddMember("a-role-too-long"); err == nil {
		t.Error("AddMember with a 15-character role succeeded")
	}

	reach := func(from *testenv.Namespace, to netip.Addr) error {
		c, err := from.Dial("tcp", net.JoinHostPort(to.String(), strconv.Itoa(echoPort)), 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		b := make([]byte, 64)
		n, err := c.Read(b)
		if err != nil {
			return err
		}
		if got := string(b[:n]); got != to.String() { // serve writes the address it listens on
			t.Errorf("%s -> %s answered %q", from.Name, to, got)
		}
		return nil
	}
	for i, top := range isps {
		for _, dst := range append(slices.Clone(members), routerIPs[1-i]) {
			if err := reach(top.Gateway, dst); err != nil {
				t.Errorf("%s cannot reach %s: %v", top.Gateway.Name, dst, err)
			}
		}
		checkGatewayRoutes(t, top)
	}
	for _, ns := range m.Namespaces() {
		checkDocumentationOnly(t, ns)
	}

	if err := m.Partition(isps[0].Gateway); err != nil {
		t.Fatal(err)
	}
	for _, dst := range members {
		if err := reach(isps[0].Gateway, dst); err == nil {
			t.Errorf("partitioned, %s still reaches %s", isps[0].Gateway.Name, dst)
		}
		if err := reach(isps[1].Gateway, dst); err != nil {
			t.Errorf("with the other router partitioned, %s cannot reach %s: %v", isps[1].Gateway.Name, dst, err)
		}
	}
	for _, top := range isps {
		h := top.Host("dsl")
		if got, err, _ := top.Send(h, h.V4, testenv.PortSMTP, 2*time.Second); got != testenv.Delivered {
			t.Errorf("%s's dsl host with router 1 partitioned: %s (%v)", top.ID, got, err)
		}
	}
	if err := m.Heal(isps[0].Gateway); err != nil {
		t.Fatal(err)
	}
	for _, dst := range members {
		if err := reach(isps[0].Gateway, dst); err != nil {
			t.Errorf("healed, %s cannot reach %s: %v", isps[0].Gateway.Name, dst, err)
		}
	}
	checkGatewayRoutes(t, isps[0])
	if err := m.Partition(isps[0].Gateway); err != nil { // Close after a partition is fine too
		t.Fatal(err)
	}
}

// echoPort is where serve listens.
const echoPort = 7

// serve listens on a:echoPort in ns and writes a to every connection.
func serve(t *testing.T, ns *testenv.Namespace, a netip.Addr) {
	t.Helper()
	ln, err := ns.Listen("tcp", net.JoinHostPort(a.String(), strconv.Itoa(echoPort)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte(a.String()))
			c.Close()
		}
	}()
}

// checkGatewayRoutes: the gateway's IPv4 routes on mgmt0 are the noc's /32 and the
// management /24 through it, nothing else (no default route: a router's traffic to the
// internet, and its subscribers', never takes the management network), and the
// internet's /24 is still on uplink0.
func checkGatewayRoutes(t *testing.T, top *testenv.Topology) {
	t.Helper()
	err := top.Gateway.Do(func() error {
		routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		var onMgmt []string
		uplink := false
		for _, r := range routes {
			l, err := netlink.LinkByIndex(r.LinkIndex)
			if err != nil {
				return err
			}
			dst := "default"
			if r.Dst != nil {
				dst = r.Dst.String()
			}
			switch l.Attrs().Name {
			case "mgmt0":
				onMgmt = append(onMgmt, dst)
			case "uplink0":
				uplink = uplink || dst == "192.0.2.0/24"
			}
		}
		slices.Sort(onMgmt)
		if want := []string{"203.0.113.0/24", "203.0.113.1/32"}; !slices.Equal(onMgmt, want) {
			t.Errorf("%s: routes on mgmt0 %v, want %v", top.Gateway.Name, onMgmt, want)
		}
		if !uplink {
			t.Errorf("%s: no route to 192.0.2.0/24 on uplink0 any more", top.Gateway.Name)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// checkDocumentationOnly: every address and route in ns is in the allowed prefixes.
func checkDocumentationOnly(t *testing.T, ns *testenv.Namespace) {
	t.Helper()
	err := ns.Do(func() error {
		if err := checkAddresses(t, ns.Name); err != nil {
			return err
		}
		routes, err := netlink.RouteList(nil, netlink.FAMILY_ALL)
		if err != nil {
			return err
		}
		for _, r := range routes {
			if r.Dst == nil {
				t.Errorf("%s: a default route (%s): the management network has none", ns.Name, r)
				continue
			}
			d, _ := netip.AddrFromSlice(r.Dst.IP)
			if !isAllowed(d) {
				t.Errorf("%s: route %s leaves the documentation prefixes", ns.Name, r)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
