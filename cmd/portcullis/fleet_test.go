package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/portcullis/portcullis/fleet/etcdtest"
	"github.com/portcullis/portcullis/testenv"
)

// TestMain lets the test binary be an etcd member of a fleet test's cluster
// (etcdtest.StartCluster runs it again as one, in the member's namespace).
func TestMain(m *testing.M) {
	etcdtest.MemberMain()
	os.Exit(m.Run())
}

// fleetLab is a fleet in namespaces: a management network, etcd members on it (one
// namespace and one process each), and small test ISPs whose gateways are the routers,
// each connected to the management network and nothing else of the others'.
type fleetLab struct {
	mgmt    *testenv.Mgmt
	etcd    *etcdtest.Cluster
	isps    []*testenv.Topology
	mgmtIPs []string // each router's management address, by ISP
}

// dialFrom is a dialer whose connections start inside ns.
func dialFrom(ns *testenv.Namespace) etcdtest.DialFunc {
	return func(ctx context.Context, addr string) (net.Conn, error) { return ns.DialContext(ctx, "tcp", addr) }
}

// newFleetLab builds members etcd members and routers test ISPs (with just the dsl
// host: XDP is the daemons' business). Everything goes when the test ends.
func newFleetLab(t *testing.T, members, routers int) *fleetLab {
	t.Helper()
	requireRootNet(t)
	mgmt, err := testenv.NewMgmt()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := mgmt.Close(); err != nil {
			t.Errorf("closing the management network: %v", err)
		}
	})
	l := &fleetLab{mgmt: mgmt}
	for i := range routers {
		top, err := testenv.New(testenv.Options{Mode: testenv.Generic, Hosts: []testenv.HostSpec{testenv.DefaultHosts[0]}})
		if err != nil {
			t.Fatalf("ISP %d: %v", i+1, err)
		}
		t.Cleanup(func() { top.Close() })
		a, err := mgmt.Connect(top.Gateway)
		if err != nil {
			t.Fatal(err)
		}
		l.isps = append(l.isps, top)
		l.mgmtIPs = append(l.mgmtIPs, a.String())
	}
	var specs []etcdtest.MemberSpec
	for i := range members {
		name := fmt.Sprintf("etcd%d", i+1)
		ns, addr, err := mgmt.AddMember(name)
		if err != nil {
			t.Fatal(err)
		}
		specs = append(specs, etcdtest.MemberSpec{Name: name, Netns: ns.Name, Addr: addr})
	}
	// Registered after the namespaces: the members are killed before those go.
	l.etcd = etcdtest.StartCluster(t, specs, dialFrom(mgmt.NOC))
	return l
}

// client is an etcd client of every member whose connections start in ISP i's gateway
// namespace: what router i's daemon sees.
func (l *fleetLab) client(t *testing.T, i int) *clientv3.Client {
	return etcdtest.NewClient(t, l.etcd.Endpoints(), dialFrom(l.isps[i].Gateway))
}

// roundTrip writes a key from cli and reads it back, in a bounded time.
func roundTrip(cli *clientv3.Client, key string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	val := time.Now().String()
	if _, err := cli.Put(ctx, key, val); err != nil {
		return fmt.Errorf("put: %w", err)
	}
	resp, err := cli.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("get: %w", err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != val {
		return fmt.Errorf("get %s: %v, want %q", key, resp.Kvs, val)
	}
	return nil
}

// eventually polls cond until it returns nil, failing the test after within.
func eventually(t *testing.T, within time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, within, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// The fleet's network on its own (issue 14's infrastructure): three etcd members, each
// a process in its own namespace, and two routers (the gateways of two test ISPs)
// reaching them over the management network only. Both routers write and read; one
// member killed changes nothing; router 1 cut off fails within a bounded time while
// router 2 carries on, and its subscribers' mail still flows; healed, it works again;
// the killed member restarted rejoins.
func TestFleetNet(t *testing.T) {
	l := newFleetLab(t, 3, 2)
	clis := []*clientv3.Client{l.client(t, 0), l.client(t, 1)}
	works := func(i int) func() error {
		return func() error { return roundTrip(clis[i], fmt.Sprintf("/fleetnet/r%d", i+1)) }
	}
	for i := range clis {
		eventually(t, 30*time.Second, fmt.Sprintf("router %d reaches etcd", i+1), works(i))
	}

	t.Log("one member killed: both routers still write and read")
	l.etcd.Kill(0)
	for i := range clis {
		eventually(t, 30*time.Second, fmt.Sprintf("router %d with etcd1 dead", i+1), works(i))
	}

	t.Log("router 1 cut off: its requests fail, router 2's do not, its mail still flows")
	if err := l.mgmt.Partition(l.isps[0].Gateway); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "router 1's requests fail while cut off", func() error {
		if err := works(0)(); err == nil {
			return fmt.Errorf("router 1 still reaches etcd")
		}
		return nil
	})
	for range 3 {
		if err := works(0)(); err == nil {
			t.Fatal("router 1 reached etcd while cut off")
		}
	}
	if err := works(1)(); err != nil {
		t.Fatalf("router 2 while router 1 is cut off: %v", err)
	}
	for _, top := range l.isps {
		h := top.Host("dsl")
		if got, err, _ := top.Send(h, h.V4, 25, 2*time.Second); got != testenv.Delivered {
			t.Fatalf("%s's mail while router 1 is cut off: %s (%v)", top.ID, got, err)
		}
	}

	t.Log("healed: router 1 works again")
	if err := l.mgmt.Heal(l.isps[0].Gateway); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "router 1 after the heal", works(0))

	t.Log("the killed member restarted: it rejoins and serves")
	l.etcd.Restart(0)
	one := etcdtest.NewClient(t, []string{l.etcd.Endpoint(0)}, dialFrom(l.isps[1].Gateway))
	eventually(t, 30*time.Second, "etcd1 serves router 2 after its restart", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		resp, err := one.Get(ctx, "/fleetnet/r1")
		if err == nil && len(resp.Kvs) != 1 {
			err = fmt.Errorf("etcd1 has no /fleetnet/r1 after rejoining")
		}
		return err
	})
}
