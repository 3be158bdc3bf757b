package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
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

// History returns the group's records, newest first. A key under the history that
// holds no record (put by hand) makes the error ErrDamagedRecord, naming it, with
// the others returned.
func History(ctx context.Context, cli *Client, group string) ([]Record, error) {
	rs, _, err := HistoryLimit(ctx, cli, group, 0)
	return rs, err
}

// HistoryLimit is History of the newest limit records only (0: all), and how many
// keys the history holds in all: every record holds its policy's text, so a long
// history read whole can be a large answer.
func HistoryLimit(ctx context.Context, cli *Client, group string, limit int64) ([]Record, int64, error) {
	if err := CheckName("group", group); err != nil {
		return nil, 0, err
	}
	resp, err := cli.etcd.Get(ctx, cli.historyKey(group), clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(limit))
	if err != nil {
		return nil, 0, fmt.Errorf("reading the history of group %s: %w", group, err)
	}
	total := resp.Count // etcd counts the whole range, whatever the limit
	out := make([]Record, 0, len(resp.Kvs))
	var damaged []string
	for _, kv := range resp.Kvs {
		r, err := decodeRecord(kv)
		if err != nil {
			damaged = append(damaged, err.Error())
			continue
		}
		out = append(out, r)
	}
	if len(damaged) > 0 {
		return out, total, fmt.Errorf("%w in group %s, skipped: %s; remove each with etcdctl del KEY", ErrDamagedRecord, group, strings.Join(damaged, "; "))
	}
	return out, total, nil
}

// decodeRecord reads the record kv holds; its number and revision are the key's.
func decodeRecord(kv *mvccpb.KeyValue) (Record, error) {
	seq, err := seqOf(string(kv.Key))
	if err != nil || seq <= 0 {
		return Record{}, fmt.Errorf("%s (not a record number)", kv.Key)
	}
	var r Record
	if err := json.Unmarshal(kv.Value, &r); err != nil {
		return Record{}, fmt.Errorf("%s (%v)", kv.Key, err)
	}
	r.Seq, r.Revision = seq, kv.ModRevision
	return r, nil
}

// lastSeq is the number of the group's last record (0: none). It is read from the
// keys, not the values: a damaged record still holds its number, and a key that is
// no number (put by hand) is passed over.
func lastSeq(ctx context.Context, cli *Client, group string) (int64, error) {
	// Record keys are 20 digits: the range from "0" to ":" (the byte after "9").
	from := cli.historyKey(group)
	resp, err := cli.etcd.Get(ctx, from+"0", clientv3.WithRange(from+":"), clientv3.WithKeysOnly(),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend))
	if err != nil {
		return 0, fmt.Errorf("reading the history of group %s: %w", group, err)
	}
	for _, kv := range resp.Kvs {
		k := string(kv.Key)
		if len(k)-len(from) != 20 {
			continue
		}
		if seq, err := seqOf(k); err == nil && seq > 0 {
			return seq, nil
		}
	}
	return 0, nil
}

// recordAt returns the record of the push that gave the group's policy revision rev
// (the record written in the same transaction has that revision); ok is false when
// there is none (a policy put by hand, with etcdctl). etcd filters by revision, so
// only that record travels: a watcher asks right after each push, on every router.
func recordAt(ctx context.Context, cli *Client, group string, rev int64) (r Record, ok bool, err error) {
	if rev <= 0 {
		return Record{}, false, nil // etcd takes 0 as no bound: every record
	}
	resp, err := cli.etcd.Get(ctx, cli.historyKey(group), clientv3.WithPrefix(),
		clientv3.WithMinModRev(rev), clientv3.WithMaxModRev(rev))
	if err != nil {
		return Record{}, false, fmt.Errorf("reading the history of group %s: %w", group, err)
	}
	for _, kv := range resp.Kvs {
		r, err := decodeRecord(kv)
		if err != nil {
			return Record{}, false, fmt.Errorf("%w: %v; remove it with etcdctl del", ErrDamagedRecord, err)
		}
		return r, true, nil
	}
	return Record{}, false, nil
}
