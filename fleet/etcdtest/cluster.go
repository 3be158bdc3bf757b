package etcdtest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"google.golang.org/grpc"
)

// A Cluster is etcd as a fleet runs it: several members, each a process of its own
// in a network namespace of its own, so that a test can kill one (SIGKILL), start it
// again, or cut a router off from all of them. A member is the test binary itself,
// run again under `nsenter --net=` with MemberEnv set: the package under test's
// TestMain calls MemberMain first, which runs the embedded member and never returns.
//
//	func TestMain(m *testing.M) {
//		etcdtest.MemberMain()
//		os.Exit(m.Run())
//	}

// MemberEnv is the environment variable that makes a test binary an etcd member: its
// value is the member's configuration (JSON, written by StartCluster).
const MemberEnv = "PORTCULLIS_ETCD_MEMBER"

// Ports of every member, on its own address in its own namespace.
const (
	ClientPort = 2379
	PeerPort   = 2380
)

// StartTimeout bounds the wait for a member (or the cluster) to become ready.
const StartTimeout = 60 * time.Second

// memberConfig is what a member process is started with.
type memberConfig struct {
	Name           string `json:"name"`
	Dir            string `json:"dir"`
	ClientURL      string `json:"client_url"`
	PeerURL        string `json:"peer_url"`
	InitialCluster string `json:"initial_cluster"`
	State          string `json:"state"` // "new" or "existing"
}

// readyLine is what a member prints on stdout once it serves clients.
const readyLine = "etcdtest: member ready"

// MemberMain makes this process an etcd member when MemberEnv is set, and returns at
// once when it is not. A member serves until its stdin closes (the test that started
// it is done, or died) or it is killed; it exits 1 if etcd fails to start or stops on
// its own. Call it first in TestMain, before m.Run.
func MemberMain() {
	js, ok := os.LookupEnv(MemberEnv)
	if !ok {
		return
	}
	if err := runMember(js); err != nil {
		fmt.Fprintf(os.Stderr, "etcdtest member: %v\n", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func runMember(js string) error {
	var mc memberConfig
	if err := json.Unmarshal([]byte(js), &mc); err != nil {
		return fmt.Errorf("reading %s: %w", MemberEnv, err)
	}
	cu, err := url.Parse(mc.ClientURL)
	if err != nil {
		return err
	}
	pu, err := url.Parse(mc.PeerURL)
	if err != nil {
		return err
	}
	cfg := embed.NewConfig()
	cfg.Name = mc.Name
	cfg.Dir = mc.Dir
	cfg.ListenClientUrls = []url.URL{*cu}
	cfg.AdvertiseClientUrls = []url.URL{*cu}
	cfg.ListenPeerUrls = []url.URL{*pu}
	cfg.AdvertisePeerUrls = []url.URL{*pu}
	cfg.InitialCluster = mc.InitialCluster
	cfg.InitialClusterToken = "portcullis-etcdtest"
	cfg.ClusterState = mc.State
	cfg.LogLevel = "error"
	cfg.UnsafeNoFsync = true // a test's data need not survive a power cut
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("starting etcd: %w", err)
	}
	defer e.Close()
	stdin := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		close(stdin)
	}()
	select {
	case <-e.Server.ReadyNotify():
		fmt.Println(readyLine)
	case err := <-e.Err():
		return fmt.Errorf("etcd stopped before it was ready: %w", err)
	case <-stdin:
		return nil
	}
	select {
	case err := <-e.Err():
		return fmt.Errorf("etcd stopped: %w", err)
	case <-stdin:
		return nil
	}
}

// MemberSpec is one member of a cluster: its name, the named network namespace it
// runs in ("" : the test's own) and its address there. It listens for clients on
// Addr:ClientPort and for its peers on Addr:PeerPort.
type MemberSpec struct {
	Name  string
	Netns string // a name under /run/netns
	Addr  netip.Addr
}

// DialFunc makes a client's connections (to "ADDR:PORT"); nil dials from the test's
// own namespace. testenv.Namespace.DialContext bound to "tcp" is one.
type DialFunc func(ctx context.Context, addr string) (net.Conn, error)

// Cluster is a running cluster of member processes.
type Cluster struct {
	t       testing.TB
	dial    DialFunc
	initial string
	members []*member
}

type member struct {
	spec MemberSpec
	dir  string
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *readyWriter
	done chan struct{} // closed when cmd has been waited for
}

// StartCluster starts one member per spec, all at once (a member is ready only once a
// quorum is), and returns when each one has said it is ready and answers a Status
// request made through dial, within StartTimeout; otherwise it fails the test with the
// members' output. Data dirs are in t.TempDir(). The members are killed when the test
// ends (Close); a namespace given must outlive them (register its removal first).
func StartCluster(t testing.TB, specs []MemberSpec, dial DialFunc) *Cluster {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := exec.LookPath("nsenter"); err != nil {
		t.Skip("needs nsenter (util-linux) to run etcd members in network namespaces")
	}
	c := &Cluster{t: t, dial: dial}
	var ic []string
	for _, s := range specs {
		ic = append(ic, fmt.Sprintf("%s=%s", s.Name, peerURL(s.Addr)))
	}
	c.initial = strings.Join(ic, ",")
	t.Cleanup(c.Close)
	base := t.TempDir()
	for _, s := range specs {
		m := &member{spec: s, dir: filepath.Join(base, s.Name)}
		c.members = append(c.members, m)
		if err := c.spawn(exe, m, embed.ClusterStateFlagNew); err != nil {
			t.Fatalf("etcd member %s: %v", s.Name, err)
		}
	}
	deadline := time.Now().Add(StartTimeout)
	for i := range c.members {
		c.waitReady(i, deadline)
	}
	return c
}

func peerURL(a netip.Addr) string {
	return "http://" + net.JoinHostPort(a.String(), fmt.Sprint(PeerPort))
}

func clientURL(a netip.Addr) string {
	return "http://" + net.JoinHostPort(a.String(), fmt.Sprint(ClientPort))
}

// spawn starts m's process.
func (c *Cluster) spawn(exe string, m *member, state string) error {
	js, err := json.Marshal(memberConfig{Name: m.spec.Name, Dir: m.dir, ClientURL: clientURL(m.spec.Addr), PeerURL: peerURL(m.spec.Addr),
		InitialCluster: c.initial, State: state})
	if err != nil {
		return err
	}
	var cmd *exec.Cmd
	if m.spec.Netns != "" {
		cmd = exec.Command("nsenter", "--net=/run/netns/"+m.spec.Netns, "--", exe)
	} else {
		cmd = exec.Command(exe)
	}
	cmd.Env = append(os.Environ(), MemberEnv+"="+string(js))
	m.out = newReadyWriter()
	cmd.Stdout, cmd.Stderr = m.out, m.out
	in, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	m.cmd, m.in, m.done = cmd, in, make(chan struct{})
	go func() {
		cmd.Wait()
		close(m.done)
	}()
	return nil
}

// waitReady waits for member i's ready line, then for an answer to Status through the
// cluster's dialer.
func (c *Cluster) waitReady(i int, deadline time.Time) {
	c.t.Helper()
	m := c.members[i]
	select {
	case <-m.out.ready:
	case <-m.done:
		c.t.Fatalf("etcd member %s exited before it was ready (%v):\n%s", m.spec.Name, m.cmd.ProcessState, m.out)
	case <-time.After(time.Until(deadline)):
		c.t.Fatalf("etcd member %s not ready within %v:\n%s", m.spec.Name, StartTimeout, m.out)
	}
	cli, err := newClient([]string{clientURL(m.spec.Addr)}, c.dial)
	if err != nil {
		c.t.Fatalf("etcd client of member %s: %v", m.spec.Name, err)
	}
	defer cli.Close()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		st, err := cli.Status(ctx, clientURL(m.spec.Addr))
		cancel()
		if err == nil && st.Leader != 0 {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("etcd member %s does not answer Status through the test's dialer within %v: %v (%v)", m.spec.Name, StartTimeout, err, st)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Endpoints are every member's client URL ("http://ADDR:2379"), in the order of the specs.
func (c *Cluster) Endpoints() []string {
	var out []string
	for _, m := range c.members {
		out = append(out, clientURL(m.spec.Addr))
	}
	return out
}

// Endpoint is member i's client URL.
func (c *Cluster) Endpoint(i int) string { return clientURL(c.members[i].spec.Addr) }

// Kill kills member i with SIGKILL and waits for it to be gone. Killing a dead member
// does nothing.
func (c *Cluster) Kill(i int) {
	c.t.Helper()
	m := c.members[i]
	if m.cmd == nil {
		return
	}
	m.cmd.Process.Kill()
	<-m.done
	m.in.Close()
	m.cmd = nil
}

// Restart kills member i if it runs, starts it again on its data, and waits until it
// is ready (StartTimeout).
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	c.Kill(i)
	exe, err := os.Executable()
	if err != nil {
		c.t.Fatal(err)
	}
	if err := c.spawn(exe, c.members[i], embed.ClusterStateFlagExisting); err != nil {
		c.t.Fatalf("restarting etcd member %s: %v", c.members[i].spec.Name, err)
	}
	c.waitReady(i, time.Now().Add(StartTimeout))
}

// Running reports whether member i was started and not killed since.
func (c *Cluster) Running(i int) bool { return c.members[i].cmd != nil }

// Log is member i's output so far (etcd logs errors only).
func (c *Cluster) Log(i int) string { return c.members[i].out.String() }

// Close kills every member and waits for them. It runs when the test ends; calling
// it earlier (before the namespaces go) is fine, and twice is harmless.
func (c *Cluster) Close() {
	for i := range c.members {
		c.Kill(i)
	}
}

// Client returns a client of every member that makes its connections with the
// cluster's dialer, closed when the test ends.
func (c *Cluster) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	return NewClient(t, c.Endpoints(), c.dial)
}

// NewClient returns a client of endpoints whose connections dial makes (nil: from the
// test's own namespace), closed when the test ends. Dialing does not block: a client
// of an unreachable cluster is made at once, and its requests fail.
func NewClient(t testing.TB, endpoints []string, dial DialFunc) *clientv3.Client {
	t.Helper()
	cli, err := newClient(endpoints, dial)
	if err != nil {
		t.Fatalf("etcd client of %v: %v", endpoints, err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func newClient(endpoints []string, dial DialFunc) (*clientv3.Client, error) {
	// Quiet: a test that cuts a router off expects the client's retry warnings.
	cfg := clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()}
	if dial != nil {
		cfg.DialOptions = []grpc.DialOption{grpc.WithContextDialer(dial)}
	}
	return clientv3.New(cfg)
}

// readyWriter keeps a member's output and closes ready when the ready line appears.
type readyWriter struct {
	mu    sync.Mutex
	b     bytes.Buffer
	ready chan struct{}
	seen  bool
}

func newReadyWriter() *readyWriter { return &readyWriter{ready: make(chan struct{})} }

func (w *readyWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.b.Write(p)
	if !w.seen && bytes.Contains(w.b.Bytes(), []byte(readyLine)) {
		w.seen = true
		close(w.ready)
	}
	return len(p), nil
}

func (w *readyWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}
