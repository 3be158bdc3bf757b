package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"github.com/portcullis/portcullis/internal/testutil"
	"github.com/portcullis/portcullis/model"
	"github.com/portcullis/portcullis/policy"
	"github.com/portcullis/portcullis/replay"
)

var (
	subMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01}
	gwMAC  = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x02}
)

// tcpFrame builds an Ethernet frame with a TCP segment from src to dst:port.
func tcpFrame(t *testing.T, src, dst string, port uint16, syn, ack bool) []byte {
	t.Helper()
	s, d := netip.MustParseAddr(src), netip.MustParseAddr(dst)
	eth := &layers.Ethernet{SrcMAC: subMAC, DstMAC: gwMAC, EthernetType: layers.EthernetTypeIPv4}
	var ip gopacket.SerializableLayer
	var netl gopacket.NetworkLayer
	if s.Is6() {
		eth.EthernetType = layers.EthernetTypeIPv6
		ip6 := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolTCP, SrcIP: s.AsSlice(), DstIP: d.AsSlice()}
		ip, netl = ip6, ip6
	} else {
		ip4 := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: s.AsSlice(), DstIP: d.AsSlice()}
		ip, netl = ip4, ip4
	}
	tcp := &layers.TCP{SrcPort: 40000, DstPort: layers.TCPPort(port), Seq: 1000, SYN: syn, ACK: ack, Window: 1024}
	tcp.SetNetworkLayerForChecksum(netl)
	b := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(b, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, tcp); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func writeCapture(t *testing.T, frames [][]byte) string {
	t.Helper()
	var b bytes.Buffer
	w := pcapgo.NewWriter(&b)
	if err := w.WriteFileHeader(65536, layers.LinkTypeEthernet); err != nil {
		t.Fatal(err)
	}
	for _, f := range frames {
		if err := w.WritePacket(gopacket.CaptureInfo{Timestamp: cmdNow, CaptureLength: len(f), Length: len(f)}, f); err != nil {
			t.Fatal(err)
		}
	}
	p := filepath.Join(t.TempDir(), "in.pcap")
	if err := os.WriteFile(p, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// replayFrames is a capture against the example policy, with what the test expects:
// verdict and deciding entry ("" for none).
func replayFrames(t *testing.T) ([][]byte, []string, []string) {
	frames := [][]byte{
		tcpFrame(t, "100.64.1.1", "192.0.2.25", 25, true, false),              // dsl-dynamic: reset
		tcpFrame(t, "100.64.1.1", "192.0.2.25", 587, true, false),             // submission: pass
		tcpFrame(t, "100.64.1.1", "192.0.2.25", 25, false, true),              // dsl-dynamic, not a SYN: drop
		tcpFrame(t, "100.96.0.9", "192.0.2.25", 25, true, false),              // mobile-dynamic: drop
		tcpFrame(t, "100.80.3.3", "192.0.2.25", 25, true, false),              // wifi-hotspots: monitor
		tcpFrame(t, "100.64.12.25", "192.0.2.25", 25, true, false),            // bakery-mail: pass
		tcpFrame(t, "198.51.100.66", "192.0.2.25", 25, true, false),           // quarantine: reset
		tcpFrame(t, "2001:db8:1000::9", "2001:db8:ffff::25", 25, true, false), // dsl-dynamic v6: reset
		tcpFrame(t, "203.0.113.200", "192.0.2.25", 25, true, false),           // default: pass
	}
	verdicts := []string{"reset", "pass", "drop", "drop", "monitor", "pass", "reset", "reset", "pass"}
	entries := []string{"dsl-dynamic", "", "dsl-dynamic", "mobile-dynamic", "wifi-hotspots", "bakery-mail", "quarantine 198.51.100.66/32", "dsl-dynamic", "default"}
	return frames, verdicts, entries
}

func TestReplayJSONAndRSTFile(t *testing.T) {
	testutil.RequireRoot(t)
	frames, verdicts, entries := replayFrames(t)
	in := writeCapture(t, frames)
	out := filepath.Join(t.TempDir(), "rst.pcap")
	stdout, stderr, code := runAt("replay", "--policy", example, "--json", "-w", out, in)
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
	}
	sc := bufio.NewScanner(strings.NewReader(stdout))
	var lines []map[string]any
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %q is not JSON: %v", sc.Text(), err)
		}
		lines = append(lines, m)
	}
	if len(lines) != len(frames)+1 {
		t.Fatalf("%d lines, want %d frames + summary:\n%s", len(lines), len(frames), stdout)
	}
	for i, m := range lines[:len(frames)] {
		entry, hasEntry := m["entry"]
		if !hasEntry {
			t.Errorf("frame %d: no entry key", i+1)
		}
		want := any(nil)
		if entries[i] != "" {
			want = entries[i]
		}
		if m["frame"] != float64(i+1) || m["verdict"] != verdicts[i] || entry != want || m["reason"] == "" {
			t.Errorf("frame %d: %v; want verdict %s entry %v", i+1, m, verdicts[i], want)
		}
	}
	var sum struct {
		Summary struct {
			Frames      int            `json:"frames"`
			Verdicts    map[string]int `json:"verdicts"`
			Port25SYNs  map[string]int `json:"port25_syns"`
			Unparseable int            `json:"unparseable"`
			Problems    int            `json:"disagreements"`
			Entries     map[string]map[string]int
			Resets      int `json:"resets"`
		} `json:"summary"`
	}
	last, _ := json.Marshal(lines[len(frames)])
	if err := json.Unmarshal(last, &sum); err != nil {
		t.Fatal(err)
	}
	s := sum.Summary
	if s.Frames != 9 || s.Verdicts["reset"] != 3 || s.Verdicts["drop"] != 2 || s.Verdicts["pass"] != 3 || s.Verdicts["monitor"] != 1 ||
		s.Port25SYNs["reset"] != 3 || s.Port25SYNs["drop"] != 1 || s.Port25SYNs["pass"] != 2 || s.Port25SYNs["monitor"] != 1 ||
		s.Entries["dsl-dynamic"]["reset"] != 2 || s.Entries["dsl-dynamic"]["drop"] != 1 || s.Problems != 0 || s.Resets != 3 {
		t.Errorf("summary: %s", last)
	}

	// The RST file: one reply per reset frame, each answering its SYN.
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var resets []int
	for i, v := range verdicts {
		if v == "reset" {
			resets = append(resets, i)
		}
	}
	for _, i := range resets {
		data, _, err := r.ReadPacketData()
		if err != nil {
			t.Fatalf("reading RST for frame %d: %v", i+1, err)
		}
		checkRSTFor(t, frames[i], data)
	}
	if _, _, err := r.ReadPacketData(); err == nil {
		t.Error("more RSTs in the file than reset frames")
	}
}

// checkRSTFor decodes rst and checks it answers syn: RST+ACK, addresses and ports
// swapped, valid checksums.
func checkRSTFor(t *testing.T, syn, rst []byte) {
	t.Helper()
	in := gopacket.NewPacket(syn, layers.LayerTypeEthernet, gopacket.Default)
	out := gopacket.NewPacket(rst, layers.LayerTypeEthernet, gopacket.Default)
	it, _ := in.Layer(layers.LayerTypeTCP).(*layers.TCP)
	ot, ok := out.Layer(layers.LayerTypeTCP).(*layers.TCP)
	if !ok || it == nil {
		t.Fatalf("RST does not decode as TCP: %x", rst)
	}
	if !ot.RST || !ot.ACK || ot.SYN || ot.SrcPort != it.DstPort || ot.DstPort != it.SrcPort || ot.Ack != it.Seq+1 {
		t.Errorf("RST %+v does not answer SYN %d>%d seq %d", ot, it.SrcPort, it.DstPort, it.Seq)
	}
	isrc, idst := in.NetworkLayer().NetworkFlow().Endpoints()
	osrc, odst := out.NetworkLayer().NetworkFlow().Endpoints()
	if osrc != idst || odst != isrc {
		t.Errorf("addresses not swapped: %v>%v answered as %v>%v", isrc, idst, osrc, odst)
	}
	if o4, ok := out.Layer(layers.LayerTypeIPv4).(*layers.IPv4); ok {
		cp := *o4
		if err := cp.SerializeTo(gopacket.NewSerializeBuffer(), gopacket.SerializeOptions{ComputeChecksums: true}); err != nil || cp.Checksum != o4.Checksum {
			t.Errorf("IPv4 checksum %#x, want %#x", o4.Checksum, cp.Checksum)
		}
	}
	cp := *ot
	cp.SetNetworkLayerForChecksum(out.NetworkLayer())
	if err := cp.SerializeTo(gopacket.NewSerializeBuffer(), gopacket.SerializeOptions{ComputeChecksums: true}); err != nil || cp.Checksum != ot.Checksum {
		t.Errorf("TCP checksum %#x, want %#x", ot.Checksum, cp.Checksum)
	}
}

func TestReplayText(t *testing.T) {
	testutil.RequireRoot(t)
	frames, verdicts, _ := replayFrames(t)
	in := writeCapture(t, frames)
	stdout, stderr, code := runAt("replay", "--policy", example, "-v", in)
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
	}
	lines := strings.Split(stdout, "\n")
	for i, v := range verdicts {
		if f := strings.Fields(lines[i]); len(f) < 4 || f[0] != strconv.Itoa(i+1) || !strings.Contains(lines[i], " "+v+" ") {
			t.Errorf("line %d %q: want frame %d, verdict %s", i, lines[i], i+1, v)
		}
	}
	for _, want := range []string{"9 frames (Ethernet)", "reset             3              3", "dsl-dynamic", "(none: not judged)", "unparseable frames: 0", "agree on every frame"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, stdout)
		}
	}
	// Without -v: only the summary.
	stdout, _, _ = runAt("replay", "--policy", example, in)
	if strings.Contains(stdout, "100.64.1.1") || !strings.Contains(stdout, "DECIDING ENTRY") {
		t.Errorf("summary only:\n%s", stdout)
	}
}

func TestReplayBadInput(t *testing.T) {
	testutil.RequireRoot(t)
	frames, _, _ := replayFrames(t)
	in := writeCapture(t, frames)
	b, _ := os.ReadFile(in)
	cut := filepath.Join(t.TempDir(), "cut.pcap")
	os.WriteFile(cut, b[:len(b)-5], 0o644)
	bad := writeFile(t, "version: 1\nranges:\n  - name: a\n    verdict: blok\n    cidrs: [100.64.0.0/10]\n")

	cases := []struct {
		name string
		args []string
		out  string // in stdout
		err  string // in stderr
	}{
		{"no policy flag", []string{"replay", in}, "", "replay needs --policy FILE"},
		{"no capture", []string{"replay", "--policy", example}, "", "takes one capture file"},
		{"policy twice", []string{"replay", "--policy", example, example, in}, "", "takes the policy once"},
		{"missing capture", []string{"replay", "--policy", example, "/nonexistent/x.pcap"}, "", "/nonexistent/x.pcap: cannot open"},
		{"not a capture", []string{"replay", "--policy", example, example}, "", "not a pcap or pcapng capture"},
		{"invalid policy", []string{"replay", "--policy", bad, in}, "", `verdict "blok"`},
		{"missing policy", []string{"replay", "--policy", "/nonexistent/p.yaml", in}, "", "/nonexistent/p.yaml"},
		{"truncated capture", []string{"replay", "--policy", example, cut}, "8 frames", "cut.pcap: record 9: truncated"},
		{"unwritable -w", []string{"replay", "--policy", example, "-w", "/nonexistent/dir/o.pcap", in}, "", "cannot write /nonexistent/dir/o.pcap"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			stdout, stderr, code := runAt(c.args...)
			if code != 2 || !strings.Contains(stdout, c.out) || !strings.Contains(stderr, c.err) {
				t.Errorf("exit %d, want 2; stdout %q (want %q) stderr %q (want %q)", code, stdout, c.out, stderr, c.err)
			}
		})
	}
	// The policy may also come first, as in check, explain and diff.
	if pos, _, code := runAt("replay", example, in); code == 2 {
		t.Errorf("replay POLICY CAPTURE: exit %d\n%s", code, pos)
	} else if flag, _, _ := runAt("replay", "--policy", example, in); pos != flag {
		t.Errorf("replay POLICY CAPTURE and replay --policy POLICY CAPTURE differ:\n%s\n---\n%s", pos, flag)
	}
	// A truncated capture in --json: the frames before the damage, then a summary
	// that names the damage.
	stdout, _, code := runAt("replay", "--policy", example, "--json", cut)
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if code != 2 || len(lines) != 9 || !strings.Contains(lines[8], `"error":"`) || !strings.Contains(lines[8], "record 9: truncated") {
		t.Errorf("truncated --json: exit %d\n%s", code, stdout)
	}
}

// A SYN behind an IPv6 hop-by-hop header from a reset range: the program's RST is
// right (its ack counts only the TCP payload), and the replay must say so (exit 0),
// not call it a bug.
func TestReplayHopByHopSYN(t *testing.T) {
	testutil.RequireRoot(t)
	plain := tcpFrame(t, "2001:db8:1000::9", "2001:db8:ffff::25", 25, true, false)
	// Insert an 8-byte hop-by-hop header (PadN) between the IPv6 header and TCP.
	const l3 = 14
	f := append([]byte(nil), plain[:l3+40]...)
	f = append(f, byte(layers.IPProtocolTCP), 0, 1, 4, 0, 0, 0, 0)
	f = append(f, plain[l3+40:]...)
	f[l3+6] = 0                                                    // next header: hop-by-hop
	f[l3+4], f[l3+5] = byte((len(f)-l3-40)>>8), byte(len(f)-l3-40) // payload length
	in := writeCapture(t, [][]byte{f})
	stdout, stderr, code := runAt("replay", "--policy", example, "-v", in)
	if code != 0 || !strings.Contains(stdout, "reset    dsl-dynamic") || !strings.Contains(stdout, "agree on every frame") {
		t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
	}
}

// fakeReplay stands in for replay.File: it reports results, then returns err with the
// summary of those results.
func fakeReplay(t *testing.T, results []replay.Result, err error) {
	t.Helper()
	old := replayFile
	t.Cleanup(func() { replayFile = old })
	replayFile = func(path string, c *policy.Compiled, now time.Time, _ replay.Options, fn func(replay.Result) error) (*replay.Summary, error) {
		s := replay.NewSummary()
		for _, r := range results {
			s.Add(r)
			if err := fn(r); err != nil {
				return s, err
			}
		}
		return s, err
	}
}

// captureErr is a damaged capture as replay reports it: an ErrCapture.
type captureErr string

func (e captureErr) Error() string        { return string(e) }
func (e captureErr) Is(target error) bool { return target == replay.ErrCapture }

// A disagreement is the more important finding: a capture damaged after one still
// exits 3, and the damage is reported once, on stderr.
func TestReplayDisagreementBeatsDamage(t *testing.T) {
	damage := captureErr("in.pcap: record 3: truncated: the file ends inside this record")
	results := []replay.Result{
		{Frame: 1, Verdict: "pass", Action: model.ActionPass, LinkType: replay.LinkTypeEthernet},
		{Frame: 2, Verdict: "reset", Action: model.ActionTX, LinkType: replay.LinkTypeEthernet,
			Problems: []string{"model disagrees: action XDP_DROP, program XDP_TX"}},
	}
	fakeReplay(t, results, damage)
	for _, args := range [][]string{{}, {"--json"}} {
		stdout, stderr, code := runAt(append(append([]string{"replay", "--policy", example}, args...), "in.pcap")...)
		if code != 3 || !strings.Contains(stderr, "frame 2: model disagrees: action XDP_DROP") || !strings.Contains(stderr, "disagree on 1 frame(s)") {
			t.Errorf("%v: exit %d, want 3\nstdout %s\nstderr %s", args, code, stdout, stderr)
		}
		// On stderr once; --json also names it in the summary's "error", for machines.
		text := stdout
		if len(args) > 0 {
			text = ""
			if !strings.Contains(stdout, `"error":"in.pcap: record 3: truncated`) {
				t.Errorf("--json: the summary does not name the damage:\n%s", stdout)
			}
		}
		if strings.Count(text+stderr, "record 3: truncated") != 1 || !strings.Contains(stderr, "record 3: truncated") {
			t.Errorf("%v: the damage must be reported once, on stderr\nstdout %s\nstderr %s", args, stdout, stderr)
		}
	}
	// Damage alone: exit 2, reported once.
	fakeReplay(t, results[:1], damage)
	stdout, stderr, code := runAt("replay", "--policy", example, "in.pcap")
	if code != 2 || strings.Count(stdout+stderr, "record 3: truncated") != 1 || !strings.Contains(stdout, "stopped early") {
		t.Errorf("damage only: exit %d\nstdout %s\nstderr %s", code, stdout, stderr)
	}
}

// A capture of a link type the replay cannot read says so once, before any program is
// loaded (so also without root).
func TestReplayUnsupportedLinkTypeOnce(t *testing.T) {
	var b bytes.Buffer
	w := pcapgo.NewWriter(&b)
	if err := w.WriteFileHeader(65536, layers.LinkTypeIEEE802_11); err != nil {
		t.Fatal(err)
	}
	f := make([]byte, 40)
	if err := w.WritePacket(gopacket.CaptureInfo{Timestamp: cmdNow, CaptureLength: len(f), Length: len(f)}, f); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "wifi.pcap")
	if err := os.WriteFile(p, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code := runAt("replay", "--policy", example, p)
	if code != 2 || strings.Count(stdout+stderr, "unsupported link type 105 (802.11)") != 1 || stdout != "" {
		t.Errorf("exit %d, want 2 and the error once\nstdout %q\nstderr %q", code, stdout, stderr)
	}
}
