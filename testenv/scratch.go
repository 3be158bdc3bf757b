package testenv

import (
	"errors"
	"fmt"
	"os"

	"github.com/vishvananda/netlink"
)

// Scratch is a network namespace holding nothing but unconnected interfaces, for tests that
// run packets through the program with BPF_PROG_TEST_RUN as if they arrived on named
// interfaces: the kernel looks the ingress ifindex up in the caller's namespace, so
// those runs go through Do.
type Scratch struct {
	*Namespace
	// Ifindex is each dummy interface's index in the namespace.
	Ifindex map[string]int
}

// NewScratch creates a namespace with one interface (up) per name: veth, since the
// kernels we build on have no dummy driver; each one's peer ("sN") stays in the
// namespace too, so nothing leaves it. The caller must Close it.
func NewScratch(names ...string) (*Scratch, error) {
	if os.Geteuid() != 0 {
		return nil, ErrNotRoot
	}
	ns, err := newNamespace(fmt.Sprintf("%s%d-%d-scratch", namePrefix, os.Getpid(), topologySeq.Add(1)))
	if err != nil {
		return nil, err
	}
	s := &Scratch{Namespace: ns, Ifindex: map[string]int{}}
	for i, name := range names {
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: fmt.Sprintf("s%d", i)}
		if err := ns.nl.LinkAdd(v); err != nil {
			return nil, errors.Join(fmt.Errorf("creating interface %s: %w", name, err), s.Close())
		}
		l, err := ns.nl.LinkByName(name)
		if err == nil {
			err = ns.nl.LinkSetUp(l)
		}
		if err != nil {
			return nil, errors.Join(fmt.Errorf("interface %s: %w", name, err), s.Close())
		}
		s.Ifindex[name] = l.Attrs().Index
	}
	return s, nil
}

// Close deletes the namespace and its interfaces.
func (s *Scratch) Close() error { return s.Namespace.close() }
