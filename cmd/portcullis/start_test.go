package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/portcullis/portcullis/api"
	"github.com/portcullis/portcullis/status"
)

// A start that fails must not leave the router half set up: a mistake found before the
// kernel is touched (the API section, its clients file, a missing interface, a port in
// use, a first start's policy) leaves nothing loaded, attached or pinned, and a
// failure after the maps were pinned on a first start removes them again. A restart
// that fails never touches what an earlier run enforces.

// runFails runs `portcullis run` in the router namespace and returns its stderr and
// exit status; a run that does not exit (it started after all) is killed after a
// generous deadline and fails the test.
func (l *lab) runFails(cfg string) (stderr string, code int) {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", "--net=/run/netns/"+l.router, binary(l.t), "run", "--config", cfg)
	var e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &e, &e
	err := cmd.Run()
	if ctx.Err() != nil {
		l.t.Fatalf("run --config %s did not exit: it started\n%s", cfg, e.String())
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		l.t.Fatal(err)
	}
	return e.String(), code
}

// with is the lab for subtest t: its helpers fail t, not the test that made the lab.
func (l *lab) with(t *testing.T) *lab {
	c := *l
	c.t = t
	return &c
}

// pins lists what is pinned in the lab's bpffs directory (none if it is gone).
func (l *lab) pins() []string {
	l.t.Helper()
	entries, err := os.ReadDir(l.bpffs)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		l.t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// xdp is what `ip link` says of XDP on sub0 in the router: "" when nothing is attached.
func (l *lab) xdp() string {
	l.t.Helper()
	out, err := exec.Command("ip", "-n", l.router, "-d", "link", "show", "sub0").CombinedOutput()
	if err != nil {
		l.t.Fatalf("ip link show sub0: %v\n%s", err, out)
	}
	for _, f := range strings.Fields(string(out)) {
		if strings.HasPrefix(f, "xdp") || strings.HasPrefix(f, "prog/xdp") {
			return f
		}
	}
	return ""
}

// programID is the id of the program on sub0 as status reads it from the pins.
func (l *lab) programID() uint32 {
	l.t.Helper()
	out, _, _ := l.cli("status", "--json", "--config", l.cfg)
	var s status.Status
	if err := json.Unmarshal([]byte(out), &s); err != nil || len(s.Interfaces) != 1 {
		l.t.Fatalf("status --json: %v\n%s", err, out)
	}
	return s.Interfaces[0].ProgramID
}

// startMistake is a configuration a start must refuse: a change of the lab's
// configuration and policy, and what the error must say.
type startMistake struct {
	name, config, want string
	policy             string // replaces the policy file, if not ""
	// first: refused only on a first start (a policy that cannot be used: with one
	// pinned, that one stays in force).
	first bool
	// touchesKernel: found only after the maps were loaded (a restart has replaced the
	// program in place by then; a first start removes its pins).
	touchesKernel bool
}

func startMistakes(l *lab) []startMistake {
	clients := filepath.Join(l.dir, "clients.yaml")
	write(l.t, clients, fmt.Sprintf("clients:\n  - {name: desk, token_sha256: %s, scopes: [read]}\n", api.HashToken("secret")))
	broken := filepath.Join(l.dir, "broken-clients.yaml")
	write(l.t, broken, "clients:\n  - {name: desk, scopes: [read]\n")
	notDir := filepath.Join(l.dir, "not-a-dir")
	write(l.t, notDir, "")
	return []startMistake{
		{name: "api in clear text", config: "api:\n  listen: 0.0.0.0:19727\n  clients: " + clients + "\n",
			want: "bearer tokens would cross the network in clear text"},
		{name: "api clients file missing", config: "api:\n  listen: 127.0.0.1:19727\n  clients: " + filepath.Join(l.dir, "absent.yaml") + "\n",
			want: "bad API clients file"},
		{name: "api clients file broken", config: "api:\n  listen: 127.0.0.1:19727\n  clients: " + broken + "\n",
			want: broken},
		{name: "api certificate missing", config: "api:\n  listen: 127.0.0.1:19727\n  clients: " + clients + "\n  tls_cert: " + filepath.Join(l.dir, "absent.pem") + "\n  tls_key: " + filepath.Join(l.dir, "absent-key.pem") + "\n",
			want: "api tls_cert"},
		{name: "metrics port in use", config: "listen: 127.0.0.1:19728\n", want: "metrics listener 127.0.0.1:19728"},
		{name: "api port in use", config: "api:\n  listen: 127.0.0.1:19728\n  clients: " + clients + "\n", want: "api listener 127.0.0.1:19728"},
		{name: "invalid policy", policy: "version: 1\nranges:\n  - {name: dyn, verdict: block, cidrs: [100.64.0.0/10]}\n",
			want: "no policy in force and the configured one cannot be used:\n" + l.pol + ":3:26: verdict \"block\"", first: true},
		{name: "audit log unwritable", config: "audit_log: " + filepath.Join(notDir, "audit.jsonl") + "\n", want: "not a directory", touchesKernel: true},
	}
}

// badConfig writes the lab's configuration with m's keys in place of the lab's to a
// file of its own, and the policy file (m's, or the lab's); it returns the file.
func (l *lab) badConfig(m startMistake) string {
	replaced := map[string]bool{}
	for _, line := range strings.Split(m.config, "\n") {
		if key, _, ok := strings.Cut(line, ":"); ok && !strings.HasPrefix(line, " ") {
			replaced[key] = true
		}
	}
	var keep []string
	for _, line := range strings.Split(mustRead(l.t, l.cfg), "\n") {
		if key, _, _ := strings.Cut(line, ":"); !replaced[key] {
			keep = append(keep, line)
		}
	}
	cfg := filepath.Join(l.dir, "bad.yaml")
	write(l.t, cfg, strings.Join(keep, "\n")+"\n"+m.config)
	write(l.t, l.pol, cmp.Or(m.policy, labPolicy))
	return cfg
}

// occupy listens on 127.0.0.1:19728 in the router namespace, for the "in use" cases.
func (l *lab) occupy() {
	inNS(l.t, l.router, func() {
		ln, err := net.Listen("tcp", "127.0.0.1:19728")
		if err != nil {
			l.t.Fatal(err)
		}
		l.t.Cleanup(func() { ln.Close() })
	})
}

// On a fresh bpffs every mistake fails the start with nothing pinned and nothing
// attached, and says so before anything says "attached" or "policy applied".
func TestDaemonStartMistakesLeaveNothing(t *testing.T) {
	l := newLab(t)
	l.occupy()
	for _, m := range startMistakes(l) {
		t.Run(m.name, func(t *testing.T) {
			l := l.with(t)
			stderr, code := l.runFails(l.badConfig(m))
			if code != 1 || !strings.Contains(stderr, m.want) {
				t.Fatalf("exit %d, want 1 and %q:\n%s", code, m.want, stderr)
			}
			for _, never := range []string{"msg=attached", "policy applied"} {
				if strings.Contains(stderr, never) {
					t.Errorf("the failed start logged %q:\n%s", never, stderr)
				}
			}
			if p := l.pins(); len(p) > 0 {
				t.Errorf("left pinned in %s: %v\n%s", l.bpffs, p, stderr)
			}
			if x := l.xdp(); x != "" {
				t.Errorf("left XDP attached to sub0: %s", x)
			}
			l.expect(25, "ok")
		})
	}

	t.Run("missing interface", func(t *testing.T) {
		l := l.with(t)
		write(t, l.pol, labPolicy)
		sh(t, "ip", "-n", l.router, "link", "del", "sub0")
		defer l.wire()
		stderr, code := l.runFails(l.cfg)
		if code != 1 || !strings.Contains(stderr, "interface sub0: not found") {
			t.Fatalf("exit %d:\n%s", code, stderr)
		}
		if p := l.pins(); len(p) > 0 {
			t.Errorf("left pinned in %s: %v\n%s", l.bpffs, p, stderr)
		}
	})

	t.Log("and the lab's own configuration then starts")
	l.start()
	l.expect(25, "refused")
}

// A restart whose configuration has a mistake fails and leaves the earlier run's
// enforcement as it was: the pins stay, port 25 stays reset, and where the mistake
// is found before the kernel is touched, the program in place is not even replaced.
// A policy that cannot be used is no mistake then: the pinned one stays in force.
func TestDaemonFailedRestartKeepsEnforcing(t *testing.T) {
	l := newLab(t)
	l.occupy()
	l.start()
	l.expect(25, "refused")
	hash := func(l *lab) string {
		out, _, _ := l.cli("status", "--json", "--config", l.cfg)
		var s status.Status
		json.Unmarshal([]byte(out), &s)
		return s.Hash
	}
	inForce := hash(l)

	t.Log("a second daemon while the first runs: refused before it replaces the first one's program")
	id := l.programID()
	stderr, code := l.runFails(l.cfg)
	if code != 1 || !strings.Contains(stderr, "another portcullis daemon is running") {
		t.Fatalf("second daemon: exit %d\n%s", code, stderr)
	}
	if got := l.programID(); got != id {
		t.Fatalf("the refused second daemon replaced the program: id %d, was %d\n%s", got, id, stderr)
	}
	if out, _, _ := l.cli("status", "--config", l.cfg); !strings.Contains(out, "running (pid") {
		t.Fatalf("the first daemon is not running any more:\n%s", out)
	}
	l.stop(syscall.SIGKILL)

	for _, m := range startMistakes(l) {
		if m.first {
			continue
		}
		t.Run(m.name, func(t *testing.T) {
			l := l.with(t)
			id := l.programID()
			stderr, code := l.runFails(l.badConfig(m))
			if code != 1 || !strings.Contains(stderr, m.want) {
				t.Fatalf("exit %d, want 1 and %q:\n%s", code, m.want, stderr)
			}
			if len(l.pins()) == 0 {
				t.Fatalf("the failed restart removed the earlier run's pins\n%s", stderr)
			}
			if x := l.xdp(); x == "" {
				t.Fatalf("the failed restart detached sub0\n%s", stderr)
			}
			if got := l.programID(); !m.touchesKernel && got != id {
				t.Errorf("the restart replaced the program (id %d, was %d) before it failed", got, id)
			}
			l.expect(25, "refused")
			if got := hash(l); got != inForce {
				t.Errorf("policy %s in force, was %s", got, inForce)
			}
		})
	}

	t.Log("a restart with a policy that cannot be used: runs, and the pinned policy stays in force")
	write(t, l.pol, "version: 1\nranges:\n  - {name: dyn, verdict: block, cidrs: [100.64.0.0/10]}\n")
	l.start()
	l.expect(25, "refused")
	l.expect(587, "ok")
	if got := hash(l); got != inForce {
		t.Errorf("policy %s in force, was %s", got, inForce)
	}
	if log := l.log.String(); !strings.Contains(log, "the configured policy was not applied; the policy in force stays") {
		t.Errorf("the daemon did not say the pinned policy stays:\n%s", log)
	}
}

// Maps pinned with no interface attached (the daemon started with
// --wait-for-interfaces and was killed before the interface came): status says that
// nothing is enforced, not that enforcement continues.
func TestStatusNothingAttached(t *testing.T) {
	l := newLab(t)
	sh(t, "ip", "-n", l.router, "link", "del", "sub0")
	l.daemon = exec.Command("nsenter", "--net=/run/netns/"+l.router, binary(t), "run", "--config", l.cfg, "--wait-for-interfaces")
	l.daemon.Stdout, l.daemon.Stderr = l.log, l.log
	if err := l.daemon.Start(); err != nil {
		t.Fatal(err)
	}
	l.eventually("the daemon runs", 30*time.Second, func() bool { return strings.Contains(l.log.String(), "msg=running") })
	l.stop(syscall.SIGKILL)
	out, _, code := l.cli("status", "--config", l.cfg)
	if code != 0 || !strings.Contains(out, "no interface attached: nothing is enforced") || strings.Contains(out, "enforcement continues") {
		t.Fatalf("status: exit %d\n%s", code, out)
	}
}

// Two daemons with the same bpffs directory but each its own control socket, store and
// audit log (a copied configuration, or a second unit): the second is refused before it
// touches the pins (its program would replace the first one's in the links, and each
// would write its next policy into the tables the other has live), and `detach` with
// the second's configuration refuses too while the first runs.
func TestDaemonSecondDaemonSamePins(t *testing.T) {
	l := newLab(t)
	l.start()
	l.expect(25, "refused")
	id := l.programID()

	other := filepath.Join(l.dir, "other")
	if err := os.Mkdir(other, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg2 := filepath.Join(other, "portcullis.yaml")
	write(t, cfg2, fmt.Sprintf("interfaces: [sub0]\nmode: generic\npolicy: %s\nlisten: \"\"\ncontrol_socket: %s\nbpffs: %s\naudit_log: %s\nstore: %s\n",
		l.pol, filepath.Join(other, "ctl.sock"), l.bpffs, filepath.Join(other, "audit.jsonl"), filepath.Join(other, "runtime.db")))
	stderr, code := l.runFails(cfg2)
	if code != 1 || !strings.Contains(stderr, "another portcullis daemon is running with these pins") || !strings.Contains(stderr, l.bpffs) {
		t.Fatalf("second daemon on the same pins: exit %d, want 1 naming %s\n%s", code, l.bpffs, stderr)
	}
	if got := l.programID(); got != id {
		t.Fatalf("the refused second daemon replaced the program: id %d, was %d\n%s", got, id, stderr)
	}
	if _, err := os.Stat(filepath.Join(other, "runtime.db")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused second daemon made its store (%v)", err)
	}
	if _, e, code := l.cli("detach", "--config", cfg2); code == 0 || !strings.Contains(e, "a daemon is running with the pins in "+l.bpffs) {
		t.Fatalf("detach with the second configuration while the first daemon runs: exit %d\n%s", code, e)
	}
	if len(l.pins()) == 0 || l.xdp() == "" {
		t.Fatal("the pins or the link are gone")
	}
	l.expect(25, "refused")
	if out, _, _ := l.cli("status", "--config", l.cfg); !strings.Contains(out, "running (pid") {
		t.Fatalf("the first daemon is not running any more:\n%s", out)
	}

	t.Log("once the first is gone (kill -9 releases its lock), the second starts and adopts its pins")
	l.stop(syscall.SIGKILL)
	l.expect(25, "refused")
	l.cfg = cfg2
	l.start()
	if got := l.programID(); got == id {
		t.Errorf("the second daemon did not load its program into the pinned link (id %d)", got)
	}
	l.expect(25, "refused")
	l.expect(587, "ok")
}

// Two daemons of one configuration started at the same moment on a first install (no
// bpffs directory yet): one runs, the other exits 1, and the one that runs answers on
// its control socket (the other must not have removed its socket file on the way).
func TestDaemonTwoFirstStartsAtOnce(t *testing.T) {
	l := newLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var cmds [2]*exec.Cmd
	done := make(chan int, 2)
	waited := 0
	for i := range cmds {
		cmds[i] = exec.CommandContext(ctx, "nsenter", "--net=/run/netns/"+l.router, binary(t), "run", "--config", l.cfg)
		cmds[i].Stdout, cmds[i].Stderr = l.log, l.log
	}
	for i, c := range cmds {
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { c.Wait(); done <- i }()
	}
	t.Cleanup(func() { // before the lab's teardown: the daemons are waited for here
		for _, c := range cmds {
			c.Process.Kill()
		}
		for range 2 - waited {
			<-done
		}
	})
	exited := <-done
	waited++
	if code := cmds[exited].ProcessState.ExitCode(); code != 1 {
		t.Fatalf("the second daemon exited %d, want 1\n%s", code, l.log)
	}
	if log := l.log.String(); !strings.Contains(log, "another portcullis daemon is running") {
		t.Fatalf("the second daemon did not say why it stopped:\n%s", log)
	}
	l.eventually("the daemon that runs answers on its control socket", 30*time.Second, func() bool {
		out, _, code := l.cli("status", "--json", "--config", l.cfg)
		return code == 0 && strings.Contains(out, `"running (pid`) && strings.Contains(out, `"mode": "generic"`)
	})
	l.expect(25, "refused")
}
