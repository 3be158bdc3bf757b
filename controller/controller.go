// Package controller is the one place that changes what the data plane enforces
// (issue 13: one controller, many hands). It takes a desired state from its sources
// (the configured file, the override pushed over the control socket: source.go),
// validates it, compiles it, applies it, proves it (proof.go), rolls it back on a
// failed proof, audits it (audit.go), lays the runtime entries over it (runtime.go),
// and publishes an immutable snapshot of what is in force (Snapshot) that readers
// take without waiting for a change in progress.
//
// Moved here from package daemon: install, Apply, reject, adopt, sameEntries,
// expireExemptions and the pinned meta and proof state (daemon.go); the proof
// (proof.go); the runtime entries (runtime.go); the override (source.go); the audit
// log (audit.go); and the Status, RuntimeStatus, SourceStatus, FailureCounts and
// ProofStatus types. Package daemon keeps the configuration, the wiring (Run), the
// interface watch, the control socket and the metrics: readers of Snapshot that call
// the controller for writes.
package controller

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portcullis/portcullis/api"
	"github.com/portcullis/portcullis/loader"
	"github.com/portcullis/portcullis/model"
	"github.com/portcullis/portcullis/overlay"
	"github.com/portcullis/portcullis/policy"
	"github.com/portcullis/portcullis/store"
)

// Config is what the controller needs of the daemon's configuration.
type Config struct {
	// Interfaces are the configured subscriber-facing interfaces: a policy's scopes
	// may name only these, and status lists them.
	Interfaces []string
	Policy     string // the configured policy file (the file source; applied on release)
	// Source is the configured source the override outranks: SourceFile (the
	// default) or SourceEtcd (offers come from the fleet; the last one applied is kept
	// beside the store for a start while etcd is unreachable).
	Source string
	// EtcdHealth, with Source etcd, says how the source's connection is (status).
	EtcdHealth func() EtcdHealth
	// Published, if set, is called after each publish and each SetAttachment (the
	// fleet's reporter writes the router's status then). It must not block.
	Published func()
	Store     string // the store of runtime entries; the override is kept beside it
	AuditLog  string // JSON lines; "" = off

	// Events, if set, is told of every runtime entry event (metrics count them).
	Events func(overlay.Event)
	// MaxEntries is how many live runtime entries of each kind the controller holds
	// (0: overlay.MaxEntries); HistoryLimit how many events of their history it keeps
	// in memory (0: store.HistoryLimit, what the store keeps).
	MaxEntries, HistoryLimit int
	// Tamper, in tests, alters the tables the program gets (not the model's), so a
	// proof can be seen to fail and roll back, or an apply held inside the swap.
	Tamper func(*model.Tables) *model.Tables
}

// Controller applies, proves, rolls back and audits every change of what the program
// enforces, one at a time, and publishes what is in force.
type Controller struct {
	cfg Config
	log *slog.Logger
	now func() time.Time

	mu         sync.Mutex // serialises every write: policy changes, runtime entries, interfaces
	prog       *loader.Program
	good       *policy.Compiled // the policy in force, when this process applied it
	nextExpiry time.Time        // when good's next exemption expires (recompile then)
	meta       loader.Meta
	lastProof  Proof
	lastChange *ChangeStatus // the last policy change offered, whatever became of it
	lastError  *ChangeStatus // the last one refused or failed, until a later one applies
	audit      *auditLog
	started    time.Time
	rng        *rand.Rand

	// Runtime entries (runtime.go).
	overlay   overlay.State
	store     *store.Store
	storeErr  error                // the store could not be read at start: runtime changes refused
	storeLost string               // entries the data plane held and the store did not (recovered)
	held      map[overlay.Kind]int // runtime entries OpenStore found in the data plane, by kind (nil: not read)
	live      *model.Tables        // the tables in force: the policy's with the live runtime entries
	dropped   uint64               // events trimmed from the front of overlay.History since the start
	refused   uint64               // runtime entries refused since the start for want of room (ErrFull)

	// Policy sources (source.go).
	override    *Override // a policy applied over the control socket, in force until released
	filePending time.Time // when the configured file changed while the override stood
	offered     *Offer    // the etcd source's latest offer
	kept        *Offer    // the etcd revision last applied, as kept on disk (read once, at start)

	// published is the status as of the last change and entries the runtime entries,
	// both read without mu (publish);
	// attachment is the interface watch's part, set without mu (SetAttachment).
	published  atomic.Pointer[Status]
	attachment atomic.Pointer[Attachment]
	entries    atomic.Pointer[runtimeView] // the runtime entries and history as published: never changed

	tamper func(*model.Tables) *model.Tables
	// crashPoint, in tests, is called between the two writes of a removal (the data
	// plane's and the store's): where a crash of the daemon would leave them apart.
	crashPoint func()
}

// New returns the controller of prog: it reads the state pinned with the program and
// opens the audit log. OpenStore reads the runtime entries; Start applies the first
// policy.
func New(cfg Config, prog *loader.Program, log *slog.Logger) (*Controller, error) {
	c := &Controller{cfg: cfg, log: log, now: time.Now, prog: prog, tamper: cfg.Tamper,
		rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))}
	c.started = c.now()
	var err error
	if c.meta, err = prog.Meta(); err != nil {
		return nil, err
	}
	if c.audit, err = openAudit(cfg.AuditLog); err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.publish()
	c.mu.Unlock()
	return c, nil
}

// Close closes the store and the audit log. The program stays with its owner.
func (c *Controller) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.store != nil {
		c.store.Close()
		c.store = nil
	}
	return c.audit.Close()
}

// Meta is the state pinned with the program, as the controller last saved it.
func (c *Controller) Meta() loader.Meta {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.meta
}

// AuditAPI writes one request to the HTTP API to the audit log.
func (c *Controller) AuditAPI(r api.Record) { c.audit.writeAPI(r) }

// SetInterfaces names the configured interfaces that exist, with their ifindex, to the
// program, for the policy's scopes (an interface created again gets a new index). It
// waits for a change in progress: the tables and the interface table are written
// under one lock.
func (c *Controller) SetInterfaces(now map[string]int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if maps.Equal(now, c.prog.Interfaces()) {
		return
	}
	if err := c.prog.SetInterfaces(now); err != nil {
		c.log.Error("cannot name the interfaces to the program: scoped entries may not apply", "error", err)
		return
	}
	c.log.Info("interfaces for scopes", "ifindex", fmt.Sprint(now))
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
func (c *Controller) applyFile(file, who string) Result {
	data, err := policy.ReadFile(file)
	if err != nil {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.reject(file, who, err)
	}
	return c.Apply(file, data, who)
}

// Apply checks the policy text data (read from file), installs it atomically, proves
// it and rolls back on a failed proof. who is the audit log's "who".
func (c *Controller) Apply(file string, data []byte, who string) Result {
	return c.apply(file, data, who, policy.Parse)
}

// apply is Apply with the parser to use: policy.ParseInline for a policy from etcd.
func (c *Controller) apply(file string, data []byte, who string, parse func(string, []byte, time.Time) (*policy.Policy, error)) Result {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	comp, err := compile(c.cfg.Interfaces, file, data, parse, now, c.log)
	if err != nil {
		return c.reject(file, who, err)
	}
	return c.install(comp, file, who, now)
}

// compile parses, checks and compiles the policy text data (read from file), as every
// change does before it is installed: interfaces are the configured ones, which the
// policy's scopes may name. Warnings go to log, if not nil.
func compile(interfaces []string, file string, data []byte, parse func(string, []byte, time.Time) (*policy.Policy, error), now time.Time, log *slog.Logger) (*policy.Compiled, error) {
	pol, err := parse(file, data, now)
	if err != nil {
		return nil, err
	}
	if log != nil {
		for _, w := range pol.Warnings {
			log.Warn("policy warning", "warning", w.Error())
		}
	}
	if err := pol.CheckInterfaces(interfaces, "the daemon's configuration (interfaces:)"); err != nil {
		return nil, err
	}
	return policy.Compile(pol, now)
}

// CheckFirst checks, without the kernel, the policy that Start would apply when no
// policy is in force yet: the override kept from an earlier run if it still applies,
// else the configured file. The daemon calls it before it pins anything, so that a
// first start with a policy that cannot be used fails with nothing pinned. With
// Source etcd there is nothing to check: the policy comes from etcd (and, until it
// does, the daemon waits).
func CheckFirst(cfg Config, now time.Time) error {
	if cfg.Source == SourceEtcd {
		return nil
	}
	c := &Controller{cfg: cfg}
	var overrideErr error
	switch o, err := c.loadOverride(); {
	case err != nil:
		overrideErr = err
	case o != nil:
		if _, err := compile(cfg.Interfaces, o.File, o.Policy, o.parse, now, nil); err != nil {
			overrideErr = fmt.Errorf("the override kept in %s (applied by %s) does not apply any more: %w", c.overridePath(), o.Who, err)
		} else {
			return nil
		}
	}
	data, err := policy.ReadFile(cfg.Policy)
	if err == nil {
		_, err = compile(cfg.Interfaces, cfg.Policy, data, policy.Parse, now, nil)
	}
	if err != nil && overrideErr != nil {
		return fmt.Errorf("%w\nand the configured file: %w", overrideErr, err)
	}
	return err
}

func (c *Controller) reject(file, who string, err error) Result {
	c.meta.LoadFailures++
	c.saveMeta()
	res := Result{Outcome: "rejected", OldHash: c.meta.Hash, Err: err}
	c.log.Error("policy rejected; "+c.inForce(), "file", file, "who", who, "error", err)
	c.record(c.now(), who, file, res)
	c.publish()
	return res
}

// applyTables applies tables (the policy comp merged with the runtime entries, perhaps
// tampered with by a test) and returns the merged tables now in force: merged, or
// fewer. When the data plane's groups for IPv4 ranges longer than /24 run out and the
// policy alone fits, the runtime unblocks are what hold them: with a policy in force,
// the change is refused and says so; with none (a first start), the newest unblocks
// that do not fit are suspended (out of the store, with a history event) and the rest
// applied, so that a start never leaves nothing enforced because of runtime entries.
// Called with c.mu held.
func (c *Controller) applyTables(comp *policy.Compiled, merged, tables *model.Tables, now time.Time) (*model.Tables, error) {
	err := c.prog.Apply(tables)
	if !errors.Is(err, loader.ErrTooManyGroups) || c.tamper != nil {
		return merged, err
	}
	msg, shed := c.groupsHeldByRuntime(comp, now)
	if msg == "" {
		return merged, err // the policy alone does not fit
	}
	if c.meta.Hash != "" || len(shed) == 0 {
		return merged, fmt.Errorf("%w; %s", err, msg)
	}
	why := "no room in the data plane at start: " + msg
	for _, e := range shed {
		if serr := c.removeEntry(e.Key(), overlay.Suspended, "daemon", why, now); serr != nil {
			return merged, fmt.Errorf("%w; suspending the runtime unblocks that do not fit: %v", err, serr)
		}
	}
	c.log.Error("runtime unblocks suspended: the data plane has no room for them; add them again once groups are free", "suspended", len(shed), "why", msg)
	merged = c.merged(comp, now)
	return merged, c.prog.Apply(merged)
}

// groupsHeldByRuntime says, when the policy comp alone fits the data plane's groups
// for IPv4 ranges longer than /24 (model.MaxLongIPv4Blocks, one per /24 holding such
// ranges) and its runtime unblocks push it over, how many each holds, and which
// unblocks (the newest) do not fit. "" when the policy alone does not fit.
func (c *Controller) groupsHeldByRuntime(comp *policy.Compiled, now time.Time) (string, []overlay.Entry) {
	used := map[uint32]bool{}
	for _, e := range comp.Tables.Ranges {
		if b, ok := model.LongIPv4Block(e); ok {
			used[b] = true
		}
	}
	byPolicy := len(used)
	if byPolicy > model.MaxLongIPv4Blocks {
		return "", nil
	}
	live := c.overlay.Live(now)
	slices.SortStableFunc(live, func(a, b overlay.Entry) int { return a.Added.Compare(b.Added) })
	var shed []overlay.Entry
	for _, e := range live {
		b, ok := model.LongIPv4Block(model.Entry{Prefix: e.Prefix})
		if e.Kind != overlay.Unblock || !ok || used[b] {
			continue
		}
		if len(used) < model.MaxLongIPv4Blocks {
			used[b] = true
			continue
		}
		shed = append(shed, e)
	}
	return fmt.Sprintf("the policy holds IPv4 ranges longer than /24 in %d /24s, and runtime unblocks longer than /24 need %d more, of the %d the data plane holds: release some (portcullis entries), or unblock whole /24s",
		byPolicy, len(used)-byPolicy+len(shed), model.MaxLongIPv4Blocks), shed
}

// inForce says what stays enforced after a change that did not apply: the policy in
// force, or, on a first start, none. Called with c.mu held.
func (c *Controller) inForce() string {
	if c.meta.Hash == "" {
		return "no policy is in force (none was applied yet)"
	}
	return "the policy in force stays"
}

// record audits one policy change and keeps it for the status. Called with c.mu held.
func (c *Controller) record(now time.Time, who, file string, res Result) {
	c.audit.write(now, who, file, res)
	ch := &ChangeStatus{At: now, Who: who, File: file, Outcome: res.Outcome, Hash: res.NewHash}
	if res.Err != nil {
		ch.Error = res.Err.Error()
		c.lastError = ch
	} else {
		c.lastError = nil
	}
	c.lastChange = ch
}

// install swaps comp in and proves it. Called with c.mu held.
func (c *Controller) install(comp *policy.Compiled, file, who string, now time.Time) Result {
	res := Result{OldHash: c.meta.Hash, NewHash: comp.Hash}
	if c.good != nil {
		sum := summarise(policy.Diff(c.good, comp, now))
		res.Diff = &sum
	}
	if comp.Hash != c.meta.Hash {
		if err := c.nestsWithRuntime(comp, now); err != nil {
			if c.meta.Hash != "" {
				return c.reject(file, who, err)
			}
			// A first start: enforce it all the same, rather than nothing.
			c.log.Error("applied with nested quarantines: release the runtime ones", "error", err)
		}
	}
	merged := c.merged(comp, now)
	tables := merged
	if c.tamper != nil {
		tables = c.tamper(tables)
	}
	if c.prog.HasPolicy() && comp.Hash == c.meta.Hash && (c.live == nil || sameEntries(c.live, merged)) && c.adopt(merged) {
		// Already in force (applied by this process, or adopted with the same runtime
		// entries): prove it, install nothing.
		res.Outcome = "unchanged"
	} else if applied, err := c.applyTables(comp, merged, tables, now); err != nil {
		c.meta.LoadFailures++
		c.saveMeta()
		res.Outcome, res.Err = "failed", fmt.Errorf("installing the policy: %w", err)
		c.log.Error("policy not installed; "+c.inForce(), "file", file, "error", err)
		c.record(now, who, file, res)
		c.publish()
		return res
	} else {
		merged = applied
	}

	proof, err := prove(c.prog.ProbeAt, merged, comp.Policy.Protected, slices.Sorted(maps.Keys(c.prog.Interfaces())), now, c.rng)
	if err != nil {
		proof.Mismatches = append(proof.Mismatches, Mismatch{Note: "probe error: " + err.Error()})
	}
	res.Proof = proof
	c.lastProof = proof
	c.meta.ProofAt, c.meta.ProofProbes, c.meta.ProofOK = now, uint32(proof.Probes), proof.OK()
	if !proof.OK() {
		c.meta.ProofFailures++
		res.Err = fmt.Errorf("proof failed: %d of %d probes disagree with the model, first: %s", len(proof.Mismatches), proof.Probes, proof.Mismatches[0])
		if res.Outcome == "unchanged" {
			res.Outcome = "proof-failed"
			c.log.Error("the policy in force fails its proof", "hash", comp.Hash, "error", res.Err)
		} else if rerr := c.prog.Rollback(); rerr != nil {
			res.Outcome = "failed"
			res.Err = fmt.Errorf("%w; rolling back failed too: %v", res.Err, rerr)
			c.log.Error("proof failed and rollback failed", "error", res.Err)
		} else {
			if err := c.prog.Release(); err != nil { // the rejected policy's tables
				c.log.Warn("freeing the rejected policy's tables failed; the next change frees them", "error", err)
			}
			res.Outcome = "rolled-back"
			c.log.Error("proof failed: rolled back to the last good policy", "rejected_hash", comp.Hash, "in_force", c.meta.Hash, "error", res.Err)
		}
		c.saveMeta()
		c.record(now, who, file, res)
		c.publish()
		return res
	}
	if res.Outcome == "" {
		res.Outcome = "applied"
		c.meta.LoadedAt = now
		// Proven: the replaced policy's tables are freed (no rollback is wanted now),
		// so that the kernel holds one policy, not two, until the next change.
		if err := c.prog.Release(); err != nil {
			c.log.Warn("freeing the replaced policy's tables failed; the next change frees them", "error", err)
		}
	}
	c.good, c.live = comp, merged
	c.nextExpiry = nextExemptionExpiry(comp.Policy, now)
	c.meta.Hash, c.meta.PolicyFile = comp.Hash, file
	c.saveMeta()
	c.log.Info("policy "+res.Outcome, "file", file, "who", who, "hash", comp.Hash, "old_hash", res.OldHash,
		"probes", proof.Probes, "proof_took", proof.Took.Round(time.Microsecond))
	c.record(now, who, file, res)
	c.publish()
	return res
}

// nestsWithRuntime says which of the policy comp's quarantines overlap a live runtime
// quarantine, or nil. Quarantines may not nest: the data plane checks only the most
// specific one, so the inner one's end would lift the outer one for its addresses
// (AddEntry refuses a runtime quarantine that nests with the policy's; this refuses
// the policy that would nest with them). Called with c.mu held.
func (c *Controller) nestsWithRuntime(comp *policy.Compiled, now time.Time) error {
	var clash []string
	for _, e := range c.overlay.Live(now) {
		if e.Kind != overlay.Quarantine {
			continue
		}
		for _, q := range comp.Tables.Quarantines {
			if !q.Prefix.Overlaps(e.Prefix) {
				continue
			}
			at := ""
			for _, pq := range comp.Policy.Quarantines {
				if pq.CIDR.Prefix == q.Prefix {
					at = fmt.Sprintf(" (%s)", pq.CIDR.Pos)
				}
			}
			clash = append(clash, fmt.Sprintf("the policy's quarantine %s%s overlaps the runtime quarantine %s (until %s, by %s)",
				q.Prefix, at, e.Prefix, e.Expires.UTC().Format(time.RFC3339), overlay.Printable(e.Who)))
			break
		}
	}
	if len(clash) == 0 {
		return nil
	}
	more := ""
	if len(clash) > 5 {
		more = fmt.Sprintf(" and %d more", len(clash)-5)
		clash = clash[:5]
	}
	return fmt.Errorf("%s%s; quarantines may not nest (the data plane checks only the most specific one, so the inner one's end would lift the outer one for its addresses): release the runtime quarantines first (portcullis release, or DELETE /v1/quarantines/...), or leave those prefixes out of the policy", strings.Join(clash, "; "), more)
}

// adopt tells the loader the live tables when the policy in force was adopted from
// pins, if the data plane holds exactly t's runtime entries; false means apply t.
func (c *Controller) adopt(t *model.Tables) bool {
	if c.prog.Tables() != nil {
		return true
	}
	for _, k := range []struct {
		kind       model.Kind
		entry      overlay.Kind
		quarantine bool
	}{{model.KindRuntimeQuarantine, overlay.Quarantine, true}, {model.KindUnblock, overlay.Unblock, false}} {
		// What OpenStore counted in the data plane, else read it now.
		n := c.held[k.entry]
		if c.held == nil {
			held, err := c.prog.RuntimeInDataPlane(k.kind, overlay.RuleName)
			if err != nil {
				return false
			}
			n = len(held)
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
		if n != want {
			return false
		}
	}
	if err := c.prog.AdoptTables(t); err != nil {
		c.log.Warn("cannot adopt the tables in force; applying them", "error", err)
		return false
	}
	return true
}

// sameEntries reports whether two tables hold the same entries.
func sameEntries(a, b *model.Tables) bool {
	eq := func(x, y model.Entry) bool {
		return x.Prefix == y.Prefix && x.Rule == y.Rule && x.Verdict == y.Verdict && x.Expires.Equal(y.Expires) && slices.Equal(x.Interfaces, y.Interfaces)
	}
	return slices.EqualFunc(a.Ranges, b.Ranges, eq) && slices.EqualFunc(a.Quarantines, b.Quarantines, eq) && slices.Equal(a.RuleNames, b.RuleNames)
}

func (c *Controller) saveMeta() {
	if err := c.prog.SetMeta(c.meta); err != nil {
		c.log.Error("saving state", "error", err)
	}
}

// expireExemptions recompiles the policy in force when one of its exemptions has
// expired: the data plane lifts quarantines by itself, but exemptions are compiled out.
func (c *Controller) expireExemptions() {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if c.good == nil || c.nextExpiry.IsZero() || now.Before(c.nextExpiry) {
		return
	}
	comp, err := policy.Compile(c.good.Policy, now)
	if err != nil {
		c.log.Error("recompiling after an exemption expired", "error", err)
		return
	}
	c.log.Info("an exemption expired: recompiling the policy in force")
	c.install(comp, c.meta.PolicyFile, "expiry", now)
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
	// NotAttached: name -> why a configured interface is not attached (not found,
	// another XDP program on it, a link type not judged): it is not judged.
	NotAttached map[string]string `json:"not_attached,omitempty"`
	Hash        string            `json:"policy_hash"`
	Policy      string            `json:"policy_file"`
	LoadedAt    time.Time         `json:"loaded_at"`
	Proof       ProofStatus       `json:"last_proof"`
	Runtime     RuntimeStatus     `json:"runtime"`
	Source      SourceStatus      `json:"source"`
	Failures    FailureCounts     `json:"failures"`
	// LastChange is the last policy change offered by any source since the daemon
	// started; LastError the last one refused, failed or rolled back, until a later
	// change applies (the policy in force is then still the one before it).
	LastChange *ChangeStatus `json:"last_change,omitempty"`
	LastError  *ChangeStatus `json:"last_error,omitempty"`
}

// ChangeStatus is one policy change as status shows it.
type ChangeStatus struct {
	At      time.Time `json:"at"`
	Who     string    `json:"who"`
	File    string    `json:"file"`
	Outcome string    `json:"outcome"` // applied, unchanged, rejected, failed, rolled-back, proof-failed
	Hash    string    `json:"hash,omitempty"`
	Error   string    `json:"error,omitempty"`
}

// FailureCounts are the policy failures kept in the pinned state.
type FailureCounts struct {
	PolicyLoad uint64 `json:"policy_load"`
	Proof      uint64 `json:"proof"`
}

// RuntimeStatus is the state of the runtime entries.
type RuntimeStatus struct {
	Quarantines  int    `json:"quarantines"`   // live runtime quarantines
	Unblocks     int    `json:"unblocks"`      // live unblocks
	MaxEntries   int    `json:"max_entries"`   // the most live entries of each kind
	Refused      uint64 `json:"refused_full"`  // entries refused since the start: their kind had MaxEntries
	History      int    `json:"history"`       // events of the history in memory
	HistoryLimit int    `json:"history_limit"` // the most kept: older ones are dropped
	Store        string `json:"store"`
	StoreError   string `json:"store_error,omitempty"` // the store failed: runtime changes are refused
	StoreLost    string `json:"store_lost,omitempty"`  // entries recovered from the data plane at start
	Generation   uint64 `json:"store_generation"`
}

// ProofStatus summarises the last proof.
type ProofStatus struct {
	At         time.Time `json:"at"`
	OK         bool      `json:"ok"`
	Probes     int       `json:"probes"`
	Mismatches []string  `json:"mismatches,omitempty"`
}

// Attachment is the interface watch's part of the status: which configured interface
// is attached in which mode. The watch sets it (SetAttachment) without waiting for
// the controller.
type Attachment struct {
	Interfaces map[string]string // name -> mode, or "missing"
	ModeNotes  map[string]string // name -> why not in the configured mode
	Errors     map[string]string // name -> why it is not attached (the last attempt's error)
}

// SetAttachment publishes the interface watch's view. It never waits for a change in
// progress; a's maps must not be changed afterwards.
func (c *Controller) SetAttachment(a Attachment) {
	c.attachment.Store(&a)
	if c.cfg.Published != nil {
		c.cfg.Published()
	}
}

// Snapshot is the status as last published, with the interface watch's view: readers
// (the control socket, metrics, the API) never wait for a change in progress. The
// maps are the snapshot's own.
func (c *Controller) Snapshot() Status {
	st := *c.published.Load()
	st.Interfaces = map[string]string{}
	a := c.attachment.Load()
	for _, name := range c.cfg.Interfaces {
		st.Interfaces[name] = "missing"
		if a != nil {
			if m, ok := a.Interfaces[name]; ok {
				st.Interfaces[name] = m
			}
		}
	}
	if a != nil && len(a.ModeNotes) > 0 {
		st.ModeNotes = maps.Clone(a.ModeNotes)
	}
	for name, m := range st.Interfaces {
		if m != "missing" {
			continue
		}
		if st.NotAttached == nil {
			st.NotAttached = map[string]string{}
		}
		st.NotAttached[name] = "not attached yet"
		if a != nil && a.Errors[name] != "" {
			st.NotAttached[name] = a.Errors[name]
		}
	}
	st.Proof.Mismatches = slices.Clone(st.Proof.Mismatches)
	if st.Source.Etcd != nil && c.cfg.EtcdHealth != nil {
		e := *st.Source.Etcd
		h := c.cfg.EtcdHealth()
		e.Health = &h
		st.Source.Etcd = &e
	}
	return st
}

// publish makes the current state what readers see. Called with c.mu held, after
// every change.
func (c *Controller) publish() {
	st := c.statusLocked()
	c.published.Store(&st)
	c.entries.Store(c.view())
	if c.cfg.Published != nil {
		c.cfg.Published()
	}
}

func (c *Controller) statusLocked() Status {
	st := Status{PID: os.Getpid(), Started: c.started, ProgramID: uint32(c.prog.ID()),
		Hash: c.meta.Hash, Policy: c.meta.PolicyFile, LoadedAt: c.meta.LoadedAt,
		Proof: ProofStatus{At: c.meta.ProofAt, OK: c.meta.ProofOK, Probes: int(c.meta.ProofProbes)}}
	for _, m := range c.lastProof.Mismatches {
		st.Proof.Mismatches = append(st.Proof.Mismatches, m.String())
	}
	st.Source = c.sourceStatus()
	st.LastChange, st.LastError = c.lastChange, c.lastError
	st.Failures = FailureCounts{PolicyLoad: c.meta.LoadFailures, Proof: c.meta.ProofFailures}
	st.Runtime = RuntimeStatus{Store: c.cfg.Store, StoreLost: c.storeLost}
	if c.storeErr != nil {
		st.Runtime.StoreError = c.storeErr.Error()
	}
	if c.store != nil {
		st.Runtime.Generation = c.store.Generation()
	}
	now := c.now()
	st.Runtime.Quarantines = c.overlay.Count(overlay.Quarantine, now)
	st.Runtime.Unblocks = c.overlay.Count(overlay.Unblock, now)
	st.Runtime.MaxEntries, st.Runtime.Refused = c.maxEntries(), c.refused
	st.Runtime.History, st.Runtime.HistoryLimit = len(c.overlay.History), c.historyLimit()
	return st
}
