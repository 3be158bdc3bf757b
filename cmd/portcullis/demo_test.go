package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/portcullis/portcullis/internal/testutil"
	"github.com/portcullis/portcullis/testenv"
)

// TestDemo runs the demo as a user would, with the built-in example policy.
func TestDemo(t *testing.T) {
	testutil.RequireRoot(t)
	out, errs, code := runCmd("demo")
	if code != 0 {
		t.Fatalf("demo: exit %d\n%s\n%s", code, out, errs)
	}
	for _, want := range []string{"examples/policy.yaml (built in)", "All 46 attempts ended as the policy says",
		"Ports 465/587: 28 of 28 delivered", "reset (range dsl-dynamic 100.64.0.0/12)", "drop (range mobile-dynamic",
		"pass (exemption bakery-mail", "reset (quarantine 198.51.100.66/32)", "Offenders",
		"smtp.isp.test at 192.0.2.26 and 2001:db8:ffff::26 (the ISP's smarthost)"} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	for _, h := range testenv.DefaultHosts {
		want := 6
		if h.Name == testenv.RelayHost {
			want += 4 // to the MX and to the smarthost on 25, both families
		}
		if n := strings.Count(out, "\n"+h.Name+" "); n != want {
			t.Errorf("demo output: %d rows for %s, want %d:\n%s", n, h.Name, want, out)
		}
	}
	// The smarthost section: the dsl host to each server, both families, as the policy says.
	for _, row := range []string{
		`dsl +100\.64\.1\.10 +mx\.portcullis\.test 192\.0\.2\.25 +25 +refused .* reset \(range dsl-dynamic 100\.64\.0\.0/12\)\n`,
		`dsl +2001:db8:1000:1::10 +mx\.portcullis\.test 2001:db8:ffff::25 +25 +refused .* reset \(range dsl-dynamic 2001:db8:1000::/36\)\n`,
		`dsl +100\.64\.1\.10 +smtp\.isp\.test 192\.0\.2\.26 +25 +delivered .* pass \(relay isp-smarthost 192\.0\.2\.26/32\)\n`,
		`dsl +2001:db8:1000:1::10 +smtp\.isp\.test 2001:db8:ffff::26 +25 +delivered .* pass \(relay isp-smarthost 2001:db8:ffff::26/128\)\n`,
		`isp-smarthost +relay +pass +ipv4 `, `isp-smarthost +relay +pass +ipv6 `,
	} {
		if !regexp.MustCompile(row).MatchString(out) {
			t.Errorf("demo output lacks a row matching %s:\n%s", row, out)
		}
	}
}

// TestDemoMismatch: a policy whose RST budget (one per CPU, refilled once a second) is
// smaller than the three reset-range hosts that try port 25 at the same moment: some
// SYNs are dropped instead of answered, the clients time out where the policy's verdict
// says refused, and the demo says so and exits 1.
func TestDemoMismatch(t *testing.T) {
	testutil.RequireRoot(t)
	p := writeFile(t, `version: 1
reset: {rate: 1, burst: 1}
ranges:
  - {name: pool, verdict: reset, cidrs: [100.64.0.0/10, 198.51.100.0/24, 2001:db8::/32]}
`)
	out, errs, code := runCmd("demo", "--mode", "generic", "--policy", p)
	if code != 1 || !strings.Contains(out, "<-- MISMATCH: policy says refused") || !strings.Contains(errs, "did not end as the policy says") {
		t.Fatalf("demo with a starved RST budget: exit %d\n%s\n%s", code, out, errs)
	}
}

func TestDemoErrors(t *testing.T) {
	if _, errs, code := runCmd("demo", "--mode", "turbo"); code != 2 || !strings.Contains(errs, `unknown XDP mode "turbo"`) {
		t.Errorf("bad mode: exit %d, %q", code, errs)
	}
	bad := writeFile(t, "version: 1\nranges:\n  - name: a\n    verdict: blok\n    cidrs: [100.64.0.0/10]\n")
	if _, errs, code := runCmd("demo", "--policy", bad); code != 2 || !strings.Contains(errs, bad+":4:14:") {
		t.Errorf("bad policy: exit %d, %q", code, errs)
	}
	defer func(f func() int) { geteuid = f }(geteuid)
	geteuid = func() int { return 1000 }
	if _, errs, code := runCmd("demo"); code != 2 || !strings.Contains(errs, "needs root") || !strings.Contains(errs, "sudo make demo") {
		t.Errorf("not root: exit %d, %q", code, errs)
	}
}

// A client that hangs up on the demo's mail server (as the "connects" hint of --hold
// does: `echo > /dev/tcp/.../25`) makes the server's next write fail with EPIPE, and
// the kernel raises SIGPIPE for it: that must not end the demo.
func TestDemoContextIgnoresSocketSIGPIPE(t *testing.T) {
	ctx, stop := demoContext()
	defer stop()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	c.(*net.TCPConn).SetLinger(0) // hang up with a reset
	c.Close()
	var werr error
	for i := 0; i < 100 && !errors.Is(werr, syscall.EPIPE); i++ {
		_, werr = srv.Write([]byte("220 mx.portcullis.test ESMTP\r\n"))
		time.Sleep(5 * time.Millisecond)
	}
	if !errors.Is(werr, syscall.EPIPE) {
		t.Fatalf("the server's write did not fail with EPIPE: %v", werr)
	}
	time.Sleep(50 * time.Millisecond) // let a caught signal arrive
	if ctx.Err() != nil {
		t.Fatal("a socket's SIGPIPE ended the demo")
	}
}

// TestHelperCLI is not a test: subprocess tests run the test binary as the portcullis
// command through it (PORTCULLIS_HELPER_CLI=1, arguments after "--").
func TestHelperCLI(t *testing.T) {
	if os.Getenv("PORTCULLIS_HELPER_CLI") != "1" {
		t.Skip("runs only as a subprocess of another test")
	}
	args := os.Args[slices.Index(os.Args, "--")+1:]
	err := run(&env{stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv, now: time.Now}, args)
	if err != nil {
		fmt.Fprintln(os.Stderr, "portcullis:", err)
	}
	os.Exit(exitCode(err))
}

// TestDemoHoldSurvivesHangUp runs `portcullis demo --hold` as its own process, follows
// its "connects" hint by hand (a client that connects to the mail server and hangs
// up), and checks the demo is still holding; then interrupts it as a user would.
func TestDemoHoldSurvivesHangUp(t *testing.T) {
	testutil.RequireRoot(t)
	for _, tool := range []string{"ip", "bash"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s to follow the demo's hint", tool)
		}
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperCLI$", "--", "demo", "--hold")
	cmd.Env = append(os.Environ(), "PORTCULLIS_HELPER_CLI=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	pr, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	hint := regexp.MustCompile(`ip netns exec (\S+) bash -c '(echo > /dev/tcp/[^']+)' +# \S+: connects`)
	var out bytes.Buffer
	var mu sync.Mutex
	found := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			mu.Lock()
			out.WriteString(sc.Text() + "\n")
			mu.Unlock()
			if m := hint.FindStringSubmatch(sc.Text()); m != nil {
				found <- m
			}
		}
	}()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var m []string
	select {
	case m = <-found:
	case err := <-exited:
		t.Fatalf("demo ended before holding: %v\n%s\n%s", err, out.String(), stderr.String())
	case <-time.After(2 * time.Minute):
		t.Fatalf("no 'connects' hint:\n%s", out.String())
	}
	time.Sleep(time.Second) // the hint is printed just before the demo waits
	for range 3 {
		if b, err := exec.Command("ip", "netns", "exec", m[1], "bash", "-c", m[2]).CombinedOutput(); err != nil {
			select {
			case werr := <-exited:
				t.Fatalf("demo --hold ended when a client hung up (%v); the hint then failed: %v\n%s", werr, err, b)
			default:
				t.Fatalf("the hint %q: %v\n%s", m[2], err, b)
			}
		}
	}
	select {
	case err := <-exited:
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("demo --hold ended when a client hung up: %v\n%s\n%s", err, out.String(), stderr.String())
	case <-time.After(2 * time.Second):
	}
	cmd.Process.Signal(os.Interrupt)
	select {
	case err := <-exited:
		mu.Lock()
		defer mu.Unlock()
		if err != nil || !strings.Contains(out.String(), "Stopping. Counters now") {
			t.Fatalf("after Ctrl-C: %v\n%s\n%s", err, out.String(), stderr.String())
		}
	case <-time.After(time.Minute):
		t.Fatal("demo did not stop on an interrupt")
	}
}
