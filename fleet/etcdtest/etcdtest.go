// Package etcdtest runs etcd for tests (the etcd project's own embed package): Start
// runs a single-member server inside the test process, for the tests of package fleet.
// It listens on 127.0.0.1 only, on ports picked free at start and kept across Stop and
// Restart, with its data in the test's temporary directory. StartCluster (cluster.go)
// runs a cluster of member processes, one per network namespace, for the tests of a
// fleet of routers: a member can be killed and restarted, and routers cut off.
//
// It is a package of its own, not part of testenv: cmd/portcullis imports testenv for
// `portcullis demo`, and the etcd server must not be linked into the daemon's binary.
package etcdtest

import (
	"net"
	"net/url"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
)

// Server is one embedded etcd member.
type Server struct {
	t   testing.TB
	cfg *embed.Config
	e   *embed.Etcd
	// hold keeps the client port while the server is stopped, so that no other test's
	// etcd (packages run in parallel) takes it and answers this one's clients.
	hold net.Listener
	// Endpoints are the client URLs ("http://127.0.0.1:PORT"), the same after Restart.
	Endpoints []string
}

// Start starts a server with its data in t.TempDir() and stops it when the test ends.
func Start(t testing.TB) *Server { return StartTLS(t, nil) }

// StartTLS is Start serving clients over TLS as tls says (certificate, key, and with
// ClientCertAuth the CA of client certificates: a certificate's common name is the
// user); nil serves plain HTTP. Endpoints are then https URLs.
func StartTLS(t testing.TB, tls *transport.TLSInfo) *Server {
	t.Helper()
	client, peer := freePort(t), freePort(t)
	if tls != nil {
		client.Scheme = "https"
	}
	cfg := embed.NewConfig()
	cfg.Name = "fleet-test"
	cfg.Dir = t.TempDir()
	cfg.ListenClientUrls = []url.URL{client}
	cfg.AdvertiseClientUrls = []url.URL{client}
	cfg.ListenPeerUrls = []url.URL{peer}
	cfg.AdvertisePeerUrls = []url.URL{peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.LogLevel = "fatal"   // its shutdown logs errors that are none
	cfg.UnsafeNoFsync = true // a test's data need not survive a power cut
	if tls != nil {
		cfg.ClientTLSInfo = *tls
	}
	s := &Server{t: t, cfg: cfg, Endpoints: []string{client.String()}}
	s.start()
	t.Cleanup(s.Stop)
	return s
}

// freePort returns a URL on 127.0.0.1 with a port free at the moment.
func freePort(t testing.TB) url.URL {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	defer l.Close()
	return url.URL{Scheme: "http", Host: l.Addr().String()}
}

func (s *Server) start() {
	s.t.Helper()
	if s.hold != nil {
		s.hold.Close()
		s.hold = nil
	}
	e, err := embed.StartEtcd(s.cfg)
	if err != nil {
		s.t.Fatalf("starting etcd: %v", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		e.Close()
		s.t.Fatal("etcd did not become ready within 30s")
	}
	s.e = e
}

// Stop stops the server; its data stays for Restart. Stopping a stopped server does
// nothing.
func (s *Server) Stop() {
	if s.e != nil {
		s.e.Close()
		s.e = nil
		if l, err := net.Listen("tcp", s.cfg.ListenClientUrls[0].Host); err == nil {
			s.hold = l // closed by Restart, or when the test ends
			s.t.Cleanup(func() {
				if s.hold != nil {
					s.hold.Close()
				}
			})
		}
	}
}

// Restart starts the server again on the same data and ports.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	s.cfg.ClusterState = embed.ClusterStateFlagExisting
	s.start()
}

// Client returns a client of the server, closed when the test ends.
func (s *Server) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: s.Endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// RootPassword is the password EnableAuth gives etcd's root user.
const RootPassword = "root-pw"

// EnableAuth turns authentication on through cli (a client of a server with none): a
// root user with RootPassword and the root role, as an operator's first step.
func EnableAuth(t testing.TB, cli *clientv3.Client) {
	t.Helper()
	ctx := t.Context()
	if _, err := cli.UserAdd(ctx, "root", RootPassword); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.RoleAdd(ctx, "root"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.UserGrantRole(ctx, "root", "root"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.AuthEnable(ctx); err != nil {
		t.Fatal(err)
	}
}
