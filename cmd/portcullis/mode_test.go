package main

import (
	"encoding/json"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/portcullis/portcullis/status"
)

// dialLoop dials port 25 every few milliseconds until the returned function is called;
// that returns how many dials there were and the ones that were not reset.
func (l *lab) dialLoop() func() (int, []string) {
	stop, done := make(chan struct{}), make(chan struct{})
	var n int
	var gap []string
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			r := l.dial(25)
			if r == "timeout" {
				// A gap lets the SYN through to the listener ("ok"); a timeout is an RST
				// late on a loaded machine (or lost), so ask again with time to spare.
				r = l.dialWithin(25, 10*time.Second)
			}
			if r != "refused" {
				gap = append(gap, r)
			}
			n++
			time.Sleep(5 * time.Millisecond)
		}
	}()
	return func() (int, []string) {
		close(stop)
		<-done
		return n, gap
	}
}

// The configuration changes from mode: generic to mode: native while a generic link is
// pinned. The kernel holds only one of the two on an interface, and a link cannot change
// mode, so there is no switch without a gap: the daemon keeps the link, without a gap,
// and says so in the log and in status. With switch_mode it switches, and says how long
// the interface went unjudged.
func TestDaemonModeChange(t *testing.T) {
	l := newLab(t)
	l.start()
	l.expect(25, "refused")
	l.stop(syscall.SIGTERM)

	t.Log("restart with mode: native: the generic link is kept, port 25 reset throughout")
	write(t, l.cfg, strings.Replace(mustRead(t, l.cfg), "mode: generic", "mode: native", 1))
	finish := l.dialLoop()
	l.start() // waits for status to say generic
	time.Sleep(200 * time.Millisecond)
	n, gap := finish()
	if len(gap) > 0 {
		t.Fatalf("during the restart %d of %d connections to 25 were not reset: %v", len(gap), n, gap)
	}
	out, _, _ := l.cli("status", "--json", "--config", l.cfg)
	var st status.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	if len(st.Interfaces) != 1 || st.Interfaces[0].Mode != "generic" {
		t.Fatalf("status interfaces: %+v", st.Interfaces)
	}
	note := st.ModeNotes["sub0"]
	for _, want := range []string{"attached in generic mode, configured native: not switched", "native and generic XDP on one interface at once", "switch_mode: true"} {
		if !strings.Contains(note, want) {
			t.Errorf("status does not say %q about sub0: %q", want, note)
		}
	}
	text, _, _ := l.cli("status", "--config", l.cfg)
	if !strings.Contains(text, "generic (not the configured mode: see below)") || !strings.Contains(text, "sub0: attached in generic mode, configured native") {
		t.Errorf("status text:\n%s", text)
	}
	log := l.log.String()
	if !strings.Contains(log, "kept the pinned link in its mode, not the configured one") || !strings.Contains(log, "configured_mode=native attached=map[sub0:generic]") {
		t.Errorf("the daemon log does not say plainly that it kept generic:\n%s", log)
	}
	if strings.Contains(log, "switched the XDP mode") {
		t.Errorf("the daemon switched the mode without switch_mode:\n%s", log)
	}
	l.stop(syscall.SIGTERM)

	t.Log("--switch-mode: switched to native, the gap logged; reset again after it")
	// Native XDP_TX on veth is delivered only when the peer has XDP too (KERNEL-NOTES).
	pass, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2 /* XDP_PASS */), asm.Return()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pass.Close() })
	inNS(t, l.sub, func() {
		ifc, err := net.InterfaceByName("eth0")
		if err != nil {
			t.Fatal(err)
		}
		pl, err := link.AttachXDP(link.XDPOptions{Program: pass, Interface: ifc.Index, Flags: link.XDPDriverMode})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pl.Close() })
	})
	l.mode = "native"
	l.start("--switch-mode")
	if log := l.log.String(); !strings.Contains(log, "switched the XDP mode") || !strings.Contains(log, "unjudged_for=") {
		t.Fatalf("the daemon did not log the switch and its gap:\n%s", log)
	}
	for range 3 {
		l.expect(25, "refused")
	}
	l.expect(587, "ok")
	out, _, _ = l.cli("status", "--json", "--config", l.cfg)
	st = status.Status{}
	json.Unmarshal([]byte(out), &st)
	if len(st.ModeNotes) != 0 {
		t.Errorf("mode notes after the switch: %v", st.ModeNotes)
	}
	t.Logf("switch logged as: %s", grepLine(l.log.String(), "switched the XDP mode"))
}

func grepLine(s, sub string) string {
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(line, sub) {
			return line
		}
	}
	return ""
}
