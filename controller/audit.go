package controller

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/portcullis/portcullis/api"
	"github.com/portcullis/portcullis/overlay"
	"github.com/portcullis/portcullis/policy"
)

// DiffSummary is what a policy change does to the address space, in brief.
type DiffSummary struct {
	Blocks     int      `json:"blocks"`          // CIDR blocks that change verdict
	Addresses4 uint64   `json:"addresses4"`      // IPv4 addresses that change verdict
	Addresses6 string   `json:"addresses6"`      // IPv6 addresses (a big number, as text)
	Governed   string   `json:"governed"`        // "unchanged" or "old -> new"
	First      []string `json:"first,omitempty"` // the first few changes
	// Moved is the blocks that keep their verdict but change deciding entry (a rename:
	// the counters move) or expiry; Other the rest that changes (protected ports, RST
	// budget, runtime bounds), one line each, as `portcullis diff` prints them.
	Moved int      `json:"moved,omitempty"`
	Other []string `json:"other,omitempty"`
}

func summarise(d policy.DiffResult) DiffSummary {
	s := DiffSummary{Blocks: len(d.Changes), Addresses4: d.Addresses4, Addresses6: d.Addresses6.String(), Governed: "unchanged",
		Moved: len(d.Moved), Other: d.Other}
	if fmt.Sprint(d.GovernedOld) != fmt.Sprint(d.GovernedNew) {
		s.Governed = fmt.Sprintf("%v -> %v", d.GovernedOld, d.GovernedNew)
	}
	for i, c := range d.Changes {
		if i == 5 {
			break
		}
		s.First = append(s.First, fmt.Sprintf("%s: %s (%s) -> %s (%s)", c.Prefix, c.Old, c.OldRule, c.New, c.NewRule))
	}
	return s
}

// auditLog appends one JSON object per policy change.
type auditLog struct {
	mu sync.Mutex
	f  *os.File
}

// AuditRecord is one line of the audit log.
type AuditRecord struct {
	Time    time.Time    `json:"time"`
	Who     string       `json:"who"` // "uid:N" (control socket), "file", "signal", "expiry"
	File    string       `json:"file"`
	OldHash string       `json:"old_hash"`
	NewHash string       `json:"new_hash,omitempty"`
	Diff    *DiffSummary `json:"diff,omitempty"`
	Result  string       `json:"result"`
	Probes  int          `json:"probes,omitempty"`
	Error   string       `json:"error,omitempty"`
}

func openAudit(path string) (*auditLog, error) {
	if path == "" {
		return &auditLog{}, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o640)
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	return &auditLog{f: f}, nil
}

func (a *auditLog) write(now time.Time, who, file string, r Result) {
	if a == nil || a.f == nil {
		return
	}
	rec := AuditRecord{Time: now.UTC(), Who: who, File: file, OldHash: r.OldHash, NewHash: r.NewHash,
		Diff: r.Diff, Result: r.Outcome, Probes: r.Proof.Probes}
	if r.Err != nil {
		rec.Error = r.Err.Error()
	}
	a.line(rec)
}

// EntryRecord is one line of the audit log for a runtime entry.
type EntryRecord struct {
	Time    time.Time `json:"time"`
	Who     string    `json:"who"`
	Action  string    `json:"entry_action"` // added, escalated, extended, released, expired, suspended
	Kind    string    `json:"kind"`
	Prefix  string    `json:"prefix"`
	Expires time.Time `json:"expires"`
	Reason  string    `json:"reason,omitempty"`
	Ticket  string    `json:"ticket,omitempty"`
	Level   int       `json:"level,omitempty"`
}

func (a *auditLog) writeEntry(now time.Time, ev overlay.Event) {
	if a == nil || a.f == nil {
		return
	}
	rec := EntryRecord{Time: now.UTC(), Who: ev.Who, Action: string(ev.Action), Kind: string(ev.Entry.Kind),
		Prefix: ev.Entry.Prefix.String(), Expires: ev.Entry.Expires.UTC(), Reason: ev.Reason, Ticket: ev.Entry.Ticket, Level: ev.Entry.Level}
	a.line(rec)
}

// APIRecord is one line of the audit log for a request to the HTTP API.
type APIRecord struct {
	Time   time.Time `json:"time"`
	Who    string    `json:"who"` // "api:CLIENT", "api:-" when not authenticated
	Method string    `json:"method"`
	Path   string    `json:"path"`
	Status int       `json:"status"`
	Detail string    `json:"detail,omitempty"`
}

func (a *auditLog) writeAPI(r api.Record) {
	if a == nil || a.f == nil {
		return
	}
	a.line(APIRecord{Time: r.Time.UTC(), Who: "api:" + r.Client, Method: r.Method, Path: r.Path, Status: r.Status, Detail: r.Detail})
}

func (a *auditLog) Close() error {
	if a == nil || a.f == nil {
		return nil
	}
	return a.f.Close()
}

// line appends rec to the log as one JSON line.
func (a *auditLog) line(rec any) {
	b, _ := json.Marshal(rec)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.f.Write(append(b, '\n'))
}
