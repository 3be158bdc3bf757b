package daemon

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Every runtime event series exists from the start, at 0: the counter lives in the
// daemon (it restarts with it), and a series that appears only with its first event
// hides that event from rate() and increase(), which need two samples.
func TestRuntimeEventSeriesFromStart(t *testing.T) {
	m := newMetrics(nil, nil, nil)
	ch := make(chan prometheus.Metric, 64)
	m.runtime.Collect(ch)
	close(ch)
	var got []string
	for c := range ch {
		var d dto.Metric
		if err := c.Write(&d); err != nil {
			t.Fatal(err)
		}
		if d.GetCounter().GetValue() != 0 {
			t.Errorf("%v starts at %v", d.GetLabel(), d.GetCounter().GetValue())
		}
		var kind, action string
		for _, l := range d.GetLabel() {
			switch l.GetName() {
			case "kind":
				kind = l.GetValue()
			case "action":
				action = l.GetValue()
			}
		}
		got = append(got, kind+"/"+action)
	}
	slices.Sort(got)
	want := []string{"quarantine/added", "quarantine/escalated", "quarantine/expired", "quarantine/extended", "quarantine/released", "quarantine/suspended",
		"unblock/added", "unblock/expired", "unblock/extended", "unblock/released", "unblock/suspended"}
	if !slices.Equal(got, want) {
		t.Errorf("series %q, want %q", got, want)
	}
}

// The HELP of the RST counters does not say "reset ranges" only: quarantines (of the
// policy and the runtime ones) reset too, and count there.
func TestRSTHelpCoversQuarantines(t *testing.T) {
	for _, d := range []*prometheus.Desc{descRSTSent, descRSTLimited} {
		if s := d.String(); !strings.Contains(s, "deciding entry says reset") {
			t.Errorf("%s", s)
		}
	}
	if s := descRSTSent.String(); !strings.Contains(s, "quarantine") {
		t.Errorf("%s", s)
	}
}

// A configuration value quoted back in an error is cut short, as the policy's are.
func TestConfigLongValueClipped(t *testing.T) {
	long := strings.Repeat("a", 1<<20)
	for _, src := range []string{
		"interfaces: [eth1]\npolicy: p\nmode: " + long + "\n",
		"interfaces: [eth1]\npolicy: p\n" + long + ": 1\n",
		"interfaces: [eth1]\npolicy: p\nlisten: [" + long + "]\n",
	} {
		_, err := ParseConfig("c.yaml", []byte(src))
		if err == nil || len(err.Error()) > 1000 {
			t.Errorf("%.40q: a %d-byte error", src, len(fmt.Sprint(err)))
		}
	}
}
