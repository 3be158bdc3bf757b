package demo

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/portcullis/portcullis/examples"
	"github.com/portcullis/portcullis/loader"
	"github.com/portcullis/portcullis/model"
	"github.com/portcullis/portcullis/policy"
)

// The offender table shows where each offender's last attempt came from at layer 2
// (MAC, VLAN ids, PPPoE session) and names its rule by the label of its stable counter id
// (loader.Offender.Label), not by the compiled policy's rule of the same number: the
// loader numbers labels in its own id space, which differs from a policy's rule ids
// as soon as labels are shared or a policy is swapped.
func TestOffenderTableUsesLabels(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	pol, err := policy.Parse(examples.PolicyName, examples.Policy, now)
	if err != nil {
		t.Fatal(err)
	}
	c, err := policy.Compile(pol, now)
	if err != nil {
		t.Fatal(err)
	}
	// Stable id 3 is the quarantine here; in the compiled policy, rule 3 is another entry.
	if got := c.Tables.RuleName(3); got == "quarantine 198.51.100.66/32" {
		t.Fatalf("the test needs rule 3 of the example to be something else, got %q", got)
	}
	offs := []loader.Offender{
		{Source: netip.MustParseAddr("198.51.100.66"), Count: 2, Rule: 3, Label: "quarantine/quarantine 198.51.100.66/32", Outcome: model.OutRST, Port: 25},
		{Source: netip.MustParseAddr("100.64.1.10"), Count: 1, Rule: 9, Label: "range/dsl-dynamic", Outcome: model.OutRST, Port: 25,
			MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, OuterVLAN: 200, InnerVLAN: 300, PPPoESession: 4660},
	}
	tb := offenderTable(offs)
	var b strings.Builder
	tb.write(&b, "")
	want := "source         packets  mac                vlan     pppoe  rule                         last outcome  port\n" +
		"100.64.1.10          1  02:00:00:00:00:01  200.300  4660   dsl-dynamic                  rst             25\n" +
		"198.51.100.66        2  -                  -        -      quarantine 198.51.100.66/32  rst             25\n"
	if b.String() != want {
		t.Errorf("offender table:\n%s\nwant:\n%s", b.String(), want)
	}
}
