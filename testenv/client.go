package testenv

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/smtp"
	"os"
	"strconv"
	"syscall"
	"time"
)

// Outcome is how an SMTP attempt ended, as a client sees it.
type Outcome string

const (
	Delivered Outcome = "delivered" // the server accepted the message, byte for byte
	Refused   Outcome = "refused"   // the connection was refused at once (an RST)
	TimedOut  Outcome = "timed out" // nothing answered the connection attempt
	Failed    Outcome = "failed"    // anything else (see the error)
)

// Mail is one message to send.
type Mail struct {
	From string
	To   []string
	Data []byte // with CRLF line endings, as it goes over the wire before dot-stuffing
}

// NewMail returns a message with a unique Message-ID, CRLF line endings and a line that
// starts with a dot, so that the server's copy proves transparency byte for byte.
func NewMail(from, subject string) Mail {
	var id [8]byte
	rand.Read(id[:])
	data := fmt.Sprintf("From: <%s>\r\nTo: <postmaster@example.net>\r\nSubject: %s\r\n"+
		"Message-ID: <%s@portcullis.test>\r\n\r\n"+
		"Hello from %s.\r\n.A line that starts with a dot (SMTP dot-stuffing).\r\n", from, subject, hex.EncodeToString(id[:]), from)
	return Mail{From: from, To: []string{"postmaster@example.net"}, Data: []byte(data)}
}

// SessionTimeout bounds an SMTP session once connected.
const SessionTimeout = 10 * time.Second

// SendMail sends m from inside ns to srv at addr:port the way a mail client does on
// that port: 25 plain; 587 EHLO, STARTTLS, AUTH PLAIN; 465 TLS first, then AUTH PLAIN.
// The connection attempt gives up after dialTimeout. The certificate is checked against
// srv.Roots and srv.Hostname, so a session that reached another server fails.
func SendMail(ns *Namespace, srv *MailServer, addr netip.Addr, port uint16, m Mail, dialTimeout time.Duration) error {
	conn, err := ns.Dial("tcp", net.JoinHostPort(addr.String(), strconv.Itoa(int(port))), dialTimeout)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(SessionTimeout))
	tlsConf := &tls.Config{RootCAs: srv.Roots, ServerName: srv.Hostname, MinVersion: tls.VersionTLS12}
	if port == PortSubmissions {
		tc := tls.Client(conn, tlsConf)
		if err := tc.Handshake(); err != nil {
			return fmt.Errorf("TLS handshake: %w", err)
		}
		conn = tc
	}
	c, err := smtp.NewClient(conn, srv.Hostname)
	if err != nil {
		return fmt.Errorf("SMTP greeting: %w", err)
	}
	defer c.Close()
	if err := c.Hello(heloName(ns)); err != nil {
		return fmt.Errorf("EHLO: %w", err)
	}
	if port == PortSubmission {
		if ok, _ := c.Extension("STARTTLS"); !ok {
			return errors.New("port 587 does not offer STARTTLS")
		}
		if err := c.StartTLS(tlsConf); err != nil {
			return fmt.Errorf("STARTTLS: %w", err)
		}
	}
	if port != PortSMTP {
		if err := c.Auth(smtp.PlainAuth("", MailUser, MailPassword, srv.Hostname)); err != nil {
			return fmt.Errorf("AUTH PLAIN: %w", err)
		}
	}
	if err := c.Mail(m.From); err != nil {
		return fmt.Errorf("MAIL FROM: %w", err)
	}
	for _, to := range m.To {
		if err := c.Rcpt(to); err != nil {
			return fmt.Errorf("RCPT TO: %w", err)
		}
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("DATA: %w", err)
	}
	if _, err := w.Write(m.Data); err != nil {
		return fmt.Errorf("sending the message: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("end of DATA: %w", err)
	}
	return c.Quit()
}

func heloName(ns *Namespace) string {
	if ns == nil {
		return "client.portcullis.test"
	}
	return ns.Name + ".portcullis.test"
}

// Classify turns an error from SendMail (or a dial) into an Outcome: ECONNREFUSED is
// Refused, a timeout while connecting is TimedOut, nil is Delivered.
func Classify(err error) Outcome {
	var op *net.OpError
	switch {
	case err == nil:
		return Delivered
	case errors.Is(err, syscall.ECONNREFUSED):
		return Refused
	case errors.As(err, &op) && op.Op == "dial" && (op.Timeout() || errors.Is(err, os.ErrDeadlineExceeded)):
		return TimedOut
	}
	return Failed
}

// Received reports whether the server recorded a message whose data is exactly m.Data,
// sent from src, on port.
func (s *MailServer) Received(m Mail, src netip.Addr, port uint16) bool {
	for _, got := range s.Messages() {
		if got.Port == port && got.Remote.Addr() == src && bytes.Equal(got.Data, m.Data) {
			return true
		}
	}
	return false
}
