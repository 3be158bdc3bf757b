package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/portcullis/portcullis/loader"
	"github.com/portcullis/portcullis/status"
)

// `apply` on a full disk (the override's temporary file is /dev/full: ENOSPC on every
// write): the policy is applied and in force but not kept; the CLI says exactly that,
// exits 1, and does not claim the old policy stays.
func TestApplyNotKeptOnAFullDisk(t *testing.T) {
	l := newLab(t)
	l.start()
	l.expect(25, "refused")
	emergency := filepath.Join(l.dir, "emergency.yaml")
	write(t, emergency, "version: 1\nranges:\n  - {name: emergency, verdict: drop, cidrs: [100.64.0.0/10]}\n")
	if err := os.Symlink("/dev/full", filepath.Join(filepath.Dir(l.store), "override.json.new")); err != nil {
		t.Fatal(err)
	}
	out, stderr, code := l.cli("apply", "--config", l.cfg, emergency)
	if code != 1 || !strings.Contains(stderr, "no space left on device") || !strings.Contains(stderr, "applied and in force") || strings.Contains(stderr, "not applied") {
		t.Fatalf("apply on a full disk: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, stderr)
	}
	if !strings.Contains(out, "applied: ") {
		t.Errorf("apply did not show what was applied:\n%s", out)
	}
	st, _, _ := l.cli("status", "--json", "--config", l.cfg)
	var s status.Status
	if err := json.Unmarshal([]byte(st), &s); err != nil || s.Policy != emergency {
		t.Fatalf("status after apply: %v\n%s", err, st)
	}
	l.expect(25, "timeout")
}

// An interface renamed under the daemon (ip link set sub0 name sub9): its pinned link
// stays on it and goes on judging it. The log and status say it was renamed, not that
// it is gone; when an interface is created with the configured name again, the link
// moves to it and the log says that the renamed one is no longer judged.
func TestDaemonInterfaceRenamed(t *testing.T) {
	l := newLab(t)
	l.start()
	l.expect(25, "refused")
	sh(t, "ip", "-n", l.router, "link", "set", "sub0", "name", "sub9")
	l.eventually("the daemon says sub0 was renamed", 30*time.Second, func() bool {
		return strings.Contains(l.log.String(), "interface renamed") && strings.Contains(l.log.String(), "now_named=sub9")
	})
	l.expect(25, "refused") // still judged, through the link pinned as sub0
	if strings.Contains(l.log.String(), "interface is gone") {
		t.Errorf("the daemon says sub0 is gone:\n%s", l.log)
	}
	out, _, _ := l.cli("status", "--json", "--config", l.cfg)
	var s status.Status
	if err := json.Unmarshal([]byte(out), &s); err != nil || len(s.Interfaces) != 1 || s.Interfaces[0].NowNamed != "sub9" {
		t.Fatalf("status after the rename: %v\n%s", err, out)
	}
	if text, _, _ := l.cli("status", "--config", l.cfg); !strings.Contains(text, "renamed sub9 since") {
		t.Errorf("status does not say sub0 was renamed:\n%s", text)
	}

	sh(t, "ip", "-n", l.router, "link", "add", "sub0", "type", "veth", "peer", "name", "eth1", "netns", l.sub)
	sh(t, "ip", "-n", l.router, "link", "set", "sub0", "up")
	l.eventually("the daemon attaches the new sub0", 30*time.Second, func() bool {
		return strings.Contains(l.log.String(), "no_longer_judged=sub9")
	})
	out, _, _ = l.cli("status", "--json", "--config", l.cfg)
	s = status.Status{}
	if err := json.Unmarshal([]byte(out), &s); err != nil || len(s.Interfaces) != 1 || s.Interfaces[0].NowNamed != "" {
		t.Fatalf("status after the new sub0: %v\n%s", err, out)
	}
}

// An interface taken out of the configuration's interfaces: keeps its pinned link
// (adopted at the restart like any other: nothing is detached by an edit), and the
// daemon and status say so; `detach --interface` removes that one link while the
// daemon runs, and refuses an interface the daemon lists.
func TestDaemonInterfaceLeftTheConfiguration(t *testing.T) {
	l := newLab(t)
	sh(t, "ip", "-n", l.router, "link", "add", "sub1", "type", "veth", "peer", "name", "eth1", "netns", l.sub)
	sh(t, "ip", "-n", l.router, "link", "set", "sub1", "up")
	both := strings.Replace(mustRead(t, l.cfg), "interfaces: [sub0]", "interfaces: [sub0, sub1]", 1)
	only := mustRead(t, l.cfg)
	write(t, l.cfg, both)
	l.start()
	l.stop(syscall.SIGTERM)

	write(t, l.cfg, only)
	l.start()
	l.expect(25, "refused")
	if log := l.log.String(); !strings.Contains(log, "interfaces: does not list") || !strings.Contains(log, "detach --interface sub1") {
		t.Errorf("the daemon does not say sub1 is pinned but not configured:\n%s", log)
	}
	out, _, _ := l.cli("status", "--json", "--config", l.cfg)
	var s status.Status
	if err := json.Unmarshal([]byte(out), &s); err != nil || len(s.Interfaces) != 2 {
		t.Fatalf("status: %v\n%s", err, out)
	}
	for _, i := range s.Interfaces {
		if i.NotConfigured != (i.Name == "sub1") {
			t.Errorf("status: %+v", i)
		}
	}
	if _, e, code := l.cli("detach", "--interface", "sub0", "--config", l.cfg); code == 0 || !strings.Contains(e, "would attach it again") {
		t.Fatalf("detach --interface sub0 while the daemon lists it: exit %d\n%s", code, e)
	}
	o, e, code := l.cli("detach", "--interface", "sub1", "--config", l.cfg)
	if code != 0 || !strings.Contains(o, "detached from sub1") {
		t.Fatalf("detach --interface sub1: exit %d\n%s%s", code, o, e)
	}
	out, _, _ = l.cli("status", "--json", "--config", l.cfg)
	s = status.Status{}
	if err := json.Unmarshal([]byte(out), &s); err != nil || len(s.Interfaces) != 1 || s.Interfaces[0].Name != "sub0" {
		t.Fatalf("status after detach --interface sub1: %v\n%s", err, out)
	}
	if x, err := exec.Command("ip", "-n", l.router, "-d", "link", "show", "sub1").CombinedOutput(); err != nil || strings.Contains(string(x), "prog/xdp") {
		t.Fatalf("sub1 still has XDP: %v\n%s", err, x)
	}
	l.expect(25, "refused") // sub0 still judged
}

// A configured interface the daemon cannot attach is in status, marked not judged and
// why: one that does not exist (wait_for_interfaces), and one another XDP program
// holds (here: the link pinned by a daemon of another bpffs directory, killed).
func TestStatusConfiguredButNotAttached(t *testing.T) {
	l := newLab(t)
	other := filepath.Join(l.dir, "other.yaml")
	otherPins := l.bpffs + "-other"
	t.Cleanup(func() { loader.Unpin(otherPins) })
	write(t, other, strings.NewReplacer(l.bpffs, otherPins, l.sock, l.sock+"-other", l.store, l.store+"-other", "listen: "+l.metrics, `listen: ""`).Replace(mustRead(t, l.cfg)))
	cfg := l.cfg
	l.cfg = other
	l.start()
	l.stop(syscall.SIGKILL)
	l.cfg = cfg

	write(t, l.cfg, strings.Replace(mustRead(t, l.cfg), "interfaces: [sub0]", "interfaces: [sub0, sub7]\nwait_for_interfaces: true", 1))
	l.daemon = exec.Command("nsenter", "--net=/run/netns/"+l.router, binary(t), "run", "--config", l.cfg)
	l.daemon.Stdout, l.daemon.Stderr = l.log, l.log
	if err := l.daemon.Start(); err != nil {
		t.Fatal(err)
	}
	var s status.Status
	l.eventually("status names both interfaces as not attached", 30*time.Second, func() bool {
		out, _, code := l.cli("status", "--json", "--config", l.cfg)
		s = status.Status{}
		if code != 0 || json.Unmarshal([]byte(out), &s) != nil || !strings.Contains(s.Daemon, "running") {
			return false
		}
		why := map[string]string{}
		for _, i := range s.Interfaces {
			why[i.Name] = i.NotAttached
		}
		return strings.Contains(why["sub0"], "another XDP program is already attached") && why["sub7"] == "interface not found"
	})
	if text, _, _ := l.cli("status", "--config", l.cfg); !strings.Contains(text, "NOT ATTACHED, not judged: interface not found") {
		t.Errorf("status text:\n%s", text)
	}
}

// The daemon down, an interface deleted and made again (a VLAN re-created, a driver
// reloaded): the kernel detached its link, so the new interface of that name is not
// judged until the daemon is back. Status says so, rather than "interface gone" under
// "enforcement continues through the pinned links".
func TestStatusInterfaceMadeAgainWhileDown(t *testing.T) {
	l := newLab(t)
	l.start()
	l.stop(syscall.SIGKILL)
	sh(t, "ip", "-n", l.router, "link", "del", "sub0")
	l.wire()
	l.expect(25, "ok") // not judged: nothing attached to the new sub0
	out, stderr, _ := l.cli("status", "--config", l.cfg)
	if !strings.Contains(out, "deleted and made again: not judged until the daemon attaches it") || !strings.Contains(out, "nothing is enforced") {
		t.Fatalf("status with the daemon down and sub0 made again:\n%s%s", out, stderr)
	}
	l.start()
	l.expect(25, "refused")
}
