package fleet

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/portcullis/portcullis/overlay"
)

// With etcd's authentication on and the roles GrantNOC and GrantRouter make: the NOC
// pushes; a router reads its group and writes its own status, and cannot push, write
// another router's status, or read another group.
func TestRBAC(t *testing.T) {
	srv, pwFile := enableAuth(t)
	ctx := ctxT(t)
	as := func(user, password string) *Client {
		t.Helper()
		c, err := Dial(Conn{Endpoints: srv.Endpoints, User: user, PasswordFile: pwFile(user, password)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	root := as("root", "root-pw")
	if err := GrantNOC(ctx, root, "noc", "noc-pw"); err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{"bng1", "bng2"} {
		if err := GrantRouter(ctx, root, "dsl", r, r, r+"-pw"); err != nil {
			t.Fatal(err)
		}
	}
	// Granting again changes nothing and is no error (a script run twice).
	if err := GrantRouter(ctx, root, "dsl", "bng1", "bng1", "bng1-pw"); err != nil {
		t.Fatalf("granting again: %v", err)
	}

	// Granting with a new password sets it (a rotation): the old one no longer works.
	if err := GrantRouter(ctx, root, "dsl", "bng2", "bng2", "bng2-new-pw"); err != nil {
		t.Fatal(err)
	}
	if err := as("bng2", "bng2-pw").Reachable(ctx, 5*time.Second); err == nil {
		t.Error("bng2's old password still works after a grant with a new one")
	}
	if err := as("bng2", "bng2-new-pw").Reachable(ctx, 5*time.Second); err != nil {
		t.Errorf("bng2's new password: %v", err)
	}

	noc, bng1 := as("noc", "noc-pw"), as("bng1", "bng1-pw")
	rev, err := Push(ctx, noc, "dsl", validPolicy(1), "alice@noc", "first", 0)
	if err != nil {
		t.Fatalf("the NOC pushes: %v", err)
	}
	if _, err := Push(ctx, noc, "mobile", validPolicy(2), "alice@noc", "", 0); err != nil {
		t.Fatalf("the NOC pushes another group: %v", err)
	}
	if _, got, err := Read(ctx, bng1, "dsl"); err != nil || got != rev {
		t.Fatalf("a router reads its group: rev %d, %v", got, err)
	}
	if _, err := Push(ctx, bng1, "dsl", validPolicy(3), "bng1", "", rev); err == nil {
		t.Error("a router pushed its group's policy")
	}
	if _, _, err := Read(ctx, bng1, "mobile"); err == nil {
		t.Error("a router read another group's policy")
	}
	if _, err := bng1.etcd.Put(ctx, bng1.routersKey("dsl")+"bng2", "{}"); err == nil {
		t.Error("a router wrote another router's status")
	}
	if _, err := bng1.etcd.Put(ctx, bng1.entriesKey("dsl")+"quarantine/100.64.1.10_32", "{}"); err == nil {
		t.Error("a router wrote a fleet entry")
	}
	// Nor can it reach another router's report, or a fleet entry, through a lease:
	// revoking a lease needs write on every key under it.
	otherLease, err := noc.etcd.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := noc.etcd.Put(ctx, noc.routersKey("dsl")+"bng2", "{}", clientv3.WithLease(otherLease.ID)); err != nil {
		t.Fatal(err)
	}
	if _, err := bng1.etcd.Revoke(ctx, otherLease.ID); err == nil {
		t.Error("a router revoked the lease of another router's report")
	}
	if err := markKnown(ctx, noc, "dsl", "bng2"); err != nil {
		t.Fatal(err)
	}
	if _, err := bng1.etcd.Delete(ctx, bng1.knownKey("dsl")+"bng2"); err == nil {
		t.Error("a router deleted another router's known key")
	}
	if _, err := bng1.etcd.Put(ctx, bng1.historyKey("dsl")+"99999999999999999999", "{}"); err == nil {
		t.Error("a router wrote a history record")
	}
	if _, err := bng1.etcd.Delete(ctx, bng1.policyKey("dsl")); err == nil {
		t.Error("a router deleted its group's policy")
	}
	if _, err := History(ctx, bng1, "dsl"); err != nil {
		t.Errorf("a router reads its group's history: %v", err)
	}

	// With --entries a router may write the group's fleet entries (its API takes
	// fleet-wide entries); without, the refusal is etcd's permission error, which the
	// daemon answers as forbidden.
	if err := GrantRouterEntries(ctx, root, "dsl", "bng1"); err != nil {
		t.Fatal(err)
	}
	req := overlay.Request{Kind: overlay.Quarantine, Prefix: netip.MustParsePrefix("100.64.1.10/32"), For: time.Hour, Reason: "spam run"}
	nocReq := overlay.Request{Kind: overlay.Quarantine, Prefix: netip.MustParsePrefix("100.64.1.20/32"), For: time.Hour, Reason: "spam run"}
	if err := PutEntry(ctx, noc, "dsl", nocReq, "alice@noc"); err != nil {
		t.Fatal(err)
	}
	if resp, err := noc.etcd.Get(ctx, noc.entryKey("dsl", overlay.Key{Kind: nocReq.Kind, Prefix: nocReq.Prefix})); err != nil || len(resp.Kvs) != 1 {
		t.Fatal(err)
	} else if _, err := as("bng2", "bng2-new-pw").etcd.Revoke(ctx, clientv3.LeaseID(resp.Kvs[0].Lease)); err == nil {
		t.Error("a router without the entries grant ended a fleet entry by revoking its lease")
	}
	if err := PutEntry(ctx, bng1, "dsl", req, "api:abuse-desk"); err != nil {
		t.Errorf("a router granted the entries could not write one: %v", err)
	}
	if err := PutEntry(ctx, as("bng2", "bng2-new-pw"), "dsl", req, "api:abuse-desk"); !errors.Is(err, rpctypes.ErrPermissionDenied) {
		t.Errorf("a router without the entries grant: %v, want etcd's permission denied", err)
	}

	rep, err := StartReporter(bng1, "dsl", "bng1", 2*time.Second, func() Report {
		return Report{Router: "bng1", Group: "dsl", PolicyRevision: rev, ProofOK: true}
	}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer rep.Close()
	for end := time.Now().Add(deadline); ; {
		resp, err := noc.etcd.Get(ctx, noc.routersKey("dsl")+"bng1", clientv3.WithCountOnly())
		if err == nil && resp.Count == 1 {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("the router's own status was never written: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Two fleets in one etcd under prefixes of their own (a lab beside production, as
// etcd.prefix allows): the lab NOC's user may not push production's policy, and a
// lab router may not write a production router's report, although groups and
// routers have the same names. Roles are per prefix.
func TestRBACPrefixesApart(t *testing.T) {
	srv, pwFile := enableAuth(t)
	ctx := ctxT(t)
	as := func(prefix, user, password string) *Client {
		t.Helper()
		c, err := Dial(Conn{Endpoints: srv.Endpoints, User: user, PasswordFile: pwFile(user, password), Prefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	prodRoot, labRoot := as("", "root", "root-pw"), as("/lab/", "root", "root-pw")
	if err := GrantNOC(ctx, prodRoot, "noc", "noc-pw"); err != nil {
		t.Fatal(err)
	}
	if err := GrantNOC(ctx, labRoot, "lab-noc", "lab-noc-pw"); err != nil {
		t.Fatal(err)
	}
	if err := GrantRouter(ctx, prodRoot, "dsl", "bng1", "bng1", "bng1-pw"); err != nil {
		t.Fatal(err)
	}
	if err := GrantRouter(ctx, labRoot, "dsl", "bng1", "lab-bng1", "lab-bng1-pw"); err != nil {
		t.Fatal(err)
	}
	if err := GrantNOC(ctx, as("/", "root", "root-pw"), "noc", ""); !errors.Is(err, ErrPrefix) {
		t.Errorf("a NOC grant on prefix /: %v, want ErrPrefix", err)
	}
	prodNOC := as("", "noc", "noc-pw")
	rev, err := Push(ctx, prodNOC, "dsl", validPolicy(1), "alice@noc", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Push(ctx, as("/lab/", "lab-noc", "lab-noc-pw"), "dsl", validPolicy(2), "eve@lab", "", 0); err != nil {
		t.Fatalf("the lab NOC pushes the lab: %v", err)
	}
	labNOCOnProd := as("", "lab-noc", "lab-noc-pw")
	if _, err := Push(ctx, labNOCOnProd, "dsl", validPolicy(3), "eve@lab", "", rev); err == nil {
		t.Error("the lab NOC's user pushed production's policy")
	}
	labRouterOnProd := as("", "lab-bng1", "lab-bng1-pw")
	if _, err := putReport(ctx, labRouterOnProd, Report{Router: "bng1", Group: "dsl"}, 0); err == nil {
		t.Error("a lab router wrote production's bng1 report")
	}
	if _, _, err := Read(ctx, labRouterOnProd, "dsl"); err == nil {
		t.Error("a lab router read production's policy")
	}
	if _, _, err := Read(ctx, as("", "bng1", "bng1-pw"), "dsl"); err != nil {
		t.Errorf("production's router reads its group: %v", err)
	}
}
