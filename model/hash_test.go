package model

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// TestHashUnchanged holds Hash to the field-by-field hash it replaced (kept below as
// it was): routers record the hash of what they enforce, so no policy may hash
// differently. Random tables of every kind of entry, some large enough to cross the
// chunks Hash writes in, some with long names.
func TestHashUnchanged(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for n := range 200 {
		tb := &Tables{DefaultVerdict: Verdict(r.IntN(4)), RSTRate: r.Uint32(), RSTBurst: r.Uint32()}
		for range r.IntN(3) {
			tb.Governed = append(tb.Governed, uint16(r.IntN(65536)))
		}
		for i := range 1 + r.IntN(20) {
			tb.RuleNames = append(tb.RuleNames, fmt.Sprintf("rule %d %s", i, strings.Repeat("x", r.IntN(3)*r.IntN(120))))
		}
		entries := func(max int) []Entry {
			var es []Entry
			for range r.IntN(max) {
				var p netip.Prefix
				if r.IntN(2) == 0 {
					p = netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(r.Uint32()), byte(r.Uint32()), 0, 0}), r.IntN(33))
				} else {
					var a [16]byte
					binary.BigEndian.PutUint64(a[:], r.Uint64())
					p = netip.PrefixFrom(netip.AddrFrom16(a), r.IntN(129))
				}
				e := Entry{Prefix: p.Masked(), Rule: uint32(r.IntN(len(tb.RuleNames) + 2)), Verdict: Verdict(r.IntN(4))}
				if r.IntN(3) == 0 {
					e.Expires = time.Unix(r.Int64N(1<<33), 0)
				}
				if r.IntN(4) == 0 {
					e.Interfaces = []string{"eth0", strings.Repeat("y", r.IntN(15))}
				}
				es = append(es, e)
			}
			return es
		}
		size := 30
		if n%20 == 0 {
			size = 5000
		}
		tb.Ranges, tb.Quarantines = entries(size), entries(size/3)
		for range r.IntN(4) {
			tb.Relays = append(tb.Relays, RelayEntry{Prefix: netip.MustParsePrefix("192.0.2.0/24"), Rule: uint32(r.IntN(30)), Ports: []uint16{25, uint16(r.IntN(9))}, BlockQuarantined: r.IntN(2) == 0})
		}
		if got, want := tb.Hash(), hashByField(tb); got != want {
			t.Fatalf("tables %d: hash %s, field by field %s", n, got, want)
		}
	}
}

func hashByField(t *Tables) string {
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
