package daemon

import (
	"context"
	"fmt"
	"os"
	"slices"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"

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

// watchFile reports changes of path's identity, size or modification time, checked
// every interval (editors that write a new file and rename it over the old are seen).
func watchFile(ctx context.Context, path string, interval time.Duration) <-chan struct{} {
	ch := make(chan struct{}, 1)
	stamp := func() string {
		fi, err := os.Stat(path)
		if err != nil {
			return "missing"
		}
		var ino uint64
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			ino = st.Ino
		}
		return fmt.Sprint(ino, fi.Size(), fi.ModTime().UnixNano())
	}
	last := stamp()
	go func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if s := stamp(); s != last && s != "missing" {
					last = s
					select {
					case ch <- struct{}{}:
					default:
					}
				}
			}
		}
	}()
	return ch
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
	d.mu.Lock()
	defer d.mu.Unlock()
	l, err := netlink.LinkByName(name)
	if err != nil {
		if _, was := d.attached[name]; was || !d.gone[name] {
			d.log.Warn("interface is gone; will re-attach when it comes back", "interface", name)
		}
		delete(d.attached, name)
		d.gone[name] = true
		return
	}
	xdp := l.Attrs().Xdp
	if xdp != nil && xdp.Attached && slices.Contains(d.prog.IDs(), ebpf.ProgramID(xdp.ProgId)) {
		d.attached[name] = loader.AttachedMode(xdp.AttachMode)
		delete(d.gone, name)
		return
	}
	mode, err := d.prog.Attach(d.cfg.BPFFS, name, d.cfg.Mode)
	if err != nil {
		if !d.gone[name] { // once, not every second
			d.log.Error("cannot attach", "interface", name, "error", err)
		}
		delete(d.attached, name)
		d.gone[name] = true // log again only when something changes
		return
	}
	if d.cfg.Mode == loader.ModeAuto && mode == loader.ModeGeneric {
		d.log.Warn("the driver refused native XDP: attached in generic mode (slower; set mode: generic to make it explicit)", "interface", name)
	}
	d.log.Info("attached", "interface", name, "mode", mode, "ifindex", l.Attrs().Index)
	d.attached[name] = mode
	delete(d.gone, name)
}
