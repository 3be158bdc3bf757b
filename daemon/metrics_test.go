package daemon

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/portcullis/portcullis/controller"
	"github.com/portcullis/portcullis/overlay"
)

// Every runtime event series that can count exists from the start, at 0 (none for a
// quarantine suspended: only unblocks are): the counter lives in the
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
	want := []string{"quarantine/added", "quarantine/escalated", "quarantine/expired", "quarantine/extended", "quarantine/released",
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

// The runtime entry actions are listed alike wherever they are listed: the events
// counter's series (overlay.Actions), the history's enum in api/openapi.yaml, and
// docs/daemon.md (the runtime section and the metrics table) and docs/api.md. The
// metrics table once left out "extended" when the action was added everywhere else.
func TestActionsListedAlike(t *testing.T) {
	var names []string
	for _, a := range overlay.Actions {
		names = append(names, string(a))
	}
	list := strings.Join(names, ", ")
	read := func(path string) string {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if spec := read("../api/openapi.yaml"); !strings.Contains(spec, "enum: ["+list+"]") {
		t.Errorf("api/openapi.yaml: the history's action enum is not [%s]", list)
	}
	lists := regexp.MustCompile(`\(added, [a-z, ]*[a-z]`).FindAllString(read("../docs/daemon.md"), -1)
	if len(lists) < 2 {
		t.Errorf("docs/daemon.md: %d lists of the actions, want the runtime section's and the metrics table's", len(lists))
	}
	for _, l := range lists {
		if l[1:] != list {
			t.Errorf("docs/daemon.md lists the actions as %q, want %q", l[1:], list)
		}
	}
	api := read("../docs/api.md")
	_, history, _ := strings.Cut(api, "### GET /v1/history")
	history, _, _ = strings.Cut(history, "```")
	for _, a := range names {
		if !strings.Contains(history, "`"+a+"`") {
			t.Errorf("docs/api.md: GET /v1/history does not name the action %q", a)
		}
	}
}

// /readyz answers 200 only while a policy is in force on every configured interface,
// and otherwise 503 with what is missing, for a load balancer or a monitor that must
// not take "the daemon answers" (/healthz) for "port 25 is governed".
func TestReadyz(t *testing.T) {
	d := newTestDaemon(t, []string{"pcready0"}, nil)
	ctl := d.ctl
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := d.serveMetrics(ln)
	t.Cleanup(func() { srv.Close() })
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + ln.Addr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, string(b)
	}
	if code, body := get("/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "no policy in force") || !strings.Contains(body, "interface pcready0 not attached") {
		t.Errorf("no policy, nothing attached: %d %q", code, body)
	}
	if code, body := get("/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("/healthz: %d %q, want 200 ok (the daemon answers)", code, body)
	}
	if res := ctl.Apply("a.yaml", []byte("version: 1\nranges:\n  - {name: dsl, verdict: drop, cidrs: [100.64.0.0/10]}\n"), "file"); res.Err != nil {
		t.Fatal(res.Err)
	}
	if code, body := get("/readyz"); code != http.StatusServiceUnavailable || strings.Contains(body, "no policy") || !strings.Contains(body, "pcready0") {
		t.Errorf("a policy, nothing attached: %d %q", code, body)
	}
	ctl.SetAttachment(controller.Attachment{Interfaces: map[string]string{"pcready0": "native"}})
	if code, body := get("/readyz"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("a policy, attached: %d %q, want 200 ok", code, body)
	}
}
