package fleet

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Roles in etcd's RBAC (docs/fleet.md, "Security"). A router may read its group's keys
// and write only its own status; the NOC pushes. With etcd's client certificate
// authentication (--client-cert-auth) a certificate's common name is the user, so a
// router's user is named after its certificate and needs no password.
//
// Roles are per prefix: two fleets in one etcd (a lab beside production, each with
// an etcd.prefix of its own) must not share a role, or a grant in one would add its
// permissions to every user of the other. Under DefaultPrefix the names are the
// plain ones; under another, the prefix follows an '@', which no name may hold.
func (c *Client) nocRole() string { return "portcullis-noc" + c.roleSuffix() }

// RouterRole is the name of router's role in group. The separators are characters no
// group or router name may hold, so two routers never share a role, nor two fleets.
func (c *Client) RouterRole(group, router string) string {
	return "portcullis-router:" + group + "/" + router + c.roleSuffix()
}

func (c *Client) roleSuffix() string {
	if c.prefix == DefaultPrefix {
		return ""
	}
	return "@" + c.prefix
}

// GrantRouter makes etcd user (created if absent, with password, or none for a
// certificate's common name; an existing user's password is set to password, unless
// that is "") the router router of group: it may read the group's
// keys (policy, history, fleet entries, the other routers' status) and write its
// own status and known keys, nothing else. Run it with the credentials of etcd's root.
func GrantRouter(ctx context.Context, cli *Client, group, router, user, password string) error {
	if err := CheckName("group", group); err != nil {
		return err
	}
	if err := CheckName("router", router); err != nil {
		return err
	}
	role := cli.RouterRole(group, router)
	perms := []struct {
		key, end string
		perm     clientv3.PermissionType
	}{
		{cli.groupKey(group), clientv3.GetPrefixRangeEnd(cli.groupKey(group)), clientv3.PermissionType(clientv3.PermRead)},
		{cli.routersKey(group) + router, "", clientv3.PermissionType(clientv3.PermWrite)},
		{cli.knownKey(group) + router, "", clientv3.PermissionType(clientv3.PermWrite)},
	}
	if err := addRole(ctx, cli, role); err != nil {
		return err
	}
	for _, p := range perms {
		if _, err := cli.etcd.RoleGrantPermission(ctx, role, p.key, p.end, p.perm); err != nil {
			return fmt.Errorf("granting %s on %s: %w", role, p.key, cli.deniedGrant(err))
		}
	}
	return grantUser(ctx, cli, user, password, role)
}

// GrantRouterEntries lets router of group (GrantRouter first) write the group's
// fleet entries too: for a router whose HTTP API takes fleet-wide quarantines and
// unblocks ("fleet": true) from the abuse desk's tools or the portal.
func GrantRouterEntries(ctx context.Context, cli *Client, group, router string) error {
	role := cli.RouterRole(group, router)
	if _, err := cli.etcd.RoleGrantPermission(ctx, role, cli.entriesKey(group), clientv3.GetPrefixRangeEnd(cli.entriesKey(group)),
		clientv3.PermissionType(clientv3.PermReadWrite)); err != nil {
		return fmt.Errorf("granting %s the fleet entries of group %s: %w", role, group, cli.deniedGrant(err))
	}
	return nil
}

// GrantNOC makes etcd user (created if absent; its password set as GrantRouter's)
// one of the NOC's: it may read and
// write every key of the fleet (push, roll back, fleet entries, status).
func GrantNOC(ctx context.Context, cli *Client, user, password string) error {
	if cli.prefix == "/" {
		// Not the fleet's keys: every key of etcd that starts with "/" (another
		// application's, a Kubernetes' secrets).
		return fmt.Errorf("%w: refusing to grant the NOC read and write on prefix \"/\", every key of etcd under it: give the fleet a prefix of its own (etcd.prefix, --prefix), e.g. %s", ErrPrefix, DefaultPrefix)
	}
	if err := addRole(ctx, cli, cli.nocRole()); err != nil {
		return err
	}
	if _, err := cli.etcd.RoleGrantPermission(ctx, cli.nocRole(), cli.prefix, clientv3.GetPrefixRangeEnd(cli.prefix),
		clientv3.PermissionType(clientv3.PermReadWrite)); err != nil {
		return fmt.Errorf("granting %s on %s: %w", cli.nocRole(), cli.prefix, cli.deniedGrant(err))
	}
	return grantUser(ctx, cli, user, password, cli.nocRole())
}

func addRole(ctx context.Context, cli *Client, role string) error {
	if _, err := cli.etcd.RoleAdd(ctx, role); err != nil && !errors.Is(err, rpctypes.ErrRoleAlreadyExist) {
		return fmt.Errorf("adding role %s: %w", role, cli.deniedGrant(err))
	}
	return nil
}

func grantUser(ctx context.Context, cli *Client, user, password, role string) error {
	if user == "" {
		return fmt.Errorf("%w: no etcd user named (the router's certificate's common name, or a user of its own)", ErrName)
	}
	_, err := cli.etcd.UserAddWithOptions(ctx, user, password, &clientv3.UserAddOptions{NoPassword: password == ""})
	switch {
	case errors.Is(err, rpctypes.ErrUserAlreadyExist) && password != "":
		// A grant with a password sets it: a rotation, not a no-op that keeps the old.
		if _, err := cli.etcd.UserChangePassword(ctx, user, password); err != nil {
			return fmt.Errorf("changing the password of etcd user %s: %w", user, cli.deniedGrant(err))
		}
	case err != nil && !errors.Is(err, rpctypes.ErrUserAlreadyExist):
		return fmt.Errorf("adding user %s: %w", user, cli.deniedGrant(err))
	}
	if _, err := cli.etcd.UserGrantRole(ctx, user, role); err != nil {
		return fmt.Errorf("granting %s to %s: %w", role, user, cli.deniedGrant(err))
	}
	return nil
}
