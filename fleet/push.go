package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/portcullis/portcullis/policy"
)

// Read returns the group's policy text and its revision (0, and no text, when the
// group has none: a push with expectRev 0 creates it).
func Read(ctx context.Context, cli *Client, group string) (text []byte, modRev int64, err error) {
	if err := CheckName("group", group); err != nil {
		return nil, 0, err
	}
	resp, err := cli.etcd.Get(ctx, cli.policyKey(group))
	if err != nil {
		return nil, 0, fmt.Errorf("reading the policy of group %s: %w", group, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, 0, nil
	}
	return resp.Kvs[0].Value, resp.Kvs[0].ModRevision, nil
}

// Push makes text the group's policy if the group's policy is still at expectRev (the
// revision Read returned; 0: the group has none yet), with a history record from who
// saying msg, and returns the new revision. The text is checked first (parsed and
// compiled as it would be on a router, named "etcd:GROUP" in errors): a policy error
// is returned as the policy package gives it, with its positions, and nothing is
// written. If the group changed since expectRev, nothing is written and the error
// wraps ErrConflict and says who pushed what since.
func Push(ctx context.Context, cli *Client, group string, text []byte, who, msg string, expectRev int64) (newRev int64, err error) {
	if err := CheckName("group", group); err != nil {
		return 0, err
	}
	if who == "" {
		return 0, fmt.Errorf("%w: a push needs who (the audit trail of every router names them)", ErrInvalid)
	}
	comp, err := compile("etcd:"+group, text)
	if err != nil {
		return 0, err
	}
	return push(ctx, cli, group, text, comp.Hash, who, msg, expectRev)
}

// compile checks text as a router would take it (interfaces aside: those are each
// router's own).
func compile(name string, text []byte) (*policy.Compiled, error) {
	now := time.Now()
	pol, err := policy.ParseInline(name, text, now)
	if err != nil {
		return nil, err
	}
	return policy.Compile(pol, now)
}

// push writes a checked text: the policy and its history record in one transaction,
// if the policy is still at expectRev.
func push(ctx context.Context, cli *Client, group string, text []byte, hash, who, msg string, expectRev int64) (int64, error) {
	// The record's number is one past the last record's. Only one push can commit
	// from a given revision of the policy key, so the compare below makes the number
	// this push's alone; the compare on the record key is a second guard.
	last, err := lastSeq(ctx, cli, group)
	if err != nil {
		return 0, err
	}
	rec := Record{Seq: last + 1, Hash: hash, Who: who, At: time.Now().UTC(), Message: msg, Text: text}
	b, err := json.Marshal(rec)
	if err != nil {
		return 0, err
	}
	pk, rk := cli.policyKey(group), cli.recordKey(group, rec.Seq)
	resp, err := cli.etcd.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(pk), "=", expectRev), clientv3.Compare(clientv3.CreateRevision(rk), "=", 0)).
		Then(clientv3.OpPut(pk, string(text)), clientv3.OpPut(rk, string(b))).
		Else(clientv3.OpGet(pk)).
		Commit()
	if errors.Is(err, rpctypes.ErrRequestTooLarge) || errors.Is(err, rpctypes.ErrGRPCRequestTooLarge) {
		return 0, fmt.Errorf("%w: pushing the policy of group %s: the policy is %d bytes, and a push writes it twice (the policy and its history record) in one request, %d bytes, above etcd's --max-request-bytes (1.5 MiB by default): raise it on every member, or make the policy smaller (%v)",
			ErrTooLarge, group, len(text), len(text)+len(b), err)
	}
	if err != nil {
		return 0, fmt.Errorf("pushing the policy of group %s: %w", group, cli.denied(err))
	}
	if !resp.Succeeded {
		var cur int64
		if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
			cur = kvs[0].ModRevision
		}
		return 0, conflict(ctx, cli, group, cur, expectRev)
	}
	return resp.Header.Revision, nil
}

// conflict is the error of a push from expectRev when the group is at cur.
func conflict(ctx context.Context, cli *Client, group string, cur, expectRev int64) error {
	read := fmt.Sprintf("revision %d", expectRev)
	if expectRev == 0 {
		read = "it with no policy"
	}
	if cur == 0 {
		return fmt.Errorf("%w: group %s has no policy any more (deleted since you read %s): re-read (portcullis fleet push --dry-run) and push again", ErrConflict, group, read)
	}
	by := "someone outside portcullis (no history record)"
	if r, ok, err := recordAt(ctx, cli, group, cur); err == nil && ok {
		by = r.Who
		if r.Message != "" {
			by += fmt.Sprintf(" (%q)", r.Message)
		}
	}
	return fmt.Errorf("%w: group %s changed at revision %d by %s since you read %s: re-read (portcullis fleet push --dry-run) and push again", ErrConflict, group, cur, by, read)
}

// Plan is what a push of a file would change in a group: a dry run.
type Plan struct {
	Group string
	// Revision is the group's revision now: push with it as expectRev to push exactly
	// over what this plan compared against. 0: the group has no policy yet.
	Revision int64
	OldHash  string // "" when the group has no policy yet, or its policy does not compile
	NewHash  string
	// New is the policy pushed, as parsed: what a push over a policy that does not
	// compile shows instead of a diff.
	New *policy.Policy
	// Diff is what changes, from the policy package's Diff (`portcullis diff`); nil
	// when the group has no policy yet, or its policy does not compile.
	Diff *policy.DiffResult
	// By, At and Message are the current revision's push (its history record; ""
	// for a policy put by hand): what a push replaces, and who made it.
	By      string
	At      time.Time
	Message string
	// OldErr is why the group's current policy does not compile here (put by hand
	// with etcdctl, or pushed by a newer portcullis with a feature this one lacks):
	// there is nothing to compare against, and a push replaces it as a whole. The
	// routers refuse such a revision and keep their last good one.
	OldErr error
}

// DryRun checks text (read from file: errors name it) and compares it with what the
// group has, writing nothing. A current policy that does not compile is no error:
// the plan says so (OldErr), since pushing a good one over it is the way out.
func DryRun(ctx context.Context, cli *Client, group, file string, text []byte) (Plan, error) {
	newComp, err := compile(file, text)
	if err != nil {
		return Plan{}, err
	}
	cur, rev, err := Read(ctx, cli, group)
	if err != nil {
		return Plan{}, err
	}
	p := Plan{Group: group, Revision: rev, NewHash: newComp.Hash, New: newComp.Policy}
	if rev == 0 {
		return p, nil
	}
	if r, ok, err := recordAt(ctx, cli, group, rev); err == nil && ok {
		p.By, p.At, p.Message = r.Who, r.At, r.Message
	}
	oldComp, err := compile(Origin(group, rev), cur)
	if err != nil {
		p.OldErr = err
		return p, nil
	}
	d := policy.Diff(oldComp, newComp, time.Now())
	p.OldHash, p.Diff = oldComp.Hash, &d
	return p, nil
}

// Rollback pushes the text of the group's history record of revision toRev again, as
// a new revision with the message "rollback to N", with the same compare-and-swap on
// expectRev as Push. Only that record is read (etcd filters by revision), however
// long the history.
func Rollback(ctx context.Context, cli *Client, group string, toRev int64, who string, expectRev int64) (newRev int64, err error) {
	if err := CheckName("group", group); err != nil {
		return 0, err
	}
	r, ok, err := recordAt(ctx, cli, group, toRev)
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, fmt.Errorf("%w: group %s has no push at revision %d (portcullis fleet history lists them)", ErrNoRevision, group, toRev)
	}
	return Push(ctx, cli, group, r.Text, who, fmt.Sprintf("rollback to %d", toRev), expectRev)
}
