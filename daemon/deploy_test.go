package daemon

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// The shipped configuration parses, and the Grafana dashboard only queries metrics the
// daemon exports.
func TestDeployFiles(t *testing.T) {
	data, err := os.ReadFile("../deploy/portcullis.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseConfig("deploy/portcullis.yaml", data); err != nil {
		t.Fatalf("deploy/portcullis.yaml: %v", err)
	}
	ch := make(chan *prometheus.Desc, 64)
	(&metrics{}).Describe(ch)
	close(ch)
	var names []string
	for d := range ch {
		names = append(names, d.String())
	}
	exported := strings.Join(names, " ")
	dash, err := os.ReadFile("../deploy/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	used := regexp.MustCompile(`portcullis_[a-z_0-9]+`).FindAllString(string(dash), -1)
	if len(used) == 0 {
		t.Fatal("the dashboard queries no portcullis metric")
	}
	for _, m := range used {
		if !strings.Contains(exported, `"`+m+`"`) {
			t.Errorf("the dashboard queries %s, which the daemon does not export", m)
		}
	}
}
