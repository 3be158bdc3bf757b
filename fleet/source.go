package fleet

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/portcullis/portcullis/controller"
	"github.com/portcullis/portcullis/overlay"
)

// SourceName is the Source's name in the controller's status and log.
const SourceName = "etcd"

// Source is a group's policy in etcd as a controller.Source: it offers the policy at
// start and every push after, in order. When the watch breaks (etcd compacted the
// revision it would resume from, the member lost its leader, the connection was
// lost) it reads the key again and watches on from there, so no push is lost; the
// intermediate ones of a long outage may be skipped, never the latest. While etcd
// cannot be reached it retries with backoff and offers nothing: the controller keeps
// what it has in force. Health says how the connection is.
//
// Entries delivers the group's fleet-wide runtime entries the same way, as the whole
// set each time.
type Source struct {
	cli   *Client
	group string
	log   *slog.Logger

	// probe is how often the connection is checked while the watch is quiet, and
	// the timeout of each call to etcd; retry bounds the backoff between attempts.
	probe      time.Duration
	retryFirst time.Duration
	retryMax   time.Duration
	// now is this router's clock (tests set it to one that is off).
	now func() time.Time

	mu      sync.Mutex
	health  Health
	offered int64     // the policy revision last offered
	down    time.Time // when the current outage began: the last contact before it (zero: none)
	lastOK  time.Time // the last successful call
	logged  string    // the kind of failure last logged above Debug (failureKind); "" after a success
	// quorumNote: what Client.quorum last said in this outage ("": nothing yet),
	// so that it is logged once.
	quorumNote string
}

// Health is the state of a Source's connection to etcd, for status: the controller's
// type, so that status and metrics read it as it is.
type Health = controller.EtcdHealth

// Outage is a time the router could not reach etcd.
type Outage = controller.Outage

// NewSource returns the source of group's policy and entries in cli's fleet.
func NewSource(cli *Client, group string, log *slog.Logger) (*Source, error) {
	if err := CheckName("group", group); err != nil {
		return nil, err
	}
	return &Source{cli: cli, group: group, log: log.With("source", SourceName, "group", group),
		probe: 5 * time.Second, retryFirst: 500 * time.Millisecond, retryMax: 30 * time.Second, now: time.Now,
		health: Health{Since: time.Now()}}, nil
}

// Name is SourceName.
func (s *Source) Name() string { return SourceName }

// Health returns the state of the connection.
func (s *Source) Health() Health {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.health
}

// Origin is the name a policy from group at revision rev goes by in the controller
// (Offer.File, and so Status.Policy and the audit log): "etcd:GROUP@REV".
func Origin(group string, rev int64) string {
	return SourceName + ":" + group + "@" + strconv.FormatInt(rev, 10)
}

// ParseOrigin reads an Origin back: what a router reports as the revision in force
// comes from the controller's Status.Policy. ok is false for any other name (a file,
// an override).
func ParseOrigin(name string) (group string, rev int64, ok bool) {
	rest, ok := strings.CutPrefix(name, SourceName+":")
	if !ok {
		return "", 0, false
	}
	group, r, ok := strings.Cut(rest, "@")
	if !ok {
		return "", 0, false
	}
	rev, err := strconv.ParseInt(r, 10, 64)
	if err != nil || CheckName("group", group) != nil {
		return "", 0, false
	}
	return group, rev, true
}

// Offers offers the group's policy at start and each push after, until ctx ends.
func (s *Source) Offers(ctx context.Context) <-chan controller.Offer {
	ch := make(chan controller.Offer)
	offer := func(kv *mvccpb.KeyValue) bool {
		s.mu.Lock()
		s.health.LastRevisionSeen = kv.ModRevision
		dup := kv.ModRevision == s.offered
		s.mu.Unlock()
		if dup {
			return true // re-listed after a break: nothing new
		}
		who := "etcd"
		rctx, cancel := context.WithTimeout(ctx, s.probe)
		if r, ok, err := recordAt(rctx, s.cli, s.group, kv.ModRevision); err == nil && ok {
			who = "etcd:" + r.Who
		}
		cancel()
		s.log.Info("policy pushed", "revision", kv.ModRevision, "who", who)
		select {
		case ch <- controller.Offer{Who: who, File: Origin(s.group, kv.ModRevision), Policy: kv.Value, Revision: kv.ModRevision}:
		case <-ctx.Done():
			return false
		}
		s.mu.Lock()
		s.offered = kv.ModRevision
		s.mu.Unlock()
		return true
	}
	go s.follow(ctx, "policy", s.cli.policyKey(s.group), false,
		func(resp *clientv3.GetResponse) bool {
			if len(resp.Kvs) == 0 {
				s.log.Warn("the group has no policy in etcd: nothing offered (push one with portcullis fleet push)")
				return true
			}
			return offer(resp.Kvs[0])
		},
		func(wr clientv3.WatchResponse) bool {
			for _, ev := range wr.Events {
				if ev.Type == clientv3.EventTypeDelete {
					s.log.Warn("the group's policy was deleted from etcd: the policy in force stays", "revision", ev.Kv.ModRevision)
					continue
				}
				if !offer(ev.Kv) {
					return false
				}
			}
			return true
		})
	return ch
}

// EntriesUpdate is the whole set of a group's live fleet entries as of Revision.
type EntriesUpdate struct {
	Revision int64
	Entries  map[overlay.Key]Entry
	// Skewed are entries etcd holds that this router's clock says have ended,
	// although it saw them put just now: its clock (or the writer's) is off by more
	// than their term. Why says by how much; Reconcile reports them as not taken,
	// rather than drop them unseen.
	Skewed map[overlay.Key]string
}

// maxSkew is how far an entry's stamp may be from this router's clock when the
// router sees it put (a watch event, within moments of the put) before the clocks
// are taken to differ.
const maxSkew = time.Minute

// Entries delivers the group's fleet-wide runtime entries, the whole set at start and
// after every change (and after every re-read), until ctx ends: a consumer makes what
// it holds equal to the latest set. Call it once.
func (s *Source) Entries(ctx context.Context) <-chan EntriesUpdate {
	ch := make(chan EntriesUpdate)
	set := map[string]Entry{} // by etcd key: a deletion names only the key
	type mark struct {
		modRev int64
		why    string
	}
	skew := map[string]mark{} // by etcd key: entries seen put with a stamp far from this clock
	send := func(rev int64) bool {
		u := EntriesUpdate{Revision: rev, Entries: make(map[overlay.Key]Entry, len(set))}
		now := s.now()
		for k, e := range set {
			if e.Live(now) { // its lease rounds up to whole seconds
				u.Entries[e.Key()] = e
			} else if m, ok := skew[k]; ok {
				if u.Skewed == nil {
					u.Skewed = map[overlay.Key]string{}
				}
				u.Skewed[e.Key()] = m.why
			}
		}
		select {
		case ch <- u:
			return true
		case <-ctx.Done():
			return false
		}
	}
	put := func(kv *mvccpb.KeyValue, justPut bool) {
		k := string(kv.Key)
		e, err := decodeEntry(s.cli, s.group, kv)
		if err != nil {
			s.log.Error("a fleet entry is damaged: ignored", "key", k, "error", err)
			delete(set, k)
			delete(skew, k)
			return
		}
		set[k] = e
		if m, ok := skew[k]; ok && m.modRev != kv.ModRevision {
			delete(skew, k) // put again since
		}
		if !justPut {
			return
		}
		// Seen within moments of its put: its stamp is the writer's clock now.
		now := s.now()
		off := now.Sub(e.At)
		if off <= maxSkew && off >= -maxSkew {
			return
		}
		dir := "ahead of"
		if off < 0 {
			dir = "behind"
		}
		why := fmt.Sprintf("put just now, stamped %s by the writer's clock, but %s by this router's: this router's clock seems %s %s the writer's (check NTP on both); it ends by this router's clock",
			e.At.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), off.Abs().Round(time.Second), dir)
		skew[k] = mark{kv.ModRevision, why}
		s.log.Warn("a fleet entry's stamp is far from this router's clock", "entry", e.Key().String(), "why", why, "live_here", e.Live(now))
	}
	go s.follow(ctx, "entries", s.cli.entriesKey(s.group), true,
		func(resp *clientv3.GetResponse) bool {
			clear(set)
			for _, kv := range resp.Kvs {
				put(kv, false)
			}
			for k := range skew {
				if _, ok := set[k]; !ok {
					delete(skew, k)
				}
			}
			return send(resp.Header.Revision)
		},
		func(wr clientv3.WatchResponse) bool {
			for _, ev := range wr.Events {
				if ev.Type == clientv3.EventTypeDelete {
					delete(set, string(ev.Kv.Key))
					delete(skew, string(ev.Kv.Key))
				} else {
					put(ev.Kv, true)
				}
			}
			return send(wr.Header.Revision)
		})
	return ch
}

// follow keeps key (a prefix if prefix) read and watched until ctx ends: list gets a
// fresh read at start and after every break of the watch, event each watch response
// after; either returns false when ctx ended while it delivered.
func (s *Source) follow(ctx context.Context, what, key string, prefix bool, list func(*clientv3.GetResponse) bool, event func(clientv3.WatchResponse) bool) {
	var opts []clientv3.OpOption
	if prefix {
		opts = append(opts, clientv3.WithPrefix())
	}
	b := backoff{min: s.retryFirst, max: s.retryMax}
	for first := true; ctx.Err() == nil; {
		gctx, cancel := context.WithTimeout(ctx, s.probe)
		resp, err := s.cli.etcd.Get(gctx, key, opts...)
		cancel()
		if err != nil {
			wait := b.next()
			s.failed(what, err, "reading again in "+wait.Round(time.Millisecond).String())
			if !sleep(ctx.Done(), wait) {
				return
			}
			continue
		}
		b.reset()
		s.connected(what)
		if !first {
			s.mu.Lock()
			s.health.Relists++
			s.mu.Unlock()
			s.log.Info("re-listed after the watch broke", "what", what, "revision", resp.Header.Revision)
		}
		first = false
		if !list(resp) {
			return
		}
		// WithRequireLeader: a member cut off from its cluster ends the watch rather
		// than keep it quietly open on stale data.
		wctx, wcancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		wch := s.cli.etcd.Watch(wctx, key, append(opts, clientv3.WithRev(resp.Header.Revision+1))...)
		ok := s.watch(ctx, what, key, wch, event)
		wcancel()
		if !ok {
			return
		}
	}
}

// watch passes wch's responses to event until the watch breaks (true: re-list) or
// ctx ends (false). While the watch is quiet, the connection is checked every probe:
// a lost connection is a break too (the read after it waits for etcd to come back).
func (s *Source) watch(ctx context.Context, what, key string, wch clientv3.WatchChan, event func(clientv3.WatchResponse) bool) bool {
	t := time.NewTicker(s.probe)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case wr, ok := <-wch:
			if !ok {
				if ctx.Err() != nil {
					return false
				}
				s.log.Warn("the watch closed: re-listing", "what", what)
				return true
			}
			if err := wr.Err(); err != nil {
				if errors.Is(err, rpctypes.ErrCompacted) {
					// Not a lost connection: the read that follows brings the latest.
					s.log.Warn("etcd compacted the revision the watch resumes from: re-listing", "what", what, "compacted", wr.CompactRevision)
					s.mu.Lock()
					s.health.LastError = fmt.Sprintf("%s: %v", what, err)
					s.mu.Unlock()
					return true
				}
				s.failed(what, err, "re-listing")
				return true
			}
			if wr.IsProgressNotify() {
				continue
			}
			if !event(wr) {
				return false
			}
		case <-t.C:
			pctx, cancel := context.WithTimeout(ctx, s.probe)
			_, err := s.cli.etcd.Get(pctx, key, clientv3.WithCountOnly())
			cancel()
			if ctx.Err() != nil {
				return false
			}
			if err != nil {
				s.failed(what, err, "re-listing when it is back")
				return true
			}
			s.connected(what)
		}
	}
}

// connected notes a successful call to etcd.
func (s *Source) connected(what string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	s.lastOK = now
	s.logged, s.quorumNote = "", ""
	if !s.health.Connected {
		s.health.Connected, s.health.Since = true, now
		if !s.down.IsZero() {
			s.health.LastOutage, s.down = &Outage{From: s.down, To: now}, time.Time{}
			s.log.Info("connected to etcd again", "what", what, "cut_off_for", now.Sub(s.health.LastOutage.From).Round(time.Millisecond))
		} else {
			s.log.Info("connected to etcd", "what", what)
		}
	}
}

// failed notes a failed call to etcd, or a watch broken by something other than a
// compaction; next says what happens now. The first failure of each kind is logged
// at Warn, or at Error with what to check when waiting will not mend it (the router's
// user may not read the group, etcd refuses its password); the same again only at
// Debug, until a call succeeds.
func (s *Source) failed(what string, err error, next string) {
	kind, hint := s.failureKind(err)
	s.mu.Lock()
	was := s.health.Connected
	s.health.LastError = fmt.Sprintf("%s: %v", what, err)
	if hint != "" {
		s.health.LastError += ": " + hint
	}
	if was {
		s.health.Connected, s.health.Since = false, time.Now()
	}
	if s.down.IsZero() {
		s.down = cmp.Or(s.lastOK, time.Now()) // it was lost after the last contact
	}
	first := kind != s.logged
	s.logged = kind
	s.mu.Unlock()
	if kind == "unreachable" {
		// Members that answer with no leader: say so, rather than leave a timeout
		// that reads as etcd not running. Asked after each failure (a second at
		// most), since a member notices its leader gone only after an election
		// timeout; the note is in the last error while the members say so.
		if q := s.cli.quorum(context.Background()); q != "" {
			s.mu.Lock()
			s.health.LastError += ": " + q
			if s.quorumNote == "" {
				first = true // logged once, at Error
			}
			s.quorumNote, hint = q, q
			s.mu.Unlock()
		}
	}
	switch {
	case hint != "" && first:
		s.log.Error("etcd: "+hint+"; "+next+"; the policy in force stays", "what", what, "error", err)
	case was || first:
		msg := "etcd: " + next + "; the policy in force stays"
		if kind == "unreachable" {
			msg = "etcd unreachable: " + next + "; the policy in force stays"
		}
		s.log.Warn(msg, "what", what, "error", err)
	default:
		s.log.Debug("etcd still failing: "+next, "what", what, "error", err)
	}
}

// failureKind sorts a failed call: "unreachable", "permission", "auth" or the error's
// text; hint says what to check when waiting will not mend it ("" otherwise).
func (s *Source) failureKind(err error) (kind, hint string) {
	user := cmp.Or(s.cli.conn.User, "this router's etcd user")
	switch {
	case Unreachable(err):
		return "unreachable", ""
	case errors.Is(err, rpctypes.ErrPermissionDenied):
		return "permission", fmt.Sprintf("%s may not read group %s: is the group right (etcd.group), and was `portcullis fleet grant router --group %s --router NAME` run for it?", user, s.group, s.group)
	case errors.Is(err, rpctypes.ErrAuthFailed):
		return "auth", fmt.Sprintf("etcd refuses user %s with the password in %s: check etcd.user and etcd.password_file (`portcullis fleet grant router ... --etcd-password-file F` sets it)", s.cli.conn.User, s.cli.conn.PasswordFile)
	}
	return err.Error(), ""
}
