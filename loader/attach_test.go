package loader

import (
	"bytes"
	"encoding/hex"
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

// TestLinkOf: the link types the program judges, and a clear refusal for the rest.
func TestLinkOf(t *testing.T) {
	for encap, want := range map[string]model.Link{
		"ether": model.LinkEthernet, "loopback": model.LinkEthernet,
		"none": model.LinkRawIP, "ppp": model.LinkRawIP, "ipip": model.LinkRawIP,
		"sit": model.LinkRawIP, "tunnel6": model.LinkRawIP,
	} {
		got, err := LinkOf("x0", encap)
		if err != nil || got != want {
			t.Errorf("%s: %v, %v; want %v", encap, got, err, want)
		}
	}
	// L3 GRE: the sender's GRE protocol field decides what the kernel routes, and can
	// make it a priority-tagged packet (TestRawIPPriorityTag); an NBMA ipgre device
	// hands XDP the outer IPv4 header.
	for _, encap := range []string{"infiniband", "ieee802.15.4", "can", "unknown1234", "gre", "unknown823"} {
		_, err := LinkOf("x0", encap)
		if !errors.Is(err, ErrLinkType) {
			t.Errorf("%s: %v, want ErrLinkType", encap, err)
		}
	}
}

// TestTunInterface attaches the program to a real tun device (a raw-IP interface: its
// frames start at the IP header) in a namespace of its own, writes SYNs into it as a
// subscriber would, and reads what comes back: an RST from the program for port 25
// from a reset range (byte for byte what the model builds), and the kernel's own
// SYN-ACK for 587, which the program passes to the real TCP stack. Generic mode: the
// kernel's tun driver has native XDP only in tap (Ethernet) mode.
func TestTunInterface(t *testing.T) {
	testutil.RequireRoot(t)
	testTun(t, ModeGeneric)
}

func testTun(t *testing.T, mode Mode) {
	runtime.LockOSThread() // the namespace is the thread's; the thread dies with the test
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

	const ifname = "pctun0"
	tun := openTun(t, ifname)
	l, err := netlink.LinkByName(ifname)
	if err != nil {
		t.Fatal(err)
	}
	router := netip.MustParseAddr("192.0.2.1")
	must(t, netlink.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: router.AsSlice(), Mask: net.CIDRMask(32, 32)}}))
	must(t, netlink.LinkSetUp(l))
	must(t, netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: &net.IPNet{IP: net.IPv4(100, 64, 0, 0), Mask: net.CIDRMask(10, 32)}}))
	for _, port := range []int{25, 587} {
		ln, err := net.Listen("tcp4", fmt.Sprintf("%s:%d", router, port))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
	}

	tables := &model.Tables{DefaultVerdict: model.Pass, Governed: []uint16{25}, RuleNames: []string{"default", "dyn"},
		Ranges: []model.Entry{{Prefix: pfx("100.64.0.0/10"), Rule: 1, Verdict: model.Reset}}}
	p := applied(t, tables)
	dir := fmt.Sprintf("/sys/fs/bpf/pctun-%d-%s", os.Getpid(), mode)
	must(t, MountBPFFS(dir))
	t.Cleanup(func() { Unpin(dir) })
	got, err := p.Attach(dir, ifname, mode)
	if err != nil {
		t.Fatalf("attach to tun: %v", err)
	}
	if got != mode {
		t.Fatalf("attached in %s mode, want %s", got, mode)
	}
	links, err := PinnedLinks(dir)
	if err != nil || len(links) != 1 || links[0].ProgramID != p.IDs()[1] {
		t.Fatalf("pinned links %+v (%v), want one running the raw-IP entry point %d", links, err, p.IDs()[1])
	}

	sub := netip.MustParseAddr("100.64.1.2")
	for _, c := range []struct {
		port  uint16
		reply string
	}{{25, "rst"}, {587, "synack"}} {
		syn := rawSYN(t, sub, router, 40000+c.port, c.port, 0x01020304)
		if _, err := tun.Write(syn); err != nil {
			t.Fatalf("write SYN to tun: %v", err)
		}
		out := readTCP(t, tun, router, c.port)
		tcp := gopacket.NewPacket(out, layers.LayerTypeIPv4, gopacket.Default).Layer(layers.LayerTypeTCP).(*layers.TCP)
		switch c.reply {
		case "rst":
			d := tables.JudgeOn(model.LinkRawIP, syn, time.Now(), true)
			if !tcp.RST || !tcp.ACK || tcp.SYN || !bytes.Equal(out, d.Reply) {
				t.Errorf("port %d: got %s\nwant the model's RST %s", c.port, hex.EncodeToString(out), hex.EncodeToString(d.Reply))
			}
		case "synack":
			if !tcp.SYN || !tcp.ACK || tcp.Ack != 0x01020305 {
				t.Errorf("port %d: got flags syn=%v ack=%v ack#=%#x, want the kernel's SYN-ACK", c.port, tcp.SYN, tcp.ACK, tcp.Ack)
			}
		}
	}
}

// openTun creates a tun device (IFF_TUN, no packet-info header) and returns its file:
// writes are packets the interface receives, reads are packets it sends.
func openTun(t *testing.T, name string) *os.File {
	t.Helper()
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("no /dev/net/tun (CONFIG_TUN): %v", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		t.Fatal(err)
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		t.Fatalf("TUNSETIFF %s: %v", name, err)
	}
	f := os.NewFile(uintptr(fd), "/dev/net/tun")
	t.Cleanup(func() { f.Close() })
	return f
}

// rawSYN is an IPv4 SYN with options, as a subscriber's stack sends it.
func rawSYN(t *testing.T, src, dst netip.Addr, sport, dport uint16, seq uint32) []byte {
	t.Helper()
	return buildFrame(t, frameSpec{enc: encRawIP, src: src, dst: dst, sport: sport, dport: dport, syn: true, seq: seq, tcpOpts: true})
}

// readTCP reads packets from the tun until a TCP segment from src:sport arrives, with a
// generous deadline (other packets, such as IPv6 router solicitations, are skipped).
func readTCP(t *testing.T, tun *os.File, src netip.Addr, sport uint16) []byte {
	t.Helper()
	must(t, tun.SetReadDeadline(time.Now().Add(10*time.Second)))
	buf := make([]byte, 2048)
	for {
		n, err := tun.Read(buf)
		if err != nil {
			t.Fatalf("waiting for a reply from %s:%d: %v", src, sport, err)
		}
		pkt := gopacket.NewPacket(buf[:n], layers.LayerTypeIPv4, gopacket.Default)
		ip, ok := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		tcp, ok2 := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if ok && ok2 && ip.SrcIP.Equal(src.AsSlice()) && uint16(tcp.SrcPort) == sport {
			return append([]byte{}, buf[:n]...)
		}
	}
}
