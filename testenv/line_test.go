package testenv_test

import (
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/portcullis/portcullis/internal/testutil"
	"github.com/portcullis/portcullis/testenv"
)

// TestLine: gen's packets to the documentation destination are forwarded by the router
// out of up0 (and dropped by the sink's XDP); Close leaves no namespace behind.
func TestLine(t *testing.T) {
	testutil.RequireRoot(t)
	l, err := testenv.NewLine()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	before, err := l.Router.Stats(testenv.LineUpIf)
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	err = l.Gen.Do(func() error {
		c, err := net.Dial("udp4", "203.0.113.25:9")
		if err != nil {
			return err
		}
		defer c.Close()
		for range n {
			if _, err := c.Write([]byte("x")); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		after, err := l.Router.Stats(testenv.LineUpIf)
		if err != nil {
			t.Fatal(err)
		}
		if got := after.TxPackets - before.TxPackets; got >= n {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("router sent %d packets out of %s, want %d", got, testenv.LineUpIf, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	names := []string{l.Gen.Name, l.Router.Name, l.Sink.Name}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		if out, err := exec.Command("ip", "netns", "list").Output(); err == nil && strings.Contains(string(out), name) {
			t.Errorf("namespace %s left after Close", name)
		}
	}
}
