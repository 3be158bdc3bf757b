// Package loader owns everything that touches the kernel: it loads the XDP program,
// builds and swaps policy tables, runs packets through the program and reads counters.
package loader

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/portcullis/portcullis/bpf"
	"github.com/portcullis/portcullis/model"
)

// Sentinel errors, all of the package's.
var (
	ErrVerifier     = errors.New("the kernel verifier rejected the program")
	ErrNoPolicy     = errors.New("no policy loaded")
	ErrTooManyRules = errors.New("policy has more rules than the data plane counts")
	// ErrTooManyGroups means a policy's IPv4 ranges longer than /24 lie in more /24s
	// than the DIR-24-8 table has groups for (PC_DIR8_GROUPS a slot).
	ErrTooManyGroups = errors.New("the IPv4 table has no group left for another /24 with ranges longer than /24")
	// ErrTooManyPrefixes means a policy has more prefixes outside the IPv4 ranges than
	// half the prefixes trie holds (PC_MAX_PREFIXES: two policies must fit).
	ErrTooManyPrefixes = errors.New("policy has more prefixes than the data plane holds")
	// ErrNoRollback means there is no replaced policy to go back to.
	ErrNoRollback = errors.New("no previous policy to roll back to")
	// ErrIncompatiblePins means the maps pinned in a directory were made by a
	// Portcullis whose maps differ from this one's.
	ErrIncompatiblePins = errors.New("pinned maps are incompatible with this version")
	// ErrPinsWouldNotSurvive means pins made in a directory would go away when this
	// process exits, because the bpffs there is (or would be) mounted only in its
	// mount namespace (see bpffs.go).
	ErrPinsWouldNotSurvive = errors.New("pins would not outlive this process")
	// ErrNoBPFFSHere means no bpffs holds a directory in this process's mount
	// namespace, which is not the host's: pins made from the host are not visible.
	ErrNoBPFFSHere = errors.New("the host's bpffs is not mounted in this mount namespace")
	// ErrAlreadyAttached means another XDP program holds the interface.
	ErrAlreadyAttached = errors.New("another XDP program is already attached")
	// ErrLinkType means the interface's frames have a link layer the program cannot
	// parse, so it would judge nothing there.
	ErrLinkType = errors.New("link type the program cannot judge")
	// ErrUnknownInterface means a test run was asked for an interface that
	// SetInterfaces did not name.
	ErrUnknownInterface = errors.New("interface not known to the program")
	// ErrNotAnUpdate means UpdateEntry was given tables that differ from the live ones
	// by more than one entry's worth: they need Apply.
	ErrNotAnUpdate = errors.New("not a single-entry update of the live tables")
	// ErrModeSwitchGap explains why a change of attach mode is not seamless: the
	// kernel holds native and generic XDP on one interface only one at a time (a
	// second attach in the other mode fails with EEXIST: "Native and generic XDP
	// can't be active at the same time"), and a bpf_link cannot change mode in place
	// (BPF_LINK_UPDATE swaps programs only). Switching means detaching first: the
	// interface is unjudged until the new attach completes.
	ErrModeSwitchGap = errors.New("the kernel does not allow native and generic XDP on one interface at once, so switching the mode detaches first and leaves the interface unjudged until it is attached again")
)

// Program is a loaded Portcullis program and its maps.
type Program struct {
	objs bpf.PortcullisObjects
	spec *ebpf.CollectionSpec

	slot      uint32 // slot of the live policy
	hasPolicy bool
	tables    *model.Tables
	live      []uint32  // the live policy's compiled rule id -> stable id
	prev      *previous // what the last Apply replaced, for Rollback
	dir       dirState  // the IPv4 DIR-24-8 tables (dir.go)
	// emptyTrie[slot]: the slot's prefixes trie is the empty one Release put there
	// (not known for tables adopted from pins: a fresh one replaces it).
	emptyTrie [2]bool
	// emptyHash[slot]: the slot's ranges_v6 hash is the empty one Release put there.
	emptyHash [2]bool
	// hashed[slot]: the slot's policy has its IPv6 ranges in ranges_v6 (PC_CFG_HASH_V6);
	// runtime6[slot] are then the runtime IPv6 ranges its trie holds (nil: not known,
	// as for tables adopted from pins).
	hashed   [2]bool
	runtime6 [2]map[netip.Prefix]bool

	// labelsMu guards the three label maps, so that readers (counters, offenders,
	// metrics scrapes) need not wait for an Apply: it writes them only briefly.
	labelsMu sync.RWMutex
	labels   map[string]uint32 // rule label -> stable id (see labels.go)
	idLabels map[uint32]string
	ages     map[uint32]labelAge

	ids []ebpf.ProgramID // kernel ids of the entry points, by model.Link (see IDs)

	ifaces map[string]int      // interface name -> ifindex (SetInterfaces)
	groups []map[string]uint32 // per slot: interface -> scope group of its policy
}

// Load loads the program into the kernel (needs CAP_BPF and CAP_NET_ADMIN, or root).
// No policy is loaded: until Apply, the program passes everything.
func Load() (*Program, error) {
	spec, err := bpf.LoadPortcullis()
	if err != nil {
		return nil, fmt.Errorf("reading the embedded BPF object: %w", err)
	}
	p := &Program{spec: spec}
	if err := spec.LoadAndAssign(&p.objs, nil); err != nil {
		return nil, loadError(err)
	}
	// Fresh maps: no rule labels yet (LoadPinned and OpenPinned read theirs).
	p.labels, p.idLabels, p.ages = map[string]uint32{}, map[uint32]string{}, map[uint32]labelAge{}
	return p, nil
}

// loadError wraps a load failure; a verifier rejection carries the verifier's whole
// log, since its last line alone rarely says which check failed.
func loadError(err error) error {
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		return fmt.Errorf("%w: %+v", ErrVerifier, ve)
	}
	return fmt.Errorf("loading the BPF program: %w", err)
}

// Close releases the program and maps held by this process. Pinned or attached
// objects stay in the kernel.
func (p *Program) Close() error {
	p.dropPrev()
	p.dir.mem.unmap()
	p.dir.mem8.unmap()
	p.dir = dirState{}
	return p.objs.Close()
}

// XDP returns the program for Ethernet links, for attaching.
func (p *Program) XDP() *ebpf.Program { return p.objs.Portcullis }

// entry returns the program's entry point for links of type l: frames that start at
// an Ethernet header, or at the IP header (tun, ppp, WireGuard, IP tunnels).
func (p *Program) entry(l model.Link) *ebpf.Program {
	if l == model.LinkRawIP {
		return p.objs.PortcullisL3
	}
	return p.objs.Portcullis
}

// HasPolicy reports whether a policy is live (applied, or adopted from pinned maps).
func (p *Program) HasPolicy() bool { return p.hasPolicy }

// Tables returns the policy tables last applied, or nil.
func (p *Program) Tables() *model.Tables { return p.tables }

// bootNow reads CLOCK_BOOTTIME, the clock the program compares expiries against.
func bootNow() (time.Duration, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0, fmt.Errorf("reading CLOCK_BOOTTIME: %w", err)
	}
	return time.Duration(ts.Nano()), nil
}

// monoNow reads CLOCK_MONOTONIC, the clock of the offender record's times (the program
// reads its coarse variant: the two differ by under a tick).
func monoNow() (time.Duration, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0, fmt.Errorf("reading CLOCK_MONOTONIC: %w", err)
	}
	return time.Duration(ts.Nano()), nil
}

// bootTime converts a wall-clock time to CLOCK_BOOTTIME nanoseconds (at least 1, so
// that a time already past still reads as an expiry).
func bootTime(t time.Time, boot time.Duration, now time.Time) uint64 {
	ns := int64(boot) + int64(t.Sub(now))
	if ns < 1 {
		ns = 1
	}
	return uint64(ns)
}

// wallTime converts CLOCK_BOOTTIME nanoseconds to wall-clock time.
func wallTime(ns uint64, boot time.Duration, now time.Time) time.Time {
	return now.Add(time.Duration(int64(ns) - int64(boot)))
}
