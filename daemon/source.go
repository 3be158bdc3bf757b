package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
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

// Override is a policy applied over the control socket, in force until released.
type Override struct {
	File   string    `json:"file"` // the name it was applied under
	Who    string    `json:"who"`
	At     time.Time `json:"at"`
	Hash   string    `json:"hash"`
	Policy []byte    `json:"policy"`
}

// SourceStatus says which source is in force and what the other offers.
type SourceStatus struct {
	InForce  string    `json:"in_force"` // "file" or "override"
	File     string    `json:"file"`
	Override *Override `json:"override,omitempty"` // without the policy text
	// FilePending: the file changed while the override stood; it applies on release.
	FilePending   bool      `json:"file_pending,omitempty"`
	FileChangedAt time.Time `json:"file_changed_at,omitzero"`
}

// overridePath is where the override is kept: beside the store of runtime entries.
func (d *Daemon) overridePath() string {
	return filepath.Join(filepath.Dir(d.cfg.Store), "override.json")
}

// loadOverride reads the override kept from an earlier run, if any.
func (d *Daemon) loadOverride() (*Override, error) {
	b, err := os.ReadFile(d.overridePath())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the override %s: %w", d.overridePath(), err)
	}
	var o Override
	if err := json.Unmarshal(b, &o); err != nil || len(o.Policy) == 0 {
		return nil, fmt.Errorf("the override %s is damaged (%v): move it aside to return to the configured file", d.overridePath(), err)
	}
	return &o, nil
}

// saveOverride keeps o on disk (written to a temporary name, synced, renamed).
func (d *Daemon) saveOverride(o *Override) error {
	path := d.overridePath()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	b, err := json.Marshal(o)
	if err != nil {
		return err
	}
	tmp := path + ".new"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err == nil {
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
		return fmt.Errorf("keeping the override: %w", err)
	}
	return nil
}

// ApplyOverride applies policy text data (named file) from who as an override: on
// success it is kept, and stays in force until ReleaseOverride.
func (d *Daemon) ApplyOverride(file string, data []byte, who string) Result {
	res := d.Apply(file, data, who)
	if res.Err != nil {
		return res
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	o := &Override{File: file, Who: who, At: d.now(), Hash: res.NewHash, Policy: data}
	if err := d.saveOverride(o); err != nil {
		res.Err = fmt.Errorf("applied, but %w: it will not survive a restart", err)
		d.log.Error("applied, but the override was not kept", "error", err)
	}
	d.override = o
	d.log.Info("override in force: changes of the configured file wait until `portcullis apply --release`", "file", file, "who", who, "hash", res.NewHash)
	d.publish()
	return res
}

// ReleaseOverride ends the override and applies the configured file.
func (d *Daemon) ReleaseOverride(who string) Result {
	d.mu.Lock()
	if d.override == nil {
		d.mu.Unlock()
		return Result{Outcome: "rejected", Err: errors.New("no override in force: the configured file is the source already")}
	}
	if err := os.Remove(d.overridePath()); err != nil && !errors.Is(err, os.ErrNotExist) {
		d.mu.Unlock()
		return Result{Outcome: "failed", Err: fmt.Errorf("removing the override: %w", err)}
	}
	d.override, d.filePending = nil, time.Time{}
	d.mu.Unlock()
	d.log.Info("override released: back to the configured file", "who", who, "file", d.cfg.Policy)
	return d.applyFile(d.cfg.Policy, who)
}

// fileChanged handles a change of the configured file (or SIGHUP): applied, unless an
// override stands.
func (d *Daemon) fileChanged(who string) {
	d.mu.Lock()
	if d.override != nil {
		first := d.filePending.IsZero()
		d.filePending = d.now()
		d.publish()
		d.mu.Unlock()
		if first {
			d.log.Warn("the configured policy file changed while an override stands: not applied; it applies on `portcullis apply --release`",
				"file", d.cfg.Policy, "override_by", d.override.Who, "override_at", d.override.At.Format(time.RFC3339))
		}
		return
	}
	d.mu.Unlock()
	d.applyFile(d.cfg.Policy, who)
}

// sourceStatus is the source part of the status. Called with d.mu held.
func (d *Daemon) sourceStatus() SourceStatus {
	s := SourceStatus{InForce: "file", File: d.cfg.Policy}
	if d.override != nil {
		o := *d.override
		o.Policy = nil
		s.InForce, s.Override = "override", &o
		s.FilePending, s.FileChangedAt = !d.filePending.IsZero(), d.filePending
	}
	return s
}
