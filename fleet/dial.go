package fleet

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

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

// Dial connects to the fleet's etcd. It does not wait for etcd: the client retries
// in the background, and each call fails (or waits) on its own.
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
	if c.PasswordFile != "" {
		b, err := os.ReadFile(c.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("etcd password: %w", err)
		}
		cfg.Password = strings.TrimSpace(string(b))
	}
	if c.CA != "" || c.Cert != "" {
		info := transport.TLSInfo{CertFile: c.Cert, KeyFile: c.Key, TrustedCAFile: c.CA}
		tc, err := info.ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("etcd TLS: %w", err)
		}
		tc.MinVersion = tls.VersionTLS12
		cfg.TLS = tc
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcd %v: %w", c.Endpoints, err)
	}
	f, err := New(cli, c.Prefix)
	if err != nil {
		cli.Close()
		return nil, err
	}
	return f, nil
}

// Close closes the etcd client.
func (c *Client) Close() error { return c.etcd.Close() }

// Reachable checks that etcd answers within timeout: an error saying where it asked
// and what to check if not. Any member answering will do (the client's balancer
// passes over dead ones), and a refusal (a user without the permission) is an answer.
func (c *Client) Reachable(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	_, err := c.etcd.Get(ctx, c.prefix, clientv3.WithCountOnly())
	if err == nil || !errors.Is(err, context.DeadlineExceeded) && status.Code(err) != codes.Unavailable && status.Code(err) != codes.DeadlineExceeded {
		return nil
	}
	return fmt.Errorf("%w: etcd %v does not answer within %s (%v): is it running, and are the endpoints (and the CA, certificate and key) right?", ErrUnreachable, c.etcd.Endpoints(), timeout, err)
}
