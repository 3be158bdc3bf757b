package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/portcullis/portcullis/loader"
)

// `ip netns exec NS` gives the command a mount namespace of its own with a fresh /sys:
// no bpffs there, and one mounted from inside dies with the namespace. The daemon must
// refuse to start like that (its pins, links and program would go with its last
// process), and the readers must say why they see nothing. `nsenter --net=` and a
// host bpffs made visible to the namespace both keep enforcement across kill -9.
func TestDaemonNetnsExec(t *testing.T) {
	l := newLab(t)
	ipExec := []string{"ip", "netns", "exec", l.router}

	t.Log("ip netns exec with no bpffs in view: refused, with what to do, nothing attached")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, ipExec[0], append(ipExec[1:], binary(t), "run", "--config", l.cfg)...)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("the daemon started under `ip netns exec` with its pins in a private bpffs instead of refusing:\n%s", out)
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("run under ip netns exec: %v, want exit 1\n%s", err, out)
	}
	for _, want := range []string{"pins would not outlive this process", "ip netns exec", "nsenter --net=/run/netns/" + l.router + " portcullis run", "mount --bind /sys/fs/bpf"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the refusal does not say %q:\n%s", want, out)
		}
	}
	if links, err := loader.PinnedLinks(l.bpffs); err != nil || len(links) != 0 {
		t.Errorf("pinned links after the refusal: %v %v", links, err)
	}
	if show, _ := exec.Command("ip", "-n", l.router, "link", "show", "sub0").CombinedOutput(); strings.Contains(string(show), "xdp") {
		t.Errorf("XDP attached after the refusal:\n%s", show)
	}
	l.expect(25, "ok")

	t.Log("nsenter --net: runs, pins in the host's bpffs")
	l.start()
	l.expect(25, "refused")

	t.Log("status, stats, top under ip netns exec: say that the bpffs is not visible here")
	for _, verb := range []string{"status", "stats", "top"} {
		c := exec.Command(ipExec[0], append(ipExec[1:], binary(t), verb, "--config", l.cfg)...)
		out, err := c.CombinedOutput()
		if err == nil || strings.Contains(string(out), "nothing pinned") || !strings.Contains(string(out), "not mounted in this mount namespace") ||
			!strings.Contains(string(out), "nsenter --net=/run/netns/"+l.router) {
			t.Errorf("%s under ip netns exec while the daemon runs: %v\n%s", verb, err, out)
		}
	}

	t.Log("kill -9: still enforcing")
	l.stop(syscall.SIGKILL)
	for range 3 {
		l.expect(25, "refused")
	}
	l.expect(587, "ok")

	t.Log("detach under ip netns exec with the daemon down: says it cannot see the pins, detaches nothing")
	c := exec.Command(ipExec[0], append(ipExec[1:], binary(t), "detach", "--config", l.cfg)...)
	out, err = c.CombinedOutput()
	if err == nil || strings.Contains(string(out), "nothing to detach") || !strings.Contains(string(out), "not mounted in this mount namespace") {
		t.Errorf("detach under ip netns exec: %v\n%s", err, out)
	}
	l.expect(25, "refused")

	t.Log("ip netns exec with the host's bpffs bind-mounted into view (the documented recipe): runs and survives kill -9")
	view := "/run/" + filepath.Base(l.bpffs) + "-bpffs"
	if err := os.MkdirAll(view, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(view) })
	sh(t, "mount", "--bind", "/sys/fs/bpf", view)
	t.Cleanup(func() { unix.Unmount(view, unix.MNT_DETACH) })
	write(t, l.cfg, strings.Replace(mustRead(t, l.cfg), "bpffs: "+l.bpffs, "bpffs: "+filepath.Join(view, filepath.Base(l.bpffs)), 1))
	l.startWith(ipExec)
	if !strings.Contains(l.log.String(), "adopted pinned link") {
		t.Fatalf("the daemon under ip netns exec did not adopt the pins of the host's bpffs:\n%s", l.log)
	}
	l.stop(syscall.SIGKILL)
	for range 3 {
		l.expect(25, "refused")
	}
	l.expect(587, "ok")
}
