// Package testutil is what the tests of several packages share: the root check that
// skips kernel-facing tests with one clear message, and the policy texts the
// controller's and the daemon's tests apply. Test code only; nothing in a binary
// imports it.
package testutil

import (
	"bytes"
	"os"
	"strings"
	"sync"
	"testing"
)

// RequireRoot skips tb unless it runs as root: loading BPF programs, attaching XDP and
// building network namespaces need CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN. CI runs
// every test as root.
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN: BPF programs, XDP, network namespaces); run: sudo make test")
	}
}

// PolicyA is a small policy with a range of each blocking verdict, an exemption inside
// one and a quarantine.
const PolicyA = `version: 1
default: pass
ranges:
  - {name: dynamic, verdict: reset, cidrs: [100.64.0.0/10, "2001:db8:1000::/36"]}
  - {name: mobile, verdict: drop, cidrs: [100.96.0.0/11]}
exemptions:
  - {cidr: 100.64.1.25, name: mx1, reason: registered mail server, ticket: T-1}
quarantines:
  - {cidr: 198.51.100.66, verdict: drop, reason: spam run, owner: abuse, expires: 2099-01-01}
`

// PolicyB differs from PolicyA in a range verdict and drops the exemption.
var PolicyB = strings.Replace(strings.Replace(PolicyA, "verdict: reset", "verdict: drop", 1),
	"exemptions:\n  - {cidr: 100.64.1.25, name: mx1, reason: registered mail server, ticket: T-1}\n", "", 1)

// SyncBuffer is a bytes.Buffer that a logger or a process writes from another
// goroutine while a test reads it.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
