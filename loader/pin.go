package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/portcullis/portcullis/bpf"
)

// DefaultPinDir is where the daemon pins its maps and links.
const DefaultPinDir = "/sys/fs/bpf/portcullis"

// MountBPFFS makes sure dir lies on a bpffs whose pins outlive this process (see
// CheckPinsOutlive: it refuses a private one, such as `ip netns exec` would give),
// mounting one on its parent directory if that is not one yet (/sys/fs/bpf is not
// mounted at boot on every distribution), and creates dir, readable by root only.
func MountBPFFS(dir string) error {
	if err := CheckPinsOutlive(dir); err != nil {
		return err
	}
	parent := filepath.Dir(filepath.Clean(dir))
	var st unix.Statfs_t
	if err := unix.Statfs(parent, &st); err != nil {
		return fmt.Errorf("bpffs: %s: %w", parent, err)
	}
	if st.Type != unix.BPF_FS_MAGIC {
		if err := unix.Mount("bpf", parent, "bpf", 0, "mode=0700"); err != nil {
			return fmt.Errorf("mounting bpffs on %s: %w (mount it by hand: mount -t bpf bpf %s)", parent, err, parent)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("bpffs: %w", err)
	}
	return nil
}

// LoadPinned loads the program with its maps pinned in dir (a bpffs directory, see
// MountBPFFS). Maps already pinned there are reused, so counters, rule labels, the
// offender record and the live policy carry on; missing ones are created and pinned,
// and the pins of maps this version no longer has are removed (retiredMaps).
// The program itself is new: UpdateLinks puts it in place of a running one.
func LoadPinned(dir string) (*Program, error) {
	spec, err := bpf.LoadPortcullis()
	if err != nil {
		return nil, fmt.Errorf("reading the embedded BPF object: %w", err)
	}
	for name, m := range spec.Maps {
		if !strings.HasPrefix(name, ".") { // not .bss/.rodata: those belong to one program
			m.Pinning = ebpf.PinByName
		}
	}
	// Pins from before the DIR-24-8 table hold the IPv4 ranges in a trie this program
	// does not read: adopting them would judge IPv4 by the default alone.
	if _, err := os.Stat(filepath.Join(dir, "ranges_v4")); err == nil {
		if _, err := os.Stat(filepath.Join(dir, bpf.PortcullisMapDirV4)); errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%w: the maps in %s hold IPv4 ranges in a trie (ranges_v4) that this version keeps in a DIR-24-8 table (dir_v4); `portcullis detach` removes them (and enforcement), then start again", ErrIncompatiblePins, dir)
		}
	}
	p := &Program{spec: spec}
	err = spec.LoadAndAssign(&p.objs, &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: dir}})
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		return nil, fmt.Errorf("%w: %v; the maps in %s come from another Portcullis version: `portcullis detach` removes them (and enforcement), then start again", ErrIncompatiblePins, err, dir)
	}
	if err != nil {
		return nil, loadError(err)
	}
	if err := retirePins(dir); err != nil {
		p.Close()
		return nil, err
	}
	if err := p.adopt(); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

// retiredMaps are maps earlier versions pinned that this one no longer has, each with
// the map type it had (so that nothing else of that name is removed):
//   - offenders: the shared LRU table of offenders, replaced by the per-CPU record
//     (offender_sketch, offender_attempts, offender_slots).
//   - reasons: the reason counters with room for 11 reasons, replaced by
//     reason_counts (room for PC_R_SLOTS): a map of the same name and another size
//     would make the pins another version's.
var retiredMaps = []struct {
	name string
	typ  ebpf.MapType
}{
	{"offenders", ebpf.LRUHash},
	{"reasons", ebpf.PerCPUArray},
}

// retirePins removes the pins of retired maps from dir, once the maps of this version
// are pinned beside them. A program still running from the old version keeps its own
// reference to such a map until UpdateLinks replaces it, so the old program goes on
// recording into it undisturbed until then; the memory is freed with the last
// reference.
func retirePins(dir string) error {
	for _, r := range retiredMaps {
		path := filepath.Join(dir, r.name)
		m, err := ebpf.LoadPinnedMap(path, &ebpf.LoadPinOptions{ReadOnly: true})
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("reading the retired pin %s: %w", path, err)
		}
		typ := m.Type()
		m.Close()
		if typ != r.typ {
			return fmt.Errorf("%w: %s is a %v, not the %v an earlier Portcullis pinned there", ErrIncompatiblePins, path, typ, r.typ)
		}
		if err := os.Remove(path); err != nil {
			return fmt.Errorf("removing the retired pin %s: %w", path, err)
		}
	}
	return nil
}

// adopt reads the live policy's slot and the rule labels from the pinned maps.
func (p *Program) adopt() error {
	if err := p.readLabels(); err != nil {
		return err
	}
	var cm *ebpf.Map
	err := p.objs.Policy.Lookup(uint32(0), &cm)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil // pinned maps without a policy yet
	}
	if err != nil {
		return fmt.Errorf("reading the live policy: %w", err)
	}
	defer cm.Close()
	var cfg bpf.PortcullisPcConfig
	if err := cm.Lookup(uint32(0), &cfg); err != nil {
		return fmt.Errorf("reading the live policy config: %w", err)
	}
	p.slot, p.hasPolicy = cfg.Slot, true
	p.hashed[cfg.Slot&1] = cfg.Flags&cfgHash6 != 0
	// The live policy's rules are not known here: keep every labelled id in use until
	// the next Apply says which ones are.
	p.live = []uint32{0}
	for id := range p.idLabels {
		p.live = append(p.live, id)
	}
	return nil
}

// OpenPinned opens the maps pinned in dir for reading (status, stats, top), without
// loading a program: it works while the daemon is down.
func OpenPinned(dir string) (*Program, error) {
	p := &Program{}
	maps := []struct {
		name string
		m    **ebpf.Map
	}{
		{bpf.PortcullisMapPolicy, &p.objs.Policy},
		{bpf.PortcullisMapStats, &p.objs.Stats},
		{bpf.PortcullisMapReasonCounts, &p.objs.ReasonCounts},
		{bpf.PortcullisMapRuleNames, &p.objs.RuleNames},
		{bpf.PortcullisMapMeta, &p.objs.Meta},
	}
	for _, m := range maps {
		var err error
		*m.m, err = ebpf.LoadPinnedMap(filepath.Join(dir, m.name), &ebpf.LoadPinOptions{ReadOnly: true})
		if m.name == bpf.PortcullisMapReasonCounts && errors.Is(err, os.ErrNotExist) {
			// An earlier version's, until the daemon of this one starts: "reasons".
			*m.m, err = ebpf.LoadPinnedMap(filepath.Join(dir, "reasons"), &ebpf.LoadPinOptions{ReadOnly: true})
		}
		if err != nil {
			p.Close()
			if errors.Is(err, os.ErrNotExist) {
				if why := explainMissing(dir); why != nil {
					return nil, why
				}
				return nil, fmt.Errorf("nothing pinned in %s: is `portcullis run` configured with another bpffs directory, or never started? (%w)", dir, err)
			}
			return nil, fmt.Errorf("opening pinned map %s: %w", m.name, err)
		}
	}
	// Maps that came after the others: pins from before them still open. Without
	// rule_ages offenders are named as recorded; without the per-CPU offender record
	// (pins of a daemon not yet upgraded) Offenders says so (ErrNoOffenderRecord).
	optional := []struct {
		name string
		m    **ebpf.Map
	}{
		{bpf.PortcullisMapRuleAges, &p.objs.RuleAges},
		{bpf.PortcullisMapOffenderSketch, &p.objs.OffenderSketch},
		{bpf.PortcullisMapOffenderAttempts, &p.objs.OffenderAttempts},
		{bpf.PortcullisMapOffenderSlots, &p.objs.OffenderSlots},
		{bpf.PortcullisMapOffenderPeriod, &p.objs.OffenderPeriod},
	}
	for _, m := range optional {
		pm, err := ebpf.LoadPinnedMap(filepath.Join(dir, m.name), &ebpf.LoadPinOptions{ReadOnly: true})
		if err == nil {
			*m.m = pm
		} else if !errors.Is(err, os.ErrNotExist) {
			p.Close()
			return nil, fmt.Errorf("opening pinned map %s: %w", m.name, err)
		}
	}
	if err := p.readLabels(); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

// HasPinnedPolicy reports whether dir holds what a start must keep: a pinned link, or
// pinned maps with a policy in them (enforcement that goes on without the daemon). No
// pins, or maps pinned by a start that never applied a policy, is false: nothing is
// enforced through them. It only reads: the daemon asks before it loads anything.
func HasPinnedPolicy(dir string) (bool, error) {
	links, err := PinnedLinks(dir)
	if err != nil || len(links) > 0 {
		return len(links) > 0, err
	}
	m, err := ebpf.LoadPinnedMap(filepath.Join(dir, bpf.PortcullisMapPolicy), &ebpf.LoadPinOptions{ReadOnly: true})
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading the pinned policy in %s: %w", dir, err)
	}
	defer m.Close()
	var cm *ebpf.Map
	err = m.Lookup(uint32(0), &cm)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading the pinned policy in %s: %w", dir, err)
	}
	cm.Close()
	return true, nil
}

// Unpin removes every pin in dir (links first, which detaches the program from those
// interfaces, then maps) and the directory itself. Only `portcullis detach` calls it.
// Each link is detached before its pin goes (BPF_LINK_DETACH): the kernel releases an
// unpinned link only after an RCU grace period and a work item, and the program would
// go on judging for that moment after "detached" was said.
func Unpin(dir string) error {
	err := RemovePins(dir)
	if rerr := os.Remove(dir); rerr != nil {
		err = errors.Join(err, rerr)
	}
	return err
}

// RemovePins is Unpin without removing dir: every link (detached first) and map
// pinned in dir goes, dir stays. The daemon calls it to undo a start that pinned maps
// and failed before it enforced anything.
func RemovePins(dir string) error {
	links, err := PinnedLinks(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, l := range links {
		if pl, err := link.LoadPinnedLink(l.Path, nil); err == nil {
			pl.Detach() // a failure leaves it to the unlink below, which detaches later
			pl.Close()
		}
		if err := unix.Unlink(l.Path); err != nil {
			errs = append(errs, err)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, e := range entries {
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// DetachLink detaches the program from ifname and removes its link's pin from dir,
// leaving every other pin: `portcullis detach --interface`, for an interface taken out
// of the configuration (the daemon adopts every pinned link, configured or not).
// ErrNotExist when no link is pinned for ifname.
func DetachLink(dir, ifname string) error {
	path := LinkPath(dir, ifname)
	if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
		// Say which there are: a typo, or the name it had before a rename.
		var names []string
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if n, ok := strings.CutPrefix(e.Name(), linkPrefix); ok {
				names = append(names, strings.ReplaceAll(n, ":", "."))
			}
		}
		pinned := "none is"
		if len(names) > 0 {
			pinned = "the interfaces pinned are " + strings.Join(names, ", ")
		}
		return fmt.Errorf("no link pinned for %s in %s (%s; portcullis status lists them): %w", ifname, dir, pinned, err)
	} else if err != nil {
		return fmt.Errorf("the link pinned for %s in %s: %w", ifname, dir, err)
	}
	if pl, err := link.LoadPinnedLink(path, nil); err == nil {
		pl.Detach() // a failure leaves it to the unlink below, which detaches later
		pl.Close()
	}
	if err := unix.Unlink(path); err != nil {
		return fmt.Errorf("removing the pin %s: %w", path, err)
	}
	return nil
}
