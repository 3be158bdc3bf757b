package daemon

import (
	"io"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portcullis/portcullis/controller"
	"github.com/portcullis/portcullis/internal/testutil"
	"github.com/portcullis/portcullis/loader"
	"github.com/portcullis/portcullis/model"
)

// The interface watch does not wait for a policy change: while an apply is held inside
// the swap (the controller's lock taken), reconciling an interface answers and its
// state reaches the snapshot. The interface indexes wait for the controller, and are
// taken once the apply is done.
func TestWatchDoesNotWaitForAnApply(t *testing.T) {
	testutil.RequireRoot(t)
	prog, err := loader.Load()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prog.Close() })
	cfg := DefaultConfig()
	cfg.Interfaces = []string{"pcnone0"} // never there: reconcile finds it missing
	cfg.AuditLog = filepath.Join(t.TempDir(), "audit.jsonl")
	cfg.Store = filepath.Join(t.TempDir(), "runtime.db")
	d := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	d.prog = prog
	d.metrics = newMetrics(nil, prog, cfg.Interfaces)
	var hold atomic.Pointer[func(*model.Tables) *model.Tables]
	ccfg := controllerConfig(cfg, d.metrics)
	ccfg.Tamper = func(tb *model.Tables) *model.Tables {
		if f := hold.Load(); f != nil {
			return (*f)(tb)
		}
		return tb
	}
	if d.ctl, err = controller.New(ccfg, prog, d.log); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.ctl.Close() })
	d.metrics.ctl = d.ctl
	d.ctl.OpenStore()
	if res := d.ctl.Apply("a.yaml", []byte(testutil.PolicyA), "file"); res.Err != nil {
		t.Fatal(res.Err)
	}
	d.attached["pcnone0"] = loader.ModeGeneric // as if attached before it went
	d.publishAttachment()
	if st := d.ctl.Snapshot(); st.Interfaces["pcnone0"] != "generic" {
		t.Fatalf("before: %v", st.Interfaces)
	}

	entered, release := make(chan struct{}), make(chan struct{})
	f := func(tb *model.Tables) *model.Tables {
		close(entered)
		<-release
		return tb
	}
	hold.Store(&f)
	done := make(chan controller.Result)
	go func() { done <- d.ctl.Apply("b.yaml", []byte(testutil.PolicyB), "file") }()
	<-entered
	reconciled := make(chan struct{})
	go func() {
		d.reconcile("pcnone0")
		close(reconciled)
	}()
	select {
	case <-reconciled:
	case <-time.After(30 * time.Second):
		close(release)
		t.Fatal("reconcile waited for the apply in progress")
	}
	if st := d.ctl.Snapshot(); st.Interfaces["pcnone0"] != "missing" {
		t.Errorf("during the apply the snapshot says %v, want pcnone0 missing", st.Interfaces)
	}
	close(release)
	if res := <-done; res.Err != nil {
		t.Fatal(res.Err)
	}
	select {
	case m := <-d.ifaces:
		if len(m) != 0 {
			t.Errorf("indexes offered: %v, want none", m)
		}
	default:
		t.Error("reconcile offered the controller no interface indexes")
	}
}
