package status

import (
	"encoding/json"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/portcullis/portcullis/loader"
	"github.com/portcullis/portcullis/model"
)

// top shows each count beside its error bound, with the layer 2 that finds the
// subscriber (MAC, VLAN ids, PPPoE session), most attempts first; JSON carries the same.
func TestTopText(t *testing.T) {
	seen := time.Date(2026, 12, 1, 19, 0, 0, 0, time.UTC)
	mac, _ := net.ParseMAC("02:00:00:00:00:01")
	n := uint64(210000)
	bound, conf := loader.OverCount(n, 4096, 4)
	rec := loader.OffenderRecord{Attempts: n, Width: 4096, Depth: 4, MaxOvercount: bound, Confidence: conf, Since: seen.Add(-time.Hour), Sources: []loader.Offender{
		{Source: netip.MustParseAddr("100.64.0.1"), Count: 12, MaxOvercount: bound, FirstSeen: seen, LastSeen: seen,
			Label: "range/dynamic", Port: 25, Outcome: model.OutDrop},
		{Source: netip.MustParseAddr("100.64.0.2"), Count: 2000, MaxOvercount: bound, FirstSeen: seen, LastSeen: seen,
			Label: "range/dynamic", Port: 25, Outcome: model.OutRST, MAC: mac, OuterVLAN: 200, InnerVLAN: 300, PPPoESession: 4660},
		{Source: netip.MustParseAddr("100.64.0.3"), Count: 7, MaxOvercount: bound, FirstSeen: seen, LastSeen: seen,
			Label: "range/dynamic", Port: 25, Outcome: model.OutDrop, MAC: mac, OuterVLAN: 100},
	}}
	top := Top(rec, 2)
	var b strings.Builder
	if err := top.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	want := `SOURCE      ATTEMPTS  OVERCOUNT<=  MAC                VLAN     PPPOE SESSION  FIRST SEEN            LAST SEEN             ENTRY          LAST PORT  LAST OUTCOME
100.64.0.2  2000      140          02:00:00:00:00:01  200.300  4660           2026-12-01T19:00:00Z  2026-12-01T19:00:00Z  range dynamic  25         rst
100.64.0.1  12        140          -                  -        -              2026-12-01T19:00:00Z  2026-12-01T19:00:00Z  range dynamic  25         drop

ATTEMPTS since 2026-12-01T18:00:00Z are estimates (a count-min sketch): never below the true count, above it by at
most OVERCOUNT<= attempts with probability 98.2%. MAC, VLAN (outer.inner), PPPoE session: the last attempt's.
`
	if b.String() != want {
		t.Errorf("top:\n%s\nwant:\n%s", b.String(), want)
	}
	js, err := json.Marshal(top[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{`"attempts":2000`, `"attempts_max_overcount":140`, `"mac":"02:00:00:00:00:01"`, `"vlan":"200.300"`,
		`"outer_vlan":200`, `"inner_vlan":300`, `"pppoe_session":4660`, `"counted_since":"2026-12-01T18:00:00Z"`} {
		if !strings.Contains(string(js), f) {
			t.Errorf("JSON %s lacks %s", js, f)
		}
	}
}
