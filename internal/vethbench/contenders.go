package vethbench

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/cilium/ebpf"

	"github.com/portcullis/portcullis/loader"
	"github.com/portcullis/portcullis/testenv"
)

// Contender is one way of handling the traffic on the router, switched on for a round
// and off after it. Off leaves the router as it found it: no hook, chain or program of
// one contender is in place during another's round.
type Contender struct {
	Name string
	On   func() error
	Off  func() error
}

// Contender names, in the order of the report.
const (
	Plain      = "plain forwarding"
	BareDrop   = "bare XDP_DROP"
	Portcullis = "Portcullis native XDP"
	NFT        = "nftables netdev ingress"
	IPTables   = "iptables FORWARD REJECT + ipset"
)

// Tools are the programs the benchmark runs; Missing names those not installed.
var Tools = []string{"trafgen", "nft", "ipset", "iptables", "nsenter"}

// Missing returns the Tools not found in PATH.
func Missing() []string {
	var out []string
	for _, t := range Tools {
		if _, err := exec.LookPath(t); err != nil {
			out = append(out, t)
		}
	}
	return out
}

// Setup is the contenders of one policy size on line, loaded and ready: the policy in
// Portcullis (applied, not attached), the nftables set and the ipset (filled, not
// hooked). Load holds how long each load took. Close unloads them.
type Setup struct {
	Contenders []Contender
	Load       map[string]time.Duration

	line    *testenv.Line
	prog    *loader.Program
	drop    *ebpf.Program
	iptNFT  bool // iptables is the nf_tables variant: its table is deleted after a round
	cleanup []func() error
}

// NewSetup loads set into every contender on line; dir holds the load files.
func NewSetup(line *testenv.Line, set []Prefix, dir string) (_ *Setup, err error) {
	s := &Setup{line: line, Load: map[string]time.Duration{}}
	defer func() {
		if err != nil {
			err = errors.Join(err, s.Close())
		}
	}()
	r := line.Router

	// Portcullis: load, apply, attach for a round (loader's public API only).
	start := time.Now()
	if s.prog, err = loader.Load(); err != nil {
		return nil, err
	}
	s.cleanup = append(s.cleanup, s.prog.Close)
	if err := s.prog.Apply(Tables(set)); err != nil {
		return nil, fmt.Errorf("applying %d prefixes: %w", len(set), err)
	}
	s.Load[Portcullis] = time.Since(start)

	if s.drop, err = testenv.ConstantXDP("pc_bare_drop", 1 /* XDP_DROP */); err != nil {
		return nil, err
	}
	s.cleanup = append(s.cleanup, s.drop.Close)

	// nftables: the table and its interval set, filled by `nft -f`.
	nftFile := filepath.Join(dir, "set.nft")
	if err := writeFile(nftFile, func(f *os.File) error { return WriteNFT(f, set) }); err != nil {
		return nil, err
	}
	start = time.Now()
	if err := run(r.Command("nft", "-f", nftFile)); err != nil {
		return nil, err
	}
	s.Load[NFT] = time.Since(start)
	s.cleanup = append(s.cleanup, func() error { return run(r.Command("nft", "delete", "table", "netdev", NFTTable)) })

	// iptables: the ipset, filled by `ipset restore`.
	ipsFile := filepath.Join(dir, "set.ipset")
	if err := writeFile(ipsFile, func(f *os.File) error { return WriteIPSet(f, set) }); err != nil {
		return nil, err
	}
	start = time.Now()
	if err := run(r.Command("ipset", "restore", "-file", ipsFile)); err != nil {
		return nil, err
	}
	s.Load[IPTables] = time.Since(start)
	s.cleanup = append(s.cleanup, func() error { return run(r.Command("ipset", "destroy", IPSet)) })
	v, err := r.Command("iptables", "-V").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("iptables -V: %v: %s", err, v)
	}
	s.iptNFT = strings.Contains(string(v), "nf_tables")

	detach := func() error { return nil }
	attach := func(p *ebpf.Program) func() error {
		return func() error {
			var err error
			detach, err = line.AttachXDP(r, line.SubIndex, p)
			return err
		}
	}
	xdpOff := func() error { d := detach; detach = func() error { return nil }; return d() }
	iptRule := []string{"FORWARD", "-p", "tcp", "--dport", "25", "-m", "set", "--match-set", IPSet, "src", "-j", "REJECT"}
	s.Contenders = []Contender{
		{Name: Plain, On: func() error { return nil }, Off: func() error { return nil }},
		{Name: BareDrop, On: attach(s.drop), Off: xdpOff},
		{Name: Portcullis, On: attach(s.prog.XDP()), Off: xdpOff},
		{Name: NFT,
			On: func() error {
				return runStdin(r.Command("nft", "-f", "-"), fmt.Sprintf(
					"add chain netdev %[1]s ingress { type filter hook ingress device %[2]q priority 0; policy accept; }\n"+
						"add rule netdev %[1]s ingress tcp dport 25 ip saddr @%[3]s drop\n", NFTTable, testenv.LineSubIf, NFTSet))
			},
			Off: func() error {
				return runStdin(r.Command("nft", "-f", "-"), fmt.Sprintf(
					"flush chain netdev %[1]s ingress\ndelete chain netdev %[1]s ingress\n", NFTTable))
			}},
		{Name: IPTables,
			On: func() error { return run(r.Command("iptables", append([]string{"-A"}, iptRule...)...)) },
			Off: func() error {
				if err := run(r.Command("iptables", append([]string{"-D"}, iptRule...)...)); err != nil {
					return err
				}
				if !s.iptNFT {
					return nil
				}
				// iptables-nft leaves its filter table's base chains hooked, empty:
				// deleted, the next contender's round pays for no hook of it.
				return run(r.Command("nft", "delete", "table", "ip", "filter"))
			}},
	}
	return s, nil
}

// Close unloads what NewSetup loaded.
func (s *Setup) Close() error {
	var errs []error
	for i := len(s.cleanup) - 1; i >= 0; i-- {
		errs = append(errs, s.cleanup[i]())
	}
	s.cleanup = nil
	return errors.Join(errs...)
}

func writeFile(path string, fill func(*os.File) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := fill(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// run runs cmd and returns its output in the error if it fails.
func run(cmd *exec.Cmd) error {
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(cmd.Args, " "), err, truncate(out))
	}
	return nil
}

func runStdin(cmd *exec.Cmd, stdin string) error {
	cmd.Stdin = strings.NewReader(stdin)
	return run(cmd)
}

func truncate(b []byte) []byte {
	b = bytes.TrimSpace(b)
	if len(b) > 2000 {
		return append(b[:2000], "..."...)
	}
	return b
}
