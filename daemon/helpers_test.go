package daemon

import (
	"io"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/portcullis/portcullis/controller"
	"github.com/portcullis/portcullis/internal/testutil"
	"github.com/portcullis/portcullis/loader"
	"github.com/portcullis/portcullis/model"
)

// newTestDaemon is a daemon wired as Run wires it (its metrics, its controller, the
// store open) on a private program, with its audit log, store and control socket in a
// temporary directory, for the configured interfaces; tamper, if not nil, is the
// controller's Tamper. No policy is applied, nothing is attached or listened on.
func newTestDaemon(tb testing.TB, interfaces []string, tamper func(*model.Tables) *model.Tables) *Daemon {
	tb.Helper()
	testutil.RequireRoot(tb)
	prog, err := loader.Load()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { prog.Close() })
	dir := tb.TempDir()
	cfg := DefaultConfig()
	cfg.Interfaces = interfaces
	cfg.AuditLog = filepath.Join(dir, "audit.jsonl")
	cfg.Store = filepath.Join(dir, "runtime.db")
	cfg.ControlSocket = filepath.Join(dir, "control.sock")
	d := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	d.prog, d.metrics = prog, newMetrics(nil, prog, cfg.Interfaces)
	ccfg := controllerConfig(cfg, d.metrics)
	ccfg.Tamper = tamper
	if d.ctl, err = controller.New(ccfg, prog, d.log); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { d.ctl.Close() })
	d.metrics.ctl = d.ctl
	d.ctl.OpenStore()
	return d
}
