package vethbench

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/portcullis/portcullis/testenv"
)

// Destination is where the benchmark's SYNs go: a documentation address the Line routes
// to its sink.
var Destination = netip.MustParseAddr("203.0.113.25")

// TrafgenConfig is trafgen's packet configuration for the benchmark's traffic: 54-byte
// TCP SYNs to Destination:25 from gen's eth0 (srcMAC) to the router's sub0 (dstMAC),
// each from a new source across TrafficNet: the second octet counts through 64–79
// (dinc), the last two are random (drnd), as are the IP id, source port and sequence
// number; trafgen fixes both checksums per packet (csumip, csumtcp).
func TrafgenConfig(dstMAC, srcMAC net.HardwareAddr) string {
	t := TrafficNet.Masked().Addr().As4()
	d := Destination.As4()
	return fmt.Sprintf(`{
  %s,
  %s,
  c16(0x0800),
  0x45, 0, c16(40), drnd(2), 0x40, 0, 64, 6, csumip(14, 33),
  %d, dinc(%d, %d), drnd(2),
  %d, %d, %d, %d,
  drnd(2), c16(25), drnd(4), c32(0), c16((5 << 12) | 2), c16(64240), csumtcp(14, 34), c16(0),
}
`, macBytes(dstMAC), macBytes(srcMAC), t[0], t[1], int(t[1])+1<<(32-TrafficNet.Bits()-16)-1, d[0], d[1], d[2], d[3])
}

func macBytes(m net.HardwareAddr) string {
	s := make([]string, len(m))
	for i, b := range m {
		s[i] = fmt.Sprintf("0x%02x", b)
	}
	return strings.Join(s, ", ")
}

// Generator is a running trafgen.
type Generator struct {
	pgid int
	out  bytes.Buffer
	done chan error
}

// maxPPS bounds the packets a generator sends (--num), so that one orphaned by a killed
// benchmark (trafgen's worker is a child process of its own) stops by itself.
const maxPPS = 3_000_000

// StartGenerator starts trafgen in gen's namespace on its eth0 with the configuration
// in cfgPath and one worker (--cpus 1: trafgen pins it to CPU 0) at nice -20
// (--prio-high: veth runs the router's receive path in the sender's context, so this
// keeps other processes of a shared machine off both), for at most about d:
// it sends at most maxPPS × d packets. It runs in a process group of its own (trafgen
// forks its worker), which Stop signals.
func StartGenerator(line *testenv.Line, cfgPath string, d time.Duration) (*Generator, error) {
	g := &Generator{done: make(chan error, 1)}
	cmd := line.Gen.Command("trafgen", "--dev", testenv.LineGenIf, "--conf", cfgPath, "--cpus", "1",
		"--no-sock-mem", "--prio-high", "--num", strconv.FormatInt(int64(d.Seconds()*maxPPS), 10))
	cmd.Stdout, cmd.Stderr = &g.out, &g.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting trafgen: %w", err)
	}
	g.pgid = cmd.Process.Pid
	go func() { g.done <- cmd.Wait() }()
	return g, nil
}

// Exited reports whether trafgen has stopped by itself (it sent its --num, or failed).
func (g *Generator) Exited() bool {
	select {
	case err := <-g.done:
		g.done <- err
		return true
	default:
		return false
	}
}

var outgoing = regexp.MustCompile(`(\d+) packets outgoing`)

// Stop interrupts the process group (SIGINT: trafgen prints its count and exits; after
// 5 s, SIGKILL) and returns how many packets trafgen says it sent.
func (g *Generator) Stop() (uint64, error) {
	_ = syscall.Kill(-g.pgid, syscall.SIGINT)
	var err error
	select {
	case err = <-g.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-g.pgid, syscall.SIGKILL)
		err = <-g.done
		return 0, fmt.Errorf("trafgen did not stop on SIGINT within 5 s (killed): %v\n%s", err, g.out.String())
	}
	// Interrupted, trafgen exits 0; the parent may report the signal.
	var ee interface{ ExitCode() int }
	if err != nil && !(errors.As(err, &ee) && ee.ExitCode() <= 0) {
		out := strings.TrimSpace(g.out.String())
		return 0, fmt.Errorf("trafgen: %v: %s\n%s", err, out[strings.LastIndexByte(out, '\n')+1:], out)
	}
	m := outgoing.FindStringSubmatch(g.out.String())
	if m == nil {
		return 0, fmt.Errorf("trafgen reported no count:\n%s", g.out.String())
	}
	return strconv.ParseUint(m[1], 10, 64)
}

// Kill ends the process group at once, for teardown after a failure or an interrupt.
func (g *Generator) Kill() {
	_ = syscall.Kill(-g.pgid, syscall.SIGKILL)
}
