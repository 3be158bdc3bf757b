package controller

import (
	"slices"
	"testing"
	"time"

	"github.com/portcullis/portcullis/policy"
)

// The audit's diff summary records what a change does beyond verdicts: a change of
// the runtime bounds alone (the tables, and so the hash, stay the same) is not an
// empty record, and a rename says how many blocks changed entry.
func TestSummaryBeyondVerdicts(t *testing.T) {
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	compile := func(src string) *policy.Compiled {
		p, err := policy.Parse("p.yaml", []byte(src), now)
		if err != nil {
			t.Fatal(err)
		}
		c, err := policy.Compile(p, now)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	a := compile("version: 1\nranges:\n  - {name: dsl, verdict: reset, cidrs: [100.64.0.0/12]}\nruntime:\n  unblock: {max: 90d}\n")
	b := compile("version: 1\nranges:\n  - {name: dsl, verdict: reset, cidrs: [100.64.0.0/12]}\nruntime:\n  unblock: {max: 30d}\n")
	s := summarise(policy.Diff(a, b, now))
	if !slices.Equal(s.Other, []string{"runtime.unblock.max 90d -> 30d"}) || s.Blocks != 0 {
		t.Errorf("runtime bound: %+v", s)
	}
	c := compile("version: 1\nranges:\n  - {name: dynamic, verdict: reset, cidrs: [100.64.0.0/12]}\nruntime:\n  unblock: {max: 90d}\n")
	if s := summarise(policy.Diff(a, c, now)); s.Moved != 1 || len(s.Other) != 0 {
		t.Errorf("rename: %+v", s)
	}
}
