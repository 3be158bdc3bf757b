package fleet

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Conn is how to reach a fleet's etcd: the daemon's `etcd:` section and the flags of
// `portcullis fleet`. With etcd's client certificate authentication the certificate's
// common name is the etcd user (docs/fleet.md: routers read their group and write
// their own status; the NOC's credentials push).
type Conn struct {
	Endpoints    []string      `yaml:"endpoints"`     // e.g. [https://192.0.2.11:2379]
	CA           string        `yaml:"ca"`            // CA of the etcd servers' certificates
	Cert         string        `yaml:"cert"`          // client certificate (with key)
	Key          string        `yaml:"key"`           // its private key
	User         string        `yaml:"user"`          // etcd user, if not by certificate
	PasswordFile string        `yaml:"password_file"` // the user's password, in a file of its own
	Prefix       string        `yaml:"prefix"`        // where the fleet's keys live ("" = DefaultPrefix)
	DialTimeout  time.Duration `yaml:"dial_timeout"`  // 0: 5 s
}

// Problem is one thing wrong with a Conn: the key it is about (endpoints, cert, ...)
// and the message, which follows the name of the section (".endpoints is empty: ...",
// ": cert and key go together: ...").
type Problem struct {
	Key, Msg string
}

// Problems reports what is wrong with c, key by key, each with the fix.
func (c Conn) Problems() []Problem {
	var ps []Problem
	if len(c.Endpoints) == 0 {
		ps = append(ps, Problem{"endpoints", ".endpoints is empty: list the etcd members, e.g. endpoints: [https://192.0.2.11:2379]"})
	}
	for _, e := range c.Endpoints {
		if !strings.HasPrefix(e, "http://") && !strings.HasPrefix(e, "https://") {
			ps = append(ps, Problem{"endpoints", fmt.Sprintf(".endpoints: %q has no scheme: write https://HOST:2379 (or http:// in a lab)", e)})
		}
	}
	if (c.Cert == "") != (c.Key == "") {
		ps = append(ps, Problem{"cert", ": cert and key go together: give both or neither"})
	}
	if c.PasswordFile != "" && c.User == "" {
		ps = append(ps, Problem{"password_file", ": password_file without user"})
	}
	if c.Prefix != "" && !strings.HasSuffix(c.Prefix, "/") {
		ps = append(ps, Problem{"prefix", fmt.Sprintf(".prefix %q must end in \"/\", e.g. %s", c.Prefix, DefaultPrefix)})
	}
	if c.DialTimeout < 0 {
		ps = append(ps, Problem{"dial_timeout", fmt.Sprintf(".dial_timeout %s is negative: give a timeout such as 5s (0: 5s)", c.DialTimeout)})
	}
	return ps
}

// Check reports what is wrong with c, each line naming the key (under what, e.g.
// "portcullis.yaml: etcd") and the fix.
func (c Conn) Check(what string) []string {
	var errs []string
	for _, p := range c.Problems() {
		errs = append(errs, what+p.Msg)
	}
	return errs
}

// Dial makes the client of the fleet's etcd. It does not wait for etcd, with any
// credentials: the client connects, and logs in with user and password_file, in the
// background, retrying, and each call fails (or waits) on its own; a router starts
// while etcd is down and enforces what it last had. What waiting cannot mend (a
// mistake in c, a password file that cannot be read or is empty, a certificate that
// does not load) is an error naming the key.
func Dial(c Conn) (*Client, error) {
	if errs := c.Check("etcd"); len(errs) > 0 {
		return nil, fmt.Errorf("%s", strings.Join(errs, "\n"))
	}
	// The client's own logger writes JSON warnings to stderr on every retry; the
	// daemon and the CLI say what failed themselves.
	cfg := clientv3.Config{Endpoints: c.Endpoints, DialTimeout: c.DialTimeout, Username: c.User, Logger: zap.NewNop()}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	var password string
	if c.PasswordFile != "" {
		b, err := os.ReadFile(c.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("the password file of etcd user %s (etcd.password_file, --password-file): %w", c.User, err)
		}
		if password = strings.TrimSpace(string(b)); password == "" {
			return nil, fmt.Errorf("the password file %s of etcd user %s (etcd.password_file, --password-file) is empty", c.PasswordFile, c.User)
		}
	}
	// clientv3.New logs in before it returns, within DialTimeout, and fails if etcd
	// cannot be reached then. So the client is made with a placeholder token, which
	// needs no login, and given the user and password right after, before any call:
	// etcd refuses the placeholder (an invalid token) and the client logs in then, as
	// it does whenever etcd refuses its token (a restarted etcd forgets simple
	// tokens). TestDialPasswordEtcdDown checks this against a real etcd.
	login := c.User != "" && password != ""
	if login {
		cfg.Username, cfg.Token = "", notLoggedIn
	}
	if c.CA != "" || c.Cert != "" {
		info := transport.TLSInfo{CertFile: c.Cert, KeyFile: c.Key, TrustedCAFile: c.CA}
		tc, err := info.ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("etcd TLS (etcd.ca, etcd.cert, etcd.key): %w", err)
		}
		tc.MinVersion = tls.VersionTLS12
		cfg.TLS = tc
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcd %v: %w", c.Endpoints, err)
	}
	if login {
		cli.Token, cli.Username, cli.Password = "", c.User, password
	}
	f, err := New(cli, c.Prefix)
	if err != nil {
		cli.Close()
		return nil, err
	}
	f.conn = c
	return f, nil
}

// notLoggedIn is the token a client with a password starts with (Dial): no etcd
// token looks like it (a simple token is RANDOM.INDEX, a JWT three base64 parts).
const notLoggedIn = "portcullis-not-logged-in-yet"

// Close closes the etcd client.
func (c *Client) Close() error { return c.etcd.Close() }

// Reachable checks that etcd answers within timeout: an error saying where it asked
// and what to check if not. Any member answering will do (the client's balancer
// passes over dead ones), and a refusal (a user without the permission) is an answer;
// a wrong user or password is an error naming them.
func (c *Client) Reachable(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	_, err := c.etcd.Get(ctx, c.prefix, clientv3.WithCountOnly())
	if errors.Is(err, rpctypes.ErrAuthFailed) {
		return fmt.Errorf("etcd %v refuses user %s with the password in %s (%v): is the user right, and is the file its password?", c.etcd.Endpoints(), c.conn.User, c.conn.PasswordFile, err)
	}
	if err == nil || !Unreachable(err) {
		return nil
	}
	if q := c.quorum(context.WithoutCancel(ctx)); q != "" {
		return fmt.Errorf("%w: %s (%v)", ErrUnreachable, q, err)
	}
	return fmt.Errorf("%w: etcd %v does not answer within %s (%v): is it running, and are the endpoints (and the CA, certificate and key) right?", ErrUnreachable, c.etcd.Endpoints(), timeout, err)
}

// quorum says, when etcd does not serve requests although members answer, that they
// have no leader (a quorum of the cluster's members is not running or cannot reach
// the others), naming which answer and which do not; "" when no member answers, or one
// has a leader. It asks each endpoint's status (which needs no quorum), all at once,
// for a second at most.
func (c *Client) quorum(ctx context.Context) string {
	eps := c.etcd.Endpoints()
	type answer struct {
		ep     string
		ok     bool
		leader bool
	}
	ch := make(chan answer, len(eps))
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	for _, ep := range eps {
		go func() {
			st, err := c.etcd.Status(ctx, ep)
			ch <- answer{ep, err == nil, err == nil && st.Leader != 0}
		}()
	}
	var up, down []string
	for range eps {
		a := <-ch
		switch {
		case a.leader:
			return ""
		case a.ok:
			up = append(up, a.ep)
		default:
			down = append(down, a.ep)
		}
	}
	if len(up) == 0 {
		return ""
	}
	slices.Sort(up)
	slices.Sort(down)
	msg := fmt.Sprintf("etcd has no leader: %s answer%s but cannot elect one", strings.Join(up, ", "), map[bool]string{true: "s", false: ""}[len(up) == 1])
	if len(down) > 0 {
		msg += fmt.Sprintf(", %s do%s not answer", strings.Join(down, ", "), map[bool]string{true: "es", false: ""}[len(down) == 1])
	}
	return msg + ": the quorum is lost (more than half the members must run and reach each other); nothing can be read or written until it is back, and routers keep enforcing what they have"
}

// Unreachable tells whether err is etcd not answering (a timeout, no connection), not
// a refusal.
func Unreachable(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || status.Code(err) == codes.Unavailable || status.Code(err) == codes.DeadlineExceeded
}

// User is the etcd user the client is: its user, or its certificate's common name;
// "" if neither is known (etcd without authentication, or a client from New).
func (c *Client) User() string {
	if c.conn.User != "" {
		return c.conn.User
	}
	if c.conn.Cert != "" {
		if pair, err := tls.LoadX509KeyPair(c.conn.Cert, c.conn.Key); err == nil && len(pair.Certificate) > 0 {
			if cert, err := x509.ParseCertificate(pair.Certificate[0]); err == nil {
				return cert.Subject.CommonName
			}
		}
	}
	return ""
}

// isDenied tells whether err is etcd refusing the user the permission.
func isDenied(err error) bool {
	return errors.Is(err, rpctypes.ErrPermissionDenied) || errors.Is(err, rpctypes.ErrGRPCPermissionDenied)
}

// denied is err, if it is etcd refusing a change of the fleet's keys, saying whose
// credentials these are and which role may: err otherwise.
func (c *Client) denied(err error) error {
	if !isDenied(err) {
		return err
	}
	return fmt.Errorf("%w: etcd user %s may not do this: pushes, rollbacks and fleet entries need the NOC's credentials (a user that etcd's root gave portcullis fleet grant noc); a router's role reads its group and writes only its own report (and the group's fleet entries after fleet grant router --entries)", err, cmp.Or(c.User(), "of these credentials"))
}

// deniedGrant is err, if it is etcd refusing a change of its users and roles, saying
// that a grant needs etcd's root: err otherwise.
func (c *Client) deniedGrant(err error) error {
	if !isDenied(err) {
		return err
	}
	return fmt.Errorf("%w: etcd user %s may not change etcd's users and roles: fleet grant needs etcd's root (--user root --password-file F)", err, cmp.Or(c.User(), "of these credentials"))
}
