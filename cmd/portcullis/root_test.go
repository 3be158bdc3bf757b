package main

import (
	"os"
	"testing"
)

// requireRoot skips tests that load BPF programs or build namespaces; CI runs them as root.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (BPF, XDP, network namespaces); run as root: make test (or: sudo make test)")
	}
}
