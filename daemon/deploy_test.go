package daemon

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
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
	// The commented fleet and API sections, uncommented, parse too (a router of a
	// fleet starts from this file).
	commented := regexp.MustCompile(`(?m)^# ((policy_source|etcd|api):.*|  +[a-z_]+:.*)$`)
	fleetCfg := commented.ReplaceAllString(string(data), "$1")
	c, err := ParseConfig("deploy/portcullis.yaml (uncommented)", []byte(fleetCfg))
	if err != nil {
		t.Fatalf("deploy/portcullis.yaml with its commented sections: %v", err)
	}
	if c.PolicySource != PolicyFromEtcd || c.Etcd.Group != "dsl-north" || len(c.Etcd.Endpoints) != 3 || c.API.Listen == "" {
		t.Fatalf("the uncommented sections: source %q, etcd %+v, api %+v", c.PolicySource, c.Etcd, c.API)
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
	// An ISP runs many routers: every query selects the routers of the dashboard's
	// instance variable, or its stats (policy in force, last proof) mix them all.
	var board struct {
		Templating struct {
			List []struct{ Name string } `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(dash, &board); err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(board.Templating.List, func(v struct{ Name string }) bool { return v.Name == "instance" }) {
		t.Error("the dashboard has no instance variable")
	}
	for _, expr := range regexp.MustCompile(`"expr": "((?:[^"\\]|\\.)*)"`).FindAllStringSubmatch(string(dash), -1) {
		for _, sel := range regexp.MustCompile(`portcullis_[a-z_0-9]+(\{[^}]*\})?`).FindAllStringSubmatch(expr[1], -1) {
			if !strings.Contains(sel[1], `instance=~\"$instance\"`) {
				t.Errorf("%s does not select the routers of $instance", sel[0])
			}
		}
	}
}
