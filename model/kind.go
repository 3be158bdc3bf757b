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
	h := sha256.New()
	var b [8]byte
	put := func(v uint64) {
		binary.BigEndian.PutUint64(b[:], v)
		h.Write(b[:])
	}
	str := func(s string) {
		put(uint64(len(s)))
		h.Write([]byte(s))
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
			a := e.Prefix.Addr().As16()
			h.Write(a[:])
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
			a := r.Prefix.Addr().As16()
			h.Write(a[:])
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
