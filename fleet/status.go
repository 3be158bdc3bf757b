package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Report is what a router has in force, as its Reporter writes it under
// groups/G/routers/NAME.
type Report struct {
	Router     string `json:"router"`
	Group      string `json:"group"`
	Version    string `json:"version"` // portcullis's build (buildinfo)
	PolicyHash string `json:"policy_hash"`
	// PolicyRevision is the group's revision in force (ParseOrigin of the controller's
	// Status.Policy); 0 if the policy in force is not from etcd, or there is none.
	PolicyRevision  int64             `json:"policy_revision"`
	EntriesRevision int64             `json:"entries_revision"` // the EntriesUpdate last reconciled
	LoadedAt        time.Time         `json:"loaded_at"`
	ProofOK         bool              `json:"proof_ok"`
	ProofAt         time.Time         `json:"proof_at"`
	Interfaces      map[string]string `json:"interfaces"` // name -> mode, or "missing"
	LastError       string            `json:"last_error,omitempty"`
	// EntriesNotTaken are the group's fleet entries this router holds back, sorted,
	// each "kind prefix: why" (its policy forbids it, its own entry holds the prefix,
	// no policy yet). They do not make the router failed: it enforces the group's
	// policy; it tries them again.
	EntriesNotTaken []string `json:"entries_not_taken,omitempty"`
	// EntriesNotTakenCount is how many there are: the Reporter keeps only the first
	// maxNotTaken in EntriesNotTaken, so that a router refusing thousands of entries
	// does not write a large report every TTL/3.
	EntriesNotTakenCount int    `json:"entries_not_taken_count,omitempty"`
	Source               string `json:"source"` // the controller's source in force
	// Stale: the router knows its view is old: its Source cannot reach etcd, or has
	// seen a revision the controller has not taken yet (catching up on its return).
	Stale bool `json:"stale,omitempty"`
	// LastOutage is the last time the router could not reach etcd (it enforced the
	// revision it had meanwhile), reported once it is back.
	LastOutage *Outage   `json:"last_outage,omitempty"`
	At         time.Time `json:"at"` // when this report was written (set by the Reporter)
	// TTL is the Reporter's lease TTL (set by the Reporter): a report older than three
	// of them is stale, whatever it says.
	TTL time.Duration `json:"ttl"`
}

// DefaultTTL is a Reporter's lease TTL when none is given.
const DefaultTTL = 10 * time.Second

// Reporter keeps a router's Report in etcd under a lease: written at start, on
// Changed, and every TTL/3; a router that stops cleanly (Close) disappears at once,
// one that crashes or is cut off when its lease ends. It also writes
// groups/G/known/NAME, without a lease, with any report that finds it absent, so
// that FleetStatus can name routers that are gone.
type Reporter struct {
	cli           *Client
	group, router string
	ttl           time.Duration
	report        func() Report
	log           *slog.Logger
	retryFirst    time.Duration

	nudge  chan struct{}
	cancel context.CancelFunc
	done   chan struct{}

	mu    sync.Mutex
	lease clientv3.LeaseID // the lease the report is under; 0: none now
	// last is the lease of this reporter's last report written; dup says, while a
	// write finds that another lease wrote the key since (another router reporting
	// under this name), what the report's error says.
	last clientv3.LeaseID
	dup  string
}

// StartReporter starts writing router's report (from report, called for each write)
// in group under a lease of ttl (0: DefaultTTL; etcd's minimum is a few seconds). It
// does not wait for etcd: while etcd is unreachable it keeps trying.
func StartReporter(cli *Client, group, router string, ttl time.Duration, report func() Report, log *slog.Logger) (*Reporter, error) {
	if err := CheckName("group", group); err != nil {
		return nil, err
	}
	if err := CheckName("router", router); err != nil {
		return nil, err
	}
	if ttl == 0 {
		ttl = DefaultTTL
	}
	if ttl < time.Second {
		return nil, fmt.Errorf("%w: a report's TTL is whole seconds, not %s", ErrInvalid, ttl)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Reporter{cli: cli, group: group, router: router, ttl: ttl, report: report,
		log: log.With("group", group, "router", router), retryFirst: 500 * time.Millisecond,
		nudge: make(chan struct{}, 1), cancel: cancel, done: make(chan struct{})}
	go r.run(ctx)
	return r, nil
}

// Changed asks for a report now (the policy, the proof or an interface changed). It
// never waits.
func (r *Reporter) Changed() {
	select {
	case r.nudge <- struct{}{}:
	default:
	}
}

// Close stops reporting and revokes the lease: the report disappears at once.
func (r *Reporter) Close() error {
	r.cancel()
	<-r.done
	r.mu.Lock()
	lease := r.lease
	r.lease = 0
	r.mu.Unlock()
	if lease == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := r.cli.etcd.Revoke(ctx, lease); err != nil {
		return fmt.Errorf("revoking the report's lease (it ends by itself within %s): %w", r.ttl, err)
	}
	return nil
}

func (r *Reporter) run(ctx context.Context) {
	defer close(r.done)
	b := backoff{min: r.retryFirst, max: r.ttl}
	tick := time.NewTicker(r.ttl / 3)
	defer tick.Stop()
	var alive <-chan *clientv3.LeaseKeepAliveResponse
	for ctx.Err() == nil {
		if alive == nil {
			ka, err := r.grant(ctx)
			if err != nil {
				if ctx.Err() == nil {
					r.log.Warn("etcd: no lease for the router's report; trying again", "error", err)
				}
				if !sleep(ctx.Done(), b.next()) {
					return
				}
				continue
			}
			alive = ka
		}
		if err := r.write(ctx); errors.Is(err, rpctypes.ErrLeaseNotFound) {
			r.log.Warn("the router's lease is gone (etcd away longer than its TTL?): taking a new one")
			alive = nil
			continue
		} else if err != nil && ctx.Err() == nil {
			r.log.Warn("etcd: writing the router's report", "error", err)
		} else {
			b.reset()
		}
		for wait := true; wait; {
			select {
			case <-ctx.Done():
				return
			case <-r.nudge:
				wait = false
			case <-tick.C:
				wait = false
			case _, ok := <-alive:
				if !ok {
					// The client gave up keeping it alive: it has expired, or was revoked.
					if ctx.Err() == nil {
						r.log.Warn("the router's lease ended: taking a new one and writing the report again")
					}
					alive, wait = nil, false
					r.mu.Lock()
					r.lease = 0
					r.mu.Unlock()
				}
			}
		}
	}
}

// grant takes a new lease and keeps it alive until ctx ends.
func (r *Reporter) grant(ctx context.Context) (<-chan *clientv3.LeaseKeepAliveResponse, error) {
	gctx, cancel := context.WithTimeout(ctx, r.ttl)
	defer cancel()
	l, err := r.cli.etcd.Grant(gctx, int64(r.ttl/time.Second))
	if err != nil {
		return nil, err
	}
	ka, err := r.cli.etcd.KeepAlive(ctx, l.ID)
	if err != nil {
		r.cli.etcd.Revoke(gctx, l.ID)
		return nil, err
	}
	r.mu.Lock()
	r.lease = l.ID
	r.mu.Unlock()
	return ka, nil
}

// write writes the report under the lease.
func (r *Reporter) write(ctx context.Context) error {
	rep := r.report()
	rep.Router, rep.Group, rep.At, rep.TTL = r.router, r.group, time.Now().UTC(), r.ttl
	bound(&rep)
	r.mu.Lock()
	lease := r.lease
	r.mu.Unlock()
	if lease == 0 {
		return rpctypes.ErrLeaseNotFound // never a report without a lease: it would outlive the router
	}
	r.mu.Lock()
	if r.dup != "" {
		rep.LastError = strings.TrimPrefix(rep.LastError+"; "+r.dup, "; ")
	}
	last := r.last
	r.mu.Unlock()
	wctx, cancel := context.WithTimeout(ctx, r.ttl)
	defer cancel()
	prev, err := putReportKnown(wctx, r.cli, rep, lease)
	if err != nil {
		return err
	}
	// The key under a lease that is neither this write's nor this reporter's last
	// write's: another process wrote it since. Not on the first write (the report a
	// crashed predecessor left, its lease not yet ended, is replaced).
	dup := ""
	if prev != nil && last != 0 && prev.Lease != int64(lease) && prev.Lease != int64(last) {
		dup = fmt.Sprintf("another router also reports as %s in group %s (its report was under lease %x, not this router's %x): two routers with etcd.router: %s? give each its own name (a replaced router: stop the old one)",
			r.router, r.group, prev.Lease, lease, r.router)
	}
	r.mu.Lock()
	if dup != "" && r.dup == "" {
		r.log.Error("etcd: " + dup)
	}
	r.last = lease
	if dup != "" || prev == nil || prev.Lease == int64(last) || prev.Lease == int64(lease) {
		r.dup = dup // cleared once a write finds only its own report
	}
	r.mu.Unlock()
	return nil
}

// Bounds of what a report carries: it is written every TTL/3 by every router, and
// read whole by every fleet status.
const (
	maxNotTaken = 20      // entries listed in EntriesNotTaken (all are counted)
	maxText     = 4 << 10 // bytes of LastError, and of each entry not taken
)

// bound keeps rep within the bounds, saying where it cut.
func bound(rep *Report) {
	if n := len(rep.EntriesNotTaken); n > 0 {
		rep.EntriesNotTakenCount = max(rep.EntriesNotTakenCount, n)
	}
	rep.EntriesNotTaken = slices.Clone(rep.EntriesNotTaken[:min(len(rep.EntriesNotTaken), maxNotTaken)]) // not the caller's to change
	for i, s := range rep.EntriesNotTaken {
		rep.EntriesNotTaken[i] = cut(s, maxText)
	}
	rep.LastError = cut(rep.LastError, maxText)
}

// cut is s in at most n bytes, ending in "... (N bytes in all: ...)" when cut.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	tail := fmt.Sprintf("... (%d bytes in all: the router's log and status have it whole)", len(s))
	end := max(n-len(tail), 0)
	for end > 0 && !utf8.RuneStart(s[end]) {
		end--
	}
	return s[:end] + tail
}

// putReportKnown is putReport, and writes groups/G/known/NAME (without a lease) in
// the same transaction if it is not there: so a known key removed (the group's keys
// deleted by hand, a router forgotten and started again) is back with the next
// report, at no extra request.
func putReportKnown(ctx context.Context, cli *Client, rep Report, lease clientv3.LeaseID) (*mvccpb.KeyValue, error) {
	b, err := json.Marshal(rep)
	if err != nil {
		return nil, err
	}
	rk, kk := cli.routersKey(rep.Group)+rep.Router, cli.knownKey(rep.Group)+rep.Router
	put := clientv3.OpPut(rk, string(b), clientv3.WithPrevKV(), clientv3.WithLease(lease))
	resp, err := cli.etcd.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(kk), "=", 0)).
		Then(clientv3.OpPut(kk, time.Now().UTC().Format(time.RFC3339)), put).
		Else(put).Commit()
	if err != nil {
		return nil, err
	}
	pr := resp.Responses[len(resp.Responses)-1].GetResponsePut()
	if pr == nil {
		return nil, fmt.Errorf("writing the report of router %s: etcd's answer holds no put", rep.Router)
	}
	return pr.PrevKv, nil
}

// putReport writes rep under lease (0: none; tests) and returns what the key held.
func putReport(ctx context.Context, cli *Client, rep Report, lease clientv3.LeaseID) (*mvccpb.KeyValue, error) {
	b, err := json.Marshal(rep)
	if err != nil {
		return nil, err
	}
	opts := []clientv3.OpOption{clientv3.WithPrevKV()}
	if lease != 0 {
		opts = append(opts, clientv3.WithLease(lease))
	}
	resp, err := cli.etcd.Put(ctx, cli.routersKey(rep.Group)+rep.Router, string(b), opts...)
	if err != nil {
		return nil, err
	}
	return resp.PrevKv, nil
}

// markKnown writes groups/G/known/NAME (the first report's time) if it is not there.
func markKnown(ctx context.Context, cli *Client, group, router string) error {
	k := cli.knownKey(group) + router
	_, err := cli.etcd.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
		Then(clientv3.OpPut(k, time.Now().UTC().Format(time.RFC3339))).Commit()
	return err
}
