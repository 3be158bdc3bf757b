package controller

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/portcullis/portcullis/policy"
)

// Policy sources. Two offer a policy: the configured file (applied at start, on SIGHUP
// and when it changes) and `portcullis apply` over the control socket. An applied
// policy is an override: it is kept on disk beside the store and stays in force, over
// daemon restarts too, until `portcullis apply --release` hands control back to the
// file. While it stands, changes of the file are not applied: they are noted (status
// shows the file as pending) and apply when the override is released. Nothing an
// operator applied vanishes because someone saved the file, and nobody's file edit
// silently undoes an emergency apply: status names the source in force and what the
// other offers.
//
// Each source is a Source: it offers desired states on a channel, and Run takes them
// one at a time. The override outranks every other source; the others (today the
// configured file, file.go) apply unless an override stands.

// Names of the sources, as status and the log show them.
const (
	SourceFile     = "file"
	SourceEtcd     = "etcd"
	SourceOverride = "override"
)

// Source is one place desired states come from.
type Source interface {
	// Name is the source's name in status: SourceOverride, or the name of a source
	// the override outranks (SourceFile).
	Name() string
	// Offers returns the channel the source offers on until ctx ends. Run calls it
	// once.
	Offers(ctx context.Context) <-chan Offer
}

// Offer is one desired state offered by a source.
type Offer struct {
	Who    string // the audit log's who: "file", "signal", "uid:N"
	File   string // the name the policy goes by in errors and the audit log
	Policy []byte // the policy text; nil: File is read when the offer is taken
	// Release (the override only) ends the override and applies the configured file.
	Release bool
	// Revision is the etcd revision of the policy (the etcd source only).
	Revision int64

	reply chan<- Result // the override's pushes wait for their result
}

// errStopping answers an offer the controller stopped before taking.
var errStopping = errors.New("the daemon is stopping: nothing was applied")

// Run takes the sources' offers one at a time, in order of arrival, and ends
// exemptions and runtime entries on time (checked every second), until ctx ends.
func (c *Controller) Run(ctx context.Context, sources ...Source) {
	type offer struct {
		source string
		o      Offer
	}
	in := make(chan offer)
	for _, s := range sources {
		ch, name := s.Offers(ctx), s.Name()
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case o, ok := <-ch:
					if !ok {
						return
					}
					select {
					case in <- offer{name, o}:
					case <-ctx.Done():
						if o.reply != nil {
							o.reply <- Result{Outcome: "failed", Err: errStopping}
						}
						return
					}
				}
			}
		}()
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case o := <-in:
			res := c.take(o.source, o.o)
			if o.o.reply != nil {
				o.o.reply <- res
			}
		case <-tick.C:
			c.expireExemptions()
			c.expireRuntime()
		}
	}
}

// take applies one offer by the precedence above.
func (c *Controller) take(source string, o Offer) Result {
	if source == SourceOverride {
		if o.Release {
			return c.ReleaseOverride(o.Who)
		}
		return c.ApplyOverride(o.File, o.Policy, o.Who)
	}
	return c.fileChanged(o)
}

// Start applies the first policy: the override kept from an earlier run if there is
// one (with the list files it was applied with), else the configured file. An override
// that no longer passes the checks is put aside (override.json.rejected) and the
// configured file applied. An error with a policy in force (pinned from an earlier
// run) leaves that policy in force.
func (c *Controller) Start() Result {
	if c.cfg.Source == SourceEtcd {
		k, err := c.loadKept()
		if err != nil {
			c.log.Error("the last policy from etcd cannot be read: waiting for etcd", "error", err)
		}
		c.mu.Lock()
		c.kept = k
		c.mu.Unlock()
	}
	o, err := c.loadOverride()
	if err != nil {
		c.log.Error("the override cannot be read: applying the configured source", "error", err)
		return c.applyPrimary(SourceFile)
	}
	if o == nil {
		return c.applyPrimary(SourceFile)
	}
	c.log.Info("an override stands (portcullis apply): applying it, not the configured source", "file", o.File, "who", o.Who, "at", o.At.Format(time.RFC3339))
	res := c.apply(o.File, o.Policy, SourceOverride, o.parse)
	if res.Err != nil {
		if res.Outcome != "rejected" {
			// Installing or proving it failed, not its text: it is kept for the next start.
			c.log.Error("the override could not be installed: applying the configured source; the override is kept for the next start", "file", o.File, "error", res.Err)
			return c.applyPrimary(SourceFile)
		}
		// It no longer passes the checks (it carries its list files, so they did not
		// go missing: the configuration's interfaces changed, or a version that
		// checks more). Put aside, so that it cannot come back into force by itself.
		aside := c.overridePath() + ".rejected"
		if err := os.Rename(c.overridePath(), aside); err != nil {
			c.log.Error("the override does not apply any more, and cannot be put aside: applying the configured source; move "+c.overridePath()+" away by hand, or the next start tries it again", "file", o.File, "error", res.Err, "rename_error", err)
		} else {
			c.log.Error("the override does not apply any more: applying the configured source; the override is kept in "+aside, "file", o.File, "error", res.Err)
		}
		return c.applyPrimary(SourceFile)
	}
	c.mu.Lock()
	c.override = o
	c.publish()
	c.mu.Unlock()
	return res
}

// OverrideSource is the override: policies pushed over the control socket (Apply) and
// their release (Release), each answered with its result.
type OverrideSource struct {
	offers chan Offer
	done   chan struct{}
}

// NewOverrideSource returns the override source; Run must take its offers for Apply
// and Release to return.
func NewOverrideSource() *OverrideSource {
	return &OverrideSource{offers: make(chan Offer), done: make(chan struct{})}
}

// Name is SourceOverride.
func (s *OverrideSource) Name() string { return SourceOverride }

// Offers returns the pushes.
func (s *OverrideSource) Offers(ctx context.Context) <-chan Offer {
	go func() {
		<-ctx.Done()
		close(s.done)
	}()
	return s.offers
}

// Apply pushes policy text data (named file) from who as the override and returns
// what became of it: on success it is kept, and stays in force until Release.
func (s *OverrideSource) Apply(file string, data []byte, who string) Result {
	return s.push(Offer{Who: who, File: file, Policy: data})
}

// Release ends the override and returns what became of the configured file.
func (s *OverrideSource) Release(who string) Result {
	return s.push(Offer{Who: who, Release: true})
}

func (s *OverrideSource) push(o Offer) Result {
	reply := make(chan Result, 1)
	o.reply = reply
	select {
	case s.offers <- o:
	case <-s.done:
		return Result{Outcome: "failed", Err: errStopping}
	}
	return <-reply
}

// Override is a policy applied over the control socket, in force until released.
type Override struct {
	File   string    `json:"file"` // the name it was applied under
	Who    string    `json:"who"`
	At     time.Time `json:"at"`
	Hash   string    `json:"hash"`
	Policy []byte    `json:"policy"`
	// Lists are the policy's list files as applied (cidrs_file), so that a restart
	// applies the same policy whatever happened to the files since.
	Lists policy.ListFiles `json:"lists,omitempty"`
}

// parse parses the override's policy as it was applied: with its list files as kept.
func (o *Override) parse(file string, data []byte, now time.Time) (*policy.Policy, error) {
	return policy.ParseWithLists(file, data, now, o.Lists)
}

// SourceStatus says which source is in force and what the other offers.
type SourceStatus struct {
	InForce  string      `json:"in_force"`           // "file", "etcd" or "override"
	File     string      `json:"file,omitempty"`     // the configured file (source file)
	Etcd     *EtcdStatus `json:"etcd,omitempty"`     // source etcd
	Override *Override   `json:"override,omitempty"` // without the policy text
	// FilePending: the file changed while the override stood; it applies on release.
	FilePending   bool      `json:"file_pending,omitempty"`
	FileChangedAt time.Time `json:"file_changed_at,omitzero"`
}

// EtcdStatus is the etcd source's part of the status.
type EtcdStatus struct {
	Revision    int64 `json:"revision"`               // the revision in force (0: none, or an override stands)
	LastApplied int64 `json:"last_applied,omitempty"` // the last revision this router applied (kept beside the store)
	Offered     int64 `json:"offered,omitempty"`      // the latest revision etcd offered (applied, refused or pending)
	// Health is the source's connection, set by the daemon (Config.EtcdHealth).
	Health *EtcdHealth `json:"health,omitempty"`
}

// EtcdHealth is the etcd source's connection (fleet.Source.Health).
type EtcdHealth struct {
	Connected bool `json:"connected"`
	// LastRevisionSeen is the revision of the group's policy last read or watched
	// (0: none yet).
	LastRevisionSeen int64     `json:"last_revision_seen"`
	LastError        string    `json:"last_error,omitempty"`
	Since            time.Time `json:"since"`   // when Connected last changed
	Relists          int       `json:"relists"` // times a broken watch was replaced by a fresh read
	// LastOutage is the last time the source could not reach etcd, once it is back.
	LastOutage *Outage `json:"last_outage,omitempty"`
}

// Outage is a time the router could not reach etcd: what it enforced meanwhile may
// have been stale.
type Outage struct {
	From time.Time `json:"from"`
	To   time.Time `json:"to"`
}

// overridePath is where the override is kept: beside the store of runtime entries.
func (c *Controller) overridePath() string {
	return filepath.Join(filepath.Dir(c.cfg.Store), "override.json")
}

// loadOverride reads the override kept from an earlier run, if any.
func (c *Controller) loadOverride() (*Override, error) {
	var o Override
	if found, err := readJSONFile(c.overridePath(), &o); !found || err != nil {
		return nil, err
	}
	if len(o.Policy) == 0 {
		return nil, fmt.Errorf("the override %s is damaged (no policy): move it aside to return to the configured file", c.overridePath())
	}
	return &o, nil
}

// readJSONFile reads path, written by writeJSONFile, into v; found is false (and err
// nil) when there is no such file.
func readJSONFile(path string, v any) (found bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading %s: %w", path, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return true, fmt.Errorf("%s is damaged (%v): move it aside", path, err)
	}
	return true, nil
}

// saveOverride keeps o on disk.
func (c *Controller) saveOverride(o *Override) error {
	if err := writeJSONFile(c.overridePath(), o); err != nil {
		return fmt.Errorf("keeping the override: %w", err)
	}
	return nil
}

// writeJSONFile writes v to path as JSON: to a temporary name, synced, renamed, the
// directory synced. A failed write (a full disk) leaves the file at path as it was.
func writeJSONFile(path string, v any) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	tmp := path + ".new"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// ApplyOverride applies policy text data (named file) from who as an override: on
// success it is kept, and stays in force until ReleaseOverride.
func (c *Controller) ApplyOverride(file string, data []byte, who string) Result {
	var lists policy.ListFiles
	res := c.apply(file, data, who, func(file string, data []byte, now time.Time) (*policy.Policy, error) {
		pol, l, err := policy.ParseKeeping(file, data, now)
		lists = l
		return pol, err
	})
	if res.Err != nil {
		return res
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	o := &Override{File: file, Who: who, At: c.now(), Hash: res.NewHash, Policy: data, Lists: lists}
	if err := c.saveOverride(o); err != nil {
		res.Err = fmt.Errorf("applied, but %w: it will not survive a restart", err)
		c.log.Error("applied, but the override was not kept", "error", err)
	}
	c.override = o
	c.log.Info("override in force: changes of the configured file wait until `portcullis apply --release`", "file", file, "who", who, "hash", res.NewHash)
	c.publish()
	return res
}

// ReleaseOverride ends the override and applies the configured file.
func (c *Controller) ReleaseOverride(who string) Result {
	c.mu.Lock()
	if c.override == nil {
		c.mu.Unlock()
		return Result{Outcome: "rejected", Err: errors.New("no override in force: the configured file is the source already")}
	}
	if err := os.Remove(c.overridePath()); err != nil && !errors.Is(err, os.ErrNotExist) {
		c.mu.Unlock()
		return Result{Outcome: "failed", Err: fmt.Errorf("removing the override: %w", err)}
	}
	o, pending := c.override, c.filePending
	c.override, c.filePending = nil, time.Time{}
	c.mu.Unlock()
	c.log.Info("override released: back to the configured source", "who", who, "source", c.primaryName())
	res := c.applyPrimary(who)
	if res.Err == nil && res.Outcome != "waiting" {
		return res
	}
	// What the configured source offers does not apply (or there is nothing yet): the
	// override's policy is still what is enforced, so the override stands, on disk
	// too, rather than a status that names a source whose policy is not in force.
	c.mu.Lock()
	defer c.mu.Unlock()
	c.override, c.filePending = o, pending
	if err := c.saveOverride(o); err != nil {
		c.log.Error("keeping the override again", "error", err)
	}
	c.publish()
	why := "it offers no policy yet"
	if res.Err != nil {
		why = res.Err.Error()
	}
	c.log.Error("release refused: the configured source's policy does not apply; the override stands", "source", c.primaryName(), "error", why)
	return Result{Outcome: "rejected", OldHash: res.OldHash, Err: fmt.Errorf("release refused: the policy of the configured source (%s) does not apply, so the override stays in force: %s", c.primaryName(), why)}
}

// fileChanged handles an offer of the configured source (a change of the file, or
// SIGHUP; a new etcd revision): applied, unless an override stands.
func (c *Controller) fileChanged(o Offer) Result {
	c.mu.Lock()
	if c.cfg.Source == SourceEtcd {
		c.offered = &o // applied on release, if the override stands
		if c.override != nil && o.Revision != 0 && o.Revision == c.keptRevision() {
			c.publish()
			c.mu.Unlock()
			return Result{Outcome: "unchanged", OldHash: c.Snapshot().Hash} // the revision kept: nothing new waits
		}
	}
	if c.override != nil {
		first, by := c.filePending.IsZero(), *c.override
		c.filePending = c.now()
		c.publish()
		c.mu.Unlock()
		if first {
			c.log.Warn("the configured policy source changed while an override stands: not applied; it applies on `portcullis apply --release`",
				"file", o.File, "override_by", by.Who, "override_at", by.At.Format(time.RFC3339))
		}
		return Result{Outcome: "pending", OldHash: c.Snapshot().Hash}
	}
	c.mu.Unlock()
	if o.Policy == nil {
		return c.applyFile(o.File, o.Who)
	}
	return c.applyOffer(o)
}

// primaryName is the configured source's name: SourceFile or SourceEtcd.
func (c *Controller) primaryName() string {
	if c.cfg.Source == SourceEtcd {
		return SourceEtcd
	}
	return SourceFile
}

// applyPrimary applies what the configured source offers now: the file, read again;
// for etcd, its last offer, or the last revision applied (kept beside the store, so
// a router that starts while etcd is unreachable enforces what it last had). With
// neither, what is pinned stays in force until etcd offers a policy.
func (c *Controller) applyPrimary(who string) Result {
	if c.cfg.Source != SourceEtcd {
		return c.applyFile(c.cfg.Policy, who)
	}
	c.mu.Lock()
	o := cmp.Or(c.offered, c.kept)
	c.mu.Unlock()
	if o == nil {
		c.log.Warn("no policy from etcd yet: what is pinned stays in force until etcd offers one")
		return Result{Outcome: "waiting", OldHash: c.Snapshot().Hash}
	}
	return c.applyOffer(*o)
}

// applyOffer applies an offer that carries its text; an etcd revision applied is kept
// beside the store and shown in status.
func (c *Controller) applyOffer(o Offer) Result {
	parse := policy.Parse
	if c.cfg.Source == SourceEtcd {
		parse = policy.ParseInline
	}
	res := c.apply(o.File, o.Policy, o.Who, parse)
	if c.cfg.Source != SourceEtcd || o.Revision == 0 || (res.Outcome != "applied" && res.Outcome != "unchanged") {
		return res
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.kept = &Offer{Who: o.Who, File: o.File, Policy: o.Policy, Revision: o.Revision}
	if err := writeJSONFile(c.keptPath(), kept{File: o.File, Who: o.Who, Revision: o.Revision, Policy: o.Policy}); err != nil {
		c.log.Error("the policy from etcd applied but was not kept: a restart while etcd is unreachable will wait for it", "error", err)
	}
	c.publish()
	return res
}

// kept is the last etcd revision applied, as kept on disk.
type kept struct {
	File     string `json:"file"`
	Who      string `json:"who"`
	Revision int64  `json:"revision"`
	Policy   []byte `json:"policy"`
}

// keptPath is where the last policy applied from etcd is kept: beside the store.
func (c *Controller) keptPath() string {
	return filepath.Join(filepath.Dir(c.cfg.Store), "etcd-policy.json")
}

// loadKept reads the last policy applied from etcd, if any.
func (c *Controller) loadKept() (*Offer, error) {
	var k kept
	if found, err := readJSONFile(c.keptPath(), &k); !found || err != nil {
		return nil, err
	}
	if len(k.Policy) == 0 {
		return nil, fmt.Errorf("%s is damaged (no policy): move it aside", c.keptPath())
	}
	return &Offer{Who: k.Who, File: k.File, Policy: k.Policy, Revision: k.Revision}, nil
}

// keptRevision is the etcd revision last applied (0: none). Called with c.mu held.
func (c *Controller) keptRevision() int64 {
	if c.kept == nil {
		return 0
	}
	return c.kept.Revision
}

// sourceStatus is the source part of the status. Called with c.mu held.
func (c *Controller) sourceStatus() SourceStatus {
	s := SourceStatus{InForce: c.primaryName(), File: c.cfg.Policy}
	if c.cfg.Source == SourceEtcd {
		s.File = ""
		e := EtcdStatus{Revision: c.keptRevision(), LastApplied: c.keptRevision()}
		if c.override != nil {
			e.Revision = 0 // the override is in force, not an etcd revision
		}
		if c.offered != nil {
			e.Offered = c.offered.Revision
		}
		s.Etcd = &e
	}
	if c.override != nil {
		o := *c.override
		o.Policy = nil
		s.InForce, s.Override = SourceOverride, &o
		s.FilePending, s.FileChangedAt = !c.filePending.IsZero(), c.filePending
	}
	return s
}
