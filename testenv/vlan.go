package testenv

import (
	"fmt"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// 802.1Q between a VLAN host and the gateway.
//
// The kernels these tests run on are built without 8021q (CONFIG_VLAN_8021Q unset, and
// no modules), so there are no VLAN sub-interfaces to create. The tag is handled at both
// ends of the veth by two tiny tc BPF programs instead: egress pushes the tag, ingress
// checks and pops it. The tc hooks run after XDP on ingress and before the driver on
// egress, so the frames on the wire between host and gateway carry a real 802.1Q header
// in their data: the XDP program on the gateway parses it, and its XDP_TX reply (which
// bypasses tc egress) goes back tagged, copied from the SYN. For the tag to be in the
// frame's data rather than in skb metadata, TX VLAN offload is switched off on both
// veth ends (ethtool -K IF txvlan off).

// __sk_buff field offset (include/uapi/linux/bpf.h).
const skbVlanTCI = 24

const (
	tcActOK   = 0
	tcActShot = 2
)

// vlanPrograms returns the egress (push tag vid) and ingress (pop tag vid, drop
// anything else) tc programs.
func vlanPrograms(vid uint16) (egress, ingress *ebpf.Program, err error) {
	egress, err = ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "pc_vlan_push", Type: ebpf.SchedCLS, License: "GPL",
		Instructions: asm.Instructions{
			// bpf_skb_vlan_push(skb, htons(ETH_P_8021Q), vid); r1 already holds skb.
			asm.Mov.Imm(asm.R2, int32(htons(unix.ETH_P_8021Q))),
			asm.Mov.Imm(asm.R3, int32(vid)),
			asm.FnSkbVlanPush.Call(),
			asm.Mov.Imm(asm.R0, tcActOK),
			asm.Return(),
		},
	})
	if err != nil {
		return nil, nil, fmt.Errorf("loading the VLAN tagging tc program (needs BPF for tc): %w", err)
	}
	ingress, err = ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "pc_vlan_pop", Type: ebpf.SchedCLS, License: "GPL",
		Instructions: asm.Instructions{
			// The stack has moved the frame's tag into skb->vlan_tci before tc ingress.
			asm.LoadMem(asm.R2, asm.R1, skbVlanTCI, asm.Word),
			asm.And.Imm(asm.R2, 0x0fff),
			asm.JNE.Imm(asm.R2, int32(vid), "other"),
			asm.FnSkbVlanPop.Call(),
			asm.Mov.Imm(asm.R0, tcActOK),
			asm.Return(),
			// Untagged, or another VLAN: not for this interface.
			asm.Mov.Imm(asm.R0, tcActShot).WithSymbol("other"),
			asm.Return(),
		},
	})
	if err != nil {
		egress.Close()
		return nil, nil, fmt.Errorf("loading the VLAN untagging tc program: %w", err)
	}
	return egress, ingress, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// tagInterface makes ifname in ns an access port of VLAN vid: tag on egress, untag on
// ingress (cls_bpf on a clsact qdisc, which every kernel with tc BPF has), TX VLAN
// offload off. The filters hold the programs; they go away with the interface.
func (t *Topology) tagInterface(ns *Namespace, ifname string, vid uint16) error {
	l, err := ns.nl.LinkByName(ifname)
	if err != nil {
		return err
	}
	if err := ns.Do(func() error { return txVLANOffloadOff(ifname) }); err != nil {
		return fmt.Errorf("switching off TX VLAN offload on %s in %s: %w", ifname, ns.Name, err)
	}
	eg, in, err := vlanPrograms(vid)
	if err != nil {
		return err
	}
	defer eg.Close()
	defer in.Close()
	idx := l.Attrs().Index
	qdisc := &netlink.Clsact{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: idx, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT}}
	if err := ns.nl.QdiscAdd(qdisc); err != nil {
		return fmt.Errorf("adding a clsact qdisc to %s in %s (needs CONFIG_NET_SCH_INGRESS): %w", ifname, ns.Name, err)
	}
	for _, f := range []struct {
		parent uint32
		prog   *ebpf.Program
	}{{netlink.HANDLE_MIN_EGRESS, eg}, {netlink.HANDLE_MIN_INGRESS, in}} {
		filter := &netlink.BpfFilter{
			FilterAttrs: netlink.FilterAttrs{LinkIndex: idx, Parent: f.parent, Handle: netlink.MakeHandle(0, 1),
				Protocol: unix.ETH_P_ALL, Priority: 1},
			Fd: f.prog.FD(), Name: fmt.Sprintf("pc_vlan%d", vid), DirectAction: true,
		}
		if err := ns.nl.FilterAdd(filter); err != nil {
			return fmt.Errorf("attaching the VLAN %d tc program to %s in %s (needs CONFIG_NET_CLS_BPF): %w", vid, ifname, ns.Name, err)
		}
	}
	return nil
}

// ethtool ioctl (include/uapi/linux/ethtool.h): the legacy flags interface is enough
// to switch TX VLAN offload.
const (
	ethtoolGFlags = 0x25
	ethtoolSFlags = 0x26
	ethFlagTxVLAN = 1 << 7
)

type ethtoolValue struct{ cmd, data uint32 }

type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [16]byte // the rest of struct ifreq's union
}

// txVLANOffloadOff clears TX VLAN offload on ifname in the calling thread's namespace.
func txVLANOffloadOff(ifname string) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	v := &ethtoolValue{cmd: ethtoolGFlags}
	req := &ifreqData{data: unsafe.Pointer(v)}
	copy(req.name[:], ifname)
	if err := ethtoolIoctl(fd, req); err != nil {
		return fmt.Errorf("ETHTOOL_GFLAGS: %w", err)
	}
	if v.data&ethFlagTxVLAN == 0 {
		return nil
	}
	v.cmd, v.data = ethtoolSFlags, v.data&^ethFlagTxVLAN
	if err := ethtoolIoctl(fd, req); err != nil {
		return fmt.Errorf("ETHTOOL_SFLAGS: %w", err)
	}
	return nil
}

func ethtoolIoctl(fd int, req *ifreqData) error {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(req)))
	if errno != 0 {
		return errno
	}
	return nil
}
