package replay

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// RSTWriter writes the RSTs the program sent to a pcap file (Ethernet), through a
// temporary file beside it that Close renames into place: the file at path is whole or
// not there.
type RSTWriter struct {
	path, tmp string
	f         *os.File
	w         *pcapgo.Writer
}

// CreateRSTFile starts the pcap file at path. Call Close to put it in place; Abort (at
// any time, also after Close) removes what Close did not put in place.
func CreateRSTFile(path string) (*RSTWriter, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return nil, fmt.Errorf("cannot write %s: %w", path, err)
	}
	w := &RSTWriter{path: path, tmp: f.Name(), f: f, w: pcapgo.NewWriter(f)}
	if err := w.w.WriteFileHeader(65536, layers.LinkTypeEthernet); err != nil {
		w.Abort()
		return nil, fmt.Errorf("writing %s: %w", path, err)
	}
	return w, nil
}

// Write adds the reply of r (r.Reply, non-nil) with the time of its frame.
func (w *RSTWriter) Write(r Result) error {
	ci := gopacket.CaptureInfo{Timestamp: r.Time, CaptureLength: len(r.Reply), Length: len(r.Reply)}
	if err := w.w.WritePacket(ci, r.Reply); err != nil {
		return fmt.Errorf("writing %s: %w", w.path, err)
	}
	return nil
}

// Close finishes the file and renames it into place (mode 0644).
func (w *RSTWriter) Close() error {
	if err := w.f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", w.path, err)
	}
	if err := os.Chmod(w.tmp, 0o644); err != nil {
		return err
	}
	if err := os.Rename(w.tmp, w.path); err != nil {
		return fmt.Errorf("writing %s: %w", w.path, err)
	}
	w.f = nil
	return nil
}

// Abort removes the temporary file unless Close renamed it.
func (w *RSTWriter) Abort() {
	if w.f != nil {
		w.f.Close()
		os.Remove(w.tmp)
		w.f = nil
	}
}
