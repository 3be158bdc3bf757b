package fleet

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/portcullis/portcullis/fleet/etcdtest"
)

// deadline bounds every wait for a condition: generous, since nothing here may
// depend on a tight wall-clock window.
const deadline = 60 * time.Second

// validPolicy is a small valid policy; n varies a range so that texts differ.
func validPolicy(n int) []byte {
	return fmt.Appendf(nil, `# Fleet test policy %d.
version: 1
governed_ports: [25]
protected_ports: [465, 587]
default: pass
ranges:
  - name: dsl-dynamic
    verdict: reset
    description: DSL pools
    owner: access-engineering
    cidrs:
      - 100.64.0.0/12
  - name: business-static
    verdict: pass
    description: Business customers
    owner: business-support
    cidrs:
      - 198.51.100.0/24
      - 203.0.113.%d/32
`, n, n%250)
}

// invalidPolicy has a verdict that does not exist, on line 6.
var invalidPolicy = []byte(`version: 1
governed_ports: [25]
default: pass
ranges:
  - name: dsl-dynamic
    verdict: dorp
    cidrs:
      - 100.64.0.0/12
`)

// newFleet starts etcd and returns the server, a raw client and the fleet on it.
func newFleet(t *testing.T) (*etcdtest.Server, *clientv3.Client, *Client) {
	t.Helper()
	srv := etcdtest.Start(t)
	raw := srv.Client(t)
	cli, err := New(raw, "")
	if err != nil {
		t.Fatal(err)
	}
	return srv, raw, cli
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(b []byte) (int, error) { w.t.Log(string(b)); return len(b), nil }

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 2*deadline)
	t.Cleanup(cancel)
	return ctx
}

// waitFor polls cond until it holds, failing the test after deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(deadline)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("not within %s: %s", deadline, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func mustPush(t *testing.T, cli *Client, group string, text []byte, who string, expect int64) int64 {
	t.Helper()
	rev, err := Push(ctxT(t), cli, group, text, who, "test push", expect)
	if err != nil {
		t.Fatalf("push: %v", err)
	}
	return rev
}
