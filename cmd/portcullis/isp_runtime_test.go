package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/portcullis/portcullis/api"
	"github.com/portcullis/portcullis/examples"
	"github.com/portcullis/portcullis/internal/testutil"
	"github.com/portcullis/portcullis/testenv"
)

// The overlay end to end in the test ISP, with the real daemon on the gateway under
// the example policy and real SMTP sessions: the abuse desk quarantines a business
// host over the API (its port-25 mail refused, 465 and 587 delivered), the daemon is
// killed with -9 and started again (the quarantine holds, and is still listed), the
// release delivers again; the portal unblocks a dynamic subscriber for a short term
// (its port-25 mail delivered), and when the term ends the daemon ends it (refused).
func TestISPRuntimeEntries(t *testing.T) {
	requireRootNet(t)
	top, err := testenv.New(testenv.Options{Mode: testenv.Generic})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { top.Close() })
	sh(t, "ip", "-n", top.Gateway.Name, "link", "set", "lo", "up") // the API listens on the gateway's loopback
	dir := t.TempDir()
	pol := filepath.Join(dir, "policy.yaml")
	write(t, pol, string(examples.Policy))
	clients := filepath.Join(dir, "clients.yaml")
	write(t, clients, fmt.Sprintf("clients:\n  - {name: abuse-desk, token_sha256: %s, scopes: [read, quarantine]}\n  - {name: portal, token_sha256: %s, scopes: [read, unblock]}\n",
		api.HashToken("desk"), api.HashToken("portal")))
	var ifaces []string
	for _, h := range top.Hosts {
		ifaces = append(ifaces, h.GatewayIf)
	}
	bpffs := fmt.Sprintf("/sys/fs/bpf/pcisp%d", os.Getpid())
	const apiAddr = "127.0.0.1:19727"
	cfg := filepath.Join(dir, "portcullis.yaml")
	write(t, cfg, fmt.Sprintf("interfaces: [%s]\nmode: generic\npolicy: %s\nlisten: \"\"\ncontrol_socket: %s\nbpffs: %s\naudit_log: %s\nstore: %s\napi:\n  listen: %s\n  clients: %s\n",
		strings.Join(ifaces, ", "), pol, filepath.Join(dir, "ctl.sock"), bpffs, filepath.Join(dir, "audit.jsonl"), filepath.Join(dir, "runtime.db"), apiAddr, clients))
	logs := &testutil.SyncBuffer{}
	var daemonCmd *exec.Cmd
	start := func() {
		t.Helper()
		daemonCmd = exec.Command("nsenter", "--net=/run/netns/"+top.Gateway.Name, binary(t), "run", "--config", cfg)
		daemonCmd.Stdout, daemonCmd.Stderr = logs, logs
		if err := daemonCmd.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			out, _ := exec.Command("nsenter", "--net=/run/netns/"+top.Gateway.Name, binary(t), "status", "--json", "--config", cfg).Output()
			if strings.Count(string(out), `"mode": "generic"`) == len(ifaces) && strings.Contains(string(out), "running (pid") {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the daemon did not attach to %d interfaces:\n%s\nlog:\n%s", len(ifaces), out, logs)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	t.Cleanup(func() {
		if daemonCmd != nil && daemonCmd.Process != nil {
			daemonCmd.Process.Kill()
			daemonCmd.Wait()
		}
		exec.Command(binary(t), "detach", "--bpffs", bpffs).Run()
		if t.Failed() {
			t.Logf("daemon log:\n%s", logs)
		}
	})
	start()

	call := func(token, method, path, body string) (int, string) {
		t.Helper()
		conn, err := top.Gateway.Dial("tcp", apiAddr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return apiCall(t, conn, apiAddr, token, method, path, body)
	}
	mail := func(host string, port uint16) testenv.Outcome {
		t.Helper()
		h := top.Host(host)
		got, err, _ := top.Send(h, h.V4, port, 2*time.Second)
		if got != testenv.Delivered && got != testenv.Refused && got != testenv.TimedOut {
			t.Fatalf("%s port %d: %s (%v)", host, port, got, err)
		}
		return got
	}
	expect := func(host string, port uint16, want testenv.Outcome) {
		t.Helper()
		if got := mail(host, port); got != want {
			t.Fatalf("%s port %d: %s, want %s", host, port, got, want)
		}
	}

	expect("business", 25, testenv.Delivered)
	if code, body := call("desk", "POST", "/v1/quarantines", `{"address": "198.51.100.10", "reason": "spam run from a compromised host", "ticket": "AB-3001"}`); code != 201 {
		t.Fatalf("quarantine: %d %s", code, body)
	}
	expect("business", 25, testenv.Refused)
	expect("business", 465, testenv.Delivered)
	expect("business", 587, testenv.Delivered)

	daemonCmd.Process.Signal(syscall.SIGKILL)
	daemonCmd.Wait()
	expect("business", 25, testenv.Refused) // enforced with the daemon dead
	start()
	expect("business", 25, testenv.Refused)
	if code, body := call("portal", "GET", "/v1/entries", ""); code != 200 || !strings.Contains(body, "AB-3001") {
		t.Fatalf("entries after kill -9: %d %s", code, body)
	}
	if code, body := call("desk", "DELETE", "/v1/quarantines/198.51.100.10?reason=cleaned", ""); code != 200 {
		t.Fatalf("release: %d %s", code, body)
	}
	expect("business", 25, testenv.Delivered)

	expect("dsl", 25, testenv.Refused)
	if code, body := call("portal", "POST", "/v1/unblocks", `{"address": "100.64.1.10", "for": "20s", "reason": "customer runs their own MX", "ticket": "P-77"}`); code != 201 {
		t.Fatalf("unblock: %d %s", code, body)
	}
	expect("dsl", 25, testenv.Delivered)
	// The term ends; the daemon ends the unblock (the data plane keeps no expiry for it).
	deadline := time.Now().Add(90 * time.Second)
	for mail("dsl", 25) != testenv.Refused {
		if time.Now().After(deadline) {
			t.Fatal("the unblock did not end after its term")
		}
		time.Sleep(time.Second)
	}
	if code, body := call("portal", "GET", "/v1/entries", ""); code != 200 || strings.Contains(body, "P-77") {
		t.Fatalf("entries after the term: %d %s", code, body)
	}
}
