package fleet

import (
	"context"
	"fmt"
	"slices"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Groups returns the names of the groups that hold any key in etcd (a policy, its
// history, a router's report or known key, a fleet entry), sorted. A name CheckName
// refuses (a key put by hand) is no group: no portcullis command can address it, and
// it must not make the fleet's status fail.
func Groups(ctx context.Context, cli *Client) ([]string, error) {
	resp, err := cli.etcd.Get(ctx, cli.groupsKey(), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, fmt.Errorf("listing the groups: %w", err)
	}
	var groups []string
	for _, kv := range resp.Kvs {
		if g := cli.groupOf(string(kv.Key)); CheckName("group", g) == nil && !slices.Contains(groups, g) {
			groups = append(groups, g)
		}
	}
	slices.Sort(groups)
	return groups, nil
}

// GroupInfo is what a group holds: enough to tell a misspelt group name (it holds
// nothing) from a group whose routers wait for its first policy.
type GroupInfo struct {
	Exists    bool     // any key under groups/G/
	Revision  int64    // its policy's revision; 0: none
	Reporting []string // routers with a report now (under a live lease), sorted
	Known     []string // routers that reported once, sorted
}

// Inspect returns what group holds.
func Inspect(ctx context.Context, cli *Client, group string) (GroupInfo, error) {
	if err := CheckName("group", group); err != nil {
		return GroupInfo{}, err
	}
	var gi GroupInfo
	resp, err := cli.etcd.Get(ctx, cli.groupKey(group), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return gi, fmt.Errorf("reading group %s: %w", group, err)
	}
	gi.Exists = len(resp.Kvs) > 0
	for _, kv := range resp.Kvs {
		k := string(kv.Key)
		switch {
		case k == cli.policyKey(group):
			gi.Revision = kv.ModRevision
		case strings.HasPrefix(k, cli.routersKey(group)):
			gi.Reporting = append(gi.Reporting, strings.TrimPrefix(k, cli.routersKey(group)))
		case strings.HasPrefix(k, cli.knownKey(group)):
			gi.Known = append(gi.Known, strings.TrimPrefix(k, cli.knownKey(group)))
		}
	}
	return gi, nil
}

// Forget removes router from group's known routers, so that fleet status no longer
// lists it as gone: a router decommissioned, renamed, or moved to another group
// (etcd.group). A router that reports now is refused (ErrInvalid): it would still be
// listed, and its next report writes its known key again. A router the group does not
// know is ErrNoRouter.
func Forget(ctx context.Context, cli *Client, group, router string) error {
	if err := CheckName("group", group); err != nil {
		return err
	}
	if err := CheckName("router", router); err != nil {
		return err
	}
	rk, kk := cli.routersKey(group)+router, cli.knownKey(group)+router
	resp, err := cli.etcd.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(rk), "=", 0)).
		Then(clientv3.OpDelete(kk)).
		Commit()
	if err != nil {
		return fmt.Errorf("forgetting router %s of group %s: %w", router, group, cli.denied(err))
	}
	if !resp.Succeeded {
		return fmt.Errorf("%w: router %s reports in group %s now (%s): stop it first (or change its etcd.group), then forget it", ErrInvalid, router, group, rk)
	}
	if resp.Responses[0].GetResponseDeleteRange().Deleted == 0 {
		return fmt.Errorf("%w: group %s has no router %s (portcullis fleet status --group %s lists them)", ErrNoRouter, group, router, group)
	}
	return nil
}
