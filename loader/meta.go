package loader

import (
	"bytes"
	"fmt"
	"time"

	"github.com/portcullis/portcullis/bpf"
)

// Meta is the control plane's record of the live policy, kept in a pinned map beside
// the counters so that `portcullis status` can read it while the daemon is down.
type Meta struct {
	Hash          string
	PolicyFile    string
	LoadedAt      time.Time
	ProofAt       time.Time
	ProofOK       bool
	ProofProbes   uint32
	LoadFailures  uint64 // policies rejected (invalid or failed to install)
	ProofFailures uint64 // proofs that failed and were rolled back
}

// Meta reads the record.
func (p *Program) Meta() (Meta, error) {
	var v bpf.PortcullisPcMeta
	if err := p.objs.Meta.Lookup(uint32(0), &v); err != nil {
		return Meta{}, fmt.Errorf("reading meta: %w", err)
	}
	m := Meta{
		Hash:          cString(v.Hash[:]),
		PolicyFile:    cString(v.PolicyFile[:]),
		ProofOK:       v.ProofOk != 0,
		ProofProbes:   v.ProofProbes,
		LoadFailures:  v.LoadFailures,
		ProofFailures: v.ProofFailures,
	}
	if v.LoadedAt != 0 {
		m.LoadedAt = time.Unix(0, int64(v.LoadedAt))
	}
	if v.ProofAt != 0 {
		m.ProofAt = time.Unix(0, int64(v.ProofAt))
	}
	return m, nil
}

// SetMeta writes the record.
func (p *Program) SetMeta(m Meta) error {
	v := bpf.PortcullisPcMeta{
		ProofProbes:   m.ProofProbes,
		LoadFailures:  m.LoadFailures,
		ProofFailures: m.ProofFailures,
	}
	copy(v.Hash[:len(v.Hash)-1], m.Hash)
	copy(v.PolicyFile[:len(v.PolicyFile)-1], m.PolicyFile)
	if m.ProofOK {
		v.ProofOk = 1
	}
	if !m.LoadedAt.IsZero() {
		v.LoadedAt = uint64(m.LoadedAt.UnixNano())
	}
	if !m.ProofAt.IsZero() {
		v.ProofAt = uint64(m.ProofAt.UnixNano())
	}
	if err := p.objs.Meta.Put(uint32(0), &v); err != nil {
		return fmt.Errorf("writing meta: %w", err)
	}
	return nil
}

func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}
