package testenv

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
)

// Line is a router between a traffic source and a sink, for measuring what a filter on
// the router costs real packets (see internal/vethbench):
//
//	gen: eth0 198.51.100.2 ── sub0 198.51.100.1  router  up0 192.0.2.1 ── eth0 192.0.2.2: sink
//	(frames are written            IPv4 forwarding:              (XDP_DROP in native mode
//	 raw on eth0)                  100.64.0.0/10 via gen,         on eth0: a forwarded
//	                               203.0.113.0/24 via the sink    packet costs the router
//	                                                              its transmission only)
//
// The router's neighbours are permanent entries: the sink answers no ARP, and the
// traffic's sources (anywhere in 100.64.0.0/10) are routed through gen's address, so
// nothing a filter sends back (an ICMP error, say) waits for neighbour discovery. No
// namespace has a default route; every address is a documentation prefix. Close removes
// everything, also after a failed NewLine.
type Line struct {
	ID                  string // "pcx-PID-N", the namespaces' common prefix
	Gen, Router, Sink   *Namespace
	SubMAC              net.HardwareAddr // the router's sub0, where frames from gen arrive
	GenMAC              net.HardwareAddr // gen's eth0
	SubIndex, UpIndex   int              // ifindexes in the router namespace
	GenIndex, SinkIndex int              // eth0's ifindex in gen and in the sink

	mu    sync.Mutex
	links []link.Link
	drop  *ebpf.Program
}

// Interface names of a Line, each inside its own namespace.
const (
	LineGenIf = "eth0" // gen's interface, and the sink's
	LineSubIf = "sub0" // the router's subscriber-facing interface
	LineUpIf  = "up0"  // the router's upstream interface
)

// Addresses of a Line (documentation prefixes only).
var (
	lineSubGW  = netip.MustParsePrefix("198.51.100.1/24")
	lineGen    = netip.MustParsePrefix("198.51.100.2/24")
	lineUpGW   = netip.MustParsePrefix("192.0.2.1/24")
	lineSink   = netip.MustParsePrefix("192.0.2.2/24")
	lineDstNet = netip.MustParsePrefix("203.0.113.0/24")
	lineSrcNet = netip.MustParsePrefix("100.64.0.0/10")
)

// NewLine builds a Line. The caller must Close it.
func NewLine() (_ *Line, err error) {
	if os.Geteuid() != 0 {
		return nil, ErrNotRoot
	}
	l := &Line{ID: fmt.Sprintf("%s%d-%d", namePrefix, os.Getpid(), topologySeq.Add(1))}
	defer func() {
		if err != nil {
			l.Close()
		}
	}()
	for _, p := range []struct {
		ns   **Namespace
		role string
	}{{&l.Gen, "gen"}, {&l.Router, "router"}, {&l.Sink, "sink"}} {
		if *p.ns, err = newNamespace(l.ID + "-" + p.role); err != nil {
			return nil, err
		}
		if err := loUp(*p.ns); err != nil {
			return nil, err
		}
	}
	if err := noDAD(l.Router); err != nil {
		return nil, err
	}
	// IPv4 settings are copied from the host's namespace into new ones: a host with
	// rp_filter on would drop the traffic, whose sources are routed back through gen
	// but arrive from addresses no route on sub0 names exactly.
	for _, kv := range [][2]string{
		{"net/ipv4/ip_forward", "1"},
		{"net/ipv4/conf/all/rp_filter", "0"},
		{"net/ipv4/conf/default/rp_filter", "0"},
	} {
		if err := l.Router.sysctl(kv[0], kv[1]); err != nil {
			return nil, err
		}
	}
	sub, gen, err := vethPair(l.Router, LineSubIf, l.Gen, LineGenIf)
	if err != nil {
		return nil, err
	}
	upl, sink, err := vethPair(l.Router, LineUpIf, l.Sink, LineGenIf)
	if err != nil {
		return nil, err
	}
	l.SubMAC, l.GenMAC = sub.Attrs().HardwareAddr, gen.Attrs().HardwareAddr
	l.SubIndex, l.UpIndex = sub.Attrs().Index, upl.Attrs().Index
	l.GenIndex, l.SinkIndex = gen.Attrs().Index, sink.Attrs().Index
	for _, s := range []struct {
		ns *Namespace
		nl netlink.Link
		p  netip.Prefix
	}{{l.Router, sub, lineSubGW}, {l.Gen, gen, lineGen}, {l.Router, upl, lineUpGW}, {l.Sink, sink, lineSink}} {
		if err := up(s.ns, s.nl); err != nil {
			return nil, err
		}
		if err := addAddrs(s.ns, s.nl, s.p); err != nil {
			return nil, err
		}
	}
	for _, ifname := range []string{LineSubIf, LineUpIf} {
		if err := l.Router.sysctl("net/ipv4/conf/"+ifname+"/rp_filter", "0"); err != nil {
			return nil, err
		}
	}
	for _, n := range []struct {
		index int
		ip    netip.Addr
		mac   net.HardwareAddr
	}{{l.SubIndex, lineGen.Addr(), gen.Attrs().HardwareAddr}, {l.UpIndex, lineSink.Addr(), sink.Attrs().HardwareAddr}} {
		if err := l.Router.nl.NeighSet(&netlink.Neigh{LinkIndex: n.index, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
			IP: net.IP(n.ip.AsSlice()), HardwareAddr: n.mac}); err != nil {
			return nil, fmt.Errorf("neighbour %s in %s: %w", n.ip, l.Router.Name, err)
		}
	}
	for _, r := range []struct {
		index int
		dst   netip.Prefix
		via   netip.Addr
	}{{l.UpIndex, lineDstNet, lineSink.Addr()}, {l.SubIndex, lineSrcNet, lineGen.Addr()}} {
		if err := l.Router.nl.RouteAdd(&netlink.Route{LinkIndex: r.index, Dst: ipnet(r.dst), Gw: net.IP(r.via.AsSlice())}); err != nil {
			return nil, fmt.Errorf("route to %s in %s: %w", r.dst, l.Router.Name, err)
		}
	}
	// gen's own stack (the test's probe) reaches the destinations through the router.
	if err := l.Gen.nl.RouteAdd(&netlink.Route{LinkIndex: l.GenIndex, Dst: ipnet(lineDstNet), Gw: net.IP(lineSubGW.Addr().AsSlice())}); err != nil {
		return nil, fmt.Errorf("route to %s in %s: %w", lineDstNet, l.Gen.Name, err)
	}
	if l.drop, err = ConstantXDP("pc_line_drop", 1 /* XDP_DROP */); err != nil {
		return nil, err
	}
	if _, err := l.AttachXDP(l.Sink, l.SinkIndex, l.drop); err != nil {
		return nil, err
	}
	return l, nil
}

// ConstantXDP loads an XDP program that returns action (XDP_DROP 1, XDP_PASS 2) for
// every frame: the pass-through peer that native XDP_TX on veth needs, a sink, the bare
// XDP_DROP reference of a benchmark.
func ConstantXDP(name string, action int32) (*ebpf.Program, error) {
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         name,
		Type:         ebpf.XDP,
		License:      "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, action), asm.Return()},
	})
	if err != nil {
		return nil, fmt.Errorf("loading the XDP program %s (needs BPF and XDP): %w", name, err)
	}
	return p, nil
}

// AttachXDP attaches prog in native (driver) mode to the interface with ifindex in ns
// through a bpf_link, and returns the function that detaches it. Close detaches
// whatever is still attached.
func (l *Line) AttachXDP(ns *Namespace, ifindex int, prog *ebpf.Program) (detach func() error, err error) {
	var xl link.Link
	// The ifindex is resolved in the namespace of the calling thread.
	err = ns.Do(func() error {
		var err error
		xl, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifindex, Flags: link.XDPDriverMode})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("attaching XDP (native) to ifindex %d in %s: %w", ifindex, ns.Name, err)
	}
	l.mu.Lock()
	l.links = append(l.links, xl)
	l.mu.Unlock()
	return func() error {
		l.mu.Lock()
		defer l.mu.Unlock()
		i := slices.Index(l.links, xl)
		if i < 0 {
			return nil // Close got there first
		}
		l.links = slices.Delete(l.links, i, i+1)
		return xl.Close()
	}, nil
}

// Stats returns the kernel's counters of the interface ifname in ns.
func (n *Namespace) Stats(ifname string) (netlink.LinkStatistics, error) {
	lk, err := n.nl.LinkByName(ifname)
	if err != nil {
		return netlink.LinkStatistics{}, fmt.Errorf("interface %s in %s: %w", ifname, n.Name, err)
	}
	if lk.Attrs().Statistics == nil {
		return netlink.LinkStatistics{}, fmt.Errorf("interface %s in %s: no statistics", ifname, n.Name)
	}
	return *lk.Attrs().Statistics, nil
}

// Command is a command run inside the namespace (through nsenter, which enters only
// the network namespace: the host's /sys and bpffs stay visible).
func (n *Namespace) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"--net=" + n.Path(), "--", name}, args...)...)
}

// Close detaches what AttachXDP attached and deletes the namespaces, with every
// interface, route, nftables table and ipset in them. Safe after a failed NewLine, safe
// to call twice and from another goroutine (a signal handler).
func (l *Line) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var errs []error
	for _, xl := range l.links {
		errs = append(errs, xl.Close())
	}
	l.links = nil
	if l.drop != nil {
		errs = append(errs, l.drop.Close())
		l.drop = nil
	}
	for _, ns := range []**Namespace{&l.Sink, &l.Router, &l.Gen} {
		if *ns != nil {
			errs = append(errs, (*ns).close())
			*ns = nil
		}
	}
	return errors.Join(errs...)
}
