package daemon

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"

	"github.com/portcullis/portcullis/controller"
	"github.com/portcullis/portcullis/loader"
)

// watchLinks reports the name of every interface the kernel announces a change of
// (created, deleted, up, down); reconcile decides what it means.
func watchLinks() (<-chan string, func(), error) {
	updates := make(chan netlink.LinkUpdate, 64)
	done := make(chan struct{})
	if err := netlink.LinkSubscribeWithOptions(updates, done, netlink.LinkSubscribeOptions{}); err != nil {
		return nil, nil, fmt.Errorf("subscribing to interface changes: %w", err)
	}
	names := make(chan string, 64)
	go func() {
		for u := range updates {
			select {
			case names <- u.Attrs().Name:
			default: // the 1 s reconcile catches up
			}
		}
	}()
	return names, func() { close(done) }, nil
}

// watch re-attaches on link events and every second, until ctx ends. It runs on its
// own: it takes the watch's lock, never the controller's, so a policy change in
// progress does not hold up attaching an interface that came back.
func (d *Daemon) watch(ctx context.Context, linkEvents <-chan string) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case name := <-linkEvents:
			d.reconcile(name)
		case <-tick.C:
			d.reconcileAll()
		}
	}
}

// syncer hands the latest interface indexes to the controller (which names them to
// the program for the policy's scopes, between changes), until ctx ends.
func (d *Daemon) syncer(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-d.ifaces:
			d.ctl.SetInterfaces(m)
		}
	}
}

func (d *Daemon) reconcileAll() {
	for _, name := range d.cfg.Interfaces {
		d.reconcile(name)
	}
}

// reconcile makes sure the program is attached to name if name is one of ours and
// exists: an interface deleted and created again gets a new link; down and up keep it.
func (d *Daemon) reconcile(name string) {
	if !slices.Contains(d.cfg.Interfaces, name) {
		return
	}
	d.watchMu.Lock()
	defer d.watchMu.Unlock()
	defer d.publishAttachment()
	defer d.syncInterfaces()
	l, err := netlink.LinkByName(name)
	if err != nil {
		// Renamed (ip link set NAME name OTHER): the pinned link stays on it and goes
		// on judging it, under the new name the configuration does not list.
		if other := d.pinnedElsewhere(name, 0); other != "" {
			if d.renamed[name] != other {
				d.log.Warn("interface renamed: its pinned link still judges it, but under a name the configuration does not list: configure the new name (or rename it back); an interface created with the old name takes the link over",
					"interface", name, "now_named", other)
				d.renamed[name] = other
			}
			delete(d.attached, name)
			d.gone[name] = true
			d.attachErr[name] = "renamed " + other + ": its pinned link still judges it under that name, which interfaces: does not list"
			return
		}
		d.attachErr[name] = "interface not found"
		if _, was := d.attached[name]; was || !d.gone[name] {
			d.log.Warn("interface is gone; will re-attach when it comes back", "interface", name)
		}
		delete(d.attached, name)
		d.gone[name] = true
		return
	}
	xdp := l.Attrs().Xdp
	if xdp != nil && xdp.Attached && slices.Contains(d.prog.IDs(), ebpf.ProgramID(xdp.ProgId)) {
		if mode := d.checkMode(name, loader.AttachedMode(xdp.AttachMode)); mode != "" {
			d.attached[name] = mode
			delete(d.gone, name)
			delete(d.attachErr, name)
		} else {
			delete(d.attached, name) // the next reconcile attaches it again
		}
		return
	}
	renamed := d.pinnedElsewhere(name, l.Attrs().Index) // its link moves to this one
	mode, err := d.prog.Attach(d.cfg.BPFFS, name, d.cfg.Mode)
	if err != nil {
		if !d.gone[name] { // once, not every second
			d.log.Error("cannot attach", "interface", name, "error", err)
		}
		d.attachErr[name] = err.Error()
		delete(d.attached, name)
		d.gone[name] = true // log again only when something changes
		return
	}
	if d.cfg.Mode == loader.ModeAuto && mode == loader.ModeGeneric {
		d.log.Warn("the driver refused native XDP: attached in generic mode (slower; set mode: generic to make it explicit)", "interface", name)
	}
	d.log.Info("attached", "interface", name, "mode", mode, "ifindex", l.Attrs().Index)
	if renamed != "" {
		d.log.Warn("the link pinned for this name was on the interface renamed from it, and is now this one's: that interface is no longer judged",
			"interface", name, "no_longer_judged", renamed)
	}
	delete(d.renamed, name)
	delete(d.attachErr, name)
	d.attached[name] = mode
	delete(d.modeNotes, name)
	delete(d.gone, name)
}

// pinnedElsewhere is the current name of the interface the link pinned for name is
// attached to, when that is another interface than index (0: name does not exist): the
// interface was renamed. "" when not. Called with d.watchMu held.
func (d *Daemon) pinnedElsewhere(name string, index int) string {
	pinned, err := loader.PinnedIfindex(d.cfg.BPFFS, name)
	if err != nil || pinned == 0 || pinned == index {
		return ""
	}
	l, err := netlink.LinkByIndex(pinned)
	if err != nil || l.Attrs().Name == name {
		return ""
	}
	return l.Attrs().Name
}

// syncInterfaces offers the controller the configured interfaces that exist, with
// their ifindex, without waiting for it: the latest offer replaces one not yet taken.
// Called with d.watchMu held.
func (d *Daemon) syncInterfaces() {
	m := interfaceIndexes(d.cfg.Interfaces)
	for {
		select {
		case d.ifaces <- m:
			return
		default:
			select {
			case <-d.ifaces: // stale: replaced by m
			default:
			}
		}
	}
}

// interfaceIndexes is the ifindex of each of names that exists.
func interfaceIndexes(names []string) map[string]int {
	now := map[string]int{}
	for _, name := range names {
		if l, err := netlink.LinkByName(name); err == nil {
			now[name] = l.Attrs().Index
		}
	}
	return now
}

// publishAttachment gives the controller the watch's part of the status. Called with
// d.watchMu held (or before the watch starts).
func (d *Daemon) publishAttachment() {
	a := controller.Attachment{Interfaces: map[string]string{}}
	for name, m := range d.attached {
		a.Interfaces[name] = string(m)
	}
	if len(d.modeNotes) > 0 {
		a.ModeNotes = maps.Clone(d.modeNotes)
	}
	if len(d.attachErr) > 0 {
		a.Errors = maps.Clone(d.attachErr)
	}
	d.ctl.SetAttachment(a)
}

// checkMode compares the mode name is attached in (a pinned link adopted from an
// earlier run keeps its mode) with the configured one. The kernel cannot switch
// without a gap (loader.ErrModeSwitchGap): unless switch_mode is set, the link is kept
// and the mismatch is logged once and shown by status. It returns the mode attached
// now, "" if it is not attached any more. Called with d.watchMu held.
func (d *Daemon) checkMode(name string, attached loader.Mode) loader.Mode {
	want := d.cfg.Mode
	if want == loader.ModeAuto || attached == want || (attached != loader.ModeNative && attached != loader.ModeGeneric) {
		delete(d.modeNotes, name)
		return attached
	}
	if !d.cfg.SwitchMode || d.switched[name] {
		if _, noted := d.modeNotes[name]; !noted {
			d.modeNotes[name] = fmt.Sprintf("attached in %s mode, configured %s: not switched, because %v; "+
				"to switch anyway, set switch_mode: true (or run --switch-mode) and restart", attached, want, loader.ErrModeSwitchGap)
			d.log.Warn("kept the pinned link in its mode, not the configured one", "interface", name,
				"attached", attached, "configured", want, "why", loader.ErrModeSwitchGap.Error(),
				"to_switch", "switch_mode: true (or run --switch-mode), then restart")
		}
		return attached
	}
	d.switched[name] = true
	got, gap, err := d.prog.Reattach(d.cfg.BPFFS, name, want)
	if err != nil {
		d.modeNotes[name] = fmt.Sprintf("switching from %s to %s mode failed: %v", attached, want, err)
		d.log.Error("switching the XDP mode failed", "interface", name, "from", attached, "to", want, "unjudged_for", gap, "error", err)
		return got
	}
	delete(d.modeNotes, name)
	d.log.Warn("switched the XDP mode (switch_mode): the interface was unjudged while it changed", "interface", name,
		"from", attached, "to", got, "unjudged_for", gap, "why", loader.ErrModeSwitchGap.Error())
	return got
}
