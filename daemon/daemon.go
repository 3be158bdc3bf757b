package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/portcullis/portcullis/loader"
	"github.com/portcullis/portcullis/overlay"
	"github.com/portcullis/portcullis/policy"
	"github.com/portcullis/portcullis/store"
)

// Daemon is one `portcullis run`.
type Daemon struct {
	cfg Config
	log *slog.Logger
	now func() time.Time

	mu         sync.Mutex // serialises policy changes and attachment
	prog       *loader.Program
	good       *policy.Compiled // the policy in force, when this process applied it
	nextExpiry time.Time        // when good's next exemption expires (recompile then)
	meta       loader.Meta
	lastProof  Proof
	attached   map[string]loader.Mode // interface -> mode, for the ones attached now
	gone       map[string]bool        // interfaces reported missing (log once)
	modeNotes  map[string]string      // interface -> why it is not in the configured mode
	switched   map[string]bool        // interfaces whose mode switch was tried (once a process)
	audit      *auditLog
	started    time.Time
	rng        *rand.Rand
	metrics    *metrics

	// Runtime entries (runtime.go).
	overlay   overlay.State
	store     *store.Store
	storeErr  error          // the store could not be read at start: runtime changes refused
	storeLost string         // entries the data plane held and the store did not (recovered)
	live      *policy.Tables // the tables in force: the policy's with the live runtime entries

	// published is the status as of the last change, read without d.mu (publish).
	published atomic.Pointer[Status]

	// tamper, in tests, alters the tables the program gets (not the model's), so a
	// proof can be seen to fail and roll back.
	tamper func(*policy.Tables) *policy.Tables
}

// New returns a daemon for cfg, logging to log.
func New(cfg Config, log *slog.Logger) *Daemon {
	return &Daemon{cfg: cfg, log: log, now: time.Now, attached: map[string]loader.Mode{},
		gone: map[string]bool{}, modeNotes: map[string]string{}, switched: map[string]bool{},
		rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))}
}

// Run starts enforcing and serves until ctx ends or SIGTERM/SIGINT. It never detaches:
// on exit the links stay pinned and the program keeps judging traffic.
func (d *Daemon) Run(ctx context.Context) error {
	d.started = d.now()
	if err := loader.MountBPFFS(d.cfg.BPFFS); err != nil {
		return err
	}
	prog, err := loader.LoadPinned(d.cfg.BPFFS)
	if err != nil {
		return err
	}
	defer prog.Close()
	d.prog = prog
	if d.meta, err = prog.Meta(); err != nil {
		return err
	}
	links, err := prog.UpdateLinks(d.cfg.BPFFS)
	if err != nil {
		return err
	}
	for _, l := range links {
		if l.Ifindex != 0 {
			d.log.Info("adopted pinned link: the new program replaced the running one in place", "interface", l.Interface, "program_id", l.ProgramID)
		}
	}
	if d.meta.Hash != "" {
		d.log.Info("adopted the policy in force", "hash", d.meta.Hash, "file", d.meta.PolicyFile, "loaded_at", d.meta.LoadedAt.Format(time.RFC3339))
	}

	if d.audit, err = openAudit(d.cfg.AuditLog); err != nil {
		return err
	}
	defer d.audit.Close()
	d.metrics = newMetrics(d)

	for _, name := range d.cfg.Interfaces {
		if _, err := net.InterfaceByName(name); err != nil {
			if !d.cfg.WaitForInterfaces {
				return fmt.Errorf("interface %s: not found (check the name with `ip link`, or start with --wait-for-interfaces to attach when it appears)", name)
			}
			d.log.Warn("interface not found; will attach when it appears", "interface", name)
			d.gone[name] = true
		}
	}

	// The configured policy first, then attach: never an interface without a policy.
	// The interfaces that exist are named to the program first, for the policy's
	// scopes, and the runtime entries are read, to be laid over the policy.
	d.mu.Lock()
	d.syncInterfaces()
	d.openOverlay()
	d.mu.Unlock()
	defer func() {
		if d.store != nil {
			d.store.Close()
		}
	}()
	res := d.applyFile(d.cfg.Policy, "file")
	if res.Err != nil && d.meta.Hash == "" {
		return fmt.Errorf("no policy in force and the configured one cannot be used:\n%w", res.Err)
	}
	if res.Err != nil {
		d.log.Error("the configured policy was not applied; the policy in force stays", "hash", d.meta.Hash, "error", res.Err)
	}
	d.reconcileAll()

	ctl, err := d.serveControl()
	if err != nil {
		return err
	}
	defer ctl.Close()
	var srv *http.Server
	if d.cfg.Listen != "" {
		if srv, err = d.serveMetrics(); err != nil {
			return err
		}
		defer srv.Close()
	}

	linkEvents, stopLinks, err := watchLinks()
	if err != nil {
		return err
	}
	defer stopLinks()
	fileEvents := watchFile(ctx, d.cfg.Policy, time.Second)
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sig)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()

	d.mu.Lock()
	attached := fmt.Sprint(d.attached) // the modes in force, which the configured one need not be
	d.mu.Unlock()
	d.log.Info("running", "interfaces", d.cfg.Interfaces, "configured_mode", d.cfg.Mode, "attached", attached, "policy", d.cfg.Policy,
		"metrics", d.cfg.Listen, "control", d.cfg.ControlSocket, "bpffs", d.cfg.BPFFS, "program_id", prog.ID())
	for {
		select {
		case <-ctx.Done():
			d.log.Info("stopping; enforcement continues through the pinned links (`portcullis detach` removes them)")
			return nil
		case s := <-sig:
			if s == syscall.SIGHUP {
				d.log.Info("SIGHUP: reloading the policy file", "file", d.cfg.Policy)
				d.applyFile(d.cfg.Policy, "signal")
				continue
			}
			d.log.Info("stopping on signal; enforcement continues through the pinned links (`portcullis detach` removes them)", "signal", s.String())
			return nil
		case <-fileEvents:
			d.log.Info("policy file changed: applying it", "file", d.cfg.Policy)
			d.applyFile(d.cfg.Policy, "file")
		case name := <-linkEvents:
			d.reconcile(name)
		case <-tick.C:
			d.reconcileAll()
			d.expireExemptions()
			d.expireRuntime()
		}
	}
}

// Result is what became of one policy change.
type Result struct {
	Outcome string // applied, unchanged, rejected, failed, rolled-back
	OldHash string
	NewHash string
	Diff    *DiffSummary
	Proof   Proof
	Err     error
}

// applyFile reads, checks, installs and proves the policy in file.
func (d *Daemon) applyFile(file, who string) Result {
	data, err := os.ReadFile(file)
	if err != nil {
		d.mu.Lock()
		defer d.mu.Unlock()
		return d.reject(file, who, fmt.Errorf("reading policy: %w", err))
	}
	return d.Apply(file, data, who)
}

// Apply checks the policy text data (read from file), installs it atomically, proves
// it and rolls back on a failed proof. who is the audit log's "who".
func (d *Daemon) Apply(file string, data []byte, who string) Result {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.now()
	pol, err := policy.Parse(file, data, now)
	if err != nil {
		return d.reject(file, who, err)
	}
	for _, w := range pol.Warnings {
		d.log.Warn("policy warning", "warning", w.Error())
	}
	if err := pol.CheckInterfaces(d.cfg.Interfaces, "the daemon's configuration (interfaces:)"); err != nil {
		return d.reject(file, who, err)
	}
	c, err := policy.Compile(pol, now)
	if err != nil {
		return d.reject(file, who, err)
	}
	return d.install(c, file, who, now)
}

func (d *Daemon) reject(file, who string, err error) Result {
	d.meta.LoadFailures++
	d.saveMeta()
	res := Result{Outcome: "rejected", OldHash: d.meta.Hash, Err: err}
	d.log.Error("policy rejected; the policy in force stays", "file", file, "who", who, "error", err)
	d.audit.write(d.now(), who, file, res)
	return res
}

// install swaps c in and proves it. Called with d.mu held.
func (d *Daemon) install(c *policy.Compiled, file, who string, now time.Time) Result {
	res := Result{OldHash: d.meta.Hash, NewHash: c.Hash}
	if d.good != nil {
		sum := summarise(policy.Diff(d.good, c, now))
		res.Diff = &sum
	}
	merged := d.merged(c, now)
	tables := merged
	if d.tamper != nil {
		tables = d.tamper(tables)
	}
	if d.prog.HasPolicy() && c.Hash == d.meta.Hash && (d.live == nil || sameEntries(d.live, merged)) && d.adopt(merged) {
		// Already in force (applied by this process, or adopted with the same runtime
		// entries): prove it, install nothing.
		res.Outcome = "unchanged"
	} else if err := d.prog.Apply(tables); err != nil {
		d.meta.LoadFailures++
		d.saveMeta()
		res.Outcome, res.Err = "failed", fmt.Errorf("installing the policy: %w", err)
		d.log.Error("policy not installed; the policy in force stays", "file", file, "error", err)
		d.audit.write(now, who, file, res)
		return res
	}

	proof, err := prove(d.prog.ProbeAt, merged, c.Policy.Protected, slices.Sorted(maps.Keys(d.prog.Interfaces())), now, d.rng)
	if err != nil {
		proof.Mismatches = append(proof.Mismatches, Mismatch{Note: "probe error: " + err.Error()})
	}
	res.Proof = proof
	d.lastProof = proof
	d.meta.ProofAt, d.meta.ProofProbes, d.meta.ProofOK = now, uint32(proof.Probes), proof.OK()
	if !proof.OK() {
		d.meta.ProofFailures++
		res.Err = fmt.Errorf("proof failed: %d of %d probes disagree with the model, first: %s", len(proof.Mismatches), proof.Probes, proof.Mismatches[0])
		if res.Outcome == "unchanged" {
			res.Outcome = "proof-failed"
			d.log.Error("the policy in force fails its proof", "hash", c.Hash, "error", res.Err)
		} else if rerr := d.prog.Rollback(); rerr != nil {
			res.Outcome = "failed"
			res.Err = fmt.Errorf("%w; rolling back failed too: %v", res.Err, rerr)
			d.log.Error("proof failed and rollback failed", "error", res.Err)
		} else {
			res.Outcome = "rolled-back"
			d.log.Error("proof failed: rolled back to the last good policy", "rejected_hash", c.Hash, "in_force", d.meta.Hash, "error", res.Err)
		}
		d.saveMeta()
		d.audit.write(now, who, file, res)
		d.publish()
		return res
	}
	if res.Outcome == "" {
		res.Outcome = "applied"
		d.meta.LoadedAt = now
	}
	d.good, d.live = c, merged
	d.nextExpiry = nextExemptionExpiry(c.Policy, now)
	d.meta.Hash, d.meta.PolicyFile = c.Hash, file
	d.saveMeta()
	d.log.Info("policy "+res.Outcome, "file", file, "who", who, "hash", c.Hash, "old_hash", res.OldHash,
		"probes", proof.Probes, "proof_took", proof.Took.Round(time.Microsecond))
	d.audit.write(now, who, file, res)
	d.publish()
	return res
}

// adopt tells the loader the live tables when the policy in force was adopted from
// pins, if the data plane holds exactly t's runtime entries; false means apply t.
func (d *Daemon) adopt(t *policy.Tables) bool {
	if d.prog.Tables() != nil {
		return true
	}
	for _, k := range []struct {
		kind       policy.Kind
		quarantine bool
	}{{policy.KindRuntimeQuarantine, true}, {policy.KindUnblock, false}} {
		held, err := d.prog.RuntimeInDataPlane(k.kind, overlay.RuleName)
		if err != nil {
			return false
		}
		q, u := overlay.RuleIDs(t)
		rule := u
		if k.quarantine {
			rule = q
		}
		want := 0
		for _, e := range t.Quarantines {
			if e.Rule == rule {
				want++
			}
		}
		for _, e := range t.Ranges {
			if e.Rule == rule {
				want++
			}
		}
		if len(held) != want {
			return false
		}
	}
	if err := d.prog.AdoptTables(t); err != nil {
		d.log.Warn("cannot adopt the tables in force; applying them", "error", err)
		return false
	}
	return true
}

// sameEntries reports whether two tables hold the same entries.
func sameEntries(a, b *policy.Tables) bool {
	eq := func(x, y policy.Entry) bool {
		return x.Prefix == y.Prefix && x.Rule == y.Rule && x.Verdict == y.Verdict && x.Expires.Equal(y.Expires) && slices.Equal(x.Interfaces, y.Interfaces)
	}
	return slices.EqualFunc(a.Ranges, b.Ranges, eq) && slices.EqualFunc(a.Quarantines, b.Quarantines, eq) && slices.Equal(a.RuleNames, b.RuleNames)
}

func (d *Daemon) saveMeta() {
	if err := d.prog.SetMeta(d.meta); err != nil {
		d.log.Error("saving state", "error", err)
	}
}

// expireExemptions recompiles the policy in force when one of its exemptions has
// expired: the data plane lifts quarantines by itself, but exemptions are compiled out.
func (d *Daemon) expireExemptions() {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.now()
	if d.good == nil || d.nextExpiry.IsZero() || now.Before(d.nextExpiry) {
		return
	}
	c, err := policy.Compile(d.good.Policy, now)
	if err != nil {
		d.log.Error("recompiling after an exemption expired", "error", err)
		return
	}
	d.log.Info("an exemption expired: recompiling the policy in force")
	d.install(c, d.meta.PolicyFile, "expiry", now)
}

// nextExemptionExpiry is the first exemption expiry of pol after now, or zero.
func nextExemptionExpiry(pol *policy.Policy, now time.Time) time.Time {
	var next time.Time
	for _, e := range pol.Exemptions {
		if e.Expires.After(now) && (next.IsZero() || e.Expires.Before(next)) {
			next = e.Expires
		}
	}
	return next
}

// Status is the daemon's view of itself, served on the control socket.
type Status struct {
	PID        int               `json:"pid"`
	Started    time.Time         `json:"started"`
	ProgramID  uint32            `json:"program_id"`
	Interfaces map[string]string `json:"interfaces"`           // name -> mode, or "missing"
	ModeNotes  map[string]string `json:"mode_notes,omitempty"` // name -> why not in the configured mode
	Hash       string            `json:"policy_hash"`
	Policy     string            `json:"policy_file"`
	LoadedAt   time.Time         `json:"loaded_at"`
	Proof      ProofStatus       `json:"last_proof"`
	Runtime    RuntimeStatus     `json:"runtime"`
}

// RuntimeStatus is the state of the runtime entries.
type RuntimeStatus struct {
	Quarantines int    `json:"quarantines"` // live runtime quarantines
	Unblocks    int    `json:"unblocks"`    // live unblocks
	Store       string `json:"store"`
	StoreError  string `json:"store_error,omitempty"` // the store failed: runtime changes are refused
	StoreLost   string `json:"store_lost,omitempty"`  // entries recovered from the data plane at start
	Generation  uint64 `json:"store_generation"`
}

// ProofStatus summarises the last proof.
type ProofStatus struct {
	At         time.Time `json:"at"`
	OK         bool      `json:"ok"`
	Probes     int       `json:"probes"`
	Mismatches []string  `json:"mismatches,omitempty"`
}

// status is the status as last published: readers (the control socket, metrics) do
// not wait for a policy change in progress.
func (d *Daemon) status() Status {
	if st := d.published.Load(); st != nil {
		return *st
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.statusLocked()
}

// publish makes the current state what readers see. Called with d.mu held, after
// every change.
func (d *Daemon) publish() {
	st := d.statusLocked()
	d.published.Store(&st)
}

func (d *Daemon) statusLocked() Status {
	st := Status{PID: os.Getpid(), Started: d.started, ProgramID: uint32(d.prog.ID()), Interfaces: map[string]string{},
		Hash: d.meta.Hash, Policy: d.meta.PolicyFile, LoadedAt: d.meta.LoadedAt,
		Proof: ProofStatus{At: d.meta.ProofAt, OK: d.meta.ProofOK, Probes: int(d.meta.ProofProbes)}}
	for _, m := range d.lastProof.Mismatches {
		st.Proof.Mismatches = append(st.Proof.Mismatches, m.String())
	}
	if len(d.modeNotes) > 0 {
		st.ModeNotes = maps.Clone(d.modeNotes)
	}
	for _, name := range d.cfg.Interfaces {
		if m, ok := d.attached[name]; ok {
			st.Interfaces[name] = string(m)
		} else {
			st.Interfaces[name] = "missing"
		}
	}
	st.Runtime = RuntimeStatus{Store: d.cfg.Store, StoreLost: d.storeLost}
	if d.storeErr != nil {
		st.Runtime.StoreError = d.storeErr.Error()
	}
	if d.store != nil {
		st.Runtime.Generation = d.store.Generation()
	}
	for _, e := range d.overlay.Live(d.now()) {
		if e.Kind == overlay.Quarantine {
			st.Runtime.Quarantines++
		} else {
			st.Runtime.Unblocks++
		}
	}
	return st
}
