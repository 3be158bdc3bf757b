package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Namespace is a named network namespace (visible to `ip netns`) created by testenv.
type Namespace struct {
	Name   string
	handle netns.NsHandle
	nl     *netlink.Handle // netlink socket opened inside the namespace
}

// namePrefix starts every namespace testenv creates: "pcx-PID-N-ROLE". The PID lets
// SweepStale tell a dead run's leftovers from a live run's namespaces.
const namePrefix = "pcx-"

// netnsDir is where named namespaces are bind-mounted (what `ip netns` reads).
const netnsDir = "/run/netns"

// newNamespace creates the named namespace name and opens a netlink handle in it. The
// calling goroutine's thread is switched into the new namespace by the kernel call, so
// the work runs on a locked thread that is switched back before it is released.
func newNamespace(name string) (*Namespace, error) {
	ns := &Namespace{Name: name, handle: -1}
	err := onLockedThread(func() error {
		orig, err := netns.Get()
		if err != nil {
			return fmt.Errorf("reading the current network namespace: %w", err)
		}
		defer orig.Close()
		h, err := netns.NewNamed(name)
		if err != nil {
			return fmt.Errorf("creating network namespace %s (needs root and CONFIG_NET_NS): %w", name, err)
		}
		ns.handle = h
		if err := netns.Set(orig); err != nil {
			return errThreadStuck{err}
		}
		return nil
	})
	if err != nil {
		ns.close()
		return nil, err
	}
	ns.nl, err = netlink.NewHandleAt(ns.handle)
	if err != nil {
		ns.close()
		return nil, fmt.Errorf("netlink socket in %s: %w", name, err)
	}
	return ns, nil
}

// close deletes the namespace name and releases the handles. The kernel frees the
// namespace, and every interface in it, once nothing holds it.
func (n *Namespace) close() error {
	if n == nil {
		return nil
	}
	if n.nl != nil {
		n.nl.Close()
		n.nl = nil
	}
	if n.handle >= 0 {
		n.handle.Close()
		n.handle = -1
	}
	if err := netns.DeleteNamed(n.Name); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("deleting network namespace %s: %w", n.Name, err)
	}
	return nil
}

// errThreadStuck is returned when a thread could not be switched back to its original
// namespace; that thread is left locked so that the Go runtime discards it.
type errThreadStuck struct{ err error }

func (e errThreadStuck) Error() string {
	return "switching a thread back to its network namespace: " + e.err.Error()
}

// onLockedThread runs fn on a goroutine locked to its OS thread. If fn leaves the
// thread in a foreign namespace (errThreadStuck), the thread is not unlocked and the
// runtime destroys it when the goroutine exits, instead of reusing a thread in the
// wrong namespace.
func onLockedThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		err := fn()
		var stuck errThreadStuck
		if !errors.As(err, &stuck) {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// Do runs fn on an OS thread that has entered the namespace, and returns fn's error.
// Sockets fn creates belong to the namespace for their whole life, wherever they are
// used afterwards; goroutines fn starts do not inherit the namespace.
func (n *Namespace) Do(fn func() error) error {
	return onLockedThread(func() error {
		orig, err := netns.Get()
		if err != nil {
			return fmt.Errorf("reading the current network namespace: %w", err)
		}
		defer orig.Close()
		if err := netns.Set(n.handle); err != nil {
			return fmt.Errorf("entering network namespace %s: %w", n.Name, err)
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			return errThreadStuck{err}
		}
		return ferr
	})
}

// Dial connects to addr ("192.0.2.25:25", "[2001:db8::1]:587") from inside the
// namespace, giving up after timeout.
func (n *Namespace) Dial(network, addr string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() error {
		var err error
		d := net.Dialer{Timeout: timeout}
		c, err = d.DialContext(context.Background(), network, addr)
		return err
	})
	return c, err
}

// DialContext is Dial with a context instead of a timeout: what a gRPC or HTTP client
// takes as its dialer, so that every connection it makes starts inside the namespace.
func (n *Namespace) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() error {
		var err error
		var d net.Dialer
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Path is the namespace's file under /run/netns, for `nsenter --net=PATH`.
func (n *Namespace) Path() string { return filepath.Join(netnsDir, n.Name) }

// Listen opens a listening socket inside the namespace.
func (n *Namespace) Listen(network, addr string) (net.Listener, error) {
	var l net.Listener
	err := n.Do(func() error {
		var err error
		l, err = net.Listen(network, addr)
		return err
	})
	return l, err
}

// sysctl writes value to the sysctl at key ("net/ipv4/ip_forward") inside the
// namespace. /proc/sys/net shows the namespace of the thread that opens the file.
func (n *Namespace) sysctl(key, value string) error {
	return n.Do(func() error {
		if err := os.WriteFile(filepath.Join("/proc/sys", key), []byte(value), 0o644); err != nil {
			return fmt.Errorf("sysctl %s=%s in %s: %w", strings.ReplaceAll(key, "/", "."), value, n.Name, err)
		}
		return nil
	})
}

// TCPSegmentsSent returns how many TCP segments the namespace's stack has put on the
// wire, both families: OutSegs + RetransSegs of /proc/net/snmp. Linux counts a segment
// in OutSegs the first time it is sent (pure ACKs and RSTs included) and a retransmitted
// one, such as a SYN sent again when nothing answered, only in RetransSegs.
// /proc/net follows the process's main thread, hence /proc/thread-self/net.
func (n *Namespace) TCPSegmentsSent() (uint64, error) {
	var v uint64
	err := n.Do(func() error {
		b, err := os.ReadFile("/proc/thread-self/net/snmp")
		if err != nil {
			return err
		}
		out, err := snmpValue(string(b), "Tcp", "OutSegs")
		if err != nil {
			return err
		}
		re, err := snmpValue(string(b), "Tcp", "RetransSegs")
		v = out + re
		return err
	})
	return v, err
}

// snmpValue finds field in the header/value line pair of proto in /proc/net/snmp text.
func snmpValue(text, proto, field string) (uint64, error) {
	lines := strings.Split(text, "\n")
	for i := 0; i+1 < len(lines); i++ {
		h, v := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(h) == 0 || h[0] != proto+":" || len(v) != len(h) || v[0] != proto+":" {
			continue
		}
		for j, name := range h {
			if name == field {
				return strconv.ParseUint(v[j], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("no %s %s in /proc/net/snmp", proto, field)
}

var staleName = regexp.MustCompile(`^` + namePrefix + `(\d+)-`)

// SweepStale deletes namespaces left behind by testenv runs whose process no longer
// exists (a test binary killed before its cleanup ran). Namespaces of live processes,
// and every namespace not named by testenv, are left alone. It returns the names removed.
func SweepStale() ([]string, error) {
	ents, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, e := range ents {
		m := staleName.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		pid, _ := strconv.Atoi(m[1])
		if pid == os.Getpid() || unix.Kill(pid, 0) != unix.ESRCH {
			continue
		}
		if err := netns.DeleteNamed(e.Name()); err != nil {
			errs = append(errs, fmt.Errorf("deleting stale namespace %s: %w", e.Name(), err))
			continue
		}
		removed = append(removed, e.Name())
	}
	return removed, errors.Join(errs...)
}
