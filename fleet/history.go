package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Record is one push of a group's policy, kept under groups/G/history/<seq>. It is
// written in the push's own transaction, so its etcd revision is the revision the
// push gave the policy; it is written once and never changed, so compaction (which
// drops only the older versions of a key) keeps it.
type Record struct {
	// Seq numbers the group's pushes: 1, 2, ... (the key's last part). It is not the
	// revision: a transaction's revision is known only once it has committed.
	Seq int64 `json:"seq"`
	// Revision is the etcd revision of the push, read from the record's key (not
	// stored in it).
	Revision int64     `json:"revision,omitempty"`
	Hash     string    `json:"hash"` // the compiled policy's canonical hash at push time
	Who      string    `json:"who"`
	At       time.Time `json:"at"`
	Message  string    `json:"message,omitempty"`
	Text     []byte    `json:"text"`
}

// History returns the group's records, newest first.
func History(ctx context.Context, cli *Client, group string) ([]Record, error) {
	if err := CheckName("group", group); err != nil {
		return nil, err
	}
	return records(ctx, cli, group, 0)
}

// records reads up to limit records of group (0: all), newest first.
func records(ctx context.Context, cli *Client, group string, limit int64) ([]Record, error) {
	resp, err := cli.etcd.Get(ctx, cli.historyKey(group), clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(limit))
	if err != nil {
		return nil, fmt.Errorf("reading the history of group %s: %w", group, err)
	}
	out := make([]Record, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var r Record
		if err := json.Unmarshal(kv.Value, &r); err != nil {
			return nil, fmt.Errorf("the history record %s is damaged: %w", kv.Key, err)
		}
		r.Revision = kv.ModRevision
		out = append(out, r)
	}
	return out, nil
}

// recordAt returns the record of the push that gave the group's policy revision rev
// (the record written in the same transaction has that revision); ok is false when
// there is none (a policy put by hand, with etcdctl). etcd filters by revision, so
// only that record travels: a watcher asks right after each push, on every router.
func recordAt(ctx context.Context, cli *Client, group string, rev int64) (r Record, ok bool, err error) {
	resp, err := cli.etcd.Get(ctx, cli.historyKey(group), clientv3.WithPrefix(),
		clientv3.WithMinModRev(rev), clientv3.WithMaxModRev(rev))
	if err != nil {
		return Record{}, false, fmt.Errorf("reading the history of group %s: %w", group, err)
	}
	for _, kv := range resp.Kvs {
		if err := json.Unmarshal(kv.Value, &r); err != nil {
			return Record{}, false, fmt.Errorf("the history record %s is damaged: %w", kv.Key, err)
		}
		r.Revision = kv.ModRevision
		return r, true, nil
	}
	return Record{}, false, nil
}
