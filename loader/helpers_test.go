package loader

import (
	"net/netip"
	"testing"
	"time"

	"github.com/portcullis/portcullis/internal/testutil"
	"github.com/portcullis/portcullis/model"
)

func loadProgram(t testing.TB) *Program {
	t.Helper()
	testutil.RequireRoot(t)
	p, err := Load()
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func addr(s string) netip.Addr  { return netip.MustParseAddr(s) }

// Source kinds of the packet tests and their addresses per family.
type source struct {
	name   string
	v4, v6 netip.Addr
}

var sources = []source{
	{"drop-range", addr("100.64.5.5"), addr("2001:db8:100::5")},
	{"reset-range", addr("100.65.5.5"), addr("2001:db8:200::5")},
	{"pass-range", addr("198.51.100.10"), addr("2001:db8:300::10")},
	{"exemption", addr("100.64.1.25"), addr("2001:db8:100::25")},
	{"quarantined", addr("198.51.100.66"), addr("2001:db8:300::66")},
	{"expired-quarantine", addr("198.51.100.77"), addr("2001:db8:300::77")},
	{"unknown", addr("203.0.113.9"), addr("2001:db8:999::9")},
	{"monitor-range", addr("100.66.5.5"), addr("2001:db8:400::5")},
}

var (
	dst4 = addr("192.0.2.25")
	dst6 = addr("2001:db8:ffff::25")
)

// testTables is the policy of the packet tests. Rule ids are fixed so counters can be
// checked by id.
func testTables(now time.Time) *model.Tables {
	hour := time.Hour
	return &model.Tables{
		DefaultVerdict: model.Pass,
		Governed:       []uint16{25},
		RuleNames:      []string{"default", "dyn-drop", "dyn-reset", "business", "mailserver", "staged", "quarantine", "old-quarantine"},
		Ranges: []model.Entry{
			{Prefix: pfx("100.64.0.0/16"), Rule: 1, Verdict: model.Drop},
			{Prefix: pfx("2001:db8:100::/48"), Rule: 1, Verdict: model.Drop},
			{Prefix: pfx("100.65.0.0/16"), Rule: 2, Verdict: model.Reset},
			{Prefix: pfx("2001:db8:200::/48"), Rule: 2, Verdict: model.Reset},
			{Prefix: pfx("198.51.100.0/24"), Rule: 3, Verdict: model.Pass},
			{Prefix: pfx("2001:db8:300::/48"), Rule: 3, Verdict: model.Pass},
			{Prefix: pfx("100.64.1.25/32"), Rule: 4, Verdict: model.Pass},
			{Prefix: pfx("2001:db8:100::25/128"), Rule: 4, Verdict: model.Pass},
			{Prefix: pfx("100.66.0.0/16"), Rule: 5, Verdict: model.Monitor},
			{Prefix: pfx("2001:db8:400::/48"), Rule: 5, Verdict: model.Monitor},
		},
		Quarantines: []model.Entry{
			{Prefix: pfx("198.51.100.66/32"), Rule: 6, Verdict: model.Reset, Expires: now.Add(hour)},
			{Prefix: pfx("2001:db8:300::66/128"), Rule: 6, Verdict: model.Reset, Expires: now.Add(hour)},
			{Prefix: pfx("198.51.100.77/32"), Rule: 7, Verdict: model.Drop, Expires: now.Add(-hour)},
			{Prefix: pfx("2001:db8:300::77/128"), Rule: 7, Verdict: model.Drop, Expires: now.Add(-hour)},
		},
	}
}

func applied(t testing.TB, tables *model.Tables) *Program {
	t.Helper()
	p := loadProgram(t)
	if err := p.Apply(tables); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	return p
}
