package testenv

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"

	"github.com/vishvananda/netlink"
)

// The management network (mgmt.go): what joins a fleet's routers to its etcd members,
// apart from the subscribers' traffic. A "noc" namespace routes 203.0.113.0/24 between
// leaves: one namespace per etcd member (AddMember) and the gateway namespace of each
// test ISP (Connect). Every link is unnumbered, as on the subscriber side: the noc has
// 203.0.113.1/32 on each of its interfaces and a host route per leaf; a leaf has its
// own /32, an on-link route to 203.0.113.1 and a route to 203.0.113.0/24 through it,
// and nothing else: no default route, so a gateway's traffic towards the internet (its
// subscribers' and its own) never takes the management network.
//
//	member namespaces                noc namespace              routers (Topology.Gateway)
//	─────────────────                ─────────────              ──────────────────────────
//	etcd1  203.0.113.11  eth0 ── to-etcd1 ┐                ┌─ to-r1 ── mgmt0  203.0.113.101
//	etcd2  203.0.113.12  eth0 ── to-etcd2 ┤ 203.0.113.1/32 ├─ to-r2 ── mgmt0  203.0.113.102
//	etcd3  203.0.113.13  eth0 ── to-etcd3 ┘  on each link  └─ ...
var (
	// MgmtNet is the management network's prefix.
	MgmtNet = netip.MustParsePrefix("203.0.113.0/24")
	// MgmtNOC is the noc's address on every one of its links.
	MgmtNOC = netip.MustParseAddr("203.0.113.1")
)

// First host numbers in MgmtNet of etcd members and of routers.
const (
	mgmtFirstMember = 11
	mgmtFirstRouter = 101
	mgmtLastRouter  = 254
)

// mgmtIf is a leaf's interface towards the noc (a router's, beside its uplink0 and to-*).
const mgmtIf = "mgmt0"

// Mgmt is a running management network. Its methods are safe for concurrent use.
type Mgmt struct {
	ID  string // "pcx-PID-N", unique like a Topology's
	NOC *Namespace

	mu         sync.Mutex
	namespaces []*Namespace // the noc first, then the members'
	members    int
	routers    map[*Namespace]*mgmtLeaf
}

// mgmtLeaf is one leaf's side of its link to the noc.
type mgmtLeaf struct {
	ns    *Namespace
	ifc   string // its interface towards the noc
	addr  netip.Addr
	nocIf string // the noc's interface towards it
}

// NewMgmt creates the noc namespace, forwarding IPv4 and with no links yet. The
// caller must Close it.
func NewMgmt() (_ *Mgmt, err error) {
	if os.Geteuid() != 0 {
		return nil, ErrNotRoot
	}
	m := &Mgmt{ID: fmt.Sprintf("%s%d-%d", namePrefix, os.Getpid(), topologySeq.Add(1)), routers: map[*Namespace]*mgmtLeaf{}}
	defer func() {
		if err != nil {
			m.Close()
		}
	}()
	if m.NOC, err = m.namespace("noc"); err != nil {
		return nil, err
	}
	if err := m.NOC.sysctl("net/ipv4/ip_forward", "1"); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *Mgmt) namespace(role string) (*Namespace, error) {
	ns, err := newNamespace(m.ID + "-" + role)
	if err != nil {
		return nil, err
	}
	m.namespaces = append(m.namespaces, ns)
	if err := loUp(ns); err != nil {
		return nil, err
	}
	return ns, noDAD(ns)
}

// AddMember creates the namespace "pcx-PID-N-ROLE" (role: "etcd1", ...; at most 12
// characters, the noc's interface is "to-ROLE") joined to the noc, and returns it
// with its address (203.0.113.11, .12, ... in order of creation), where a server in it
// listens to be reached from every leaf.
func (m *Mgmt) AddMember(role string) (*Namespace, netip.Addr, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len("to-"+role) > 15 {
		return nil, netip.Addr{}, fmt.Errorf("member role %q too long for an interface name", role)
	}
	if mgmtFirstMember+m.members >= mgmtFirstRouter {
		return nil, netip.Addr{}, errors.New("no member addresses left in the management network")
	}
	ns, err := m.namespace(role)
	if err != nil {
		return nil, netip.Addr{}, err
	}
	addr := mgmtHost(mgmtFirstMember + m.members)
	m.members++
	leaf := &mgmtLeaf{ns: ns, ifc: hostIf, addr: addr, nocIf: "to-" + role}
	if err := m.link(leaf); err != nil {
		return nil, netip.Addr{}, fmt.Errorf("member %s: %w", role, err)
	}
	return ns, addr, nil
}

// Connect gives gw (a Topology's Gateway) an interface mgmt0 towards the noc, with an
// address of its own (203.0.113.101, .102, ... in order of connection), which it
// returns, and a route to MgmtNet only: the gateway's routes towards its own internet
// stay as they were. Connecting it again returns the same address. The noc's interface is to-rK (K: 1 for the first router connected).
func (m *Mgmt) Connect(gw *Namespace) (netip.Addr, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if l, ok := m.routers[gw]; ok {
		return l.addr, nil
	}
	n := len(m.routers) + 1
	if mgmtFirstRouter+n-1 > mgmtLastRouter {
		return netip.Addr{}, errors.New("no router addresses left in the management network")
	}
	leaf := &mgmtLeaf{ns: gw, ifc: mgmtIf, addr: mgmtHost(mgmtFirstRouter + n - 1), nocIf: fmt.Sprintf("to-r%d", n)}
	if err := m.link(leaf); err != nil {
		return netip.Addr{}, fmt.Errorf("router %s: %w", gw.Name, err)
	}
	m.routers[gw] = leaf
	return leaf.addr, nil
}

// Partition cuts gw off the management network: its mgmt0 goes down (the kernel
// drops the routes through it), so connections to the etcd members fail as a cut
// cable would make them fail, while its subscribers and internet stay as they were.
func (m *Mgmt) Partition(gw *Namespace) error {
	leaf, l, err := m.routerLink(gw)
	if err != nil {
		return err
	}
	if err := gw.nl.LinkSetDown(l); err != nil {
		return fmt.Errorf("setting %s down in %s: %w", leaf.ifc, gw.Name, err)
	}
	return nil
}

// Heal undoes Partition: mgmt0 up again, and its routes back.
func (m *Mgmt) Heal(gw *Namespace) error {
	leaf, l, err := m.routerLink(gw)
	if err != nil {
		return err
	}
	if err := up(gw, l); err != nil {
		return err
	}
	return leafRoutes(leaf, l)
}

// routerLink is gw's leaf of the management network and its mgmt0.
func (m *Mgmt) routerLink(gw *Namespace) (*mgmtLeaf, netlink.Link, error) {
	m.mu.Lock()
	leaf, ok := m.routers[gw]
	m.mu.Unlock()
	if !ok {
		return nil, nil, fmt.Errorf("%s is not connected to the management network %s", gw.Name, m.ID)
	}
	l, err := gw.nl.LinkByName(leaf.ifc)
	return leaf, l, err
}

// mgmtHost is 203.0.113.n.
func mgmtHost(n int) netip.Addr {
	a := MgmtNet.Addr().As4()
	a[3] = byte(n)
	return netip.AddrFrom4(a)
}

// link wires leaf to the noc: the veth pair, the noc's unnumbered address and host
// route, the leaf's address and routes.
func (m *Mgmt) link(leaf *mgmtLeaf) error {
	nl, ll, err := vethPair(m.NOC, leaf.nocIf, leaf.ns, leaf.ifc)
	if err != nil {
		return err
	}
	if err := up(m.NOC, nl); err != nil {
		return err
	}
	if err := up(leaf.ns, ll); err != nil {
		return err
	}
	if err := addAddrs(m.NOC, nl, netip.PrefixFrom(MgmtNOC, 32)); err != nil {
		return err
	}
	if err := m.NOC.nl.RouteAdd(&netlink.Route{LinkIndex: nl.Attrs().Index, Dst: ipnet(netip.PrefixFrom(leaf.addr, 32)), Scope: netlink.SCOPE_LINK}); err != nil {
		return fmt.Errorf("noc route to %s: %w", leaf.addr, err)
	}
	if err := addAddrs(leaf.ns, ll, netip.PrefixFrom(leaf.addr, 32)); err != nil {
		return err
	}
	return leafRoutes(leaf, ll)
}

// leafRoutes (re)installs a leaf's two routes: the noc on-link, MgmtNet through it
// from the leaf's own address.
func leafRoutes(leaf *mgmtLeaf, l netlink.Link) error {
	routes := []*netlink.Route{
		{LinkIndex: l.Attrs().Index, Dst: ipnet(netip.PrefixFrom(MgmtNOC, 32)), Scope: netlink.SCOPE_LINK, Src: net.IP(leaf.addr.AsSlice())},
		{LinkIndex: l.Attrs().Index, Dst: ipnet(MgmtNet), Gw: net.IP(MgmtNOC.AsSlice()), Src: net.IP(leaf.addr.AsSlice())},
	}
	for _, r := range routes {
		if err := leaf.ns.nl.RouteReplace(r); err != nil {
			return fmt.Errorf("route %s in %s: %w", r.Dst, leaf.ns.Name, err)
		}
	}
	return nil
}

// Namespaces returns the namespaces the management network created: the noc, then the
// members'. (The routers' belong to their topologies.)
func (m *Mgmt) Namespaces() []*Namespace {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]*Namespace(nil), m.namespaces...)
}

// Close deletes the noc and the members' namespaces, and with them every link to the
// routers (a router's mgmt0 goes with its peer). Processes still running in a member's
// namespace keep it alive until they exit: stop them first. Safe to call twice.
func (m *Mgmt) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	for i := len(m.namespaces) - 1; i >= 0; i-- {
		errs = append(errs, m.namespaces[i].close())
	}
	m.namespaces = nil
	m.routers = map[*Namespace]*mgmtLeaf{}
	return errors.Join(errs...)
}
