package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Mail server names and the submission account (ports 587 and 465), the same on both.
const (
	// MailHostname is the mail server of the outside world that subscribers try to
	// reach directly: the MX of portcullis.test.
	MailHostname = "mx.portcullis.test"
	// RelayHostname is the ISP's smarthost, the relay its subscribers are meant to
	// send through.
	RelayHostname = "smtp.isp.test"
	MailUser      = "demo"
	MailPassword  = "demo-password"
)

// The three SMTP ports the mail server listens on.
const (
	PortSMTP        = 25  // relay/MX: plain SMTP, no authentication
	PortSubmission  = 587 // submission: STARTTLS, then AUTH PLAIN required
	PortSubmissions = 465 // submission over implicit TLS, AUTH PLAIN required
)

// Ports lists a mail server's ports in the order scenarios try them.
var Ports = []uint16{PortSMTP, PortSubmission, PortSubmissions}

// Message is one message the server accepted.
type Message struct {
	Port   uint16         // port it arrived on
	Remote netip.AddrPort // the client's address as the server saw it
	TLS    bool           // the session was encrypted when DATA was sent
	User   string         // authenticated user, "" without AUTH
	From   string
	To     []string
	Data   []byte // the message as received, after SMTP dot-unstuffing
}

// MailServer is a real SMTP server (emersion/go-smtp) in a namespace: port 25 plain,
// 587 with STARTTLS and AUTH required, 465 with implicit TLS and AUTH required. Its
// certificate (for Hostname and Addrs) is generated at start; Roots trusts it. It
// listens on Addrs only and records only the messages sent to it.
type MailServer struct {
	Hostname string
	Addrs    []netip.Addr // where it listens, as given to StartMailServer
	Roots    *x509.CertPool

	servers []*smtp.Server
	mu      sync.Mutex
	msgs    []Message
}

// StartMailServer starts a server named hostname (its greeting, EHLO name and
// certificate) listening on addrs × Ports inside ns, and on nothing else. The listening
// sockets are created on a thread inside ns; they (and the connections they accept)
// stay in ns.
func StartMailServer(ns *Namespace, hostname string, addrs []netip.Addr) (_ *MailServer, err error) {
	cert, roots, err := selfSigned(hostname, addrs)
	if err != nil {
		return nil, err
	}
	s := &MailServer{Hostname: hostname, Addrs: slices.Clone(addrs), Roots: roots}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	tlsConf := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	for _, port := range Ports {
		srv := smtp.NewServer(&backend{s: s, port: port})
		srv.Domain = hostname
		srv.ReadTimeout = 10 * time.Second
		srv.WriteTimeout = 10 * time.Second
		srv.MaxMessageBytes = 1 << 20
		srv.MaxRecipients = 10
		srv.ErrorLog = discardLogger{}
		if port == PortSubmission {
			srv.TLSConfig = tlsConf // offers STARTTLS; AUTH only after it
		}
		s.servers = append(s.servers, srv)
		for _, a := range addrs {
			l, err := ns.Listen("tcp", net.JoinHostPort(a.String(), strconv.Itoa(int(port))))
			if err != nil {
				return nil, fmt.Errorf("mail server %s listening on %s port %d: %w", hostname, a, port, err)
			}
			if port == PortSubmissions {
				l = tls.NewListener(l, tlsConf)
			}
			go srv.Serve(l)
		}
	}
	return s, nil
}

type discardLogger struct{}

func (discardLogger) Printf(string, ...interface{}) {}
func (discardLogger) Println(...interface{})        {}

// Addr returns the server's address in the family of a (IPv4 or IPv6), or the zero
// Addr if it has none there.
func (s *MailServer) Addr(a netip.Addr) netip.Addr {
	for _, own := range s.Addrs {
		if own.Is4() == a.Unmap().Is4() {
			return own
		}
	}
	return netip.Addr{}
}

// Messages returns a copy of every message accepted so far.
func (s *MailServer) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.msgs)
}

// Close stops the listeners and closes open sessions.
func (s *MailServer) Close() error {
	var errs []error
	for _, srv := range s.servers {
		if err := srv.Close(); err != nil && !errors.Is(err, smtp.ErrServerClosed) {
			errs = append(errs, err)
		}
	}
	s.servers = nil
	return errors.Join(errs...)
}

type backend struct {
	s    *MailServer
	port uint16
}

func (b *backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	ap, _ := netip.ParseAddrPort(c.Conn().RemoteAddr().String())
	return &session{b: b, c: c, msg: Message{Port: b.port, Remote: netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())}}, nil
}

// session records one message. Submission ports refuse MAIL before AUTH.
type session struct {
	b   *backend
	c   *smtp.Conn
	msg Message
}

func (s *session) requireAuth() bool { return s.b.port != PortSMTP }

func (s *session) AuthMechanisms() []string {
	if !s.requireAuth() {
		return nil
	}
	return []string{sasl.Plain}
}

func (s *session) Auth(mech string) (sasl.Server, error) {
	if !s.requireAuth() || mech != sasl.Plain {
		return nil, smtp.ErrAuthUnknownMechanism
	}
	return sasl.NewPlainServer(func(identity, user, pass string) error {
		if user != MailUser || pass != MailPassword || (identity != "" && identity != user) {
			return smtp.ErrAuthFailed
		}
		s.msg.User = user
		return nil
	}), nil
}

func (s *session) Mail(from string, _ *smtp.MailOptions) error {
	if s.requireAuth() && s.msg.User == "" {
		return smtp.ErrAuthRequired
	}
	s.msg.From = from
	return nil
}

func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.msg.To = append(s.msg.To, to)
	return nil
}

func (s *session) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	m := s.msg
	m.To = slices.Clone(m.To)
	m.Data = data
	_, m.TLS = s.c.TLSConnectionState()
	s.b.s.mu.Lock()
	s.b.s.msgs = append(s.b.s.msgs, m)
	s.b.s.mu.Unlock()
	return nil
}

func (s *session) Reset() { s.msg.From, s.msg.To = "", nil }

func (s *session) Logout() error { return nil }

// selfSigned returns an ECDSA P-256 certificate for name and addrs, valid for a day,
// and a pool that trusts it.
func selfSigned(name string, addrs []netip.Addr) (tls.Certificate, *x509.CertPool, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"Portcullis test ISP"}},
		DNSNames:              []string{name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	for _, a := range addrs {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.IP(a.AsSlice()))
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool, nil
}
