package fleet

import (
	"bytes"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portcullis/portcullis/fleet/etcdtest"
)

// enableAuth starts etcd and turns its authentication on, with root (password
// root-pw), and returns the server and a function that writes a password file.
func enableAuth(t *testing.T) (*etcdtest.Server, func(user, password string) string) {
	t.Helper()
	srv, raw, _ := newFleet(t)
	etcdtest.EnableAuth(t, raw)
	dir := t.TempDir()
	return srv, func(user, password string) string {
		t.Helper()
		f := filepath.Join(dir, user)
		if err := os.WriteFile(f, []byte(password+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
}

// withAuth is enableAuth with router bng1 of group dsl (password bng1-pw), and root's
// fleet client.
func withAuth(t *testing.T) (*etcdtest.Server, *Client, func(user, password string) string) {
	t.Helper()
	srv, pwFile := enableAuth(t)
	root, err := Dial(Conn{Endpoints: srv.Endpoints, User: "root", PasswordFile: pwFile("root", "root-pw")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Close() })
	if err := GrantRouter(ctxT(t), root, "dsl", "bng1", "bng1", "bng1-pw"); err != nil {
		t.Fatal(err)
	}
	return srv, root, pwFile
}

// A router with a user and password starts while etcd is down: Dial does not log in,
// the source reads the group once etcd is back, and logs in again after an etcd
// restart (which forgets the simple tokens it gave).
func TestDialPasswordEtcdDown(t *testing.T) {
	srv, root, pwFile := withAuth(t)
	r1 := mustPush(t, root, "dsl", validPolicy(1), "alice@noc", 0)
	conn := Conn{Endpoints: srv.Endpoints, User: "bng1", PasswordFile: pwFile("bng1", "bng1-pw"), DialTimeout: 2 * time.Second}

	srv.Stop()
	t0 := time.Now()
	c, err := Dial(conn)
	if err != nil {
		t.Fatalf("Dial with a password while etcd is down: %v", err)
	}
	defer c.Close()
	if d := time.Since(t0); d > time.Second {
		t.Errorf("Dial waited %s for etcd", d)
	}
	if err := c.Reachable(ctxT(t), 500*time.Millisecond); err == nil || !strings.Contains(err.Error(), "does not answer") {
		t.Errorf("Reachable while etcd is down: %v, want \"does not answer\"", err)
	}
	s := newSource(t, c)
	ch := s.Offers(ctxT(t))
	waitFor(t, "health says etcd is down", func() bool { h := s.Health(); return !h.Connected && h.LastError != "" })

	srv.Restart()
	if o := next(t, ch); o.File != Origin("dsl", r1) || !bytes.Equal(o.Policy, validPolicy(1)) {
		t.Fatalf("once etcd is up: offered %s, want %s", o.File, Origin("dsl", r1))
	}
	// A restart forgets the token: the client logs in again.
	srv.Restart()
	var r2 int64
	waitFor(t, "a push after the second restart", func() bool {
		r2, err = Push(ctxT(t), root, "dsl", validPolicy(2), "bob@noc", "after restart", r1)
		return err == nil
	})
	if o := next(t, ch); o.File != Origin("dsl", r2) {
		t.Fatalf("after the second restart: offered %s, want %s", o.File, Origin("dsl", r2))
	}
}

// What waiting cannot mend stops Dial with the key named; a wrong password is an error
// of Reachable naming the user and the file.
func TestDialCredentialErrors(t *testing.T) {
	srv, _, pwFile := withAuth(t)
	missing := filepath.Join(t.TempDir(), "nope")
	if _, err := Dial(Conn{Endpoints: srv.Endpoints, User: "bng1", PasswordFile: missing}); err == nil || !strings.Contains(err.Error(), "password_file") {
		t.Errorf("a missing password file: %v, want an error naming password_file", err)
	}
	if _, err := Dial(Conn{Endpoints: srv.Endpoints, User: "bng1", PasswordFile: pwFile("empty", "")}); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("an empty password file: %v, want \"empty\"", err)
	}
	if _, err := Dial(Conn{Endpoints: []string{"127.0.0.1:2379"}, User: "bng1", PasswordFile: pwFile("bng1", "bng1-pw")}); err == nil || !strings.Contains(err.Error(), "endpoints") {
		t.Errorf("an endpoint without a scheme: %v, want an error naming endpoints", err)
	}
	wrong := pwFile("wrong", "not-bng1-pw")
	c, err := Dial(Conn{Endpoints: srv.Endpoints, User: "bng1", PasswordFile: wrong})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Reachable(ctxT(t), 5*time.Second); err == nil || !strings.Contains(err.Error(), "user bng1") || !strings.Contains(err.Error(), wrong) {
		t.Errorf("a wrong password: %v, want an error naming user bng1 and %s", err, wrong)
	}
}

// A router whose group is misspelt (its user may not read that group) logs the real
// error once, at Error, with what to check; the retries after it only at Debug.
func TestSourceLogsRefusalOnce(t *testing.T) {
	srv, _, pwFile := withAuth(t)
	c, err := Dial(Conn{Endpoints: srv.Endpoints, User: "bng1", PasswordFile: pwFile("bng1", "bng1-pw")})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var mu sync.Mutex
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(lockedWriter{&mu, &buf}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	s, err := NewSource(c, "dls", log)
	if err != nil {
		t.Fatal(err)
	}
	s.probe, s.retryFirst, s.retryMax = 500*time.Millisecond, 50*time.Millisecond, 100*time.Millisecond
	s.Offers(ctxT(t))
	logged := func() string { mu.Lock(); defer mu.Unlock(); return buf.String() }
	waitFor(t, "the refusal logged", func() bool { return strings.Contains(logged(), "may not read group dls") })
	time.Sleep(time.Second) // several retries
	out := logged()
	if n := strings.Count(out, "may not read group dls"); n != 1 || !strings.Contains(out, "level=ERROR") || !strings.Contains(out, "fleet grant router --group dls") {
		t.Errorf("logged %d times, want once at ERROR naming the grant:\n%s", n, out)
	}
	if h := s.Health(); !strings.Contains(h.LastError, "may not read group dls") {
		t.Errorf("health's last error: %q", h.LastError)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}
