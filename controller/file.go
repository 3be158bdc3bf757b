package controller

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// FileSource is the configured policy file: offered on SIGHUP and whenever the file
// changes (checked every interval). The override outranks it (source.go).
type FileSource struct {
	path     string
	interval time.Duration
	log      *slog.Logger
	sig      chan os.Signal
}

// NewFileSource returns the source of the policy file path. It takes SIGHUP from
// now on (so a SIGHUP before Run starts is not the default's: the end of the process).
func NewFileSource(path string, interval time.Duration, log *slog.Logger) *FileSource {
	s := &FileSource{path: path, interval: interval, log: log, sig: make(chan os.Signal, 4)}
	signal.Notify(s.sig, syscall.SIGHUP)
	return s
}

// Name is SourceFile.
func (s *FileSource) Name() string { return SourceFile }

// Offers offers the file on SIGHUP ("signal") and on a change ("file") until ctx ends.
// The offer carries no text: the file is read when it is taken.
func (s *FileSource) Offers(ctx context.Context) <-chan Offer {
	ch := make(chan Offer)
	changes := watchFile(ctx, s.path, s.interval, func() {
		s.log.Warn("the policy file is gone; the policy in force stays (a file that comes back is offered again, as a change)", "file", s.path)
	})
	go func() {
		defer signal.Stop(s.sig)
		for {
			var o Offer
			select {
			case <-ctx.Done():
				return
			case <-s.sig:
				s.log.Info("SIGHUP: reloading the policy file", "file", s.path)
				o = Offer{Who: "signal", File: s.path}
			case <-changes:
				s.log.Info("policy file changed", "file", s.path)
				o = Offer{Who: "file", File: s.path}
			}
			select {
			case ch <- o:
			case <-ctx.Done():
				return
			}
		}
	}()
	return ch
}

// missingChecks is how many checks in a row must find the policy file missing before
// the watch says it is gone.
const missingChecks = 3

// watchFile reports changes of path's identity, size or modification time, checked
// every interval (editors that write a new file and rename it over the old are seen).
// gone is called once the file has been missing for missingChecks checks in a row
// (longer than an editor's write-and-rename), and again only after it came back.
func watchFile(ctx context.Context, path string, interval time.Duration, gone func()) <-chan struct{} {
	ch := make(chan struct{}, 1)
	stamp := func() string {
		fi, err := os.Stat(path)
		if err != nil {
			return "missing"
		}
		var ino uint64
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			ino = st.Ino
		}
		return fmt.Sprint(ino, fi.Size(), fi.ModTime().UnixNano())
	}
	last := stamp()
	missing := 0
	go func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				s := stamp()
				if s == "missing" {
					if missing++; missing == missingChecks {
						gone()
					}
					continue
				}
				missing = 0
				if s != last {
					last = s
					select {
					case ch <- struct{}{}:
					default:
					}
				}
			}
		}
	}()
	return ch
}
