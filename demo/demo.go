// Package demo is `portcullis demo`: a small ISP built in network namespaces (testenv),
// the XDP program on its gateway under a policy, real mail sent from every subscriber,
// and a report of what happened next to what the policy says, with the counters.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"

	"github.com/portcullis/portcullis/loader"
	"github.com/portcullis/portcullis/policy"
	"github.com/portcullis/portcullis/testenv"
)

// The errors of Run that say how it ended; their messages are those of the errors they
// mark.
var (
	// ErrCannotRun marks a demo that could not run: not root, a kernel without BPF or
	// XDP, a topology that could not be built, an interrupt before the report.
	ErrCannotRun = errors.New("the demo could not run")
	// ErrMismatch marks a demo in which some attempt did not end as the policy says.
	ErrMismatch = errors.New("an attempt did not end as the policy says")
)

// Options are what to demonstrate and how.
type Options struct {
	Policy     *policy.Compiled // required
	PolicyName string           // how the report names the policy
	Mode       testenv.Mode     // how XDP is attached on the gateway
	// Hold keeps the topology up after the report, with hints for trying it by hand,
	// until the context is done; the counters are then printed again.
	Hold    bool
	Now     func() time.Time // the clock the attempts are judged by (nil: time.Now)
	Geteuid func() int       // the effective user id (nil: os.Geteuid); the demo needs 0
}

// dialTimeout is how long a client waits for an answer before calling it dropped.
const dialTimeout = time.Second

// Run builds the topology, runs the scenario, prints the report to stdout (warnings to
// stderr) and tears everything down. It returns an error marked ErrCannotRun when the
// demo could not run, and one marked ErrMismatch when an attempt did not end as the
// policy says (after the report). A done ctx interrupts it; the teardown still runs.
func Run(ctx context.Context, o Options, stdout, stderr io.Writer) error {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Geteuid == nil {
		o.Geteuid = os.Geteuid
	}
	c := o.Policy
	if err := preflight(o.Geteuid()); err != nil {
		return mark(ErrCannotRun, err)
	}
	if removed, err := testenv.SweepStale(); err != nil {
		fmt.Fprintf(stderr, "warning: %v\n", err)
	} else if len(removed) > 0 {
		fmt.Fprintf(stderr, "removed %d namespaces left by an earlier run that was killed\n", len(removed))
	}

	prog, err := loader.Load()
	if err != nil {
		return mark(ErrCannotRun, fmt.Errorf("loading the XDP program: %w", err))
	}
	defer prog.Close()
	if err := prog.Apply(c.Tables); err != nil {
		return mark(ErrCannotRun, fmt.Errorf("installing the policy: %w", err))
	}
	top, err := testenv.New(testenv.Options{Mode: o.Mode, XDP: prog.XDP()})
	if err != nil {
		if o.Mode == testenv.Native {
			err = fmt.Errorf("%w\n(if the kernel cannot attach XDP natively to veth, try --mode generic)", err)
		}
		return mark(ErrCannotRun, fmt.Errorf("building the test topology: %w", err))
	}
	defer top.Close()

	out := &output{w: stdout}
	w := out
	fmt.Fprintf(w, "Portcullis demo\n")
	fmt.Fprintf(w, "  policy:       %s, hash %s\n", o.PolicyName, c.Hash)
	fmt.Fprintf(w, "  gateway:      XDP in %s mode on %d subscriber interfaces\n", o.Mode, len(top.Hosts))
	fmt.Fprintf(w, "  mail servers: %s at %s and %s (a mail server of the world)\n", top.Mail.Hostname, testenv.MailV4, testenv.MailV6)
	fmt.Fprintf(w, "                %s at %s and %s (the ISP's smarthost)\n", top.Relay.Hostname, testenv.RelayV4, testenv.RelayV6)
	fmt.Fprintf(w, "                each: 25 plain, 587 STARTTLS + AUTH, 465 TLS + AUTH\n")
	fmt.Fprintf(w, "  each client sends one real message to each port of the MX; %v without an answer is \"timed out\"\n\n", dialTimeout)

	now := o.Now()
	attempts := top.Scenario(c, now)
	top.Run(attempts, dialTimeout)
	relayed := top.RelayScenario(c, now)
	top.Run(relayed, dialTimeout)
	if ctx.Err() != nil {
		return mark(ErrCannotRun, errors.New("interrupted"))
	}
	bad := printAttempts(w, attempts)
	fmt.Fprintf(w, "\nThrough the smarthost: %s sends port-25 mail to the MX, and to %s for it to relay:\n\n", testenv.RelayHost, top.Relay.Hostname)
	bad += printRelayed(w, relayed)
	all := len(attempts) + len(relayed)
	fmt.Fprintln(w)
	if bad == 0 {
		fmt.Fprintf(w, "All %d attempts ended as the policy says.\n", all)
	} else {
		fmt.Fprintf(w, "%d of %d attempts did NOT end as the policy says (marked above).\n", bad, all)
	}
	fmt.Fprintln(w)
	if err := printCounters(w, prog, c, "Counters (every packet to a governed port, by deciding rule):"); err != nil {
		return err
	}

	var result error
	if bad > 0 {
		result = mark(ErrMismatch, fmt.Errorf("%d of %d attempts did not end as the policy says", bad, all))
	}
	if out.err != nil { // nobody reads the output: no point holding
		return out.err
	}
	if o.Hold {
		printHold(w, top, attempts, relayed)
		<-ctx.Done()
		fmt.Fprintln(w, "\nStopping. Counters now, including what you sent by hand:")
		if err := printCounters(w, prog, c, ""); err != nil {
			return err
		}
	}
	return result
}

// marked is an error marked as one of the sentinels, its message unchanged.
type marked struct {
	kind, err error
}

func mark(kind, err error) error { return &marked{kind, err} }

func (m *marked) Error() string        { return m.err.Error() }
func (m *marked) Unwrap() error        { return m.err }
func (m *marked) Is(target error) bool { return target == m.kind }

// output is the demo's stdout, remembering the first write error: once stdout is
// gone the demo stops at its next check instead of running, or holding the
// topology, for nobody.
type output struct {
	w   io.Writer
	err error
}

func (o *output) Write(p []byte) (int, error) {
	if o.err != nil {
		return 0, o.err
	}
	n, err := o.w.Write(p)
	if err != nil {
		o.err = fmt.Errorf("writing the demo's output: %w", err)
	}
	return n, err
}

// preflight names what is missing before anything is built.
func preflight(euid int) error {
	if euid != 0 {
		return errors.New("the demo needs root: it creates network namespaces and veth pairs (CAP_SYS_ADMIN, CAP_NET_ADMIN) and loads BPF programs (CAP_BPF); run as root: make demo (or: sudo make demo)")
	}
	var missing []string
	for _, c := range []struct {
		what string
		err  error
	}{
		{"XDP programs (BPF_PROG_TYPE_XDP; CONFIG_BPF_SYSCALL)", features.HaveProgramType(ebpf.XDP)},
		{"tc BPF programs (BPF_PROG_TYPE_SCHED_CLS), used for the 802.1Q subscriber", features.HaveProgramType(ebpf.SchedCLS)},
		{"LPM trie maps (BPF_MAP_TYPE_LPM_TRIE)", features.HaveMapType(ebpf.LPMTrie)},
		{"map-in-map (BPF_MAP_TYPE_ARRAY_OF_MAPS)", features.HaveMapType(ebpf.ArrayOfMaps)},
	} {
		if c.err != nil {
			missing = append(missing, fmt.Sprintf("%s: %v", c.what, c.err))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("this kernel lacks what the demo needs:\n  %s", strings.Join(missing, "\n  "))
	}
	return nil
}
