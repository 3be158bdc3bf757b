package testenv_test

import (
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/portcullis/portcullis/internal/testutil"
	"github.com/portcullis/portcullis/testenv"
)

// TestMain fails the run if any namespace of this process outlives the tests.
func TestMain(m *testing.M) {
	code := m.Run()
	if left := ours(); len(left) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: namespaces left behind: %v\n", left)
		code = 1
	}
	os.Exit(code)
}

// ours lists the named namespaces this test process created and has not removed.
func ours() []string {
	ents, _ := os.ReadDir("/run/netns")
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), fmt.Sprintf("pcx-%d-", os.Getpid())) {
			out = append(out, e.Name())
		}
	}
	return out
}

// TestTeardown: Close removes every namespace, twice is harmless, and a start that
// fails half-way leaves nothing behind. Not parallel: it counts this process's
// namespaces.
func TestTeardown(t *testing.T) {
	testutil.RequireRoot(t)
	if left := ours(); len(left) > 0 {
		t.Fatalf("namespaces before the test: %v", left)
	}
	top, err := testenv.New(testenv.Options{Mode: testenv.Generic})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(ours()); n != len(testenv.DefaultHosts)+2 {
		t.Errorf("%d namespaces, want %d", n, len(testenv.DefaultHosts)+2)
	}
	if err := top.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := top.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if left := ours(); len(left) > 0 {
		t.Errorf("left after Close: %v", left)
	}

	// The third host fails (its interface name would be too long) after the gateway,
	// the internet and two hosts exist.
	hosts := append(slices.Clone(testenv.DefaultHosts[:2]), testenv.HostSpec{Name: "a-name-far-too-long-for-an-interface", V4: netip.MustParseAddr("100.64.9.9")})
	if top, err := testenv.New(testenv.Options{Hosts: hosts}); err == nil {
		top.Close()
		t.Fatal("New with a bad host succeeded")
	} else {
		t.Logf("failed start, as intended: %v", err)
	}
	if left := ours(); len(left) > 0 {
		t.Errorf("left after a failed start: %v", left)
	}
}

// Only documentation prefixes, the shared address space, link-local and loopback.
var allowed = []netip.Prefix{
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("192.0.2.0/24"),
	netip.MustParsePrefix("198.51.100.0/24"),
	netip.MustParsePrefix("203.0.113.0/24"),
	netip.MustParsePrefix("2001:db8::/32"),
	netip.MustParsePrefix("fe80::/10"),
	netip.MustParsePrefix("ff00::/8"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("::1/128"),
}

func isAllowed(a netip.Addr) bool {
	return slices.ContainsFunc(allowed, func(p netip.Prefix) bool { return p.Contains(a.Unmap()) })
}

// TestIsolation (with the optional wholesale host too): each namespace holds exactly the
// interfaces of the design, and every address and route uses documentation prefixes or
// 100.64.0.0/10: nothing leads to the host's own network.
func TestIsolation(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	top, err := testenv.New(testenv.Options{Mode: testenv.Generic, Hosts: append(slices.Clone(testenv.DefaultHosts), testenv.WholesaleHost)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { top.Close() })
	want := map[string][]string{top.Gateway.Name: {"lo", "uplink0"}, top.Internet.Name: {"eth0", "lo"}}
	for _, h := range top.Hosts {
		want[h.NS.Name] = []string{"eth0", "lo"}
		want[top.Gateway.Name] = append(want[top.Gateway.Name], h.GatewayIf)
	}
	for _, ns := range top.Namespaces() {
		err := ns.Do(func() error {
			links, err := netlink.LinkList()
			if err != nil {
				return err
			}
			var names []string
			for _, l := range links {
				names = append(names, l.Attrs().Name)
			}
			slices.Sort(names)
			w := slices.Sorted(slices.Values(want[ns.Name]))
			if !slices.Equal(names, w) {
				t.Errorf("%s: interfaces %v, want %v", ns.Name, names, w)
			}
			if err := checkAddresses(t, ns.Name); err != nil {
				return err
			}
			routes, err := netlink.RouteList(nil, netlink.FAMILY_ALL)
			if err != nil {
				return err
			}
			for _, r := range routes {
				var check []netip.Addr
				if r.Dst != nil {
					if ones, _ := r.Dst.Mask.Size(); ones > 0 { // a default route is judged by its gateway
						d, _ := netip.AddrFromSlice(r.Dst.IP)
						check = append(check, d)
					}
				}
				if r.Gw != nil {
					g, _ := netip.AddrFromSlice(r.Gw)
					check = append(check, g)
				}
				for _, a := range check {
					if !isAllowed(a) {
						t.Errorf("%s: route %s leaves the documentation prefixes", ns.Name, r)
					}
				}
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s: %v", ns.Name, err)
		}
	}
}

// checkAddresses fails t for every address of the current namespace (name) outside
// the documentation prefixes. Call it inside Namespace.Do.
func checkAddresses(t *testing.T, name string) error {
	t.Helper()
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return err
	}
	for _, a := range addrs {
		ip, _ := netip.AddrFromSlice(a.IP)
		if !isAllowed(ip) {
			t.Errorf("%s: address %s outside the documentation prefixes", name, a.IPNet)
		}
	}
	return nil
}
