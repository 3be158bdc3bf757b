package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"os"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// The clients file (docs/api.md):
//
//	clients:
//	  - name: abuse-desk
//	    scopes: [read, quarantine]
//	    token_sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
//	  - name: portal
//	    scopes: [read, unblock]
//	    cert_cn: portal.isp.example
//
// It holds no secrets: a bearer token is known by its SHA-256 (HashToken).

// scope is what a client may do.
type scope string

const (
	scopeRead       scope = "read"       // GET: entries, history, status
	scopeQuarantine scope = "quarantine" // add and release quarantines
	scopeUnblock    scope = "unblock"    // add and release unblocks
	scopeFleet      scope = "fleet"      // with quarantine or unblock: for every router of the group
)

var allScopes = []scope{scopeRead, scopeQuarantine, scopeUnblock, scopeFleet}

func (s scope) valid() bool { return slices.Contains(allScopes, s) }

// client is one entry of the clients file.
type client struct {
	name     string
	scopes   map[scope]bool
	token    [sha256.Size]byte // SHA-256 of the bearer token, if hasToken
	hasToken bool
	certCN   string
	line     int
}

func (c *client) scopeList() string {
	var s []string
	for _, sc := range allScopes {
		if c.scopes[sc] {
			s = append(s, string(sc))
		}
	}
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

// clients is the parsed clients file.
type clients struct {
	file string
	list []*client
	byCN map[string]*client
}

// HashToken returns the hex SHA-256 of a bearer token, as the clients file's
// token_sha256 holds it; the same as `printf %s "$TOKEN" | sha256sum`.
func HashToken(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

// byToken returns the client whose token is token, or nil. It compares the token's
// hash with every client's in constant time, and looks at all of them whatever matches.
func (cs *clients) byToken(token string) *client {
	h := sha256.Sum256([]byte(token))
	var found *client
	for _, c := range cs.list {
		if c.hasToken && subtle.ConstantTimeCompare(h[:], c.token[:]) == 1 {
			found = c
		}
	}
	return found
}

// check refuses clients that the server's mode can never admit: with mTLS the
// certificate names the client (tokens are not consulted), without it only tokens do.
func (cs *clients) check(mtls bool) error {
	var errs []string
	for _, c := range cs.list {
		switch {
		case mtls && c.certCN == "":
			errs = append(errs, fmt.Sprintf("%s:%d: client %q has token_sha256, but the API requires client certificates (client_ca is set) and a certificate's CN names the client; give it cert_cn, or unset client_ca", cs.file, c.line, c.name))
		case !mtls && c.certCN != "":
			errs = append(errs, fmt.Sprintf("%s:%d: client %q has cert_cn, but the API does not ask for client certificates (client_ca is not set); set client_ca, or give the client token_sha256", cs.file, c.line, c.name))
		}
	}
	if len(errs) > 0 {
		return &problems{ErrClients, errs}
	}
	return nil
}

func loadClients(path string) (*clients, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrClients, err)
	}
	return parseClients(path, data)
}

// emptyTokenHash is the SHA-256 of "": a token_sha256 made from an unset variable.
var emptyTokenHash = HashToken("")

const clientFields = "name, scopes, token_sha256, cert_cn"

// parseClients parses a clients file's data, read from file. Every mistake is reported,
// each as file:line and the fix.
func parseClients(file string, data []byte) (*clients, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		if after, ok := strings.CutPrefix(msg, "line "); ok {
			msg = file + ":" + after
		} else {
			msg = file + ": " + msg
		}
		return nil, &problems{ErrClients, []string{msg}}
	}
	at := func(n *yaml.Node) string { return fmt.Sprintf("%s:%d", file, n.Line) }
	bad := func(lines ...string) error { return &problems{ErrClients, lines} }
	if len(root.Content) == 0 {
		return nil, bad(file + ": no clients: the file is `clients:` and a list of clients, each with name, scopes and token_sha256 or cert_cn (docs/api.md)")
	}
	doc := root.Content[0]
	if doc.Kind != yaml.MappingNode {
		return nil, bad(at(doc) + ": the file is a mapping with one key, clients: a list of clients (docs/api.md)")
	}
	var list *yaml.Node
	for i := 0; i+1 < len(doc.Content); i += 2 {
		k, v := doc.Content[i], doc.Content[i+1]
		if k.Value != "clients" {
			return nil, bad(fmt.Sprintf("%s: unknown key %q; the file has one key, clients", at(k), k.Value))
		}
		if list != nil {
			return nil, bad(at(k) + ": clients is given twice; make it one list")
		}
		list = v
	}
	if list == nil || list.Kind != yaml.SequenceNode || len(list.Content) == 0 {
		n := doc
		if list != nil {
			n = list
		}
		return nil, bad(at(n) + ": clients must be a list of at least one client, each with name, scopes and token_sha256 or cert_cn")
	}

	cs := &clients{file: file, byCN: map[string]*client{}}
	var errs []string
	names := map[string]*client{}
	tokens := map[[sha256.Size]byte]*client{}
	for _, item := range list.Content {
		if item.Kind != yaml.MappingNode {
			errs = append(errs, at(item)+": a client is a mapping with "+clientFields)
			continue
		}
		c := &client{line: item.Line, scopes: map[scope]bool{}}
		var tokenNode, nameNode *yaml.Node
		scopesBad := false // a scope was refused: "no scopes" would say it twice
		seen := map[string]bool{}
		for i := 0; i+1 < len(item.Content); i += 2 {
			k, v := item.Content[i], item.Content[i+1]
			if seen[k.Value] {
				errs = append(errs, fmt.Sprintf("%s: %s is given twice for this client; keep one", at(k), k.Value))
				continue
			}
			seen[k.Value] = true
			str := func() (string, bool) {
				if v.Kind != yaml.ScalarNode || v.Tag == "!!null" {
					errs = append(errs, fmt.Sprintf("%s: %s must be a string", at(v), k.Value))
					return "", false
				}
				return v.Value, true
			}
			switch k.Value {
			case "name":
				if s, ok := str(); ok {
					if msg := checkName(s); msg != "" {
						errs = append(errs, at(v)+": "+msg)
					}
					c.name, nameNode = s, v
				}
			case "scopes":
				if v.Kind != yaml.SequenceNode {
					errs = append(errs, fmt.Sprintf("%s: scopes must be a list, e.g. scopes: [read, quarantine]", at(v)))
					scopesBad = true
					continue
				}
				for _, sn := range v.Content {
					sc := scope(sn.Value)
					switch {
					case sn.Kind != yaml.ScalarNode || !sc.valid():
						errs = append(errs, fmt.Sprintf("%s: unknown scope %q; the scopes are read, quarantine, unblock, fleet", at(sn), sn.Value))
						scopesBad = true
					case c.scopes[sc]:
						errs = append(errs, fmt.Sprintf("%s: scope %s is listed twice; list it once", at(sn), sc))
						scopesBad = true
					default:
						c.scopes[sc] = true
					}
				}
			case "token_sha256":
				s, ok := str()
				if !ok {
					continue
				}
				tokenNode = v
				b, err := hex.DecodeString(s)
				switch {
				case err != nil || len(b) != sha256.Size:
					// Never echo the value: it may be the token itself, pasted by mistake.
					errs = append(errs, fmt.Sprintf("%s: token_sha256 is not a SHA-256 in hex (64 hex digits; this is %d characters); the file holds the token's hash, not the token: printf %%s \"$TOKEN\" | sha256sum", at(v), len(s)))
				case strings.EqualFold(s, emptyTokenHash):
					errs = append(errs, at(v)+": token_sha256 is the SHA-256 of an empty token (was $TOKEN unset?); hash the real token: printf %s \"$TOKEN\" | sha256sum")
				default:
					copy(c.token[:], b)
					c.hasToken = true
				}
			case "cert_cn":
				if s, ok := str(); ok {
					if s == "" {
						errs = append(errs, at(v)+": cert_cn is empty: give the CN of the client's certificate")
						continue
					}
					c.certCN = s
				}
			default:
				errs = append(errs, fmt.Sprintf("%s: unknown field %q; a client has %s", at(k), k.Value, clientFields))
			}
		}
		if nameNode == nil {
			errs = append(errs, at(item)+": this client has no name: give it one (it is in the audit log and in who added an entry)")
		}
		label := fmt.Sprintf("client %q", c.name)
		if c.name == "" {
			label = "this client"
		}
		if len(c.scopes) == 0 && !scopesBad {
			errs = append(errs, fmt.Sprintf("%s: %s has no scopes: give it some of read, quarantine, unblock, fleet", at(item), label))
		}
		if c.scopes[scopeFleet] && !c.scopes[scopeQuarantine] && !c.scopes[scopeUnblock] {
			errs = append(errs, fmt.Sprintf("%s: %s has the fleet scope without quarantine or unblock: fleet only lets those act for every router of the group, so alone it allows nothing; add quarantine or unblock, or remove fleet", at(item), label))
		}
		switch {
		case !seen["token_sha256"] && !seen["cert_cn"]:
			errs = append(errs, fmt.Sprintf("%s: %s has neither token_sha256 nor cert_cn: give it token_sha256 (printf %%s \"$TOKEN\" | sha256sum) or, with mTLS, cert_cn", at(item), label))
		case seen["token_sha256"] && seen["cert_cn"]:
			errs = append(errs, fmt.Sprintf("%s: %s has both token_sha256 and cert_cn: give it one (cert_cn with mTLS, token_sha256 without)", at(item), label))
		}
		if c.name != "" {
			if first, dup := names[c.name]; dup {
				errs = append(errs, fmt.Sprintf("%s: duplicate client name %q (first at line %d); give each client its own name", at(nameNode), c.name, first.line))
			} else {
				names[c.name] = c
			}
		}
		if c.hasToken {
			if first, dup := tokens[c.token]; dup {
				errs = append(errs, fmt.Sprintf("%s: %s has the same token as client %q (line %d); give each client its own token", at(tokenNode), label, first.name, first.line))
			} else {
				tokens[c.token] = c
			}
		}
		if c.certCN != "" {
			if first, dup := cs.byCN[c.certCN]; dup {
				errs = append(errs, fmt.Sprintf("%s: %s has the same cert_cn %q as client %q (line %d); give each client its own certificate", at(item), label, c.certCN, first.name, first.line))
			} else {
				cs.byCN[c.certCN] = c
			}
		}
		cs.list = append(cs.list, c)
	}
	if len(errs) > 0 {
		return nil, &problems{ErrClients, errs}
	}
	return cs, nil
}

// checkName says what is wrong with a client name, or "". Names go into the audit log
// and into who added an entry ("api:NAME"), so they are short and plain.
func checkName(s string) string {
	if s == "" {
		return "name is empty: give the client a name (letters, digits, '.', '_', '-')"
	}
	if len(s) > 64 {
		return fmt.Sprintf("name %q is longer than 64 characters; shorten it", s)
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return fmt.Sprintf("name %q has %q; use letters, digits, '.', '_', '-'", s, r)
		}
	}
	return ""
}
