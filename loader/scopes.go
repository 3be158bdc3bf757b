package loader

import (
	"errors"
	"fmt"
	"maps"

	"github.com/cilium/ebpf"

	"github.com/portcullis/portcullis/bpf"
)

// Scopes: the program knows an interface by the ifindex a packet arrives with, the
// policy by its name. SetInterfaces says which name is which index (in the network
// namespace where the program is attached); each policy slot's interface table maps
// (slot, ifindex) to the interface's scope group under that slot's policy.

// SetInterfaces tells the program which ifindex each interface the policy may name
// has, and rewrites the interface tables of the live policy and of the one Rollback
// would restore. Names the map leaves out match no scope. Each entry changes with one
// map update, so a packet sees the interface either in its old group or its new one.
// Call it whenever the daemon attaches, re-attaches or loses an interface.
func (p *Program) SetInterfaces(ifaces map[string]int) error {
	p.ifaces = maps.Clone(ifaces)
	var errs []error
	for slot, groups := range p.groups {
		if groups != nil {
			errs = append(errs, p.writeScopes(uint32(slot), groups))
		}
	}
	return errors.Join(errs...)
}

// Interfaces returns the name -> ifindex map last given to SetInterfaces.
func (p *Program) Interfaces() map[string]int { return maps.Clone(p.ifaces) }

// writeScopes makes slot's interface table say groups (interface name -> group) for
// the interfaces SetInterfaces named: new and changed entries first, then the stale
// ones go.
func (p *Program) writeScopes(slot uint32, groups map[string]uint32) error {
	want := map[bpf.PortcullisPcScopeKey]uint32{}
	for name, g := range groups {
		if idx, ok := p.ifaces[name]; ok && idx > 0 {
			want[bpf.PortcullisPcScopeKey{Slot: slot, Ifindex: uint32(idx)}] = g
		}
	}
	var stale []bpf.PortcullisPcScopeKey
	var k bpf.PortcullisPcScopeKey
	var v uint32
	it := p.objs.Scopes.Iterate()
	for it.Next(&k, &v) {
		if k.Slot != slot {
			continue
		}
		if g, ok := want[k]; !ok {
			stale = append(stale, k)
		} else if g == v {
			delete(want, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("reading the interface table: %w", err)
	}
	for k, g := range want {
		if err := p.objs.Scopes.Put(k, g); err != nil {
			return fmt.Errorf("writing the interface table: %w", err)
		}
	}
	for _, k := range stale {
		if err := p.objs.Scopes.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("clearing the interface table: %w", err)
		}
	}
	if p.groups == nil {
		p.groups = make([]map[string]uint32, 2)
	}
	p.groups[slot&1] = groups
	return nil
}

// ifindexOf returns the ifindex a test run uses for a packet arriving on interface
// ifname: "" is an interface no scope names (ifindex 0: the kernel then runs the
// program as if on loopback).
func (p *Program) ifindexOf(ifname string) (uint32, error) {
	if ifname == "" {
		return 0, nil
	}
	idx, ok := p.ifaces[ifname]
	if !ok {
		return 0, fmt.Errorf("%w: %s (SetInterfaces names %d interfaces)", ErrUnknownInterface, ifname, len(p.ifaces))
	}
	return uint32(idx), nil
}
