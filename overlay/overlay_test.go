package overlay

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/portcullis/portcullis/model"
	"github.com/portcullis/portcullis/policy"
)

var t0 = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

func req(kind Kind, p string) Request {
	return Request{Kind: kind, Prefix: netip.MustParsePrefix(p), Reason: "spam", Ticket: "AB-1", Who: "api:abuse"}
}

// Repeat quarantines of one source escalate 1h, 4h, 24h, 24h...; the memory forgets.
func TestEscalation(t *testing.T) {
	var s State
	r := Rules{}
	now := t0
	want := []time.Duration{time.Hour, 4 * time.Hour, 24 * time.Hour, 24 * time.Hour}
	for i, w := range want {
		e, ev := r.Add(&s, req(Quarantine, "100.64.1.10/32"), now)
		if e.Expires.Sub(now) != w || e.Level != i {
			t.Fatalf("quarantine %d: term %v level %d, want %v level %d", i+1, e.Expires.Sub(now), e.Level, w, i)
		}
		if (i > 0) != (ev.Action == Escalated) {
			t.Errorf("quarantine %d: action %s", i+1, ev.Action)
		}
		if _, err := Remove(&s, e.Key(), Released, "api:abuse", "cleaned", now); err != nil {
			t.Fatal(err)
		}
		now = now.Add(time.Hour)
	}
	// Past the memory: back to the first term.
	e, _ := r.Add(&s, req(Quarantine, "100.64.1.10/32"), now.Add(DefaultMemory))
	if e.Level != 0 || e.Expires.Sub(now.Add(DefaultMemory)) != time.Hour {
		t.Errorf("after the memory: level %d term %v", e.Level, e.Expires.Sub(now.Add(DefaultMemory)))
	}
	// Another source starts at the first term.
	if e, _ := r.Add(&s, req(Quarantine, "100.64.1.11/32"), now); e.Level != 0 {
		t.Errorf("another source: level %d", e.Level)
	}
}

func TestValidate(t *testing.T) {
	pol, err := policy.Parse("p.yaml", []byte(`version: 1
ranges:
  - {name: cgnat, verdict: drop, cidrs: [100.96.0.0/11]}
  - {name: dsl, verdict: reset, cidrs: [100.64.0.0/12]}
runtime:
  unblock: {max: 90d, forbidden_in: [cgnat]}
`), t0)
	if err != nil {
		t.Fatal(err)
	}
	r := RulesFor(pol)
	cases := []struct {
		req  Request
		want error
		msg  string
	}{
		{req(Unblock, "100.96.1.1/32"), ErrForbidden, `range "cgnat"`},
		{Request{Kind: Unblock, Prefix: netip.MustParsePrefix("100.64.1.1/32"), Reason: "x", For: 100 * 24 * time.Hour}, ErrDuration, "at most 90d under this policy (runtime.unblock.max), not 100d"},
		{Request{Kind: "block", Prefix: netip.MustParsePrefix("100.64.1.1/32"), Reason: "x"}, ErrKind, ""},
		{Request{Kind: Quarantine, Prefix: netip.MustParsePrefix("100.64.1.1/32")}, ErrInvalid, "reason"},
		{Request{Kind: Quarantine, Prefix: netip.MustParsePrefix("0.0.0.0/0"), Reason: "x"}, ErrInvalid, "wider"},
		// Reasons and tickets as a terminal prints them: one line of text, bounded.
		{Request{Kind: Quarantine, Prefix: netip.MustParsePrefix("100.64.1.1/32"), Reason: "   "}, ErrInvalid, "a reason is required"},
		{Request{Kind: Quarantine, Prefix: netip.MustParsePrefix("100.64.1.1/32"), Reason: "spam\nreleased by alice"}, ErrInvalid, `control character ('\n' at byte 4)`},
		{Request{Kind: Quarantine, Prefix: netip.MustParsePrefix("100.64.1.1/32"), Reason: "spam \x1b[31m"}, ErrInvalid, `'\x1b'`},
		{Request{Kind: Quarantine, Prefix: netip.MustParsePrefix("100.64.1.1/32"), Reason: strings.Repeat("x", MaxText+1)}, ErrInvalid, "at most 1024"},
		{Request{Kind: Quarantine, Prefix: netip.MustParsePrefix("100.64.1.1/32"), Reason: "spam", Ticket: " "}, ErrInvalid, "the ticket is only spaces"},
		{Request{Kind: Quarantine, Prefix: netip.MustParsePrefix("100.64.1.1/32"), Reason: "spam", Ticket: "T-1\t2"}, ErrInvalid, "the ticket holds a control character"},
		{Request{Kind: Quarantine, Prefix: netip.MustParsePrefix("100.64.1.1/32"), Reason: "bot \xff"}, ErrInvalid, "not UTF-8"},
		{Request{Kind: Quarantine, Prefix: netip.MustParsePrefix("100.64.1.1/32"), Reason: "spam \u202e"}, ErrInvalid, `'\u202e'`},
		{Request{Kind: Quarantine, Prefix: netip.MustParsePrefix("100.64.1.1/32"), Reason: "spam\u2028run"}, ErrInvalid, `control character`},
		{Request{Kind: Quarantine, Prefix: netip.MustParsePrefix("100.64.1.1/32"), Reason: "spam: Ünïcode ✓", Ticket: "T-7"}, nil, ""},
		{req(Quarantine, "100.96.1.1/32"), nil, ""},
		{Request{Kind: Quarantine, Prefix: netip.MustParsePrefix("100.64.1.1/32"), Reason: "x", For: 366 * 24 * time.Hour}, ErrDuration, "a quarantine lasts at most 365d under this policy (runtime.quarantine.max), not 366d"},
		{Request{Kind: Quarantine, Prefix: netip.MustParsePrefix("100.64.1.1/32"), Reason: "x", For: 365 * 24 * time.Hour}, nil, ""},
		{Request{Kind: Unblock, Prefix: netip.MustParsePrefix("100.64.1.1/32"), Reason: "x", For: time.Nanosecond}, ErrDuration, "1ns is shorter than a runtime entry may last (10s)"},
		{Request{Kind: Unblock, Prefix: netip.MustParsePrefix("100.64.0.0/23"), Reason: "x"}, ErrInvalid, "an unblock is at most a /24 under this policy (runtime.unblock.widest_ipv4), not 100.64.0.0/23"},
		{Request{Kind: Unblock, Prefix: netip.MustParsePrefix("100.64.0.0/24"), Reason: "x"}, nil, ""},
		{Request{Kind: Quarantine, Prefix: netip.MustParsePrefix("100.64.0.0/16"), Reason: "x"}, nil, ""},
		{req(Unblock, "100.64.1.1/32"), nil, ""},
	}
	for _, c := range cases {
		err := r.Validate(c.req)
		if !errors.Is(err, c.want) || (err != nil && !strings.Contains(err.Error(), c.msg)) {
			t.Errorf("%+v: %v, want %v containing %q", c.req, err, c.want, c.msg)
		}
	}
}

// Merge lays entries over the tables: the model judges them like policy entries.
func TestMerge(t *testing.T) {
	pol, _ := policy.Parse("p.yaml", []byte("version: 1\nranges:\n  - {name: dsl, verdict: reset, cidrs: [100.64.0.0/12]}\n"), t0)
	c, _ := policy.Compile(pol, t0)
	var s State
	r := RulesFor(pol)
	r.Add(&s, req(Unblock, "100.64.1.10/32"), t0)
	r.Add(&s, req(Quarantine, "100.64.1.20/32"), t0)
	m := Merge(c.Tables, s.Live(t0))
	for a, want := range map[string]model.Verdict{"100.64.1.10": model.Pass, "100.64.1.20": model.Reset, "100.64.1.30": model.Reset} {
		if got := m.LookupSource(netip.MustParseAddr(a), t0).Verdict; got != want {
			t.Errorf("%s: %v, want %v", a, got, want)
		}
	}
	if got := m.LookupSource(netip.MustParseAddr("100.64.1.20"), t0.Add(2*time.Hour)).Verdict; got != model.Reset {
		t.Errorf("quarantine after its hour: %v (the dsl range resets anyway)", got)
	}
	q, u := RuleIDs(m)
	if m.RuleLabel(q) != "runtime-quarantine/runtime" || m.RuleLabel(u) != "unblock/runtime" {
		t.Errorf("labels %q %q", m.RuleLabel(q), m.RuleLabel(u))
	}
	if err := Conflict(c.Tables, nil, Entry{Kind: Unblock, Prefix: netip.MustParsePrefix("100.64.0.0/12")}); !errors.Is(err, ErrInvalid) {
		t.Errorf("unblock of a policy prefix: %v", err)
	}
}
