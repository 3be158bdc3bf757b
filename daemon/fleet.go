package daemon

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/portcullis/portcullis/buildinfo"
	"github.com/portcullis/portcullis/controller"
	"github.com/portcullis/portcullis/fleet"
	"github.com/portcullis/portcullis/overlay"
)

// Policy sources a configuration may name (policy_source).
const (
	PolicyFromFile = "file"
	PolicyFromEtcd = "etcd"
)

// EtcdConfig is the `etcd:` section: how the router reaches the fleet's etcd, which
// group's policy and fleet entries it takes, and the name it reports under.
type EtcdConfig struct {
	fleet.Conn `yaml:",inline"`
	Group      string        `yaml:"group"`     // e.g. dsl-north
	Router     string        `yaml:"router"`    // default: the host name
	LeaseTTL   time.Duration `yaml:"lease_ttl"` // the status key's lease; 0: fleet.DefaultTTL
}

// fleetSide is the daemon's part of a fleet: the etcd source of policies and fleet
// entries, and the reporter of what this router enforces.
type fleetSide struct {
	cli      *fleet.Client
	source   *fleet.Source
	reporter atomic.Pointer[fleet.Reporter]
	entries  atomic.Int64 // the revision of the fleet entries last reconciled

	mu      sync.Mutex
	refused map[string]string // fleet entries this router refused: key -> why
}

// dialFleet connects to etcd (it does not wait for it) and makes the source.
func (d *Daemon) dialFleet() (*fleetSide, error) {
	cli, err := fleet.Dial(d.cfg.Etcd.Conn)
	if err != nil {
		return nil, err
	}
	src, err := fleet.NewSource(cli, d.cfg.Etcd.Group, d.log)
	if err != nil {
		cli.Close()
		return nil, err
	}
	return &fleetSide{cli: cli, source: src, refused: map[string]string{}}, nil
}

// report is what this router tells the fleet: built from the controller's snapshot.
func (d *Daemon) report() fleet.Report {
	st := d.ctl.Snapshot()
	f := d.fleet
	r := fleet.Report{Router: d.cfg.Etcd.Router, Group: d.cfg.Etcd.Group, Version: buildinfo.Read("(devel)").Version,
		PolicyHash: st.Hash, EntriesRevision: f.entries.Load(), LoadedAt: st.LoadedAt,
		ProofOK: st.Proof.OK, ProofAt: st.Proof.At, Interfaces: st.Interfaces, Source: st.Source.InForce}
	h := f.source.Health()
	r.LastOutage = h.LastOutage
	// Stale while cut off, and on its return until the controller has taken the
	// revision the source has seen since.
	r.Stale = !h.Connected
	if e := st.Source.Etcd; e != nil && h.LastRevisionSeen > max(e.Offered, e.Revision) {
		r.Stale = true
	}
	if g, rev, ok := fleet.ParseOrigin(st.Policy); ok && g == d.cfg.Etcd.Group && st.Source.InForce == controller.SourceEtcd {
		r.PolicyRevision = rev
	}
	if e := st.LastError; e != nil {
		r.LastError = e.Error
		if !strings.Contains(e.Error, e.File) {
			r.LastError = e.File + ": " + e.Error
		}
	}
	f.mu.Lock()
	for _, k := range slices.Sorted(maps.Keys(f.refused)) {
		r.EntriesNotTaken = append(r.EntriesNotTaken, k+": "+f.refused[k])
	}
	f.mu.Unlock()
	return r
}

// runFleet reports this router's state under a lease and makes its fleet entries
// the group's, until ctx ends.
func (d *Daemon) runFleet(ctx context.Context, wg *sync.WaitGroup) error {
	f := d.fleet
	rep, err := fleet.StartReporter(f.cli, d.cfg.Etcd.Group, d.cfg.Etcd.Router, d.cfg.Etcd.LeaseTTL, d.report, d.log)
	if err != nil {
		return err
	}
	f.reporter.Store(rep)
	wg.Add(1)
	go func() {
		defer wg.Done()
		// Each update is the whole set; a refusal (no policy in force yet, the store
		// failed, a policy that forbids it) is tried again with the latest set every
		// retry, so an entry refused for a passing reason is not lost.
		const retry = 10 * time.Second
		updates, tick := f.source.Entries(ctx), time.NewTicker(retry)
		defer tick.Stop()
		var last *fleet.EntriesUpdate
		for {
			select {
			case <-ctx.Done():
				return
			case u, ok := <-updates:
				if !ok {
					return
				}
				last = &u
			case <-tick.C:
				f.mu.Lock()
				again := last != nil && len(f.refused) > 0
				f.mu.Unlock()
				if !again {
					continue
				}
			}
			refused := fleet.Reconcile(ctx, d.ctl, *last, time.Now())
			now := map[string]string{}
			for _, r := range refused {
				now[r.Key.String()] = r.Err.Error()
			}
			f.mu.Lock()
			for k, why := range now {
				if f.refused[k] != why {
					d.log.Warn("fleet entry not taken by this router (tried again every "+retry.String()+")", "entry", k, "why", why)
				}
			}
			f.refused = now
			f.mu.Unlock()
			f.entries.Store(last.Revision)
			rep.Changed()
		}
	}()
	return nil
}

// published is the controller's Published hook: the reporter writes at once.
func (d *Daemon) published() {
	if f := d.fleet; f != nil {
		if rep := f.reporter.Load(); rep != nil {
			rep.Changed()
		}
	}
}

// close stops reporting (the status key goes at once) and closes the client.
func (f *fleetSide) close() {
	if rep := f.reporter.Load(); rep != nil {
		rep.Close()
	}
	f.cli.Close()
}

// awaitFirstPolicy waits, with no policy in force, for the group's first policy from
// etcd: interfaces are attached only once one applies (never an interface without a
// policy). It logs every 30 s what it waits for, and returns false if ctx ends first.
func (d *Daemon) awaitFirstPolicy(ctx context.Context) bool {
	d.log.Warn("no policy in force: waiting for the group's first policy from etcd before attaching", "group", d.cfg.Etcd.Group, "endpoints", d.cfg.Etcd.Endpoints)
	tick, nag := time.NewTicker(100*time.Millisecond), time.NewTicker(30*time.Second)
	defer tick.Stop()
	defer nag.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-nag.C:
			st := d.ctl.Snapshot()
			args := []any{"group", d.cfg.Etcd.Group, "etcd", d.fleet.source.Health()}
			if st.LastError != nil {
				args = append(args, "last_error", st.LastError.Error)
			}
			d.log.Warn("still no policy from etcd: nothing attached", args...)
		case <-tick.C:
			if d.ctl.Snapshot().Hash != "" {
				return true
			}
		}
	}
}

// errNoFleet answers a fleet entry asked of a router that is in no fleet.
var errNoFleet = fmt.Errorf("%w: this router takes its policy from a file (policy_source: file); fleet-wide entries need a router of a fleet (policy_source: etcd)", overlay.ErrInvalid)

// addFleet puts req into the group's fleet entries: every router of the group (this
// one too, through its watch) adds it. etcd unreachable is ErrUnavailable.
func (d *Daemon) addFleet(req overlay.Request) (overlay.Entry, error) {
	if d.fleet == nil {
		return overlay.Entry{}, errNoFleet
	}
	if req.For <= 0 {
		return overlay.Entry{}, fmt.Errorf("%w: a fleet entry needs for (how long), e.g. \"for\": \"24h\"", overlay.ErrDuration)
	}
	if err := d.ctl.CheckEntry(req); err != nil {
		return overlay.Entry{}, err // this router's policy refuses it: so would the others' like it
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	now := time.Now()
	if err := fleet.PutEntry(ctx, d.fleet.cli, d.cfg.Etcd.Group, req, req.Who); err != nil {
		return overlay.Entry{}, fleetError(err)
	}
	return overlay.Entry{Kind: req.Kind, Prefix: req.Prefix, Added: now, Expires: now.Add(req.For),
		Reason: req.Reason, Ticket: req.Ticket, Who: "etcd:" + req.Who}, nil
}

// releaseFleet removes the group's fleet entry k: every router releases it.
func (d *Daemon) releaseFleet(k overlay.Key, who string) error {
	if d.fleet == nil {
		return errNoFleet
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return fleetError(fleet.DeleteEntry(ctx, d.fleet.cli, d.cfg.Etcd.Group, k.Kind, k.Prefix, who))
}

// fleetError maps the fleet's errors to the overlay's, which the API answers by.
func fleetError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, overlay.ErrInvalid), errors.Is(err, overlay.ErrDuration), errors.Is(err, overlay.ErrKind),
		errors.Is(err, overlay.ErrForbidden), errors.Is(err, overlay.ErrNotFound):
		return err
	case errors.Is(err, fleet.ErrNotFound):
		return fmt.Errorf("%w: %v", overlay.ErrNotFound, err)
	case errors.Is(err, fleet.ErrInvalid), errors.Is(err, fleet.ErrName):
		return fmt.Errorf("%w: %v", overlay.ErrInvalid, err)
	case errors.Is(err, rpctypes.ErrPermissionDenied), errors.Is(err, rpctypes.ErrGRPCPermissionDenied):
		return fmt.Errorf("%w: this router's etcd user may not write the group's fleet entries (portcullis fleet grant router --entries gives it that, or the NOC uses portcullis fleet quarantine): %v", overlay.ErrForbidden, err)
	default:
		return fmt.Errorf("%w: etcd: %v", overlay.ErrUnavailable, err)
	}
}
