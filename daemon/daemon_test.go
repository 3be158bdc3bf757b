package daemon

import (
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portcullis/portcullis/controller"
	"github.com/portcullis/portcullis/internal/testutil"
	"github.com/portcullis/portcullis/loader"
	"github.com/portcullis/portcullis/model"
)

func TestParseConfig(t *testing.T) {
	good := "interfaces: [eth1, eth2.100]\nmode: native\npolicy: /etc/portcullis/policy.yaml\n"
	c, err := ParseConfig("c.yaml", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if c.Mode != loader.ModeNative || c.Listen != DefaultListen || c.BPFFS != loader.DefaultPinDir || len(c.Interfaces) != 2 {
		t.Fatalf("%+v", c)
	}
	for _, tc := range []struct{ src, want string }{
		{"interfaces: [eth1]\nmode: fast\npolicy: p\n", `c.yaml:2:7: mode "fast" is not one of native, generic, auto`},
		{"interfaces: [eth1]\npolicy: p\nlisten_addr: x\n", `c.yaml:3:1: unknown key "listen_addr"`},
		{"mode: native\npolicy: p\n", "c.yaml: interfaces is empty"},
		{"interfaces: [eth1]\n", "c.yaml: policy is missing"},
		{"interfaces: [eth1, eth1]\npolicy: p\n", `c.yaml:1:20: interface "eth1" is listed twice`},
	} {
		if _, err := ParseConfig("c.yaml", []byte(tc.src)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.src, err, tc.want)
		}
	}
}

// Readers do not wait for a policy change: while an apply is held inside the swap
// (the tamper hook blocks with the controller's lock taken), status and a metrics scrape
// answer. No timing is involved: the hook waits until both have answered, or until a
// generous deadline that a blocked reader would hit.
func TestReadersDoNotWaitForAnApply(t *testing.T) {
	var tamper atomic.Pointer[func(*model.Tables) *model.Tables]
	dm := newTestDaemon(t, nil, func(tb *model.Tables) *model.Tables {
		if f := tamper.Load(); f != nil {
			return (*f)(tb)
		}
		return tb
	})
	d, m := dm.ctl, dm.metrics
	if res := d.Apply("a.yaml", []byte(testutil.PolicyA), "file"); res.Err != nil {
		t.Fatal(res.Err)
	}
	entered, release := make(chan struct{}), make(chan struct{})
	hold := func(tb *model.Tables) *model.Tables {
		close(entered)
		<-release
		return tb
	}
	tamper.Store(&hold)
	done := make(chan controller.Result)
	go func() { done <- d.Apply("b.yaml", []byte(testutil.PolicyB), "file") }()
	<-entered
	answered := make(chan string, 3)
	go func() {
		start := time.Now()
		n := len(d.Entries()) + len(d.History(netip.Prefix{}))
		answered <- "entries and history (" + strconv.Itoa(n) + ") after " + time.Since(start).String()
	}()
	go func() {
		start := time.Now()
		st := d.Snapshot()
		answered <- "status " + st.Hash + " after " + time.Since(start).String()
	}()
	go func() {
		start := time.Now()
		mfs, err := m.reg.Gather()
		if err != nil {
			answered <- "scrape failed: " + err.Error()
			return
		}
		answered <- "scrape of " + strconv.Itoa(len(mfs)) + " families after " + time.Since(start).String()
	}()
	deadline := time.After(30 * time.Second)
	for range 3 {
		select {
		case a := <-answered:
			t.Log(a)
			if strings.HasPrefix(a, "scrape failed") {
				t.Error(a)
			}
		case <-deadline:
			close(release)
			t.Fatal("a reader waited for the apply in progress")
		}
	}
	close(release)
	if res := <-done; res.Err != nil {
		t.Fatal(res.Err)
	}
}

// A fleet router's configuration: policy_source etcd needs no policy file, and every
// mistake in the etcd section is named with the fix.
func TestParseConfigEtcd(t *testing.T) {
	good := "interfaces: [eth1]\npolicy_source: etcd\netcd:\n  endpoints: [https://192.0.2.11:2379]\n  group: dsl-north\n  router: bng1\n  ca: /etc/portcullis/etcd-ca.pem\n  cert: /etc/portcullis/bng1.pem\n  key: /etc/portcullis/bng1-key.pem\n  lease_ttl: 15s\n"
	c, err := ParseConfig("c.yaml", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if c.Etcd.Group != "dsl-north" || c.Etcd.Router != "bng1" || c.Etcd.LeaseTTL != 15*time.Second || c.Etcd.CA == "" || len(c.Etcd.Endpoints) != 1 {
		t.Fatalf("parsed %+v", c.Etcd)
	}
	for _, tc := range []struct{ yaml, want string }{
		{"interfaces: [eth1]\npolicy_source: etcd\netcd: {group: dsl}\n", "c.yaml:3:1: etcd.endpoints is empty"},
		{"interfaces: [eth1]\npolicy_source: etcd\netcd: {endpoints: [192.0.2.11:2379], group: dsl}\n", "has no scheme"},
		{"interfaces: [eth1]\npolicy_source: etcd\netcd: {endpoints: [\"http://192.0.2.11:2379\"]}\n", "etcd.group"},
		{"interfaces: [eth1]\npolicy_source: etcd\netcd: {endpoints: [\"http://192.0.2.11:2379\"], group: DSL/North}\n", "etcd.group"},
		{"interfaces: [eth1]\npolicy_source: etcd\netcd: {endpoints: [\"http://192.0.2.11:2379\"], group: dsl, cert: /x.pem}\n", "cert and key go together"},
		{"interfaces: [eth1]\npolicy_source: etcd\netcd: {endpoints: [\"http://192.0.2.11:2379\"], group: dsl, lease_ttl: 1s}\n", "lease_ttl 1s is too short"},
		{"interfaces: [eth1]\npolicy_source: etc\n", `policy_source "etc" is not one of file, etcd`},
		{"interfaces: [eth1]\n", "policy is missing"},
		{"interfaces: [eth1]\npolicy_source: etcd\netcd: {endpoint: [\"http://192.0.2.11:2379\"]}\n", `c.yaml:3:8: unknown key "endpoint" in etcd; did you mean "endpoints"?`},
	} {
		_, err := ParseConfig("c.yaml", []byte(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.yaml, err, tc.want)
		}
	}
}
