package daemon

import (
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
	var hold atomic.Pointer[func(*model.Tables) *model.Tables]
	// pcnone0 is never there: reconcile finds it missing.
	d := newTestDaemon(t, []string{"pcnone0"}, func(tb *model.Tables) *model.Tables {
		if f := hold.Load(); f != nil {
			return (*f)(tb)
		}
		return tb
	})
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
