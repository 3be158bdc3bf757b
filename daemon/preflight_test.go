package daemon

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/portcullis/portcullis/internal/testutil"
	"github.com/portcullis/portcullis/loader"
)

// Two first starts at once: the one that made the bpffs directory may lose its lock to
// the other. Refused, it leaves the directory alone: it is the running daemon's now (on
// a loaded machine still empty after the 2 s wait, so an rmdir would take it away).
func TestPreflightLostLockLeavesTheDirectory(t *testing.T) {
	cfg := DefaultConfig()
	cfg.BPFFS = scratchPinDir(t, "preflight")
	d := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	var other *loader.PinLock // the start that runs
	d.madeBPFFS = func() {
		var err error
		if other, err = loader.LockPinDir(cfg.BPFFS, 0); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { other.Close() })
	if _, err := d.preflight(); !errors.Is(err, loader.ErrPinsInUse) {
		t.Fatalf("preflight with the lock taken by another start: %v, want ErrPinsInUse", err)
	}
	if _, err := os.Stat(cfg.BPFFS); err != nil {
		t.Fatalf("the refused start removed the running daemon's bpffs directory: %v", err)
	}
}

// A bpffs directory that exists but is not on a bpffs (a bpffs is still to be mounted
// over it, hiding it) is not locked in preflight: Run locks the directory there once
// bpffs is mounted. Here another holds the lock of the hidden directory, and the start
// goes on to its next check rather than waiting for that lock.
func TestPreflightLocksOnlyOnBPFFS(t *testing.T) {
	testutil.RequireRoot(t)
	cfg := DefaultConfig()
	cfg.BPFFS = t.TempDir()
	cfg.ControlSocket = filepath.Join(t.TempDir(), "ctl.sock")
	cfg.Listen = ""
	cfg.Interfaces = []string{"pcnosuch0"}
	held, err := loader.LockPinDir(cfg.BPFFS, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { held.Close() })
	d := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if _, err := d.preflight(); err == nil || !strings.Contains(err.Error(), "interface pcnosuch0: not found") {
		t.Fatalf("preflight: %v, want the missing interface (not the lock of a directory a bpffs will hide)", err)
	}
}
