package testenv

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Mode is how the XDP program is attached to the gateway's subscriber-facing interfaces.
type Mode int

const (
	// Native attaches in the driver (veth's own XDP path), as on a real edge router.
	// Each subscriber end of a veth pair gets a pass-through XDP program too: veth only
	// delivers an XDP_TX frame (the RST of the reset verdict) when its peer has XDP.
	Native Mode = iota
	// Generic attaches in the kernel's generic (skb) XDP path, which works on any
	// interface; the fallback for drivers without XDP support.
	Generic
)

func (m Mode) String() string {
	if m == Generic {
		return "generic"
	}
	return "native"
}

// ParseMode reads "native" or "generic".
func ParseMode(s string) (Mode, error) {
	switch s {
	case "native":
		return Native, nil
	case "generic":
		return Generic, nil
	}
	return 0, fmt.Errorf("unknown XDP mode %q: use native or generic", s)
}

// HostSpec describes one subscriber host: a namespace with one interface towards the
// gateway, optionally with 802.1Q-tagged frames on that link (see vlan.go).
type HostSpec struct {
	Name string     // short name, also the namespace role ("dsl", "mobile", ...)
	Role string     // what the host stands for, for people
	V4   netip.Addr // its IPv4 address (a /32 on its interface)
	V6   netip.Addr // its IPv6 address (a /128 on its interface)
	VLAN uint16     // 802.1Q VLAN id of the frames between host and gateway; 0 for untagged
}

// Addresses returns the host's addresses, IPv4 first.
func (h HostSpec) Addresses() []netip.Addr {
	var out []netip.Addr
	for _, a := range []netip.Addr{h.V4, h.V6} {
		if a.IsValid() {
			out = append(out, a)
		}
	}
	return out
}

// DefaultHosts is the subscriber population of the standard topology. The addresses
// are chosen to exercise every entry kind of examples/policy.yaml: the two dynamic
// pools (reset, drop), the monitored hotspot pool, business space, a registered mail
// server inside a dynamic pool (exemption) and a quarantined business host.
var DefaultHosts = []HostSpec{
	{Name: "dsl", Role: "DSL subscriber, dynamic pool (reset range)",
		V4: netip.MustParseAddr("100.64.1.10"), V6: netip.MustParseAddr("2001:db8:1000:1::10")},
	{Name: "dsl-vlan", Role: "DSL subscriber on VLAN 102, dynamic pool (reset range)",
		V4: netip.MustParseAddr("100.64.2.10"), V6: netip.MustParseAddr("2001:db8:1000:2::10"), VLAN: 102},
	{Name: "mobile", Role: "mobile subscriber, CGNAT pool (drop range)",
		V4: netip.MustParseAddr("100.96.1.10"), V6: netip.MustParseAddr("2001:db8:4000:1::10")},
	{Name: "hotspot", Role: "public Wi-Fi client (monitor range; its IPv6 in no range)",
		V4: netip.MustParseAddr("100.80.1.10"), V6: netip.MustParseAddr("2001:db8:c000:1::10")},
	{Name: "business", Role: "business customer, static address",
		V4: netip.MustParseAddr("198.51.100.10"), V6: netip.MustParseAddr("2001:db8:8000:1::10")},
	{Name: "mailserver", Role: "registered mail server inside a dynamic pool (exemption)",
		V4: netip.MustParseAddr("100.64.12.25"), V6: netip.MustParseAddr("2001:db8:1000:42::25")},
	{Name: "quarantined", Role: "compromised business host (quarantine)",
		V4: netip.MustParseAddr("198.51.100.66"), V6: netip.MustParseAddr("2001:db8:8000:1::66")},
}

// WholesaleHost is a wholesale partner's host, for tests of interface scope. It is not
// in DefaultHosts. Its addresses are in the same /24 and /64 as the dsl host's, on
// another gateway interface (to-wholesale): the same space is the residential dynamic
// pool on one port and a partner's static space on the other, and only the interface
// a packet arrives on tells them apart. Under examples/policy.yaml, which scopes
// nothing, it is just another address of dsl-dynamic; that is why it is left out of
// the standard population (and out of the demo's table).
var WholesaleHost = HostSpec{Name: "wholesale", Role: "wholesale partner's static host, inside the dsl host's /24 on another interface",
	V4: netip.MustParseAddr("100.64.1.20"), V6: netip.MustParseAddr("2001:db8:1000:1::20")}

// Addresses of the fixed parts of the topology (documentation prefixes only).
var (
	// MailV4 and MailV6 are the addresses of mx.portcullis.test (MailHostname), the
	// outside world's mail server, in the internet namespace.
	MailV4 = netip.MustParseAddr("192.0.2.25")
	MailV6 = netip.MustParseAddr("2001:db8:ffff::25")
	// RelayV4 and RelayV6 are the addresses of smtp.isp.test (RelayHostname), the
	// ISP's smarthost, in the internet namespace beside the MX.
	RelayV4 = netip.MustParseAddr("192.0.2.26")
	RelayV6 = netip.MustParseAddr("2001:db8:ffff::26")

	uplinkGW4 = netip.MustParsePrefix("192.0.2.1/24")
	uplinkGW6 = netip.MustParsePrefix("2001:db8:ffff::1/64")
	mail4     = netip.PrefixFrom(MailV4, 24)
	mail6     = netip.PrefixFrom(MailV6, 64)
	relay4    = netip.PrefixFrom(RelayV4, 24)
	relay6    = netip.PrefixFrom(RelayV6, 64)
	// The gateway's address on every subscriber link (unnumbered, as on a BNG): hosts
	// reach it with a link-scope route and use it as their default gateway.
	subGW4 = netip.MustParseAddr("100.64.0.1")
	subGW6 = netip.MustParseAddr("fe80::1")
)

// Options configures New.
type Options struct {
	// Mode is how XDP is attached to the gateway's subscriber-facing interfaces.
	Mode Mode
	// XDP is the program attached to those interfaces (loader.Program.XDP()). Nil
	// builds the topology without Portcullis: everything is routed.
	XDP *ebpf.Program
	// Hosts are the subscribers; nil means DefaultHosts.
	Hosts []HostSpec
}

// Host is a subscriber host in the running topology.
type Host struct {
	HostSpec
	NS *Namespace
	// GatewayIf is the gateway's interface towards this host, where XDP is attached.
	GatewayIf string
	// GatewayIndex is GatewayIf's ifindex in the gateway namespace.
	GatewayIndex int
}

// Topology is a running test ISP: subscriber namespaces, a gateway namespace with
// Portcullis on its subscriber-facing interfaces, and an internet namespace with two
// SMTP servers, the MX the subscribers try to reach and the ISP's smarthost.
type Topology struct {
	Mode     Mode
	ID       string // unique per topology: "pcx-PID-N"
	Gateway  *Namespace
	Internet *Namespace
	Hosts    []*Host
	Mail     *MailServer // mx.portcullis.test at MailV4, MailV6
	Relay    *MailServer // smtp.isp.test at RelayV4, RelayV6

	namespaces []*Namespace
	links      []link.Link
	passProg   *ebpf.Program
}

var topologySeq atomic.Uint64

// Interface names: inside each namespace, so they only need to be unique there.
const (
	uplinkIf = "uplink0" // gateway -> internet
	hostIf   = "eth0"    // a host's (and the internet's) interface towards the gateway
)

// New builds a topology. On any failure it tears down what it built and returns the
// error; otherwise the caller must Close it (tests: t.Cleanup(func() { top.Close() })).
func New(opts Options) (_ *Topology, err error) {
	if os.Geteuid() != 0 {
		return nil, ErrNotRoot
	}
	hosts := opts.Hosts
	if hosts == nil {
		hosts = DefaultHosts
	}
	t := &Topology{Mode: opts.Mode, ID: fmt.Sprintf("%s%d-%d", namePrefix, os.Getpid(), topologySeq.Add(1))}
	defer func() {
		if err != nil {
			t.Close()
		}
	}()

	if t.Gateway, err = t.namespace("gw"); err != nil {
		return nil, err
	}
	if t.Internet, err = t.namespace("inet"); err != nil {
		return nil, err
	}
	if err := t.Gateway.sysctl("net/ipv4/ip_forward", "1"); err != nil {
		return nil, err
	}
	if err := t.Gateway.sysctl("net/ipv6/conf/all/forwarding", "1"); err != nil {
		return nil, err
	}
	if err := t.buildUplink(); err != nil {
		return nil, err
	}
	for _, spec := range hosts {
		h, err := t.buildHost(spec)
		if err != nil {
			return nil, fmt.Errorf("subscriber %s: %w", spec.Name, err)
		}
		t.Hosts = append(t.Hosts, h)
	}
	if t.Mail, err = StartMailServer(t.Internet, MailHostname, []netip.Addr{MailV4, MailV6}); err != nil {
		return nil, err
	}
	if t.Relay, err = StartMailServer(t.Internet, RelayHostname, []netip.Addr{RelayV4, RelayV6}); err != nil {
		return nil, err
	}
	if err := t.waitReady(readyTimeout); err != nil {
		return nil, err
	}
	if opts.XDP != nil {
		if err := t.attach(opts.XDP); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// readyTimeout bounds waitReady.
const readyTimeout = 10 * time.Second

// waitReady returns once every host reaches every mail server address of each of its
// families. A fresh namespace's IPv6 addresses and neighbour tables take a moment to
// settle, and a SYN sent meanwhile is lost (retransmitted a second later, which a short
// dial timeout reads as a drop). The probe is a connection to a port nothing listens on
// (discard, 9): the internet namespace's own stack refuses it, which proves the round
// trip and leaves no connection behind whose late segments could meet the program.
// Each server address is probed, as each is a neighbour entry of its own on the
// gateway's uplink. It runs before XDP is attached.
func (t *Topology) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	type probe struct {
		h        *Host
		src, dst netip.Addr
	}
	var probes []probe
	for _, h := range t.Hosts {
		for _, src := range h.Addresses() {
			for _, s := range t.Servers() {
				if dst := s.Addr(src); dst.IsValid() {
					probes = append(probes, probe{h, src, dst})
				}
			}
		}
	}
	errc := make(chan error, len(probes))
	for _, p := range probes {
		go func() {
			addr := net.JoinHostPort(p.dst.String(), strconv.Itoa(probePort))
			for {
				c, err := p.h.NS.Dial("tcp", addr, 200*time.Millisecond)
				if c != nil {
					c.Close()
					err = fmt.Errorf("something listens on %s", addr)
				}
				if errors.Is(err, unix.ECONNREFUSED) {
					errc <- nil
					return
				}
				if time.Now().After(deadline) {
					errc <- fmt.Errorf("topology not ready: %s (%s) cannot reach %s after %v: %w", p.h.Name, p.src, addr, timeout, err)
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	var errs []error
	for range probes {
		errs = append(errs, <-errc)
	}
	return errors.Join(errs...)
}

// probePort is the closed port waitReady connects to.
const probePort = 9

// ErrNotRoot is returned by New without root: namespaces, veth and XDP need
// CAP_SYS_ADMIN, CAP_NET_ADMIN and CAP_BPF.
var ErrNotRoot = errors.New("needs root (CAP_SYS_ADMIN for network namespaces, CAP_NET_ADMIN for veth and XDP, CAP_BPF)")

// Host returns the host named name, or nil.
func (t *Topology) Host(name string) *Host {
	for _, h := range t.Hosts {
		if h.Name == name {
			return h
		}
	}
	return nil
}

// Servers returns the mail servers of the internet namespace: the MX, then the relay.
func (t *Topology) Servers() []*MailServer {
	var out []*MailServer
	for _, s := range []*MailServer{t.Mail, t.Relay} {
		if s != nil {
			out = append(out, s)
		}
	}
	return out
}

// Server returns the mail server listening on addr, or nil.
func (t *Topology) Server(addr netip.Addr) *MailServer {
	for _, s := range t.Servers() {
		if slices.Contains(s.Addrs, addr.Unmap()) {
			return s
		}
	}
	return nil
}

// Interfaces maps the name of each of the gateway's subscriber-facing interfaces (where
// Portcullis is attached: to-dsl, vlan102, ...) to its ifindex in the gateway
// namespace: what loader.Program.SetInterfaces takes for a policy that scopes entries
// to interfaces.
func (t *Topology) Interfaces() map[string]int {
	m := make(map[string]int, len(t.Hosts))
	for _, h := range t.Hosts {
		m[h.GatewayIf] = h.GatewayIndex
	}
	return m
}

// Namespaces returns every namespace of the topology, gateway and internet first.
func (t *Topology) Namespaces() []*Namespace { return t.namespaces }

func (t *Topology) namespace(role string) (*Namespace, error) {
	ns, err := newNamespace(t.ID + "-" + role)
	if err != nil {
		return nil, err
	}
	t.namespaces = append(t.namespaces, ns)
	return ns, noDAD(ns)
}

// noDAD makes addresses usable at once: no duplicate address detection in a lab.
func noDAD(ns *Namespace) error {
	for _, key := range []string{"net/ipv6/conf/all/accept_dad", "net/ipv6/conf/default/accept_dad"} {
		if err := ns.sysctl(key, "0"); err != nil {
			return err
		}
	}
	return nil
}

// veth creates a veth pair with one end (gwName) in the gateway namespace and the
// other (peerName) directly in peer: no end ever exists in the caller's namespace.
func (t *Topology) veth(gwName string, peer *Namespace, peerName string) (gw, p netlink.Link, err error) {
	return vethPair(t.Gateway, gwName, peer, peerName)
}

// vethPair creates a veth pair with one end (aName) in a and the other (bName) in b.
func vethPair(a *Namespace, aName string, b *Namespace, bName string) (la, lb netlink.Link, err error) {
	v := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: aName},
		PeerName:      bName,
		PeerNamespace: netlink.NsFd(b.handle),
	}
	if err := a.nl.LinkAdd(v); err != nil {
		return nil, nil, fmt.Errorf("creating veth pair %s/%s (needs CONFIG_VETH): %w", aName, bName, err)
	}
	if la, err = a.nl.LinkByName(aName); err != nil {
		return nil, nil, err
	}
	if lb, err = b.nl.LinkByName(bName); err != nil {
		return nil, nil, err
	}
	return la, lb, nil
}

func (t *Topology) buildUplink() error {
	gw, in, err := t.veth(uplinkIf, t.Internet, hostIf)
	if err != nil {
		return err
	}
	if err := up(t.Gateway, gw); err != nil {
		return err
	}
	if err := up(t.Internet, in); err != nil {
		return err
	}
	if err := addAddrs(t.Gateway, gw, uplinkGW4, uplinkGW6); err != nil {
		return err
	}
	if err := addAddrs(t.Internet, in, mail4, mail6, relay4, relay6); err != nil {
		return err
	}
	if err := loUp(t.Internet); err != nil {
		return err
	}
	for _, gwAddr := range []netip.Addr{uplinkGW4.Addr(), uplinkGW6.Addr()} {
		if err := t.Internet.nl.RouteAdd(&netlink.Route{LinkIndex: in.Attrs().Index, Gw: net.IP(gwAddr.AsSlice())}); err != nil {
			return fmt.Errorf("default route in %s: %w", t.Internet.Name, err)
		}
	}
	return nil
}

func (t *Topology) buildHost(spec HostSpec) (*Host, error) {
	ns, err := t.namespace(spec.Name)
	if err != nil {
		return nil, err
	}
	h := &Host{HostSpec: spec, NS: ns, GatewayIf: "to-" + spec.Name}
	if spec.VLAN != 0 {
		h.GatewayIf = fmt.Sprintf("vlan%d", spec.VLAN)
	}
	if len(h.GatewayIf) > 15 {
		return nil, fmt.Errorf("host name %q too long for an interface name", spec.Name)
	}
	gw, hl, err := t.veth(h.GatewayIf, ns, hostIf)
	if err != nil {
		return nil, err
	}
	h.GatewayIndex = gw.Attrs().Index // read through the gateway namespace's netlink socket
	if err := up(t.Gateway, gw); err != nil {
		return nil, err
	}
	if err := up(ns, hl); err != nil {
		return nil, err
	}
	if err := loUp(ns); err != nil {
		return nil, err
	}
	if spec.VLAN != 0 {
		// The frames between host and gateway carry an 802.1Q tag (see vlan.go): the
		// XDP program on the gateway's interface parses past it.
		if err := t.tagInterface(t.Gateway, h.GatewayIf, spec.VLAN); err != nil {
			return nil, err
		}
		if err := t.tagInterface(ns, hostIf, spec.VLAN); err != nil {
			return nil, err
		}
	}
	// Gateway side: its unnumbered address, and a host route to the subscriber.
	if err := addAddrs(t.Gateway, gw, netip.PrefixFrom(subGW4, 32), netip.PrefixFrom(subGW6, 64)); err != nil {
		return nil, err
	}
	// Host side: its own /32 and /128, the gateway on-link, default route through it.
	var own []netip.Prefix
	for _, a := range spec.Addresses() {
		own = append(own, netip.PrefixFrom(a, a.BitLen()))
	}
	if err := addAddrs(ns, hl, own...); err != nil {
		return nil, err
	}
	for _, a := range spec.Addresses() {
		if err := t.Gateway.nl.RouteAdd(&netlink.Route{LinkIndex: gw.Attrs().Index, Dst: ipnet(netip.PrefixFrom(a, a.BitLen())), Scope: netlink.SCOPE_LINK}); err != nil {
			return nil, fmt.Errorf("gateway route to %s: %w", a, err)
		}
	}
	if spec.V4.IsValid() {
		if err := ns.nl.RouteAdd(&netlink.Route{LinkIndex: hl.Attrs().Index, Dst: ipnet(netip.PrefixFrom(subGW4, 32)), Scope: netlink.SCOPE_LINK}); err != nil {
			return nil, fmt.Errorf("on-link route to the gateway: %w", err)
		}
	}
	for _, gwa := range []netip.Addr{subGW4, subGW6} {
		if (gwa.Is4() && !spec.V4.IsValid()) || (gwa.Is6() && !spec.V6.IsValid()) {
			continue
		}
		if err := ns.nl.RouteAdd(&netlink.Route{LinkIndex: hl.Attrs().Index, Gw: net.IP(gwa.AsSlice())}); err != nil {
			return nil, fmt.Errorf("default route via %s: %w", gwa, err)
		}
	}
	return h, nil
}

func addAddrs(ns *Namespace, l netlink.Link, prefixes ...netip.Prefix) error {
	for _, p := range prefixes {
		a := &netlink.Addr{IPNet: ipnet(p)}
		if p.Addr().Is6() {
			a.Flags = unix.IFA_F_NODAD
		}
		if err := ns.nl.AddrAdd(l, a); err != nil {
			return fmt.Errorf("adding %s to %s in %s: %w", p, l.Attrs().Name, ns.Name, err)
		}
	}
	return nil
}

func up(ns *Namespace, l netlink.Link) error {
	if err := ns.nl.LinkSetUp(l); err != nil {
		return fmt.Errorf("setting %s up in %s: %w", l.Attrs().Name, ns.Name, err)
	}
	return nil
}

func loUp(ns *Namespace) error {
	lo, err := ns.nl.LinkByName("lo")
	if err != nil {
		return err
	}
	return up(ns, lo)
}

func ipnet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// attach puts prog on every subscriber-facing interface of the gateway, through
// bpf_link (closing the link detaches). In native mode each host's end of the veth
// gets a pass-through program first.
func (t *Topology) attach(prog *ebpf.Program) error {
	flags := link.XDPGenericMode
	if t.Mode == Native {
		flags = link.XDPDriverMode
		var err error
		if t.passProg, err = ConstantXDP("pc_peer_pass", 2 /* XDP_PASS */); err != nil {
			return err
		}
		for _, h := range t.Hosts {
			if err := t.attachIn(h.NS, hostIf, t.passProg, flags); err != nil {
				return err
			}
		}
	}
	for _, h := range t.Hosts {
		if err := t.attachIn(t.Gateway, h.GatewayIf, prog, flags); err != nil {
			return err
		}
	}
	return nil
}

func (t *Topology) attachIn(ns *Namespace, ifname string, prog *ebpf.Program, flags link.XDPAttachFlags) error {
	l, err := ns.nl.LinkByName(ifname)
	if err != nil {
		return err
	}
	// The ifindex is resolved in the namespace of the calling thread.
	return ns.Do(func() error {
		xl, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: l.Attrs().Index, Flags: flags})
		if err != nil {
			return fmt.Errorf("attaching XDP (%s mode) to %s in %s: %w", t.Mode, ifname, ns.Name, err)
		}
		t.links = append(t.links, xl)
		return nil
	})
}

// Close tears everything down: the mail servers, the XDP links, the namespaces (and
// with them every interface). It is safe after a failed New and safe to call twice.
func (t *Topology) Close() error {
	var errs []error
	for _, s := range t.Servers() {
		errs = append(errs, s.Close())
	}
	t.Mail, t.Relay = nil, nil
	for _, l := range t.links {
		errs = append(errs, l.Close())
	}
	t.links = nil
	if t.passProg != nil {
		errs = append(errs, t.passProg.Close())
		t.passProg = nil
	}
	for i := len(t.namespaces) - 1; i >= 0; i-- {
		errs = append(errs, t.namespaces[i].close())
	}
	t.namespaces = nil
	return errors.Join(errs...)
}
