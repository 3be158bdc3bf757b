// Package api is the HTTP API for the abuse desk's tools and the customer portal: the
// runtime-entry operations of the daemon's control socket (list, history, status,
// quarantine, unblock, release) as JSON, on a listener of its own that is off by
// default. Clients are named in a clients file with their scopes and either the
// SHA-256 of a bearer token or, with mTLS, their certificate's CN. Every request is
// audited with the client's name. The routes are documented in openapi.yaml and
// docs/api.md.
package api

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"

	"golang.org/x/net/netutil"

	"github.com/portcullis/portcullis/overlay"
)

// Sentinel errors, all of the package's.
var (
	// ErrConfig means the API's configuration is unusable (New says which key and why).
	ErrConfig = errors.New("bad API configuration")
	// ErrClients means the clients file has mistakes (New names file:line and the fix).
	ErrClients = errors.New("bad API clients file")
	// ErrInsecure means bearer tokens would cross a network in clear text: a
	// non-loopback address without TLS (New, Serve).
	ErrInsecure = errors.New("bearer tokens would cross the network in clear text")
)

// Backend is what the API drives; the daemon's controller implements it.
type Backend interface {
	// Add quarantines or unblocks req.Prefix. Errors wrapping overlay.ErrForbidden,
	// ErrDuration, ErrInvalid, ErrKind or ErrFull are the client's to fix (422); others
	// are the daemon's (500). It must change nothing when it returns an error.
	Add(req overlay.Request) (overlay.Entry, error)
	// Release removes the entry k; an error wrapping overlay.ErrNotFound if absent.
	Release(k overlay.Key, who, reason string) error
	// AddFleet and ReleaseFleet are Add and Release for every router of this router's
	// group (fleet entries in etcd, which each router adds against its own policy). An
	// error wrapping overlay.ErrInvalid if this router is in no fleet, ErrUnavailable
	// if etcd cannot be reached.
	AddFleet(req overlay.Request) (overlay.Entry, error)
	ReleaseFleet(k overlay.Key, who, reason string) error
	// Entries returns up to q.Limit of the live entries, sorted by kind then prefix,
	// and whether more follow (EntriesQuery says which).
	Entries(q EntriesQuery) ([]overlay.Entry, bool)
	// History returns up to q.Limit of the newest events, oldest first (HistoryQuery
	// says which), the number of the first one returned, and whether older ones match
	// too. Events are numbered in the order they happened.
	History(q HistoryQuery) ([]overlay.Event, uint64, bool)
	// Status returns a JSON-able snapshot of the daemon's status, read without blocking.
	Status() any
}

// EntriesQuery asks for a page of the live entries: those that concern Prefix only
// (overlay.Concerns: its own, and those of networks that hold it or lie within it), if
// it is valid; those after the entry After in the listing's order, if After.Prefix is valid;
// Limit at most.
type EntriesQuery struct {
	Prefix netip.Prefix
	After  overlay.Key
	Limit  int
}

// HistoryQuery asks for a page of the history: the newest Limit events of the entries
// that concern Prefix (overlay.Concerns; of every prefix if it is not valid) numbered below Before (0: the newest).
type HistoryQuery struct {
	Prefix netip.Prefix
	Before uint64
	Limit  int
}

// Config is the API's part of the daemon's configuration.
type Config struct {
	// Listen is the address to serve on, e.g. "127.0.0.1:9726"; "" leaves the API off.
	// An address that is not loopback needs TLSCert.
	Listen string `yaml:"listen"`
	// Clients is the path of the clients file (names, scopes, token hashes or
	// certificate CNs). Required.
	Clients string `yaml:"clients"`
	// TLSCert and TLSKey are PEM files; with them the API serves HTTPS. Both or neither.
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// ClientCA, if set, is a PEM bundle of the CAs that sign client certificates: every
	// connection must present one they verify (mTLS), and its CN names the client in
	// the clients file. Needs TLSCert.
	ClientCA string `yaml:"client_ca"`
}

// DefaultListen is the address the documentation suggests: loopback, beside the
// metrics port.
const DefaultListen = "127.0.0.1:9726"

// Record is the audit record of one request.
type Record struct {
	Time   time.Time `json:"time"`
	Client string    `json:"client"` // the client's name in the clients file; "-" when unauthenticated
	Method string    `json:"method"`
	Path   string    `json:"path"`
	Status int       `json:"status"`
	Detail string    `json:"detail,omitempty"` // what was done, or the error returned
}

// Server is the API: an http.Server with its handler, timeouts and TLS set up.
type Server struct {
	cfg     Config
	backend Backend
	audit   func(Record)
	clients *clients
	mtls    bool
	srv     *http.Server
	handler http.Handler
}

// Timeouts, so a slow or idle client cannot hold a connection (or the daemon) up.
const (
	readHeaderTimeout = 10 * time.Second  // also bounds the TLS handshake
	readTimeout       = 30 * time.Second  // the whole request, body included (64 KiB at most)
	writeTimeout      = 30 * time.Second  // the response
	idleTimeout       = 120 * time.Second // a kept-alive connection with nothing to do
	maxHeaderBytes    = 16 << 10
)

// MaxConns is how many connections the API serves at once. Past it, new connections
// wait in the kernel's accept queue until one closes (an idle one within idleTimeout,
// a slow one within the read and write timeouts), so idle or slow clients cannot take
// the daemon to its file-descriptor limit. The abuse desk's tools and a portal need a
// few each.
const MaxConns = 256

// maxConns is MaxConns, lowered by tests.
var maxConns = MaxConns

// New checks cfg and the clients file and returns a server for b; audit, if not nil,
// is called once for every request. It serves nothing until Serve or ListenAndServe.
func New(cfg Config, b Backend, audit func(Record)) (*Server, error) {
	if b == nil {
		return nil, fmt.Errorf("%w: no backend", ErrConfig)
	}
	var errs []string
	if cfg.Listen != "" {
		loop, err := loopback(cfg.Listen)
		switch {
		case err != nil:
			errs = append(errs, fmt.Sprintf("api listen %q: %v; give host:port, e.g. listen: %s", cfg.Listen, err, DefaultListen))
		case !loop && cfg.TLSCert == "":
			return nil, fmt.Errorf("%w: api listen %q is not a loopback address and tls_cert is not set; set tls_cert and tls_key (and client_ca for mTLS), or listen on %s", ErrInsecure, cfg.Listen, DefaultListen)
		}
	}
	if cfg.Clients == "" {
		errs = append(errs, "api clients is missing: the clients file that names who may call the API, e.g. clients: /etc/portcullis/api-clients.yaml (docs/api.md)")
	}
	var tlsConf *tls.Config
	switch {
	case cfg.TLSCert != "" && cfg.TLSKey == "":
		errs = append(errs, "api tls_cert is set but tls_key is not: give both (PEM files) or neither")
	case cfg.TLSCert == "" && cfg.TLSKey != "":
		errs = append(errs, "api tls_key is set but tls_cert is not: give both (PEM files) or neither")
	case cfg.TLSCert != "":
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			errs = append(errs, fmt.Sprintf("api tls_cert %s, tls_key %s: %v", cfg.TLSCert, cfg.TLSKey, err))
			break
		}
		tlsConf = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	}
	if cfg.ClientCA != "" {
		if cfg.TLSCert == "" {
			errs = append(errs, "api client_ca is set but tls_cert is not: mTLS needs the server's own certificate too; set tls_cert and tls_key")
		}
		pem, err := os.ReadFile(cfg.ClientCA)
		pool := x509.NewCertPool()
		switch {
		case err != nil:
			errs = append(errs, fmt.Sprintf("api client_ca: %v", err))
		case !pool.AppendCertsFromPEM(pem):
			errs = append(errs, fmt.Sprintf("api client_ca %s holds no PEM certificate: give the CA that signs the clients' certificates", cfg.ClientCA))
		case tlsConf != nil:
			tlsConf.ClientAuth = tls.RequireAndVerifyClientCert
			tlsConf.ClientCAs = pool
		}
	}
	if len(errs) > 0 {
		return nil, &problems{ErrConfig, errs}
	}
	cl, err := loadClients(cfg.Clients)
	if err != nil {
		return nil, err
	}
	if err := cl.check(cfg.ClientCA != ""); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, backend: b, audit: audit, clients: cl, mtls: cfg.ClientCA != ""}
	s.handler = s.routes()
	s.srv = &http.Server{
		Handler:           s.handler,
		TLSConfig:         tlsConf,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
	}
	return s, nil
}

// Handler returns the API's handler (authentication, routes, audit), for serving it
// some other way. Without TLS in front of it, mTLS clients cannot be identified.
func (s *Server) Handler() http.Handler { return s.handler }

// Serve serves the API on l, with TLS if the configuration has a certificate, at most
// MaxConns connections at once, until Close or Shutdown (then it returns
// http.ErrServerClosed). It refuses a TCP listener
// on an address that is not loopback when there is no TLS.
func (s *Server) Serve(l net.Listener) error {
	if s.srv.TLSConfig == nil {
		if a, ok := l.Addr().(*net.TCPAddr); ok && !a.IP.IsLoopback() {
			return fmt.Errorf("%w: the API's listener is on %s, not a loopback address, and there is no TLS; set tls_cert and tls_key, or listen on %s", ErrInsecure, a, DefaultListen)
		}
	}
	l = netutil.LimitListener(l, maxConns) // beneath TLS: a handshake holds a place too
	if s.srv.TLSConfig == nil {
		return s.srv.Serve(l)
	}
	return s.srv.ServeTLS(l, "", "")
}

// ListenAndServe listens on the configured address and serves (see Serve).
func (s *Server) ListenAndServe() error {
	if s.cfg.Listen == "" {
		return fmt.Errorf("%w: api listen is empty (the API is off); set it, e.g. listen: %s", ErrConfig, DefaultListen)
	}
	l, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("api: %w", err)
	}
	return s.Serve(l)
}

// Close stops serving at once, closing every connection.
func (s *Server) Close() error { return s.srv.Close() }

// Shutdown stops accepting connections and waits, until ctx ends, for the requests in
// flight to finish.
func (s *Server) Shutdown(ctx context.Context) error { return s.srv.Shutdown(ctx) }

// loopback reports whether a host:port names only loopback addresses. An empty host
// (":9726") means every interface.
func loopback(hostport string) (bool, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return false, err
	}
	if port == "" {
		return false, errors.New("no port")
	}
	if strings.EqualFold(host, "localhost") {
		return true, nil
	}
	if host == "" {
		return false, nil
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return false, fmt.Errorf("host %q is not an IP address or localhost", host)
	}
	return a.IsLoopback(), nil
}

// problems is a list of mistakes, one a line, that Is its sentinel.
type problems struct {
	sentinel error
	lines    []string
}

func (p *problems) Error() string { return strings.Join(p.lines, "\n") }
func (p *problems) Unwrap() error { return p.sentinel }
