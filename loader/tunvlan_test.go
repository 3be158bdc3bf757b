package loader

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/portcullis/portcullis/internal/testutil"
	"github.com/portcullis/portcullis/model"
)

// TestRawIPPriorityTag: on a raw-IP interface the kernel goes by the skb's protocol,
// not by the frame's first nibble. Where the protocol can be 802.1Q or 802.1ad (the
// protocol field of an L3 GRE header, or a tun's packet-info header), Linux strips a
// priority tag (VLAN id 0) in __netif_receive_skb_core and routes the IP packet behind
// it, after XDP ran on the frame [tag][IP]. The tag's first nibble is its priority
// bits, not an IP version, and a tag with priority 3 even reads as an IPv6 header, so
// the raw-IP entry point cannot judge such frames: the loader refuses the interfaces
// where they can arrive (TestLinkOf for GRE). Real packets through a tun with a
// packet-info header show what the refusal closes: a drop range's SYN to port 25 in a
// priority tag reaches the TCP stack with the raw-IP entry point attached.
func TestRawIPPriorityTag(t *testing.T) {
	testutil.RequireRoot(t)
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	ns, err := netns.New()
	if err != nil {
		t.Fatalf("new network namespace: %v", err)
	}
	t.Cleanup(func() {
		netns.Set(orig)
		ns.Close()
		orig.Close()
		runtime.UnlockOSThread()
	})

	const ifname = "pctunpi0"
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("no /dev/net/tun: %v", err)
	}
	ifr, err := unix.NewIfreq(ifname)
	if err != nil {
		t.Fatal(err)
	}
	ifr.SetUint16(unix.IFF_TUN) // with the 4-byte packet-info header: flags, protocol
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		t.Fatalf("TUNSETIFF: %v", err)
	}
	tun := os.NewFile(uintptr(fd), "/dev/net/tun")
	t.Cleanup(func() { tun.Close() })
	l, err := netlink.LinkByName(ifname)
	if err != nil {
		t.Fatal(err)
	}
	router := netip.MustParseAddr("192.0.2.1")
	must(t, netlink.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: router.AsSlice(), Mask: net.CIDRMask(32, 32)}}))
	must(t, netlink.LinkSetUp(l))
	must(t, netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: &net.IPNet{IP: net.IPv4(100, 64, 0, 0), Mask: net.CIDRMask(10, 32)}}))
	ln, err := net.Listen("tcp4", fmt.Sprintf("%s:25", router))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })

	tables := &model.Tables{DefaultVerdict: model.Pass, Governed: []uint16{25}, RuleNames: []string{"default", "dyn"},
		Ranges: []model.Entry{{Prefix: pfx("100.64.0.0/10"), Rule: 1, Verdict: model.Drop}}}
	p := applied(t, tables)

	// The loader refuses the interface: its packet-info header, not the frame, names
	// the protocol.
	dir := fmt.Sprintf("/sys/fs/bpf/pctunpi-%d", os.Getpid())
	must(t, MountBPFFS(dir))
	t.Cleanup(func() { Unpin(dir) })
	if _, err := p.Attach(dir, ifname, ModeGeneric); !errors.Is(err, ErrLinkType) {
		t.Errorf("attach to a tun with a packet-info header: %v, want ErrLinkType", err)
	}
	if links, _ := PinnedLinks(dir); len(links) != 0 {
		t.Fatalf("pinned links %+v after a refusal", links)
	}

	// Attached anyway (bypassing the loader), the raw-IP entry point drops the plain
	// SYN, and the kernel routes the priority-tagged ones the entry point cannot read.
	xl, err := p.attachXDP(model.LinkRawIP, l.Attrs().Index, ModeGeneric)
	if err != nil {
		t.Fatalf("attach: %v", err)
	}
	t.Cleanup(func() { xl.Close() })
	sub := netip.MustParseAddr("100.64.1.2")
	pi := func(proto uint16) []byte { return binary.BigEndian.AppendUint16([]byte{0, 0}, proto) }
	for i, c := range []struct {
		name  string
		proto uint16
		tag   []byte
		want  model.Action // what the raw-IP entry point does with the frame
	}{
		{"plain-ipv4", 0x0800, nil, model.ActionDrop},
		{"802.1Q-priority-tag", 0x8100, []byte{0x00, 0x00, 0x08, 0x00}, model.ActionPass},
		{"802.1Q-priority-tag-pcp3", 0x8100, []byte{0x60, 0x00, 0x08, 0x00}, model.ActionPass},
		{"802.1ad-priority-tag-pcp2", 0x88a8, []byte{0x40, 0x00, 0x08, 0x00}, model.ActionPass},
	} {
		sport := uint16(41000 + i)
		frame := append(append([]byte{}, c.tag...), rawSYN(t, sub, router, sport, 25, 0x01020304)...)
		d, act := compareWithModelOn(t, model.LinkRawIP, p, tables, frame)
		if act != c.want {
			t.Errorf("%s: raw-IP entry point %v (%v), want %v", c.name, act, d.Path, c.want)
		}
		if _, err := tun.Write(append(pi(c.proto), frame...)); err != nil {
			t.Fatalf("%s: write: %v", c.name, err)
		}
		answered := synAckFrom(tun, router, 25, sport)
		if answered != (act == model.ActionPass) {
			t.Errorf("%s: program %v, kernel answered with a SYN-ACK: %v", c.name, act, answered)
		}
		t.Logf("%s: program %v, the kernel's TCP stack answered: %v", c.name, act, answered)
	}
}

// synAckFrom reads the tun (packet-info header first) for up to 3 s and reports
// whether a SYN-ACK from src:sport to dport came out. An answer comes at once; the
// wait is for a loaded machine: a second was a short window there for the answers that
// must come.
func synAckFrom(tun *os.File, src netip.Addr, sport, dport uint16) bool {
	tun.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 2048)
	for {
		n, err := tun.Read(buf)
		if err != nil {
			return false
		}
		if n < 4 {
			continue
		}
		pkt := gopacket.NewPacket(buf[4:n], layers.LayerTypeIPv4, gopacket.Default)
		ip, ok := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		tcp, ok2 := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if ok && ok2 && ip.SrcIP.Equal(src.AsSlice()) && uint16(tcp.SrcPort) == sport && uint16(tcp.DstPort) == dport && tcp.SYN && tcp.ACK {
			return true
		}
	}
}
