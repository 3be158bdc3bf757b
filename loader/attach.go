package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/portcullis/portcullis/model"
)

// Mode is how the program is attached to an interface.
type Mode string

const (
	ModeNative  Mode = "native"  // in the driver: fastest, needs driver support
	ModeGeneric Mode = "generic" // in the kernel's network stack: works everywhere, slower
	ModeAuto    Mode = "auto"    // native, falling back to generic (the caller logs it)
)

// AttachedMode names the kernel's report of how XDP is attached to an interface
// (IFLA_XDP_ATTACHED: 1 driver, 2 generic, 3 offload).
func AttachedMode(attached uint32) Mode {
	switch attached {
	case 1:
		return ModeNative
	case 2:
		return ModeGeneric
	case 3:
		return "offload"
	}
	return Mode(fmt.Sprint("mode ", attached))
}

// LinkMode says how XDP is attached to the interface with index ifindex, as the kernel
// reports it now (AttachedMode). An error means the interface could not be looked up or
// the kernel reported no XDP state for it.
func LinkMode(ifindex int) (Mode, error) {
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return "", fmt.Errorf("interface %d: %w", ifindex, err)
	}
	if l.Attrs().Xdp == nil {
		return "", fmt.Errorf("interface %d: the kernel reports no XDP state", ifindex)
	}
	return AttachedMode(l.Attrs().Xdp.AttachMode), nil
}

// LinkOf says where the frames of an interface with the kernel's link type encap (as
// netlink names it: IFLA's ARPHRD_*) start: at an Ethernet header, or at the IP header.
// Any other link type is ErrLinkType: attaching there would judge nothing.
//
// L3 GRE (ARPHRD_IPGRE, ARPHRD_IP6GRE) is refused too. The kernel routes what such a
// device receives by the GRE header's protocol field, which the sender writes and
// which is gone before XDP runs: with 802.1Q or 802.1ad there, Linux strips a
// priority tag (VLAN id 0) from the frame and routes the IP packet behind it
// (__netif_receive_skb_core), so a subscriber could send [tag][IPv4 SYN to 25] that
// the raw-IP entry point, going by the first nibble (the tag's priority bits), cannot
// read as IP. And an ipgre device without a fixed remote (NBMA, the gre0 fallback)
// hands XDP its frames from the outer IPv4 header (ipgre_header_ops): the program
// would judge the outer GRE packet. An Ethernet GRE device (gretap, ip6gretap) is
// judged, VLAN tags and all, and ipip, sit and ip6tnl carry only IP.
func LinkOf(ifname, encap string) (model.Link, error) {
	switch encap {
	case "ether", "loopback": // loopback carries a (zeroed) Ethernet header
		return model.LinkEthernet, nil
	case "none", // tun, WireGuard (ARPHRD_NONE)
		"ppp",        // kernel PPP (pppd, accel-ppp)
		"unknown519", // ARPHRD_RAWIP
		"ipip",       // ARPHRD_TUNNEL
		"tunnel6",    // ip6tnl
		"sit":        // 6in4
		return model.LinkRawIP, nil
	case "gre", // ARPHRD_IPGRE (L3 GRE; gretap is Ethernet)
		"unknown823": // ARPHRD_IP6GRE
		return 0, fmt.Errorf("%s: %w: L3 GRE (%q): the GRE protocol field, which the sender chooses and XDP never sees, can make the kernel route a priority-tagged IP packet that does not start with an IP header; use an Ethernet GRE device (gretap, ip6gretap: judged with its VLAN tags) or an IP-in-IP one (ipip, sit, ip6tnl)", ifname, ErrLinkType, encap)
	}
	return 0, fmt.Errorf("%s: %w: %q (Portcullis judges Ethernet interfaces, with VLAN and PPPoE, and raw-IP ones: tun, ppp, WireGuard, IP-in-IP tunnels); attach to the interface that carries the subscribers' IP traffic instead", ifname, ErrLinkType, encap)
}

// linkKind is LinkOf for an interface netlink described, with one more refusal: a tun
// device with a packet-info header (no IFF_NO_PI). There the protocol the kernel goes
// by is the one the writing process puts in that header, not the IP version the
// program reads: 802.1Q there routes a priority-tagged packet, as for L3 GRE. Without
// the header the kernel takes the protocol from the version nibble, as the program does.
func linkKind(l netlink.Link) (model.Link, error) {
	if tt, ok := l.(*netlink.Tuntap); ok && tt.Mode == netlink.TUNTAP_MODE_TUN && tt.Flags&netlink.TUNTAP_NO_PI == 0 {
		return 0, fmt.Errorf("%s: %w: a tun device with a packet-info header: the kernel takes the protocol from that header, which may say 802.1Q (a priority-tagged packet is then routed), not from the IP version the program reads; create it with IFF_NO_PI", l.Attrs().Name, ErrLinkType)
	}
	return LinkOf(l.Attrs().Name, l.Attrs().EncapType)
}

// linkOf looks up the interface and its link type.
func linkOf(ifname string) (int, model.Link, error) {
	l, err := netlink.LinkByName(ifname)
	if err != nil {
		return 0, 0, fmt.Errorf("interface %s: %w", ifname, err)
	}
	kind, err := linkKind(l)
	return l.Attrs().Index, kind, err
}

const linkPrefix = "link-"

// LinkPath is where the link of an interface is pinned in dir. bpffs refuses names
// with a dot, which VLAN interfaces have (eth0.100): a dot is written as ':', which
// interface names cannot contain.
func LinkPath(dir, ifname string) string {
	return filepath.Join(dir, linkPrefix+strings.ReplaceAll(ifname, ".", ":"))
}

// Attach attaches the program to ifname through a bpf_link pinned in dir, so that it
// stays attached when this process exits. A pin left by a link whose interface went
// away is replaced. It returns the mode that took: with ModeAuto, generic if the
// driver refused native. The entry point follows the interface's link type (Ethernet
// or raw IP); an interface of any other type is refused with ErrLinkType.
func (p *Program) Attach(dir, ifname string, mode Mode) (Mode, error) {
	index, kind, err := linkOf(ifname)
	if err != nil {
		return "", err
	}
	try := []Mode{mode}
	if mode == ModeAuto {
		try = []Mode{ModeNative, ModeGeneric}
	}
	var l link.Link
	var used Mode
	for _, m := range try {
		l, err = p.attachXDP(kind, index, m)
		if err == nil {
			used = m
			break
		}
		if errors.Is(err, unix.EBUSY) || errors.Is(err, unix.EEXIST) {
			return "", fmt.Errorf("%s: %w (see `ip link show %s`; detach it first)", ifname, ErrAlreadyAttached, ifname)
		}
		err = fmt.Errorf("attaching to %s in %s mode: %w", ifname, m, err)
	}
	if err != nil {
		return "", err
	}
	path := LinkPath(dir, ifname)
	// bpffs answers EPERM, not ENOENT, to unlinking a name that does not exist.
	if _, err := os.Lstat(path); err == nil {
		if err := unix.Unlink(path); err != nil {
			l.Close()
			return "", fmt.Errorf("removing stale link pin: %w", err)
		}
	}
	if err := l.Pin(path); err != nil {
		l.Close()
		return "", fmt.Errorf("pinning link of %s: %w", ifname, err)
	}
	return used, l.Close() // the pin keeps it attached
}

// attachXDP attaches the entry point for links of type kind to interface index in
// mode m (native or generic) through a new bpf_link.
func (p *Program) attachXDP(kind model.Link, index int, m Mode) (link.Link, error) {
	flags := link.XDPDriverMode
	if m == ModeGeneric {
		flags = link.XDPGenericMode
	}
	return link.AttachXDP(link.XDPOptions{Program: p.entry(kind), Interface: index, Flags: flags})
}

// PinnedLink is one link pinned in a Portcullis directory.
type PinnedLink struct {
	Interface string // name it was attached under
	Path      string
	Ifindex   int // 0 when the interface is gone (the kernel detached the link)
	LinkID    link.ID
	ProgramID ebpf.ProgramID
}

// PinnedLinks lists the links pinned in dir.
func PinnedLinks(dir string) ([]PinnedLink, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []PinnedLink
	for _, e := range entries {
		name, ok := strings.CutPrefix(e.Name(), linkPrefix)
		if !ok {
			continue
		}
		pl := PinnedLink{Interface: strings.ReplaceAll(name, ":", "."), Path: filepath.Join(dir, e.Name())}
		l, err := link.LoadPinnedLink(pl.Path, nil)
		if err != nil {
			return nil, fmt.Errorf("opening pinned link %s: %w", pl.Path, err)
		}
		info, err := l.Info()
		l.Close()
		if err != nil {
			return nil, fmt.Errorf("reading pinned link %s: %w", pl.Path, err)
		}
		pl.LinkID, pl.ProgramID = info.ID, info.Program
		if x := info.XDP(); x != nil {
			pl.Ifindex = int(x.Ifindex)
		}
		out = append(out, pl)
	}
	return out, nil
}

// UpdateLinks points every link pinned in dir at this program: an atomic replacement
// on each interface (no packet goes unjudged), used when a daemon restarts or a new
// version takes over.
func (p *Program) UpdateLinks(dir string) ([]PinnedLink, error) {
	links, err := PinnedLinks(dir)
	if err != nil {
		return nil, err
	}
	for i, pl := range links {
		if pl.Ifindex == 0 {
			continue // detached by the kernel; Attach replaces it when the interface is back
		}
		nl, err := netlink.LinkByIndex(pl.Ifindex)
		if err != nil {
			return nil, fmt.Errorf("interface of pinned link %s: %w", pl.Path, err)
		}
		kind, err := linkKind(nl)
		if err != nil {
			return nil, err
		}
		l, err := link.LoadPinnedLink(pl.Path, nil)
		if err != nil {
			return nil, fmt.Errorf("opening pinned link %s: %w", pl.Path, err)
		}
		err = l.Update(p.entry(kind))
		l.Close()
		if err != nil {
			return nil, fmt.Errorf("updating the program on %s: %w", pl.Interface, err)
		}
		links[i].ProgramID = p.IDs()[kind]
	}
	return links, nil
}

// ID returns the kernel's id of the loaded program (its Ethernet entry point).
func (p *Program) ID() ebpf.ProgramID { return p.IDs()[model.LinkEthernet] }

// IDs returns the kernel's ids of both entry points, indexed by model.Link (Ethernet,
// raw IP). They are read from the kernel once: the daemon asks on every reconcile.
func (p *Program) IDs() []ebpf.ProgramID {
	if p.ids == nil {
		p.ids = []ebpf.ProgramID{programID(p.objs.Portcullis), programID(p.objs.PortcullisL3)}
	}
	return p.ids
}

func programID(prog *ebpf.Program) ebpf.ProgramID {
	info, err := prog.Info()
	if err != nil {
		return 0
	}
	id, _ := info.ID()
	return id
}

// Reattach replaces the link pinned in dir for ifname by one attached in mode (native
// or generic), for a pinned link left in the other mode. It detaches the old link,
// attaches the new one and pins it, and returns the mode now attached and how long the
// interface went unjudged (see ErrModeSwitchGap). If mode is refused, the old mode is
// attached again and the error says so.
func (p *Program) Reattach(dir, ifname string, mode Mode) (Mode, time.Duration, error) {
	if mode != ModeNative && mode != ModeGeneric {
		return "", 0, fmt.Errorf("reattaching %s: mode %q is not native or generic", ifname, mode)
	}
	index, kind, err := linkOf(ifname)
	if err != nil {
		return "", 0, err
	}
	path := LinkPath(dir, ifname)
	old, err := link.LoadPinnedLink(path, nil)
	if err != nil {
		return "", 0, fmt.Errorf("opening pinned link %s: %w", path, err)
	}
	defer old.Close()
	oldMode := ModeGeneric
	if mode == ModeGeneric {
		oldMode = ModeNative
	}
	attach := func(m Mode) (link.Link, error) { return p.attachXDP(kind, index, m) }

	start := time.Now()
	if err := old.Detach(); err != nil {
		return oldMode, 0, fmt.Errorf("detaching the %s link of %s: %w (still attached as it was)", oldMode, ifname, err)
	}
	used := mode
	l, err := attach(mode)
	if err != nil {
		used = oldMode
		var err2 error
		if l, err2 = attach(oldMode); err2 != nil {
			return "", time.Since(start), fmt.Errorf("attaching %s in %s mode: %w; attaching it in %s mode again failed too: %v: %s IS NOT JUDGED", ifname, mode, err, oldMode, err2, ifname)
		}
		err = fmt.Errorf("attaching %s in %s mode: %w (attached in %s mode again)", ifname, mode, err, oldMode)
	}
	gap := time.Since(start)
	defer l.Close() // the pin keeps it attached
	if uerr := unix.Unlink(path); uerr != nil {
		return used, gap, errors.Join(err, fmt.Errorf("removing the old link pin of %s: %w (attached, but not pinned: it goes when this process exits)", ifname, uerr))
	}
	if perr := l.Pin(path); perr != nil {
		return used, gap, errors.Join(err, fmt.Errorf("pinning the link of %s: %w (attached, but not pinned: it goes when this process exits)", ifname, perr))
	}
	return used, gap, err
}

// PinnedIfindex is the interface the link pinned for ifname in dir is attached to: 0
// when none is pinned or its interface is gone. After a rename it is the interface
// under its new name, which LinkByName(ifname) no longer finds.
func PinnedIfindex(dir, ifname string) (int, error) {
	l, err := link.LoadPinnedLink(LinkPath(dir, ifname), nil)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("opening the pinned link of %s: %w", ifname, err)
	}
	defer l.Close()
	info, err := l.Info()
	if err != nil {
		return 0, fmt.Errorf("reading the pinned link of %s: %w", ifname, err)
	}
	if x := info.XDP(); x != nil {
		return int(x.Ifindex), nil
	}
	return 0, nil
}
