package fleet

import (
	"fmt"
	"strconv"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/portcullis/portcullis/overlay"
)

// DefaultPrefix is where a fleet's keys live when no prefix is configured.
const DefaultPrefix = "/portcullis/"

// maxName is the longest group or router name: a DNS label's length.
const maxName = 63

// Client is a fleet's etcd: a client and the prefix the fleet's keys live under.
// Every function of the package takes one.
type Client struct {
	etcd   *clientv3.Client
	prefix string
	conn   Conn // how Dial reached it (zero from New): for errors that name the user
}

// New returns the fleet under prefix ("" = DefaultPrefix; it must end in "/") of the
// etcd client cli. The client stays its caller's to close.
func New(cli *clientv3.Client, prefix string) (*Client, error) {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if !strings.HasSuffix(prefix, "/") {
		return nil, fmt.Errorf("%w %q: it must end in \"/\", e.g. %s", ErrPrefix, prefix, DefaultPrefix)
	}
	return &Client{etcd: cli, prefix: prefix}, nil
}

// Etcd is the etcd client.
func (c *Client) Etcd() *clientv3.Client { return c.etcd }

// Prefix is the prefix the fleet's keys live under.
func (c *Client) Prefix() string { return c.prefix }

// The key layout (doc.go).

func (c *Client) groupsKey() string          { return c.prefix + "groups/" }
func (c *Client) groupKey(g string) string   { return c.groupsKey() + g + "/" }
func (c *Client) policyKey(g string) string  { return c.groupKey(g) + "policy" }
func (c *Client) historyKey(g string) string { return c.groupKey(g) + "history/" }
func (c *Client) entriesKey(g string) string { return c.groupKey(g) + "entries/" }
func (c *Client) routersKey(g string) string { return c.groupKey(g) + "routers/" }
func (c *Client) knownKey(g string) string   { return c.groupKey(g) + "known/" }
func (c *Client) recordKey(g string, seq int64) string {
	return fmt.Sprintf("%s%020d", c.historyKey(g), seq)
}

// entryKey is the key of the fleet entry k: kind, then the prefix with "/" as "_".
func (c *Client) entryKey(g string, k overlay.Key) string {
	return c.entriesKey(g) + string(k.Kind) + "/" + strings.ReplaceAll(k.Prefix.String(), "/", "_")
}

// seqOf is the sequence number at the end of a history key.
func seqOf(key string) (int64, error) {
	return strconv.ParseInt(key[strings.LastIndexByte(key, '/')+1:], 10, 64)
}

// groupOf is the group named in a key under groupsKey, or "".
func (c *Client) groupOf(key string) string {
	rest, ok := strings.CutPrefix(key, c.groupsKey())
	if !ok {
		return ""
	}
	g, _, _ := strings.Cut(rest, "/")
	return g
}

// CheckName checks a group or router name (what is "group" or "router" in errors):
// 1 to 63 of a-z, 0-9, '.', '_', '-', starting with a letter or digit.
func CheckName(what, name string) error {
	if name == "" {
		return fmt.Errorf("%w: the %s name is empty", ErrName, what)
	}
	if len(name) > maxName {
		return fmt.Errorf("%w: the %s name %q is %d characters long, at most %d", ErrName, what, name, len(name), maxName)
	}
	for i, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
		case (r == '.' || r == '_' || r == '-') && i > 0:
		default:
			return fmt.Errorf("%w: the %s name %q has %q at position %d: use a-z, 0-9, '.', '_', '-', starting with a letter or digit", ErrName, what, name, r, i+1)
		}
	}
	return nil
}
