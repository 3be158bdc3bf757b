package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/portcullis/portcullis/internal/testutil"
	"github.com/portcullis/portcullis/loader"
	"github.com/portcullis/portcullis/status"
)

// The daemon as an ISP runs it: a real process in a network namespace (the "router"),
// attached to a veth whose other end is a subscriber namespace; real TCP connections
// from the subscriber to listeners on the router judge it. Then it is killed, restarted,
// its interface deleted and recreated, and detached.

var binOnce struct {
	sync.Once
	path string
	err  error
}

// binary builds bin/portcullis once per test run.
func binary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "portcullis-bin-")
		if err != nil {
			binOnce.err = err
			return
		}
		binOnce.path = filepath.Join(dir, "portcullis")
		out, err := exec.Command("go", "build", "-o", binOnce.path, ".").CombinedOutput()
		if err != nil {
			binOnce.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binOnce.err != nil {
		t.Fatal(binOnce.err)
	}
	return binOnce.path
}

func requireRootNet(t *testing.T) {
	t.Helper()
	testutil.RequireRoot(t)
	for _, tool := range []string{"ip", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (iproute2, util-linux)", tool)
		}
	}
}

func sh(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// inNS runs fn on a thread inside the named namespace; sockets fn creates stay there.
func inNS(t *testing.T, name string, fn func()) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	ns, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	if err := netns.Set(ns); err != nil {
		t.Fatal(err)
	}
	defer netns.Set(orig)
	fn()
}

type lab struct {
	t              *testing.T
	router, sub    string
	dir, bpffs     string
	cfg, pol, sock string
	store          string
	metrics        string
	mode           string
	daemon         *exec.Cmd
	log            *testutil.SyncBuffer
}

// syncBuffer collects the daemon's log while the test reads it.

const labPolicy = `version: 1
ranges:
  - {name: dyn, verdict: reset, cidrs: [100.64.0.0/10]}
`

func newLab(t *testing.T) *lab {
	requireRootNet(t)
	id := fmt.Sprintf("pct%d", os.Getpid())
	l := &lab{t: t, router: id + "-r", sub: id + "-s", dir: t.TempDir(), bpffs: "/sys/fs/bpf/" + id,
		metrics: "127.0.0.1:19725", mode: "generic", log: &testutil.SyncBuffer{}}
	l.cfg, l.pol, l.sock = filepath.Join(l.dir, "portcullis.yaml"), filepath.Join(l.dir, "policy.yaml"), filepath.Join(l.dir, "ctl.sock")
	t.Cleanup(l.teardown)
	sh(t, "ip", "netns", "add", l.router)
	sh(t, "ip", "netns", "add", l.sub)
	sh(t, "ip", "-n", l.router, "link", "set", "lo", "up")
	l.wire()
	for _, port := range []int{25, 587} {
		inNS(t, l.router, func() {
			ln, err := net.Listen("tcp", fmt.Sprintf("100.64.1.1:%d", port))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ln.Close() })
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					c.Close()
				}
			}()
		})
	}
	write(t, l.pol, labPolicy)
	l.store = filepath.Join(l.dir, "runtime.db")
	write(t, l.cfg, fmt.Sprintf("interfaces: [sub0]\nmode: generic\npolicy: %s\nlisten: %s\ncontrol_socket: %s\nbpffs: %s\naudit_log: %s\nstore: %s\n",
		l.pol, l.metrics, l.sock, l.bpffs, filepath.Join(l.dir, "audit.jsonl"), l.store))
	return l
}

// wire creates the router-subscriber veth pair (again, after a deletion).
func (l *lab) wire() {
	t := l.t
	sh(t, "ip", "-n", l.router, "link", "add", "sub0", "type", "veth", "peer", "name", "eth0", "netns", l.sub)
	sh(t, "ip", "-n", l.router, "addr", "add", "100.64.1.1/24", "dev", "sub0")
	sh(t, "ip", "-n", l.sub, "addr", "add", "100.64.1.2/24", "dev", "eth0")
	sh(t, "ip", "-n", l.router, "link", "set", "sub0", "up")
	sh(t, "ip", "-n", l.sub, "link", "set", "eth0", "up")
}

func write(t *testing.T, path, s string) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func (l *lab) teardown() {
	if l.daemon != nil && l.daemon.Process != nil {
		l.daemon.Process.Kill()
		l.daemon.Wait()
	}
	if _, err := os.Stat(l.bpffs); err == nil {
		loader.Unpin(l.bpffs)
	}
	exec.Command("ip", "netns", "del", l.router).Run()
	exec.Command("ip", "netns", "del", l.sub).Run()
	if l.t.Failed() {
		l.t.Logf("daemon log:\n%s", l.log)
	}
}

// cli runs the binary in the router namespace (as the NOC would on the router).
func (l *lab) cli(args ...string) (stdout, stderr string, code int) {
	return l.cliIn("", args...)
}

// cliIn is cli run from directory dir ("": the test's).
func (l *lab) cliIn(dir string, args ...string) (stdout, stderr string, code int) {
	cmd := exec.Command("nsenter", append([]string{"--net=/run/netns/" + l.router, binary(l.t)}, args...)...)
	cmd.Dir = dir
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		l.t.Fatal(err)
	}
	return o.String(), e.String(), code
}

// start runs the daemon in the router's network namespace, as documented: nsenter
// enters only that, so the daemon pins into the host's bpffs.
func (l *lab) start(args ...string) {
	l.t.Helper()
	l.startWith([]string{"nsenter", "--net=/run/netns/" + l.router}, args...)
}

// startWith runs the daemon under the wrapper command (nsenter, ip netns exec) and
// waits until status reports it attached.
func (l *lab) startWith(wrapper []string, args ...string) {
	l.t.Helper()
	l.daemon = exec.Command(wrapper[0], slices.Concat(wrapper[1:], []string{binary(l.t), "run", "--config", l.cfg}, args)...)
	l.daemon.Stdout, l.daemon.Stderr = l.log, l.log
	if err := l.daemon.Start(); err != nil {
		l.t.Fatal(err)
	}
	l.eventually("the daemon attaches", 10*time.Second, func() bool {
		out, _, code := l.cli("status", "--json", "--config", l.cfg)
		return code == 0 && strings.Contains(out, `"running (pid`) && strings.Contains(out, `"mode": "`+l.mode+`"`)
	})
}

func (l *lab) stop(sig syscall.Signal) {
	l.t.Helper()
	l.daemon.Process.Signal(sig)
	l.daemon.Wait()
	l.daemon = nil
}

func (l *lab) eventually(what string, d time.Duration, cond func() bool) {
	l.t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			l.t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// dial connects from the subscriber to the router: "ok", "refused" or "timeout".
func (l *lab) dial(port int) string { return l.dialWithin(port, 400*time.Millisecond) }

// dialWithin is dial with a timeout of its own.
func (l *lab) dialWithin(port int, timeout time.Duration) string {
	var res string
	inNS(l.t, l.sub, func() {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("100.64.1.1:%d", port), timeout)
		switch {
		case err == nil:
			c.Close()
			res = "ok"
		case errors.Is(err, syscall.ECONNREFUSED):
			res = "refused"
		case os.IsTimeout(err):
			res = "timeout"
		default:
			res = err.Error()
		}
	})
	return res
}

func (l *lab) expect(port int, want string) {
	l.t.Helper()
	if got := l.dial(port); got != want {
		l.t.Fatalf("port %d: %s, want %s", port, got, want)
	}
}

func (l *lab) scrape() string {
	var conn net.Conn
	inNS(l.t, l.router, func() {
		var err error
		if conn, err = net.Dial("tcp", l.metrics); err != nil {
			l.t.Fatal(err)
		}
	})
	// The transport dials on a goroutine of its own: hand it the namespaced connection.
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: func(context.Context, string, string) (net.Conn, error) {
		return conn, nil
	}, DisableKeepAlives: true}}
	resp, err := c.Get("http://" + l.metrics + "/metrics")
	if err != nil {
		l.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func metric(body, series string) string {
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return v
		}
	}
	return "absent"
}

func TestDaemonLifecycle(t *testing.T) {
	l := newLab(t)
	sh(t, "ip", "-n", l.router, "link", "set", "lo", "up")
	l.start()

	t.Log("enforcing: 25 reset at once, 587 untouched")
	for range 5 {
		l.expect(25, "refused")
	}
	l.expect(587, "ok")

	t.Log("metrics, stats and top after known traffic")
	body := l.scrape()
	for series, want := range map[string]string{
		`portcullis_packets_total{entry="dyn",family="ipv4",kind="range",outcome="rst"}`: "5",
		`portcullis_rst_sent_total`:                                      "5",
		`portcullis_interface_attached{interface="sub0",mode="generic"}`: "1",
		`portcullis_last_proof_ok`:                                       "1",
		`portcullis_policy_load_failures_total`:                          "0",
		`portcullis_offender_sources`:                                    "1",
		`portcullis_offender_attempts_counted`:                           "5",
		`portcullis_offender_attempts_max_overcount`:                     "1", // ceil(e·5/4096)
	} {
		if got := metric(body, series); got != want {
			t.Errorf("%s = %s, want %s", series, got, want)
		}
	}
	if !strings.Contains(body, "portcullis_policy_info{") {
		t.Error("no portcullis_policy_info")
	}
	// The one offender's series: the subscriber's MAC, no VLAN, no PPPoE session.
	if !regexp.MustCompile(`(?m)^portcullis_offender_top_attempts\{mac="([0-9a-f]{2}:){5}[0-9a-f]{2}",pppoe_session="",source="100\.64\.1\.2",vlan=""\} 5$`).MatchString(body) {
		t.Errorf("no portcullis_offender_top_attempts series for 100.64.1.2 with its MAC:\n%s", body)
	}
	out, _, _ := l.cli("stats", "--json", "--config", l.cfg)
	var st status.Stats
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("stats --json: %v\n%s", err, out)
	}
	if len(st.Entries) != 1 || st.Entries[0] != (status.EntryStat{Kind: "range", Entry: "dyn", Outcome: "rst", Family: "ipv4", Packets: 5, Bytes: st.Entries[0].Bytes}) || st.Entries[0].Bytes == 0 {
		t.Fatalf("stats: %+v", st.Entries)
	}
	out, _, _ = l.cli("top", "--json", "--config", l.cfg)
	var top status.Offenders
	if err := json.Unmarshal([]byte(out), &top); err != nil {
		t.Fatalf("top --json: %v\n%s", err, out)
	}
	if len(top) != 1 || top[0].Source != "100.64.1.2" || top[0].Attempts != 5 || top[0].Entry != "dyn" || top[0].LastPort != 25 ||
		top[0].MaxOvercount != 1 || top[0].MAC == "" || top[0].VLAN != "" || top[0].PPPoESession != 0 {
		t.Fatalf("top: %+v", top)
	}
	out, _, _ = l.cli("top", "--config", l.cfg)
	if !strings.Contains(out, "100.64.1.2") || !strings.Contains(out, "range dyn") {
		t.Fatalf("top table:\n%s", out)
	}

	t.Log("apply: a bad policy is refused with positions, a good one goes live")
	bad := filepath.Join(l.dir, "bad.yaml")
	write(t, bad, "version: 1\nranges:\n  - {name: dyn, verdict: block, cidrs: [100.64.0.0/10]}\n")
	_, stderr, code := l.cli("apply", "--config", l.cfg, bad)
	if code != 1 || !strings.Contains(stderr, bad+":3:26: verdict \"block\"") {
		t.Fatalf("apply bad: exit %d\n%s", code, stderr)
	}
	l.expect(25, "refused")
	// A relative name, from the policy's directory: the daemon gets the absolute path,
	// so the list file is found beside the policy, as check finds it.
	write(t, filepath.Join(l.dir, "listed.txt"), "198.51.100.0/24\n")
	write(t, filepath.Join(l.dir, "rel.yaml"), labPolicy+"  - {name: listed, verdict: drop, cidrs_file: listed.txt}\n")
	if out, stderr, code := l.cliIn(l.dir, "apply", "--config", l.cfg, "rel.yaml"); code != 0 || !strings.Contains(out, "applied:") {
		t.Fatalf("apply rel.yaml from its directory: exit %d\n%s%s", code, out, stderr)
	}
	if out, _, _ := l.cli("status", "--json", "--config", l.cfg); !strings.Contains(out, filepath.Join(l.dir, "rel.yaml")) {
		t.Fatalf("status does not name the override's absolute path:\n%s", out)
	}
	exempt := filepath.Join(l.dir, "exempt.yaml")
	write(t, exempt, labPolicy+"exemptions:\n  - {cidr: 100.64.1.2, name: mx, reason: mail server, ticket: T-7}\n")
	out, stderr, code = l.cli("apply", "--config", l.cfg, exempt)
	if code != 0 || !strings.Contains(out, "applied:") || !strings.Contains(out, "all match the model") {
		t.Fatalf("apply good: exit %d\n%s%s", code, out, stderr)
	}
	l.expect(25, "ok")

	t.Log("the applied policy is an override: SIGHUP and a file change wait; release goes back to the file")
	l.daemon.Process.Signal(syscall.SIGHUP)
	l.eventually("status shows the file pending", 5*time.Second, func() bool {
		out, _, _ := l.cli("status", "--json", "--config", l.cfg)
		return strings.Contains(out, `"in_force": "override"`) && strings.Contains(out, `"file_pending": true`)
	})
	l.expect(25, "ok")
	if out, stderr, code := l.cli("apply", "--release", "--config", l.cfg); code != 0 || !strings.Contains(out, "applied:") {
		t.Fatalf("apply --release: exit %d\n%s%s", code, out, stderr)
	}
	l.expect(25, "refused")
	if _, stderr, code := l.cli("apply", "--release", "--config", l.cfg); code != 1 || !strings.Contains(stderr, "no override in force") {
		t.Fatalf("apply --release twice: exit %d\n%s", code, stderr)
	}
	l.daemon.Process.Signal(syscall.SIGHUP)

	t.Log("a change of the file is applied")
	write(t, l.pol, strings.Replace(labPolicy, "reset", "drop", 1))
	l.eventually("the file change is applied", 5*time.Second, func() bool { return l.dial(25) == "timeout" })
	write(t, l.pol, labPolicy)
	l.eventually("the file change back is applied", 5*time.Second, func() bool { return l.dial(25) == "refused" })

	audit, err := os.ReadFile(filepath.Join(l.dir, "audit.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"who":"uid:0","file":"` + bad + `"`, `"result":"rejected"`, `"who":"uid:0","file":"` + l.pol + `"`, `"who":"file"`, `"result":"applied"`} {
		if !strings.Contains(string(audit), want) {
			t.Errorf("audit log lacks %s:\n%s", want, audit)
		}
	}

	t.Log("kill -9: enforcement continues; status and stats still read the pins")
	progID := func() string {
		out, _, _ := l.cli("status", "--json", "--config", l.cfg)
		var s status.Status
		json.Unmarshal([]byte(out), &s)
		if len(s.Interfaces) != 1 {
			return "none"
		}
		return fmt.Sprint(s.Interfaces[0].ProgramID)
	}
	before := progID()
	l.stop(syscall.SIGKILL)
	l.expect(25, "refused")
	out, _, _ = l.cli("status", "--config", l.cfg)
	if !strings.Contains(out, "not running (enforcement continues") || !strings.Contains(out, "sub0") {
		t.Fatalf("status with the daemon down:\n%s", out)
	}
	rst := func() uint64 {
		out, _, _ := l.cli("stats", "--json", "--config", l.cfg)
		var st status.Stats
		json.Unmarshal([]byte(out), &st)
		for _, e := range st.Entries {
			if e.Entry == "dyn" && e.Outcome == "rst" {
				return e.Packets
			}
		}
		return 0
	}
	counted := rst()

	t.Log("restart: adopts without a gap, keeps counters, replaces the program in place")
	var gap []string
	stopDial := make(chan struct{})
	dialed := make(chan int)
	go func() {
		n := 0
		for {
			select {
			case <-stopDial:
				dialed <- n
				return
			default:
			}
			if r := l.dial(25); r != "refused" {
				gap = append(gap, r)
			}
			n++
			time.Sleep(5 * time.Millisecond)
		}
	}()
	l.start()
	time.Sleep(200 * time.Millisecond)
	close(stopDial)
	n := <-dialed
	if len(gap) > 0 {
		t.Fatalf("during the restart %d of %d connections to 25 were not reset: %v", len(gap), n, gap)
	}
	if after := progID(); after == before || after == "none" {
		t.Fatalf("program id %s before the restart, %s after: want a new program in place", before, after)
	}
	if got := rst(); got < counted+uint64(n) {
		t.Fatalf("rst counter %d after restart, want at least %d + %d (no reset)", got, counted, n)
	}
	if !strings.Contains(l.log.String(), "adopted pinned link") {
		t.Fatalf("the restarted daemon did not say it adopted the link:\n%s", l.log)
	}

	t.Log("the interface goes away and comes back: re-attached")
	sh(t, "ip", "-n", l.router, "link", "del", "sub0")
	l.wire()
	l.eventually("re-attached after recreate", 3*time.Second, func() bool { return l.dial(25) == "refused" })
	sh(t, "ip", "-n", l.router, "link", "set", "sub0", "down")
	sh(t, "ip", "-n", l.router, "link", "set", "sub0", "up")
	l.eventually("still judged after down/up", 3*time.Second, func() bool { return l.dial(25) == "refused" })
	l.expect(587, "ok")

	t.Log("detach: refused while the daemon runs, then removes everything")
	if _, stderr, code := l.cli("detach", "--config", l.cfg); code == 0 || !strings.Contains(stderr, "stop it first") {
		t.Fatalf("detach with the daemon running: exit %d %s", code, stderr)
	}
	l.stop(syscall.SIGTERM)
	l.expect(25, "refused") // a clean stop detaches nothing either
	if out, stderr, code := l.cli("detach", "--config", l.cfg); code != 0 || !strings.Contains(out, "detached from sub0") {
		t.Fatalf("detach: exit %d\n%s%s", code, out, stderr)
	}
	l.expect(25, "ok")
	if _, err := os.Stat(l.bpffs); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s still exists after detach", l.bpffs)
	}
}

// A missing interface is an error at start, or a warning with --wait-for-interfaces
// (attached when it appears).
func TestDaemonMissingInterface(t *testing.T) {
	l := newLab(t)
	sh(t, "ip", "-n", l.router, "link", "del", "sub0")
	_, stderr, code := l.cli("run", "--config", l.cfg)
	if code == 0 || !strings.Contains(stderr, "interface sub0: not found") || !strings.Contains(stderr, "--wait-for-interfaces") {
		t.Fatalf("run without the interface: exit %d\n%s", code, stderr)
	}
	l.daemon = exec.Command("nsenter", "--net=/run/netns/"+l.router, binary(t), "run", "--config", l.cfg, "--wait-for-interfaces")
	l.daemon.Stdout, l.daemon.Stderr = l.log, l.log
	if err := l.daemon.Start(); err != nil {
		t.Fatal(err)
	}
	l.eventually("the daemon warns", 5*time.Second, func() bool { return strings.Contains(l.log.String(), "will attach when it appears") })
	l.wire()
	l.eventually("attached when the interface appears", 5*time.Second, func() bool { return l.dial(25) == "refused" })
}

// Native mode on veth: the status reports it from the kernel, and drop works (reset on
// veth needs an XDP program on the peer too, see KERNEL-NOTES; testenv covers it).
func TestDaemonNativeMode(t *testing.T) {
	l := newLab(t)
	l.mode = "native"
	write(t, l.cfg, strings.Replace(mustRead(t, l.cfg), "mode: generic", "mode: native", 1))
	write(t, l.pol, strings.Replace(labPolicy, "reset", "drop", 1))
	l.start()
	l.expect(25, "timeout")
	l.expect(587, "ok")
	out, _, _ := l.cli("status", "--config", l.cfg)
	if !strings.Contains(out, "native") {
		t.Fatalf("status:\n%s", out)
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
