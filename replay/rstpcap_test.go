package replay

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/portcullis/portcullis/model"
)

// The RST file is whole or not there: Close puts it in place, Abort leaves nothing.
func TestRSTWriter(t *testing.T) {
	dir := t.TempDir()
	at := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	reply := []byte{0xde, 0xad, 0xbe, 0xef}

	aborted := filepath.Join(dir, "aborted.pcap")
	w, err := CreateRSTFile(aborted)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write(Result{Time: at, Reply: reply}); err != nil {
		t.Fatal(err)
	}
	w.Abort()
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("after Abort: %v left in %s", ents, dir)
	}

	done := filepath.Join(dir, "rst.pcap")
	w, err = CreateRSTFile(done)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	if err := w.Write(Result{Time: at, Reply: reply}); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w.Abort() // after Close: a no-op
	// Read back with the replay's own reader: an Ethernet capture of the reply.
	c, err := Open(done)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fr, err := c.Next()
	if err != nil || !bytes.Equal(fr.Data, reply) || !fr.Time.Equal(at) || fr.LinkType != LinkTypeEthernet {
		t.Fatalf("read back %+v (%v), want %x at %v", fr, err, reply, at)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("want only rst.pcap in %s, have %v", dir, ents)
	}
}

// A capture that holds no packet says so, not "0 frames ()".
func TestReportEmptyCapture(t *testing.T) {
	c := compileTestPolicy(t)
	var b strings.Builder
	Report{Capture: "empty.pcap", Hash: c.Hash, At: "now", Summary: NewSummary()}.WriteText(&b, c)
	if first, _, _ := strings.Cut(b.String(), "\n"); first != "empty.pcap: 0 frames (the capture holds no packets), policy "+c.Hash+", judged at now" {
		t.Errorf("first line %q", first)
	}
}

// A frame to a protected port is said to be protected (as explain says), not merely
// "not governed".
func TestDescribeProtectedPort(t *testing.T) {
	c := compileTestPolicy(t)
	r := &Replayer{c: c, tables: c.Tables}
	for port, want := range map[uint16]string{
		587: "port 587 protected: never governed",
		465: "port 465 protected: never governed",
		443: "port 443 not governed",
	} {
		if got := r.describe(Result{Path: model.ReasonNotGoverned}, model.Packet{DstPort: port}); got != want {
			t.Errorf("port %d: %q, want %q", port, got, want)
		}
	}
}
