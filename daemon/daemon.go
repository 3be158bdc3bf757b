package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"os"
	"os/signal"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/portcullis/portcullis/controller"
	"github.com/portcullis/portcullis/loader"
)

// Daemon is one `portcullis run`: the wiring of the controller (which applies, proves
// and publishes every change), its sources, the interface watch, and the readers (the
// control socket, metrics, the API).
type Daemon struct {
	cfg Config
	log *slog.Logger

	prog     *loader.Program
	ctl      *controller.Controller
	fleet    *fleetSide                 // policy_source: etcd
	override *controller.OverrideSource // pushes over the control socket
	metrics  *metrics

	// The interface watch (watch.go), under its own lock: attaching a reappearing
	// interface does not wait for a policy change in progress.
	watchMu   sync.Mutex
	attached  map[string]loader.Mode // interface -> mode, for the ones attached now
	gone      map[string]bool        // interfaces reported missing (log once)
	modeNotes map[string]string      // interface -> why it is not in the configured mode
	switched  map[string]bool        // interfaces whose mode switch was tried (once a process)
	renamed   map[string]string      // interface -> the name it was renamed to (logged once)
	attachErr map[string]string      // interface -> why it is not attached (status: not_attached)
	ifaces    chan map[string]int    // the latest interface indexes, for the controller (syncer)

	// madeBPFFS, in tests, is called when preflight has made the bpffs directory and
	// not yet locked it: where another start may take the lock first.
	madeBPFFS func()
}

// New returns a daemon for cfg, logging to log.
func New(cfg Config, log *slog.Logger) *Daemon {
	return &Daemon{cfg: cfg, log: log, attached: map[string]loader.Mode{},
		gone: map[string]bool{}, modeNotes: map[string]string{}, switched: map[string]bool{}, renamed: map[string]string{},
		attachErr: map[string]string{},
		ifaces:    make(chan map[string]int, 1)}
}

// controllerConfig is the controller's part of cfg.
func controllerConfig(cfg Config, m *metrics) controller.Config {
	c := controller.Config{Interfaces: cfg.Interfaces, Policy: cfg.Policy, Store: cfg.Store, AuditLog: cfg.AuditLog}
	if m != nil {
		c.Events = m.runtimeEvent
	}
	if cfg.PolicySource == PolicyFromEtcd {
		c.Source = controller.SourceEtcd
	}
	return c
}

// Run starts enforcing and serves until ctx ends or SIGTERM/SIGINT. It never detaches:
// on exit the links stay pinned and the program keeps judging traffic. What can be
// checked without the kernel is checked first (preflight, start.go); a first start that
// fails after all, before it enforces, removes the pins it made.
func (d *Daemon) Run(ctx context.Context) error {
	if d.cfg.PolicySource == PolicyFromEtcd {
		var err error
		if d.fleet, err = d.dialFleet(); err != nil {
			return err
		}
		defer d.fleet.close()
	}
	pre, err := d.preflight()
	if err != nil {
		return err
	}
	defer pre.close()

	if err := loader.MountBPFFS(d.cfg.BPFFS); err != nil {
		pre.lock.Close()
		return err
	}
	if pre.lock == nil {
		// bpffs was made just now; another daemon started at the same moment may have
		// made it too, and holds it: then nothing here is this start's to undo.
		if pre.lock, err = loader.LockPinDir(d.cfg.BPFFS, loader.PinLockWait); err != nil {
			return err
		}
	}
	defer pre.lock.Close() // last: after the undo of a first start below
	enforcing := false     // a policy in force and the interfaces attached
	if pre.first {
		defer func() {
			if !enforcing {
				d.undoFirstStart(pre)
			}
		}()
	}
	prog, err := loader.LoadPinned(d.cfg.BPFFS)
	if err != nil {
		return err
	}
	defer prog.Close()
	d.prog = prog
	meta, err := prog.Meta()
	if err != nil {
		return err
	}
	links, err := prog.UpdateLinks(d.cfg.BPFFS)
	if err != nil {
		return err
	}
	for _, l := range links {
		if l.Ifindex != 0 {
			d.log.Info("adopted pinned link: the new program replaced the running one in place", "interface", l.Interface, "program_id", l.ProgramID)
			if !slices.Contains(d.cfg.Interfaces, l.Interface) {
				d.log.Warn("a link is pinned on an interface that interfaces: does not list: it is still judged (the policy's interface scopes do not apply to it); `portcullis detach --interface "+l.Interface+"` removes it",
					"interface", l.Interface)
			}
		}
	}
	if meta.Hash != "" {
		d.log.Info("adopted the policy in force", "hash", meta.Hash, "file", meta.PolicyFile, "loaded_at", meta.LoadedAt.Format(time.RFC3339))
	}

	d.metrics = newMetrics(nil, prog, d.cfg.Interfaces)
	ccfg := controllerConfig(d.cfg, d.metrics)
	if d.fleet != nil {
		ccfg.EtcdHealth = d.fleet.source.Health
		ccfg.Published = d.published
	}
	if d.ctl, err = controller.New(ccfg, prog, d.log); err != nil {
		return err
	}
	defer d.ctl.Close()
	d.metrics.ctl = d.ctl

	// The configured policy first, then attach: never an interface without a policy.
	// The interfaces that exist are named to the program first, for the policy's
	// scopes, and the runtime entries are read, to be laid over the policy.
	d.ctl.SetInterfaces(interfaceIndexes(d.cfg.Interfaces))
	d.publishAttachment()
	d.ctl.OpenStore()
	res := d.ctl.Start()
	if res.Err != nil && d.ctl.Meta().Hash == "" && d.fleet == nil {
		return fmt.Errorf("no policy in force and the configured one cannot be used:\n%w", res.Err)
	}
	if res.Err != nil {
		if d.ctl.Meta().Hash == "" {
			d.log.Error("the configured policy was not applied; no policy is in force: waiting for etcd", "error", res.Err)
		} else {
			d.log.Error("the configured policy was not applied; the policy in force stays", "hash", d.ctl.Meta().Hash, "error", res.Err)
		}
	}
	if d.ctl.Meta().Hash != "" {
		d.reconcileAll()
		enforcing = true
	}

	// Everything below stops before the controller, the store and the program close
	// (deferred above, so run after these).
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	d.override = controller.NewOverrideSource()
	var primary controller.Source
	if d.fleet != nil {
		primary = d.fleet.source
		signal.Ignore(syscall.SIGHUP) // no file to reload: etcd's revisions arrive by themselves
	} else {
		primary = controller.NewFileSource(d.cfg.Policy, time.Second, d.log)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		d.ctl.Run(ctx, primary, d.override)
	}()

	// The listeners were bound before the kernel was touched (a port in use failed
	// then); they serve from now on.
	defer d.serveControl(pre.control).Close()
	pre.control = nil
	if pre.apiSrv != nil {
		go pre.apiSrv.Serve(pre.api)
		defer pre.apiSrv.Close()
		pre.api = nil
		d.log.Info("api listening", "address", d.cfg.API.Listen, "tls", d.cfg.API.TLSCert != "", "mtls", d.cfg.API.ClientCA != "")
	}
	if pre.metrics != nil {
		defer d.serveMetrics(pre.metrics).Close()
		pre.metrics = nil
	}

	// A fleet router reports from now on; with no policy yet it waits for the group's
	// first one (the control socket is up: `portcullis apply` can bootstrap it). The
	// first one may have come already, since the controller took offers above.
	if d.fleet != nil {
		if err := d.runFleet(ctx, &wg); err != nil {
			return err
		}
		if d.ctl.Meta().Hash == "" && !d.awaitFirstPolicy(ctx) {
			return nil // stopped before any policy came
		}
		if !enforcing {
			d.reconcileAll()
			enforcing = true
		}
	}

	linkEvents, stopLinks, err := watchLinks()
	if err != nil {
		return err
	}
	defer stopLinks()
	wg.Add(3)
	go func() {
		defer wg.Done()
		d.watch(ctx, linkEvents)
	}()
	go func() {
		defer wg.Done()
		d.turnOffenders(ctx)
	}()
	go func() {
		defer wg.Done()
		d.syncer(ctx)
	}()
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sig)

	d.watchMu.Lock()
	attached := fmt.Sprint(d.attached) // the modes in force, which the configured one need not be
	d.watchMu.Unlock()
	d.log.Info("running", "interfaces", d.cfg.Interfaces, "configured_mode", d.cfg.Mode, "attached", attached, "policy", d.cfg.Policy,
		"metrics", d.cfg.Listen, "control", d.cfg.ControlSocket, "bpffs", d.cfg.BPFFS, "program_id", prog.ID())
	select {
	case <-ctx.Done():
		d.log.Info("stopping; " + d.afterStop())
	case s := <-sig:
		d.log.Info("stopping on signal; "+d.afterStop(), "signal", s.String())
	}
	return nil
}

// afterStop says what is enforced once the daemon has stopped.
func (d *Daemon) afterStop() string {
	d.watchMu.Lock()
	defer d.watchMu.Unlock()
	if len(d.attached) == 0 {
		return "no interface is attached: nothing is enforced (the maps stay pinned)"
	}
	return "enforcement continues through the pinned links (`portcullis detach` removes them)"
}

// turnOffenders starts a new period of the offender record every offender_period (once
// a minute it looks whether the current one, as the pinned maps say, is that old: a
// restart does not restart the period). With 0 the record has one period.
func (d *Daemon) turnOffenders(ctx context.Context) {
	period := d.cfg.OffenderPeriod
	if period <= 0 {
		period = time.Duration(math.MaxInt64)
	}
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		if turned, err := d.prog.TurnOffenders(period, time.Now()); err != nil {
			d.log.Error("offender record: could not start a new period", "error", err)
		} else if turned {
			d.log.Info("offender record: new period; top counts the last two", "period", period.String())
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
