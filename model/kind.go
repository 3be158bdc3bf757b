package model

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"net/netip"
)

// Kind says which part of a policy an entry comes from.
type Kind string

const (
	KindDefault    Kind = "default"
	KindRange      Kind = "range"
	KindExemption  Kind = "exemption"
	KindQuarantine Kind = "quarantine"
	KindRelay      Kind = "relay"
	// Runtime entries (package overlay): one rule per kind counts all of them.
	KindRuntimeQuarantine Kind = "runtime-quarantine"
	KindUnblock           Kind = "unblock"
)

// Hash is a canonical hash of tables in the order Compile leaves them (entries by
// prefix, ports ascending): the same policy, however written (order, comments,
// spelling of prefixes), hashes the same. 16 hex digits of SHA-256.
func (t *Tables) Hash() string {
	// The fields are appended to buf and written to the hash in chunks: the same
	// bytes as writing each field, without a call through hash.Hash (and a copy of
	// each rule name into a fresh []byte) per field of a million entries.
	h := sha256.New()
	buf := make([]byte, 0, 64<<10)
	flush := func() {
		if len(buf) >= 60<<10 {
			h.Write(buf)
			buf = buf[:0]
		}
	}
	put := func(v uint64) { buf = binary.BigEndian.AppendUint64(buf, v) }
	str := func(s string) {
		put(uint64(len(s)))
		buf = append(buf, s...)
	}
	put(uint64(t.DefaultVerdict))
	put(uint64(len(t.Governed)))
	for _, g := range t.Governed {
		put(uint64(g))
	}
	put(uint64(t.RSTRate))
	put(uint64(t.RSTBurst))
	for _, es := range [][]Entry{t.Ranges, t.Quarantines} {
		put(uint64(len(es)))
		for _, e := range es {
			flush()
			a := e.Prefix.Addr().As16()
			buf = append(buf, a[:]...)
			put(uint64(e.Prefix.Bits()))
			if e.Prefix.Addr().Is4() {
				put(4)
			} else {
				put(6)
			}
			put(uint64(e.Verdict))
			str(t.RuleName(e.Rule))
			if !e.Expires.IsZero() {
				put(uint64(e.Expires.Unix()))
			} else {
				put(0)
			}
			// Scopes only from the first one on, so policies without them keep the
			// hash they had before scopes existed.
			if e.Interfaces != nil {
				str("interfaces")
				put(uint64(len(e.Interfaces)))
				for _, i := range e.Interfaces {
					str(i)
				}
			}
		}
	}
	if len(t.Relays) > 0 {
		str("relays")
		put(uint64(len(t.Relays)))
		for _, r := range t.Relays {
			flush()
			a := r.Prefix.Addr().As16()
			buf = append(buf, a[:]...)
			put(uint64(r.Prefix.Bits()))
			if r.Prefix.Addr().Is4() {
				put(4)
			} else {
				put(6)
			}
			str(t.RuleName(r.Rule))
			put(uint64(len(r.Ports)))
			for _, port := range r.Ports {
				put(uint64(port))
			}
			if r.BlockQuarantined {
				put(1)
			} else {
				put(0)
			}
		}
	}
	h.Write(buf)
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// ComparePrefix orders prefixes as the compiled tables are sorted: by address, then
// length.
func ComparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return cmp.Compare(a.Bits(), b.Bits())
}
